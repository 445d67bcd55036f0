//! The shared records on disk. Only the pipeline can read them: every read
//! method is `pub(in crate::pipeline)`, so a handler holding a
//! [`RecordStore`] still cannot fetch a record without going through
//! [`super::Admission`], which audits what leaves.
//!
//! Each collection is a tree keyed by the record key, plus an index tree
//! keyed by grid code (`<row code>\0…\0<key>`), so a region prefix is a
//! range scan.

use crate::base::clock::now_timestamp;
use crate::datasets::{GridCounts, Record};
use crate::proto::{Grid, LegalEntity, Person, RegionNode};
use crate::store::{Backend, IndexedWrite};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The record trees, and the region tree's codes with their names.
#[derive(Clone)]
pub struct RecordStore {
    backend: Arc<dyn Backend>,
    codes: Arc<RwLock<HashMap<String, String>>>,
}

fn decoded<R: Record>(stored: Option<Vec<u8>>) -> Result<Option<R>> {
    stored
        .map(|bytes| R::decode(bytes.as_slice()).context("decoding a stored record"))
        .transpose()
}

fn index_tree<R: Record>() -> String {
    format!("{}.by_grid", R::COLLECTION)
}

impl RecordStore {
    /// The records over `backend`. Making one grants nothing: its reads
    /// are the pipeline's alone.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            codes: Arc::default(),
        }
    }

    /// Loads the set of region and grid codes (structure, not data): what
    /// grants may name and published records may refer to.
    pub(in crate::pipeline) fn load_codes(&self) -> Result<()> {
        let mut codes = HashMap::new();
        self.collect_codes::<RegionNode>(&mut codes)?;
        self.collect_codes::<Grid>(&mut codes)?;
        *self.codes.write().expect("codes lock") = codes;
        Ok(())
    }

    fn collect_codes<R: Record>(&self, into: &mut HashMap<String, String>) -> Result<()> {
        for (_, v) in self.backend.scan(R::COLLECTION, b"", None, usize::MAX)? {
            let r = R::decode(v.as_slice()).context("decoding a region or grid")?;
            into.insert(r.key().to_string(), r.structure_name().to_string());
        }
        Ok(())
    }

    /// Whether a region (district, street, community) or grid code exists.
    pub(in crate::pipeline) fn code_exists(&self, code: &str) -> bool {
        self.codes.read().expect("codes lock").contains_key(code)
    }

    /// The name of a region or grid (a masked address is cut to its
    /// community's name).
    pub(in crate::pipeline) fn name_of(&self, code: &str) -> Option<String> {
        self.codes.read().expect("codes lock").get(code).cloned()
    }

    /// The record stored under `key`, decoded whole (a correction
    /// validates the whole record).
    pub(in crate::pipeline) fn get<R: Record>(&self, key: &str) -> Result<Option<R>> {
        decoded(self.stored::<R>(key)?)
    }

    /// The bytes stored under `key`, for the projector (which copies
    /// released fields from them as they are).
    pub(in crate::pipeline) fn stored<R: Record>(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.backend.get(R::COLLECTION, key.as_bytes())
    }

    /// [`RecordStore::stored`] on the caller's task: the embedded store
    /// answers from memory at once; a shared one is awaited, holding no
    /// thread (no hop through the blocking pool for a single record).
    pub(in crate::pipeline) async fn stored_async<R: Record>(
        &self,
        key: &str,
    ) -> Result<Option<Vec<u8>>> {
        if self.backend.answers_from_memory() {
            return self.stored::<R>(key);
        }
        self.backend.get_async(R::COLLECTION, key.as_bytes()).await
    }

    /// Records whose row code starts with `prefix`, in index order, after the
    /// index key `after`, as stored. Returns each with its index key (the
    /// cursor).
    pub(in crate::pipeline) fn scan_stored<R: Record>(
        &self,
        prefix: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let keys = self
            .backend
            .scan(&index_tree::<R>(), prefix.as_bytes(), after, limit)?;
        let record_keys: Vec<&[u8]> = keys
            .iter()
            .map(|(index_key, _)| R::key_from_index(index_key).as_bytes())
            .collect();
        let stored = self.backend.get_many(R::COLLECTION, &record_keys)?;
        Ok(keys
            .into_iter()
            .zip(stored)
            .filter_map(|((index_key, _), stored)| Some((index_key, stored?)))
            .collect())
    }

    /// [`RecordStore::scan_stored`], decoded whole (structure: the grid
    /// locator, the region tree).
    pub(in crate::pipeline) fn scan<R: Record>(
        &self,
        prefix: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, R)>> {
        self.scan_stored::<R>(prefix, after, limit)?
            .into_iter()
            .map(|(index_key, stored)| {
                let r = R::decode(stored.as_slice()).context("decoding a stored record")?;
                Ok((index_key, r))
            })
            .collect()
    }

    /// Household, person and entity counts of a grid, read from the grid
    /// indexes (keys only) so they never drift from the records.
    pub(in crate::pipeline) fn fill_counts<R: Record>(&self, r: &mut R) -> Result<()> {
        if !R::HAS_COUNTS {
            return Ok(());
        }
        let prefix = format!("{}\0", r.key());
        let persons = self.index_keys::<Person>(&prefix)?;
        let mut households: Vec<&[u8]> = persons
            .iter()
            .filter_map(|k| k.split(|b| *b == 0).nth(1))
            .collect();
        households.dedup();
        r.set_counts(GridCounts {
            households: households.len() as u64,
            persons: persons.len() as u64,
            entities: self.index_keys::<LegalEntity>(&prefix)?.len() as u64,
        });
        Ok(())
    }

    fn index_keys<R: Record>(&self, prefix: &str) -> Result<Vec<Vec<u8>>> {
        Ok(self
            .backend
            .scan(&index_tree::<R>(), prefix.as_bytes(), None, usize::MAX)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// Inserts or replaces a record, moving its index entry and stamping
    /// `version` (previous + 1) and `updated_at`. Writing needs no audit of
    /// its own here: publishing audits before it calls this, and the demo
    /// loader runs before the gateway serves.
    pub fn upsert<R: Record>(&self, record: R) -> Result<()> {
        self.upsert_all(vec![record])
    }

    /// [`Self::upsert`] for many records in one write (see
    /// [`Backend::upsert_indexed`] for what a crash midway leaves). A key
    /// named twice ends as its last record.
    pub fn upsert_all<R: Record>(&self, mut records: Vec<R>) -> Result<()> {
        let keys: Vec<String> = records.iter().map(|r| r.key().to_string()).collect();
        let key_bytes: Vec<&[u8]> = keys.iter().map(|k| k.as_bytes()).collect();
        let at = now_timestamp();
        self.backend.upsert_indexed(
            R::COLLECTION,
            &index_tree::<R>(),
            &key_bytes,
            &mut |n, old| {
                let old: Option<R> = old.map(R::decode).transpose()?;
                let version = old.as_ref().map_or(0, R::version) + 1;
                let record = &mut records[n];
                record.stamp(version, at);
                Ok(IndexedWrite {
                    value: record.encode_to_vec(),
                    old_index: old.map(|o| o.index_key()),
                    new_index: record.index_key(),
                })
            },
        )?;
        if R::IS_STRUCTURE {
            let mut codes = self.codes.write().expect("codes lock");
            for (key, record) in keys.into_iter().zip(&records) {
                codes.insert(key, record.structure_name().to_string());
            }
        }
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.backend.sync()
    }
}
