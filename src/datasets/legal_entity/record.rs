//! A legal entity as the pipeline handles it.

use super::validate::legal_entity;
use crate::datasets::Dataset;
use crate::datasets::codes::{CodeError, Uscc};
use std::collections::BTreeMap;
use crate::datasets::record::{Checked, Record, Reference, collection, stamped, text_of};
use crate::proto::LegalEntity;

impl Record for LegalEntity {
    collection!("legal_entity");
    const DATASET: Dataset = Dataset::LegalEntity;
    const KEY_FIELD: &'static str = "uscc";
    const ROW_FIELD: &'static str = "domicile_grid";

    fn parse_key(s: &str) -> Result<String, CodeError> {
        Uscc::parse(s).map(|c| c.as_str().to_string())
    }

    fn key(&self) -> &str {
        text_of(&self.uscc)
    }
    fn row_code(&self) -> &str {
        text_of(&self.domicile_grid)
    }
    stamped!();

    fn set_views(&mut self, views: BTreeMap<String, i32>) {
        self.views = views;
    }

    fn validate(self) -> Result<Checked<Self>, String> {
        legal_entity(self)
    }

    fn reference(&self) -> Option<Reference<'_>> {
        Some(Reference {
            field: "domicile_grid",
            code: text_of(&self.domicile_grid),
            what: "grid",
        })
    }
}
