//! The shared records on disk. Only the pipeline can read them: every read
//! method is `pub(in crate::pipeline)`, so a handler holding a
//! [`RecordStore`] still cannot fetch a record without going through
//! [`super::Admission`], which audits what leaves.
//!
//! Each collection keeps every record once, in index order: under its
//! index key (`<row code>\0…\0<key>`), so a region prefix is one range
//! scan of whole records, with each key's index key beside them for reads
//! by key ([`Placed`]).

use crate::base::clock::now_timestamp;
use crate::datasets::{GridCounts, Record};
use crate::proto::{Grid, GridWorker, LegalEntity, Person, RegionNode};
use crate::store::{Backend, Placed, PlacedKey, PlacedWrite, ScanVisit};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::ops::ControlFlow;
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

/// Records moved per step when a store from before records were kept in
/// index order is opened.
const ADOPT_CHUNK: usize = 2_000;

impl RecordStore {
    /// The records over `backend`. Making one grants nothing: its reads
    /// are the pipeline's alone.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            codes: Arc::default(),
        }
    }

    /// Readies the records for serving: moves those of a store written
    /// before records were kept in index order ([`Self::adopt_unplaced`]),
    /// then loads the set of region and grid codes (structure, not data):
    /// what grants may name and published records may refer to.
    pub(in crate::pipeline) fn prepare_to_serve(&self) -> Result<()> {
        let moved = self.adopt_unplaced::<RegionNode>()?
            + self.adopt_unplaced::<Grid>()?
            + self.adopt_unplaced::<GridWorker>()?
            + self.adopt_unplaced::<Person>()?
            + self.adopt_unplaced::<LegalEntity>()?;
        if moved > 0 {
            self.backend.sync()?;
            tracing::info!(records = moved, "records moved into index order");
        }
        let mut codes = HashMap::new();
        self.collect_codes::<RegionNode>(&mut codes)?;
        self.collect_codes::<Grid>(&mut codes)?;
        *self.codes.write().expect("codes lock") = codes;
        Ok(())
    }

    fn collect_codes<R: Record>(&self, into: &mut HashMap<String, String>) -> Result<()> {
        for (_, r) in self.scan::<R>("", None, usize::MAX)? {
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
        self.backend.get_placed(R::TREES, key.as_bytes())
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
        self.backend
            .get_placed_async(R::TREES, key.as_bytes())
            .await
    }

    /// Records whose row code starts with `prefix`, in index order, after the
    /// index key `after`, as stored: one range read. Hands each to `visit`
    /// with its index key (the cursor), borrowed from the store, until
    /// `visit` breaks.
    pub(in crate::pipeline) fn scan_stored_each<R: Record>(
        &self,
        prefix: &str,
        after: Option<&[u8]>,
        limit: usize,
        visit: &mut ScanVisit<'_>,
    ) -> Result<()> {
        let after = after.map(Placed::record_key);
        self.backend.scan_each(
            R::TREES.0,
            &Placed::record_key(prefix.as_bytes()),
            after.as_deref(),
            limit,
            &mut |at, stored| visit(Placed::place_of(at), stored),
        )
    }

    /// [`RecordStore::scan_stored_each`], collected.
    pub(in crate::pipeline) fn scan_stored<R: Record>(
        &self,
        prefix: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rows = Vec::new();
        self.scan_stored_each::<R>(prefix, after, limit, &mut |index_key, stored| {
            rows.push((index_key.to_vec(), stored.to_vec()));
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(rows)
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

    /// Household, person and entity counts of a grid, read from the
    /// records' places (keys only) so they never drift from the records.
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

    /// The places starting with `prefix` (keys only: no record is read).
    fn index_keys<R: Record>(&self, prefix: &str) -> Result<Vec<Vec<u8>>> {
        let at = Placed::record_key(prefix.as_bytes());
        Ok(self
            .backend
            .scan_keys(R::TREES.0, &at)?
            .iter()
            .map(|k| Placed::place_of(k).to_vec())
            .collect())
    }

    /// Inserts or replaces a record, moving it to its place and stamping
    /// `version` (previous + 1) and `updated_at`. Writing needs no audit of
    /// its own here: publishing audits before it calls this, and the demo
    /// loader runs before the gateway serves.
    pub fn upsert<R: Record>(&self, record: R) -> Result<()> {
        self.upsert_all(vec![record])
    }

    /// [`Self::upsert`] for many records in one atomic write
    /// ([`Backend::upsert_placed`]). A key named twice ends as its last
    /// record. Each record's new place is where it most likely is now
    /// ([`PlacedKey`]): a republished record mostly stays in its region.
    pub fn upsert_all<R: Record>(&self, mut records: Vec<R>) -> Result<()> {
        let keys: Vec<String> = records.iter().map(|r| r.key().to_string()).collect();
        let places: Vec<Vec<u8>> = records.iter().map(Record::index_key).collect();
        let likely: Vec<PlacedKey<'_>> = keys
            .iter()
            .zip(&places)
            .map(|(key, place)| PlacedKey {
                key: key.as_bytes(),
                likely_place: Some(place),
            })
            .collect();
        let at = now_timestamp();
        self.backend
            .upsert_placed(R::TREES, &likely, &mut |n, old| {
                let version = match old {
                    Some(bytes) => R::stored_version(bytes)?,
                    None => 0,
                }
                .checked_add(1)
                .context("a stored record's version is at its maximum")?;
                let record = &mut records[n];
                record.stamp(version, at);
                Ok(PlacedWrite {
                    value: record.encode_to_vec(),
                    // A stamp changes no place.
                    place: places[n].clone(),
                })
            })?;
        if R::IS_STRUCTURE {
            let mut codes = self.codes.write().expect("codes lock");
            for (key, record) in keys.into_iter().zip(&records) {
                codes.insert(key, record.structure_name().to_string());
            }
        }
        Ok(())
    }

    /// Moves the records of a store written before records were kept in
    /// index order — each under its key in the tree named
    /// [`Record::COLLECTION`], with an empty entry in `<name>.by_grid` —
    /// into [`Record::TREES`], then empties the old trees. Bytes, versions
    /// and stamps stay as they were. A record already in its place (moved
    /// by a start this one interrupted, by another node, or published
    /// since) is kept, never overwritten by its old copy; so a start
    /// interrupted midway, or several nodes of a shared store starting at
    /// once, finish the move and lose nothing. Returns how many moved.
    fn adopt_unplaced<R: Record>(&self) -> Result<usize> {
        let mut moved = 0;
        loop {
            let chunk = self.backend.scan(R::COLLECTION, b"", None, ADOPT_CHUNK)?;
            if chunk.is_empty() {
                break;
            }
            let keys: Vec<&[u8]> = chunk.iter().map(|(k, _)| k.as_slice()).collect();
            self.backend.upsert_placed(
                R::TREES,
                &PlacedKey::without_places(&keys),
                &mut |n, placed| {
                    moved += usize::from(placed.is_none());
                    let value = placed.unwrap_or(&chunk[n].1).to_vec();
                    let record = R::decode(value.as_slice())
                        .with_context(|| format!("decoding a record of {}", R::COLLECTION))?;
                    Ok(PlacedWrite {
                        place: record.index_key(),
                        value,
                    })
                },
            )?;
            let gone = keys.iter().map(|k| (k.to_vec(), None)).collect();
            self.backend.apply_batch(R::COLLECTION, gone)?;
        }
        let old_index = format!("{}.by_grid", R::COLLECTION);
        loop {
            let chunk = self.backend.scan(&old_index, b"", None, ADOPT_CHUNK)?;
            if chunk.is_empty() {
                break;
            }
            let gone = chunk.into_iter().map(|(k, _)| (k, None)).collect();
            self.backend.apply_batch(&old_index, gone)?;
        }
        Ok(moved)
    }

    pub fn sync(&self) -> Result<()> {
        self.backend.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn person(id: &str, grid: &str, version: u64) -> Person {
        Person {
            id_number: Some(id.into()),
            residence_grid: Some(grid.into()),
            household_id: Some(format!("H-{id}")),
            name: Some(format!("person {id}")),
            version: Some(version),
            ..Default::default()
        }
    }

    /// A store written before records were kept in index order: each record
    /// under its key, an empty entry in the old index.
    fn write_unplaced(backend: &dyn Backend, p: &Person) {
        backend
            .put("population", p.key().as_bytes(), &p.encode_to_vec())
            .unwrap();
        backend
            .put("population.by_grid", &p.index_key(), b"")
            .unwrap();
    }

    /// A version cannot go backwards: a stored record at the largest
    /// version is not replaced by one stamped 0 (nor does the add panic
    /// while the store's write lock is held).
    #[test]
    fn a_stored_version_at_its_maximum_is_refused_not_wrapped() {
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::store::open_dir(dir.path()).unwrap();
        let store = RecordStore::new(backend.clone());
        let last = person("A", "310115001002003", u64::MAX);
        let place = last.index_key();
        let tree = Person::TREES.0;
        backend.put(tree, &Placed::place_key(b"A"), &place).unwrap();
        backend
            .put(tree, &Placed::record_key(&place), &last.encode_to_vec())
            .unwrap();
        let refused = store.upsert(person("A", "310115001002003", 1)).unwrap_err();
        assert!(format!("{refused:#}").contains("version"), "{refused:#}");
        let kept: Person = store.get("A").unwrap().unwrap();
        assert_eq!(kept.version(), u64::MAX, "the stored record is untouched");
        // The store still takes writes: nothing was left locked.
        store.upsert(person("B", "310115001002003", 1)).unwrap();
        assert_eq!(store.get::<Person>("B").unwrap().unwrap().version(), 1);
    }

    #[test]
    fn a_store_from_before_index_order_is_moved_into_it_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::store::open_dir(dir.path()).unwrap();
        let (a, b) = (
            person("A", "310115001002003", 3),
            person("B", "310115001001001", 1),
        );
        write_unplaced(&*backend, &a);
        write_unplaced(&*backend, &b);
        // B was published again after a start that moved it was cut short:
        // its old copy must not win.
        let newer = person("B", "310115001001002", 7);
        let tree = Person::TREES.0;
        let place = newer.index_key();
        backend.put(tree, &Placed::place_key(b"B"), &place).unwrap();
        backend
            .put(tree, &Placed::record_key(&place), &newer.encode_to_vec())
            .unwrap();

        let store = RecordStore::new(backend.clone());
        store.prepare_to_serve().unwrap();
        assert_eq!(
            store.stored::<Person>("A").unwrap(),
            Some(a.encode_to_vec()),
            "moved as it was: bytes, version and stamp"
        );
        assert_eq!(store.get::<Person>("B").unwrap(), Some(newer.clone()));
        let listed: Vec<Vec<u8>> = store
            .scan_stored::<Person>("310115", None, 10)
            .unwrap()
            .into_iter()
            .map(|(_, bytes)| bytes)
            .collect();
        assert_eq!(listed, [newer.encode_to_vec(), a.encode_to_vec()]);
        for old in ["population", "population.by_grid"] {
            assert!(
                backend.scan(old, b"", None, 10).unwrap().is_empty(),
                "{old}"
            );
        }
        // Opening again moves nothing and changes nothing.
        store.prepare_to_serve().unwrap();
        assert_eq!(store.scan_stored::<Person>("", None, 10).unwrap().len(), 2);
    }

    #[test]
    fn a_record_moved_to_another_grid_is_listed_only_there_and_read_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::new(crate::store::open_dir(dir.path()).unwrap());
        store.upsert(person("A", "310115001001001", 0)).unwrap();
        store.upsert(person("A", "310115001001002", 0)).unwrap();
        assert!(
            store
                .scan_stored::<Person>("310115001001001", None, 10)
                .unwrap()
                .is_empty()
        );
        let moved = store.scan::<Person>("310115001001002", None, 10).unwrap();
        assert_eq!(moved.len(), 1);
        assert_eq!(
            moved[0].1.version,
            Some(2),
            "versions count on across a move"
        );
        assert_eq!(store.get::<Person>("A").unwrap(), Some(moved[0].1.clone()));
    }

    /// A store that moves a record (as a publish would) right after a read
    /// finds its place, before the read of the record there.
    struct MovesMidRead {
        inner: Arc<dyn Backend>,
        move_to: std::sync::Mutex<Option<Person>>,
    }

    impl Backend for MovesMidRead {
        fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
            let got = self.inner.get(tree, key)?;
            if key.starts_with(b"p") {
                if let Some(moved) = self.move_to.lock().unwrap().take() {
                    RecordStore::new(self.inner.clone()).upsert(moved)?;
                }
            }
            Ok(got)
        }
        fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<()> {
            self.inner.put(tree, key, value)
        }
        fn remove(&self, tree: &str, key: &[u8]) -> Result<()> {
            self.inner.remove(tree, key)
        }
        fn scan(
            &self,
            tree: &str,
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
            self.inner.scan(tree, prefix, after, limit)
        }
        fn upsert_placed(
            &self,
            trees: Placed,
            keys: &[crate::store::PlacedKey<'_>],
            update: &mut crate::store::PlacedUpdate<'_>,
        ) -> Result<()> {
            self.inner.upsert_placed(trees, keys, update)
        }
        fn update_counter(
            &self,
            tree: &str,
            key: &[u8],
            f: &mut dyn FnMut(u64) -> u64,
        ) -> Result<(u64, u64)> {
            self.inner.update_counter(tree, key, f)
        }
        fn scan_rev(
            &self,
            tree: &str,
            prefix: &[u8],
            before: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
            self.inner.scan_rev(tree, prefix, before, limit)
        }
        fn put_if_absent(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
            self.inner.put_if_absent(tree, key, value)
        }
        fn apply_batch(&self, tree: &str, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
            self.inner.apply_batch(tree, writes)
        }
        fn sync(&self) -> Result<()> {
            self.inner.sync()
        }
        fn trees(&self) -> Result<Vec<String>> {
            self.inner.trees()
        }
        fn write_moving_fence(
            &self,
            tree: &str,
            writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
            fence: crate::store::FenceRow,
        ) -> Result<u64> {
            self.inner.write_moving_fence(tree, writes, fence)
        }
    }

    #[tokio::test]
    async fn a_read_by_key_finds_a_record_moved_while_it_reads() {
        let dir = tempfile::tempdir().unwrap();
        let inner = crate::store::open_dir(dir.path()).unwrap();
        RecordStore::new(inner.clone())
            .upsert(person("A", "310115001001001", 0))
            .unwrap();
        let backend = Arc::new(MovesMidRead {
            inner,
            move_to: Default::default(),
        });
        let store = RecordStore::new(backend.clone());
        for moved in ["310115001001002", "310115001001003"] {
            *backend.move_to.lock().unwrap() = Some(person("A", moved, 0));
            let found = store.get::<Person>("A").unwrap().expect("found");
            assert_eq!(found.residence_grid.as_deref(), Some(moved));
        }
        *backend.move_to.lock().unwrap() = Some(person("A", "310115001001001", 0));
        let found = store.stored_async::<Person>("A").await.unwrap();
        assert!(found.is_some(), "read on the caller's task follows it too");
    }
}
