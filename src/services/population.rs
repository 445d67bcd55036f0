//! PopulationService (人口), v1 and v2, served by the generic data path.

use super::data::{Filter, Keep, data_requests, data_service};
use crate::proto::{
    BatchGetPersonsRequest, BatchGetPersonsResponse, GetPersonRequest, GetPersonResponse,
    ListPersonsRequest, Person, PersonPage, population_service_server, v2,
};
use std::sync::Arc;

/// `ListPersons` may ask for one tag. The filter sees the masked record,
/// so a tag outside the grant never matches.
impl Filter for ListPersonsRequest {
    type Record = Person;

    fn recorded(&self) -> String {
        if self.tag.is_empty() {
            String::new()
        } else {
            format!("tag={}", self.tag)
        }
    }

    fn keep(&self) -> Keep<Person> {
        if self.tag.is_empty() {
            return None;
        }
        let tag = self.tag.clone();
        Some(Arc::new(move |p: &Person| {
            [&p.tags, &p.restricted_tags]
                .into_iter()
                .flatten()
                .any(|t| t.items.iter().any(|i| i.code == tag))
        }))
    }
}

data_requests! {
    Person => {
        get GetPersonRequest.id_number;
        batch BatchGetPersonsRequest.id_numbers;
        list ListPersonsRequest;
    }
}

data_service! {
    "govshare.v1.PopulationService" as population_service_server::PopulationService => {
        get GetPerson => get_person(GetPersonRequest) -> GetPersonResponse { person };
        batch BatchGetPersons => batch_get_persons(BatchGetPersonsRequest)
            -> BatchGetPersonsResponse { persons };
        list ListPersons => list_persons(ListPersonsRequest) -> ListPersonsStream = PersonPage { persons };
    }
}

data_service! {
    "govshare.v2.PopulationService" as v2::population_service_server::PopulationService => {
        get GetPerson => get_person(GetPersonRequest) -> v2::GetPersonResponse { person };
        batch BatchGetPersons => batch_get_persons(BatchGetPersonsRequest)
            -> v2::BatchGetPersonsResponse { persons };
        list ListPersons => list_persons(ListPersonsRequest)
            -> ListPersonsStream = v2::PersonPage { persons };
    }
}
