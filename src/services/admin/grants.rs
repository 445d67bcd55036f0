//! Grants and the access-request workflow (申请 → 审批). Both are judged by
//! [`policy::check`], so a request can never ask for what a grant could not
//! hold.

use super::{AdminApi, Plan, Write, actor, change, internal, new_id, required_reason};
use crate::auth::Principal;
use crate::base::clock;
use crate::control::authz::{ALL_REGIONS, whole_jurisdiction};
use crate::control::policy::Scope;
use crate::control::roles::Role;
use crate::proto::*;
use tonic::Status;

fn scope_of_grant(g: &Grant) -> Scope<'_> {
    Scope {
        dataset: &g.dataset,
        operations: &g.operations,
        fields: &g.fields,
        regions: &g.regions,
        purposes: &g.purposes,
        not_before: g.not_before.as_ref(),
        not_after: g.not_after.as_ref(),
        disclosure_delay_days: g.disclosure_delay_days,
    }
}

fn scope_of_request(r: &AccessRequest) -> Scope<'_> {
    Scope {
        dataset: &r.dataset,
        operations: &r.operations,
        fields: &r.fields,
        regions: &r.regions,
        purposes: &r.purposes,
        not_before: r.not_before.as_ref(),
        not_after: r.not_after.as_ref(),
        disclosure_delay_days: r.disclosure_delay_days,
    }
}

/// The grant an approved request becomes.
/// `regions` with `*` resolved to the grantee's jurisdiction now; a
/// department without one has nothing `*` could stand for.
fn resolved(regions: &[String], grantee: &Department) -> Result<Vec<String>, Status> {
    let out = whole_jurisdiction(regions, &grantee.jurisdiction);
    if out.is_empty() {
        return Err(Status::failed_precondition(format!(
            "department '{}' has no jurisdiction, so '*' would grant no region; give it one first (UpdateDepartment)",
            grantee.id
        )));
    }
    Ok(out)
}

/// `grantee` as it is when the grant is made: a `*` request becomes
/// exactly the regions it stood for then.
fn grant_from_request(
    r: &AccessRequest,
    approved_by: &str,
    grantee: &Department,
) -> Result<Grant, Status> {
    Ok(Grant {
        id: new_id("g"),
        department: r.department.clone(),
        dataset: r.dataset.clone(),
        operations: r.operations.clone(),
        fields: r.fields.clone(),
        regions: resolved(&r.regions, grantee)?,
        purposes: r.purposes.clone(),
        not_before: r.not_before,
        not_after: r.not_after,
        limits: r.limits,
        legal_basis: r.legal_basis.clone(),
        created_by: r.submitted_by.clone(),
        approved_by: approved_by.into(),
        access_request_id: r.id.clone(),
        created_at: Some(clock::to_timestamp(clock::now())),
        disclosure_delay_days: r.disclosure_delay_days,
        ..Default::default()
    })
}

/// Whether every requested region lies inside a department's jurisdiction.
fn within(jurisdiction: &[String], regions: &[String]) -> bool {
    regions.iter().all(|r| {
        jurisdiction
            .iter()
            .any(|j| j == ALL_REGIONS || (r != ALL_REGIONS && r.starts_with(j.as_str())))
    })
}

/// Whether `asked` is no looser than any limit `held` grants set: with
/// several grants the most permissive limit applies, so a self-approved
/// grant without limits (or with larger ones) would lift the limits an
/// administrator put on the department's other grants of the dataset.
/// The limits of the department's grants `held` that `asked` would lift,
/// in words: with several grants the most permissive limit applies, so a
/// self-approved grant must set limits no looser (0 is no limit).
fn looser_than(asked: Option<&GrantLimits>, held: &[Grant]) -> Vec<String> {
    let asked = asked.copied().unwrap_or_default();
    let mut out = Vec::new();
    for g in held {
        let h = g.limits.unwrap_or_default();
        for (name, a, h) in [
            (
                "max_records_per_call",
                u64::from(asked.max_records_per_call),
                u64::from(h.max_records_per_call),
            ),
            (
                "max_records_per_day",
                asked.max_records_per_day,
                h.max_records_per_day,
            ),
            (
                "max_calls_per_minute",
                u64::from(asked.max_calls_per_minute),
                u64::from(h.max_calls_per_minute),
            ),
        ] {
            if h != 0 && (a == 0 || a > h) {
                let asked = if a == 0 {
                    "none".to_string()
                } else {
                    a.to_string()
                };
                out.push(format!(
                    "{name}: your grant '{}' sets {h} and this request {asked}; ask for {h} or less to be granted at once",
                    g.id
                ));
            }
        }
    }
    out
}

/// Free text an approver reads: required and bounded.
fn bounded_text(field: &str, v: &str, hint: &str) -> Result<(), Status> {
    if v.trim().is_empty() {
        return Err(Status::invalid_argument(format!("{field}: {hint}")));
    }
    if v.len() > 4096 {
        return Err(Status::invalid_argument(format!(
            "{field}: at most 4096 bytes"
        )));
    }
    Ok(())
}

impl AdminApi {
    /// Nobody decides about their own department (scopes.md, "Separation of
    /// duties").
    fn not_own(p: &Principal, department: &str, what: &str) -> Result<(), Status> {
        if department == p.department() {
            return Err(Status::failed_precondition(format!(
                "an administrator cannot {what} for their own department '{department}'; an administrator of another department must"
            )));
        }
        Ok(())
    }

    /// Grants only unconditionally shared views directly. A grant that
    /// carries a conditional view exists only through an access request
    /// approved by an administrator of another department than the
    /// requester's: here it is filed on the department's behalf and returned
    /// pending for a second administrator (four eyes).
    pub(super) fn plan_create_grant(
        &self,
        p: &Principal,
        r: CreateGrantRequest,
    ) -> Result<Plan<CreateGrantResponse>, Status> {
        let asked = r
            .grant
            .ok_or_else(|| Status::invalid_argument("grant: the grant to create is missing"))?;
        let grantee = self.existing_department(&asked.department)?;
        Self::not_own(p, &asked.department, "create a grant")?;
        if self
            .pipeline
            .directory()
            .roles()
            .is_portal(&asked.department)
        {
            return Err(Status::failed_precondition(format!(
                "'{}' is a resident portal: it asks the resident tracker and pulls nothing, so it holds no grant",
                asked.department
            )));
        }
        let checked = self.check_scope(&asked.department, &scope_of_grant(&asked))?;
        let now = clock::now();
        if !checked.conditional.is_empty() {
            bounded_text(
                "legal_basis",
                &asked.legal_basis,
                &format!(
                    "{} are conditionally shared; cite the legal basis for the request a second administrator will decide",
                    checked.conditional.join(", ")
                ),
            )?;
            let pending = AccessRequest {
                id: new_id("ar"),
                department: asked.department,
                dataset: checked.dataset.name().into(),
                operations: asked.operations,
                fields: asked.fields,
                regions: asked.regions,
                purposes: asked.purposes,
                not_before: asked.not_before,
                not_after: asked.not_after,
                limits: asked.limits,
                disclosure_delay_days: asked.disclosure_delay_days,
                justification: format!(
                    "filed through CreateGrant by {}: {} need a second administrator",
                    actor(p),
                    checked.conditional.join(", ")
                ),
                legal_basis: asked.legal_basis,
                status: AccessRequestStatus::Pending.into(),
                submitted_by: actor(p),
                submitted_cert: p.cert_thumbprint().into(),
                submitted_at: Some(clock::to_timestamp(now)),
                respond_by: Some(clock::to_timestamp(now + self.settings.request_deadline)),
                ..Default::default()
            };
            return Ok(Plan {
                change: Some(change("access_request", &pending.id, None, Some(&pending))),
                writes: vec![Write::AccessRequest(pending.clone())],
                response: CreateGrantResponse {
                    grant: None,
                    pending_request: Some(pending),
                },
            });
        }
        let g = Grant {
            id: new_id("g"),
            department: asked.department,
            dataset: checked.dataset.name().into(),
            operations: asked.operations,
            fields: asked.fields,
            regions: resolved(&asked.regions, &grantee)?,
            purposes: asked.purposes,
            not_before: asked.not_before,
            not_after: asked.not_after,
            limits: asked.limits,
            legal_basis: asked.legal_basis,
            created_by: actor(p),
            approved_by: actor(p),
            created_at: Some(clock::to_timestamp(now)),
            ..Default::default()
        };
        Ok(Plan {
            change: Some(change("grant", &g.id, None, Some(&g))),
            writes: vec![Write::Grant(g.clone())],
            response: CreateGrantResponse {
                grant: Some(g),
                pending_request: None,
            },
        })
    }

    /// Revocation moves the policy epoch, so the very next request on every
    /// node judges without the grant (see [`crate::control::directory`]).
    pub(super) fn plan_revoke_grant(
        &self,
        p: &Principal,
        r: RevokeGrantRequest,
    ) -> Result<Plan<Grant>, Status> {
        let before = self.store.grant(&r.id).map_err(internal)?.ok_or_else(|| {
            Status::not_found(format!(
                "grant '{}' does not exist",
                crate::base::text::cap_for_message(&r.id)
            ))
        })?;
        Self::not_own(p, &before.department, "revoke a grant")?;
        if before.revoked_at.is_some() {
            return Err(Status::failed_precondition(format!(
                "grant '{}' is already revoked",
                r.id
            )));
        }
        required_reason(&r.reason, "the grant is revoked")?;
        let after = Grant {
            revoked_at: Some(clock::to_timestamp(clock::now())),
            revoked_by: actor(p),
            ..before.clone()
        };
        Ok(Plan::stored(
            "grant",
            &r.id,
            Some(&before),
            after,
            Write::Grant,
        ))
    }

    /// Administrators list any department's grants; other callers see only
    /// their own department's.
    pub(super) fn plan_list_grants(
        &self,
        p: &Principal,
        r: ListGrantsRequest,
    ) -> Result<Plan<ListGrantsResponse>, Status> {
        let department = own_unless_admin(p, &r.department)?;
        let store = &self.store;
        let all = match department {
            Some(d) => store.grants_of(d),
            None => store.all_grants(),
        }
        .map_err(internal)?;
        let grants = all
            .into_iter()
            .filter(|g| r.dataset.is_empty() || g.dataset == r.dataset)
            .filter(|g| r.include_revoked || g.revoked_at.is_none())
            .collect();
        Ok(Plan::read(ListGrantsResponse { grants }))
    }

    /// A puller asks for a scope for its own department. A request is
    /// granted at once only when every field view is unconditional, every
    /// region lies inside the department's jurisdiction, every purpose is
    /// registered, its limits are no looser than the department's other
    /// grants of the dataset, and the department is not an admin or
    /// auditor department (whose data access an outside administrator must
    /// see); anything else waits for an administrator of another
    /// department. `not_shared` fields are refused here.
    pub(super) fn plan_submit_access_request(
        &self,
        p: &Principal,
        r: SubmitAccessRequestRequest,
    ) -> Result<Plan<AccessRequest>, Status> {
        let asked = r.request.ok_or_else(|| {
            Status::invalid_argument("request: the access request to submit is missing")
        })?;
        if !asked.department.is_empty() && asked.department != p.department() {
            return Err(Status::permission_denied(format!(
                "department: you may request access only for your own department '{}'",
                p.department()
            )));
        }
        let checked = self.check_scope(p.department(), &scope_of_request(&asked))?;
        bounded_text(
            "justification",
            &asked.justification,
            "say what the data is for (the business need an approver reads)",
        )?;
        if asked.legal_basis.len() > 4096 {
            return Err(Status::invalid_argument("legal_basis: at most 4096 bytes"));
        }
        let department = self.existing_department(p.department())?;
        let in_jurisdiction = within(&department.jurisdiction, &asked.regions);
        let roles = self.pipeline.directory().roles();
        let privileged =
            roles.admin.contains(&department.id) || roles.auditor.contains(&department.id);
        let held: Vec<Grant> = self
            .store
            .grants_of(&department.id)
            .map_err(internal)?
            .into_iter()
            .filter(|g| g.dataset == checked.dataset.name() && g.revoked_at.is_none())
            .collect();
        let mut refused_because = Vec::new();
        if !checked.conditional.is_empty() {
            refused_because.push(format!(
                "{} need an administrator of another department to decide (conditionally shared views, a disclosure delay)",
                checked.conditional.join(", ")
            ));
        }
        if !in_jurisdiction {
            refused_because.push(format!(
                "regions: not all lie inside your department's jurisdiction ({})",
                department.jurisdiction.join(", ")
            ));
        }
        refused_because.extend(looser_than(asked.limits.as_ref(), &held));
        if privileged {
            refused_because.push(
                "department: an admin or auditor department's data access is always decided by an administrator"
                    .into(),
            );
        }
        let now = clock::now();
        let mut req = AccessRequest {
            id: new_id("ar"),
            department: p.department().into(),
            dataset: checked.dataset.name().into(),
            submitted_by: actor(p),
            submitted_cert: p.cert_thumbprint().into(),
            submitted_at: Some(clock::to_timestamp(now)),
            status: AccessRequestStatus::Pending.into(),
            respond_by: Some(clock::to_timestamp(now + self.settings.request_deadline)),
            ..asked
        };
        req.overdue = false;
        req.auto_approved = false;
        req.decided_by.clear();
        req.decision_reason.clear();
        req.grant_id.clear();
        req.decided_at = None;
        let mut writes = Vec::new();
        req.auto_approval_refused_because =
            crate::base::text::cap_message(refused_because.join("; "));
        if refused_because.is_empty() {
            let g = grant_from_request(
                &req,
                "auto-approved: unconditional, inside the jurisdiction",
                &department,
            )?;
            req.status = AccessRequestStatus::Approved.into();
            req.auto_approved = true;
            req.decided_by = "auto".into();
            req.decided_at = req.submitted_at;
            req.decision_reason = "every field view is unconditionally shared, every region lies inside the department's jurisdiction and every purpose is registered".into();
            req.grant_id.clone_from(&g.id);
            req.respond_by = None;
            writes.push(Write::Grant(g));
        }
        let id = req.id.clone();
        let mut plan = Plan::stored("access_request", &id, None, req, Write::AccessRequest);
        plan.writes.extend(writes);
        Ok(plan)
    }

    /// Administrators see every request; a department sees its own.
    pub(super) fn plan_list_access_requests(
        &self,
        p: &Principal,
        r: ListAccessRequestsRequest,
    ) -> Result<Plan<ListAccessRequestsResponse>, Status> {
        let department = own_unless_admin(p, &r.department)?;
        let now = clock::unix_seconds(clock::now());
        let requests = self
            .store
            .access_requests()
            .map_err(internal)?
            .into_iter()
            .filter(|a| department.is_none_or(|d| a.department == d))
            .filter(|a| r.status == 0 || a.status == r.status)
            .map(|mut a| {
                a.overdue = a.status == AccessRequestStatus::Pending as i32
                    && a.respond_by.is_some_and(|t| t.seconds < now);
                a
            })
            .collect();
        Ok(Plan::read(ListAccessRequestsResponse { requests }))
    }

    pub(super) fn plan_decide_access_request(
        &self,
        p: &Principal,
        r: DecideAccessRequestRequest,
    ) -> Result<Plan<AccessRequest>, Status> {
        let before = self
            .store
            .access_request(&r.id)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "access request '{}' does not exist",
                    crate::base::text::cap_for_message(&r.id)
                ))
            })?;
        if before.status != AccessRequestStatus::Pending as i32 {
            return Err(Status::failed_precondition(format!(
                "access request '{}' is already decided",
                r.id
            )));
        }
        if before.department == p.department() {
            return Err(Status::failed_precondition(
                "this request is for your own department; an administrator of another department must decide it",
            ));
        }
        if before.submitted_by == actor(p)
            || (!before.submitted_cert.is_empty() && before.submitted_cert == p.cert_thumbprint())
        {
            return Err(Status::failed_precondition(
                "you filed this request; a second administrator must decide it (four eyes)",
            ));
        }
        if !r.approve {
            required_reason(
                &r.reason,
                "the request is rejected, so the department can act on it",
            )?;
        }
        let mut after = AccessRequest {
            decided_by: actor(p),
            decided_at: Some(clock::to_timestamp(clock::now())),
            decision_reason: r.reason.clone(),
            overdue: false,
            ..before.clone()
        };
        let mut writes = Vec::new();
        if r.approve {
            // The catalog may have changed since submission: judge it again.
            self.check_scope(&before.department, &scope_of_request(&before))?;
            let grantee = self.existing_department(&before.department)?;
            let g = grant_from_request(&before, &actor(p), &grantee)?;
            after.status = AccessRequestStatus::Approved.into();
            after.grant_id.clone_from(&g.id);
            writes.push(Write::Grant(g));
        } else {
            after.status = AccessRequestStatus::Rejected.into();
        }
        let mut plan = Plan::stored(
            "access_request",
            &r.id,
            Some(&before),
            after,
            Write::AccessRequest,
        );
        plan.writes.extend(writes);
        Ok(plan)
    }
}

/// The department a listing may cover: an admin's filter (empty = all), or
/// the caller's own department for everyone else.
fn own_unless_admin<'a>(p: &'a Principal, asked: &'a str) -> Result<Option<&'a str>, Status> {
    if p.has_role(Role::Admin) {
        return Ok((!asked.is_empty()).then_some(asked));
    }
    if !asked.is_empty() && asked != p.department() {
        return Err(Status::permission_denied(
            "only administrators may list another department's grants or requests",
        ));
    }
    Ok(Some(p.department()))
}
