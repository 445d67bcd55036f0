//! The transport guard: a tower layer around every gRPC service.
//!
//! - sheds load: beyond `max_in_flight` concurrent calls, a new call gets
//!   RESOURCE_EXHAUSTED at once instead of queueing without bound;
//! - names limits: a message over the size limit is RESOURCE_EXHAUSTED
//!   naming `grpc.max_message_bytes` (tonic says OUT_OF_RANGE), and both
//!   that and an undecodable body (INVALID_ARGUMENT, see [`crate::proto::codec`])
//!   are audited like any refusal — the handler never ran, so this is the
//!   only place that can;
//! - writes one log line per call (method, department, status, latency,
//!   receipt index, peer — never contents, never a token) and the
//!   `govshare_grpc_*` metrics.

use crate::base::request_log;
use crate::pipeline::Pipeline;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use prost::Message;
use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;
use tonic::{Code, Status};

#[derive(Clone)]
pub struct GuardLayer {
    pipeline: Arc<Pipeline>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    max_message: usize,
}

/// Most header bytes (names and values) a call may carry. A token is a few
/// hundred bytes; a larger header list is refused as an authentication
/// failure, audited, before any handler runs. The HTTP/2 layer reads up to
/// [`MAX_HEADER_LIST`] so that such a call reaches this check at all.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// The HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` the gateway announces. Below
/// it, an oversized header list is answered and audited here; above it, h2
/// refuses it at the transport (a bounded cost, with no log entry: the
/// bytes never reach the gateway).
pub const MAX_HEADER_LIST: u32 = 128 << 10;

impl GuardLayer {
    pub fn new(pipeline: Arc<Pipeline>, max_in_flight: usize, max_message: usize) -> Self {
        register_metrics();
        Self {
            pipeline,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_message,
        }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

/// A response body that holds its call's in-flight slot until it is done
/// (a stream counts until its last page is sent).
struct Held {
    inner: Body,
    _permit: OwnedSemaphorePermit,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn status_of(resp: &http::Response<Body>) -> Code {
    resp.headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .map_or(Code::Ok, Code::from_i32)
}

impl<S> tower::Service<http::Request<Body>> for Guard<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let method = known_method(req.uri().path());
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum();
        let creds = crate::pipeline::Wire::of_http(&req);
        let layer = self.layer.clone();
        // The clone that was polled ready serves this call.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            let Ok(permit) = layer.in_flight.clone().try_acquire_owned() else {
                metrics::counter!("govshare_requests_shed_total").increment(1);
                let status = Status::resource_exhausted(format!(
                    "the gateway is serving its limit of {} calls at once (grpc.max_in_flight); retry with backoff",
                    layer.max_in_flight
                ));
                log(
                    method,
                    creds.peer(),
                    &request_log::Noted::default(),
                    status.code(),
                    started,
                );
                return Ok(status.into_http());
            };
            if header_bytes > MAX_HEADER_BYTES {
                let status = layer
                    .pipeline
                    .refuse_oversized_headers(&creds, method)
                    .await;
                log(
                    method,
                    creds.peer(),
                    &request_log::Noted::default(),
                    status.code(),
                    started,
                );
                return Ok(status.into_http());
            }
            let (resp, noted) = request_log::scope(inner.call(req)).await;
            let mut resp = resp.unwrap_or_else(|e| match e {});
            let mut code = status_of(&resp);
            let message = resp
                .extensions()
                .get::<Status>()
                .map(|s| s.message().to_string())
                .unwrap_or_default();
            let refusal = match code {
                Code::OutOfRange if message.contains("message length too large") => Some((
                    "MESSAGE_TOO_LARGE",
                    Status::resource_exhausted(format!(
                        "the request message is larger than the gateway accepts ({} bytes, grpc.max_message_bytes)",
                        layer.max_message
                    )),
                )),
                Code::InvalidArgument if message.starts_with(crate::proto::codec::MALFORMED) => {
                    Some((
                        "MALFORMED_REQUEST",
                        Status::invalid_argument(message.clone()),
                    ))
                }
                _ => None,
            };
            if let Some((reason, status)) = refusal {
                // The handler never ran: audit the refusal here.
                if let Err(s) = layer
                    .pipeline
                    .refuse_undecoded(&creds, method, reason, status.message())
                    .await
                {
                    resp = s.into_http();
                } else {
                    resp = status.into_http();
                }
                code = status_of(&resp);
            }
            log(method, creds.peer(), &noted, code, started);
            let (parts, body) = resp.into_parts();
            Ok(http::Response::from_parts(
                parts,
                Body::new(Held {
                    inner: body,
                    _permit: permit,
                }),
            ))
        })
    }
}

/// The gRPC methods this gateway serves — every method of the descriptor
/// sets it also serves through reflection — by path. A request path
/// becomes a metric label and a log field only if it is one of them;
/// anything else is `unknown`. Labelled by the raw path, any client with a
/// CA-issued certificate (no token needed) could mint metric series, which
/// are never freed, with made-up paths.
fn known_method(path: &str) -> &'static str {
    known_methods().get(path).copied().unwrap_or("unknown")
}

/// One method's metric handles, looked up once: building a labelled key on
/// every call (label strings, a registry lookup) cost ~1 % of the
/// gateway's CPU under load (`perf`, `govshare bench --only unary`).
struct MethodMetrics {
    duration: metrics::Histogram,
    /// `govshare_grpc_requests_total` by status code, made on first use.
    by_code: [OnceLock<metrics::Counter>; 17],
}

fn method_metrics() -> &'static HashMap<&'static str, MethodMetrics> {
    static METRICS: OnceLock<HashMap<&'static str, MethodMetrics>> = OnceLock::new();
    METRICS.get_or_init(|| {
        known_methods()
            .iter()
            .copied()
            .chain(["unknown"])
            .map(|method| {
                let m = MethodMetrics {
                    duration: metrics::histogram!(
                        "govshare_grpc_request_duration_seconds",
                        "method" => method
                    ),
                    by_code: std::array::from_fn(|_| OnceLock::new()),
                };
                (method, m)
            })
            .collect()
    })
}

impl MethodMetrics {
    fn requests(&self, method: &'static str, code: Code) -> &metrics::Counter {
        self.by_code[(code as usize).min(16)].get_or_init(|| {
            metrics::counter!(
                "govshare_grpc_requests_total",
                "method" => method,
                "code" => format!("{code:?}")
            )
        })
    }
}

/// Makes the guard's series exist from the first scrape, at 0: one per
/// served method (code `Ok`), and the shed counter.
fn register_metrics() {
    metrics::counter!("govshare_requests_shed_total").increment(0);
    for (method, m) in method_metrics() {
        m.requests(method, Code::Ok).increment(0);
    }
}

fn known_methods() -> &'static HashSet<&'static str> {
    static KNOWN: OnceLock<HashSet<&'static str>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let sets = [
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut known = HashSet::new();
        for bytes in sets {
            let set = prost_types::FileDescriptorSet::decode(bytes)
                .expect("the gateway's own descriptor sets decode");
            for file in &set.file {
                for service in &file.service {
                    for m in &service.method {
                        let path = format!("/{}.{}/{}", file.package(), service.name(), m.name());
                        known.insert(&*Box::leak(path.into_boxed_str()));
                    }
                }
            }
        }
        known
    })
}

fn log(method: &'static str, peer: &str, noted: &request_log::Noted, code: Code, started: Instant) {
    let elapsed = started.elapsed();
    if let Some(m) = method_metrics().get(method) {
        m.requests(method, code).increment(1);
        m.duration.record(elapsed.as_secs_f64());
    }
    tracing::info!(
        target: "govshare::request",
        method,
        department = noted.department.as_deref().unwrap_or("-"),
        status = ?code,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        receipt = noted.receipt.map_or(-1, |r| r as i64),
        peer,
    );
}
