//! AuditService. The auditors' API (queries, proofs, export) arrives with the
//! auditors' issue; until then every RPC answers UNIMPLEMENTED.

use crate::proto::audit_service_server::AuditService;
use crate::proto::*;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct AuditApi;

fn later(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "AuditService.{rpc} is not available in this release; see README 'Status'"
    ))
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    type QueryAuditStream = ReceiverStream<Result<AuditPage, Status>>;
    type TailAuditStream = ReceiverStream<Result<AuditEntry, Status>>;
    type SubjectAccessHistoryStream = ReceiverStream<Result<AuditPage, Status>>;
    type ExportAuditStream = ReceiverStream<Result<ExportChunk, Status>>;

    async fn query_audit(
        &self,
        _: Request<QueryAuditRequest>,
    ) -> Result<Response<Self::QueryAuditStream>, Status> {
        Err(later("QueryAudit"))
    }
    async fn tail_audit(
        &self,
        _: Request<TailAuditRequest>,
    ) -> Result<Response<Self::TailAuditStream>, Status> {
        Err(later("TailAudit"))
    }
    async fn subject_access_history(
        &self,
        _: Request<SubjectAccessHistoryRequest>,
    ) -> Result<Response<Self::SubjectAccessHistoryStream>, Status> {
        Err(later("SubjectAccessHistory"))
    }
    async fn get_checkpoint(
        &self,
        _: Request<GetCheckpointRequest>,
    ) -> Result<Response<Checkpoint>, Status> {
        Err(later("GetCheckpoint"))
    }
    async fn get_inclusion_proof(
        &self,
        _: Request<GetInclusionProofRequest>,
    ) -> Result<Response<InclusionProof>, Status> {
        Err(later("GetInclusionProof"))
    }
    async fn get_consistency_proof(
        &self,
        _: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<ConsistencyProof>, Status> {
        Err(later("GetConsistencyProof"))
    }
    async fn export_audit(
        &self,
        _: Request<ExportAuditRequest>,
    ) -> Result<Response<Self::ExportAuditStream>, Status> {
        Err(later("ExportAudit"))
    }
    async fn audit_stats(
        &self,
        _: Request<AuditStatsRequest>,
    ) -> Result<Response<AuditStatsResponse>, Status> {
        Err(later("AuditStats"))
    }
}
