//! AdminService: departments, credentials, grants and access requests.
//!
//! Every call goes through [`AdminApi::call`]: authenticate, check the role,
//! plan the change against the store, write the `ADMIN` audit entry (with the
//! change's before/after) durably, and only then apply the planned writes.
//! A change therefore never exists without its audit record. Admin writes are
//! serialized by one lock: they are rare, and it keeps each
//! read-check-write (e.g. deciding a pending request) free of races.

mod credentials;
mod grants;

use crate::auth::token::random_id;
use crate::auth::{Principal, Role};
use crate::catalog::Catalog as CatalogConfig;
use crate::certs::ClientCa;
use crate::json::{self, Named};
use crate::pipeline::{Pipeline, principal_entry};
use crate::proto::admin_service_server::AdminService;
use crate::proto::storage::{RevokedToken, SigningKey};
use crate::proto::*;
use std::sync::Arc;
use std::time::Duration;
use tonic::{Code, Request, Response, Status};

pub struct AdminApi {
    pipeline: Arc<Pipeline>,
    catalog: Arc<CatalogConfig>,
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
    RevokedToken(RevokedToken),
    SigningKey(SigningKey),
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
    Status::internal("internal error; the gateway log has details")
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
        _ => "INTERNAL",
    }
}

impl AdminApi {
    pub fn new(
        pipeline: Arc<Pipeline>,
        catalog: Arc<CatalogConfig>,
        client_ca: ClientCa,
        settings: Settings,
    ) -> Self {
        Self {
            pipeline,
            catalog,
            client_ca,
            settings,
            serial: tokio::sync::Mutex::new(()),
        }
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
        let mut entry = principal_entry(&principal, method, EntryKind::Admin);
        let plan = match planned {
            Ok(p) => p,
            Err(status) => {
                entry.decision = AuditDecision::Deny.into();
                entry.reason_code = if status.code() == Code::PermissionDenied
                    && needed.is_some_and(|r| !principal.has_role(r))
                {
                    "ROLE_NOT_GRANTED".into()
                } else {
                    reason_code(status.code()).into()
                };
                entry.message = status.message().into();
                self.pipeline.record(entry).await?;
                return Err(status);
            }
        };
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

    fn apply(&self, writes: Vec<Write>) -> anyhow::Result<()> {
        let store = self.pipeline.store();
        for w in writes {
            match w {
                Write::Department(d) => store.put_department(&d)?,
                Write::Certificate(c) => store.put_certificate(&c)?,
                Write::Grant(g) => store.put_grant(&g)?,
                Write::AccessRequest(r) => store.put_access_request(&r)?,
                Write::RevokedToken(t) => store.revoke_token(&t)?,
                Write::SigningKey(k) => self
                    .pipeline
                    .authenticator()
                    .keys()
                    .install(&k, self.settings.max_token_lifetime)?,
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
    ) -> Result<Response<Grant>, Status> {
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
            |api, _, _| Ok(Plan::read(api.catalog.to_proto())),
        )
        .await
    }
}
