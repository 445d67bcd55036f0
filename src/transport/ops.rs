//! The plain-HTTP ops listener (`ops_listen`, loopback by default): what
//! Prometheus, kubelets and load balancers use, none of which can present
//! a client certificate. It serves no data:
//!
//! - `GET /metrics` — Prometheus text;
//! - `GET /livez` — 200 while the process runs;
//! - `GET /readyz` — 200 only while the audit log is writable, not behind
//!   its witnesses, and the store answers; 503 otherwise (with the reason);
//! - `GET /.well-known/jwks.json` — the token issuer's public keys, so other
//!   systems can verify the gateway's tokens.

use crate::audit::AuditLog;
use crate::control::keys::KeyRing;
use crate::control::store::Store;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone)]
pub struct Ops {
    pub metrics: PrometheusHandle,
    pub log: AuditLog,
    pub store: Store,
    pub keys: Arc<KeyRing>,
    pub data_dir: PathBuf,
    pub token_cache: Arc<dyn Fn() -> usize + Send + Sync>,
}

pub fn router(ops: Ops) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/livez", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(readyz))
        .route("/.well-known/jwks.json", axum::routing::get(jwks))
        .with_state(ops)
}

async fn readyz(State(ops): State<Ops>) -> Response {
    if !*ops.log.health().writable.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the audit log cannot be written\n",
        )
            .into_response();
    }
    if let Some(why) = ops.log.behind() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response();
    }
    let store = ops.store.clone();
    match tokio::task::spawn_blocking(move || store.epoch()).await {
        Ok(Ok(_)) => (StatusCode::OK, "ready\n").into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the store does not answer\n",
        )
            .into_response(),
    }
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Gauges that are read rather than counted are set at scrape time.
async fn metrics(State(ops): State<Ops>) -> Response {
    let log = &ops.log;
    metrics::gauge!("govshare_audit_index_lag_entries")
        .set(log.committed().saturating_sub(log.index().size()) as f64);
    if let Some(cp) = log.latest_checkpoint() {
        let age = cp.signed_at.elapsed().map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!("govshare_checkpoint_age_seconds").set(age);
    }
    metrics::gauge!("govshare_token_cache_entries").set((ops.token_cache)() as f64);
    let store_dir = ops.data_dir.join("store");
    let bytes = tokio::task::spawn_blocking(move || dir_bytes(&store_dir))
        .await
        .unwrap_or(0);
    metrics::gauge!("govshare_store_bytes").set(bytes as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ops.metrics.render(),
    )
        .into_response()
}

async fn jwks(State(ops): State<Ops>) -> Response {
    let keys = ops.keys.clone();
    match tokio::task::spawn_blocking(move || keys.jwks()).await {
        Ok(Ok(doc)) => (
            [(header::CONTENT_TYPE, "application/jwk-set+json")],
            doc.to_string(),
        )
            .into_response(),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the key store does not answer\n",
        )
            .into_response(),
    }
}
