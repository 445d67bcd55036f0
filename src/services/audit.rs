//! AuditService: queries, the data tracker, statistics, export, checkpoints
//! and proofs. Every call is an `AUDIT_READ` entry, written durably before
//! anything is answered. All calls need the `auditor` role except
//! `GetCheckpoint` and `GetConsistencyProof` (any authenticated caller) and
//! `GetInclusionProof` (also a department, for its own entries' receipts).

use crate::audit::AuditLog;
use crate::audit::bounded::cap;
use crate::audit::checkpoint::note_size;
use crate::audit::export;
use crate::audit::index::{AuditIndex, mentions};
use crate::audit::merkle;
use crate::audit::postings::Posting;
use crate::auth::Principal;
use crate::control::roles::Role;
use crate::datasets::Record;
use crate::pipeline::Pipeline;
use crate::proto::audit_service_server::AuditService;
use crate::proto::*;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct AuditApi {
    pub pipeline: Arc<Pipeline>,
    pub log: AuditLog,
}

/// How long a proof request waits for a checkpoint to cover a fresh entry.
const COVER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

const TAIL: &str = "/govshare.v1.AuditService/TailAudit";

const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1000;
/// Most entries one query or history call streams; the last page then
/// carries a token to continue.
const MAX_PER_CALL: usize = 10_000;
/// Most entries one query examines before it returns what it found.
const SCAN_BUDGET: usize = 200_000;

/// An audit index or segment that cannot be read: the gateway's trouble,
/// not the caller's, and worth a retry — UNAVAILABLE, as for the store.
fn unreadable(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "audit read failed");
    Status::unavailable("the audit log cannot be read; retry later (the gateway log has details)")
}

/// What an auditor's query selects.
struct Filter {
    req: QueryAuditRequest,
    /// The data tracker's subject, confirmed against each entry.
    subject: Option<String>,
}

impl Filter {
    fn matches(&self, e: &AuditEntry) -> bool {
        if self.subject.as_ref().is_some_and(|s| !mentions(e, s)) {
            return false;
        }
        let r = &self.req;
        let p = e.principal.clone().unwrap_or_default();
        let secs = e.time.map_or(0, |t| t.seconds);
        (r.department.is_empty() || p.department == r.department)
            && (r.principal.is_empty() || p.client_id == r.principal)
            && (r.kind == 0 || e.kind == r.kind)
            && (r.decision == 0 || e.decision == r.decision)
            && (r.method.is_empty()
                || e.method == r.method
                || e.method.ends_with(&format!("/{}", r.method)))
            && (r.dataset.is_empty() || e.dataset == r.dataset)
            && (r.purpose.is_empty() || e.purpose == r.purpose)
            && (r.reason_code.is_empty() || e.reason_code == r.reason_code)
            && (r.case_id.is_empty() || e.case_id == r.case_id)
            && r.from.is_none_or(|f| secs >= f.seconds)
            && r.to.is_none_or(|t| secs < t.seconds)
            && (!r.withheld_from_residents
                || e.disclosed_after.is_some_and(|t| {
                    t.seconds > crate::base::clock::unix_seconds(crate::base::clock::now())
                }))
    }
}

impl AuditApi {
    fn index(&self) -> &AuditIndex {
        self.log.index()
    }

    fn indexed(&self) -> u64 {
        self.log.index().size()
    }

    /// Authenticates, checks the role, and records the read (or its
    /// refusal). `contents`: the call reads the log's entries (personal
    /// data): auditors only, and held like a pull while the gateway is
    /// ([`crate::pipeline::Pipeline::authenticate_reader`]); otherwise it
    /// reads hashes and checkpoints, which any caller may, always.
    async fn admit<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
        contents: bool,
        what: String,
    ) -> Result<Principal, Status> {
        let p = if contents {
            self.pipeline
                .authenticate_reader(req, method, EntryKind::AuditRead)
                .await?
        } else {
            self.pipeline.authenticate(req, method).await?
        };
        let refused = contents && !p.has_role(Role::Auditor);
        self.record(&p, method, what, refused.then_some("ROLE_NOT_GRANTED"))
            .await?;
        if refused {
            return Err(Status::permission_denied(
                "this call needs the 'auditor' role on your token",
            ));
        }
        Ok(p)
    }

    async fn record(
        &self,
        p: &Principal,
        method: &str,
        what: String,
        denied: Option<&str>,
    ) -> Result<(), Status> {
        let mut e = crate::pipeline::decided_entry(p, method, EntryKind::AuditRead, denied);
        e.message = cap(&what);
        match denied {
            Some(_) => self.pipeline.record(e).await.map(drop),
            None => self.pipeline.record_reader(p, e).await.map(drop),
        }
    }

    /// Streams entries by index, newest first, in pages.
    fn stream_entries(
        &self,
        posting: Option<(Posting, String)>,
        before: Option<u64>,
        page_size: usize,
        filter: Filter,
    ) -> ReceiverStream<Result<AuditPage, Status>> {
        let (tx, rx) = mpsc::channel(4);
        let index = self.index().clone();
        tokio::task::spawn_blocking(move || {
            let mut before = before;
            let mut page = Vec::new();
            let (mut sent, mut examined) = (0usize, 0usize);
            loop {
                let ids = match index.newest_first(
                    posting.as_ref().map(|(k, n)| (*k, n.as_str())),
                    before,
                    1024,
                ) {
                    Ok(ids) => ids,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(unreadable(e)));
                        return;
                    }
                };
                let done = ids.len() < 1024;
                for i in ids {
                    before = Some(i);
                    examined += 1;
                    match index.entry(i) {
                        Ok(Some(e)) if filter.matches(&e) => page.push(e),
                        Ok(_) => {}
                        Err(e) => {
                            let _ = tx.blocking_send(Err(unreadable(e)));
                            return;
                        }
                    }
                    let cap = sent + page.len() >= MAX_PER_CALL || examined >= SCAN_BUDGET;
                    if page.len() >= page_size || cap {
                        sent += page.len();
                        let token = if cap { i.to_string() } else { String::new() };
                        let more = AuditPage {
                            entries: std::mem::take(&mut page),
                            next_page_token: token.clone(),
                        };
                        if tx.blocking_send(Ok(more)).is_err() || cap {
                            return;
                        }
                    }
                }
                if done || before == Some(0) {
                    break;
                }
            }
            let _ = tx.blocking_send(Ok(AuditPage {
                entries: page,
                next_page_token: String::new(),
            }));
        });
        ReceiverStream::new(rx)
    }

    /// The latest checkpoint (the checkpoint writer signs; readers read).
    fn latest_checkpoint(&self) -> Result<Checkpoint, Status> {
        let s = self
            .log
            .latest_checkpoint()
            .ok_or_else(|| Status::unavailable("no checkpoint yet; retry in a second"))?;
        Ok(Checkpoint {
            note: s.note.clone(),
            tree_size: s.size,
            root_hash: s.root.to_vec(),
            public_key: self.log.verifier_key().into(),
        })
    }

    /// Waits (a little) until the checkpoint writer has signed at least
    /// `size` entries; `false` if it has not in time.
    async fn wait_covered(&self, size: u64) -> bool {
        let mut watch = self.log.checkpoints();
        let covered = tokio::time::timeout(
            COVER_WAIT,
            watch.wait_for(|c| c.as_ref().is_some_and(|c| c.size >= size)),
        )
        .await;
        matches!(covered, Ok(Ok(_)))
    }
}

fn page_size(n: u32) -> usize {
    match n as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

fn page_token(t: &str) -> Result<Option<u64>, Status> {
    if t.is_empty() {
        return Ok(None);
    }
    t.parse()
        .map(Some)
        .map_err(|_| Status::invalid_argument("page_token: pass back a next_page_token unchanged"))
}

fn day(t: Option<&prost_types::Timestamp>, default: chrono::DateTime<chrono::Local>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.with_timezone(&chrono::Local))
        .unwrap_or(default)
        .format("%Y-%m-%d")
        .to_string()
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    type QueryAuditStream = ReceiverStream<Result<AuditPage, Status>>;
    type TailAuditStream = ReceiverStream<Result<AuditEntry, Status>>;
    type SubjectAccessHistoryStream = ReceiverStream<Result<AuditPage, Status>>;
    type ExportAuditStream = ReceiverStream<Result<ExportChunk, Status>>;

    async fn query_audit(
        &self,
        req: Request<QueryAuditRequest>,
    ) -> Result<Response<Self::QueryAuditStream>, Status> {
        let what = format!("query {}", crate::proto::json::to_string(req.get_ref()));
        self.admit(&req, "/govshare.v1.AuditService/QueryAudit", true, what)
            .await?;
        let r = req.into_inner();
        let before = page_token(&r.page_token)?;
        let size = page_size(r.page_size);
        let posting =
            (!r.department.is_empty()).then(|| (Posting::Department, r.department.clone()));
        Ok(Response::new(self.stream_entries(
            posting,
            before,
            size,
            Filter {
                req: r,
                subject: None,
            },
        )))
    }

    /// Follows the log: entries from `from_index` (0: from now on) as they
    /// are indexed, until the caller hangs up.
    async fn tail_audit(
        &self,
        req: Request<TailAuditRequest>,
    ) -> Result<Response<Self::TailAuditStream>, Status> {
        let mut p = self.admit(&req, TAIL, true, "tail".into()).await?;
        let pipeline = self.pipeline.clone();
        let from = match req.into_inner().from_index {
            0 => self.indexed(),
            i => i,
        };
        let (tx, rx) = mpsc::channel(64);
        let index = self.index().clone();
        let mut indexed = self.log.indexed();
        tokio::spawn(async move {
            let mut next = from;
            loop {
                let size = *indexed.borrow_and_update();
                while next < size {
                    // Judged again before every batch, as a stream's page
                    // is: a revoked token, a suspended department or a held
                    // gateway stops the tail at the next entry, recorded.
                    match pipeline
                        .rejudge_reader(&p, TAIL, EntryKind::AuditRead)
                        .await
                    {
                        Ok(now) => p = now,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    }
                    let batch = match index.entry_bytes(next, 256) {
                        Ok(b) => b,
                        Err(e) => {
                            let _ = tx.send(Err(unreadable(e))).await;
                            return;
                        }
                    };
                    if batch.is_empty() {
                        break;
                    }
                    for (i, bytes) in batch {
                        next = i + 1;
                        let Ok(e) = <AuditEntry as prost::Message>::decode(bytes.as_slice()) else {
                            continue;
                        };
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                }
                tokio::select! {
                    changed = indexed.changed() => if changed.is_err() { return },
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn subject_access_history(
        &self,
        req: Request<SubjectAccessHistoryRequest>,
    ) -> Result<Response<Self::SubjectAccessHistoryStream>, Status> {
        // One entry for every call, refused, malformed or answered, with
        // the decision it got.
        let method = "/govshare.v1.AuditService/SubjectAccessHistory";
        let p = self
            .pipeline
            .authenticate_reader(&req, method, EntryKind::AuditRead)
            .await?;
        let r = req.get_ref();
        // A resident is named by the keyed digest the tracker uses, never
        // in clear (an auditor's read must not spread the ID it looked up);
        // a company by its public credit code.
        let what = if r.id_number.is_empty() {
            format!("subject history of {}", cap(&r.uscc))
        } else {
            format!(
                "subject history of {}",
                self.pipeline.resident_digest(&r.id_number)
            )
        };
        if !p.has_role(Role::Auditor) {
            self.record(&p, method, what, Some("ROLE_NOT_GRANTED"))
                .await?;
            return Err(Status::permission_denied(
                "this call needs the 'auditor' role on your token",
            ));
        }
        let parsed = match (r.id_number.is_empty(), r.uscc.is_empty()) {
            (false, true) => Person::parse_key(&r.id_number)
                .map_err(|e| Status::invalid_argument(format!("id_number: {e}"))),
            (true, false) => LegalEntity::parse_key(&r.uscc)
                .map_err(|e| Status::invalid_argument(format!("uscc: {e}"))),
            _ => Err(Status::invalid_argument(
                "name exactly one of id_number or uscc",
            )),
        };
        let subject = match parsed {
            Ok(s) => s,
            Err(status) => {
                self.record(&p, method, what, Some("INVALID_ARGUMENT"))
                    .await?;
                return Err(status);
            }
        };
        self.record(&p, method, what, None).await?;
        Ok(Response::new(self.stream_entries(
            Some((Posting::Subject, subject.clone())),
            None,
            DEFAULT_PAGE,
            Filter {
                req: QueryAuditRequest::default(),
                subject: Some(subject),
            },
        )))
    }

    async fn get_checkpoint(
        &self,
        req: Request<GetCheckpointRequest>,
    ) -> Result<Response<Checkpoint>, Status> {
        // Everything acknowledged before this call is covered by the answer
        // (the writer signs within its interval; readers never sign).
        let before = self.log.committed();
        self.admit(
            &req,
            "/govshare.v1.AuditService/GetCheckpoint",
            false,
            "checkpoint".into(),
        )
        .await?;
        self.wait_covered(before).await;
        Ok(Response::new(self.latest_checkpoint()?))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<GetInclusionProofRequest>,
    ) -> Result<Response<InclusionProof>, Status> {
        let method = "/govshare.v1.AuditService/GetInclusionProof";
        let r = *req.get_ref();
        let p = self.pipeline.authenticate(&req, method).await?;
        let what = format!("inclusion proof of {} in {}", r.index, r.tree_size);
        let entry = match self.index().entry(r.index) {
            Ok(e) => e,
            Err(e) => {
                self.record(&p, method, what, Some("STORE_UNAVAILABLE"))
                    .await?;
                return Err(unreadable(e));
            }
        };
        let own = entry
            .as_ref()
            .and_then(|e| e.principal.as_ref())
            .is_some_and(|ep| ep.department == p.department());
        if !p.has_role(Role::Auditor) && !own {
            self.record(&p, method, what, Some("NOT_OWN_ENTRY")).await?;
            return Err(Status::permission_denied(
                "a department may ask for proofs of its own entries only; auditors for any",
            ));
        }
        self.record(&p, method, what, None).await?;
        let size = match r.tree_size {
            0 => {
                let Some(needed) = r.index.checked_add(1) else {
                    return Err(Status::invalid_argument("index: beyond any log"));
                };
                if !self.wait_covered(needed).await {
                    return Err(Status::unavailable(format!(
                        "no checkpoint covers entry {} yet; retry in a few seconds",
                        r.index
                    )));
                }
                self.latest_checkpoint()?.tree_size
            }
            s => s,
        };
        if r.index >= size || size > self.indexed() {
            return Err(Status::invalid_argument(format!(
                "need index < tree_size <= {} (the log's provable size); got index {} and tree_size {size}",
                self.indexed(),
                r.index
            )));
        }
        let hashes = merkle::inclusion_proof(self.index(), r.index, size).map_err(unreadable)?;
        Ok(Response::new(InclusionProof {
            index: r.index,
            tree_size: size,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        let r = *req.get_ref();
        self.admit(
            &req,
            "/govshare.v1.AuditService/GetConsistencyProof",
            false,
            format!("consistency proof {} -> {}", r.old_size, r.new_size),
        )
        .await?;
        if r.old_size == 0 || r.old_size > r.new_size || r.new_size > self.indexed() {
            return Err(Status::invalid_argument(format!(
                "need 0 < old_size <= new_size <= {}",
                self.indexed()
            )));
        }
        let hashes =
            merkle::consistency_proof(self.index(), r.old_size, r.new_size).map_err(unreadable)?;
        Ok(Response::new(ConsistencyProof {
            old_size: r.old_size,
            new_size: r.new_size,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
        }))
    }

    /// JSON Lines: one `{"index","bytes","entry"}` object per entry, then
    /// every checkpoint note, then the log's public key.
    async fn export_audit(
        &self,
        req: Request<ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        let before = self.log.committed();
        self.admit(
            &req,
            "/govshare.v1.AuditService/ExportAudit",
            true,
            "export".into(),
        )
        .await?;
        // Everything acknowledged before the call is in the export.
        self.wait_covered(before).await;
        let cp = self.latest_checkpoint()?;
        let (index, file, key) = (
            self.index().clone(),
            self.log.checkpoint_file().to_path_buf(),
            cp.public_key,
        );
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut next = 0;
            while next < cp.tree_size {
                let want = (cp.tree_size - next).min(1000) as usize;
                let batch = match index.entry_bytes(next, want) {
                    Ok(b) if !b.is_empty() => b,
                    Ok(_) => break,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(unreadable(e)));
                        return;
                    }
                };
                let mut data = String::new();
                for (i, bytes) in batch {
                    next = i + 1;
                    data.push_str(&export::entry_line(i, &bytes));
                }
                if tx
                    .blocking_send(Ok(ExportChunk {
                        data: data.into_bytes(),
                    }))
                    .is_err()
                {
                    return;
                }
            }
            // Every checkpoint up to the exported size, cosignatures included.
            let notes = match crate::audit::checkpoint::read_notes(&file) {
                Ok(n) => n.unwrap_or_default(),
                Err(e) => {
                    let _ = tx.blocking_send(Err(unreadable(e)));
                    return;
                }
            };
            let mut tail = String::new();
            for n in notes.iter().filter(|n| note_size(n) <= cp.tree_size) {
                tail.push_str(&export::note_line(n));
            }
            tail.push_str(&export::key_line(&key));
            let _ = tx.blocking_send(Ok(ExportChunk {
                data: tail.into_bytes(),
            }));
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn audit_stats(
        &self,
        req: Request<AuditStatsRequest>,
    ) -> Result<Response<AuditStatsResponse>, Status> {
        self.admit(
            &req,
            "/govshare.v1.AuditService/AuditStats",
            true,
            "stats".into(),
        )
        .await?;
        let r = req.into_inner();
        let now = crate::base::clock::local_now();
        let from = day(r.from.as_ref(), now - chrono::Duration::days(30));
        let to = day(r.to.as_ref(), now);
        let rows = self.index().stats(&from, &to, &r.department);
        let corrections = super::corrections::stats(self.pipeline.directory().store())?;
        Ok(Response::new(AuditStatsResponse { rows, corrections }))
    }
}
