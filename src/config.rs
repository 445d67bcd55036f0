//! Gateway configuration: a TOML file, with command-line overrides. Every
//! field has a default so `govshare serve` runs with no file at all.

use crate::audit::AuditOptions;
use anyhow::{Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Written into every audit entry.
    pub node_id: String,
    /// `iss` of the tokens this gateway signs and accepts.
    pub issuer: String,
    /// `aud` the tokens must carry.
    pub audience: String,
    /// Residents in the generated demo district loaded on first start (0: none).
    pub demo_persons: usize,
    pub demo_seed: u64,
    /// Longest lifetime `IssueToken` grants; also how long a rotated-out
    /// signing key keeps verifying.
    pub max_token_days: u64,
    /// Days an admin has to decide a pending access request before it is
    /// flagged overdue.
    pub request_deadline_days: u64,
    /// The CA that client certificates must chain to (default: the dev PKI's).
    pub client_ca: Option<PathBuf>,
    pub audit: AuditConfig,
    /// Changes to the catalog's sharing classes.
    pub catalog_override: Vec<crate::catalog::Override>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    pub segment_bytes: u64,
    pub max_batch: usize,
    /// The log's name: the origin line of its checkpoints and its key name.
    pub origin: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".parse().expect("literal address"),
            data_dir: PathBuf::from("govshare-data"),
            node_id: "node-1".into(),
            issuer: "govshare".into(),
            audience: "govshare".into(),
            demo_persons: 50_000,
            demo_seed: 20_261_122,
            max_token_days: 90,
            request_deadline_days: 10,
            client_ca: None,
            audit: AuditConfig::default(),
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
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn audit_options(&self) -> AuditOptions {
        AuditOptions {
            node: self.node_id.clone(),
            segment_bytes: self.audit.segment_bytes.max(1),
            max_batch: self.audit.max_batch.max(1),
        }
    }

    pub fn client_ca_path(&self) -> PathBuf {
        self.client_ca
            .clone()
            .unwrap_or_else(|| self.pki_dir().join("ca.pem"))
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.data_dir.join("pki")
    }
    pub fn store_dir(&self) -> PathBuf {
        self.data_dir.join("store")
    }
    pub fn audit_dir(&self) -> PathBuf {
        self.data_dir.join("audit")
    }
}
