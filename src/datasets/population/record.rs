//! A person as the pipeline handles it.

use super::validate::person;
use crate::datasets::Dataset;
use crate::datasets::codes::{CitizenId, CodeError};
use std::collections::BTreeMap;
use crate::datasets::record::{Checked, Record, Reference, collection, stamped, text_of};
use crate::proto::Person;

impl Record for Person {
    collection!("population");
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
