//! A minimal HTTP/1.1 client: POSTs to witnesses (plain `http://`; a
//! witness's answers are signed, so the transport needs no secrecy), and
//! GETs of a published tree's files (`http://` or `https://`, with the
//! system's trusted roots; the files are verified either way).

use anyhow::{Context, Result, bail};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// Most bytes of a witness's answer read.
const MAX_ANSWER: usize = 64 << 10;

/// POSTs `body` as text to `url`; returns the status and the answer.
pub async fn post(url: &str, body: String) -> Result<(u16, String)> {
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("'{url}' is not a URL"))?;
    if uri.scheme_str() != Some("http") {
        bail!("'{url}': witnesses are reached over http://");
    }
    let host = uri.host().context("the URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = read_body(resp, MAX_ANSWER).await?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Most bytes of one published file read: a tile is at most 8 KiB, a
/// checkpoint with its cosignatures a few hundred bytes.
pub const MAX_FILE: usize = 1 << 20;

/// Longest one GET may take, connection and body included: a server that
/// stalls makes a monitor fail, loudly, instead of hanging.
const GET_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// GETs `url`: `Ok(None)` for 404, the body for 200, an error otherwise
/// (also when it takes longer than [`GET_TIMEOUT`]).
pub async fn get(url: &str) -> Result<Option<Vec<u8>>> {
    tokio::time::timeout(GET_TIMEOUT, get_once(url))
        .await
        .map_err(|_| anyhow::anyhow!("{url}: no complete answer within {GET_TIMEOUT:?}"))?
}

async fn get_once(url: &str) -> Result<Option<Vec<u8>>> {
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("'{url}' is not a URL"))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => bail!("'{url}': only http:// and https:// are read"),
    };
    let host = uri.host().context("the URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    let req = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .body(http_body_util::Empty::<Bytes>::new())?;
    let resp = if https {
        let tls = tls_connector()?
            .connect(
                rustls::pki_types::ServerName::try_from(host.clone())
                    .with_context(|| format!("'{host}' is not a server name"))?,
                tcp,
            )
            .await
            .with_context(|| format!("TLS with {host}:{port}"))?;
        send(TokioIo::new(tls), req).await?
    } else {
        send(TokioIo::new(tcp), req).await?
    };
    match resp.status().as_u16() {
        200 => {}
        404 => return Ok(None),
        code => bail!("{url}: HTTP {code}"),
    }
    let bytes = read_body(resp, MAX_FILE)
        .await
        .with_context(|| format!("reading {url}"))?;
    Ok(Some(bytes.to_vec()))
}

async fn send<T>(
    io: TokioIo<T>,
    req: hyper::Request<http_body_util::Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}

/// A TLS client trusting the system's root certificates, made once.
fn tls_connector() -> Result<tokio_rustls::TlsConnector> {
    static CONNECTOR: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();
    if let Some(c) = CONNECTOR.get() {
        return Ok(c.clone());
    }
    let made = new_tls_connector()?;
    Ok(CONNECTOR.get_or_init(|| made).clone())
}

fn new_tls_connector() -> Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}

/// A response's body, at most `max` bytes.
async fn read_body(resp: hyper::Response<hyper::body::Incoming>, max: usize) -> Result<Bytes> {
    Ok(http_body_util::Limited::new(resp.into_body(), max)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes())
}
