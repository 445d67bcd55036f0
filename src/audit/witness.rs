//! `govshare witness serve`: a C2SP `tlog-witness` for another party's
//! gateway log. Somebody other than the gateway's operator runs it (the
//! audit office, a second department, the next level of government) with
//! its own Ed25519 key and data directory.
//!
//! For each checkpoint the gateway submits (`POST /add-checkpoint`: `old N`,
//! the consistency proof from N, a blank line, the signed note) it checks
//! the log's signature and the proof against the size and root it last
//! cosigned, records the new size and root durably, and only then answers
//! with a `cosignature/v1` line. It refuses a smaller size, a different root
//! for a size it has seen, and a proof that does not verify — that refusal
//! is the alarm. Status codes follow the spec: 400 malformed, 403 bad log
//! signature, 404 unknown log, 409 wrong old size (body: the size it has,
//! `text/x.tlog.size`), 422 bad proof.

use crate::audit::checkpoint::{Checkpoint, CosignatureKey, LogVerifier, load_or_create_key};
use crate::audit::merkle::{self, Hash};
use crate::base::clock;
use anyhow::{Context, Result, bail};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use data_encoding::{BASE64, HEXLOWER};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Longest request body accepted (a note and at most 63 proof lines).
const MAX_BODY: usize = 64 << 10;

pub struct Options {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The witness's key name, e.g. `witness.example.gov.cn/w1`.
    pub name: String,
    /// The verifier keys of the logs it witnesses (their names are the
    /// logs' origins).
    pub logs: Vec<String>,
}

struct Witness {
    key: CosignatureKey,
    logs: HashMap<String, LogVerifier>,
    state_dir: PathBuf,
    /// Serializes check-and-persist, as the spec requires.
    lock: Mutex<()>,
}

/// The size and root last cosigned for one log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    size: u64,
    root: Hash,
}

fn state_file(dir: &Path, origin: &str) -> PathBuf {
    dir.join(HEXLOWER.encode(&Sha256::digest(origin.as_bytes())))
}

fn load(dir: &Path, origin: &str) -> Result<Option<Seen>> {
    let text = match std::fs::read_to_string(state_file(dir, origin)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("reading the witness state"),
    };
    let mut lines = text.lines();
    let size = lines.next().and_then(|l| l.parse().ok());
    let root = lines
        .next()
        .and_then(|l| BASE64.decode(l.as_bytes()).ok())
        .and_then(|r| r.try_into().ok());
    match (size, root) {
        (Some(size), Some(root)) => Ok(Some(Seen { size, root })),
        _ => bail!("the witness state of '{origin}' is damaged"),
    }
}

fn persist(dir: &Path, origin: &str, seen: Seen) -> Result<()> {
    let name = state_file(dir, origin);
    let body = format!("{}\n{}\n{origin}\n", seen.size, BASE64.encode(&seen.root));
    crate::audit::tiles::replace_file(
        dir,
        name.file_name().and_then(|n| n.to_str()).expect("hex name"),
        body.as_bytes(),
    )
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

/// The parts of an `add-checkpoint` body.
struct Submission {
    old: u64,
    proof: Vec<Hash>,
    note: String,
}

fn parse(body: &str) -> Result<Submission, String> {
    let (head, note) = body
        .split_once("\n\n")
        .ok_or("no blank line before the checkpoint")?;
    let mut lines = head.lines();
    let old_line = lines.next().ok_or("no old size line")?;
    let old = old_line
        .strip_prefix("old ")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .filter(|n| n.len() == 1 || !n.starts_with('0'))
        .and_then(|n| n.parse().ok())
        .ok_or("the first line is not 'old N'")?;
    let proof = lines
        .map(|l| {
            BASE64
                .decode(l.as_bytes())
                .ok()
                .and_then(|h| Hash::try_from(h).ok())
                .ok_or("a proof line is not a base64 hash")
        })
        .collect::<Result<Vec<_>, _>>()?;
    if proof.len() > 63 {
        return Err("more than 63 proof lines".into());
    }
    Ok(Submission {
        old,
        proof,
        note: note.to_string(),
    })
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: String) -> Response {
    let sub = match parse(&body) {
        Ok(s) => s,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let origin = sub.note.lines().next().unwrap_or_default().to_string();
    let Some(verifier) = w.logs.get(&origin) else {
        return text(StatusCode::NOT_FOUND, format!("unknown log '{origin}'"));
    };
    // The checkpoint body as the log wrote it (extension lines included):
    // what a cosignature signs. A malformed one is a bad request; only a
    // signature that does not verify is 403.
    let Some(body) = sub
        .note
        .split_once("\n\n")
        .map(|(b, _)| format!("{b}\n"))
        .filter(|b| Checkpoint::parse_body(b).is_ok())
    else {
        return text(StatusCode::BAD_REQUEST, "the checkpoint is malformed");
    };
    let cp = match verifier.open(&sub.note) {
        Ok(c) => c,
        Err(why) => return text(StatusCode::FORBIDDEN, why),
    };
    if sub.old > cp.size {
        return text(
            StatusCode::BAD_REQUEST,
            "the old size is larger than the checkpoint's",
        );
    }
    let _one = w.lock.lock().await;
    let seen = match load(&w.state_dir, &origin) {
        Ok(s) => s,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let known = seen.map_or(0, |s| s.size);
    // Both conflicts answer with the size it has (C2SP): the log tells a
    // second root at that size from a stale idea of it by the size it sent.
    let conflict = || {
        (
            StatusCode::CONFLICT,
            [(header::CONTENT_TYPE, "text/x.tlog.size")],
            format!("{known}\n"),
        )
            .into_response()
    };
    if sub.old != known {
        return conflict();
    }
    match seen {
        Some(s) if s.size == cp.size => {
            if s.root != cp.root {
                tracing::error!(%origin, size = cp.size, "ALARM: a second root for a size already cosigned");
                return conflict();
            }
        }
        Some(s) => {
            if !merkle::verify_consistency(s.size, cp.size, &s.root, &cp.root, &sub.proof) {
                tracing::error!(%origin, from = s.size, to = cp.size, "ALARM: the log is not consistent with what was cosigned");
                return text(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "the consistency proof does not verify: refused",
                );
            }
        }
        None => {
            if !sub.proof.is_empty() {
                return text(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "a first checkpoint comes with no proof",
                );
            }
            if cp.size == 0 && cp.root != merkle::empty_root() {
                return text(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "an empty tree has the empty root",
                );
            }
        }
    }
    let now = Seen {
        size: cp.size,
        root: cp.root,
    };
    if let Err(e) = persist(&w.state_dir, &origin, now) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    }
    let timestamp = clock::unix_seconds(clock::now()).max(1) as u64;
    text(StatusCode::OK, w.key.cosign(&body, timestamp))
}

/// A log's verifier key given inline or as a file holding it.
fn log_key(arg: &str) -> Result<LogVerifier> {
    let key = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    } else {
        arg.to_string()
    };
    LogVerifier::parse(&key).with_context(|| format!("--log {arg}"))
}

/// Runs the witness until `shutdown` resolves.
pub async fn serve(
    o: Options,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    if o.logs.is_empty() {
        bail!("--log: name at least one log to witness (its verifier key, or a file holding it)");
    }
    std::fs::create_dir_all(&o.data_dir)
        .with_context(|| format!("creating {}", o.data_dir.display()))?;
    let state_dir = o.data_dir.join("logs");
    std::fs::create_dir_all(&state_dir)?;
    let key = CosignatureKey::new(
        &o.name,
        load_or_create_key(&o.data_dir.join("witness.key"))?,
    )?;
    let vkey = key.verifier_key();
    std::fs::write(o.data_dir.join("witness.pub"), format!("{vkey}\n"))?;
    let logs = o
        .logs
        .iter()
        .map(|l| log_key(l).map(|v| (v.name().to_string(), v)))
        .collect::<Result<HashMap<_, _>>>()?;
    let witness = Arc::new(Witness {
        key,
        logs,
        state_dir,
        lock: Mutex::new(()),
    });
    let app = axum::Router::new()
        .route("/add-checkpoint", axum::routing::post(add_checkpoint))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(witness);
    let listener = tokio::net::TcpListener::bind(o.listen)
        .await
        .with_context(|| format!("binding {}", o.listen))?;
    println!("witness listening on {}", listener.local_addr()?);
    println!("witness key: {vkey}");
    serve_bounded(listener, app, shutdown).await;
    Ok(())
}

/// Connections served at once: a witness answers a few logs a few times a
/// second; more are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this.
const HEADER_DEADLINE: Duration = Duration::from_secs(5);
/// A connection lives at most this long (a trickled body included).
const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);

/// Serves `app` over HTTP/1 with a cap on connections and deadlines for
/// headers and for the whole connection, so slow or half-open clients
/// cannot run the witness out of file descriptors.
async fn serve_bounded(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accepting a witness connection failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_DEADLINE)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_DEADLINE, connection).await;
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submissions_parse_strictly() {
        let s = parse(
            "old 3\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\nlog\n5\nx\n\n— log sig\n",
        )
        .unwrap();
        assert_eq!((s.old, s.proof.len()), (3, 1));
        assert!(s.note.starts_with("log\n5\n"));
        assert!(parse("old 03\n\nnote").is_err());
        assert!(parse("old 3\nnot-base64\n\nnote").is_err());
        assert!(parse("old 3\nnote").is_err());
    }
}
