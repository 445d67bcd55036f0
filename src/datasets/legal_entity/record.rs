//! A legal entity as the pipeline handles it.

use super::validate::legal_entity;
use crate::datasets::Dataset;
use crate::datasets::codes::{CodeError, Uscc};
use crate::datasets::mask::Projector;
use std::collections::BTreeMap;
use crate::datasets::record::{Checked, Record, Reference, stamped, text_of};
use crate::proto::LegalEntity;

impl Record for LegalEntity {
    const COLLECTION: &'static str = "legal_entity";
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
    fn project(self, p: &mut Projector<'_>) -> Self {
        LegalEntity {
            uscc: p.text("uscc", self.uscc),
            name: p.text("name", self.name),
            category: p.text("category", self.category),
            enterprise_type: p.text("enterprise_type", self.enterprise_type),
            legal_representative: p.text("legal_representative", self.legal_representative),
            registered_capital: p.clear("registered_capital", self.registered_capital),
            established_date: p.text("established_date", self.established_date),
            term_end: p.text("term_end", self.term_end),
            status: p.clear("status", self.status),
            domicile: p.text("domicile", self.domicile),
            domicile_grid: p.text("domicile_grid", self.domicile_grid),
            business_scope: p.text("business_scope", self.business_scope),
            registration_authority: p.text("registration_authority", self.registration_authority),
            industry_code: p.text("industry_code", self.industry_code),
            phone: p.text("phone", self.phone),
            updated_at: p.clear("updated_at", self.updated_at),
            version: p.clear("version", self.version),
            views: Default::default(),
        }
    }

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
