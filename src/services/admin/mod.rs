//! AdminService: departments, credentials, grants and access requests.
//!
//! Every call goes through [`AdminApi::call`]: authenticate, check the role,
//! plan the change against the store, write the `ADMIN` audit entry (with the
//! change's before/after) durably, and only then apply the planned writes.
//! A change therefore never exists without its audit record. Admin writes are
//! serialized by one lock: they are rare, and it keeps each
//! read-check-write (e.g. deciding a pending request) free of races.

mod credentials;
mod departments;
mod grants;
mod purposes;
mod snapshot;

pub use snapshot::{SnapshotSettings, remove_stale as remove_stale_snapshots};

use crate::auth::Principal;
use crate::control::certs::ClientCa;
use crate::control::directory::Snapshot;
use crate::control::keys::{Retire, random_id};
use crate::control::policy::{self, Checked, Rules, Scope};
use crate::control::roles::Role;
use crate::control::store::Store;
use crate::pipeline::{Pipeline, principal_entry};
use crate::proto::admin_service_server::AdminService;
use crate::proto::json::{self, Named};
use crate::proto::storage::SigningKey;
use crate::proto::*;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

pub struct AdminApi {
    pipeline: Arc<Pipeline>,
    log: crate::audit::AuditLog,
    store: Store,
    client_ca: ClientCa,
    settings: Settings,
    serial: tokio::sync::Mutex<()>,
}

/// The configured bounds administrators work within.
pub struct Settings {
    /// Longest token lifetime; also how long a rotated-out key verifies.
    pub max_token_lifetime: Duration,
    /// Time an admin has to decide a pending access request.
    pub request_deadline: Duration,
    pub snapshot: SnapshotSettings,
}

/// Who may make a call.
#[derive(Clone, Copy)]
enum Who {
    Admin,
    Puller,
    /// Any authenticated caller; the handler narrows what it sees.
    Anyone,
}

/// A store write, applied only after the call's audit entry is durable.
enum Write {
    Department(Department),
    Certificate(RegisteredCertificate),
    Grant(Grant),
    AccessRequest(AccessRequest),
    Token(TokenInfo),
    Purpose(Purpose),
    SigningKey {
        key: SigningKey,
        retire_previous: bool,
    },
    RestoreConfirmed,
}

/// A planned admin call: the response, what it changes, and the writes.
struct Plan<R> {
    response: R,
    change: Option<AdminChange>,
    writes: Vec<Write>,
}

impl<R> Plan<R> {
    fn read(response: R) -> Self {
        Self {
            response,
            change: None,
            writes: Vec::new(),
        }
    }
}

impl<R: Named + Clone> Plan<R> {
    /// A change to one stored object: audited with its before/after, stored
    /// by `write`, and returned to the caller.
    fn stored(object: &str, id: &str, before: Option<&R>, after: R, write: fn(R) -> Write) -> Self {
        Self {
            change: Some(change(object, id, before, Some(&after))),
            writes: vec![write(after.clone())],
            response: after,
        }
    }
}

/// The audit record of one object's change, as canonical proto JSON.
fn change<M: Named>(object: &str, id: &str, before: Option<&M>, after: Option<&M>) -> AdminChange {
    AdminChange {
        object: object.into(),
        object_id: id.into(),
        before_json: before.map(json::to_string).unwrap_or_default(),
        after_json: after.map(json::to_string).unwrap_or_default(),
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "admin store error");
    Status::unavailable("the gateway's store failed; nothing was changed, retry later")
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", random_id())
}

/// A short reason code for the audit entry of a refused call.
fn reason_code(code: Code) -> &'static str {
    match code {
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Unavailable => "STORE_UNAVAILABLE",
        _ => "INTERNAL",
    }
}

impl AdminApi {
    pub fn new(
        pipeline: Arc<Pipeline>,
        log: crate::audit::AuditLog,
        client_ca: ClientCa,
        settings: Settings,
    ) -> Self {
        Self {
            store: pipeline.directory().store().clone(),
            pipeline,
            log,
            client_ca,
            settings,
            serial: tokio::sync::Mutex::new(()),
        }
    }

    /// The control plane as of now (planning reads it; writes go to the store).
    fn snapshot(&self) -> Result<Arc<Snapshot>, Status> {
        self.pipeline.directory().current().map_err(internal)
    }

    /// Judges a grant's or request's scope for `department`.
    fn check_scope(&self, department: &str, s: &Scope<'_>) -> Result<Checked, Status> {
        let snapshot = self.snapshot()?;
        let exists = |code: &str| self.pipeline.region_exists(code);
        let rules = Rules {
            catalog: self.pipeline.directory().catalog(),
            purposes: snapshot.purposes(),
            region_exists: &exists,
        };
        policy::check(&rules, department, s).map_err(Status::invalid_argument)
    }

    async fn call<T, R>(
        &self,
        req: Request<T>,
        method: &'static str,
        who: Who,
        plan: impl FnOnce(&Self, &Principal, T) -> Result<Plan<R>, Status>,
    ) -> Result<Response<R>, Status> {
        let principal = self.pipeline.authenticate(&req, method).await?;
        let _serial = self.serial.lock().await;
        let needed = match who {
            Who::Admin => Some(Role::Admin),
            Who::Puller => Some(Role::Puller),
            Who::Anyone => None,
        };
        let planned = match needed {
            Some(role) if !principal.has_role(role) => Err(Status::permission_denied(format!(
                "this call needs the '{}' role on your token",
                role.name()
            ))),
            _ => plan(self, &principal, req.into_inner()),
        };
        let plan = match planned {
            Ok(p) => p,
            Err(status) => {
                let role_missing = status.code() == Code::PermissionDenied
                    && needed.is_some_and(|r| !principal.has_role(r));
                return Err(self.refuse(&principal, method, role_missing, status).await);
            }
        };
        // A change and its entry go together: a snapshot copies both or
        // neither.
        let _permit = match plan.writes.is_empty() {
            true => None,
            false => Some(self.pipeline.gate().change().await),
        };
        let mut entry = principal_entry(&principal, method, EntryKind::Admin);
        entry.decision = AuditDecision::Allow.into();
        entry.change = plan.change.clone();
        self.pipeline.record(entry).await?;
        if let Err(e) = self.apply(plan.writes) {
            let mut failed = principal_entry(&principal, method, EntryKind::Admin);
            failed.decision = AuditDecision::Deny.into();
            failed.reason_code = "APPLY_FAILED".into();
            failed.message = "the change above was recorded but could not be stored".into();
            self.pipeline.record(failed).await?;
            return Err(internal(e));
        }
        Ok(Response::new(plan.response))
    }

    /// Audits a refused call (`role_missing`: for want of the call's role)
    /// and returns the status to answer with.
    async fn refuse(
        &self,
        principal: &Principal,
        method: &str,
        role_missing: bool,
        status: Status,
    ) -> Status {
        let mut entry = principal_entry(principal, method, EntryKind::Admin);
        entry.decision = AuditDecision::Deny.into();
        entry.reason_code = if role_missing {
            "ROLE_NOT_GRANTED".into()
        } else {
            reason_code(status.code()).into()
        };
        let message = crate::base::text::cap_message(status.message().to_string());
        entry.message.clone_from(&message);
        match self.pipeline.record(entry).await {
            Ok(_) => Status::new(status.code(), message),
            Err(s) => s,
        }
    }

    fn apply(&self, writes: Vec<Write>) -> anyhow::Result<()> {
        let store = &self.store;
        for w in writes {
            match w {
                Write::Department(d) => store.put_department(&d)?,
                Write::Certificate(c) => store.put_certificate(&c)?,
                Write::Grant(g) => store.put_grant(&g)?,
                Write::AccessRequest(r) => store.put_access_request(&r)?,
                Write::Token(t) => store.put_token(&t)?,
                Write::Purpose(p) => store.put_purpose(&p)?,
                Write::SigningKey {
                    key,
                    retire_previous,
                } => self.pipeline.authenticator().keys().install(
                    &key,
                    if retire_previous {
                        Retire::Now
                    } else {
                        Retire::After(self.settings.max_token_lifetime)
                    },
                )?,
                Write::RestoreConfirmed => store.clear_restore_hold()?,
            }
        }
        store.sync()
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_department(
        &self,
        req: Request<CreateDepartmentRequest>,
    ) -> Result<Response<Department>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/CreateDepartment",
            Who::Admin,
            Self::plan_create_department,
        )
        .await
    }
    async fn list_departments(
        &self,
        req: Request<ListDepartmentsRequest>,
    ) -> Result<Response<ListDepartmentsResponse>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/ListDepartments",
            Who::Admin,
            Self::plan_list_departments,
        )
        .await
    }
    async fn suspend_department(
        &self,
        req: Request<SuspendDepartmentRequest>,
    ) -> Result<Response<Department>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/SuspendDepartment",
            Who::Admin,
            Self::plan_suspend_department,
        )
        .await
    }
    async fn register_certificate(
        &self,
        req: Request<RegisterCertificateRequest>,
    ) -> Result<Response<RegisteredCertificate>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/RegisterCertificate",
            Who::Admin,
            Self::plan_register_certificate,
        )
        .await
    }
    async fn issue_token(
        &self,
        req: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/IssueToken",
            Who::Admin,
            Self::plan_issue_token,
        )
        .await
    }
    async fn revoke_token(
        &self,
        req: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/RevokeToken",
            Who::Admin,
            Self::plan_revoke_token,
        )
        .await
    }
    async fn rotate_signing_key(
        &self,
        req: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<RotateSigningKeyResponse>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/RotateSigningKey",
            Who::Admin,
            Self::plan_rotate_signing_key,
        )
        .await
    }
    async fn create_grant(
        &self,
        req: Request<CreateGrantRequest>,
    ) -> Result<Response<CreateGrantResponse>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/CreateGrant",
            Who::Admin,
            Self::plan_create_grant,
        )
        .await
    }
    async fn revoke_grant(
        &self,
        req: Request<RevokeGrantRequest>,
    ) -> Result<Response<Grant>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/RevokeGrant",
            Who::Admin,
            Self::plan_revoke_grant,
        )
        .await
    }
    async fn list_grants(
        &self,
        req: Request<ListGrantsRequest>,
    ) -> Result<Response<ListGrantsResponse>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/ListGrants",
            Who::Anyone,
            Self::plan_list_grants,
        )
        .await
    }
    async fn submit_access_request(
        &self,
        req: Request<SubmitAccessRequestRequest>,
    ) -> Result<Response<AccessRequest>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/SubmitAccessRequest",
            Who::Puller,
            Self::plan_submit_access_request,
        )
        .await
    }
    async fn list_access_requests(
        &self,
        req: Request<ListAccessRequestsRequest>,
    ) -> Result<Response<ListAccessRequestsResponse>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/ListAccessRequests",
            Who::Anyone,
            Self::plan_list_access_requests,
        )
        .await
    }
    async fn decide_access_request(
        &self,
        req: Request<DecideAccessRequestRequest>,
    ) -> Result<Response<AccessRequest>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/DecideAccessRequest",
            Who::Admin,
            Self::plan_decide_access_request,
        )
        .await
    }
    /// Any authenticated caller may read the catalog.
    async fn get_catalog(
        &self,
        req: Request<GetCatalogRequest>,
    ) -> Result<Response<Catalog>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/GetCatalog",
            Who::Anyone,
            Self::plan_get_catalog,
        )
        .await
    }
    async fn register_purpose(
        &self,
        req: Request<RegisterPurposeRequest>,
    ) -> Result<Response<Purpose>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/RegisterPurpose",
            Who::Admin,
            Self::plan_register_purpose,
        )
        .await
    }
    async fn retire_purpose(
        &self,
        req: Request<RetirePurposeRequest>,
    ) -> Result<Response<Purpose>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/RetirePurpose",
            Who::Admin,
            Self::plan_retire_purpose,
        )
        .await
    }
    async fn update_department(
        &self,
        req: Request<UpdateDepartmentRequest>,
    ) -> Result<Response<Department>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/UpdateDepartment",
            Who::Admin,
            Self::plan_update_department,
        )
        .await
    }
    async fn list_tokens(
        &self,
        req: Request<ListTokensRequest>,
    ) -> Result<Response<ListTokensResponse>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/ListTokens",
            Who::Admin,
            Self::plan_list_tokens,
        )
        .await
    }
    async fn list_certificates(
        &self,
        req: Request<ListCertificatesRequest>,
    ) -> Result<Response<ListCertificatesResponse>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/ListCertificates",
            Who::Admin,
            Self::plan_list_certificates,
        )
        .await
    }
    async fn revoke_certificate(
        &self,
        req: Request<RevokeCertificateRequest>,
    ) -> Result<Response<RegisteredCertificate>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/RevokeCertificate",
            Who::Admin,
            Self::plan_revoke_certificate,
        )
        .await
    }

    type SaveSnapshotStream = snapshot::Chunks;

    async fn save_snapshot(
        &self,
        req: Request<SaveSnapshotRequest>,
    ) -> Result<Response<Self::SaveSnapshotStream>, Status> {
        self.save(req).await
    }

    async fn confirm_restore(
        &self,
        req: Request<ConfirmRestoreRequest>,
    ) -> Result<Response<ConfirmRestoreResponse>, Status> {
        self.call(
            req,
            "/govshare.v1.AdminService/ConfirmRestore",
            Who::Admin,
            Self::plan_confirm_restore,
        )
        .await
    }
}

/// A reason an administrator must give, trimmed and bounded.
fn required_reason(reason: &str, what: &str) -> Result<String, Status> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(Status::invalid_argument(format!("reason: say why {what}")));
    }
    if r.len() > 1024 {
        return Err(Status::invalid_argument("reason: at most 1024 bytes"));
    }
    Ok(r.to_string())
}

/// Who acted, as grants, requests and credentials record it: `client@department`.
fn actor(p: &Principal) -> String {
    format!("{}@{}", p.client_id(), p.department())
}
