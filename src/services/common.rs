//! The request shapes every dataset shares: get one, batch get, stream pages.

use crate::authz::Denial;
use crate::catalog::Dataset;
use crate::pipeline::{Admission, Pipeline, PullSpec};
use crate::proto::{AuditQuery, AuditReceipt, Operation, PullContext};
use crate::records::Record;
use data_encoding::BASE64URL_NOPAD;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status};

/// Most keys one batch request may name, whatever the grants say.
pub const MAX_BATCH_KEYS: usize = 1000;
pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;

pub fn spec(
    method: &'static str,
    dataset: Dataset,
    operation: Operation,
    query: AuditQuery,
) -> PullSpec {
    PullSpec {
        method,
        dataset,
        operation,
        query,
    }
}

pub fn keys_query(keys: &[String]) -> AuditQuery {
    AuditQuery {
        keys: keys.to_vec(),
        ..Default::default()
    }
}

/// Parses the requested keys; a malformed one is an audited INVALID_ARGUMENT.
async fn parse_keys<R: Record>(adm: &Admission, keys: &[String]) -> Result<Vec<String>, Status> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        match R::parse_key(k) {
            Ok(k) => out.push(k),
            Err(e) => {
                let msg = format!("{}: {e}", R::KEY_FIELD);
                return Err(adm
                    .refuse(Code::InvalidArgument, Denial::new("INVALID_ARGUMENT", msg))
                    .await);
            }
        }
    }
    Ok(out)
}

/// GET: one record by key. Absent and out-of-scope answer the same NOT_FOUND.
pub async fn get_one<R: Record, T>(
    pipeline: &Arc<Pipeline>,
    req: &Request<T>,
    context: Option<&PullContext>,
    method: &'static str,
    key: &str,
) -> Result<(R, AuditReceipt), Status> {
    let keys = [key.to_string()];
    let adm = pipeline
        .admit(
            req,
            context,
            spec(method, R::DATASET, Operation::Get, keys_query(&keys)),
        )
        .await?;
    let keys = parse_keys::<R>(&adm, &keys).await?;
    let masked = adm.get::<R>(&keys)?;
    let (mut records, _, receipt) = adm.release(masked).await?.into_parts();
    match records.pop() {
        Some(r) => Ok((r, receipt)),
        None => Err(Status::not_found(format!(
            "no record with this {} is visible to your department",
            R::KEY_FIELD
        ))),
    }
}

/// BATCH_GET: found records plus the keys not found or not visible, undistinguished.
pub async fn batch_get<R: Record, T>(
    pipeline: &Arc<Pipeline>,
    req: &Request<T>,
    context: Option<&PullContext>,
    method: &'static str,
    keys: &[String],
) -> Result<(Vec<R>, Vec<String>, AuditReceipt), Status> {
    let adm = pipeline
        .admit(
            req,
            context,
            spec(method, R::DATASET, Operation::BatchGet, keys_query(keys)),
        )
        .await?;
    if keys.len() > MAX_BATCH_KEYS {
        let msg = format!(
            "a batch names at most {MAX_BATCH_KEYS} keys; this one names {}",
            keys.len()
        );
        return Err(adm
            .refuse(Code::InvalidArgument, Denial::new("INVALID_ARGUMENT", msg))
            .await);
    }
    if let Some(l) = adm.record_limit().filter(|l| keys.len() as u64 > l.limit) {
        let msg = format!(
            "{} is {}; this request names {} keys",
            l.name,
            l.limit,
            keys.len()
        );
        return Err(adm
            .refuse(Code::ResourceExhausted, Denial::new("LIMIT_EXCEEDED", msg))
            .await);
    }
    if keys.is_empty() {
        let msg = format!("name at least one {}", R::KEY_FIELD);
        return Err(adm
            .refuse(Code::InvalidArgument, Denial::new("INVALID_ARGUMENT", msg))
            .await);
    }
    let keys = parse_keys::<R>(&adm, keys).await?;
    let masked = adm.get::<R>(&keys)?;
    Ok(adm.release(masked).await?.into_parts())
}

/// A listing request, resolved against the grants.
pub struct Listing {
    pub prefixes: Vec<String>,
    pub cursor: Option<Vec<u8>>,
    pub page_size: usize,
    pub total: usize,
}

/// Checks region, page size and page token; refusals are audited.
pub async fn plan_listing(
    adm: &Admission,
    region: &str,
    page_size: u32,
    page_token: &str,
) -> Result<Listing, Status> {
    if !region.is_empty() {
        if let Err(e) = crate::domain::RegionCode::parse(region) {
            return Err(adm
                .refuse(
                    Code::InvalidArgument,
                    Denial::new("INVALID_ARGUMENT", format!("region_prefix: {e}")),
                )
                .await);
        }
    }
    let Some(prefixes) = adm.decision().scan_prefixes(region) else {
        let msg = format!("region {region} is not inside the regions your grant covers");
        return Err(adm
            .refuse(Code::PermissionDenied, Denial::new("OUT_OF_SCOPE", msg))
            .await);
    };
    if page_size > MAX_PAGE {
        let msg = format!("page_size: at most {MAX_PAGE}");
        return Err(adm
            .refuse(Code::InvalidArgument, Denial::new("INVALID_ARGUMENT", msg))
            .await);
    }
    let cursor = if page_token.is_empty() {
        None
    } else {
        match BASE64URL_NOPAD.decode(page_token.as_bytes()) {
            Ok(c) => Some(c),
            Err(_) => {
                let d = Denial::new(
                    "INVALID_ARGUMENT",
                    "page_token: not a token this gateway issued",
                );
                return Err(adm.refuse(Code::InvalidArgument, d).await);
            }
        }
    };
    let total = adm.record_limit().map_or(usize::MAX, |l| {
        usize::try_from(l.limit).unwrap_or(usize::MAX)
    });
    let page_size = if page_size == 0 {
        DEFAULT_PAGE
    } else {
        page_size
    } as usize;
    Ok(Listing {
        prefixes,
        cursor,
        page_size: page_size.min(total),
        total,
    })
}

/// LIST: streams pages; each page is audited before it is sent. A call
/// returns at most the grant's `max_records_per_call` records; the last
/// page's token continues in a new call.
pub fn stream_pages<R, P>(
    adm: Admission,
    listing: Listing,
    keep: impl Fn(&R) -> bool + Send + 'static,
    page: impl Fn(Vec<R>, String, AuditReceipt) -> P + Send + 'static,
) -> ReceiverStream<Result<P, Status>>
where
    R: Record,
    P: Send + 'static,
{
    let (tx, rx) = mpsc::channel(2);
    tokio::spawn(async move {
        let Listing {
            prefixes,
            mut cursor,
            page_size,
            total,
        } = listing;
        let mut sent = 0usize;
        loop {
            let want = page_size.min(total - sent);
            let step = match adm.scan::<R>(&prefixes, cursor.take(), want, &keep) {
                Ok((masked, next)) => adm.release(masked).await.map(|r| (r, next)),
                Err(s) => Err(s),
            };
            let (released, next) = match step {
                Ok(x) => x,
                Err(s) => {
                    let _ = tx.send(Err(s)).await;
                    return;
                }
            };
            let (records, _, receipt) = released.into_parts();
            sent += records.len();
            let token = next
                .as_ref()
                .map(|c| BASE64URL_NOPAD.encode(c))
                .unwrap_or_default();
            if tx.send(Ok(page(records, token, receipt))).await.is_err()
                || next.is_none()
                || sent >= total
            {
                return;
            }
            cursor = next;
        }
    });
    ReceiverStream::new(rx)
}
