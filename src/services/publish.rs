//! PublishService: the source department streams records in. Each record is
//! validated on its own; a bad one is reported by position and never blocks
//! the good ones. Records are committed and audited in chunks.

use crate::catalog::Dataset;
use crate::geo::GridLocator;
use crate::pipeline::{Pipeline, Publisher};
use crate::proto::publish_service_server::PublishService;
use crate::proto::upsert_grids_request::Item;
use crate::proto::{
    Grid, LegalEntity, Person, PublishSummary, RecordOutcome, RegionLevel, RegionNode,
    UpsertGridsRequest,
};
use crate::records::Record;
use crate::store::Store;
use crate::validate::{self, Checked};
use std::sync::Arc;
use tonic::{Request, Response, Status, Streaming};

pub struct PublishApi {
    pub pipeline: Arc<Pipeline>,
    pub locator: Arc<GridLocator>,
}

/// Records per committed, audited chunk.
const CHUNK: usize = 500;

/// One record's fate: stored (key, warnings) or refused (key, reason).
type Applied = Result<(String, Vec<String>), (String, String)>;

fn store_checked<R: Record>(
    store: &Store,
    checked: Result<Checked<R>, String>,
    key: String,
) -> Applied {
    let Checked { record, warnings } = checked.map_err(|reason| (key.clone(), reason))?;
    let key = record.key().to_string();
    match store.upsert(record) {
        Ok(_) => Ok((key, warnings)),
        Err(e) => {
            tracing::error!(error = %e, %key, "storing a published record failed");
            Err((key, "could not be stored; retry".into()))
        }
    }
}

async fn publish<T>(
    publisher: Publisher,
    mut stream: Streaming<T>,
    apply: impl Fn(&Store, T) -> Applied,
) -> Result<Response<PublishSummary>, Status> {
    let mut summary = PublishSummary::default();
    let (mut accepted, mut rejected) = (Vec::new(), Vec::new());
    let mut position = 0u64;
    let mut finished = false;
    while !finished {
        match stream.message().await? {
            Some(item) => {
                match apply(publisher.store(), item) {
                    Ok((key, warnings)) => {
                        summary.accepted += 1;
                        for reason in warnings {
                            summary.warnings.push(RecordOutcome {
                                position,
                                key: key.clone(),
                                reason,
                            });
                        }
                        accepted.push(key);
                    }
                    Err((key, reason)) => {
                        summary.rejected += 1;
                        summary.rejections.push(RecordOutcome {
                            position,
                            key: key.clone(),
                            reason,
                        });
                        rejected.push(key);
                    }
                }
                position += 1;
            }
            None => finished = true,
        }
        if accepted.len() + rejected.len() >= CHUNK
            || (finished && (position == 0 || !accepted.is_empty() || !rejected.is_empty()))
        {
            let receipt = publisher
                .record_chunk(std::mem::take(&mut accepted), std::mem::take(&mut rejected))
                .await?;
            summary.receipts.push(receipt);
        }
    }
    Ok(Response::new(summary))
}

fn key_of(v: &Option<String>) -> String {
    v.clone().unwrap_or_default()
}

#[tonic::async_trait]
impl PublishService for PublishApi {
    async fn upsert_persons(
        &self,
        req: Request<Streaming<Person>>,
    ) -> Result<Response<PublishSummary>, Status> {
        let p = self
            .pipeline
            .admit_publisher(
                &req,
                Dataset::Population,
                "/govshare.v1.PublishService/UpsertPersons",
            )
            .await?;
        publish(p, req.into_inner(), |store, person| {
            let key = key_of(&person.id_number);
            store_checked(store, validate::person(person), key)
        })
        .await
    }

    async fn upsert_entities(
        &self,
        req: Request<Streaming<LegalEntity>>,
    ) -> Result<Response<PublishSummary>, Status> {
        let p = self
            .pipeline
            .admit_publisher(
                &req,
                Dataset::LegalEntity,
                "/govshare.v1.PublishService/UpsertEntities",
            )
            .await?;
        publish(p, req.into_inner(), |store, entity| {
            let key = key_of(&entity.uscc);
            store_checked(store, validate::legal_entity(entity), key)
        })
        .await
    }

    async fn upsert_grids(
        &self,
        req: Request<Streaming<UpsertGridsRequest>>,
    ) -> Result<Response<PublishSummary>, Status> {
        let p = self
            .pipeline
            .admit_publisher(
                &req,
                Dataset::Grid,
                "/govshare.v1.PublishService/UpsertGrids",
            )
            .await?;
        let locator = self.locator.clone();
        publish(p, req.into_inner(), move |store, item| match item.item {
            Some(Item::Region(r)) => {
                let key = r.code.clone();
                store_checked(store, validate::region(r), key)
            }
            Some(Item::Worker(w)) => {
                let key = key_of(&w.worker_id);
                store_checked(store, validate::worker(w), key)
            }
            Some(Item::Grid(g)) => {
                let key = key_of(&g.grid_code);
                let checked = validate::grid(g);
                if let Ok(c) = &checked {
                    // The grid is also a leaf of the region tree.
                    let leaf = RegionNode {
                        code: key.clone(),
                        name: key_of(&c.record.name),
                        level: RegionLevel::Grid.into(),
                        parent_code: key_of(&c.record.community_code),
                        children: Vec::new(),
                    };
                    if let Err(e) = store.upsert(leaf) {
                        tracing::error!(error = %e, "storing a grid's region node failed");
                        return Err((key, "could not be stored; retry".into()));
                    }
                    locator.upsert(&c.record);
                }
                store_checked::<Grid>(store, checked, key)
            }
            None => Err((
                String::new(),
                "item: one of region, grid or worker is required".into(),
            )),
        })
        .await
    }
}
