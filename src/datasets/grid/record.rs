//! Grids, grid workers and region nodes as the pipeline handles them.

use super::validate::{grid, region, worker};
use crate::datasets::Dataset;
use crate::datasets::codes::{CodeError, RegionCode};
use std::collections::BTreeMap;
use crate::datasets::record::{
    Checked, GridCounts, Record, Reference, collection, stamped, text_of,
};
use crate::proto::{Grid, GridWorker, RegionLevel, RegionNode};
use prost_types::Timestamp;

impl Record for Grid {
    collection!("grid");
    const DATASET: Dataset = Dataset::Grid;
    const KEY_FIELD: &'static str = "grid_code";
    const ROW_FIELD: &'static str = "grid_code";
    const HAS_COUNTS: bool = true;
    const IS_STRUCTURE: bool = true;

    fn parse_key(s: &str) -> Result<String, CodeError> {
        RegionCode::parse_grid(s).map(|c| c.to_string())
    }

    fn key(&self) -> &str {
        text_of(&self.grid_code)
    }
    fn row_code(&self) -> &str {
        text_of(&self.grid_code)
    }
    stamped!();
    fn structure_name(&self) -> &str {
        text_of(&self.name)
    }

    fn set_counts(&mut self, c: GridCounts) {
        self.household_count = Some(c.households);
        self.person_count = Some(c.persons);
        self.entity_count = Some(c.entities);
    }


    fn set_views(&mut self, views: BTreeMap<String, i32>) {
        self.views = views;
    }

    fn validate(self) -> Result<Checked<Self>, String> {
        grid(self)
    }

    fn reference(&self) -> Option<Reference<'_>> {
        Some(Reference {
            field: "community_code",
            code: text_of(&self.community_code),
            what: "community",
        })
    }
}

impl Record for GridWorker {
    collection!("grid_worker");
    const DATASET: Dataset = Dataset::Grid;
    const FIELD_PREFIX: &'static str = "worker.";
    const KEY_FIELD: &'static str = "worker_id";
    const ROW_FIELD: &'static str = "grid_code";

    fn parse_key(s: &str) -> Result<String, CodeError> {
        if s.is_empty() || s.len() > 40 {
            Err(CodeError::new("a worker id has 1-40 characters"))
        } else {
            Ok(s.to_string())
        }
    }

    fn key(&self) -> &str {
        text_of(&self.worker_id)
    }
    fn row_code(&self) -> &str {
        text_of(&self.grid_code)
    }
    stamped!();

    fn set_views(&mut self, views: BTreeMap<String, i32>) {
        self.views = views;
    }

    fn validate(self) -> Result<Checked<Self>, String> {
        worker(self)
    }

    fn reference(&self) -> Option<Reference<'_>> {
        Some(Reference {
            field: "grid_code",
            code: text_of(&self.grid_code),
            what: "grid",
        })
    }
}

/// Region nodes are structure (code, name, level, parent): any grid grant
/// covering a node releases all four; they carry no personal data.
impl Record for RegionNode {
    collection!("region");
    const DATASET: Dataset = Dataset::Grid;
    const KEY_FIELD: &'static str = "code";
    const ROW_FIELD: &'static str = "code";
    const IS_STRUCTURE: bool = true;

    fn parse_key(s: &str) -> Result<String, CodeError> {
        RegionCode::parse(s).map(|c| c.to_string())
    }

    fn key(&self) -> &str {
        &self.code
    }
    fn structure_name(&self) -> &str {
        &self.name
    }
    fn row_code(&self) -> &str {
        &self.code
    }
    fn version(&self) -> u64 {
        0
    }
    fn stamp(&mut self, _version: u64, _at: Timestamp) {}

    fn validate(self) -> Result<Checked<Self>, String> {
        region(self)
    }

    fn reference(&self) -> Option<Reference<'_>> {
        (self.level != RegionLevel::District as i32).then_some(Reference {
            field: "parent_code",
            code: &self.parent_code,
            what: "region",
        })
    }
}
