//! The shared record types' common shape. Adding a field means adding it to
//! its message and its dataset's catalog entry, in the same place (a test
//! holds field number and catalog position as one); adding a dataset means
//! a new folder implementing [`Record`] and one line in the registry.

use super::Dataset;
use super::codes::CodeError;
use super::mask::Projected;
use crate::proto::json::Named;
use crate::store::Placed;
use prost_types::Timestamp;
use std::collections::BTreeMap;

/// A record that passed validation, with any data-quality warnings.
pub struct Checked<R> {
    pub record: R,
    pub warnings: Vec<String>,
}

/// A code a published record names, which must already exist: the field,
/// the code, and what kind of code it is (for the refusal).
pub struct Reference<'a> {
    pub field: &'static str,
    pub code: &'a str,
    pub what: &'static str,
}

/// The counts a grid carries, maintained by the gateway from its indexes.
pub struct GridCounts {
    pub households: u64,
    pub persons: u64,
    pub entities: u64,
}

/// What every shared record type gives the planes above: its catalog
/// entry, key, the grid code that drives its row scope, its index key, and
/// its validation on publish. Its projection through a field plan is the
/// projector's, from the stored bytes ([`super::mask::Projector`]).
pub trait Record: prost::Message + Named + Default + Clone + Send + Sync + 'static {
    /// The collection's name: its records were kept under their keys in
    /// the tree of this name (indexed in `<name>.by_grid`) before they
    /// were kept in index order ([`Record::TREES`]).
    const COLLECTION: &'static str;
    /// Where the records are kept: in index order, each once.
    const TREES: Placed;
    /// Where this type's fields are ([`super::mask::Layout::of`]), found
    /// once ([`collection!`]).
    fn layout() -> super::mask::Layout;
    const DATASET: Dataset;
    /// Catalog prefix of this record's fields within its dataset.
    const FIELD_PREFIX: &'static str = "";
    /// The key field's name, for messages.
    const KEY_FIELD: &'static str;
    /// The field [`Record::row_code`] reads.
    const ROW_FIELD: &'static str;
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
    /// A stored record's [`Record::version`]. Read for every record a
    /// publish replaces, under the store's write lock: a stamped record
    /// reads it from the wire ([`stamped!`]) rather than decode it whole.
    fn stored_version(stored: &[u8]) -> anyhow::Result<u64> {
        Ok(Self::decode(stored)?.version())
    }
    fn stamp(&mut self, version: u64, at: Timestamp);
    /// Puts the views spelled out by field name into the record (v1's
    /// form). Structure records carry none.
    fn set_views(&mut self, _views: BTreeMap<String, i32>) {}

    /// Validates and normalises a published record: every check names the
    /// field and the rule; derived fields are set from the key.
    fn validate(self) -> Result<Checked<Self>, String>;

    /// The region or grid this record refers to, which must exist before it
    /// is published.
    fn reference(&self) -> Option<Reference<'_>>;

    fn set_counts(&mut self, _counts: GridCounts) {}

    /// A region's or grid's name (structure records only).
    fn structure_name(&self) -> &str {
        ""
    }

    /// Index key: row code, NUL, [extra, NUL,] key. Sorted by region, so a
    /// region prefix is a range scan. The record's place in the store.
    fn index_key(&self) -> Vec<u8> {
        format!("{}\0{}", self.row_code(), self.key()).into_bytes()
    }
}

/// A [`Record`]'s collection: its name and its trees, from one literal;
/// and its field layout, found on first use.
macro_rules! collection {
    ($name:literal) => {
        const COLLECTION: &'static str = $name;
        const TREES: crate::store::Placed = crate::store::Placed(concat!($name, ".placed"));
        fn layout() -> crate::datasets::mask::Layout {
            static LAYOUT: std::sync::OnceLock<crate::datasets::mask::Layout> =
                std::sync::OnceLock::new();
            *LAYOUT.get_or_init(crate::datasets::mask::Layout::of::<Self>)
        }
    };
}
pub(super) use collection;

impl<R: Record> Projected<R> {
    /// The record as v1 sends it: decoded, its views spelled out by field
    /// name.
    pub fn into_v1(self) -> Result<R, prost::DecodeError> {
        let mut record = self.record.decode()?;
        record.set_views(self.views.named(R::DATASET.spec(), R::FIELD_PREFIX));
        Ok(record)
    }
}

/// `version` and `stamp` for a record with `version` and `updated_at`
/// fields, as every published record has.
macro_rules! stamped {
    () => {
        fn version(&self) -> u64 {
            self.version.unwrap_or(0)
        }

        fn stored_version(stored: &[u8]) -> anyhow::Result<u64> {
            static NUMBER: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
            let number = *NUMBER.get_or_init(|| {
                crate::proto::wire::number_of(<Self as crate::proto::json::Named>::NAME, "version")
                    .expect("a stamped record has a version field")
            });
            Ok(crate::proto::wire::last_varint(stored, number)?.unwrap_or(0))
        }

        fn stamp(&mut self, version: u64, at: prost_types::Timestamp) {
            self.version = Some(version);
            self.updated_at = Some(at);
        }
    };
}
pub(super) use stamped;

/// An optional string field's value, or "".
pub(super) fn text_of(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::mask::{MAX_RECORD_FIELDS, first_field, record_fields};
    use crate::proto::json::Named;
    use crate::proto::{Grid, GridWorker, LegalEntity, Person};
    use prost_reflect::DescriptorPool;

    /// v2 packs a record's views by field number, the projector fills them
    /// by catalog position: the two must be one numbering, with no gaps,
    /// and fit the inline array. A field added to a message or the catalog
    /// out of step fails here, not on a client.
    #[test]
    fn every_record_field_number_is_its_catalog_position_within_the_record() {
        let pool = DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap();
        fn check<R: Record + Named>(pool: &DescriptorPool) {
            let message = pool.get_message_by_name(R::NAME).unwrap();
            let spec = R::DATASET.spec();
            let first = first_field(spec, R::FIELD_PREFIX);
            let names: Vec<&str> = record_fields(spec, R::FIELD_PREFIX).collect();
            assert!(names.len() <= MAX_RECORD_FIELDS, "{}", R::NAME);
            for (n, name) in names.iter().enumerate() {
                assert_eq!(
                    spec.fields[first + n].name,
                    format!("{}{name}", R::FIELD_PREFIX),
                    "{}: the record's catalog fields are contiguous",
                    R::NAME
                );
                let field = message
                    .get_field_by_name(name)
                    .unwrap_or_else(|| panic!("{}.{name} is in the catalog", R::NAME));
                assert_eq!(field.number() as usize, n + 1, "{}.{name}", R::NAME);
            }
            // Every field but the views themselves is in the catalog.
            assert_eq!(message.fields().count(), names.len() + 1, "{}", R::NAME);
        }
        check::<Person>(&pool);
        check::<LegalEntity>(&pool);
        check::<Grid>(&pool);
        check::<GridWorker>(&pool);
    }

    /// A publish reads the replaced record's version from its bytes
    /// without decoding it: the version read must be the decode's, for
    /// every stamped type — absent as 0, a field stored twice as its last
    /// copy, a version of another wire type or an overlong varint refused,
    /// as the decode refuses it.
    #[test]
    fn a_stored_version_read_from_the_wire_is_the_one_a_decode_reads() {
        fn check<R: Record>() {
            let stamped = |version: u64| {
                let mut r = R::default();
                r.stamp(version, prost_types::Timestamp::default());
                r.encode_to_vec()
            };
            let same = |bytes: &[u8]| {
                let decoded = R::decode(bytes).map(|r| r.version());
                let read = R::stored_version(bytes);
                match (decoded, read) {
                    (Ok(d), Ok(r)) => assert_eq!(d, r, "{}", R::NAME),
                    (Err(_), Err(_)) => {}
                    (d, r) => panic!("{}: decode {d:?}, wire {r:?}", R::NAME),
                }
            };
            same(&[]);
            for version in [0, 1, 300, u64::MAX] {
                same(&stamped(version));
                assert_eq!(R::stored_version(&stamped(version)).unwrap(), version);
            }
            let twice = [stamped(7), stamped(9)].concat();
            same(&twice);
            assert_eq!(R::stored_version(&twice).unwrap(), 9, "{}", R::NAME);
            // The version field as a string: both refuse.
            let number = crate::proto::wire::number_of(R::NAME, "version").unwrap();
            let mut wrong = Vec::new();
            crate::proto::wire::put_len(&mut wrong, number, b"7");
            same(&wrong);
            assert!(R::stored_version(&wrong).is_err(), "{}", R::NAME);
            // The version as a 64-bit fixed field: both refuse.
            let mut fixed = Vec::new();
            prost::encoding::encode_varint(number << 3 | 1, &mut fixed);
            fixed.extend_from_slice(&7u64.to_le_bytes());
            same(&fixed);
            assert!(R::stored_version(&fixed).is_err(), "{}", R::NAME);
            // An eleven-byte varint: both refuse.
            let mut overlong = Vec::new();
            prost::encoding::encode_varint(number << 3, &mut overlong);
            overlong.extend_from_slice(&[0x80; 10]);
            overlong.push(0);
            same(&overlong);
            assert!(R::stored_version(&overlong).is_err(), "{}", R::NAME);
            // Cut inside the version (the last field a stamped default
            // record encodes): both refuse.
            let whole = stamped(u64::MAX);
            same(&whole[..whole.len() - 1]);
            assert!(R::stored_version(&whole[..whole.len() - 1]).is_err());
        }
        check::<Person>();
        check::<LegalEntity>();
        check::<Grid>();
        check::<GridWorker>();
    }
}
