//! A minimal HTTP/1.1 client for talking to witnesses (plain `http://`; a
//! witness's answers are signed, so the transport needs no secrecy).

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
    let limited = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER);
    let bytes = limited
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
