//! A person as the pipeline handles it.

use super::validate::person;
use crate::datasets::Dataset;
use crate::datasets::codes::{CitizenId, CodeError};
use crate::datasets::mask::Projector;
use std::collections::BTreeMap;
use crate::datasets::record::{Checked, Record, Reference, stamped, text_of};
use crate::proto::Person;

impl Record for Person {
    const COLLECTION: &'static str = "population";
    const DATASET: Dataset = Dataset::Population;
    const KEY_FIELD: &'static str = "id_number";
    const ROW_FIELD: &'static str = "residence_grid";

    fn parse_key(s: &str) -> Result<String, CodeError> {
        CitizenId::parse(s).map(|c| c.as_str().to_string())
    }

    fn key(&self) -> &str {
        text_of(&self.id_number)
    }
    fn row_code(&self) -> &str {
        text_of(&self.residence_grid)
    }
    stamped!();
    /// Grid, household, key: so a grid's households are counted from keys alone.
    fn index_key(&self) -> Vec<u8> {
        format!(
            "{}\0{}\0{}",
            self.row_code(),
            text_of(&self.household_id),
            self.key()
        )
        .into_bytes()
    }
    fn project(self, p: &mut Projector<'_>) -> Self {
        Person {
            id_number: p.text("id_number", self.id_number),
            name: p.text("name", self.name),
            sex: p.clear("sex", self.sex),
            birth_date: p.text("birth_date", self.birth_date),
            ethnicity: p.text("ethnicity", self.ethnicity),
            marital_status: p.text("marital_status", self.marital_status),
            education: p.text("education", self.education),
            hukou_division: p.text("hukou_division", self.hukou_division),
            hukou_address: p.text("hukou_address", self.hukou_address),
            residence_grid: p.text("residence_grid", self.residence_grid),
            residence_address: p.text("residence_address", self.residence_address),
            residence_status: p.clear("residence_status", self.residence_status),
            population_type: p.clear("population_type", self.population_type),
            phone: p.text("phone", self.phone),
            household_id: p.text("household_id", self.household_id),
            relation_to_head: p.text("relation_to_head", self.relation_to_head),
            tags: p.clear("tags", self.tags),
            restricted_tags: p.clear("restricted_tags", self.restricted_tags),
            deceased: p.clear("deceased", self.deceased),
            updated_at: p.clear("updated_at", self.updated_at),
            version: p.clear("version", self.version),
            views: Default::default(),
        }
    }

    fn set_views(&mut self, views: BTreeMap<String, i32>) {
        self.views = views;
    }

    fn validate(self) -> Result<Checked<Self>, String> {
        person(self)
    }

    fn reference(&self) -> Option<Reference<'_>> {
        Some(Reference {
            field: "residence_grid",
            code: text_of(&self.residence_grid),
            what: "grid",
        })
    }
}
