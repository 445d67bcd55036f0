//! The embedded default backend: one sled database in the data directory.

use super::place_hints::Known;
use super::sled_trees::{Trees, WriteTree};
use super::{Backend, Placed, PlacedKey, PlacedUpdate, ScanVisit, rev_upper};
use anyhow::{Context, Result};
use std::ops::{Bound, ControlFlow};
use std::path::Path;
use std::sync::{Arc, Mutex};

pub struct SledBackend {
    /// The database, by tree ([`Trees`]: its only way to write marks the
    /// hints).
    db: Trees,
    placed_writes: Mutex<()>,
    /// Held shared by the audit writer from its fence read until its batch
    /// is synced; a fence move takes it whole.
    fence: Arc<std::sync::RwLock<()>>,
}

impl SledBackend {
    pub fn open(dir: &Path) -> Result<Self> {
        Ok(Self {
            db: Trees::open(dir)?,
            placed_writes: Mutex::new(()),
            fence: Arc::default(),
        })
    }
}

/// `key`'s place in `trees` and the record there, as stored; a place
/// with no record is logged ([`super::placed_nowhere`]) and read as none.
fn placed_record(
    tree: &WriteTree<'_>,
    trees: Placed,
    key: &[u8],
) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
    let Some(place) = tree.get(Placed::place_key(key))? else {
        return Ok(None);
    };
    match tree.get(Placed::record_key(&place))? {
        Some(v) => Ok(Some((place.to_vec(), v.to_vec()))),
        None => {
            super::placed_nowhere(trees, key);
            Ok(None)
        }
    }
}

/// Looks for each key's record at its likely place first, while that has
/// found it at least as often as not in this call: a republished chunk is
/// then found in one read per record, where its place and then the record
/// took two; a first load, whose likely places all hold nothing, goes back
/// to one read of each (absent) place after its first miss. A read made
/// either way says whether the likely place was right, so the tally
/// follows the chunk.
#[derive(Default)]
struct LikelyTally {
    right: usize,
    wrong: usize,
}

impl LikelyTally {
    fn find(
        &mut self,
        tree: &WriteTree<'_>,
        trees: Placed,
        key: PlacedKey<'_>,
    ) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let Some(at) = key.likely() else {
            return placed_record(tree, trees, key.key);
        };
        if self.right >= self.wrong {
            if let Some(v) = tree.get(Placed::record_key(at))? {
                self.right += 1;
                return Ok(Some((at.to_vec(), v.to_vec())));
            }
        }
        let found = placed_record(tree, trees, key.key)?;
        if found.as_ref().is_some_and(|(place, _)| place == at) {
            self.right += 1;
        } else {
            self.wrong += 1;
        }
        Ok(found)
    }
}

impl Backend for SledBackend {
    fn trees(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for name in self.db.names() {
            // sled's own default tree: the planes above use named trees only.
            if name.as_ref() == b"__sled__default" {
                continue;
            }
            let name = String::from_utf8(name.to_vec()).context("a tree name is not UTF-8")?;
            if !self.db.read(&name)?.is_empty() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.read(tree)?.get(key)?.map(|v| v.to_vec()))
    }

    /// The record kept from an earlier read while its collection is
    /// unchanged since ([`super::place_hints`]); else the record at its
    /// hinted place in one read; else its place, then the record. What is
    /// found is remembered.
    fn get_placed(&self, trees: Placed, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let (at, stable) = match self.db.hints().known(trees, key) {
            Known::Record(record) => return Ok(Some(record.to_vec())),
            Known::Look { at, stable } => (at, stable),
        };
        let tree = self.db.read(trees.0)?;
        if let Some(at) = at {
            if let Some(record) = tree.get(&at)? {
                self.db
                    .hints()
                    .remember(trees, key, Placed::place_of(&at), &record, stable);
                return Ok(Some(record.to_vec()));
            }
        }
        let Some((place, record)) = super::follow_place(key, |k| Ok(tree.get(k)?))? else {
            return Ok(None);
        };
        self.db
            .hints()
            .remember(trees, key, &place, &record, stable);
        Ok(Some(record.to_vec()))
    }

    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.db.write(tree)?.insert(key, value)?;
        Ok(())
    }

    fn remove(&self, tree: &str, key: &[u8]) -> Result<()> {
        self.db.write(tree)?.remove(key)?;
        Ok(())
    }

    fn scan(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        self.scan_each(tree, prefix, after, limit, &mut |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    fn scan_each(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        visit: &mut ScanVisit<'_>,
    ) -> Result<()> {
        let tree = self.db.read(tree)?;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        for item in tree
            .range::<&[u8], _>((start, Bound::Unbounded))
            .take(limit)
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) || visit(&k, &v)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn scan_rev(
        &self,
        tree: &str,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let tree = self.db.read(tree)?;
        let end = rev_upper(prefix, before).map_or(Bound::Unbounded, Bound::Excluded);
        let mut out = Vec::new();
        for item in tree.range((Bound::Included(prefix.to_vec()), end)).rev() {
            let (k, v) = item?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn put_if_absent(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        Ok(
            match self
                .db
                .write(tree)?
                .compare_and_swap(key, None::<&[u8]>, Some(value))?
            {
                Ok(()) => value.to_vec(),
                Err(held) => held.current.map_or_else(Vec::new, |v| v.to_vec()),
            },
        )
    }

    fn apply_batch(&self, tree: &str, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()> {
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        Ok(self.db.write(tree)?.apply_batch(batch)?)
    }

    fn upsert_placed(
        &self,
        trees: Placed,
        keys: &[PlacedKey<'_>],
        update: &mut PlacedUpdate<'_>,
    ) -> Result<()> {
        // Read-modify-write: one writer at a time, so no update is lost.
        let _one = self.placed_writes.lock().expect("placed write lock");
        let tree = self.db.write(trees.0)?;
        // Keys in order (a stable sort: a key named twice keeps the order
        // it was named in): the lookups of places walk their leaves in
        // turn, and a repeated key comes right after its earlier naming,
        // whose write it sees.
        let mut order: Vec<usize> = (0..keys.len()).collect();
        order.sort_by_key(|&n| keys[n].key);
        let mut batch = sled::Batch::default();
        let mut likely = LikelyTally::default();
        // The previous key's place and bytes as this call has left them.
        let mut previous: Option<(&[u8], Vec<u8>, Vec<u8>)> = None;
        for n in order {
            let key = keys[n].key;
            let current = match previous.take() {
                Some((was, place, value)) if was == key => Some((place, value)),
                _ => likely.find(&tree, trees, keys[n])?,
            };
            let w = update(n, current.as_ref().map(|(_, v)| v.as_slice()))?;
            let moved = current.as_ref().is_none_or(|(old, _)| *old != w.place);
            if let Some((old, _)) = current.filter(|_| moved) {
                batch.remove(Placed::record_key(&old));
            }
            batch.insert(Placed::record_key(&w.place), w.value.as_slice());
            // A record written where it was keeps its place entry as it is.
            if moved {
                batch.insert(Placed::place_key(key), w.place.as_slice());
            }
            previous = Some((key, w.place, w.value));
        }
        tree.apply_batch(batch)
            .with_context(|| format!("writing the records of {}", trees.0))
    }

    fn write_moving_fence(
        &self,
        tree: &str,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        fence: super::FenceRow,
    ) -> Result<u64> {
        let _whole = self.fence.write().expect("fence lock");
        self.apply_batch(tree, writes)?;
        let (_, moved) = self.update_counter(fence.tree, fence.key, &mut super::next_fence)?;
        Ok(moved)
    }

    fn fence_lock(&self) -> Option<Arc<std::sync::RwLock<()>>> {
        Some(self.fence.clone())
    }

    fn update_counter(
        &self,
        tree: &str,
        key: &[u8],
        f: &mut dyn FnMut(u64) -> u64,
    ) -> Result<(u64, u64)> {
        let read = |v: Option<&[u8]>| {
            v.and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        let mut old = 0;
        let new = self.db.write(tree)?.update_and_fetch(key, |v| {
            old = read(v);
            Some(f(old).to_le_bytes().to_vec())
        })?;
        Ok((old, read(new.as_deref())))
    }

    fn sync(&self) -> Result<()> {
        self.db.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PlacedKey, PlacedWrite};

    const T: Placed = Placed("people.placed");

    /// Writes `key`'s record `value` at the place `g\0key`.
    fn write(store: &SledBackend, key: &[u8], g: &str, value: u8) {
        store
            .upsert_placed(T, &PlacedKey::without_places(&[key]), &mut |_, _| {
                Ok(PlacedWrite {
                    value: vec![value],
                    place: [g.as_bytes(), b"\0", key].concat(),
                })
            })
            .unwrap();
    }

    /// The record key `key`'s hint names, if any (and no record kept).
    fn hinted(store: &SledBackend, key: &[u8]) -> Option<Vec<u8>> {
        store.db.hints().hinted(T, key)
    }

    /// Whether `key`'s record is answered from memory.
    fn kept(store: &SledBackend, key: &[u8]) -> bool {
        store.db.hints().kept(T, key).is_some()
    }

    /// Reads `key` twice: from the store, then from memory (if found).
    fn read_twice(store: &SledBackend, key: &[u8]) -> Option<Vec<u8>> {
        assert!(!kept(store, key), "a record kept across a write");
        let first = store.get_placed(T, key).unwrap();
        assert_eq!(kept(store, key), first.is_some());
        assert_eq!(store.get_placed(T, key).unwrap(), first, "read again");
        first
    }

    #[test]
    fn a_read_by_key_sees_every_move_and_erasure_after_its_place_was_hinted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledBackend::open(dir.path()).unwrap();
        write(&store, b"k", "g1", 1);
        assert_eq!(hinted(&store, b"k"), None, "a write leaves no hint");
        assert_eq!(read_twice(&store, b"k"), Some(vec![1]));
        // Written again as it was: the record is no longer kept, its hint is.
        write(&store, b"k", "g1", 1);
        assert_eq!(hinted(&store, b"k"), Some(b"rg1\0k".to_vec()));
        // Moved away and back with new bytes, no read between: the hint
        // names g1 throughout, and the record there is the new one.
        write(&store, b"k", "g2", 2);
        write(&store, b"k", "g1", 3);
        assert_eq!(read_twice(&store, b"k"), Some(vec![3]));
        // Moved away: the hint misses, the place is read and remembered.
        write(&store, b"k", "g2", 4);
        assert_eq!(read_twice(&store, b"k"), Some(vec![4]));
        // Rewritten where it is.
        write(&store, b"k", "g2", 5);
        assert_eq!(hinted(&store, b"k"), Some(b"rg2\0k".to_vec()));
        assert_eq!(read_twice(&store, b"k"), Some(vec![5]));
        // Removed (the record and its place in one batch): gone, hint or not.
        store
            .apply_batch(
                T.0,
                vec![
                    (Placed::record_key(b"g2\0k"), None),
                    (Placed::place_key(b"k"), None),
                ],
            )
            .unwrap();
        assert_eq!(read_twice(&store, b"k"), None);
    }

    /// Writes `key`'s record `value` at `g\0key`, told it is likely at
    /// `likely`; the bytes the write was given as the record's current ones.
    fn write_likely(
        store: &SledBackend,
        key: &[u8],
        likely: &[u8],
        g: &str,
        value: u8,
    ) -> Option<Vec<u8>> {
        let mut found = None;
        let key = PlacedKey {
            key,
            likely_place: Some(likely),
        };
        store
            .upsert_placed(T, &[key], &mut |_, old| {
                found = old.map(<[u8]>::to_vec);
                Ok(PlacedWrite {
                    value: vec![value],
                    place: [g.as_bytes(), b"\0", key.key].concat(),
                })
            })
            .unwrap();
        found
    }

    /// Every record of the collection: its place and bytes.
    fn records(store: &SledBackend) -> Vec<(Vec<u8>, Vec<u8>)> {
        store.scan(T.0, b"r", None, 100).unwrap()
    }

    #[test]
    fn a_write_told_a_likely_place_finds_the_record_wherever_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledBackend::open(dir.path()).unwrap();
        write(&store, b"k", "g1", 1);
        write(&store, b"j", "g1", 7);
        // Where it was said to be: found there, written again in place.
        assert_eq!(write_likely(&store, b"k", b"g1\0k", "g1", 2), Some(vec![1]));
        // Not there: found at its place, and moved on from it.
        assert_eq!(write_likely(&store, b"k", b"g2\0k", "g2", 3), Some(vec![2]));
        assert_eq!(records(&store).len(), 2, "no copy left at g1");
        // Said to be at another key's place, even one ending in this key:
        // that record is never taken for this key's.
        write(&store, b"jk", "g1", 8);
        assert_eq!(write_likely(&store, b"k", b"g1\0j", "g3", 4), Some(vec![3]));
        assert_eq!(
            write_likely(&store, b"k", b"g1\0jk", "g3", 4),
            Some(vec![4])
        );
        // Said to be somewhere, and nowhere: written as new.
        assert_eq!(write_likely(&store, b"n", b"g1\0n", "g1", 5), None);
        assert_eq!(
            records(&store),
            vec![
                (b"rg1\0j".to_vec(), vec![7]),
                (b"rg1\0jk".to_vec(), vec![8]),
                (b"rg1\0n".to_vec(), vec![5]),
                (b"rg3\0k".to_vec(), vec![4]),
            ]
        );
        for (key, value) in [(&b"j"[..], 7), (b"jk", 8), (b"k", 4), (b"n", 5)] {
            assert_eq!(store.get_placed(T, key).unwrap(), Some(vec![value]));
        }
    }

    /// One call over records found where said, new ones (enough to stop
    /// looking at likely places first), then found and moved ones again:
    /// each is given its current bytes and ends once, at its new place.
    #[test]
    fn a_chunk_of_found_new_and_moved_records_is_written_whole_either_way_of_looking() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledBackend::open(dir.path()).unwrap();
        let names: Vec<[u8; 1]> = (b'a'..=b'r').map(|c| [c]).collect();
        // a–e and p, q at g1; r at g2; f–o new.
        for (n, key) in names.iter().enumerate() {
            match key[0] {
                b'a'..=b'e' | b'p' | b'q' => write(&store, key, "g1", n as u8),
                b'r' => write(&store, key, "g2", n as u8),
                _ => {}
            }
        }
        let likely: Vec<Vec<u8>> = names.iter().map(|k| [&b"g1\0"[..], k].concat()).collect();
        let keys: Vec<PlacedKey<'_>> = names
            .iter()
            .zip(&likely)
            .map(|(key, at)| PlacedKey {
                key,
                likely_place: Some(at),
            })
            .collect();
        let mut seen = Vec::new();
        store
            .upsert_placed(T, &keys, &mut |n, old| {
                seen.push((n, old.map(<[u8]>::to_vec)));
                Ok(PlacedWrite {
                    value: vec![100 + n as u8],
                    place: likely[n].clone(),
                })
            })
            .unwrap();
        let expected: Vec<(usize, Option<Vec<u8>>)> = names
            .iter()
            .enumerate()
            .map(|(n, key)| (n, (!(b'f'..=b'o').contains(&key[0])).then(|| vec![n as u8])))
            .collect();
        assert_eq!(seen, expected);
        let all = records(&store);
        assert_eq!(all.len(), names.len(), "each record once: {all:?}");
        assert!(all.iter().all(|(at, _)| at.starts_with(b"rg1\0")));
        for (n, key) in names.iter().enumerate() {
            assert_eq!(store.get_placed(T, key).unwrap(), Some(vec![100 + n as u8]));
        }
    }

    #[test]
    fn every_way_of_writing_a_collection_ends_its_records_answered_from_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledBackend::open(dir.path()).unwrap();
        write(&store, b"k", "g", 1);
        let at = Placed::record_key(b"g\0k");
        let fence = crate::store::FenceRow {
            tree: T.0,
            key: b"fence",
        };
        // Each way changes the record or only some other key of its tree;
        // either way, its record is read from the store again after it:
        // the record each leaves.
        type Change<'a> = &'a dyn Fn(&SledBackend);
        let ways: [(&str, Change, u8); 7] = [
            ("put", &|s| s.put(T.0, &at, &[2]).unwrap(), 2),
            ("remove", &|s| s.remove(T.0, b"other").unwrap(), 2),
            (
                "put_if_absent",
                &|s| drop(s.put_if_absent(T.0, b"o", &[0]).unwrap()),
                2,
            ),
            (
                "apply_batch",
                &|s| {
                    s.apply_batch(T.0, vec![(at.clone(), Some(vec![3]))])
                        .unwrap()
                },
                3,
            ),
            ("upsert_placed", &|s| write(s, b"k", "g", 4), 4),
            (
                "update_counter",
                &|s| {
                    s.update_counter(T.0, b"n", &mut |n| n + 1).unwrap();
                },
                4,
            ),
            (
                "write_moving_fence",
                &|s| {
                    let writes = vec![(at.clone(), Some(vec![5]))];
                    s.write_moving_fence(T.0, writes, fence).unwrap();
                },
                5,
            ),
        ];
        for (name, change, left) in ways {
            store.get_placed(T, b"k").unwrap();
            assert!(kept(&store, b"k"), "kept after a read, before {name}");
            change(&store);
            assert!(
                !kept(&store, b"k"),
                "still answered from memory after {name}"
            );
            let after = store.get_placed(T, b"k").unwrap();
            assert_eq!(after, Some(vec![left]), "after {name}");
        }
        assert_eq!(store.get_placed(T, b"k").unwrap(), Some(vec![5]));
        // A write of another tree leaves it answered from memory.
        store.put("elsewhere", b"k", &[0]).unwrap();
        assert!(kept(&store, b"k"));
    }

    #[test]
    fn a_record_moving_under_hinted_reads_is_always_found_never_older() {
        use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::SeqCst};
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().unwrap();
        let store = SledBackend::open(dir.path()).unwrap();
        write(&store, b"k", "g0", 0);
        let (done, seen) = (AtomicBool::new(false), AtomicU8::new(0));
        let reads = [AtomicU64::new(0), AtomicU64::new(0)];
        // Two readers: once either has read a version, no read begun after
        // that, by either, answers an older one — whether from the store
        // or from memory.
        let reader = |me: usize| {
            let reads = &reads;
            let (done, seen, store) = (&done, &seen, &store);
            move || {
                while !done.load(SeqCst) {
                    let floor = seen.load(SeqCst);
                    let got = store.get_placed(T, b"k").unwrap().expect("always found");
                    assert!(got[0] >= floor, "read {} after {floor}", got[0]);
                    seen.fetch_max(got[0], SeqCst);
                    reads[me].fetch_add(1, SeqCst);
                }
            }
        };
        std::thread::scope(|s| {
            let readers = [s.spawn(reader(0)), s.spawn(reader(1))];
            // Back and forth between three places, so a place is left and
            // come back to between a reader's two reads.
            for v in 1..=200u8 {
                write(&store, b"k", ["g0", "g1", "g2"][v as usize % 3], v);
                // Each reader finishes a read before the next write, so a
                // read is overtaken by one write at most — fewer than the
                // `MOVES_FOLLOWED` moves it follows — however its thread
                // is scheduled (a test run on two busy cores stalls one
                // for milliseconds).
                let since = [reads[0].load(SeqCst), reads[1].load(SeqCst)];
                let deadline = Instant::now() + Duration::from_secs(10);
                while (0..2).any(|r| reads[r].load(SeqCst) == since[r])
                    && !readers.iter().any(|r| r.is_finished())
                    && Instant::now() < deadline
                {
                    std::thread::yield_now();
                }
            }
            done.store(true, SeqCst);
            for r in readers {
                r.join().unwrap();
            }
        });
        assert_eq!(store.get_placed(T, b"k").unwrap(), Some(vec![200]));
    }
}
