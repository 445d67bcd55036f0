//! PopulationService (人口), served by the generic data path.

use super::data::{Filter, Keep, data_service};
use crate::proto::population_service_server::PopulationService;
use crate::proto::{
    BatchGetPersonsRequest, BatchGetPersonsResponse, GetPersonRequest, GetPersonResponse,
    ListPersonsRequest, Person, PersonPage,
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
        let tag = self.tag.clone();
        Arc::new(move |p: &Person| {
            tag.is_empty()
                || [&p.tags, &p.restricted_tags]
                    .into_iter()
                    .flatten()
                    .any(|t| t.items.iter().any(|i| i.code == tag))
        })
    }
}

data_service! {
    PopulationService for Person => {
        get GetPerson => get_person(GetPersonRequest.id_number) -> GetPersonResponse.person;
        batch BatchGetPersons => batch_get_persons(BatchGetPersonsRequest.id_numbers)
            -> BatchGetPersonsResponse.persons;
        list ListPersons => list_persons(ListPersonsRequest) -> ListPersonsStream = PersonPage.persons;
    }
}
