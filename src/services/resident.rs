//! ResidentService: the resident tracker (after Estonia's Andmejälgija).
//! The government app's back end — a department with the
//! `resident-portal` role and no other — asks, on behalf of one resident it
//! authenticated, who used that resident's record: every pull that
//! returned or was refused it, and every correction filed about it, with
//! the department's and the purpose's names, the case and the fields —
//! never the operator, the token, the certificate or the node.
//!
//! Pulls under a grant with a disclosure delay are left out until the
//! delay recorded in their own entry has passed. Each call is a
//! `RESIDENT_READ` entry naming the resident only by a keyed digest.

use crate::audit::AuditLog;
use crate::audit::index::mentions;
use crate::audit::postings::Posting;
use crate::base::clock;
use crate::control::roles::Role;
use crate::datasets::Record;
use crate::pipeline::{Pipeline, decided_entry};
use crate::proto::resident_service_server::ResidentService;
use crate::proto::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 200;
/// Entries of the subject's postings examined per call at most.
const SCAN_BUDGET: usize = 10_000;

pub struct ResidentApi {
    pub pipeline: Arc<Pipeline>,
    pub log: AuditLog,
}

impl ResidentApi {
    async fn record(
        &self,
        p: &crate::auth::Principal,
        subject_digest: &str,
        refused: Option<&'static str>,
        message: String,
    ) -> Result<AuditReceipt, Status> {
        let mut e = decided_entry(p, METHOD, EntryKind::ResidentRead, refused);
        e.dataset = "population".into();
        e.query = Some(AuditQuery {
            keys: vec![subject_digest.to_string()],
            ..Default::default()
        });
        e.message = crate::base::text::cap_message(message);
        let receipt = match refused {
            Some(_) => self.pipeline.record(e).await?,
            None => self.pipeline.record_reader(p, e).await?,
        };
        Ok(receipt.to_proto())
    }
}

const METHOD: &str = "/govshare.v1.ResidentService/MyAccessHistory";

/// The uses of `subject` the resident may see now, newest first, from the
/// subject index: `page` of them before index `before`, and where to go on.
fn events(
    log: &AuditLog,
    subject: &str,
    before: Option<u64>,
    page: usize,
) -> anyhow::Result<(Vec<AuditEntry>, Option<u64>)> {
    let index = log.index();
    let now = clock::unix_seconds(clock::now());
    let mut before = before;
    let (mut out, mut examined) = (Vec::new(), 0usize);
    loop {
        let ids = index.newest_first(Some((Posting::Subject, subject)), before, 256)?;
        let done = ids.len() < 256;
        for i in ids {
            before = Some(i);
            examined += 1;
            if let Some(e) = index.entry(i)? {
                let withheld = e.disclosed_after.is_some_and(|t| t.seconds > now);
                if mentions(&e, subject) && !withheld {
                    out.push(e);
                }
            }
            if out.len() >= page || examined >= SCAN_BUDGET {
                return Ok((out, (i > 0).then_some(i)));
            }
        }
        if done {
            return Ok((out, None));
        }
    }
}

#[tonic::async_trait]
impl ResidentService for ResidentApi {
    async fn my_access_history(
        &self,
        req: Request<MyAccessHistoryRequest>,
    ) -> Result<Response<MyAccessHistoryResponse>, Status> {
        let p = self
            .pipeline
            .authenticate_reader(&req, METHOD, EntryKind::ResidentRead)
            .await?;
        let r = req.into_inner();
        let digest = self.pipeline.resident_digest(&r.id_number);
        if !p.has_role(Role::ResidentPortal) {
            self.record(&p, &digest, Some("ROLE_NOT_GRANTED"), "refused".into())
                .await?;
            return Err(Status::permission_denied(
                "the resident tracker answers only a department with the 'resident-portal' role",
            ));
        }
        let subject = match Person::parse_key(&r.id_number) {
            Ok(s) => s,
            Err(e) => {
                self.record(
                    &p,
                    &digest,
                    Some("INVALID_ARGUMENT"),
                    "not a citizen ID".into(),
                )
                .await?;
                return Err(Status::invalid_argument(format!(
                    "id_number: {e} (the tracker answers for one resident, by citizen ID)"
                )));
            }
        };
        let page = match r.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let before = if r.page_token.is_empty() {
            None
        } else {
            match r.page_token.parse::<u64>() {
                Ok(b) => Some(b),
                Err(_) => {
                    self.record(
                        &p,
                        &digest,
                        Some("INVALID_ARGUMENT"),
                        "bad page token".into(),
                    )
                    .await?;
                    return Err(Status::invalid_argument(
                        "page_token: pass back a next_page_token unchanged",
                    ));
                }
            }
        };
        let receipt = self
            .record(
                &p,
                &digest,
                None,
                format!("access history of resident {digest}"),
            )
            .await?;
        let log = self.log.clone();
        let found = tokio::task::spawn_blocking(move || events(&log, &subject, before, page))
            .await
            .map_err(|_| Status::unavailable("the audit log cannot be read; retry later"))?
            .map_err(|e| {
                tracing::error!(error = %e, "reading the subject index failed");
                Status::unavailable("the audit log cannot be read; retry later")
            })?;
        let (entries, next) = found;
        let snapshot =
            self.pipeline.directory().current().map_err(|_| {
                Status::unavailable("the gateway's store cannot be read; retry later")
            })?;
        let events = entries
            .into_iter()
            .map(|e| {
                let department = e.principal.map(|p| p.department).unwrap_or_default();
                AccessEvent {
                    time: e.time,
                    department: snapshot
                        .department(&department)
                        .map(|d| d.name.clone())
                        .unwrap_or_else(|| department.clone()),
                    department_id: department,
                    dataset: e.dataset,
                    operation: e.operation,
                    purpose_name: snapshot
                        .purposes()
                        .get(&e.purpose)
                        .map(|p| p.name.clone())
                        .unwrap_or_default(),
                    purpose: e.purpose,
                    case_id: e.case_id,
                    fields: e.fields.into_iter().map(|f| f.field).collect(),
                    decision: e.decision,
                }
            })
            .collect();
        Ok(Response::new(MyAccessHistoryResponse {
            events,
            next_page_token: next.map(|i| i.to_string()).unwrap_or_default(),
            receipt: Some(receipt),
        }))
    }
}
