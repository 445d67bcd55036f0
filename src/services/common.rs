//! The request shapes every dataset shares: get one, batch get, stream pages.

use crate::base::text::cap_for_message;
use crate::control::authz::Denial;
use crate::datasets::Dataset;
use crate::datasets::Record;
use crate::pipeline::{Admission, MAX_BATCH_KEYS, Pipeline, PullSpec};
use crate::proto::{AuditQuery, AuditReceipt, Operation, PullContext};
use futures_util::stream::{self, BoxStream, StreamExt};
use std::sync::Arc;
use tonic::{Code, Request, Status};

pub const DEFAULT_PAGE: u32 = 100;
pub const MAX_PAGE: u32 = 1000;

/// A server stream of pages.
pub type Pages<P> = BoxStream<'static, Result<P, Status>>;

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

/// A client stream that failed: an oversized message is RESOURCE_EXHAUSTED
/// naming the limit, whatever the transport called it.
pub fn client_stream_error(s: Status) -> Status {
    if s.code() == Code::OutOfRange && s.message().contains("message length too large") {
        return Status::resource_exhausted(format!(
            "a streamed message is larger than the gateway accepts (grpc.max_message_bytes): {}",
            s.message()
        ));
    }
    s
}

/// Parses the requested keys; a malformed one is an audited INVALID_ARGUMENT.
async fn parse_keys<R: Record>(adm: &Admission, keys: &[String]) -> Result<Vec<String>, Status> {
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        match R::parse_key(k) {
            Ok(k) => out.push(k),
            Err(e) => {
                let msg = format!("{} '{}': {e}", R::KEY_FIELD, cap_for_message(k));
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
    let masked = adm.get::<R>(keys).await?;
    let (mut records, _, receipt) = adm.release(masked).await?.into_parts();
    match records.pop() {
        Some(r) => Ok((r, receipt)),
        None => Err(Status::not_found(format!(
            "no record with this {} is visible to your department",
            R::KEY_FIELD
        ))),
    }
}

/// BATCH_GET: found records plus the keys not found or not visible,
/// undistinguished. A list longer than the grants allow is refused before
/// any key is read, and recorded only by its count and digest.
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
    let masked = adm.get::<R>(keys).await?;
    Ok(adm.release(masked).await?.into_parts())
}

/// A listing request, resolved against the grants.
pub struct Listing {
    pub prefixes: Arc<[String]>,
    pub cursor: Option<Vec<u8>>,
    pub page_size: usize,
    /// Most records this call returns.
    pub total: usize,
}

/// Checks region, page size, page token and the caller's record cap;
/// refusals are audited.
pub async fn plan_listing(
    adm: &Admission,
    region: &str,
    page_size: u32,
    page_token: &str,
    max_records: u32,
) -> Result<Listing, Status> {
    if !region.is_empty() {
        if let Err(e) = crate::datasets::codes::RegionCode::parse(region) {
            let msg = format!("region_prefix '{}': {e}", cap_for_message(region));
            return Err(adm
                .refuse(Code::InvalidArgument, Denial::new("INVALID_ARGUMENT", msg))
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
        match adm.open_cursor(page_token) {
            Some(c) => Some(c),
            None => {
                let d = Denial::new(
                    "INVALID_ARGUMENT",
                    "page_token: not a token this gateway issued for your listings of this dataset",
                );
                return Err(adm.refuse(Code::InvalidArgument, d).await);
            }
        }
    };
    let granted = adm.record_limit().map_or(usize::MAX, |l| {
        usize::try_from(l.limit).unwrap_or(usize::MAX)
    });
    let total = match max_records {
        0 => granted,
        n => granted.min(n as usize),
    };
    let page_size = match page_size {
        0 => DEFAULT_PAGE,
        n => n,
    } as usize;
    Ok(Listing {
        prefixes: prefixes.into(),
        cursor,
        page_size: page_size.min(total),
        total,
    })
}

/// LIST: a stream of pages, each produced only when the client is ready for
/// it (at most one page ahead) and audited before it is sent. Cancelling the
/// stream stops the work. A call returns at most `listing.total` records;
/// the last page's token continues in a new call.
pub fn stream_pages<R, P>(
    adm: Admission,
    listing: Listing,
    keep: impl Fn(&R) -> bool + Send + Sync + 'static,
    page: impl Fn(Vec<R>, String, AuditReceipt) -> P + Send + Sync + 'static,
) -> Pages<P>
where
    R: Record,
    P: Send + 'static,
{
    struct State {
        adm: Admission,
        cursor: Option<Vec<u8>>,
        sent: usize,
        done: bool,
    }
    let keep: Arc<dyn Fn(&R) -> bool + Send + Sync> = Arc::new(keep);
    let page = Arc::new(page);
    let Listing {
        prefixes,
        cursor,
        page_size,
        total,
    } = listing;
    let state = State {
        adm,
        cursor,
        sent: 0,
        done: false,
    };
    stream::unfold(state, move |mut st| {
        let (keep, page, prefixes) = (keep.clone(), page.clone(), prefixes.clone());
        async move {
            if st.done {
                return None;
            }
            let want = page_size.min(total - st.sent);
            let step = match st
                .adm
                .scan::<R>(prefixes, st.cursor.take(), want, keep)
                .await
            {
                Ok((masked, next)) => st.adm.release(masked).await.map(|r| (r, next)),
                Err(s) => Err(s),
            };
            let (released, next) = match step {
                Ok(x) => x,
                Err(s) => {
                    st.done = true;
                    return Some((Err(s), st));
                }
            };
            let (records, _, receipt) = released.into_parts();
            st.sent += records.len();
            st.done = next.is_none() || st.sent >= total;
            let token = next
                .as_ref()
                .map(|c| st.adm.seal_cursor(c))
                .unwrap_or_default();
            st.cursor = next;
            Some((Ok(page(records, token, receipt)), st))
        }
    })
    .boxed()
}
