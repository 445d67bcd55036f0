//! A gRPC client over mutual TLS with a bearer token: what the command line
//! and the integration tests use to call a gateway, exactly as a department
//! system would.

use anyhow::{Context, Result};
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Opens a TLS channel to `addr` trusting `ca_pem` and presenting the client
/// certificate `cert_pem`/`key_pem`. The dev server certificate is issued for
/// `localhost`, which is the name checked whatever address is dialled.
pub async fn channel(
    addr: &str,
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Channel> {
    endpoint(addr, ca_pem, cert_pem, key_pem)?
        .connect()
        .await
        .with_context(|| format!("connecting to govshare at {addr}"))
}

/// The endpoint [`channel`] connects, for callers that tune it first
/// (flow-control windows, timeouts).
pub fn endpoint(addr: &str, ca_pem: &[u8], cert_pem: &[u8], key_pem: &[u8]) -> Result<Endpoint> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(cert_pem, key_pem))
        .domain_name("localhost");
    Ok(Endpoint::from_shared(format!("https://{addr}"))
        .with_context(|| format!("'{addr}' is not a host:port address"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5)))
}

/// A connected identity: channel plus token.
pub struct Client {
    pub channel: Channel,
    token: String,
}

impl Client {
    /// Connects as `identity` using the files a PKI directory holds for it:
    /// `ca.pem`, `<identity>.pem`, `<identity>.key` and `<identity>.token`.
    pub async fn from_pki(addr: &str, pki: &Path, identity: &str) -> Result<Self> {
        let read = |name: String| {
            let path = pki.join(&name);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let channel = channel(
            addr,
            &read("ca.pem".into())?,
            &read(format!("{identity}.pem"))?,
            &read(format!("{identity}.key"))?,
        )
        .await?;
        let token = String::from_utf8(read(format!("{identity}.token"))?)
            .context("the token file is not text")?;
        Ok(Self {
            channel,
            token: token.trim().to_string(),
        })
    }

    /// A request carrying this identity's bearer token.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        with_token(msg, &self.token)
    }
}

/// A request carrying `token` as its bearer token.
pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = format!("Bearer {}", token.trim()).parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}
