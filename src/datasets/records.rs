//! The shared record types and what the pipeline needs from each: its key,
//! the grid code that drives its row scope, its index key, and its projection
//! through a field plan. Adding a field means adding it here once.

use crate::datasets::catalog::Dataset;
use crate::datasets::codes::{CitizenId, CodeError, RegionCode, Uscc};
use crate::datasets::mask::Projector;
use crate::proto::{Grid, GridWorker, LegalEntity, Person, RegionNode};
use prost_types::Timestamp;

/// The counts a grid carries, maintained by the gateway from its indexes.
pub struct GridCounts {
    pub households: u64,
    pub persons: u64,
    pub entities: u64,
}

pub trait Record: prost::Message + Default + Clone + Send + Sync + 'static {
    /// Store tree holding the records.
    const COLLECTION: &'static str;
    const DATASET: Dataset;
    /// Catalog prefix of this record's fields within its dataset.
    const FIELD_PREFIX: &'static str = "";
    /// The key field's name, for messages.
    const KEY_FIELD: &'static str;
    /// Whether the gateway fills [`GridCounts`] in on every read.
    const HAS_COUNTS: bool = false;
    /// Whether the key is a region or grid code others may refer to.
    const IS_STRUCTURE: bool = false;

    /// Validates and normalises a requested key.
    fn parse_key(s: &str) -> Result<String, CodeError>;

    fn key(&self) -> &str;
    /// The grid (or region) code that decides row visibility.
    fn row_code(&self) -> &str;
    fn version(&self) -> u64;
    fn stamp(&mut self, version: u64, at: Timestamp);
    /// A copy holding only the fields the projector releases, calling it
    /// once per field in catalog order.
    fn project(self, p: &mut Projector<'_>) -> Self;

    fn set_counts(&mut self, _counts: GridCounts) {}

    /// A region's or grid's name (structure records only).
    fn structure_name(&self) -> &str {
        ""
    }

    /// Index key: row code, NUL, [extra, NUL,] key. Sorted by region, so a
    /// region prefix is a range scan.
    fn index_key(&self) -> Vec<u8> {
        format!("{}\0{}", self.row_code(), self.key()).into_bytes()
    }

    fn key_from_index(index_key: &[u8]) -> &str {
        let last = index_key.rsplit(|b| *b == 0).next().unwrap_or_default();
        std::str::from_utf8(last).unwrap_or_default()
    }
}

fn s(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or_default()
}

impl Record for Person {
    const COLLECTION: &'static str = "population";
    const DATASET: Dataset = Dataset::Population;
    const KEY_FIELD: &'static str = "id_number";

    fn parse_key(s: &str) -> Result<String, CodeError> {
        CitizenId::parse(s).map(|c| c.as_str().to_string())
    }

    fn key(&self) -> &str {
        s(&self.id_number)
    }
    fn row_code(&self) -> &str {
        s(&self.residence_grid)
    }
    fn version(&self) -> u64 {
        self.version.unwrap_or(0)
    }
    fn stamp(&mut self, version: u64, at: Timestamp) {
        self.version = Some(version);
        self.updated_at = Some(at);
    }
    /// Grid, household, key: so a grid's households are counted from keys alone.
    fn index_key(&self) -> Vec<u8> {
        format!(
            "{}\0{}\0{}",
            self.row_code(),
            s(&self.household_id),
            self.key()
        )
        .into_bytes()
    }
    fn project(self, p: &mut Projector<'_>) -> Self {
        let mut out = Person {
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
        };
        out.views = p.finish_views();
        out
    }
}

impl Record for LegalEntity {
    const COLLECTION: &'static str = "legal_entity";
    const DATASET: Dataset = Dataset::LegalEntity;
    const KEY_FIELD: &'static str = "uscc";

    fn parse_key(s: &str) -> Result<String, CodeError> {
        Uscc::parse(s).map(|c| c.as_str().to_string())
    }

    fn key(&self) -> &str {
        s(&self.uscc)
    }
    fn row_code(&self) -> &str {
        s(&self.domicile_grid)
    }
    fn version(&self) -> u64 {
        self.version.unwrap_or(0)
    }
    fn stamp(&mut self, version: u64, at: Timestamp) {
        self.version = Some(version);
        self.updated_at = Some(at);
    }
    fn project(self, p: &mut Projector<'_>) -> Self {
        let mut out = LegalEntity {
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
        };
        out.views = p.finish_views();
        out
    }
}

impl Record for Grid {
    const COLLECTION: &'static str = "grid";
    const DATASET: Dataset = Dataset::Grid;
    const KEY_FIELD: &'static str = "grid_code";
    const HAS_COUNTS: bool = true;
    const IS_STRUCTURE: bool = true;

    fn parse_key(s: &str) -> Result<String, CodeError> {
        RegionCode::parse_grid(s).map(|c| c.to_string())
    }

    fn key(&self) -> &str {
        s(&self.grid_code)
    }
    fn row_code(&self) -> &str {
        s(&self.grid_code)
    }
    fn version(&self) -> u64 {
        self.version.unwrap_or(0)
    }
    fn stamp(&mut self, version: u64, at: Timestamp) {
        self.version = Some(version);
        self.updated_at = Some(at);
    }
    fn structure_name(&self) -> &str {
        s(&self.name)
    }

    fn set_counts(&mut self, c: GridCounts) {
        self.household_count = Some(c.households);
        self.person_count = Some(c.persons);
        self.entity_count = Some(c.entities);
    }

    fn project(self, p: &mut Projector<'_>) -> Self {
        let mut out = Grid {
            grid_code: p.text("grid_code", self.grid_code),
            name: p.text("name", self.name),
            community_code: p.text("community_code", self.community_code),
            kind: p.clear("kind", self.kind),
            boundary: p.clear("boundary", self.boundary),
            area_m2: p.clear("area_m2", self.area_m2),
            household_count: p.clear("household_count", self.household_count),
            person_count: p.clear("person_count", self.person_count),
            entity_count: p.clear("entity_count", self.entity_count),
            updated_at: p.clear("updated_at", self.updated_at),
            version: p.clear("version", self.version),
            views: Default::default(),
        };
        out.views = p.finish_views();
        out
    }
}

impl Record for GridWorker {
    const COLLECTION: &'static str = "grid_worker";
    const DATASET: Dataset = Dataset::Grid;
    const FIELD_PREFIX: &'static str = "worker.";
    const KEY_FIELD: &'static str = "worker_id";

    fn parse_key(s: &str) -> Result<String, CodeError> {
        if s.is_empty() || s.len() > 40 {
            Err(CodeError::new("a worker id has 1-40 characters"))
        } else {
            Ok(s.to_string())
        }
    }

    fn key(&self) -> &str {
        s(&self.worker_id)
    }
    fn row_code(&self) -> &str {
        s(&self.grid_code)
    }
    fn version(&self) -> u64 {
        self.version.unwrap_or(0)
    }
    fn stamp(&mut self, version: u64, at: Timestamp) {
        self.version = Some(version);
        self.updated_at = Some(at);
    }
    fn project(self, p: &mut Projector<'_>) -> Self {
        let mut out = GridWorker {
            worker_id: p.text("worker_id", self.worker_id),
            name: p.text("name", self.name),
            phone: p.text("phone", self.phone),
            role: p.clear("role", self.role),
            grid_code: p.text("grid_code", self.grid_code),
            since: p.text("since", self.since),
            updated_at: p.clear("updated_at", self.updated_at),
            version: p.clear("version", self.version),
            views: Default::default(),
        };
        out.views = p.finish_views();
        out
    }
}

/// Region nodes are structure (code, name, level, parent): any grid grant
/// covering a node releases all four; they carry no personal data.
impl Record for RegionNode {
    const COLLECTION: &'static str = "region";
    const DATASET: Dataset = Dataset::Grid;
    const KEY_FIELD: &'static str = "code";
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
    fn project(self, _p: &mut Projector<'_>) -> Self {
        RegionNode {
            children: Vec::new(),
            ..self
        }
    }
}
