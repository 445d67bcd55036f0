//! AdminService. `GetCatalog` is served; the management calls arrive with
//! the administrators' issue and answer UNIMPLEMENTED until then.

use crate::catalog::Catalog as CatalogConfig;
use crate::pipeline::Pipeline;
use crate::proto::admin_service_server::AdminService;
use crate::proto::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminApi {
    pub pipeline: Arc<Pipeline>,
    pub catalog: Arc<CatalogConfig>,
}

fn later(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "AdminService.{rpc} is not available in this release; see README 'Status'"
    ))
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_department(
        &self,
        _: Request<CreateDepartmentRequest>,
    ) -> Result<Response<Department>, Status> {
        Err(later("CreateDepartment"))
    }
    async fn list_departments(
        &self,
        _: Request<ListDepartmentsRequest>,
    ) -> Result<Response<ListDepartmentsResponse>, Status> {
        Err(later("ListDepartments"))
    }
    async fn suspend_department(
        &self,
        _: Request<SuspendDepartmentRequest>,
    ) -> Result<Response<Department>, Status> {
        Err(later("SuspendDepartment"))
    }
    async fn register_certificate(
        &self,
        _: Request<RegisterCertificateRequest>,
    ) -> Result<Response<RegisteredCertificate>, Status> {
        Err(later("RegisterCertificate"))
    }
    async fn issue_token(
        &self,
        _: Request<IssueTokenRequest>,
    ) -> Result<Response<IssueTokenResponse>, Status> {
        Err(later("IssueToken"))
    }
    async fn revoke_token(
        &self,
        _: Request<RevokeTokenRequest>,
    ) -> Result<Response<RevokeTokenResponse>, Status> {
        Err(later("RevokeToken"))
    }
    async fn rotate_signing_key(
        &self,
        _: Request<RotateSigningKeyRequest>,
    ) -> Result<Response<RotateSigningKeyResponse>, Status> {
        Err(later("RotateSigningKey"))
    }
    async fn create_grant(
        &self,
        _: Request<CreateGrantRequest>,
    ) -> Result<Response<Grant>, Status> {
        Err(later("CreateGrant"))
    }
    async fn revoke_grant(
        &self,
        _: Request<RevokeGrantRequest>,
    ) -> Result<Response<Grant>, Status> {
        Err(later("RevokeGrant"))
    }
    async fn list_grants(
        &self,
        _: Request<ListGrantsRequest>,
    ) -> Result<Response<ListGrantsResponse>, Status> {
        Err(later("ListGrants"))
    }
    async fn submit_access_request(
        &self,
        _: Request<SubmitAccessRequestRequest>,
    ) -> Result<Response<AccessRequest>, Status> {
        Err(later("SubmitAccessRequest"))
    }
    async fn list_access_requests(
        &self,
        _: Request<ListAccessRequestsRequest>,
    ) -> Result<Response<ListAccessRequestsResponse>, Status> {
        Err(later("ListAccessRequests"))
    }
    async fn decide_access_request(
        &self,
        _: Request<DecideAccessRequestRequest>,
    ) -> Result<Response<AccessRequest>, Status> {
        Err(later("DecideAccessRequest"))
    }

    /// Any authenticated caller may read the catalog.
    async fn get_catalog(
        &self,
        req: Request<GetCatalogRequest>,
    ) -> Result<Response<Catalog>, Status> {
        self.pipeline
            .authenticate(&req, "/govshare.v1.AdminService/GetCatalog")
            .await?;
        Ok(Response::new(self.catalog.to_proto()))
    }
}
