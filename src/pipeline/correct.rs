//! Corrections (纠错) as the pipeline sees them. Filing one reads a record
//! the way a pull does — the same grants, the same row and field plan, the
//! same refusal for "absent" and "not yours" — but releases nothing: the
//! caller learns only that its correction was filed and which version of
//! the record it concerns. The source department answering one learns the
//! record's current version, nothing else.

use super::{Admission, Pipeline, store_down};
use crate::audit::bounded::cap;
use crate::auth::Principal;
use crate::control::authz::Denial;
use crate::control::roles::Role;
use crate::datasets::{Dataset, Record};
use crate::proto::json::{Named, with_text_field};
use crate::proto::{AuditDecision, AuditReceipt, ReturnedField};
use tonic::{Code, Status};

/// A filed correction's place: the version read, and the filing's receipt.
pub struct Filed {
    pub read_version: u64,
    pub receipt: AuditReceipt,
}

/// What a filing refers to.
pub struct Filing<'a> {
    pub id: &'a str,
    pub key: &'a str,
    pub field: &'a str,
    pub proposed: &'a str,
}

/// The one answer to a record that is absent, outside the caller's rows,
/// or whose field the caller's grants do not cover: indistinguishable.
fn not_visible(field: &str) -> Status {
    Status::not_found(format!(
        "no record with this key whose '{}' your department may read",
        crate::base::text::cap_for_message(field)
    ))
}

impl Admission {
    /// Files a correction of `f.field` of record `f.key`: the caller's
    /// grants must cover reading that field of that record, and the
    /// proposed value must pass the dataset's checks for it. Recorded as a
    /// `CORRECTION` entry, allowed or refused, before the answer.
    pub async fn file_correction<R: Record + Named>(&self, f: Filing<'_>) -> Result<Filed, Status> {
        let spec = R::DATASET.spec();
        let catalog_name = format!("{}{}", R::FIELD_PREFIX, f.field);
        let Some(index) = spec.fields.iter().position(|s| s.name == catalog_name) else {
            let d = Denial::new(
                "INVALID_ARGUMENT",
                format!(
                    "field: {} has no field '{}' (see GetCatalog)",
                    spec.name,
                    crate::base::text::cap_for_message(f.field)
                ),
            );
            return Err(self.refuse_correction(Code::InvalidArgument, d).await);
        };
        let key = match R::parse_key(f.key) {
            Ok(k) => k,
            Err(e) => {
                let msg = format!(
                    "{} '{}': {e}",
                    R::KEY_FIELD,
                    crate::base::text::cap_for_message(f.key)
                );
                let d = Denial::new("INVALID_ARGUMENT", msg);
                return Err(self.refuse_correction(Code::InvalidArgument, d).await);
            }
        };
        // A filing reads the record as a GET does, and counts against the
        // day's limit like one: filings are no unmetered way to ask whether
        // a key lives in the caller's rows.
        if let Some(r) = self.reserve(1, true).await? {
            r.settle(1);
        }
        let stored = match self.pipeline.records.get::<R>(&key) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                return Err(self
                    .refuse_correction(Code::Unavailable, store_down())
                    .await);
            }
        };
        let Some(stored) = stored else {
            let d = Denial::new("NOT_FOUND", not_visible(f.field).message());
            return Err(self.refuse_correction(Code::NotFound, d).await);
        };
        let view = self
            .decision()
            .plan_for(stored.row_code())
            .map(|plan| plan.view(index))
            .filter(|v| *v != crate::proto::FieldView::Unspecified);
        let Some(view) = view else {
            let mut d = Denial::new(super::OUT_OF_SCOPE, not_visible(f.field).message());
            d.grants = self.decision().grant_ids();
            return Err(self.refuse_correction(Code::NotFound, d).await);
        };
        // The proposal is checked as the source would check it, on the
        // record with that field replaced; only what the check says of
        // that field is repeated to the caller.
        let candidate = with_text_field(&stored, f.field, f.proposed)
            .map_err(|msg| (Code::InvalidArgument, msg));
        let checked = match candidate {
            Ok(Some(c)) => match c.validate() {
                Err(msg) if msg.starts_with(f.field) => Err((Code::InvalidArgument, msg)),
                _ => Ok(()),
            },
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err((code, msg)) = checked {
            let msg = format!("proposed_value: {msg}");
            return Err(self
                .refuse_correction(code, Denial::new("INVALID_ARGUMENT", msg))
                .await);
        }
        let mut e = self.entry(AuditDecision::Allow);
        e.reason_code = "CORRECTION_FILED".into();
        e.message = format!("correction {} filed", cap(f.id));
        e.fields = vec![ReturnedField {
            field: f.field.into(),
            view: view.into(),
        }];
        let receipt = self.pipeline.record(e).await?.to_proto();
        Ok(Filed {
            read_version: stored.version(),
            receipt,
        })
    }

    /// Audits a refused filing (as a `CORRECTION` entry) and returns the
    /// status to answer with.
    async fn refuse_correction(&self, code: Code, d: Denial) -> Status {
        let mut e = self.entry(AuditDecision::Deny);
        e.reason_code = d.code.into();
        e.message.clone_from(&d.message);
        if !d.grants.is_empty() {
            e.grants_used = d.grants;
        }
        e.disclosed_after = super::disclosed_after(self.refusal_delay());
        match self.pipeline.record(e).await {
            Ok(_) => Status::new(code, d.message),
            Err(s) => s,
        }
    }
}

impl Pipeline {
    /// The current version of record `key` of `R`'s dataset, for its
    /// source department answering a correction (`None`: no such record).
    /// Only the version leaves, and only to the publisher of that dataset.
    pub fn source_version<R: Record>(
        &self,
        source: &Principal,
        key: &str,
    ) -> Result<Option<u64>, Status> {
        if !source.has_role(Role::Publisher)
            || source.department() != Dataset::source_department(R::DATASET)
        {
            return Err(Status::permission_denied(format!(
                "only '{}', the source department of '{}', answers its corrections",
                R::DATASET.source_department(),
                R::DATASET.name()
            )));
        }
        self.records
            .get::<R>(key)
            .map(|r| r.map(|r| r.version()))
            .map_err(|e| {
                tracing::error!(error = %e, "store read failed");
                Status::unavailable("the gateway's store cannot be read; retry later")
            })
    }
}
