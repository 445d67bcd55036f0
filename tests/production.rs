//! A production gateway (a config file without `demo = true`): the first
//! start creates no identities, grants, data or CA key, and says how to
//! enrol the first administrator; `govshare admin bootstrap` does it once —
//! on a running gateway or a stopped one — as the log's first ADMIN entry.

mod common;

use common::{Gateway, cli};
use govshare::proto::admin_service_client::AdminServiceClient;
use govshare::proto::*;
use std::path::Path;

/// The organisation's CA and server certificate, outside the data dir.
fn org_pki(dir: &Path) {
    let d = dir.to_str().unwrap();
    assert!(cli(&["pki", "init", "--dir", d]).0);
    assert!(cli(&["pki", "issue-client", "--dir", d, "--name", "first-admin"]).0);
}

fn config(data: &Path, pki: &Path) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndemo_persons = 0\ntls_cert = \"{p}/server.pem\"\ntls_key = \"{p}/server.key\"\nclient_ca = \"{p}/ca.pem\"\n",
        data.display(),
        p = pki.display()
    )
}

fn bootstrap(data: &Path, pki: &Path, conf: &Path) -> (bool, String) {
    cli(&[
        "admin",
        "bootstrap",
        "--data-dir",
        data.to_str().unwrap(),
        "--dept",
        "gateway-admin",
        "--name",
        "网关管理",
        "--cert",
        pki.join("first-admin.pem").to_str().unwrap(),
        "--out",
        pki.join("first-admin.token").to_str().unwrap(),
        "--config",
        conf.to_str().unwrap(),
    ])
}

async fn admin_calls(gw: &Gateway, pki: &Path) {
    let client = govshare::client::Client::from_pki(&gw.addr.to_string(), pki, "first-admin")
        .await
        .unwrap();
    let mut a = AdminServiceClient::new(client.channel.clone());
    let depts = a
        .list_departments(client.request(ListDepartmentsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .departments;
    assert_eq!(
        depts.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["gateway-admin"],
        "nothing but the enrolled administrator"
    );
    let grants = a
        .list_grants(client.request(ListGrantsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .grants;
    assert!(grants.is_empty());
    let catalog = a
        .get_catalog(client.request(GetCatalogRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(catalog.purposes.is_empty(), "no purposes are invented");
}

fn first_admin_entry(dir: &Path) -> AuditEntry {
    govshare::audit::segment::read_all(&dir.join("audit"))
        .unwrap()
        .into_iter()
        .map(|b| <AuditEntry as prost::Message>::decode(b.as_slice()).unwrap())
        .find(|e| e.kind == EntryKind::Admin as i32)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_first_start_creates_nothing_and_bootstrap_works_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pki) = (tmp.path().join("data"), tmp.path().join("org-pki"));
    org_pki(&pki);
    let text = config(&data, &pki);
    let conf = tmp.path().join("prod.toml");
    std::fs::write(&conf, &text).unwrap();
    let mut gw = Gateway::start_with(&data, &text);
    let said = gw.said.join("\n");
    assert!(said.contains("no administrator exists yet"), "{said}");
    assert!(said.contains("govshare admin bootstrap"), "{said}");
    let own_pki: Vec<String> = std::fs::read_dir(data.join("pki"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        own_pki.iter().all(|f| f.starts_with("audit-log.")),
        "only the log's own key, no CA, identities or tokens: {own_pki:?}"
    );

    // The gateway is running: enrolment goes through its control socket.
    let (ok, out) = bootstrap(&data, &pki, &conf);
    assert!(ok, "{out}");
    admin_calls(&gw, &pki).await;
    let (ok, out) = bootstrap(&data, &pki, &conf);
    assert!(!ok && out.contains("already enrolled"), "{out}");
    let e = first_admin_entry(&data);
    assert_eq!(e.method, "govshare admin bootstrap");
    assert_eq!(e.decision, AuditDecision::Allow as i32);
    assert!(gw.stop());
    let (ok, out) = cli(&[
        "audit",
        "verify",
        "--data-dir",
        data.to_str().unwrap(),
        "--strict",
    ]);
    assert!(ok, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_works_on_a_stopped_gateway_too() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pki) = (tmp.path().join("data"), tmp.path().join("org-pki"));
    org_pki(&pki);
    let text = config(&data, &pki);
    let conf = tmp.path().join("prod.toml");
    std::fs::write(&conf, &text).unwrap();
    let mut gw = Gateway::start_with(&data, &text);
    assert!(gw.stop());
    let (ok, out) = bootstrap(&data, &pki, &conf);
    assert!(ok, "{out}");
    let gw = Gateway::start_with(&data, &text);
    admin_calls(&gw, &pki).await;
    assert_eq!(first_admin_entry(&data).method, "govshare admin bootstrap");
    let (ok, out) = cli(&["audit", "verify", "--data-dir", data.to_str().unwrap()]);
    assert!(ok, "{out}");
}

/// Two enrolments at the same moment: exactly one first administrator.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_bootstraps_enrol_one_administrator() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let tmp = tempfile::tempdir().unwrap();
    let (data, pki) = (tmp.path().join("data"), tmp.path().join("org-pki"));
    org_pki(&pki);
    let text = config(&data, &pki);
    let gw = Gateway::start_with(&data, &text);
    let pem = std::fs::read_to_string(pki.join("first-admin.pem")).unwrap();
    let socket = govshare::transport::control_socket::socket_path(&data);
    let mut conns = Vec::new();
    for k in 0..8 {
        let mut c = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let req = serde_json::json!({
            "department": "gateway-admin",
            "department_name": format!("网关管理 {k}"),
            "certificate_pem": pem,
            "subject": format!("admin-{k}"),
        });
        c.write_all(format!("{req}\n").as_bytes()).await.unwrap();
        conns.push(c);
    }
    let mut tokens = 0;
    for c in conns {
        let mut line = String::new();
        BufReader::new(c).read_line(&mut line).await.unwrap();
        let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
        if reply["token"].is_string() {
            tokens += 1;
        }
    }
    assert_eq!(tokens, 1, "one first administrator, not {tokens}");
    drop(gw);
}

/// A production config that names no TLS files is refused by `config
/// check` (and at start) with every key a first production start needs and
/// the command that makes them; `pki init --production` makes them, prints
/// the config lines, and that config passes and starts.
#[test]
fn a_production_config_without_tls_files_names_the_keys_and_the_way_to_make_them() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("govshare.toml");
    let data = dir.path().join("data");
    std::fs::write(
        &conf,
        format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let (ok, said) = cli(&["config", "check", conf.to_str().unwrap()]);
    assert!(!ok, "{said}");
    for must in [
        "tls_cert",
        "tls_key",
        "client_ca",
        "govshare pki init --production",
    ] {
        assert!(said.contains(must), "the refusal names `{must}`: {said}");
    }
    assert!(!said.contains("stack backtrace"), "{said}");

    let pki = dir.path().join("pki");
    let (ok, made) = cli(&[
        "pki",
        "init",
        "--production",
        "--dir",
        pki.to_str().unwrap(),
        "--host",
        "localhost",
    ]);
    assert!(ok, "{made}");
    let lines: String = made
        .lines()
        .filter(|l| {
            ["tls_cert", "tls_key", "client_ca"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        lines.lines().count(),
        3,
        "it prints the config lines: {made}"
    );
    assert!(
        made.contains("ca.key"),
        "it says where the CA key is: {made}"
    );
    let text = format!(
        "listen = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{lines}",
        data.display()
    );
    std::fs::write(&conf, &text).unwrap();
    let (ok, said) = cli(&["config", "check", conf.to_str().unwrap()]);
    assert!(ok, "{said}");
    let gw = Gateway::start_with(&data, &text);
    assert!(
        gw.said
            .iter()
            .any(|l| l.contains("no administrator exists yet")),
        "a production first start: {:?}",
        gw.said
    );
}

/// One environment variable must not turn a production data dir into a
/// demo: the demo's identities and grants would be seeded into it, and
/// `demo_clock_offset` would move its clock (disclosing withheld pulls,
/// expiring tokens). A data dir keeps the mode it was first started in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_data_dir_never_starts_as_a_demo() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, pki) = (tmp.path().join("data"), tmp.path().join("org-pki"));
    org_pki(&pki);
    let text = config(&data, &pki);
    let mut gw = Gateway::start_with(&data, &text);
    assert!(gw.stop());
    let conf = tmp.path().join("prod.toml");
    std::fs::write(&conf, &text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_govshare"))
        .args(["serve", "--config"])
        .arg(&conf)
        .env("GOVSHARE_DEMO", "true")
        .env("GOVSHARE_DEMO_CLOCK_OFFSET", "180d")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a production data dir started as a demo");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(
        err.contains("first started as a production gateway"),
        "{err}"
    );
    // Nothing of the demo reached the data dir.
    assert!(!data.join("pki/ca.key").exists());
}
