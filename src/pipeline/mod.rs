//! The pull pipeline — the only road from the record store to the wire:
//!
//! ```text
//! authenticate ─► authorize ─► fetch ─► mask ─► audit (durable) ─► respond
//! ```
//!
//! [`Pipeline::admit`] authenticates and authorizes, yielding an
//! [`Admission`]. Its `get`/`scan` fetch only rows the decision covers and
//! mask each through its field plan, yielding [`Masked`] records; only
//! [`Admission::release`] turns those into [`Released`] records, after their
//! audit entry is on disk. The type rule that makes this a rule and not a
//! convention:
//!
//! - record reads exist only on [`RecordStore`], and are callable only from
//!   this module (`pub(in crate::pipeline)`); services get no record handle;
//! - `Masked` and `Released` have private fields and no public constructor;
//! - every refusal on the way — including a store that fails mid-call — is
//!   audited before its status is returned.
//!
//! Store work beyond a few point reads runs on the blocking pool, a bounded
//! number at a time, so a scan never starves the tasks that write responses
//! to sockets.

mod auth_failures;
mod correct;
pub mod page_token;
#[cfg(test)]
mod property_tests;
mod publish;
mod pull_metrics;
mod records;

pub use correct::{Filed, Filing};
pub use publish::{Publisher, Upsert};
pub use records::RecordStore;

use crate::audit::bounded::{self, cap};
use crate::audit::{AppendError, AuditLog, Receipt};
use crate::auth::{AuthFailure, Authenticator, Credentials, Peer, Principal, Under};
use crate::base::clock;
use crate::control::authz::{self, Decision, Denial};
use crate::control::directory::Directory;
use crate::control::limits::{Limits, Reservation};
use crate::control::roles::Role;
use crate::datasets::Dataset;
use crate::datasets::Record;
use crate::datasets::grid::locate::GridLocator;
use crate::datasets::mask::{DepartmentKey, Layout, Masker, Projected, Projector, ReleasedViews};
use crate::pipeline::page_token::PageTokens;
use crate::proto::{
    AuditDecision, AuditEntry, AuditPrincipal, AuditQuery, AuditReceipt, EntryKind, Grid,
    Operation, PullContext, RegionNode, ReturnedField,
};
use crate::store::WriteGate;
use anyhow::Context as _;
use futures_util::FutureExt;
use std::ops::ControlFlow;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Request, Status};

/// The future of a rare path — a refusal, a failed authentication, a call
/// judged again — boxed where it is made. Held inline, the largest such
/// path sized every future that might take it: each handler's, which is
/// moved whole into its box on every call, refusal or not.
pub type Rare<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Most keys one batch request may name, whatever the grants say.
pub const MAX_BATCH_KEYS: usize = 1000;

/// Blocking store calls (gets, scans, writes) running at once; the rest wait
/// their turn without holding a thread. Eight only added contention: 128
/// streams ran at 166–178k records/s with eight and 190k with four, peaking
/// ~60 MB lower, batches unchanged (`govshare bench --only batch,streams`).
const STORE_WORKERS: usize = 4;

/// Scanned pages held in memory at once, across every stream: from the
/// scan through the audit wait until the handler takes the records to
/// encode them. A decoded page of 1000 masked persons takes ~2 MB; the rest
/// wait their turn. Four keep both cores busy: with 16, 128 streams ran
/// slower (105–150k vs 174–184k records/s) and peaked ~150 MB higher
/// (`govshare bench --only streams`), the extra pages only contending for
/// caches and the allocator.
const PAGES_IN_MEMORY: usize = 4;

/// Point reads of at most this many records run on the calling task: a
/// few microseconds against sled's page cache, where handing them to the
/// blocking pool costs ~40 µs of thread wake-ups per call (measured with
/// `govshare bench`). Larger batches, scans and grid counts (an index
/// scan per grid) go to the pool.
const INLINE_KEYS: usize = 4;

/// The credentials a call presented on the wire: its connection's
/// [`Peer`] (address and verified certificate, set by the listener) and the
/// bearer token, still as the header value (a reference-counted copy).
pub struct Wire {
    peer: Arc<Peer>,
    bearer: Option<http::HeaderValue>,
}

impl Wire {
    pub fn of_tonic<T>(req: &Request<T>) -> Self {
        Self::of(req.extensions(), req.metadata().as_ref())
    }

    pub fn of_http<B>(req: &http::Request<B>) -> Self {
        Self::of(req.extensions(), req.headers())
    }

    fn of(extensions: &http::Extensions, headers: &http::HeaderMap) -> Self {
        Self {
            peer: extensions.get::<Arc<Peer>>().cloned().unwrap_or_default(),
            bearer: headers.get("authorization").cloned(),
        }
    }

    /// The peer's address, as entries record it.
    pub fn peer(&self) -> &str {
        &self.peer.addr
    }

    fn bearer(&self) -> Option<&str> {
        let v = self.bearer.as_ref()?.to_str().ok()?;
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    }
}

/// What a data RPC asks for, as the audit log records it.
pub struct PullSpec {
    /// `PULL`, or `CORRECTION` for a correction's filing (read as a pull).
    pub kind: EntryKind,
    pub method: &'static str,
    pub dataset: Dataset,
    pub operation: Operation,
    pub query: AuditQuery,
}

pub struct Pipeline {
    records: RecordStore,
    directory: Arc<Directory>,
    auth: Authenticator,
    audit: AuditLog,
    masker: Masker,
    page_tokens: PageTokens,
    limits: Limits,
    locator: GridLocator,
    store_work: Semaphore,
    pages: Arc<Semaphore>,
    auth_failures: auth_failures::AuthFailures,
    pulls: pull_metrics::PullMetrics,
    /// Keys the resident tracker's subject digests.
    resident_key: [u8; 32],
    /// Held by every change (with its entry) while a snapshot copies.
    gate: WriteGate,
}

/// The reason code of a refusal for asking outside the grant: records,
/// a region or a field the department's grants do not cover.
pub const OUT_OF_SCOPE: &str = "OUT_OF_SCOPE";

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{e}; nothing was released, retry later"))
}

impl Pipeline {
    pub fn new(
        records: RecordStore,
        directory: Arc<Directory>,
        auth: Authenticator,
        audit: AuditLog,
        masker: Masker,
    ) -> anyhow::Result<Arc<Self>> {
        records.prepare_to_serve()?;
        let locator = GridLocator::default();
        let mut after = None;
        loop {
            let page = records.scan::<Grid>("", after.as_deref(), 1024)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (_, g) in &page {
                locator.upsert(g);
            }
        }
        let pulls = pull_metrics::PullMetrics::default();
        register_metrics(&directory, &pulls)?;
        let me = Arc::new(Self {
            limits: Limits::new(directory.store().clone()),
            records,
            directory,
            auth,
            audit,
            page_tokens: PageTokens::new(masker.subkey("page-token")),
            gate: WriteGate::default(),
            resident_key: masker.subkey("resident-subject"),
            masker,
            locator,
            store_work: Semaphore::new(STORE_WORKERS),
            pages: Arc::new(Semaphore::new(PAGES_IN_MEMORY)),
            auth_failures: auth_failures::AuthFailures::default(),
            pulls,
        });
        // Once a second, write the aggregated authentication failures of
        // the second that ended.
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(p) = weak.upgrade() else { return };
                for e in p.auth_failures.due() {
                    if let Err(s) = p.record(e).await {
                        tracing::error!(status = %s, "recording aggregated authentication failures failed");
                    }
                }
            }
        });
        Ok(me)
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    /// The gate changes hold and snapshots close.
    pub fn gate(&self) -> &WriteGate {
        &self.gate
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// A keyed digest of a resident's ID, as the resident tracker's own
    /// entries name the resident: stable, so an auditor can count one
    /// resident's reads, and useless without the gateway's secret. One
    /// resident, one digest, however the ID was typed (`x` or `X`, spaces).
    pub fn resident_digest(&self, id: &str) -> String {
        use crate::datasets::Record;
        use hmac::{Hmac, Mac};
        let id = crate::proto::Person::parse_key(id).unwrap_or_else(|_| id.to_string());
        let mut m =
            Hmac::<sha2::Sha256>::new_from_slice(&self.resident_key).expect("any key length");
        m.update(id.as_bytes());
        let mut s = data_encoding::BASE32_NOPAD.encode(&m.finalize().into_bytes());
        s.truncate(26);
        format!("resident:{s}")
    }

    /// Whether a region or grid code exists in the region tree: what grants
    /// may name. Structure only, no record data.
    pub fn region_exists(&self, code: &str) -> bool {
        self.records.code_exists(code)
    }

    /// Why no data may move now, if so: the log is behind its witnesses
    /// (it lost its tail), or this gateway was restored from a snapshot and
    /// an administrator has not confirmed it (revocations made after the
    /// snapshot are not in it). Judged at every admission and every page,
    /// on the control-plane snapshot the caller was just judged on (no
    /// second read); the answer is UNAVAILABLE, saying why.
    fn hold(&self, snapshot: &crate::control::directory::Snapshot) -> Option<Denial> {
        if let Some(why) = self.audit.behind() {
            return Some(Denial::new("LOG_BEHIND_WITNESS", why));
        }
        let h = snapshot.restore_hold()?;
        let taken = h
            .snapshot_taken_at
            .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
            .map_or_else(|| "?".into(), |t| t.to_rfc3339());
        Some(Denial::new(
            "RESTORE_UNCONFIRMED",
            format!(
                "this gateway was restored from a snapshot taken at {taken} and releases no data until an administrator confirms the restore (AdminService.ConfirmRestore), after re-applying what was revoked since"
            ),
        ))
    }

    /// Appends an entry and waits until it is durable. Not an `async fn`:
    /// the entry is boxed before anything awaits, so this future, and
    /// every caller's that awaits it, stays small.
    pub fn record(
        &self,
        entry: AuditEntry,
    ) -> impl Future<Output = Result<Receipt, Status>> + Send + '_ {
        self.audit.append(entry).map(|r| {
            let r = r.map_err(unavailable)?;
            crate::base::request_log::receipt(r.index);
            Ok(r)
        })
    }

    /// Appends the entry of a call that answers with personal data other
    /// than records — the log's entries, a resident's history, corrections
    /// — fenced as a release is: the entry carries the epoch `p` was judged
    /// under, and if the policy moved before it was written (a revocation
    /// on any node), the caller is judged again. Credentials that no longer
    /// stand, or a gateway that holds, are refused (and recorded); a caller
    /// that still stands is appended under the new epoch (what it reads
    /// depends on its standing and role, just checked again). The entry is
    /// boxed before anything awaits, as in [`Pipeline::record`].
    pub fn record_reader<'a>(
        &'a self,
        p: &'a Principal,
        entry: AuditEntry,
    ) -> impl Future<Output = Result<Receipt, Status>> + Send + 'a {
        let mut e = Box::new(entry);
        async move {
            let mut p = p.clone();
            for _ in 0..3 {
                match self.audit.append_judged(e, p.snapshot().epoch()).await {
                    Ok(r) => {
                        crate::base::request_log::receipt(r.index);
                        return Ok(r);
                    }
                    Err(AppendError::Unavailable(u)) => return Err(unavailable(u)),
                    Err(AppendError::PolicyMoved(back)) => {
                        e = back;
                        let kind = EntryKind::try_from(e.kind).unwrap_or(EntryKind::AuditRead);
                        p = self.rejudge_reader(&p, &e.method, kind).await?;
                    }
                }
            }
            Err(Status::aborted(
                "the policy kept changing while this call was served; nothing was released, call again",
            ))
        }
    }

    /// Runs store work on the blocking pool, a bounded number at a time.
    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&Pipeline) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let _permit = self
            .store_work
            .acquire()
            .await
            .map_err(|_| anyhow::anyhow!("the gateway is stopping"))?;
        let me = self.clone();
        tokio::task::spawn_blocking(move || work(&me))
            .await
            .map_err(|e| anyhow::anyhow!("store task failed: {e}"))?
    }

    /// Step 1. A failure is audited as `AUTH_FAILURE` and answered with
    /// UNAUTHENTICATED and only a short reason code.
    pub async fn authenticate<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
    ) -> Result<Principal, Status> {
        self.authenticate_wire(&Wire::of_tonic(req), method, Under::Committed)
            .await
    }

    /// Authenticates a call that answers with personal data other than
    /// records — the log's entries, a resident's history, corrections —
    /// and holds it as pulls are held ([`Pipeline::hold`]): a token revoked
    /// after a restored snapshot must not read the log either. A held call
    /// is recorded as a refusal of `kind`.
    pub async fn authenticate_reader<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
        kind: EntryKind,
    ) -> Result<Principal, Status> {
        let p = self.authenticate(req, method).await?;
        self.reader_held(&p, method, kind).await?;
        Ok(p)
    }

    /// Judges a reader again in the middle of a stream (a tail's next
    /// batch): its credentials still standing, the gateway not held. A
    /// refusal is recorded as one of `kind`.
    pub async fn rejudge_reader(
        &self,
        p: &Principal,
        method: &str,
        kind: EntryKind,
    ) -> Result<Principal, Status> {
        let now = match self.auth.restand(p).await {
            Ok(now) => now,
            Err(code) => {
                let status = auth_status(code);
                let mut e = decided_entry(p, method, kind, Some(code));
                e.message = status.message().into();
                self.record(e).await?;
                return Err(status);
            }
        };
        self.reader_held(&now, method, kind).await?;
        Ok(now)
    }

    async fn reader_held(
        &self,
        p: &Principal,
        method: &str,
        kind: EntryKind,
    ) -> Result<(), Status> {
        let Some(d) = self.hold(p.snapshot()) else {
            return Ok(());
        };
        let mut e = decided_entry(p, method, kind, Some(d.code));
        e.message = d.message.clone();
        self.record(e).await?;
        Err(Status::unavailable(d.message))
    }

    async fn authenticate_wire(
        &self,
        w: &Wire,
        method: &str,
        under: Under,
    ) -> Result<Principal, Status> {
        let creds = Credentials {
            peer: &w.peer,
            bearer: w.bearer(),
        };
        match self.auth.authenticate(&creds, under).await {
            Ok(p) => {
                crate::base::request_log::department(p.department());
                Ok(p)
            }
            Err(f) => Err(self.failed_authentication(&f, method).await),
        }
    }

    /// Counts and audits a failed authentication (in full, or aggregated
    /// per peer past the rate) and returns the status to answer with.
    fn failed_authentication<'a>(
        &'a self,
        f: &'a AuthFailure,
        method: &'a str,
    ) -> Rare<'a, Status> {
        Box::pin(async move {
            let (verdict, due) = self.auth_failures.count(f);
            if let Some(e) = due {
                if let Err(s) = self.record(e).await {
                    return s;
                }
            }
            if let auth_failures::Verdict::Record = verdict {
                if let Err(s) = self.record(auth_failure_entry(f, method)).await {
                    return s;
                }
            }
            auth_status(f.code)
        })
    }

    /// Refuses a call whose headers are larger than the gateway reads,
    /// before any handler runs: an authentication failure
    /// (`HEADERS_TOO_LARGE`), counted and audited like every other.
    pub async fn refuse_oversized_headers(&self, w: &Wire, method: &str) -> Status {
        let f = AuthFailure {
            code: "HEADERS_TOO_LARGE",
            cert_thumbprint: w.peer.thumbprint.as_deref().unwrap_or_default().into(),
            peer: w.peer().into(),
            ..Default::default()
        };
        self.failed_authentication(&f, method).await
    }

    /// Audits a call the transport refused before any handler ran (a
    /// message over the size limit, a body that does not decode), as the
    /// caller's kind of call. Only a reason and a capped message are
    /// recorded, so such calls grow the log by a small, fixed amount.
    pub async fn refuse_undecoded(
        &self,
        w: &Wire,
        method: &str,
        reason: &'static str,
        message: &str,
    ) -> Result<(), Status> {
        let principal = self.authenticate_wire(w, method, Under::Committed).await?;
        let service = method.split('/').nth(1).unwrap_or_default();
        let kind = match service {
            "govshare.v1.PublishService" => EntryKind::Publish,
            "govshare.v1.AdminService" => EntryKind::Admin,
            "govshare.v1.AuditService" => EntryKind::AuditRead,
            "govshare.v1.ResidentService" => EntryKind::ResidentRead,
            "govshare.v1.CorrectionService" => EntryKind::Correction,
            _ => EntryKind::Pull,
        };
        let mut e = principal_entry(&principal, &cap(method), kind);
        e.decision = AuditDecision::Deny.into();
        e.reason_code = reason.into();
        e.message = cap(message);
        self.record(e).await.map(|_| ())
    }

    /// Steps 1–2 for a data pull: authenticate, check the context and role,
    /// judge the department's grants. A pull is judged under the control
    /// plane this node holds ([`Under::Held`]): it is released only through
    /// [`Admission::release`], whose audit write is fenced by the policy
    /// epoch. A correction's filing is recorded without the fence, so it is
    /// judged under the control plane as committed now.
    pub async fn admit<T>(
        self: &Arc<Self>,
        req: &Request<T>,
        context: Option<&PullContext>,
        spec: PullSpec,
    ) -> Result<Admission, Status> {
        let under = match spec.kind {
            EntryKind::Pull => Under::Held,
            _ => Under::Committed,
        };
        let principal = self
            .authenticate_wire(&Wire::of_tonic(req), spec.method, under)
            .await?;
        self.admit_principal(principal, under, context.cloned().unwrap_or_default(), spec)
            .await
    }

    /// Step 2 for a caller authenticated under `under` (only the auth layer
    /// yields a [`Principal`]).
    pub(crate) async fn admit_principal(
        self: &Arc<Self>,
        principal: Principal,
        under: Under,
        context: PullContext,
        mut spec: PullSpec,
    ) -> Result<Admission, Status> {
        // Keys are recorded as stored, so the resident tracker finds a use
        // however the caller typed the key.
        for k in &mut spec.query.keys {
            *k = spec.dataset.canonical_key(k);
        }
        let mut adm = Admission {
            pipeline: self.clone(),
            principal,
            under,
            context,
            spec,
            decision: None,
        };
        if let Err(msg) = check_context(&adm.context) {
            return Err(adm
                .refuse(Code::InvalidArgument, Denial::new("BAD_CONTEXT", msg))
                .await);
        }
        if adm.stand().is_err() {
            // Judged under the snapshot this node held, which may predate a
            // grant made on another node a moment ago: a refusal stands
            // only under the control plane as committed now.
            adm.rejudge().await?;
        }
        let taken =
            self.limits
                .take_call(adm.principal.department(), adm.spec.dataset, adm.decision());
        match taken {
            Ok(()) => Ok(adm),
            Err(d) => Err(adm.refuse(Code::ResourceExhausted, d).await),
        }
    }

    /// Admission for PublishService: the caller needs the `publisher` role and
    /// must be the dataset's source department (一数一源).
    pub async fn admit_publisher<T>(
        self: &Arc<Self>,
        req: &Request<T>,
        dataset: Dataset,
        method: &'static str,
    ) -> Result<Publisher, Status> {
        let principal = self.authenticate(req, method).await?;
        Publisher::admit(self.clone(), principal, dataset, method).await
    }
}

/// Makes the pipeline's series exist from the first scrape, at 0: pulls
/// and records released for every department and dataset known now, and
/// authentication failures for every reason.
fn register_metrics(
    directory: &Directory,
    pulls: &pull_metrics::PullMetrics,
) -> anyhow::Result<()> {
    for department in directory.current()?.department_ids() {
        for dataset in Dataset::ALL {
            pulls.register(department, *dataset);
        }
    }
    for reason in crate::auth::FAILURE_CODES {
        metrics::counter!("govshare_auth_failures_total", "reason" => *reason).increment(0);
    }
    Ok(())
}

/// The answer to a failed authentication: only the reason code, and
/// UNAVAILABLE rather than UNAUTHENTICATED when the gateway could not read
/// its own control plane (not the caller's fault; retrying may succeed).
fn auth_status(code: &'static str) -> Status {
    if code == "STORE_UNAVAILABLE" {
        unavailable("the gateway cannot read its control plane")
    } else {
        Status::unauthenticated(format!("authentication failed: {code}"))
    }
}

/// A failed authentication as an admitted call's refusal: its status code
/// and the denial recorded.
fn auth_refusal(code: &'static str) -> (Code, Denial) {
    let status = auth_status(code);
    (status.code(), Denial::new(code, status.message()))
}

/// The answer to a call whose grants or credentials changed while it was
/// served, in a way that changes what it may receive.
fn policy_changed() -> Denial {
    Denial::new(
        "POLICY_CHANGED",
        "the grants or credentials this call was judged under changed while it was served; nothing was released, call again",
    )
}

fn store_down() -> Denial {
    Denial::new(
        "STORE_UNAVAILABLE",
        "the gateway's store cannot be read; nothing was released, retry later",
    )
}

fn check_context(c: &PullContext) -> Result<(), String> {
    for (name, v) in [
        ("purpose", &c.purpose),
        ("case_id", &c.case_id),
        ("operator", &c.operator),
    ] {
        if v.len() > bounded::MAX_RECORDED {
            return Err(format!(
                "context.{name} is {} bytes; at most {} are accepted",
                v.len(),
                bounded::MAX_RECORDED
            ));
        }
    }
    if c.purpose.trim().is_empty() {
        return Err("context.purpose is required: name the purpose code your grant lists".into());
    }
    if c.case_id.trim().is_empty() {
        return Err(
            "context.case_id is required: name the business case or ticket this pull serves".into(),
        );
    }
    Ok(())
}

/// When a pull under a grant with a disclosure delay of `days` may be
/// shown to the resident it concerns (`None`: at once).
fn disclosed_after(days: u32) -> Option<prost_types::Timestamp> {
    (days > 0).then(|| {
        clock::to_timestamp(clock::now() + std::time::Duration::from_secs(u64::from(days) * 86_400))
    })
}

/// The skeleton of an entry for a principal's call that is not a data pull
/// (`ADMIN`, `AUDIT_READ`).
pub fn principal_entry(p: &Principal, method: &str, kind: EntryKind) -> AuditEntry {
    AuditEntry {
        kind: kind.into(),
        principal: Some(audit_principal(p, "")),
        method: method.into(),
        ..Default::default()
    }
}

/// [`principal_entry`] with its outcome: allowed, or refused by the rule
/// `refused` names.
pub fn decided_entry(
    p: &Principal,
    method: &str,
    kind: EntryKind,
    refused: Option<&str>,
) -> AuditEntry {
    let mut e = principal_entry(p, method, kind);
    match refused {
        Some(code) => {
            e.decision = AuditDecision::Deny.into();
            e.reason_code = code.into();
        }
        None => e.decision = AuditDecision::Allow.into(),
    }
    e
}

fn audit_principal(p: &Principal, operator: &str) -> AuditPrincipal {
    AuditPrincipal {
        department: p.department().into(),
        client_id: p.client_id().into(),
        operator: cap(operator),
        token_id: p.token_id().into(),
        cert_thumbprint: p.cert_thumbprint().into(),
        peer_address: p.peer().into(),
        roles: p.roles().iter().map(|r| r.name().to_string()).collect(),
    }
}

fn auth_failure_entry(f: &AuthFailure, method: &str) -> AuditEntry {
    AuditEntry {
        kind: EntryKind::AuthFailure.into(),
        principal: Some(AuditPrincipal {
            department: f.department.clone(),
            client_id: cap(&f.client_id),
            token_id: cap(&f.token_id),
            cert_thumbprint: f.cert_thumbprint.clone(),
            peer_address: f.peer.clone(),
            ..Default::default()
        }),
        method: method.into(),
        decision: AuditDecision::Deny.into(),
        reason_code: f.code.into(),
        message: "authentication failed".into(),
        ..Default::default()
    }
}

/// The query as the log records it: caller-supplied strings capped, and a
/// key list longer than `max_keys` recorded as its count and digest.
fn recorded_query(q: &AuditQuery, max_keys: usize) -> AuditQuery {
    AuditQuery {
        keys: bounded::cap_keys(&q.keys, max_keys),
        region: cap(&q.region),
        filter: cap(&q.filter),
        page_token: cap(&q.page_token),
        page_size: q.page_size,
    }
}

/// Which records of a listing the caller wants, judged on the *masked*
/// record, so a filter on a field outside the grant never matches. `None`:
/// every record (and none is decoded to be judged).
pub type Keep<R> = Option<Arc<dyn Fn(&R) -> bool + Send + Sync>>;

/// An authenticated, authorized pull in progress.
pub struct Admission {
    pipeline: Arc<Pipeline>,
    principal: Principal,
    /// The control plane the principal and decision were judged under: the
    /// snapshot this node held, until judged again as committed now.
    under: Under,
    context: PullContext,
    spec: PullSpec,
    decision: Option<Arc<Decision>>,
}

/// The binding record limit of one call, and its name for messages.
pub struct RecordLimit {
    pub limit: u64,
    pub name: &'static str,
}

/// Records after the fetch and mask steps, not yet audited.
pub struct Masked<R> {
    records: Vec<Projected<R>>,
    not_found: Vec<String>,
    out_of_scope: Vec<String>,
    keys: Vec<String>,
    reservation: Option<Reservation>,
    /// A scanned page's place in [`PAGES_IN_MEMORY`].
    page: Option<OwnedSemaphorePermit>,
}

/// Records whose audit entry is durable: the only form handlers can send.
pub struct Released<R> {
    records: Vec<Projected<R>>,
    not_found: Vec<String>,
    receipt: AuditReceipt,
    page: Option<OwnedSemaphorePermit>,
}

impl<R> Released<R> {
    /// The records, the keys not found, the receipt. A scanned page gives
    /// up its place in memory here: the handler encodes it at once.
    pub fn into_parts(self) -> (Vec<Projected<R>>, Vec<String>, AuditReceipt) {
        drop(self.page);
        (self.records, self.not_found, self.receipt)
    }
}

/// What the blocking fetch-and-mask work needs, detached from the call.
struct MaskContext {
    decision: Arc<Decision>,
    pseudonyms: DepartmentKey,
}

impl Admission {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn decision(&self) -> &Decision {
        self.decision
            .as_deref()
            .expect("admission holds a decision once admitted")
    }

    /// Judges the department's grants against the principal's snapshot.
    fn judge(&self) -> Result<Decision, Denial> {
        self.judge_as(&self.principal)
    }

    /// Judges the call as `p` (the caller under another snapshot).
    fn judge_as(&self, p: &Principal) -> Result<Decision, Denial> {
        let snapshot = p.snapshot();
        authz::decide(
            snapshot.grants_of(p.department()),
            p.department(),
            self.spec.dataset,
            self.spec.operation,
            &self.context.purpose,
            snapshot.purposes(),
            clock::now(),
        )
    }

    /// Whether the principal may pull under its snapshot: the gateway not
    /// held, the `puller` role, a grant that allows the call (kept as the
    /// decision).
    fn stand(&mut self) -> Result<(), (Code, Denial)> {
        if let Some(d) = self.pipeline.hold(self.principal.snapshot()) {
            return Err((Code::Unavailable, d));
        }
        if !self.principal.has_role(Role::Puller) {
            let d = Denial::new(
                "ROLE_NOT_GRANTED",
                "pulling data needs the 'puller' role on your token",
            );
            return Err((Code::PermissionDenied, d));
        }
        let d = self.judge().map_err(|d| (Code::PermissionDenied, d))?;
        self.decision = Some(Arc::new(d));
        Ok(())
    }

    /// Takes the principal's credentials again under the control plane as
    /// committed now; a refusal is audited like any other.
    async fn restand(&mut self) -> Result<(), Status> {
        self.under = Under::Committed;
        match self.pipeline.auth.restand(&self.principal).await {
            Ok(p) => {
                self.principal = p;
                Ok(())
            }
            Err(code) => {
                let (status, d) = auth_refusal(code);
                Err(self.refuse(status, d).await)
            }
        }
    }

    /// For a refusal reached under the snapshot this node held, what the
    /// control plane as committed now says instead, if anything: the
    /// caller's credentials no longer stand, or the gateway holds (that
    /// refusal is recorded instead — not one that names grants the caller
    /// no longer has); its grants now refuse the call; or they changed
    /// otherwise (the call is asked to come again, as when the policy moves
    /// under a release: a region or limit widened elsewhere a moment ago
    /// is not refused on this node's older word). `None`: the refusal
    /// stands.
    async fn overtaken(&self) -> Option<(Code, Denial)> {
        if self.under != Under::Held {
            return None;
        }
        let now = match self.pipeline.auth.restand(&self.principal).await {
            Ok(now) if Arc::ptr_eq(now.snapshot(), self.principal.snapshot()) => return None,
            Ok(now) => now,
            Err(code) => return Some(auth_refusal(code)),
        };
        if let Some(d) = self.pipeline.hold(now.snapshot()) {
            return Some((Code::Unavailable, d));
        }
        // Refused before its grants were judged (a bad context): only its
        // standing, checked above, could change that.
        let before = self.decision.as_deref()?;
        match self.judge_as(&now) {
            Err(d) => Some((Code::PermissionDenied, d)),
            Ok(a) if a.releases_as(before) => None,
            Ok(_) => Some((Code::Aborted, policy_changed())),
        }
    }

    /// Re-authenticates and re-authorizes a call under the control plane as
    /// committed now (a refusal under the snapshot held, the policy moved
    /// under a release, a stream's next page); a refusal is audited like
    /// any other.
    fn rejudge(&mut self) -> Rare<'_, Result<(), Status>> {
        Box::pin(async move {
            self.restand().await?;
            match self.stand() {
                Ok(()) => Ok(()),
                Err((code, d)) => Err(self.refuse(code, d).await),
            }
        })
    }

    /// The policy moved between this call's judgement and its audit write —
    /// a revocation, a suspension, a catalog change, or any other change,
    /// on this node or another — so nothing was written and nothing
    /// released. The call is judged again under the new policy: a refusal
    /// is answered (and audited) as such; a call allowed exactly as before
    /// (an unrelated change) may release what it masked, under the new
    /// epoch (returned); a call allowed otherwise is asked to call again,
    /// because what it fetched was masked under the old grants. A call
    /// judged again a third time is asked to call again too.
    async fn policy_moved(&mut self, judged: u32) -> Result<u64, Status> {
        let before = self.decision.clone();
        self.rejudge().await?;
        let same = match (&before, &self.decision) {
            (Some(a), Some(b)) => a.releases_as(b),
            _ => false,
        };
        if same && judged < 3 {
            return Ok(self.principal.snapshot().epoch());
        }
        Err(self.refuse(Code::Aborted, policy_changed()).await)
    }

    /// The grants' `max_records_per_call`, if any.
    pub fn record_limit(&self) -> Option<RecordLimit> {
        self.decision()
            .max_records_per_call()
            .map(|limit| RecordLimit {
                limit,
                name: "max_records_per_call",
            })
    }

    /// The largest key list this call's grants could allow: longer lists are
    /// refused, and recorded only by count and digest.
    fn max_keys(&self) -> usize {
        let per_call = self
            .decision
            .as_deref()
            .and_then(Decision::max_records_per_call)
            .map_or(MAX_BATCH_KEYS, |l| l as usize);
        per_call.min(MAX_BATCH_KEYS)
    }

    fn entry(&self, decision: AuditDecision) -> AuditEntry {
        let delay = self
            .decision
            .as_deref()
            .map_or(0, Decision::disclosure_delay_days);
        AuditEntry {
            disclosed_after: disclosed_after(delay),
            kind: self.spec.kind.into(),
            principal: Some(audit_principal(&self.principal, &self.context.operator)),
            method: self.spec.method.into(),
            dataset: self.spec.dataset.name().into(),
            operation: self.spec.operation.into(),
            purpose: cap(&self.context.purpose),
            case_id: cap(&self.context.case_id),
            query: Some(recorded_query(&self.spec.query, self.max_keys())),
            decision: decision.into(),
            grants_used: self
                .decision
                .as_deref()
                .map(Decision::grant_ids)
                .unwrap_or_default(),
            withdrawn: self
                .decision
                .as_deref()
                .map(|d| {
                    d.withdrawn()
                        .into_iter()
                        .map(|(field, view)| ReturnedField {
                            field: field.into(),
                            view: view.into(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    /// Audits a refusal and returns the status to answer with (UNAVAILABLE
    /// instead if even the refusal cannot be recorded).
    pub fn refuse(&self, code: Code, denial: Denial) -> Rare<'_, Status> {
        Box::pin(async move {
            let (code, denial) = self.overtaken().await.unwrap_or((code, denial));
            self.count_denied(denial.code);
            let mut e = self.entry(AuditDecision::Deny);
            e.reason_code = denial.code.into();
            e.message.clone_from(&denial.message);
            if !denial.grants.is_empty() {
                e.grants_used = denial.grants;
            }
            e.disclosed_after = disclosed_after(self.refusal_delay());
            match self.pipeline.record(e).await {
                Ok(_) => Status::new(code, denial.message),
                Err(s) => s,
            }
        })
    }

    /// How long a refusal stays hidden from the resident tracker: the
    /// department's longest delay on the dataset. When the control plane
    /// cannot be read, the longest any grant may set: withholding a refusal
    /// for a while harms no one, tipping off an investigation does.
    fn refusal_delay(&self) -> u32 {
        self.pipeline
            .directory
            .current()
            .map_or(crate::control::authz::MAX_DISCLOSURE_DELAY_DAYS, |s| {
                s.longest_delay(self.principal.department(), self.spec.dataset)
            })
    }

    /// `govshare_pulls_total` for this call, refused for `reason`.
    fn count_denied(&self, reason: impl Into<metrics::SharedString>) {
        let department = self.principal.department();
        self.pipeline
            .pulls
            .denied(department, self.spec.dataset, reason);
    }

    /// `cursor` as a page token only this department's listings of this
    /// dataset can continue from (see [`crate::pipeline::page_token`]).
    pub fn seal_cursor(&self, cursor: &[u8]) -> String {
        self.pipeline.page_tokens.seal(
            self.principal.department(),
            self.decision().dataset().name(),
            cursor,
        )
    }

    /// The cursor in a caller's page token, if this gateway issued it for
    /// this department and dataset.
    pub fn open_cursor(&self, token: &str) -> Option<Vec<u8>> {
        self.pipeline.page_tokens.open(
            self.principal.department(),
            self.decision().dataset().name(),
            token,
        )
    }

    fn mask_context(&self) -> MaskContext {
        MaskContext {
            decision: self.decision.clone().expect("admitted"),
            pseudonyms: self
                .pipeline
                .masker
                .department_key(self.principal.department()),
        }
    }

    /// Reserves `want` records of today's limit, refusing (audited) when
    /// the day is used up or, with `whole`, when fewer than `want` remain.
    async fn reserve(&self, want: u64, whole: bool) -> Result<Option<Reservation>, Status> {
        let d = self.decision();
        let r =
            self.pipeline
                .limits
                .reserve(self.principal.department(), self.spec.dataset, d, want);
        match r {
            Ok(Some(r)) if whole && r.granted() < want => {
                let msg = format!(
                    "max_records_per_day is {} for '{}' and only {} of today's records remain; this request names {want}",
                    r.limit,
                    self.spec.dataset.name(),
                    r.granted()
                );
                Err(self
                    .refuse(Code::ResourceExhausted, Denial::new("LIMIT_EXCEEDED", msg))
                    .await)
            }
            Ok(r) => Ok(r),
            Err(d) => {
                let code = if d.code == "LIMIT_EXCEEDED" {
                    Code::ResourceExhausted
                } else {
                    Code::Unavailable
                };
                Err(self.refuse(code, d).await)
            }
        }
    }

    /// Audits a store failure as a refusal and answers UNAVAILABLE.
    async fn store_failed(&self, e: anyhow::Error) -> Status {
        tracing::error!(error = %e, method = self.spec.method, "store read failed");
        self.refuse(Code::Unavailable, store_down()).await
    }

    /// Fetch + mask by key. Keys outside every grant's regions land in
    /// `not_found` exactly like absent keys (and, for the auditors only, in
    /// the entry's `keys_out_of_scope`). The daily limit is reserved for
    /// every key first; a batch it cannot cover is refused whole.
    pub async fn get<R: Record>(&self, keys: Vec<String>) -> Result<Masked<R>, Status> {
        let want = keys.len() as u64;
        self.fetch(keys, want).await
    }

    /// [`Admission::get`] of `keys` for an answer of at most `want`
    /// records: what it reserves of the daily limit, whole.
    async fn fetch<R: Record>(&self, keys: Vec<String>, want: u64) -> Result<Masked<R>, Status> {
        let reservation = self.reserve(want, true).await?;
        let ctx = self.mask_context();
        let fetched = if keys.len() <= INLINE_KEYS && !R::HAS_COUNTS {
            self.pipeline.fetch_masked_inline::<R>(&ctx, keys).await
        } else {
            self.pipeline
                .blocking(move |p| p.fetch_masked::<R>(&ctx, keys))
                .await
        };
        match fetched {
            Ok(mut m) => {
                m.reservation = reservation;
                Ok(m)
            }
            Err(e) => Err(self.store_failed(e).await),
        }
    }

    /// Fetch + mask by region: scans only inside `prefixes` (which must come
    /// from [`Decision::scan_prefixes`]) after the cursor `after`, keeping
    /// masked records that pass `keep` (all, without one), until `limit`
    /// are found (or fewer, when less of today's limit remains). Returns
    /// the cursor to resume from, `None` at the end.
    ///
    /// Every page is judged anew — credentials against the current
    /// control plane, grants against it and the clock — so a revocation,
    /// suspension or expiry ends a stream at its next page.
    pub async fn scan<R: Record>(
        &mut self,
        prefixes: Arc<[String]>,
        after: Option<Vec<u8>>,
        limit: usize,
        keep: Keep<R>,
    ) -> Result<(Masked<R>, Option<Vec<u8>>), Status> {
        self.rejudge().await?;
        let page = self.pipeline.pages.clone().acquire_owned().await.ok();
        let reservation = self.reserve(limit as u64, false).await?;
        let limit = reservation
            .as_ref()
            .map_or(limit, |r| limit.min(r.granted() as usize));
        let ctx = self.mask_context();
        let scanned = self
            .pipeline
            .blocking(move |p| p.scan_masked(&ctx, &prefixes, after, limit, keep.as_deref()))
            .await;
        match scanned {
            Ok((mut m, next)) => {
                m.reservation = reservation;
                m.page = page;
                Ok((m, next))
            }
            Err(e) => Err(self.store_failed(e).await),
        }
    }

    /// The region tree inside the decision's scope: nodes under a granted
    /// region, plus the ancestors leading to it so the tree is connected.
    pub async fn region_tree(&self, root: String) -> Result<Masked<RegionNode>, Status> {
        let decision = self.decision.clone().expect("admitted");
        let fetched = self
            .pipeline
            .blocking(move |p| {
                let mut out = Masked::new();
                for (_, node) in p.records.scan::<RegionNode>(&root, None, usize::MAX)? {
                    if decision.covers_region(&node.code)
                        || decision.is_ancestor_of_scope(&node.code)
                    {
                        out.keys.push(node.code.clone());
                        out.records.push(Projected::bare(&RegionNode {
                            children: Vec::new(),
                            ..node
                        }));
                    }
                }
                Ok(out)
            })
            .await;
        match fetched {
            Ok(m) => Ok(m),
            Err(e) => Err(self.store_failed(e).await),
        }
    }

    /// The grid containing a point, if one is visible to the caller: the
    /// first in code order of those that are (grids may overlap), and only
    /// that one, so the entry records what is answered and the daily limit
    /// is asked for one record — not one per grid there, which a refusal
    /// would have counted out, the unseen ones too.
    pub async fn locate(&self, lon: f64, lat: f64) -> Result<Masked<Grid>, Status> {
        let candidates = self.pipeline.locator.locate(lon, lat);
        let want = candidates.len().min(1) as u64;
        let mut m = self.fetch::<Grid>(candidates, want).await?;
        // Absent grids are not what was asked about: only the point was.
        m.not_found.clear();
        m.records.truncate(1);
        m.keys.truncate(1);
        Ok(m)
    }

    /// Step 5: audit what leaves, durably; only then release it.
    pub async fn release<R: Record>(&mut self, m: Masked<R>) -> Result<Released<R>, Status> {
        let refused = m.records.is_empty() && !m.out_of_scope.is_empty();
        // Boxed: it is kept across the append, which may hand it back.
        let mut e = Box::new(self.entry(if refused {
            AuditDecision::Deny
        } else {
            AuditDecision::Allow
        }));
        if refused {
            e.reason_code = OUT_OF_SCOPE.into();
            e.message = "requested records lie outside the department's granted regions".into();
        }
        debug_assert_eq!(m.keys.len(), m.records.len(), "a key per record sent");
        e.record_count = m.records.len() as u64;
        e.keys_returned = m.keys;
        e.keys_out_of_scope = m.out_of_scope;
        let spec = self.spec.dataset.spec();
        let views = m.records.iter().map(|r| &r.views);
        e.fields = ReleasedViews::of(spec, R::FIELD_PREFIX, views)
            .list(spec)
            .into_iter()
            .map(|(field, view)| ReturnedField {
                field: field.into(),
                view: view.into(),
            })
            .collect();
        let mut epoch = self.principal.snapshot().epoch();
        let mut judged = 0;
        let receipt = loop {
            match self.pipeline.audit.append_judged(e, epoch).await {
                Ok(r) => break r,
                Err(AppendError::Unavailable(u)) => return Err(unavailable(u)),
                Err(AppendError::PolicyMoved(back)) => {
                    judged += 1;
                    epoch = self.policy_moved(judged).await?;
                    e = back;
                }
            }
        };
        crate::base::request_log::receipt(receipt.index);
        if let Some(r) = m.reservation {
            r.settle(m.records.len() as u64);
        }
        if refused {
            self.count_denied(OUT_OF_SCOPE);
        } else {
            let (department, records) = (self.principal.department(), m.records.len());
            let pulls = &self.pipeline.pulls;
            pulls.allowed(department, self.spec.dataset, records as u64);
        }
        Ok(Released {
            records: m.records,
            not_found: m.not_found,
            receipt: receipt.to_proto(),
            page: m.page,
        })
    }
}

impl Pipeline {
    /// Point reads of `keys`, each masked through its plan; keys that are
    /// absent or outside every grant both land in `not_found`.
    fn fetch_masked<R: Record>(
        &self,
        ctx: &MaskContext,
        keys: Vec<String>,
    ) -> anyhow::Result<Masked<R>> {
        let fetched = keys
            .into_iter()
            .map(|key| Ok((self.records.stored::<R>(&key)?, key)))
            .collect::<anyhow::Result<_>>()?;
        self.mask_fetched(ctx, fetched)
    }

    /// [`Pipeline::fetch_masked`] of a few keys on the caller's task ([`RecordStore::stored_async`]).
    async fn fetch_masked_inline<R: Record>(
        &self,
        ctx: &MaskContext,
        keys: Vec<String>,
    ) -> anyhow::Result<Masked<R>> {
        let mut fetched = Vec::with_capacity(keys.len());
        for key in keys {
            fetched.push((self.records.stored_async::<R>(&key).await?, key));
        }
        self.mask_fetched(ctx, fetched)
    }

    /// Masks each record fetched for its key (`None`: not stored).
    fn mask_fetched<R: Record>(
        &self,
        ctx: &MaskContext,
        fetched: Vec<(Option<Vec<u8>>, String)>,
    ) -> anyhow::Result<Masked<R>> {
        let layout = R::layout();
        let mut out = Masked::new();
        for (stored, key) in fetched {
            let visible = match stored {
                Some(stored) => {
                    let visible = self.mask_into(ctx, &layout, &stored, &mut out)?;
                    if !visible {
                        out.out_of_scope.push(key.clone());
                    }
                    visible
                }
                None => false,
            };
            if !visible {
                out.not_found.push(key);
            }
        }
        Ok(out)
    }

    /// Projects one stored record through its plan into `out`; `false`
    /// when no candidate grant covers its row, or covers none of its
    /// fields (it then counts as absent: not even an empty message leaves).
    ///
    /// A grid's counts are read only here, after the scope check: counting
    /// first made a refused grid cost time in proportion to its population
    /// (a timing oracle), and every scanned grid cost two index scans.
    fn mask_into<R: Record>(
        &self,
        ctx: &MaskContext,
        layout: &Layout,
        stored: &[u8],
        out: &mut Masked<R>,
    ) -> anyhow::Result<bool> {
        let (key, row) = layout.key_and_row(stored)?;
        let Some(plan) = ctx.decision.plan_for(row) else {
            return Ok(false);
        };
        let spec = R::DATASET.spec();
        if !R::IS_STRUCTURE && !plan.releases_any_of(spec, R::FIELD_PREFIX) {
            return Ok(false);
        }
        let counted;
        let stored = if R::HAS_COUNTS {
            let mut record = R::decode(stored).context("decoding a stored record")?;
            self.records.fill_counts(&mut record)?;
            counted = record.encode_to_vec();
            counted.as_slice()
        } else {
            stored
        };
        let community = if plan.masks_any() {
            row.get(..12).and_then(|c| self.records.name_of(c))
        } else {
            None
        };
        let p = Projector::new(&plan, spec, layout, &ctx.pseudonyms, community.as_deref());
        out.records.push(p.project(stored)?);
        out.keys.push(key.to_string());
        Ok(true)
    }

    fn scan_masked<R: Record>(
        &self,
        ctx: &MaskContext,
        prefixes: &[String],
        mut after: Option<Vec<u8>>,
        limit: usize,
        keep: Option<&(dyn Fn(&R) -> bool + Send + Sync)>,
    ) -> anyhow::Result<(Masked<R>, Option<Vec<u8>>)> {
        const CHUNK: usize = 256;
        let layout = R::layout();
        let mut out = Masked::new();
        // A page is at most 1000 records: reserve it once, not by doubling.
        out.records.reserve_exact(limit.min(1024));
        out.keys.reserve_exact(limit.min(1024));
        let mut examined = 0usize;
        let budget = limit.saturating_mul(50).max(10_000);
        if limit == 0 {
            return Ok((out, after));
        }
        for prefix in prefixes {
            if after
                .as_deref()
                .is_some_and(|a| !a.starts_with(prefix.as_bytes()) && a > prefix.as_bytes())
            {
                continue;
            }
            loop {
                // The records are projected as the store holds them: none
                // is copied out of it; each index key only into the one
                // buffer that keeps the last (the cursor).
                let (mut seen, mut last, mut done) = (0, Vec::new(), false);
                let mut examine = |index_key: &[u8], stored: &[u8]| {
                    seen += 1;
                    examined += 1;
                    last.clear();
                    last.extend_from_slice(index_key);
                    if self.mask_into(ctx, &layout, stored, &mut out)?
                        && !kept(keep, out.records.last().expect("just pushed"))?
                    {
                        out.records.pop();
                        out.keys.pop();
                    }
                    done = out.records.len() >= limit || examined >= budget;
                    Ok(if done {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    })
                };
                self.records.scan_stored_each::<R>(
                    prefix,
                    after.as_deref(),
                    CHUNK,
                    &mut examine,
                )?;
                if seen > 0 {
                    after = Some(last);
                }
                if done {
                    return Ok((out, after));
                }
                if seen < CHUNK {
                    break;
                }
            }
        }
        Ok((out, None))
    }
}

/// Whether a listing's filter keeps a masked record: judged on the
/// record as released, decoded only when there is a filter.
fn kept<R: Record>(
    keep: Option<&(dyn Fn(&R) -> bool + Send + Sync)>,
    masked: &Projected<R>,
) -> anyhow::Result<bool> {
    match keep {
        None => Ok(true),
        Some(keep) => Ok(keep(&masked.record.decode().context("a masked record")?)),
    }
}

impl<R> Masked<R> {
    fn new() -> Self {
        Self {
            records: Vec::new(),
            not_found: Vec::new(),
            out_of_scope: Vec::new(),
            keys: Vec::new(),
            reservation: None,
            page: None,
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod reader_fence_tests {
    use super::*;
    use crate::audit::{AuditOptions, Fence, Runtime};
    use crate::control::keys::KeyRing;
    use crate::control::roles::RoleDepartments;
    use crate::control::store::{EPOCH_ROW, Store};
    use crate::datasets::catalog::Catalog;
    use crate::datasets::mask::Masker;
    use crate::proto::{Purpose, PurposeStatus};

    /// A read of the log (or a resident's history, or corrections) whose
    /// caller's standing changed between its decision and its audit write
    /// is judged again before anything is released: here the policy moved
    /// and the caller no longer stands, so the read is refused and only the
    /// refusal is on the record.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_whose_caller_fell_while_it_was_served_releases_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::store::open_dir(&dir.path().join("store")).unwrap();
        let store = Store::new(backend.clone());
        let directory = Arc::new(
            Directory::new(
                store.clone(),
                Arc::new(Catalog::with_overrides(&[]).unwrap()),
                RoleDepartments {
                    admin: vec!["gateway-admin".into()],
                    auditor: vec!["audit-office".into()],
                    resident_portal: Vec::new(),
                },
            )
            .unwrap(),
        );
        let audit = Runtime::open(
            &dir.path().join("audit"),
            &dir.path().join("pki"),
            "govshare.test/readers",
            AuditOptions {
                fence: Some(Fence {
                    backend,
                    row: EPOCH_ROW,
                }),
                ..AuditOptions::default()
            },
        )
        .unwrap();
        let log = audit.log();
        let keys = Arc::new(KeyRing::load_or_create(store.clone(), "t", "t").unwrap());
        let pipeline = Pipeline::new(
            RecordStore::new(store.backend().clone()),
            directory.clone(),
            Authenticator::new(directory.clone(), keys),
            log.clone(),
            Masker::new([9; 32]),
        )
        .unwrap();
        let auditor = Principal::for_test(
            "audit-office",
            &[Role::Auditor],
            directory.current().unwrap(),
        );
        let read = || decided_entry(&auditor, "/read", EntryKind::AuditRead, None);

        // Judged under the epoch in force: recorded, the read goes on.
        let before = log.committed();
        pipeline.record_reader(&auditor, read()).await.unwrap();
        assert_eq!(log.committed(), before + 1);

        // The policy moves (any control-plane change) before the next
        // read's entry is written; judged again, this caller does not
        // stand (its token is not a registered one).
        store
            .put_purpose(&Purpose {
                code: "moved".into(),
                status: PurposeStatus::Active.into(),
                ..Default::default()
            })
            .unwrap();
        let err = pipeline.record_reader(&auditor, read()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert_eq!(
            log.committed(),
            before + 2,
            "only the refusal was recorded, not the read"
        );
    }
}
