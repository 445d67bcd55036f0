//! The deploy files, checked as far as this machine allows: every YAML and
//! JSON file parses and says what operations.md asks of it, the systemd
//! unit passes `systemd-analyze verify` where that exists, and the image
//! builds where a Docker engine runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use yaml_rust2::{Yaml, YamlLoader};

fn deploy(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(p)
}

fn yaml(p: &str) -> Vec<Yaml> {
    let text = std::fs::read_to_string(deploy(p)).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn kind(doc: &Yaml) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

#[test]
fn the_kubernetes_files_parse_and_probe_the_ops_port() {
    let mut kinds = Vec::new();
    for e in std::fs::read_dir(deploy("k8s")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            continue;
        }
        let name = format!("k8s/{}", p.file_name().unwrap().to_string_lossy());
        for doc in yaml(&name) {
            assert_eq!(
                doc["metadata"]["namespace"].as_str(),
                Some("govshare"),
                "{name}"
            );
            kinds.push(kind(&doc).to_string());
            if kind(&doc) == "StatefulSet" {
                let spec = &doc["spec"];
                assert_eq!(spec["replicas"].as_i64(), Some(1), "one writer per log");
                assert!(
                    !spec["volumeClaimTemplates"].is_badvalue(),
                    "a PVC for the data dir"
                );
                let c = &spec["template"]["spec"]["containers"][0];
                assert_eq!(
                    c["readinessProbe"]["httpGet"]["path"].as_str(),
                    Some("/readyz")
                );
                assert_eq!(
                    c["livenessProbe"]["httpGet"]["path"].as_str(),
                    Some("/livez")
                );
                assert_eq!(c["readinessProbe"]["httpGet"]["port"].as_str(), Some("ops"));
                let ops = c["ports"]
                    .as_vec()
                    .unwrap()
                    .iter()
                    .find(|p| p["name"].as_str() == Some("ops"))
                    .unwrap();
                assert_eq!(ops["containerPort"].as_i64(), Some(9464));
                let mounts = c["volumeMounts"].as_vec().unwrap();
                assert!(
                    mounts.iter().any(|m| m["name"].as_str() == Some("pki")
                        && m["readOnly"].as_bool() == Some(true)),
                    "the PKI mounted read-only"
                );
            }
            if kind(&doc) == "CronJob" {
                let spec = &doc["spec"];
                assert_eq!(spec["concurrencyPolicy"].as_str(), Some("Forbid"));
                let pod = &spec["jobTemplate"]["spec"]["template"];
                let args: Vec<&str> = pod["spec"]["containers"][0]["args"]
                    .as_vec()
                    .unwrap()
                    .iter()
                    .filter_map(|a| a.as_str())
                    .collect();
                assert_eq!(&args[..2], ["snapshot", "save"]);
                assert!(args.contains(&"--dir") && args.contains(&"--keep"));
                // The NetworkPolicy admits its pods to the gRPC port.
                assert_eq!(
                    pod["metadata"]["labels"]["govshare.example.gov.cn/backup"].as_str(),
                    Some("true")
                );
            }
            if kind(&doc) == "NetworkPolicy" {
                let ports: Vec<i64> = doc["spec"]["ingress"]
                    .as_vec()
                    .unwrap()
                    .iter()
                    .flat_map(|r| {
                        r["ports"]
                            .as_vec()
                            .unwrap()
                            .iter()
                            .map(|p| p["port"].as_i64().unwrap())
                    })
                    .collect();
                assert_eq!(ports, [50051, 50051, 9464]);
            }
        }
    }
    kinds.sort();
    for k in [
        "ConfigMap",
        "CronJob",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "StatefulSet",
    ] {
        assert!(
            kinds.iter().any(|x| x == k),
            "deploy/k8s lacks a {k}: {kinds:?}"
        );
    }
    // The ConfigMap's config is one govshare accepts.
    let cm = yaml("k8s/configmap.yaml");
    let toml = cm[0]["data"]["govshare.toml"].as_str().unwrap();
    config_check_accepts(toml, &[]);
}

/// `govshare config check` accepts `toml` (with `env` set).
fn config_check_accepts(toml: &str, env: &[(&str, &str)]) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), toml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_govshare"))
        .args(["config", "check"])
        .arg(f.path())
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn compose_runs_a_gateway_and_a_witness() {
    let doc = &yaml("docker-compose.yml")[0];
    let services = doc["services"].as_hash().unwrap();
    let gateway = &doc["services"]["gateway"];
    assert!(services.len() == 2 && !doc["services"]["witness"].is_badvalue());
    let volumes: Vec<&str> = gateway["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        volumes.iter().any(|v| v.ends_with(":/var/lib/govshare")),
        "a volume for the data dir"
    );
    assert!(
        volumes
            .iter()
            .any(|v| v.contains("/pki") && v.ends_with(":ro")),
        "the PKI read-only"
    );
    let witness_cmd: Vec<&str> = doc["services"]["witness"]["command"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert_eq!(&witness_cmd[..2], ["witness", "serve"]);
}

#[test]
fn compose_over_postgres_reaches_the_database_over_verified_tls() {
    let doc = &yaml("docker-compose.postgres.yml")[0];
    let strings = |v: &Yaml| -> Vec<String> {
        v.as_vec()
            .unwrap()
            .iter()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    let pg = strings(&doc["services"]["postgres"]["command"]);
    assert!(pg.iter().any(|c| c == "ssl=on"), "{pg:?}");
    // Three nodes, each its own node id and data dir, one log key.
    let mut ids = std::collections::BTreeSet::new();
    for n in 1..=3 {
        let gateway = &doc["services"][format!("gateway-{n}").as_str()];
        let env = &gateway["environment"];
        assert_eq!(env["GOVSHARE_STORE__BACKEND"].as_str(), Some("postgres"));
        ids.insert(env["GOVSHARE_NODE_ID"].as_str().unwrap().to_string());
        let volumes = strings(&gateway["volumes"]);
        let ca = env["GOVSHARE_STORE__CA"].as_str().unwrap();
        assert!(
            volumes.iter().any(|v| v.ends_with(&format!(":{ca}:ro"))),
            "the database's CA is mounted where store.ca names it"
        );
        assert!(volumes.contains(&format!("./data-{n}:/var/lib/govshare")));
        assert!(
            volumes.contains(&"./cluster-pki:/var/lib/govshare/pki".to_string()),
            "the log key is shared"
        );
        let start = strings(&gateway["entrypoint"]).join(" ");
        assert!(
            start.contains("@postgres:5432/govshare") && !start.contains("sslmode=disable"),
            "{start}"
        );
        assert!(
            !start.contains("POSTGRES_PASSWORD") && start.contains("/run/secrets/db-password"),
            "the password comes from the secret: {start}"
        );
        assert_eq!(
            gateway["depends_on"]["postgres"]["condition"].as_str(),
            Some("service_healthy")
        );
        if n > 1 {
            assert_eq!(
                gateway["depends_on"]["gateway-1"]["condition"].as_str(),
                Some("service_healthy"),
                "joins once the first node made the log key"
            );
        }
    }
    assert_eq!(ids.len(), 3, "{ids:?}");
}

#[test]
fn the_cluster_deployment_runs_replicas_over_postgres_with_one_log_key() {
    let docs = yaml("k8s/cluster/deployment.yaml");
    let cm = docs.iter().find(|d| kind(d) == "ConfigMap").unwrap();
    let toml = cm["data"]["govshare.toml"].as_str().unwrap();
    assert!(toml.contains("backend = \"postgres\""), "{toml}");
    config_check_accepts(
        toml,
        &[(
            "GOVSHARE_STORE__URL",
            "postgres://u:p@db.example:5432/govshare",
        )],
    );
    let d = docs.iter().find(|d| kind(d) == "Deployment").unwrap();
    assert!(d["spec"]["replicas"].as_i64().unwrap() >= 2);
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let mounts = c["volumeMounts"].as_vec().unwrap();
    assert!(
        mounts
            .iter()
            .any(|m| m["mountPath"].as_str() == Some("/var/lib/govshare/pki/audit-log.key")),
        "every replica has the one log key"
    );
    let env = c["env"].as_vec().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"].as_str() == Some("GOVSHARE_STORE__URL")
                && !e["valueFrom"]["secretKeyRef"].is_badvalue()),
        "the database URL comes from a Secret"
    );
}

#[test]
fn the_grafana_dashboard_uses_the_gateways_metrics() {
    let text = std::fs::read_to_string(deploy("grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    let known = [
        "govshare_grpc_requests_total",
        "govshare_grpc_request_duration_seconds_bucket",
        "govshare_pulls_total",
        "govshare_records_released_total",
        "govshare_audit_entries_total",
        "govshare_audit_batch_entries_sum",
        "govshare_audit_batch_entries_count",
        "govshare_audit_fsync_seconds_bucket",
        "govshare_audit_log_bytes",
        "govshare_audit_log_entries",
        "govshare_audit_writable",
        "govshare_audit_index_lag_entries",
        "govshare_checkpoint_age_seconds",
        "govshare_witness_cosignatures_total",
        "govshare_auth_failures_total",
        "govshare_token_cache_entries",
        "govshare_store_bytes",
        "govshare_connections_open",
        "govshare_requests_shed_total",
        "govshare_connections_refused_total",
    ];
    for e in &exprs {
        for word in e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("govshare_") {
                assert!(
                    known.contains(&word),
                    "the dashboard uses an unknown metric {word}"
                );
            }
        }
    }
    for k in known
        .iter()
        .filter(|k| !k.ends_with("_bucket") && !k.ends_with("_count"))
    {
        assert!(exprs.iter().any(|e| e.contains(k)), "no panel shows {k}");
    }
}

/// The unit's settings as an INI reader sees them: key -> every value, in
/// order. A key set twice reads differently to systemd (merged) and to the
/// INI tools auditors check units with (the last wins), so hardening keys
/// are set once.
fn unit_settings(unit: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in unit.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(k.trim().to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    out
}

/// The hardening every shipped unit sets, each once.
const HARDENING: [(&str, &str); 7] = [
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("PrivateTmp", "yes"),
    ("ProtectHome", "yes"),
    ("CapabilityBoundingSet", ""),
    ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
    ("SystemCallFilter", "@system-service"),
];

fn assert_set_once(name: &str, unit: &str, pairs: &[(&str, &str)]) {
    let settings = unit_settings(unit);
    for (key, value) in pairs {
        assert_eq!(
            settings.get(*key).map(Vec::as_slice),
            Some(&[value.to_string()][..]),
            "{name} sets {key}={value}, once"
        );
    }
}

/// `systemd-analyze verify` of the named units, copied with this build's
/// binary in their ExecStart (the installed path does not exist here) and
/// without their users (which do not either). False when systemd is absent.
fn systemd_verifies(units: &[&str]) -> bool {
    let Ok(status) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not here; the units were checked by their text only");
        return false;
    };
    assert!(status.status.success());
    let dir = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    for name in units {
        let unit = std::fs::read_to_string(deploy(&format!("systemd/{name}"))).unwrap();
        let copy = dir.path().join(name);
        let mut text = unit.replace("/usr/local/bin/govshare", env!("CARGO_BIN_EXE_govshare"));
        for line in ["User=", "Group="] {
            text = text
                .lines()
                .filter(|l| !l.starts_with(line))
                .collect::<Vec<_>>()
                .join("\n");
        }
        std::fs::write(&copy, text + "\n").unwrap();
        copies.push(copy);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = said
        .lines()
        .filter(|l| units.iter().any(|u| l.contains(u)))
        .filter(|l| !l.contains("Failed to look up"))
        .collect();
    assert!(out.status.success() && problems.is_empty(), "{said}");
    true
}

#[test]
fn the_systemd_unit_is_hardened_and_verifies() {
    let unit = std::fs::read_to_string(deploy("systemd/govshare.service")).unwrap();
    assert_set_once("govshare.service", &unit, &HARDENING);
    assert_set_once(
        "govshare.service",
        &unit,
        &[("ReadWritePaths", "/var/lib/govshare")],
    );
    systemd_verifies(&["govshare.service"]);
}

/// The scheduled snapshot on a plain host: a timer that starts the
/// snapshot service, which runs `snapshot save --dir --keep` over the admin
/// API as a user of its own that may write only the backup directory (not
/// the data dir: a backup job needs no access to it).
#[test]
fn the_snapshot_timer_runs_a_save_that_keeps_the_newest() {
    let service = std::fs::read_to_string(deploy("systemd/govshare-snapshot.service")).unwrap();
    let timer = std::fs::read_to_string(deploy("systemd/govshare-snapshot.timer")).unwrap();
    assert_set_once("govshare-snapshot.service", &service, &HARDENING);
    let settings = unit_settings(&service);
    assert_eq!(settings["Type"], ["oneshot"]);
    assert_eq!(settings["ReadWritePaths"], ["/var/backups/govshare"]);
    assert_ne!(settings["User"], ["govshare"], "not the gateway's own user");
    let exec = &settings["ExecStart"][0];
    for word in [
        "snapshot save",
        "--dir /var/backups/govshare",
        "--keep ",
        "--identity ",
    ] {
        assert!(exec.contains(word), "ExecStart runs {word}: {exec}");
    }
    // What it runs is a command line this build accepts.
    let args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    let out = Command::new(env!("CARGO_BIN_EXE_govshare"))
        .args(&args[..2])
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag), "`snapshot save` has no {flag}");
    }
    let timer_settings = unit_settings(&timer);
    assert!(timer_settings.contains_key("OnCalendar"));
    assert_eq!(timer_settings["Persistent"], ["true"]);
    assert!(
        timer_settings
            .get("Unit")
            .is_none_or(|u| u == &["govshare-snapshot.service"]),
        "the timer starts the snapshot service"
    );
    systemd_verifies(&["govshare-snapshot.service", "govshare-snapshot.timer"]);
}

#[test]
fn the_image_is_multi_stage_non_root_and_health_checked() {
    let file = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    assert!(file.matches("\nFROM ").count() + usize::from(file.starts_with("FROM ")) >= 2);
    assert!(file.contains("USER 10001"), "runs as a non-root user");
    assert!(file.contains("HEALTHCHECK") && file.contains("/readyz"));
    let docker = Command::new("docker").arg("info").output();
    if !docker.is_ok_and(|o| o.status.success()) {
        eprintln!("no Docker engine here; `docker build` is not run");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("docker")
        .args([
            "build",
            "-f",
            "deploy/Dockerfile",
            "-t",
            "govshare:test",
            ".",
        ])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shipped nginx configuration for the published tree is one nginx
/// accepts (`nginx -t`), where nginx is installed (`.ci/run` installs it).
#[test]
fn the_published_tree_nginx_configuration_is_valid() {
    let text = std::fs::read_to_string(deploy("nginx/published-tree.conf")).unwrap();
    for must in ["immutable", "no-cache", "max-age=60", "return 404"] {
        assert!(text.contains(must), "the configuration sets {must}");
    }
    if Command::new("nginx").arg("-v").output().is_err() {
        eprintln!("nginx is not here; the configuration was checked by its text only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        text.replace(
            "pid /run/govshare-tiles.pid;",
            &format!("pid {}/nginx.pid;", dir.path().display()),
        ),
    )
    .unwrap();
    let out = Command::new("nginx")
        .args(["-t", "-q", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
