//! PopulationService (人口).

use super::common::{self, Pages, batch_get, get_one, plan_listing, stream_pages};
use crate::datasets::Dataset;
use crate::pipeline::Pipeline;
use crate::proto::population_service_server::PopulationService;
use crate::proto::{
    AuditQuery, BatchGetPersonsRequest, BatchGetPersonsResponse, GetPersonRequest,
    GetPersonResponse, ListPersonsRequest, Operation, Person, PersonPage,
};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct PopulationApi {
    pub pipeline: Arc<Pipeline>,
}

#[tonic::async_trait]
impl PopulationService for PopulationApi {
    async fn get_person(
        &self,
        req: Request<GetPersonRequest>,
    ) -> Result<Response<GetPersonResponse>, Status> {
        let r = req.get_ref();
        let (person, receipt) = get_one::<Person, _>(
            &self.pipeline,
            &req,
            r.context.as_ref(),
            "/govshare.v1.PopulationService/GetPerson",
            &r.id_number,
        )
        .await?;
        Ok(Response::new(GetPersonResponse {
            person: Some(person),
            receipt: Some(receipt),
        }))
    }

    async fn batch_get_persons(
        &self,
        req: Request<BatchGetPersonsRequest>,
    ) -> Result<Response<BatchGetPersonsResponse>, Status> {
        let r = req.get_ref();
        let (persons, not_found, receipt) = batch_get::<Person, _>(
            &self.pipeline,
            &req,
            r.context.as_ref(),
            "/govshare.v1.PopulationService/BatchGetPersons",
            &r.id_numbers,
        )
        .await?;
        Ok(Response::new(BatchGetPersonsResponse {
            persons,
            not_found,
            receipt: Some(receipt),
        }))
    }

    type ListPersonsStream = Pages<PersonPage>;

    async fn list_persons(
        &self,
        req: Request<ListPersonsRequest>,
    ) -> Result<Response<Self::ListPersonsStream>, Status> {
        let r = req.get_ref();
        let query = AuditQuery {
            region: r.region_prefix.clone(),
            filter: if r.tag.is_empty() {
                String::new()
            } else {
                format!("tag={}", r.tag)
            },
            page_token: r.page_token.clone(),
            page_size: r.page_size,
            ..Default::default()
        };
        let spec = common::spec(
            "/govshare.v1.PopulationService/ListPersons",
            Dataset::Population,
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
        let tag = r.tag.clone();
        // The filter sees the masked record, so a tag outside the grant never matches.
        let keep = move |p: &Person| {
            tag.is_empty()
                || [&p.tags, &p.restricted_tags]
                    .into_iter()
                    .flatten()
                    .any(|t| t.items.iter().any(|i| i.code == tag))
        };
        let stream = stream_pages(adm, listing, keep, |persons, next_page_token, receipt| {
            PersonPage {
                persons,
                next_page_token,
                receipt: Some(receipt),
            }
        });
        Ok(Response::new(stream))
    }
}
