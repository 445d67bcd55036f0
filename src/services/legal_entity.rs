//! LegalEntityService (法人), served by the generic data path.

use super::data::{Filter, Keep, data_service};
use crate::proto::legal_entity_service_server::LegalEntityService;
use crate::proto::{
    BatchGetEntitiesRequest, BatchGetEntitiesResponse, EntityPage, GetEntityRequest,
    GetEntityResponse, LegalEntity, SearchEntitiesRequest,
};
use std::sync::Arc;

/// `SearchEntities` matches a name substring and a status, on the masked
/// record: an ungranted field never matches.
impl Filter for SearchEntitiesRequest {
    type Record = LegalEntity;

    fn recorded(&self) -> String {
        format!(
            "name_contains={};status={}",
            self.name_contains, self.status
        )
    }

    fn keep(&self) -> Keep<LegalEntity> {
        let (needle, status) = (self.name_contains.clone(), self.status);
        Arc::new(move |e: &LegalEntity| {
            (needle.is_empty() || e.name.as_deref().is_some_and(|n| n.contains(&needle)))
                && (status == 0 || e.status == Some(status))
        })
    }
}

data_service! {
    LegalEntityService for LegalEntity => {
        get GetEntity => get_entity(GetEntityRequest.uscc) -> GetEntityResponse.entity;
        batch BatchGetEntities => batch_get_entities(BatchGetEntitiesRequest.usccs)
            -> BatchGetEntitiesResponse.entities;
        list SearchEntities => search_entities(SearchEntitiesRequest)
            -> SearchEntitiesStream = EntityPage.entities;
    }
}
