//! PublishService: the source department streams records in. Each record is
//! validated on its own — its codes, and that the grid or region it names
//! exists — and a bad one is reported by position without blocking the good
//! ones. Validated records are committed in chunks, each audited before it
//! is written (see [`Publisher::commit`]).

use crate::audit::bounded::cap;
use crate::base::text::{cap_for_message, cap_message};
use crate::datasets::Dataset;
use crate::datasets::{Checked, Record, Reference};
use crate::pipeline::{Pipeline, Publisher, Upsert};
use crate::proto::publish_service_server::PublishService;
use crate::proto::upsert_grids_request::Item;
use crate::proto::{
    AuditReceipt, LegalEntity, Person, PublishSummary, RecordOutcome, UpsertGridsRequest,
};
use std::collections::HashSet;
use std::sync::Arc;
use tonic::{Code, Request, Response, Status, Streaming};

pub struct PublishApi {
    pub pipeline: Arc<Pipeline>,
}

/// Records per committed, audited chunk: each costs an audit fsync and a
/// store sync, so an import's rate grows with it; its `PUBLISH` entry lists
/// every key (about 40 KB at 2 000).
pub const CHUNK: usize = 2000;

/// Outcomes (rejections, warnings) listed in one stream's summary; the
/// counts stay exact beyond it. Bounds the server's memory per stream —
/// `govshare import` sends streams short enough to list every one.
pub const MAX_LISTED: usize = 10_000;

/// One record's fate: accepted (the upsert, warnings) or refused (key, reason).
type Judged = Result<(Upsert, Vec<String>), (String, String)>;

/// Codes a record may refer to: those in the store, and those accepted
/// earlier in this stream (a grid may follow its community).
struct References<'a> {
    publisher: &'a Publisher,
    accepted: HashSet<String>,
}

impl References<'_> {
    fn require(&self, r: Reference<'_>) -> Result<(), String> {
        if self.publisher.code_exists(r.code) || self.accepted.contains(r.code) {
            Ok(())
        } else {
            Err(format!(
                "{}: {} '{}' does not exist (publish it to the region tree first)",
                r.field, r.what, r.code
            ))
        }
    }
}

/// Judges one record: it validates, and what it refers to exists.
fn judge<R: Record>(refs: &References<'_>, record: R, wrap: fn(R) -> Upsert) -> Judged {
    let key = record.key().to_string();
    let Checked { record, warnings } = record.validate().map_err(|reason| (key.clone(), reason))?;
    if let Some(r) = record.reference() {
        refs.require(r).map_err(|reason| (key, reason))?;
    }
    Ok((wrap(record), warnings))
}

/// Most bytes of keys and reasons a summary lists: it must fit a client's
/// default 4 MB message limit whatever the stream sent.
const LISTED_BYTES: usize = 1 << 20;

/// The outcomes a summary lists, bounded in number and bytes. A rejected
/// record's key and reason are cut ([`cap_for_message`], [`cap_message`]):
/// one stream of megabyte keys must not hold gigabytes, in memory or in
/// the summary.
#[derive(Default)]
struct Listed {
    bytes: usize,
}

impl Listed {
    fn add(&mut self, to: &mut Vec<RecordOutcome>, position: u64, key: &str, reason: String) {
        if to.len() >= MAX_LISTED || self.bytes >= LISTED_BYTES {
            return;
        }
        let outcome = RecordOutcome {
            position,
            key: cap_for_message(key),
            reason: cap_message(reason),
        };
        self.bytes += outcome.key.len() + outcome.reason.len();
        to.push(outcome);
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

/// One chunk as read and judged: the records to write and the keys
/// refused.
#[derive(Default)]
struct Chunk {
    records: Vec<Upsert>,
    rejected: Vec<String>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.records.len() + self.rejected.len()
    }
}

/// The reading side of a publish stream: judges each record and counts
/// the outcomes into the summary.
struct Judging<'a, T, J> {
    stream: Streaming<T>,
    judge: J,
    refs: References<'a>,
    summary: PublishSummary,
    listed: Listed,
    position: u64,
    /// The chunk being filled. Kept here, not in [`Self::next_chunk`]'s
    /// frame, so that the call may be dropped midway (a commit finished
    /// first) and resumed without losing a record.
    open: Chunk,
}

impl<T, J: Fn(&References<'_>, T) -> Judged> Judging<'_, T, J> {
    /// Reads and judges records until the open chunk holds [`CHUNK`]; the
    /// chunk, and `true` when the stream has ended. A broken stream's error
    /// comes with the records of the chunk it broke in (never written).
    /// Cancel-safe: dropped midway, it keeps what it read for the next call.
    async fn next_chunk(&mut self) -> Result<(Chunk, bool), (Chunk, Status)> {
        while self.open.len() < CHUNK {
            let item = match self.stream.message().await {
                Ok(Some(item)) => item,
                Ok(None) => return Ok((std::mem::take(&mut self.open), true)),
                Err(status) => return Err((std::mem::take(&mut self.open), status)),
            };
            let position = self.position;
            self.position += 1;
            match (self.judge)(&self.refs, item) {
                Ok((upsert, warnings)) => {
                    let key = upsert.key().to_string();
                    for reason in warnings {
                        self.listed
                            .add(&mut self.summary.warnings, position, &key, reason);
                    }
                    if matches!(upsert, Upsert::Region(_) | Upsert::Grid(_)) {
                        self.refs.accepted.insert(key);
                    }
                    self.summary.accepted += 1;
                    self.open.records.push(upsert);
                }
                Err((key, reason)) => {
                    self.summary.rejected += 1;
                    self.listed
                        .add(&mut self.summary.rejections, position, &key, reason);
                    self.open.rejected.push(cap(&key));
                }
            }
        }
        Ok((std::mem::take(&mut self.open), false))
    }
}

/// A chunk's commit, running on a task of its own: once begun it finishes
/// (its records written after its entry) even if the caller goes away
/// meanwhile, so the log never lists a chunk that was dropped halfway.
type Committing = tokio::task::JoinHandle<Result<AuditReceipt, Status>>;

fn begin(publisher: &Arc<Publisher>, chunk: Chunk) -> Committing {
    let publisher = publisher.clone();
    tokio::spawn(async move { publisher.commit(chunk.records, chunk.rejected).await })
}

fn finished(
    done: Result<Result<AuditReceipt, Status>, tokio::task::JoinError>,
) -> Result<AuditReceipt, Status> {
    done.map_err(|e| {
        tracing::error!(error = %e, "a publish chunk's commit task failed");
        Status::unavailable("the chunk could not be committed (the log says which chunk)")
    })?
}

/// Reads the stream, judges each record, and commits chunks in stream
/// order. The next chunk is read and judged while the one before it
/// commits (its audit entry's fsync, then its store write and sync), so a
/// long import waits on the disk and on the client at once rather than in
/// turn; at most one chunk is committing, so entries and writes stay in
/// the stream's order and a key sent twice ends as its later record. A
/// commit that fails — the publisher suspended or revoked meanwhile, the
/// log not writable — ends the stream at once, without reading on.
async fn publish<T>(
    publisher: Publisher,
    stream: Streaming<T>,
    judge: impl Fn(&References<'_>, T) -> Judged,
) -> Result<Response<PublishSummary>, Status> {
    let publisher = Arc::new(publisher);
    let mut judging = Judging {
        stream,
        judge,
        refs: References {
            publisher: &publisher,
            accepted: HashSet::new(),
        },
        summary: PublishSummary::default(),
        listed: Listed::default(),
        position: 0,
        open: Chunk::default(),
    };
    let mut receipts = Vec::new();
    let mut committing: Option<Committing> = None;
    loop {
        let read = match committing.as_mut() {
            Some(running) => tokio::select! {
                done = running => {
                    committing = None;
                    receipts.push(finished(done)?);
                    continue;
                }
                read = judging.next_chunk() => read,
            },
            None => judging.next_chunk().await,
        };
        if let Some(running) = committing.take() {
            receipts.push(finished(running.await)?);
        }
        match read {
            Err((open, status)) => {
                publisher
                    .record_broken(open.records.len(), status.message())
                    .await;
                return Err(client_stream_error(status));
            }
            Ok((chunk, false)) => committing = Some(begin(&publisher, chunk)),
            Ok((chunk, true)) => {
                // The last chunk; an empty stream still gets its receipt.
                if chunk.len() > 0 || judging.position == 0 {
                    receipts.push(finished(begin(&publisher, chunk).await)?);
                }
                let mut summary = judging.summary;
                summary.receipts = receipts;
                return Ok(Response::new(summary));
            }
        }
    }
}

#[tonic::async_trait]
impl PublishService for PublishApi {
    async fn upsert_persons(
        &self,
        req: Request<Streaming<Person>>,
    ) -> Result<Response<PublishSummary>, Status> {
        let p = self
            .pipeline
            .admit_publisher(
                &req,
                Dataset::Population,
                "/govshare.v1.PublishService/UpsertPersons",
            )
            .await?;
        publish(p, req.into_inner(), |refs, person| {
            judge(refs, person, Upsert::Person)
        })
        .await
    }

    async fn upsert_entities(
        &self,
        req: Request<Streaming<LegalEntity>>,
    ) -> Result<Response<PublishSummary>, Status> {
        let p = self
            .pipeline
            .admit_publisher(
                &req,
                Dataset::LegalEntity,
                "/govshare.v1.PublishService/UpsertEntities",
            )
            .await?;
        publish(p, req.into_inner(), |refs, entity| {
            judge(refs, entity, Upsert::Entity)
        })
        .await
    }

    async fn upsert_grids(
        &self,
        req: Request<Streaming<UpsertGridsRequest>>,
    ) -> Result<Response<PublishSummary>, Status> {
        let p = self
            .pipeline
            .admit_publisher(
                &req,
                Dataset::Grid,
                "/govshare.v1.PublishService/UpsertGrids",
            )
            .await?;
        publish(p, req.into_inner(), |refs, item| match item.item {
            Some(Item::Region(r)) => judge(refs, r, Upsert::Region),
            Some(Item::Worker(w)) => judge(refs, w, Upsert::Worker),
            Some(Item::Grid(g)) => judge(refs, g, Upsert::Grid),
            None => Err((
                String::new(),
                "item: one of region, grid or worker is required".into(),
            )),
        })
        .await
    }
}
