//! LegalEntityService (法人), v1 and v2, served by the generic data path.

use super::data::{Filter, Keep, data_requests, data_service};
use crate::proto::{
    BatchGetEntitiesRequest, BatchGetEntitiesResponse, EntityPage, GetEntityRequest,
    GetEntityResponse, LegalEntity, SearchEntitiesRequest, legal_entity_service_server, v2,
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
        if needle.is_empty() && status == 0 {
            return None;
        }
        Some(Arc::new(move |e: &LegalEntity| {
            (needle.is_empty() || e.name.as_deref().is_some_and(|n| n.contains(&needle)))
                && (status == 0 || e.status == Some(status))
        }))
    }
}

data_requests! {
    LegalEntity => {
        get GetEntityRequest.uscc;
        batch BatchGetEntitiesRequest.usccs;
        list SearchEntitiesRequest;
    }
}

data_service! {
    "govshare.v1.LegalEntityService" as legal_entity_service_server::LegalEntityService => {
        get GetEntity => get_entity(GetEntityRequest) -> GetEntityResponse { entity };
        batch BatchGetEntities => batch_get_entities(BatchGetEntitiesRequest)
            -> BatchGetEntitiesResponse { entities };
        list SearchEntities => search_entities(SearchEntitiesRequest)
            -> SearchEntitiesStream = EntityPage { entities };
    }
}

data_service! {
    "govshare.v2.LegalEntityService" as v2::legal_entity_service_server::LegalEntityService => {
        get GetEntity => get_entity(GetEntityRequest) -> v2::GetEntityResponse { entity };
        batch BatchGetEntities => batch_get_entities(BatchGetEntitiesRequest)
            -> v2::BatchGetEntitiesResponse { entities };
        list SearchEntities => search_entities(SearchEntitiesRequest)
            -> SearchEntitiesStream = v2::EntityPage { entities };
    }
}
