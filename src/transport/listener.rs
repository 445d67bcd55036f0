//! The gRPC listener's connections, before HTTP/2 sees them.
//!
//! tonic's own listener sets no TCP_NODELAY with `serve_with_incoming` (an
//! audited call then waited on Nagle and delayed ACKs: 44 ms each), has no
//! handshake deadline (a client that never finishes TLS holds its socket
//! forever) and no connection cap. So connections are accepted here:
//!
//! - TCP_NODELAY on every socket;
//! - at most `max_connections` at once; beyond that a new socket is closed
//!   at once (load is shed, not queued);
//! - the TLS handshake must finish within `handshake_timeout`;
//! - a connection with no traffic for `idle_timeout` is closed, which also
//!   ends half-open ones;
//! - on shutdown, connections still open after the grace period are cut.

use crate::auth::Peer;
use anyhow::{Context, Result};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;

/// Connection limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

/// One accepted, TLS-established connection.
pub struct Conn {
    io: TlsStream<TcpStream>,
    /// Its address and verified certificate, for every call on it.
    peer: Arc<Peer>,
    idle: Pin<Box<Sleep>>,
    idle_for: Duration,
    kill: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Conn {
    fn drop(&mut self) {
        metrics::gauge!("govshare_connections_open").decrement(1.0);
    }
}

impl Connected for Conn {
    type ConnectInfo = Arc<Peer>;

    fn connect_info(&self) -> Arc<Peer> {
        self.peer.clone()
    }
}

impl Conn {
    /// An error once the connection must go: cut at shutdown, or idle.
    fn check(&mut self, cx: &mut TaskContext<'_>) -> io::Result<()> {
        if *self.kill.borrow() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the gateway is stopping",
            ));
        }
        if self.idle.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "idle connection closed",
            ));
        }
        Ok(())
    }

    fn active(&mut self) {
        self.idle.as_mut().reset(Instant::now() + self.idle_for);
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                self.check(cx)?;
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(cx)?;
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, buf))?;
        self.active();
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Accepts connections until `stop` turns true; established ones come out
/// of the returned receiver. `kill` cuts every open connection.
pub fn accept(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
    kill: watch::Receiver<bool>,
) -> mpsc::Receiver<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    // Both series exist from the first scrape, at 0.
    metrics::gauge!("govshare_connections_open").set(0.0);
    metrics::counter!("govshare_connections_refused_total").increment(0);
    let acceptor = TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.changed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                metrics::counter!("govshare_connections_refused_total").increment(1);
                tracing::warn!(%peer, max = limits.max_connections, "connection limit reached; closing a new connection");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx, kill, limits) =
                (acceptor.clone(), tx.clone(), kill.clone(), limits.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(io)) => {
                        metrics::gauge!("govshare_connections_open").increment(1.0);
                        let leaf = io
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.as_ref());
                        let conn = Conn {
                            peer: Arc::new(Peer::new(peer, leaf)),
                            io,
                            idle: Box::pin(tokio::time::sleep(limits.idle_timeout)),
                            idle_for: limits.idle_timeout,
                            kill,
                            _permit: permit,
                        };
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out; connection closed"),
                }
            });
        }
    });
    rx
}

/// The gRPC listener's TLS: its certificate, client certificates required
/// and checked against the client CA, HTTP/2 only.
pub fn tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
) -> Result<rustls::ServerConfig> {
    server_config(cert_pem, key_pem, client_ca_pem, Door::Grpc)
}

/// The console's TLS: the same certificate and client CA, HTTP/1.1 for
/// browsers. A browser without a certificate is let in only to be told —
/// and recorded — that it needs one; a certificate that does not chain to
/// the client CA fails the handshake as on gRPC.
pub fn console_tls_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
) -> Result<rustls::ServerConfig> {
    server_config(cert_pem, key_pem, client_ca_pem, Door::Console)
}

enum Door {
    Grpc,
    Console,
}

fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
    client_ca_pem: &[u8],
    door: Door,
) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(client_ca_pem) {
        roots.add(c.context("parsing the client CA")?)?;
    }
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    );
    let builder = match door {
        Door::Grpc => builder,
        Door::Console => builder.allow_unauthenticated(),
    };
    let verifier = builder
        .build()
        .context("building the client-certificate verifier")?;
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("parsing the server certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("parsing the server key")?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the server certificate and key do not match")?;
    config.alpn_protocols = match door {
        Door::Grpc => vec![b"h2".to_vec()],
        Door::Console => vec![b"http/1.1".to_vec()],
    };
    Ok(config)
}
