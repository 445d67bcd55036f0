//! Gateway configuration: one TOML file, every key also settable as
//! `GOVSHARE_<KEY>` (nested keys joined by `__`, e.g.
//! `GOVSHARE_AUDIT__MAX_BATCH`), the environment winning over the file.
//!
//! Unknown keys and bad values stop the start with the key named: a typo in
//! a security setting must never fall back silently to a default. Every key
//! is documented in [`KEYS`]; `govshare config reference` prints them with
//! their defaults, and the README's reference is generated from it (a test
//! fails when the two drift).
//!
//! Without a file, `govshare serve` runs the embedded demo ([`Config::demo`]).
//! A file describes a production gateway unless it says `demo = true`.

use crate::audit::AuditOptions;
use crate::control::policy::is_department_id;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The demo's backup identity in the dev PKI (an age X25519 secret key),
/// and its recipient, what a demo's snapshots are encrypted to.
pub const BACKUP_IDENTITY: &str = "backup.agekey";
pub const BACKUP_RECIPIENT: &str = "backup.recipient";

/// Variables the command-line clients read; they are not gateway keys.
const CLIENT_VARIABLES: &[&str] = &["addr", "pki"];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub demo: bool,
    pub listen: SocketAddr,
    pub ops_listen: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console_listen: Option<SocketAddr>,
    pub console: ConsoleConfig,
    pub log_format: LogFormat,
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    pub grpc: GrpcConfig,
    pub data_dir: PathBuf,
    pub store: StoreConfig,
    pub node_id: String,
    pub issuer: String,
    pub audience: String,
    pub demo_persons: usize,
    pub demo_seed: u64,
    #[serde(with = "humantime_serde")]
    pub demo_clock_offset: Duration,
    pub max_token_days: u64,
    pub request_deadline_days: u64,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    pub client_ca: PathBuf,
    pub admin_departments: Vec<String>,
    pub auditor_departments: Vec<String>,
    pub resident_portal_departments: Vec<String>,
    pub corrections: CorrectionsConfig,
    pub audit: AuditConfig,
    pub snapshot: SnapshotConfig,
    pub catalog_override: Vec<crate::datasets::catalog::Override>,
}

/// Where the records and the control plane live.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub backend: StoreBackend,
    /// `postgres://…` (backend = postgres only).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    pub pool_size: usize,
    /// PEM roots for the database server's certificate (empty: the
    /// system's roots).
    pub ca: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Sled,
            url: String::new(),
            pool_size: 16,
            ca: PathBuf::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Embedded, in `data_dir/store`: one node.
    Sled,
    /// A PostgreSQL database (`store.url`).
    Postgres,
}

/// Snapshots (`govshare snapshot save`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotConfig {
    /// The age recipients (`age1…`) snapshots are encrypted to.
    pub recipients: Vec<String>,
}

/// Corrections sent back to a dataset's source department.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorrectionsConfig {
    /// Working days (Monday to Friday) the source has to answer.
    pub response_days: u32,
}

impl Default for CorrectionsConfig {
    fn default() -> Self {
        Self { response_days: 5 }
    }
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable (on a terminal).
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// The auditors' console's sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
    #[serde(with = "humantime_serde")]
    pub session_max: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            session_idle: Duration::from_secs(30 * 60),
            session_max: Duration::from_secs(8 * 3600),
        }
    }
}

/// Connections and messages on the gRPC listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcConfig {
    pub max_connections: usize,
    pub max_in_flight: usize,
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    pub max_message_bytes: usize,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_in_flight: 1024,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_message_bytes: 4 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    pub segment_bytes: u64,
    pub max_batch: usize,
    pub origin: String,
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub scrub_interval: Duration,
    pub publish_dir: PathBuf,
    #[serde(with = "humantime_serde")]
    pub publish_grace: Duration,
    pub witness: Vec<crate::audit::signer::WitnessConfig>,
}

/// One documented key: its dotted name and what it means. Defaults come
/// from [`Config::default`] itself, so they cannot drift.
pub struct KeyDoc {
    pub key: &'static str,
    pub meaning: &'static str,
}

/// Every configuration key. `[[…]]` keys are tables that may repeat.
pub const KEYS: &[KeyDoc] = &[
    KeyDoc {
        key: "demo",
        meaning: "Demo mode: dev PKI, demo identities, grants and district on first start. Without a config file `govshare serve` runs in demo mode; a file is production unless it sets this. A data dir keeps the mode of its first start: a production dir never starts as a demo, nor the reverse.",
    },
    KeyDoc {
        key: "listen",
        meaning: "gRPC listener (mutual TLS): every govshare service, health and reflection.",
    },
    KeyDoc {
        key: "ops_listen",
        meaning: "Plain-HTTP ops listener: /metrics, /livez, /readyz, /.well-known/jwks.json. No client certificate; keep it on loopback or a monitoring network.",
    },
    KeyDoc {
        key: "console_listen",
        meaning: "The auditors' console (HTTPS, the gateway's server certificate; browsers present an auditor's client certificate from `client_ca`). Off unless set; `govshare serve` without a config file (the demo) serves it on 127.0.0.1:8443.",
    },
    KeyDoc {
        key: "console.session_idle",
        meaning: "A console session ends after this long without a request.",
    },
    KeyDoc {
        key: "console.session_max",
        meaning: "A console session ends this long after sign-in, whatever its use.",
    },
    KeyDoc {
        key: "log_format",
        meaning: "`text` (human-readable) or `json` (one object per line). One line per request; never contents or tokens.",
    },
    KeyDoc {
        key: "shutdown_grace",
        meaning: "On SIGTERM/SIGINT: how long in-flight calls may finish before connections are cut; then the log is synced and a final checkpoint signed.",
    },
    KeyDoc {
        key: "grpc.max_connections",
        meaning: "Most open connections; a new one beyond it is closed at once.",
    },
    KeyDoc {
        key: "grpc.max_in_flight",
        meaning: "Most calls served at once; beyond it a call gets RESOURCE_EXHAUSTED at once (load is shed, not queued).",
    },
    KeyDoc {
        key: "grpc.handshake_timeout",
        meaning: "A TLS handshake must finish within this, or its socket is closed.",
    },
    KeyDoc {
        key: "grpc.idle_timeout",
        meaning: "A connection with no traffic this long is closed (clients reconnect on their next call).",
    },
    KeyDoc {
        key: "grpc.max_message_bytes",
        meaning: "Largest request message accepted; a larger one is RESOURCE_EXHAUSTED naming this key.",
    },
    KeyDoc {
        key: "data_dir",
        meaning: "Holds the sled store (`store/`), the audit log (`audit/`) and the gateway's keys (`pki/`).",
    },
    KeyDoc {
        key: "store.backend",
        meaning: "Where records, the control plane and quota counters live: `sled` (embedded, in `data_dir/store`) or `postgres` (the database at `store.url`; see docs/operators.md#postgresql).",
    },
    KeyDoc {
        key: "store.url",
        meaning: "backend = postgres: the database, as `postgres://user:password@host:port/dbname`. Its schema is migrated at start (or by `govshare db migrate`).",
    },
    KeyDoc {
        key: "store.ca",
        meaning: "backend = postgres: the PEM CA certificate(s) the database server's TLS certificate must chain to (empty: the system's roots). TLS is verified unless `url` says `sslmode=disable`, which is accepted only for a database on this host.",
    },
    KeyDoc {
        key: "store.pool_size",
        meaning: "backend = postgres: most connections this node keeps to the database.",
    },
    KeyDoc {
        key: "node_id",
        meaning: "This gateway node's name, written into every audit entry.",
    },
    KeyDoc {
        key: "issuer",
        meaning: "`iss` of the tokens this gateway signs and accepts.",
    },
    KeyDoc {
        key: "audience",
        meaning: "`aud` every token must carry.",
    },
    KeyDoc {
        key: "demo_persons",
        meaning: "Demo mode only: residents in the generated demo district loaded on first start (0: none).",
    },
    KeyDoc {
        key: "demo_seed",
        meaning: "Demo mode only: seed of the generated district (same seed, same district).",
    },
    KeyDoc {
        key: "demo_clock_offset",
        meaning: "Demo mode only: runs the gateway's clock this far ahead (e.g. `91d`), so a disclosure delay passes or a correction's deadline falls due in a demo or a test; each start with an offset says so in the log (an `ADMIN` entry). Refused in production.",
    },
    KeyDoc {
        key: "max_token_days",
        meaning: "Longest token lifetime IssueToken signs; also how long a rotated-out signing key keeps verifying.",
    },
    KeyDoc {
        key: "request_deadline_days",
        meaning: "Days an administrator has to decide a pending access request before it is flagged overdue.",
    },
    KeyDoc {
        key: "tls_cert",
        meaning: "PEM server certificate chain. Required in production; demo default: `<data_dir>/pki/server.pem`.",
    },
    KeyDoc {
        key: "tls_key",
        meaning: "PEM private key of `tls_cert`. Required in production; demo default: `<data_dir>/pki/server.key`.",
    },
    KeyDoc {
        key: "client_ca",
        meaning: "PEM CA certificates that client certificates must chain to. Required in production; demo default: `<data_dir>/pki/ca.pem`.",
    },
    KeyDoc {
        key: "admin_departments",
        meaning: "The only departments whose tokens may carry the `admin` role.",
    },
    KeyDoc {
        key: "auditor_departments",
        meaning: "The only departments whose tokens may carry the `auditor` role.",
    },
    KeyDoc {
        key: "resident_portal_departments",
        meaning: "The only departments whose tokens may carry the `resident-portal` role (the government app's back end asking the resident tracker); they may hold no other role.",
    },
    KeyDoc {
        key: "corrections.response_days",
        meaning: "Working days (Monday to Friday) a source department has to answer a correction before it is overdue.",
    },
    KeyDoc {
        key: "audit.segment_bytes",
        meaning: "Audit segments roll at this size (bytes).",
    },
    KeyDoc {
        key: "audit.max_batch",
        meaning: "Most audit entries committed by one fdatasync (group commit). Under load a batch of 8 or more waits up to 2 ms for more; with a `max_batch` below 8, batches never wait.",
    },
    KeyDoc {
        key: "audit.origin",
        meaning: "The log's name: the origin line of its checkpoints and the name of its verifier key. Its later generations (after a restore) are `<origin>/2`, `/3`, …, so it may not end in `/<number>` itself.",
    },
    KeyDoc {
        key: "audit.checkpoint_interval",
        meaning: "A checkpoint is signed at most this long after new entries (e.g. `1s`).",
    },
    KeyDoc {
        key: "audit.scrub_interval",
        meaning: "How often sealed segments are re-read and checked against the Merkle tiles.",
    },
    KeyDoc {
        key: "audit.publish_dir",
        meaning: "Where the published tree goes: the hash tiles and the newest signed `checkpoint`, as C2SP tlog-tiles files any static web server can serve (never entry contents). Empty: the log's own tile directory, `<data_dir>/audit/index/tiles`.",
    },
    KeyDoc {
        key: "audit.publish_grace",
        meaning: "How long a partial tile stays published after its full tile exists, so readers of the previous checkpoint still find it.",
    },
    KeyDoc {
        key: "[[audit.witness]].name",
        meaning: "A witness that cosigns every checkpoint: its key name.",
    },
    KeyDoc {
        key: "[[audit.witness]].url",
        meaning: "…its submission prefix (`http://host:port`; `/add-checkpoint` is appended).",
    },
    KeyDoc {
        key: "[[audit.witness]].key",
        meaning: "…its `cosignature/v1` verifier key, as `govshare witness serve` prints it.",
    },
    KeyDoc {
        key: "snapshot.recipients",
        meaning: "The age recipients (`age1…`) snapshots are encrypted to — the operator's backup keys, never the caller's. Empty: `snapshot save` is refused; in demo mode the dev PKI's backup identity (`pki/backup.recipient`).",
    },
    KeyDoc {
        key: "[[catalog_override]].dataset",
        meaning: "A change to one field view's sharing class: the dataset (population, legal_entity, grid).",
    },
    KeyDoc {
        key: "[[catalog_override]].field",
        meaning: "…the field, as GetCatalog names it.",
    },
    KeyDoc {
        key: "[[catalog_override]].view",
        meaning: "…the view: CLEAR, MASKED or PSEUDONYM.",
    },
    KeyDoc {
        key: "[[catalog_override]].sharing",
        meaning: "…its sharing class in force: unconditional, conditional or not_shared.",
    },
];

impl Default for Config {
    /// Production defaults: what a config file starts from.
    fn default() -> Self {
        Self {
            demo: false,
            listen: "127.0.0.1:50051".parse().expect("literal address"),
            ops_listen: "127.0.0.1:9464".parse().expect("literal address"),
            console_listen: None,
            console: ConsoleConfig::default(),
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(20),
            grpc: GrpcConfig::default(),
            data_dir: PathBuf::from("govshare-data"),
            store: StoreConfig::default(),
            node_id: "node-1".into(),
            issuer: "govshare".into(),
            audience: "govshare".into(),
            demo_persons: 50_000,
            demo_seed: 20_261_122,
            demo_clock_offset: Duration::ZERO,
            max_token_days: 90,
            request_deadline_days: 10,
            tls_cert: PathBuf::new(),
            tls_key: PathBuf::new(),
            client_ca: PathBuf::new(),
            admin_departments: vec!["gateway-admin".into()],
            auditor_departments: vec!["audit-office".into()],
            resident_portal_departments: vec!["resident-portal".into()],
            corrections: CorrectionsConfig::default(),
            audit: AuditConfig::default(),
            snapshot: SnapshotConfig::default(),
            catalog_override: Vec::new(),
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        let d = AuditOptions::default();
        Self {
            segment_bytes: d.segment_bytes,
            max_batch: d.max_batch,
            origin: "govshare.local/audit".into(),
            checkpoint_interval: d.checkpoint_interval,
            scrub_interval: d.scrub_interval,
            publish_dir: PathBuf::new(),
            publish_grace: d.publish_grace,
            witness: Vec::new(),
        }
    }
}

/// A configuration that cannot be used, with the key(s) at fault named.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

fn bad(key: &str, why: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{key}: {why}"))
}

impl Config {
    /// The embedded default of `govshare serve` with no config file.
    pub fn demo() -> Self {
        Self {
            demo: true,
            console_listen: Some("127.0.0.1:8443".parse().expect("literal address")),
            ..Self::default()
        }
    }

    /// Reads `file` (or starts from the demo defaults when there is none),
    /// applies `GOVSHARE_…` environment overrides, and validates.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, Env::prefixed("GOVSHARE_"))
    }

    fn load_with_env(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(match file {
            Some(_) => Self::default(),
            None => Self::demo(),
        }));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError(format!(
                    "{} does not exist or is not a file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let cfg: Self = figment
            .merge(env.split("__").ignore(CLIENT_VARIABLES))
            .extract()
            .map_err(|e| ConfigError(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what types alone cannot: ranges, names, and what production needs.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (key, d, most) in [
            ("console.session_idle", self.console.session_idle, "30m"),
            ("console.session_max", self.console.session_max, "8h"),
        ] {
            let most_d = humantime::parse_duration(most).expect("literal duration");
            if d.is_zero() || d > most_d {
                return Err(bad(key, format!("must be more than 0 and at most {most}")));
            }
        }
        if self.node_id.trim().is_empty() {
            return Err(bad("node_id", "must not be empty"));
        }
        match (self.store.backend, self.store.url.is_empty()) {
            (StoreBackend::Postgres, true) => {
                return Err(bad(
                    "store.url",
                    "backend = postgres needs the database's URL (postgres://user:password@host:port/dbname), or GOVSHARE_STORE__URL",
                ));
            }
            (StoreBackend::Sled, false) => {
                return Err(bad(
                    "store.url",
                    "is read only with backend = postgres; sled keeps its store in data_dir",
                ));
            }
            _ => {}
        }
        if !(1..=256).contains(&self.store.pool_size) {
            return Err(bad("store.pool_size", "must be 1 to 256"));
        }
        for (key, v) in [("issuer", &self.issuer), ("audience", &self.audience)] {
            if v.trim().is_empty() {
                return Err(bad(key, "must not be empty"));
            }
        }
        let g = &self.grpc;
        if g.max_connections == 0 {
            return Err(bad("grpc.max_connections", "must be at least 1"));
        }
        if g.max_in_flight == 0 {
            return Err(bad("grpc.max_in_flight", "must be at least 1"));
        }
        if !(1024..=(64 << 20)).contains(&g.max_message_bytes) {
            return Err(bad(
                "grpc.max_message_bytes",
                "must be between 1024 and 67108864",
            ));
        }
        if g.handshake_timeout.is_zero() || g.idle_timeout.is_zero() {
            return Err(bad(
                "grpc.handshake_timeout/idle_timeout",
                "must be more than 0s",
            ));
        }
        if self.max_token_days == 0 {
            return Err(bad("max_token_days", "must be at least 1"));
        }
        if !self.demo && !self.demo_clock_offset.is_zero() {
            return Err(bad(
                "demo_clock_offset",
                "moves the clock of a demo only; a production gateway keeps the real time",
            ));
        }
        if let Some(d) = self
            .resident_portal_departments
            .iter()
            .find(|d| self.admin_departments.contains(d) || self.auditor_departments.contains(d))
        {
            return Err(bad(
                "resident_portal_departments",
                format!(
                    "'{d}' is also an admin or auditor department; a portal holds no other role"
                ),
            ));
        }
        if let Some(d) = self
            .resident_portal_departments
            .iter()
            .find(|d| !is_department_id(d))
        {
            return Err(bad(
                "resident_portal_departments",
                format!("'{d}' is not a department id (2–64 lower-case letters, digits, '-')"),
            ));
        }
        for (key, list) in [
            ("admin_departments", &self.admin_departments),
            ("auditor_departments", &self.auditor_departments),
        ] {
            if list.is_empty() {
                return Err(bad(key, "name at least one department"));
            }
            if let Some(d) = list.iter().find(|d| !is_department_id(d)) {
                return Err(bad(
                    key,
                    format!("'{d}' is not a department id (2–64 lower-case letters, digits, '-')"),
                ));
            }
        }
        if self.audit.segment_bytes == 0 {
            return Err(bad("audit.segment_bytes", "must be at least 1"));
        }
        if !(1..=65_536).contains(&self.audit.max_batch) {
            return Err(bad("audit.max_batch", "must be between 1 and 65536"));
        }
        let origin = &self.audit.origin;
        if origin.is_empty() || origin.contains(['+', ' ', '\n']) || origin.len() > 128 {
            return Err(bad(
                "audit.origin",
                "a log name like example.gov.cn/audit: no spaces, '+' or newlines, at most 128 bytes",
            ));
        }
        if crate::audit::generation::split(origin).1 > 1 {
            return Err(bad(
                "audit.origin",
                "must not end in /<number>: that suffix names the log's later generations",
            ));
        }
        for r in &self.snapshot.recipients {
            if r.parse::<age::x25519::Recipient>().is_err() {
                return Err(bad(
                    "snapshot.recipients",
                    format!(
                        "'{}' is not an age X25519 recipient (age1…)",
                        crate::base::text::cap_for_message(r)
                    ),
                ));
            }
        }
        if self.audit.checkpoint_interval < Duration::from_millis(100)
            || self.audit.checkpoint_interval > Duration::from_secs(60)
        {
            return Err(bad(
                "audit.checkpoint_interval",
                "must be between 100ms and 60s",
            ));
        }
        if self.audit.scrub_interval < Duration::from_secs(1) {
            return Err(bad("audit.scrub_interval", "must be at least 1s"));
        }
        for (i, w) in self.audit.witness.iter().enumerate() {
            let key = format!("audit.witness[{i}]");
            crate::audit::checkpoint::CosignatureVerifier::parse(&w.key)
                .map_err(|e| bad(&format!("{key}.key"), format!("{e:#}")))
                .and_then(|v| {
                    if v.name() == w.name {
                        Ok(())
                    } else {
                        Err(bad(
                            &format!("{key}.name"),
                            format!("'{}' is not the name in its key ('{}')", w.name, v.name()),
                        ))
                    }
                })?;
            if !w.url.starts_with("http://") {
                return Err(bad(
                    &format!("{key}.url"),
                    "a witness is reached at an http:// URL",
                ));
            }
        }
        crate::datasets::catalog::Catalog::with_overrides(&self.catalog_override)
            .map_err(|e| bad("catalog_override", e))?;
        if !self.demo {
            let files = [
                ("tls_cert", &self.tls_cert),
                ("tls_key", &self.tls_key),
                ("client_ca", &self.client_ca),
            ];
            let missing: Vec<&str> = files
                .iter()
                .filter(|(_, v)| v.as_os_str().is_empty())
                .map(|(k, _)| *k)
                .collect();
            if !missing.is_empty() {
                return Err(bad(
                    &missing.join(", "),
                    "a production gateway (demo = false) needs tls_cert, tls_key and client_ca \
                     (the server's certificate chain and key, and the CA that client certificates \
                     chain to). Make them with your organisation's CA, or with \
                     `govshare pki init --production --dir DIR --host NAME`, which prints the \
                     three lines to add; or set `demo = true` for a dev PKI",
                ));
            }
        }
        Ok(())
    }

    /// Which departments may hold the privileged roles.
    pub fn role_departments(&self) -> crate::control::roles::RoleDepartments {
        crate::control::roles::RoleDepartments {
            admin: self.admin_departments.clone(),
            auditor: self.auditor_departments.clone(),
            resident_portal: self.resident_portal_departments.clone(),
        }
    }

    /// Whom snapshots are encrypted to: the configured recipients; in the
    /// demo, when none are named, the dev PKI's backup identity
    /// (`pki/backup.recipient`, made on first start).
    pub fn snapshot_recipients(&self) -> anyhow::Result<Vec<age::x25519::Recipient>> {
        let mut named = self.snapshot.recipients.clone();
        if named.is_empty() && self.demo {
            let file = self.pki_dir().join(BACKUP_RECIPIENT);
            if let Ok(text) = std::fs::read_to_string(&file) {
                named.push(text.trim().to_string());
            }
        }
        named
            .iter()
            .map(|r| {
                r.parse().map_err(|e| {
                    anyhow::anyhow!("snapshot.recipients: '{r}' is not an age recipient: {e}")
                })
            })
            .collect()
    }

    /// Opens the audit log of this data dir and `store`: fenced by the
    /// store's policy epoch, and, over a shared store, the store's one log
    /// with this dir keeping its replica.
    pub fn open_audit(
        &self,
        store: &std::sync::Arc<dyn crate::store::Backend>,
    ) -> anyhow::Result<crate::audit::Runtime> {
        let opts = AuditOptions {
            fence: Some(crate::audit::Fence {
                backend: store.clone(),
                row: crate::control::store::EPOCH_ROW,
            }),
            shared: store.shared_log(),
            ..self.audit_options()
        };
        crate::audit::Runtime::open(&self.audit_dir(), &self.pki_dir(), &self.audit.origin, opts)
    }

    pub fn audit_options(&self) -> AuditOptions {
        AuditOptions {
            fence: None,
            shared: None,
            node: self.node_id.clone(),
            segment_bytes: self.audit.segment_bytes,
            max_batch: self.audit.max_batch,
            checkpoint_interval: self.audit.checkpoint_interval,
            scrub_interval: self.audit.scrub_interval,
            publish_dir: (!self.audit.publish_dir.as_os_str().is_empty())
                .then(|| self.audit.publish_dir.clone()),
            publish_grace: self.audit.publish_grace,
            witnesses: self.audit.witness.clone(),
        }
    }

    fn or_pki(&self, set: &Path, demo_file: &str) -> PathBuf {
        if set.as_os_str().is_empty() {
            self.pki_dir().join(demo_file)
        } else {
            set.to_path_buf()
        }
    }

    pub fn client_ca_path(&self) -> PathBuf {
        self.or_pki(&self.client_ca, "ca.pem")
    }
    pub fn tls_cert_path(&self) -> PathBuf {
        self.or_pki(&self.tls_cert, "server.pem")
    }
    pub fn tls_key_path(&self) -> PathBuf {
        self.or_pki(&self.tls_key, "server.key")
    }

    /// The gateway's own keys (token issuer, audit log) and, in demo mode,
    /// the dev PKI.
    pub fn pki_dir(&self) -> PathBuf {
        self.data_dir.join("pki")
    }
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
    /// Where the store is: sled in `store_dir`, or the PostgreSQL database.
    pub fn store_location(&self) -> crate::store::Location {
        match self.store.backend {
            StoreBackend::Sled => crate::store::Location::Sled(self.store_dir()),
            StoreBackend::Postgres => {
                crate::store::Location::Postgres(crate::store::postgres::Location {
                    url: self.store.url.clone(),
                    pool_size: self.store.pool_size,
                    ca: (!self.store.ca.as_os_str().is_empty()).then(|| self.store.ca.clone()),
                })
            }
        }
    }
    /// Where a snapshot is written (encrypted) before it is streamed.
    pub fn snapshot_work_dir(&self) -> PathBuf {
        self.data_dir.join("snapshots")
    }
    pub fn audit_dir(&self) -> PathBuf {
        self.data_dir.join("audit")
    }
}

/// Every key of the production defaults with its default value, flattened
/// to dotted names (`audit.max_batch`).
pub fn defaults() -> Vec<(String, String)> {
    let value = toml::Value::try_from(Config::default()).expect("the defaults serialize");
    let mut out = Vec::new();
    flatten("", &value, &mut out);
    out
}

fn flatten(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        // Repeatable tables (`[[catalog_override]]`) have no default; they
        // are documented by their sub-keys.
        toml::Value::Array(a) if a.is_empty() || a[0].is_table() => {}
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

/// The reference as a Markdown table: key, default, meaning.
pub fn reference_markdown() -> String {
    let defaults = defaults();
    let mut s = String::from("| key | default | meaning |\n|---|---|---|\n");
    for k in KEYS {
        let default = defaults
            .iter()
            .find(|(key, _)| key == k.key)
            .map_or_else(|| "—".to_string(), |(_, v)| format!("`{v}`"));
        let env = if k.key.starts_with("[[") {
            String::new()
        } else {
            format!(
                " (`GOVSHARE_{}`)",
                k.key.replace('.', "__").to_ascii_uppercase()
            )
        };
        s.push_str(&format!(
            "| `{}`{env} | {default} | {} |\n",
            k.key, k.meaning
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
    fn load_str(toml: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        let mut out = None;
        figment::Jail::expect_with(|jail| {
            jail.create_file("govshare.toml", toml)?;
            for (k, v) in env {
                jail.set_env(k, v);
            }
            out = Some(Config::load(Some(Path::new("govshare.toml"))).map_err(|e| e.to_string()));
            Ok(())
        });
        out.expect("the jail ran")
    }

    /// The reference states the writer's group-commit rule as the writer
    /// has it: a change to either constant fails here until the text
    /// follows (a `KeyDoc` is a literal, so it cannot name them).
    #[test]
    fn the_max_batch_note_states_the_writers_rule() {
        use crate::audit::{CONVOY, LINGER};
        let note = KEYS
            .iter()
            .find(|k| k.key == "audit.max_batch")
            .expect("audit.max_batch is documented")
            .meaning;
        for said in [
            format!("a batch of {CONVOY} or more"),
            format!("up to {} ms", LINGER.as_millis()),
            format!("below {CONVOY}"),
        ] {
            assert!(note.contains(&said), "{note:?} should say {said:?}");
        }
    }

    /// A production config's three TLS keys, naming files that exist.
    fn prod() -> String {
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let dir = DIR.get_or_init(|| {
            let d = tempfile::tempdir().unwrap();
            for f in ["c.pem", "k.pem", "ca.pem"] {
                std::fs::write(d.path().join(f), "").unwrap();
            }
            d
        });
        let p = |f: &str| dir.path().join(f).display().to_string();
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\nclient_ca = \"{}\"\n",
            p("c.pem"),
            p("k.pem"),
            p("ca.pem")
        )
    }

    #[test]
    fn every_default_key_is_documented() {
        for (key, _) in defaults() {
            assert!(
                KEYS.iter().any(|k| k.key == key),
                "config key '{key}' has no entry in config::KEYS"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = load_str(&format!("{}lisen = \"x\"", prod()), &[]).unwrap_err();
        assert!(e.contains("lisen"), "{e}");
        let e = load_str(&format!("{}[audit]\nmax_batch = \"many\"", prod()), &[]).unwrap_err();
        assert!(e.contains("max_batch"), "{e}");
        let e = load_str(&format!("{}[audit]\nmax_batch = 0", prod()), &[]).unwrap_err();
        assert!(e.contains("audit.max_batch"), "{e}");
        let e = load_str("listen = \"127.0.0.1:1\"", &[]).unwrap_err();
        assert!(e.contains("tls_cert"), "{e}");
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let c = load_str(
            &format!("{}node_id = \"from-file\"\n[audit]\nmax_batch = 7", prod()),
            &[
                ("GOVSHARE_NODE_ID", "from-env"),
                ("GOVSHARE_AUDIT__MAX_BATCH", "9"),
                ("GOVSHARE_ADDR", "127.0.0.1:1"),
            ],
        )
        .unwrap();
        assert_eq!(c.node_id, "from-env");
        assert_eq!(c.audit.max_batch, 9);
        let e = load_str(&prod(), &[("GOVSHARE_NODE_IDD", "x")]).unwrap_err();
        assert!(e.contains("node_idd"), "{e}");
    }
}
