//! LegalEntityService (法人).

use super::common::{self, Pages, batch_get, get_one, plan_listing, stream_pages};
use crate::datasets::Dataset;
use crate::pipeline::Pipeline;
use crate::proto::legal_entity_service_server::LegalEntityService;
use crate::proto::{
    AuditQuery, BatchGetEntitiesRequest, BatchGetEntitiesResponse, EntityPage, GetEntityRequest,
    GetEntityResponse, LegalEntity, Operation, SearchEntitiesRequest,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct LegalEntityApi {
    pub pipeline: Arc<Pipeline>,
}

#[tonic::async_trait]
impl LegalEntityService for LegalEntityApi {
    async fn get_entity(
        &self,
        req: Request<GetEntityRequest>,
    ) -> Result<Response<GetEntityResponse>, Status> {
        let r = req.get_ref();
        let (entity, receipt) = get_one::<LegalEntity, _>(
            &self.pipeline,
            &req,
            r.context.as_ref(),
            "/govshare.v1.LegalEntityService/GetEntity",
            &r.uscc,
        )
        .await?;
        Ok(Response::new(GetEntityResponse {
            entity: Some(entity),
            receipt: Some(receipt),
        }))
    }

    async fn batch_get_entities(
        &self,
        req: Request<BatchGetEntitiesRequest>,
    ) -> Result<Response<BatchGetEntitiesResponse>, Status> {
        let r = req.get_ref();
        let (entities, not_found, receipt) = batch_get::<LegalEntity, _>(
            &self.pipeline,
            &req,
            r.context.as_ref(),
            "/govshare.v1.LegalEntityService/BatchGetEntities",
            &r.usccs,
        )
        .await?;
        Ok(Response::new(BatchGetEntitiesResponse {
            entities,
            not_found,
            receipt: Some(receipt),
        }))
    }

    type SearchEntitiesStream = Pages<EntityPage>;

    async fn search_entities(
        &self,
        req: Request<SearchEntitiesRequest>,
    ) -> Result<Response<Self::SearchEntitiesStream>, Status> {
        let r = req.get_ref();
        let query = AuditQuery {
            region: r.region_prefix.clone(),
            filter: format!("name_contains={};status={}", r.name_contains, r.status),
            page_token: r.page_token.clone(),
            page_size: r.page_size,
            ..Default::default()
        };
        let spec = common::spec(
            "/govshare.v1.LegalEntityService/SearchEntities",
            Dataset::LegalEntity,
            Operation::List,
            query,
        );
        let adm = self.pipeline.admit(&req, r.context.as_ref(), spec).await?;
        let listing = plan_listing(
            &adm,
            &r.region_prefix,
            r.page_size,
            &r.page_token,
            r.max_records,
        )
        .await?;
        let (needle, status) = (r.name_contains.clone(), r.status);
        // Filters apply to the masked record: an ungranted field never matches.
        let keep = move |e: &LegalEntity| {
            (needle.is_empty() || e.name.as_deref().is_some_and(|n| n.contains(&needle)))
                && (status == 0 || e.status == Some(status))
        };
        let stream = stream_pages(adm, listing, keep, |entities, next_page_token, receipt| {
            EntityPage {
                entities,
                next_page_token,
                receipt: Some(receipt),
            }
        });
        Ok(Response::new(stream))
    }
}
