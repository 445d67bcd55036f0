//! Test harness: runs the real `govshare` binary on 127.0.0.1 with an
//! ephemeral port and a temp data dir, and talks to it over TLS gRPC with
//! the dev PKI's client certificates and tokens.

#![allow(dead_code)]

use govshare::proto::{AuditEntry, PullContext};
use prost::Message;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use tonic::transport::Channel;

/// Residents in the test district: small enough to start in a second, large
/// enough for two streets with people in both.
pub const TEST_PERSONS: usize = 1500;
pub const SEED: u64 = 20_261_122;

pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    /// What the gateway printed before it listened.
    pub said: Vec<String>,
    /// The plain-HTTP ops listener.
    pub ops: Option<SocketAddr>,
    _tmp: Option<tempfile::TempDir>,
}

impl Gateway {
    /// Starts a gateway on a fresh temp data dir. `extra` is appended to the
    /// config file (TOML).
    pub fn start(extra: &str) -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let mut g = Self::start_in(&dir, extra);
        g._tmp = Some(tmp);
        g
    }

    /// Starts (or restarts) a demo gateway on `dir`, over the store the
    /// suite runs on ([`store_section`]).
    pub fn start_in(dir: &Path, extra: &str) -> Self {
        Self::start_with(
            dir,
            &format!(
                "demo = true\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndemo_persons = {TEST_PERSONS}\ndemo_seed = {SEED}\n{extra}\n{}",
                dir.display(),
                store_section(dir),
            ),
        )
    }

    /// Starts a gateway on `dir` with exactly this configuration file.
    pub fn start_with(dir: &Path, config_text: &str) -> Self {
        Self::start_with_env(dir, config_text, &[])
    }

    /// …and these environment variables.
    pub fn start_with_env(dir: &Path, config_text: &str, env: &[(&str, &str)]) -> Self {
        let config = dir.join("govshare.toml");
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(&config, config_text).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_govshare"))
            .args(["serve", "--config"])
            .arg(&config)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawning govshare");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut said: Vec<String> = Vec::new();
        let addr = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| {
                    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    panic!(
                        "govshare exited before listening; {}/server.log ends:\n{}",
                        dir.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                    )
                })
                .unwrap();
            if let Some(rest) = line.strip_prefix("govshare listening on ") {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
            said.push(line);
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        let ops = said
            .iter()
            .find_map(|l| l.strip_prefix("ops listening on "))
            .and_then(|a| a.trim().parse().ok());
        Self {
            child: Some(child),
            addr,
            dir: dir.to_path_buf(),
            said,
            ops,
            _tmp: None,
        }
    }

    pub fn pki(&self, file: &str) -> PathBuf {
        self.dir.join("pki").join(file)
    }

    pub fn token(&self, identity: &str) -> String {
        std::fs::read_to_string(self.pki(&format!("{identity}.token"))).unwrap()
    }

    /// A TLS channel presenting `identity`'s client certificate.
    pub async fn channel(&self, identity: &str) -> Channel {
        self.channel_with_cert(identity).await
    }

    pub async fn channel_with_cert(&self, cert_identity: &str) -> Channel {
        let read = |f: &str| std::fs::read(self.pki(f)).unwrap();
        govshare::client::channel(
            &self.addr.to_string(),
            &read("ca.pem"),
            &read(&format!("{cert_identity}.pem")),
            &read(&format!("{cert_identity}.key")),
        )
        .await
        .expect("connecting over TLS")
    }

    /// `GET path` on the ops listener: (status, body).
    pub async fn ops_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.ops.expect("an ops listener"))
            .await
            .unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// SIGTERM and wait: a graceful stop. Returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        match self.child.take() {
            Some(mut c) => {
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                c.wait().unwrap().success()
            }
            None => true,
        }
    }

    /// Starts the binary on `dir` expecting it to refuse; returns what it said.
    pub fn refuses_to_start(dir: &Path, extra: &str) -> String {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("refused.toml");
        std::fs::write(
            &config,
            format!(
                "demo = true\nlisten = \"127.0.0.1:0\"\nops_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\ndemo_persons = {TEST_PERSONS}\ndemo_seed = {SEED}\n{extra}\n",
                dir.display()
            ),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_govshare"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "the gateway started on a damaged log"
        );
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// The database URL of the gateway's config, if its store is PostgreSQL.
    pub fn database_url(&self) -> Option<String> {
        let config = std::fs::read_to_string(self.dir.join("govshare.toml")).ok()?;
        let store = config.split("[store]").nth(1)?;
        if !store.contains("backend = \"postgres\"") {
            return None;
        }
        store.lines().find_map(|l| {
            l.strip_prefix("url = \"")
                .and_then(|u| u.strip_suffix('"'))
                .map(str::to_string)
        })
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to the process: a hang, and its end.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running gateway").id();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// SIGKILL: the process dies wherever it is.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Every audit entry of the gateway's log, in order: on disk (a torn
    /// tail is ignored), or over PostgreSQL the shared log's (which the
    /// node's replica follows).
    pub fn audit_entries(&self) -> Vec<(Vec<u8>, AuditEntry)> {
        let stored = match self.database_url() {
            Some(url) => postgres::log_entries(&url),
            None => govshare::audit::segment::read_all(&self.dir.join("audit")).unwrap(),
        };
        stored
            .into_iter()
            .map(|b| {
                let e = AuditEntry::decode(b.as_slice()).unwrap();
                (b, e)
            })
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
        // The gateway that made the temp dir ends its database with it.
        if self._tmp.is_some() {
            postgres::drop_database_of(&self.dir);
        }
    }
}

/// Whether this suite runs over PostgreSQL: the pull-path, policy and
/// auditors suites run as themselves over sled, and again included by
/// `tests/over_postgres.rs`, where this module's path starts there.
pub fn over_postgres() -> bool {
    module_path!().starts_with("over_postgres")
}

/// The `[store]` section of a demo gateway's config: nothing over sled;
/// over PostgreSQL, a database of its own for `dir` (the same one when a
/// test restarts a gateway on `dir`).
pub fn store_section(dir: &Path) -> String {
    if !over_postgres() {
        return String::new();
    }
    // A few connections each: many gateways of a parallel test run share
    // one server's connection limit.
    format!(
        "[store]\nbackend = \"postgres\"\nurl = \"{}\"\npool_size = 4\n",
        postgres::database_for(dir)
    )
}

/// The store of the demo gateway on `dir` (open it only while that gateway
/// is stopped: a running one holds it).
pub fn store_of(dir: &Path) -> govshare::store::Location {
    if over_postgres() {
        govshare::store::Location::Postgres(govshare::store::postgres::Location {
            url: postgres::database_for(dir),
            pool_size: 2,
            ca: None,
        })
    } else {
        govshare::store::Location::Sled(dir.join("store"))
    }
}

/// Databases for tests, on the server `TEST_DATABASE_URL` names.
pub mod postgres {
    use std::path::Path;
    use std::process::Command;

    /// The variable that names a PostgreSQL server where tests may create
    /// databases (`.ci/run` starts the machine's PostgreSQL and sets it).
    pub const VARIABLE: &str = "TEST_DATABASE_URL";

    /// The server's URL. A missing server fails the test: it is never
    /// skipped.
    pub fn server() -> String {
        std::env::var(VARIABLE).unwrap_or_else(|_| {
            panic!(
                "{VARIABLE} is not set: these tests need a PostgreSQL server where they may create databases. \
                 Start one (`pg_ctlcluster 15 main start`) and set {VARIABLE}=postgres://user:password@127.0.0.1:5432/postgres \
                 for a role with CREATEDB — .ci/run does both (docs/development.md)"
            )
        })
    }

    fn psql(sql: &str) -> Result<(), String> {
        let out = Command::new("psql")
            .arg(server())
            .args(["-v", "ON_ERROR_STOP=1", "-qc", sql])
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// `server()` with its database replaced by `name`.
    pub fn url_of(name: &str) -> String {
        let server = server();
        let (base, query) = match server.split_once('?') {
            Some((b, q)) => (b.to_string(), format!("?{q}")),
            None => (server.clone(), String::new()),
        };
        let authority_end = base
            .find("://")
            .map(|i| i + 3)
            .and_then(|s| base[s..].find('/').map(|j| s + j))
            .unwrap_or(base.len());
        format!("{}/{name}{query}", &base[..authority_end])
    }

    /// Drops the databases earlier test processes made and left (a
    /// gateway started on a test's own dir, a test killed midway): their
    /// names carry their process id, and a process that is gone needs none.
    /// Once per test process, so leftovers stay bounded by one run's.
    fn sweep_leftovers() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let Ok(out) = Command::new("psql")
                .arg(server())
                .args([
                    "-tAc",
                    "SELECT datname FROM pg_database WHERE datname LIKE 'govshare\\_test\\_%'",
                ])
                .output()
            else {
                return;
            };
            for name in String::from_utf8_lossy(&out.stdout).lines() {
                let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                }
            }
        });
    }

    /// A new, empty database; returns its name.
    pub fn create_database() -> String {
        sweep_leftovers();
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "govshare_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            rand_suffix()
        );
        psql(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating the test database {name}: {e}"));
        name
    }

    fn rand_suffix() -> u32 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    }

    /// A database of a test's own, dropped with it.
    pub struct TestDatabase {
        pub name: String,
        pub url: String,
    }

    impl TestDatabase {
        pub fn new() -> Self {
            let name = create_database();
            let url = url_of(&name);
            Self { name, url }
        }
    }

    impl Drop for TestDatabase {
        fn drop(&mut self) {
            let _ = psql(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }

    /// The database of the gateway on `dir`, made on first use.
    pub fn database_for(dir: &Path) -> String {
        let marker = dir.join("test-database");
        let name = match std::fs::read_to_string(&marker) {
            Ok(name) => name.trim().to_string(),
            Err(_) => {
                let name = create_database();
                std::fs::create_dir_all(dir).unwrap();
                std::fs::write(&marker, &name).unwrap();
                name
            }
        };
        url_of(&name)
    }

    /// One query's rows (`psql -tA`: `|` between columns) in the database
    /// at `url`; a failing query fails the test.
    pub fn query(url: &str, sql: &str) -> String {
        let out = run_psql(url, sql);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// What PostgreSQL said refusing `sql` in the database at `url`; a
    /// query that succeeds fails the test.
    pub fn refused_query(url: &str, sql: &str) -> String {
        let out = run_psql(url, sql);
        assert!(!out.status.success(), "{sql} was allowed");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn run_psql(url: &str, sql: &str) -> std::process::Output {
        Command::new("psql")
            .arg(url)
            .args(["-v", "ON_ERROR_STOP=1", "-tAc", sql])
            .output()
            .unwrap()
    }

    /// Every entry of the shared audit log in the database at `url`, in
    /// index order.
    pub fn log_entries(url: &str) -> Vec<Vec<u8>> {
        query(
            url,
            "SELECT encode(entry, 'hex') FROM audit_entries ORDER BY idx",
        )
        .lines()
        .filter(|l| !l.is_empty())
        .map(|h| data_encoding::HEXLOWER.decode(h.trim().as_bytes()).unwrap())
        .collect()
    }

    /// Drops the database made for `dir`, if one was.
    pub fn drop_database_of(dir: &Path) {
        if let Ok(name) = std::fs::read_to_string(dir.join("test-database")) {
            let _ = psql(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                name.trim()
            ));
        }
    }
}

/// Runs the `govshare` binary with `args`; returns (success, stdout + stderr).
pub fn cli(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_govshare"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("running govshare");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every file under `dir`, sorted.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Every file under `dir` with the SHA-256 of its contents.
pub fn fingerprint(dir: &Path) -> Vec<(PathBuf, String)> {
    use sha2::Digest;
    files(dir)
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let sum = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(&bytes));
            (p, sum)
        })
        .collect()
}

/// `GetPerson` as `identity`, citing `purpose`.
pub async fn get_person(
    gw: &Gateway,
    identity: &str,
    purpose: &str,
    id: &str,
) -> Result<govshare::proto::GetPersonResponse, tonic::Status> {
    govshare::proto::population_service_client::PopulationServiceClient::new(
        gw.channel(identity).await,
    )
    .get_person(req(
        govshare::proto::GetPersonRequest {
            context: ctx(purpose),
            id_number: id.into(),
        },
        &gw.token(identity),
    ))
    .await
    .map(tonic::Response::into_inner)
}

/// A request with a bearer token.
pub fn req<T>(msg: T, token: &str) -> tonic::Request<T> {
    govshare::client::with_token(msg, token)
}

/// The `jti` of a token (read without verification, as a client may).
pub fn jti(token: &str) -> String {
    let payload = token.trim().split('.').nth(1).unwrap();
    let json = data_encoding::BASE64URL_NOPAD
        .decode(payload.as_bytes())
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    v["jti"].as_str().unwrap().to_string()
}

pub fn ctx(purpose: &str) -> Option<PullContext> {
    Some(PullContext {
        purpose: purpose.into(),
        case_id: "CASE-2026-0001".into(),
        operator: "clerk-7".into(),
    })
}

/// The district every test gateway loads.
pub fn district() -> govshare::demo::District {
    govshare::demo::generate(SEED, TEST_PERSONS)
}

/// A resident of the district's first street (the street office's scope)
/// who has a phone, and a resident outside it.
pub fn residents() -> (govshare::proto::Person, govshare::proto::Person) {
    let d = district();
    let street = d.first_street().to_string();
    let in_street =
        |p: &&govshare::proto::Person| p.residence_grid.as_ref().unwrap().starts_with(&street);
    let inside = d
        .persons
        .iter()
        .find(|p| p.phone.is_some() && in_street(p))
        .unwrap();
    let outside = d.persons.iter().find(|p| !in_street(p)).unwrap();
    (inside.clone(), outside.clone())
}

/// An admin client as `identity`.
pub async fn admin_client(
    gw: &Gateway,
    identity: &str,
) -> govshare::proto::admin_service_client::AdminServiceClient<Channel> {
    govshare::proto::admin_service_client::AdminServiceClient::new(gw.channel(identity).await)
}

/// The administrator creates `g` directly (only unconditionally shared
/// views can be); the grant as stored.
pub async fn create_grant(
    gw: &Gateway,
    g: govshare::proto::Grant,
) -> Result<govshare::proto::Grant, tonic::Status> {
    let r = admin_client(gw, "admin")
        .await
        .create_grant(req(
            govshare::proto::CreateGrantRequest { grant: Some(g) },
            &gw.token("admin"),
        ))
        .await?
        .into_inner();
    Ok(r.grant.expect("a grant, not a pending request"))
}

/// Enrols a new department system: a client certificate from the dev CA,
/// the department (with `jurisdiction`), its certificate and a token with
/// `roles`, written as `<id>.pem/.key/.token` like the demo identities.
pub async fn enrol(
    gw: &Gateway,
    id: &str,
    department: &str,
    jurisdiction: &[&str],
    roles: &[&str],
) {
    use govshare::proto::*;
    let (ok, out) = cli(&[
        "pki",
        "issue-client",
        "--dir",
        gw.pki("").to_str().unwrap(),
        "--name",
        id,
    ]);
    assert!(ok, "{out}");
    let mut a = admin_client(gw, "admin").await;
    let token = gw.token("admin");
    let created = a
        .create_department(req(
            CreateDepartmentRequest {
                id: department.into(),
                name: format!("{department} (test)"),
                jurisdiction: jurisdiction.iter().map(|j| j.to_string()).collect(),
            },
            &token,
        ))
        .await;
    if let Err(e) = created {
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
    }
    let pem = std::fs::read_to_string(gw.pki(&format!("{id}.pem"))).unwrap();
    let cert = a
        .register_certificate(req(
            RegisterCertificateRequest {
                department: department.into(),
                certificate_pem: pem,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    let issued = a
        .issue_token(req(
            IssueTokenRequest {
                department: department.into(),
                certificate_thumbprint: cert.thumbprint,
                subject: id.into(),
                roles: roles.iter().map(|r| r.to_string()).collect(),
                lifetime_seconds: 3600,
            },
            &token,
        ))
        .await
        .unwrap()
        .into_inner();
    std::fs::write(gw.pki(&format!("{id}.token")), issued.token).unwrap();
}

/// Registers purposes (as the demo admin).
pub async fn register_purposes(gw: &Gateway, codes: &[&str]) {
    use govshare::proto::*;
    let mut a = admin_client(gw, "admin").await;
    for code in codes {
        a.register_purpose(req(
            RegisterPurposeRequest {
                purpose: Some(Purpose {
                    code: (*code).into(),
                    name: format!("test purpose {code}"),
                    legal_basis: "test regulation".into(),
                    ..Default::default()
                }),
            },
            &gw.token("admin"),
        ))
        .await
        .unwrap();
    }
}

/// A `govshare witness serve` of its own, for the log whose verifier key
/// is in `log_key`; killed when dropped.
pub struct Witness {
    child: Child,
    pub url: String,
    pub key: String,
}

impl Witness {
    pub fn start(dir: &Path, log_key: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_govshare"))
            .args([
                "witness",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--name",
                "witness.test/w1",
            ])
            .arg("--data-dir")
            .arg(dir)
            .arg("--log")
            .arg(log_key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = lines.next().unwrap().unwrap();
        let key = lines.next().unwrap().unwrap();
        std::thread::spawn(move || for _ in lines {});
        Self {
            child,
            url: format!(
                "http://{}",
                addr.strip_prefix("witness listening on ").unwrap()
            ),
            key: key.strip_prefix("witness key: ").unwrap().to_string(),
        }
    }

    /// The gateway's config lines that name it.
    pub fn config(&self) -> String {
        format!(
            "[audit]\ncheckpoint_interval = \"200ms\"\n[[audit.witness]]\nname = \"witness.test/w1\"\nurl = \"{}\"\nkey = \"{}\"\n",
            self.url, self.key
        )
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every record `identity` may list under `region`, in the order sent.
pub async fn list_all(gw: &Gateway, identity: &str, region: &str) -> Vec<govshare::proto::Person> {
    use govshare::proto::ListPersonsRequest;
    use govshare::proto::population_service_client::PopulationServiceClient;
    let mut pop = PopulationServiceClient::new(gw.channel(identity).await);
    let mut pages = pop
        .list_persons(req(
            ListPersonsRequest {
                context: ctx(identity),
                region_prefix: region.into(),
                page_size: 1000,
                ..Default::default()
            },
            &gw.token(identity),
        ))
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(page) = pages.message().await.unwrap() {
        out.extend(page.persons);
    }
    out
}

/// Every collection of records, by its name in the store.
pub const COLLECTIONS: [&str; 5] = [
    "population",
    "legal_entity",
    "grid",
    "grid_worker",
    "region",
];

/// Puts a stopped gateway's records back as a release from before records
/// were kept in index order left them: each under its key in
/// `<collection>`, an empty entry under its index key in
/// `<collection>.by_grid`, nothing in `<collection>.placed`.
pub fn put_back_in_the_earlier_layout(store: &dyn govshare::store::Backend) {
    for name in COLLECTIONS {
        let placed = format!("{name}.placed");
        let records = store.scan(&placed, b"r", None, usize::MAX).unwrap();
        assert!(!records.is_empty(), "{name}");
        for (at, bytes) in records {
            let place = &at[1..];
            let key = place.rsplit(|b| *b == 0).next().unwrap();
            store.put(name, key, &bytes).unwrap();
            store.put(&format!("{name}.by_grid"), place, b"").unwrap();
        }
        let all = store.scan(&placed, b"", None, usize::MAX).unwrap();
        let gone = all.into_iter().map(|(k, _)| (k, None)).collect();
        store.apply_batch(&placed, gone).unwrap();
    }
    store.sync().unwrap();
}

/// Every record is in index order exactly once: the earlier layout's trees
/// are empty, and each collection holds one place per record, each naming
/// a record that is there.
pub fn assert_each_record_placed_once(store: &dyn govshare::store::Backend) {
    for name in COLLECTIONS {
        for old in [name.to_string(), format!("{name}.by_grid")] {
            assert!(store.scan(&old, b"", None, 1).unwrap().is_empty(), "{old}");
        }
        let placed = format!("{name}.placed");
        let records = store.scan(&placed, b"r", None, usize::MAX).unwrap();
        let places = store.scan(&placed, b"p", None, usize::MAX).unwrap();
        assert!(!records.is_empty(), "{placed}");
        assert_eq!(records.len(), places.len(), "{placed}: a place per record");
        let at: std::collections::HashSet<&[u8]> = records.iter().map(|(k, _)| &k[1..]).collect();
        for (key, place) in &places {
            assert!(
                at.contains(place.as_slice()),
                "{placed}: {key:?} placed nowhere"
            );
        }
    }
}
