//! The pull pipeline — the only road from the store to the wire:
//!
//! ```text
//! authenticate ─► authorize ─► fetch ─► mask ─► audit (durable) ─► respond
//! ```
//!
//! [`Pipeline::admit`] authenticates and authorizes, yielding an
//! [`Admission`]. Its `get`/`scan` fetch only rows the decision covers and
//! mask each through its field plan, yielding [`Masked`] records; only
//! [`Admission::release`] turns those into [`Released`] records, after their
//! audit entry is on disk. Handlers cannot build either type themselves.
//! Every refusal on the way is audited before its status is returned.

use crate::audit::{AuditLog, Receipt};
use crate::auth::{AuthFailure, Authenticator, Credentials, Principal, Role};
use crate::authz::{self, Decision, Denial};
use crate::catalog::Dataset;
use crate::clock;
use crate::limits::{Allowance, Limits};
use crate::mask::{Masker, Projector};
use crate::proto::{
    AuditDecision, AuditEntry, AuditPrincipal, AuditQuery, AuditReceipt, EntryKind, FieldView,
    Operation, PullContext, RegionNode, ReturnedField,
};
use crate::records::Record;
use crate::store::Store;
use std::collections::BTreeSet;
use std::sync::Arc;
use tonic::{Code, Request, Status};

/// What a data RPC asks for, as the audit log records it.
pub struct PullSpec {
    pub method: &'static str,
    pub dataset: Dataset,
    pub operation: Operation,
    pub query: AuditQuery,
}

pub struct Pipeline {
    store: Store,
    auth: Authenticator,
    audit: AuditLog,
    masker: Masker,
    limits: Limits,
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{e}; nothing was released, retry later"))
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "internal error");
    Status::internal("internal error; the gateway log has details")
}

impl Pipeline {
    pub fn new(store: Store, auth: Authenticator, audit: AuditLog, masker: Masker) -> Arc<Self> {
        let limits = Limits::new(store.clone());
        Arc::new(Self {
            store,
            auth,
            audit,
            masker,
            limits,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.auth
    }

    /// Appends an entry and waits until it is durable.
    pub async fn record(&self, entry: AuditEntry) -> Result<Receipt, Status> {
        self.audit.append(entry).await.map_err(unavailable)
    }

    /// Step 1. A failure is audited as `AUTH_FAILURE` and answered with
    /// UNAUTHENTICATED and only a short reason code.
    pub async fn authenticate<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
    ) -> Result<Principal, Status> {
        let certs = req.peer_certs();
        let bearer = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            });
        let creds = Credentials {
            leaf_cert: certs.as_ref().and_then(|c| c.first()).map(|c| c.as_ref()),
            bearer,
            peer: req.remote_addr().map(|a| a.to_string()).unwrap_or_default(),
        };
        match self.auth.authenticate(&creds) {
            Ok(p) => Ok(p),
            Err(f) => {
                self.record(auth_failure_entry(&f, method)).await?;
                Err(Status::unauthenticated(format!(
                    "authentication failed: {}",
                    f.code
                )))
            }
        }
    }

    /// Steps 1–2 for a data pull: authenticate, check the context and role,
    /// evaluate the department's grants.
    pub async fn admit<T>(
        self: &Arc<Self>,
        req: &Request<T>,
        context: Option<&PullContext>,
        spec: PullSpec,
    ) -> Result<Admission, Status> {
        let principal = self.authenticate(req, spec.method).await?;
        let context = context.cloned().unwrap_or_default();
        let mut adm = Admission {
            pipeline: self.clone(),
            principal,
            context,
            spec,
            decision: None,
            allowance: Allowance {
                remaining_today: None,
            },
        };
        if let Err(msg) = check_context(&adm.context) {
            return Err(adm
                .refuse(Code::InvalidArgument, Denial::new("BAD_CONTEXT", msg))
                .await);
        }
        if !adm.principal.has_role(Role::Puller) {
            let d = Denial::new(
                "ROLE_NOT_GRANTED",
                "pulling data needs the 'puller' role on your token",
            );
            return Err(adm.refuse(Code::PermissionDenied, d).await);
        }
        let grants = self
            .store
            .grants_of(adm.principal.department())
            .map_err(internal)?;
        let decision = match authz::authorize(
            grants,
            adm.spec.dataset,
            adm.spec.operation,
            &adm.context.purpose,
            clock::now(),
        ) {
            Ok(d) => d,
            Err(d) => return Err(adm.refuse(Code::PermissionDenied, d).await),
        };
        adm.decision = Some(decision);
        match self
            .limits
            .admit(adm.principal.department(), adm.spec.dataset, adm.decision())
        {
            Ok(a) => {
                adm.allowance = a;
                Ok(adm)
            }
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
        let publisher = Publisher {
            pipeline: self.clone(),
            principal,
            dataset,
            method,
        };
        let refusal = if !publisher.principal.has_role(Role::Publisher) {
            Some("publishing needs the 'publisher' role on your token".to_string())
        } else if publisher.principal.department() != dataset.source_department() {
            Some(format!(
                "only '{}', the source department of '{}', may publish it",
                dataset.source_department(),
                dataset.name()
            ))
        } else {
            None
        };
        match refusal {
            None => Ok(publisher),
            Some(msg) => {
                let mut e = publisher.entry(AuditDecision::Deny);
                e.reason_code = "NOT_SOURCE_DEPARTMENT".into();
                e.message.clone_from(&msg);
                self.record(e).await?;
                Err(Status::permission_denied(msg))
            }
        }
    }
}

fn check_context(c: &PullContext) -> Result<(), String> {
    if c.purpose.trim().is_empty() {
        return Err("context.purpose is required: name the purpose code your grant lists".into());
    }
    if c.case_id.trim().is_empty() {
        return Err(
            "context.case_id is required: name the business case or ticket this pull serves".into(),
        );
    }
    for (name, v) in [
        ("purpose", &c.purpose),
        ("case_id", &c.case_id),
        ("operator", &c.operator),
    ] {
        if v.len() > 256 {
            return Err(format!("context.{name} is longer than 256 bytes"));
        }
    }
    Ok(())
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

fn audit_principal(p: &Principal, operator: &str) -> AuditPrincipal {
    AuditPrincipal {
        department: p.department().into(),
        client_id: p.client_id().into(),
        operator: operator.into(),
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
            client_id: f.client_id.clone(),
            token_id: f.token_id.clone(),
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

/// An authenticated, authorized pull in progress.
pub struct Admission {
    pipeline: Arc<Pipeline>,
    principal: Principal,
    context: PullContext,
    spec: PullSpec,
    decision: Option<Decision>,
    allowance: Allowance,
}

/// The binding record limit of one call, and its name for messages.
pub struct RecordLimit {
    pub limit: u64,
    pub name: &'static str,
}

/// Records after the fetch and mask steps, not yet audited.
pub struct Masked<R> {
    records: Vec<R>,
    not_found: Vec<String>,
    out_of_scope: Vec<String>,
    fields: BTreeSet<(String, i32)>,
    keys: Vec<String>,
}

/// Records whose audit entry is durable: the only form handlers can send.
pub struct Released<R> {
    records: Vec<R>,
    not_found: Vec<String>,
    receipt: AuditReceipt,
}

impl<R> Released<R> {
    pub fn into_parts(self) -> (Vec<R>, Vec<String>, AuditReceipt) {
        (self.records, self.not_found, self.receipt)
    }
}

impl Admission {
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn decision(&self) -> &Decision {
        self.decision
            .as_ref()
            .expect("admission holds a decision once admitted")
    }

    /// The tighter of `max_records_per_call` and what is left of
    /// `max_records_per_day`, if either applies.
    pub fn record_limit(&self) -> Option<RecordLimit> {
        let per_call = self
            .decision()
            .max_records_per_call()
            .map(|limit| RecordLimit {
                limit,
                name: "max_records_per_call",
            });
        let today = self.allowance.remaining_today.map(|limit| RecordLimit {
            limit,
            name: "max_records_per_day (remaining today)",
        });
        match (per_call, today) {
            (Some(a), Some(b)) => Some(if b.limit < a.limit { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    fn entry(&self, decision: AuditDecision) -> AuditEntry {
        AuditEntry {
            kind: EntryKind::Pull.into(),
            principal: Some(audit_principal(&self.principal, &self.context.operator)),
            method: self.spec.method.into(),
            dataset: self.spec.dataset.name().into(),
            operation: self.spec.operation.into(),
            purpose: self.context.purpose.clone(),
            case_id: self.context.case_id.clone(),
            query: Some(self.spec.query.clone()),
            decision: decision.into(),
            grants_used: self
                .decision
                .as_ref()
                .map(Decision::grant_ids)
                .unwrap_or_default(),
            ..Default::default()
        }
    }

    /// Audits a refusal and returns the status to answer with (UNAVAILABLE
    /// instead if even the refusal cannot be recorded).
    pub async fn refuse(&self, code: Code, denial: Denial) -> Status {
        let mut e = self.entry(AuditDecision::Deny);
        e.reason_code = denial.code.into();
        e.message.clone_from(&denial.message);
        match self.pipeline.record(e).await {
            Ok(_) => Status::new(code, denial.message),
            Err(s) => s,
        }
    }

    /// Fetch + mask by key. Keys outside every grant's regions land in
    /// `not_found` exactly like absent keys (and, for the auditors only, in
    /// the entry's `keys_out_of_scope`).
    pub fn get<R: Record>(&self, keys: &[String]) -> Result<Masked<R>, Status> {
        let mut out = Masked::new();
        for key in keys {
            let visible = match self.pipeline.store.get::<R>(key).map_err(internal)? {
                Some(r) => {
                    let visible = self.mask_into(r, &mut out)?;
                    if !visible {
                        out.out_of_scope.push(key.clone());
                    }
                    visible
                }
                None => false,
            };
            if !visible {
                out.not_found.push(key.clone());
            }
        }
        Ok(out)
    }

    /// Fetch + mask by region: scans only inside `prefixes` (which must come
    /// from [`Decision::scan_prefixes`]) after the cursor `after`, keeping
    /// masked records that pass `keep`, until `limit` are found. Returns the
    /// cursor to resume from, `None` at the end.
    pub fn scan<R: Record>(
        &self,
        prefixes: &[String],
        mut after: Option<Vec<u8>>,
        limit: usize,
        keep: impl Fn(&R) -> bool,
    ) -> Result<(Masked<R>, Option<Vec<u8>>), Status> {
        const CHUNK: usize = 256;
        let mut out = Masked::new();
        let mut examined = 0usize;
        let budget = limit.saturating_mul(50).max(10_000);
        for prefix in prefixes {
            if after
                .as_deref()
                .is_some_and(|a| !a.starts_with(prefix.as_bytes()) && a > prefix.as_bytes())
            {
                continue;
            }
            loop {
                let chunk = self
                    .pipeline
                    .store
                    .scan::<R>(prefix, after.as_deref(), CHUNK)
                    .map_err(internal)?;
                let exhausted = chunk.len() < CHUNK;
                for (index_key, record) in chunk {
                    after = Some(index_key);
                    examined += 1;
                    let before = out.records.len();
                    if self.mask_into(record, &mut out)? && !keep(&out.records[before]) {
                        out.discard_last();
                    }
                    if out.records.len() >= limit || examined >= budget {
                        return Ok((out, after));
                    }
                }
                if exhausted {
                    break;
                }
            }
        }
        Ok((out, None))
    }

    /// The region tree inside the decision's scope: nodes under a granted
    /// region, plus the ancestors leading to it so the tree is connected.
    pub fn region_tree(&self, root: &str) -> Result<Masked<RegionNode>, Status> {
        let d = self.decision();
        let mut out = Masked::new();
        let all = self
            .pipeline
            .store
            .scan::<RegionNode>(root, None, usize::MAX)
            .map_err(internal)?;
        for (_, node) in all {
            if d.covers_region(&node.code) || d.is_ancestor_of_scope(&node.code) {
                out.push_structural(node);
            }
        }
        Ok(out)
    }

    fn mask_into<R: Record>(&self, mut record: R, out: &mut Masked<R>) -> Result<bool, Status> {
        let Some(plan) = self.decision().plan_for(record.row_code()) else {
            return Ok(false);
        };
        record.enrich(&self.pipeline.store).map_err(internal)?;
        let community = plan
            .values()
            .any(|v| *v == FieldView::Masked)
            .then(|| record.row_code().get(..12).map(str::to_string))
            .flatten()
            .and_then(|c| self.pipeline.store.get::<RegionNode>(&c).ok().flatten())
            .map(|n| n.name);
        let mut p = Projector::new(
            &plan,
            R::DATASET.spec(),
            R::FIELD_PREFIX,
            &self.pipeline.masker,
            self.principal.department(),
            community.as_deref(),
        );
        let projected = record.project(&mut p);
        for (field, view) in p.released() {
            out.fields.insert((field, view));
        }
        out.keys.push(record.key().to_string());
        out.records.push(projected);
        Ok(true)
    }

    /// Step 5: audit what leaves, durably; only then release it.
    pub async fn release<R>(&self, m: Masked<R>) -> Result<Released<R>, Status> {
        let refused = m.records.is_empty() && !m.out_of_scope.is_empty();
        let mut e = self.entry(if refused {
            AuditDecision::Deny
        } else {
            AuditDecision::Allow
        });
        if refused {
            e.reason_code = "OUT_OF_SCOPE".into();
            e.message = "requested records lie outside the department's granted regions".into();
        }
        e.record_count = m.records.len() as u64;
        e.keys_returned = m.keys;
        e.keys_out_of_scope = m.out_of_scope;
        e.fields = m
            .fields
            .into_iter()
            .map(|(field, view)| ReturnedField { field, view })
            .collect();
        let receipt = self.pipeline.record(e).await?;
        let count = m.records.len() as u64;
        if let Err(e) = self.pipeline.limits.consume(
            self.principal.department(),
            self.spec.dataset,
            self.allowance,
            count,
        ) {
            tracing::error!(error = %e, "counting released records against the daily quota failed");
        }
        Ok(Released {
            records: m.records,
            not_found: m.not_found,
            receipt: receipt.to_proto(),
        })
    }
}

impl<R> Masked<R> {
    fn new() -> Self {
        Self {
            records: Vec::new(),
            not_found: Vec::new(),
            out_of_scope: Vec::new(),
            fields: BTreeSet::new(),
            keys: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn discard_last(&mut self) {
        self.records.pop();
        self.keys.pop();
    }
}

impl Masked<RegionNode> {
    fn push_structural(&mut self, node: RegionNode) {
        self.keys.push(node.code.clone());
        self.records.push(RegionNode {
            children: Vec::new(),
            ..node
        });
    }
}

/// A publisher admitted for one dataset.
pub struct Publisher {
    pipeline: Arc<Pipeline>,
    principal: Principal,
    dataset: Dataset,
    method: &'static str,
}

impl Publisher {
    pub fn store(&self) -> &Store {
        &self.pipeline.store
    }

    fn entry(&self, decision: AuditDecision) -> AuditEntry {
        AuditEntry {
            kind: EntryKind::Publish.into(),
            principal: Some(audit_principal(&self.principal, "")),
            method: self.method.into(),
            dataset: self.dataset.name().into(),
            decision: decision.into(),
            ..Default::default()
        }
    }

    /// Audits one committed chunk: the keys written and those rejected.
    pub async fn record_chunk(
        &self,
        accepted: Vec<String>,
        rejected: Vec<String>,
    ) -> Result<AuditReceipt, Status> {
        let mut e = self.entry(AuditDecision::Allow);
        e.record_count = accepted.len() as u64;
        e.keys_returned = accepted;
        e.query = Some(AuditQuery {
            keys: rejected,
            filter: "rejected".into(),
            ..Default::default()
        });
        Ok(self.pipeline.record(e).await?.to_proto())
    }
}
