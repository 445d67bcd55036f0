//! Publishing (一数一源): the source department's records come in through
//! here, in chunks. A chunk is validated by the caller, then its `PUBLISH`
//! entry — keys to be written, keys rejected — is made durable, and only
//! then are its records written. A stream that breaks mid-chunk writes
//! nothing of that chunk; what was written is exactly what the log says.

use super::{Pipeline, audit_principal, unavailable};
use crate::audit::bounded::cap;
use crate::auth::Principal;
use crate::control::roles::Role;
use crate::datasets::Dataset;
use crate::datasets::Record;
use crate::proto::{
    AuditDecision, AuditEntry, AuditQuery, AuditReceipt, EntryKind, Grid, GridWorker, LegalEntity,
    Person, RegionLevel, RegionNode,
};
use std::sync::Arc;
use tonic::Status;

/// One validated record of any published kind.
pub enum Upsert {
    Person(Person),
    Entity(LegalEntity),
    Region(RegionNode),
    Grid(Grid),
    Worker(GridWorker),
}

impl Upsert {
    pub fn key(&self) -> &str {
        match self {
            Upsert::Person(r) => r.key(),
            Upsert::Entity(r) => r.key(),
            Upsert::Region(r) => r.key(),
            Upsert::Grid(r) => r.key(),
            Upsert::Worker(r) => r.key(),
        }
    }
}

/// A chunk's records by kind, each kind written in one atomic step (in
/// the chunk's order within a kind, so a key named twice ends as its last
/// record).
#[derive(Default)]
struct Batches {
    persons: Vec<Person>,
    entities: Vec<LegalEntity>,
    regions: Vec<RegionNode>,
    grids: Vec<Grid>,
    workers: Vec<GridWorker>,
}

impl Batches {
    fn of(records: Vec<Upsert>) -> Self {
        let mut b = Self::default();
        for r in records {
            match r {
                Upsert::Person(r) => b.persons.push(r),
                Upsert::Entity(r) => b.entities.push(r),
                Upsert::Region(r) => b.regions.push(r),
                Upsert::Grid(r) => {
                    // A grid is also the leaf of the region tree.
                    b.regions.push(RegionNode {
                        code: r.key().to_string(),
                        name: r.name.clone().unwrap_or_default(),
                        level: RegionLevel::Grid.into(),
                        parent_code: r.community_code.clone().unwrap_or_default(),
                        children: Vec::new(),
                    });
                    b.grids.push(r);
                }
                Upsert::Worker(r) => b.workers.push(r),
            }
        }
        b
    }

    /// Structure first, so records never refer to a region not yet stored;
    /// durable before the chunk is acknowledged.
    fn write(self, p: &Pipeline) -> anyhow::Result<()> {
        p.records.upsert_all(self.regions)?;
        for g in &self.grids {
            p.locator.upsert(g);
        }
        p.records.upsert_all(self.grids)?;
        p.records.upsert_all(self.workers)?;
        p.records.upsert_all(self.persons)?;
        p.records.upsert_all(self.entities)?;
        p.records.sync()
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
    /// The caller needs the `publisher` role and must be the dataset's
    /// source department; a refusal is audited.
    pub(super) async fn admit(
        pipeline: Arc<Pipeline>,
        principal: Principal,
        dataset: Dataset,
        method: &'static str,
    ) -> Result<Self, Status> {
        let publisher = Self {
            pipeline,
            principal,
            dataset,
            method,
        };
        if let Some(d) = publisher.pipeline.hold(publisher.principal.snapshot()) {
            return Err(publisher.refuse_held(d).await);
        }
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
                publisher.pipeline.record(e).await?;
                Err(Status::permission_denied(msg))
            }
        }
    }

    /// Whether a region or grid code a record refers to exists.
    pub fn code_exists(&self, code: &str) -> bool {
        self.pipeline.records.code_exists(code)
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

    /// Audits one chunk — the keys about to be written and the keys
    /// rejected — durably, then writes its records. A write failure after
    /// the entry is recorded as `APPLY_FAILED` and answered UNAVAILABLE.
    pub async fn commit(
        &self,
        records: Vec<Upsert>,
        rejected: Vec<String>,
    ) -> Result<AuditReceipt, Status> {
        // A stream can outlive its credentials: each chunk is judged anew
        // (revoked token or certificate, suspended department, expiry), as
        // each page of a pull stream is.
        let now = match self.pipeline.auth.restand(&self.principal).await {
            Ok(now) => now,
            Err(code) => {
                let status = super::auth_status(code);
                let mut e = self.entry(AuditDecision::Deny);
                e.reason_code = code.into();
                e.message = format!(
                    "the publisher's credentials no longer stand; the {} records of this chunk were not written",
                    records.len()
                );
                self.pipeline.record(e).await?;
                return Err(status);
            }
        };
        if let Some(d) = self.pipeline.hold(now.snapshot()) {
            return Err(self.refuse_held(d).await);
        }
        // The chunk's entry and its records go together: a snapshot holds
        // both or neither.
        let _permit = self.pipeline.gate.change().await;
        let mut e = self.entry(AuditDecision::Allow);
        e.record_count = records.len() as u64;
        e.keys_returned = records.iter().map(|r| cap(r.key())).collect();
        e.query = Some(AuditQuery {
            keys: rejected.iter().map(|k| cap(k)).collect(),
            filter: "rejected".into(),
            ..Default::default()
        });
        let receipt = self.pipeline.record(e).await?.to_proto();
        let written = self
            .pipeline
            .blocking(move |p| Batches::of(records).write(p))
            .await;
        if let Err(err) = written {
            tracing::error!(error = %err, "writing an audited publish chunk failed");
            let mut failed = self.entry(AuditDecision::Deny);
            failed.reason_code = "APPLY_FAILED".into();
            failed.message = format!(
                "the chunk recorded at index {} could not be stored in full",
                receipt.leaf_index
            );
            self.pipeline.record(failed).await?;
            return Err(unavailable(
                "the records could not be stored (the log says which chunk)",
            ));
        }
        Ok(receipt)
    }

    /// Audits a publish refused while data may not move, and answers
    /// UNAVAILABLE.
    async fn refuse_held(&self, d: crate::control::authz::Denial) -> Status {
        let mut e = self.entry(AuditDecision::Deny);
        e.reason_code = d.code.into();
        e.message.clone_from(&d.message);
        match self.pipeline.record(e).await {
            Ok(_) => Status::unavailable(d.message),
            Err(s) => s,
        }
    }

    /// Records that a stream broke with `discarded` validated records in its
    /// open chunk, none of which were written.
    pub async fn record_broken(&self, discarded: usize, why: &str) {
        let mut e = self.entry(AuditDecision::Deny);
        e.reason_code = "STREAM_BROKEN".into();
        e.record_count = 0;
        e.message = format!(
            "the stream ended with an error ({}); the {discarded} records of its open chunk were not written",
            cap(why)
        );
        if let Err(s) = self.pipeline.record(e).await {
            tracing::error!(status = %s, "recording a broken publish stream failed");
        }
    }
}
