//! CorrectionService (纠错): a department that finds an error in shared
//! data sends a correction to the dataset's one source department, which
//! answers within a deadline. A correction never changes data by itself —
//! only the source publishes — and tells its reporter nothing its grant
//! did not already show: its status, the answer, the version that fixed
//! it.
//!
//! Filing is judged and audited like a pull (the pipeline reads the record
//! and refuses "absent" and "not yours" alike); listing and answering are
//! `CORRECTION` entries too, each durable before the answer.

use crate::audit::bounded::cap;
use crate::auth::Principal;
use crate::base::clock;
use crate::control::keys::random_id;
use crate::control::roles::Role;
use crate::control::store::Store;
use crate::datasets::{Dataset, Record, RecordVisitor};
use crate::pipeline::{Admission, Filed, Filing, Pipeline, PullSpec, decided_entry};
use crate::proto::correction_service_server::CorrectionService;
use crate::proto::json::Named;
use crate::proto::*;
use chrono::Datelike;
use futures_util::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

/// Longest evidence, proposed value, reason or question kept.
const MAX_TEXT: usize = 4096;

pub struct CorrectionApi {
    pipeline: Arc<Pipeline>,
    /// Working days the source has to answer.
    response_days: u32,
}

impl CorrectionApi {
    /// The service, and a task that keeps `govshare_corrections_overdue`
    /// current (every minute, and after each filing or answer).
    pub fn new(pipeline: Arc<Pipeline>, response_days: u32) -> Self {
        for d in Dataset::ALL {
            metrics::gauge!("govshare_corrections_overdue", "dataset" => d.name()).set(0.0);
            metrics::counter!("govshare_corrections_filed_total", "dataset" => d.name())
                .increment(0);
        }
        let store = pipeline.directory().store().clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                count_overdue(&store);
            }
        });
        Self {
            pipeline,
            response_days,
        }
    }

    fn store(&self) -> &Store {
        self.pipeline.directory().store()
    }

    /// Every correction, as stored.
    fn all(&self) -> Result<Vec<Correction>, Status> {
        self.store()
            .corrections()
            .map_err(|_| Status::unavailable("the gateway's store cannot be read; retry later"))
    }

    /// Records a listing or an answer (or its refusal) as a `CORRECTION`
    /// entry; durable before anything is answered.
    async fn record(
        &self,
        p: &Principal,
        method: &str,
        dataset: &str,
        refused: Option<&'static str>,
        message: String,
    ) -> Result<AuditReceipt, Status> {
        let mut e = decided_entry(p, method, EntryKind::Correction, refused);
        e.dataset = cap(dataset);
        e.message = crate::base::text::cap_message(message);
        let receipt = match refused {
            Some(_) => self.pipeline.record(e).await?,
            None => self.pipeline.record_reader(p, e).await?,
        };
        Ok(receipt.to_proto())
    }

    /// Refuses (audited) with `status`.
    async fn refuse(
        &self,
        p: &Principal,
        method: &str,
        dataset: &str,
        code: &'static str,
        status: Status,
    ) -> Status {
        match self
            .record(p, method, dataset, Some(code), status.message().to_string())
            .await
        {
            Ok(_) => status,
            Err(s) => s,
        }
    }
}

/// The moment `days` working days (Monday to Friday, server time) after
/// `from`: the source's deadline. Public holidays are not known here.
pub fn working_days_after(from: std::time::SystemTime, days: u32) -> std::time::SystemTime {
    let mut t = chrono::DateTime::<chrono::Local>::from(from);
    let mut left = days;
    while left > 0 {
        t += chrono::Duration::days(1);
        if !matches!(t.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun) {
            left -= 1;
        }
    }
    t.into()
}

/// Whether `c` waits for its source past its deadline, as of now.
fn is_overdue(c: &Correction, now: i64) -> bool {
    c.status == CorrectionStatus::Open as i32 && c.respond_by.is_some_and(|t| t.seconds < now)
}

fn count_overdue(store: &Store) {
    let Ok(all) = store.corrections() else {
        return;
    };
    let now = clock::unix_seconds(clock::now());
    for d in Dataset::ALL {
        let n = all
            .iter()
            .filter(|c| c.dataset == d.name() && is_overdue(c, now))
            .count();
        metrics::gauge!("govshare_corrections_overdue", "dataset" => d.name()).set(n as f64);
    }
}

/// Corrections of each dataset by the state they are in now, for
/// `AuditStats`.
pub fn stats(store: &Store) -> Result<Vec<CorrectionStats>, Status> {
    let all = store
        .corrections()
        .map_err(|_| Status::unavailable("the gateway's store cannot be read; retry later"))?;
    let now = clock::unix_seconds(clock::now());
    Ok(Dataset::ALL
        .iter()
        .map(|d| {
            let of: Vec<&Correction> = all.iter().filter(|c| c.dataset == d.name()).collect();
            let with =
                |s: CorrectionStatus| of.iter().filter(|c| c.status == s as i32).count() as u64;
            CorrectionStats {
                dataset: d.name().into(),
                source_department: d.source_department().into(),
                filed: of.len() as u64,
                open: with(CorrectionStatus::Open),
                accepted: with(CorrectionStatus::Accepted),
                rejected: with(CorrectionStatus::Rejected),
                needs_info: with(CorrectionStatus::NeedsInfo),
                overdue: of.iter().filter(|c| is_overdue(c, now)).count() as u64,
            }
        })
        .collect())
}

/// Runs the pipeline's filing for the dataset's record type.
struct File<'a> {
    adm: &'a Admission,
    filing: Filing<'a>,
}

impl<'a> RecordVisitor for File<'a> {
    type Output = BoxFuture<'a, Result<Filed, Status>>;
    fn visit<R: Record + Named>(self) -> Self::Output {
        Box::pin(self.adm.file_correction::<R>(self.filing))
    }
}

/// Reads a record's current version for its source department.
struct Version<'a> {
    pipeline: &'a Pipeline,
    source: &'a Principal,
    key: &'a str,
}

impl RecordVisitor for Version<'_> {
    type Output = Result<Option<u64>, Status>;
    fn visit<R: Record + Named>(self) -> Self::Output {
        self.pipeline.source_version::<R>(self.source, self.key)
    }
}

/// Corrections a list call returns by default, and at most.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 500;

/// Open corrections one department may have filed and not yet seen
/// answered: enough for any clerk's week, few enough that no reporter can
/// bury a source's queue.
const MAX_OPEN_PER_REPORTER: usize = 1000;

/// One page of `items` (in id order) after `token`, and the token of the
/// next page (empty on the last).
fn page(items: Vec<Correction>, size: u32, token: &str) -> ListCorrectionsResponse {
    let size = match size as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    let mut rest = items
        .into_iter()
        .filter(|c| token.is_empty() || c.id.as_str() > token);
    let corrections: Vec<Correction> = rest.by_ref().take(size).collect();
    let next_page_token = match (rest.next(), corrections.last()) {
        (Some(_), Some(last)) => last.id.clone(),
        _ => String::new(),
    };
    ListCorrectionsResponse {
        corrections,
        next_page_token,
    }
}

fn is_open(c: &Correction) -> bool {
    c.status == CorrectionStatus::Open as i32 || c.status == CorrectionStatus::NeedsInfo as i32
}

fn bounded(field: &str, v: &str, required: bool) -> Result<(), Status> {
    if required && v.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{field}: is required")));
    }
    if v.len() > MAX_TEXT {
        return Err(Status::invalid_argument(format!(
            "{field}: at most {MAX_TEXT} bytes"
        )));
    }
    Ok(())
}

/// Corrections `p` may list: an administrator every one; a dataset's
/// source department (publisher) its own queue.
fn queue_of(p: &Principal, all: Vec<Correction>) -> Option<Vec<Correction>> {
    if p.has_role(Role::Admin) {
        return Some(all);
    }
    p.has_role(Role::Publisher).then(|| {
        all.into_iter()
            .filter(|c| c.source_department == p.department())
            .collect()
    })
}

fn with_overdue(mut c: Correction, now: i64) -> Correction {
    c.overdue = is_overdue(&c, now);
    c
}

#[tonic::async_trait]
impl CorrectionService for CorrectionApi {
    async fn file_correction(
        &self,
        req: Request<FileCorrectionRequest>,
    ) -> Result<Response<Correction>, Status> {
        let method = "/govshare.v1.CorrectionService/FileCorrection";
        let r = req.get_ref();
        let Some(dataset) = Dataset::parse(&r.dataset) else {
            let p = self.pipeline.authenticate(&req, method).await?;
            let known: Vec<&str> = Dataset::ALL.iter().map(|d| d.name()).collect();
            let status = Status::invalid_argument(format!(
                "dataset: '{}' is not one of {}",
                crate::base::text::cap_for_message(&r.dataset),
                known.join(", ")
            ));
            return Err(self
                .refuse(&p, method, &r.dataset, "INVALID_ARGUMENT", status)
                .await);
        };
        let spec = PullSpec {
            kind: EntryKind::Correction,
            method,
            dataset,
            operation: Operation::Get,
            query: AuditQuery {
                keys: vec![r.key.clone()],
                filter: format!("field={}", r.field),
                ..Default::default()
            },
        };
        let adm = self.pipeline.admit(&req, r.context.as_ref(), spec).await?;
        for (field, v, required) in [
            ("evidence", &r.evidence, true),
            ("proposed_value", &r.proposed_value, true),
            ("field", &r.field, true),
        ] {
            if let Err(status) = bounded(field, v, required) {
                let d = crate::control::authz::Denial::new("INVALID_ARGUMENT", status.message());
                return Err(adm.refuse(status.code(), d).await);
            }
        }
        // One open correction per field of a record from one department,
        // and a bound on how many it has open: a reporter cannot flood the
        // source's queue.
        let key = dataset.canonical_key(&r.key);
        let open: Vec<Correction> = match self.all() {
            Ok(all) => all
                .into_iter()
                .filter(|c| c.reporter_department == adm.principal().department() && is_open(c))
                .collect(),
            Err(status) => {
                let d = crate::control::authz::Denial::new("STORE_UNAVAILABLE", status.message());
                return Err(adm.refuse(status.code(), d).await);
            }
        };
        if let Some(same) = open
            .iter()
            .find(|c| c.dataset == dataset.name() && c.key == key && c.field == r.field)
        {
            let d = crate::control::authz::Denial::new(
                "ALREADY_EXISTS",
                format!(
                    "your department's correction '{}' of this field is still open; follow it with ListMyCorrections",
                    same.id
                ),
            );
            return Err(adm.refuse(Code::AlreadyExists, d).await);
        }
        if open.len() >= MAX_OPEN_PER_REPORTER {
            let d = crate::control::authz::Denial::new(
                "LIMIT_EXCEEDED",
                format!(
                    "your department has {MAX_OPEN_PER_REPORTER} corrections open, the most it may; wait for answers"
                ),
            );
            return Err(adm.refuse(Code::ResourceExhausted, d).await);
        }
        let id = format!("cr-{}", random_id());
        // The filing's entry and the stored correction go together.
        let _permit = self.pipeline.gate().change().await;
        let filed = dataset
            .visit(File {
                adm: &adm,
                filing: Filing {
                    id: &id,
                    key: &r.key,
                    field: &r.field,
                    proposed: &r.proposed_value,
                },
            })
            .await?;
        let now = clock::now();
        let p = adm.principal();
        let c = Correction {
            id,
            dataset: dataset.name().into(),
            key,
            field: r.field.clone(),
            proposed_value: r.proposed_value.clone(),
            evidence: r.evidence.clone(),
            purpose: r
                .context
                .as_ref()
                .map(|c| c.purpose.clone())
                .unwrap_or_default(),
            case_id: r
                .context
                .as_ref()
                .map(|c| c.case_id.clone())
                .unwrap_or_default(),
            reporter_department: p.department().into(),
            filed_by: format!("{}@{}", p.client_id(), p.department()),
            filed_at: Some(clock::to_timestamp(now)),
            read_version: filed.read_version,
            respond_by: Some(clock::to_timestamp(working_days_after(
                now,
                self.response_days,
            ))),
            status: CorrectionStatus::Open.into(),
            source_department: dataset.source_department().into(),
            ..Default::default()
        };
        self.store().put_correction(&c).map_err(|e| {
            tracing::error!(error = %e, receipt = filed.receipt.leaf_index, "storing a filed correction failed");
            Status::unavailable("the correction was recorded but could not be stored; file it again")
        })?;
        metrics::counter!("govshare_corrections_filed_total", "dataset" => dataset.name())
            .increment(1);
        Ok(Response::new(c))
    }

    async fn list_corrections(
        &self,
        req: Request<ListCorrectionsRequest>,
    ) -> Result<Response<ListCorrectionsResponse>, Status> {
        let method = "/govshare.v1.CorrectionService/ListCorrections";
        let p = self
            .pipeline
            .authenticate_reader(&req, method, EntryKind::Correction)
            .await?;
        let r = req.into_inner();
        let Some(queue) = queue_of(&p, self.all()?) else {
            let status = Status::permission_denied(
                "listing corrections needs the 'publisher' role of a dataset's source department, or 'admin'",
            );
            return Err(self
                .refuse(&p, method, &r.dataset, "ROLE_NOT_GRANTED", status)
                .await);
        };
        let now = clock::unix_seconds(clock::now());
        let corrections: Vec<Correction> = queue
            .into_iter()
            .map(|c| with_overdue(c, now))
            .filter(|c| r.status == 0 || c.status == r.status)
            .filter(|c| !r.overdue || c.overdue)
            .filter(|c| r.dataset.is_empty() || c.dataset == r.dataset)
            .collect();
        self.record(
            &p,
            method,
            &r.dataset,
            None,
            format!(
                "listed {} corrections (status {}, overdue only: {})",
                corrections.len(),
                r.status,
                r.overdue
            ),
        )
        .await?;
        Ok(Response::new(page(corrections, r.page_size, &r.page_token)))
    }

    async fn answer_correction(
        &self,
        req: Request<AnswerCorrectionRequest>,
    ) -> Result<Response<Correction>, Status> {
        use answer_correction_request::Answer;
        let method = "/govshare.v1.CorrectionService/AnswerCorrection";
        let p = self
            .pipeline
            .authenticate_reader(&req, method, EntryKind::Correction)
            .await?;
        let r = req.into_inner();
        // Who may answer at all is judged before anything is looked up, and
        // a correction of another source answers as one that does not
        // exist: no department learns of corrections that are not its own.
        if !p.has_role(Role::Publisher) {
            let status = Status::permission_denied(
                "answering corrections needs the 'publisher' role: only a dataset's source department answers",
            );
            return Err(self
                .refuse(&p, method, "", "ROLE_NOT_GRANTED", status)
                .await);
        }
        let found = match self.store().correction(&r.id) {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "reading a correction failed");
                let status = Status::unavailable("the gateway's store cannot be read; retry later");
                return Err(self
                    .refuse(&p, method, "", "STORE_UNAVAILABLE", status)
                    .await);
            }
        };
        let Some(mut c) = found.filter(|c| c.source_department == p.department()) else {
            let status = Status::not_found(format!(
                "no correction '{}' for your department (see ListCorrections)",
                crate::base::text::cap_for_message(&r.id)
            ));
            return Err(self.refuse(&p, method, "", "NOT_FOUND", status).await);
        };
        if c.status != CorrectionStatus::Open as i32
            && c.status != CorrectionStatus::NeedsInfo as i32
        {
            let status = Status::failed_precondition(format!(
                "correction '{}' is already {}",
                c.id,
                CorrectionStatus::try_from(c.status).map_or("answered", |s| s.as_str_name())
            ));
            return Err(self
                .refuse(&p, method, &c.dataset, "ALREADY_ANSWERED", status)
                .await);
        }
        let dataset = Dataset::parse(&c.dataset).expect("a stored correction names a dataset");
        let checked: Result<(CorrectionStatus, u64, String), Status> = match r.answer {
            Some(Answer::AcceptedVersion(v)) => {
                let current = dataset.visit(Version {
                    pipeline: &self.pipeline,
                    source: &p,
                    key: &c.key,
                });
                match current {
                    Err(status) => Err(status),
                    Ok(Some(now)) if v > c.read_version && v <= now => {
                        Ok((CorrectionStatus::Accepted, v, String::new()))
                    }
                    Ok(Some(now)) => Err(Status::invalid_argument(format!(
                        "accepted_version: the correction was filed against version {}; name the version that fixed it, after {} and at most {now} (publish the fix first)",
                        c.read_version, c.read_version
                    ))),
                    Ok(None) => Err(Status::invalid_argument(
                        "accepted_version: the record no longer exists; reject the correction instead",
                    )),
                }
            }
            Some(Answer::RejectedReason(why)) => bounded("rejected_reason", &why, true)
                .map(|()| (CorrectionStatus::Rejected, 0, why)),
            Some(Answer::NeedsInfoQuestion(q)) => bounded("needs_info_question", &q, true)
                .map(|()| (CorrectionStatus::NeedsInfo, 0, q)),
            None => Err(Status::invalid_argument(
                "answer: accepted_version, rejected_reason or needs_info_question",
            )),
        };
        let (status, version, text) = match checked {
            Ok(a) => a,
            Err(status) => {
                let reason = match status.code() {
                    Code::Unavailable => "STORE_UNAVAILABLE",
                    _ => "INVALID_ARGUMENT",
                };
                return Err(self.refuse(&p, method, &c.dataset, reason, status).await);
            }
        };
        let _permit = self.pipeline.gate().change().await;
        self.record(
            &p,
            method,
            &c.dataset,
            None,
            format!("correction {} answered {}", c.id, status.as_str_name()),
        )
        .await?;
        c.status = status.into();
        c.fixed_version = version;
        c.answer = text;
        c.answered_by = format!("{}@{}", p.client_id(), p.department());
        c.answered_at = Some(clock::to_timestamp(clock::now()));
        self.store().put_correction(&c).map_err(|e| {
            tracing::error!(error = %e, "storing a correction's answer failed");
            Status::unavailable("the answer was recorded but could not be stored; answer again")
        })?;
        metrics::counter!(
            "govshare_corrections_answered_total",
            "dataset" => dataset.name(),
            "answer" => status.as_str_name(),
        )
        .increment(1);
        count_overdue(self.store());
        Ok(Response::new(with_overdue(
            c,
            clock::unix_seconds(clock::now()),
        )))
    }

    async fn list_my_corrections(
        &self,
        req: Request<ListMyCorrectionsRequest>,
    ) -> Result<Response<ListCorrectionsResponse>, Status> {
        let method = "/govshare.v1.CorrectionService/ListMyCorrections";
        let p = self
            .pipeline
            .authenticate_reader(&req, method, EntryKind::Correction)
            .await?;
        let r = req.into_inner();
        let now = clock::unix_seconds(clock::now());
        let corrections: Vec<Correction> = self
            .all()?
            .into_iter()
            .filter(|c| c.reporter_department == p.department())
            .filter(|c| r.status == 0 || c.status == r.status)
            .map(|c| with_overdue(c, now))
            .collect();
        self.record(
            &p,
            method,
            "",
            None,
            format!("listed the {} corrections it filed", corrections.len()),
        )
        .await?;
        Ok(Response::new(page(corrections, r.page_size, &r.page_token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_skip_weekends() {
        use chrono::TimeZone;
        let friday = chrono::Local
            .with_ymd_and_hms(2026, 12, 4, 15, 0, 0)
            .unwrap();
        let due: chrono::DateTime<chrono::Local> = working_days_after(friday.into(), 5).into();
        assert_eq!(due.weekday(), chrono::Weekday::Fri);
        assert_eq!((due - friday).num_days(), 7);
        let due: chrono::DateTime<chrono::Local> = working_days_after(friday.into(), 1).into();
        assert_eq!(due.weekday(), chrono::Weekday::Mon);
    }
}
