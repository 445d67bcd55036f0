//! Command-line clients of a running gateway: `govshare admin …` and
//! `govshare pull …` and `govshare audit …`. Each connects with an identity's certificate, key and
//! token from a PKI directory (the dev PKI by default).

pub mod admin;
pub mod audit;
pub mod bench;
mod bootstrap;
pub mod corrections;
pub mod import;
pub mod pull;
pub mod snapshot;
pub mod store;
mod table;

use clap::Args;
use govshare::client::Client;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct Connect {
    /// Gateway address.
    #[arg(
        long,
        env = "GOVSHARE_ADDR",
        default_value = "127.0.0.1:50051",
        global = true
    )]
    pub addr: String,
    /// Directory with ca.pem and <identity>.pem/.key/.token.
    #[arg(
        long,
        env = "GOVSHARE_PKI",
        default_value = "govshare-data/pki",
        global = true
    )]
    pub pki: PathBuf,
    /// Whose certificate and token to use.
    #[arg(long, global = true)]
    pub identity: Option<String>,
    /// Print the response as proto JSON instead of a table.
    #[arg(long, global = true, conflicts_with = "quiet")]
    pub json: bool,
    /// Print only the id of what was created or changed (for scripts).
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

impl Connect {
    pub async fn client(&self, default_identity: &str) -> anyhow::Result<Client> {
        let identity = self.identity.as_deref().unwrap_or(default_identity);
        Client::from_pki(&self.addr, &self.pki, identity).await
    }
}

/// Turns a gRPC status into an error line a person can act on.
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

/// Prints a line of output. When the reader has gone (`| head`), exits
/// quietly instead of panicking on the broken pipe.
pub fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    if writeln!(std::io::stdout().lock(), "{line}").is_err() {
        std::process::exit(0);
    }
}
