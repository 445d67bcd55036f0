//! Where the embedded store last found each record of a placed collection,
//! and the record itself, so a read by key ([`super::Backend::get_placed`])
//! of a record read before answers from memory, or else reads the record
//! directly instead of its place first. One sled point read was 4.5–5.3 µs
//! of a pull's server CPU, ~10 % of it (`perf` under `govshare bench
//! --only unary`, docs/performance.md).
//!
//! **A kept record** is given only while its collection is unchanged
//! since it was read. Every sled call that changes a tree runs under
//! [`PlaceHints::writing`], taken by `sled_trees::Trees::write`, the one
//! way to a writable tree; it drops the collection's kept records, moves
//! its `generation` and counts the write as under way until it ends. A
//! record is kept only if no write was under way, nor began, from before
//! the read of the store until it is kept; and none has begun since, or it
//! would have been dropped. So a read answered from memory is one the
//! store would have answered the same at that instant — never a record a
//! write (an erasure, a correction, a publish) has begun to change, never
//! older than a read that ended before it began.
//!
//! **A hint** is never trusted, only tried. It is kept only for a place
//! that *names its key*: ends in a NUL and the key, the key free of NUL.
//! Every place this gateway writes is one (`Record::index_key`, tested for
//! each record type), and every key it writes is validated free of NUL
//! when it is published. No other NUL-free key's place can end so, so
//! whatever record sits at a hinted place is that key's; and a record and
//! its place change in one atomic batch (a placed upsert, or an erasure of
//! both), so at any instant a key's record is at exactly one place. A
//! record found at the hint is therefore the key's current record; none
//! found (it moved, or the store was changed from outside) falls back to
//! reading the place, as before hints.

use super::Placed;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Most hints kept per collection. A full collection remembers no new key
/// (a known key's hint is still moved): a bound on memory, ~160 bytes a
/// hint (a `Person`'s key and record key on the heap, and the table) and so
/// ~21 MB a full collection, ~8 MB more for the table of its kept records
/// (their bytes are [`KEPT_BYTES`]), with no eviction to pay for on a
/// pull's path.
const MOST: usize = 1 << 17;

/// Most bytes of records kept, across every collection. A record past it
/// is not kept (its hint still is). Kept records are sled's own
/// reference-counted copies, shared with its cache while it holds them.
const KEPT_BYTES: usize = 64 << 20;

/// Whether `tree` is a placed collection's (`<collection>.placed`, as
/// every [`Placed`] is named): the trees whose writes are tracked, and the
/// only ones whose records are kept. Both sides ask this one rule, so a
/// record is never kept of a tree whose writes go unseen.
fn tracked(tree: &str) -> bool {
    tree.ends_with(".placed")
}

/// One collection: where its keys' records were last found, the records
/// kept since its last write began, and whether a write is under way.
#[derive(Default)]
struct Collection {
    /// Key → the record key (`Placed::record_key`) it was found at.
    hints: HashMap<Box<[u8]>, Box<[u8]>>,
    /// Key → its record, read while no write was under way or began.
    kept: HashMap<Box<[u8]>, sled::IVec>,
    kept_bytes: usize,
    /// Moves when a write begins: a read begun before it keeps nothing.
    generation: u64,
    /// Writes under way.
    writing: u32,
}

impl Collection {
    /// The generation, if no write is under way: a read of the store that
    /// begins and ends under it reads the collection as it stands.
    fn stable(&self) -> Option<u64> {
        (self.writing == 0).then_some(self.generation)
    }
}

#[derive(Default)]
struct All {
    trees: HashMap<Box<str>, Collection>,
    kept_bytes: usize,
}

/// `tree`'s collection, made on first use (by a read or a write).
fn collection<'a>(trees: &'a mut HashMap<Box<str>, Collection>, tree: &str) -> &'a mut Collection {
    if !trees.contains_key(tree) {
        trees.insert(tree.into(), Collection::default());
    }
    trees.get_mut(tree).expect("just made")
}

/// What is known of a key before the store is read.
pub(super) enum Known {
    /// Its record, unchanged since it was read.
    Record(sled::IVec),
    /// Where to look first, if anywhere; the generation to keep what is
    /// found under (none while a write is under way, or for a tree whose
    /// writes are not tracked).
    Look {
        at: Option<Box<[u8]>>,
        stable: Option<u64>,
    },
}

pub(super) struct PlaceHints {
    all: Mutex<All>,
    /// Most bytes of records kept ([`KEPT_BYTES`]).
    budget: usize,
}

impl Default for PlaceHints {
    fn default() -> Self {
        Self::with_budget(KEPT_BYTES)
    }
}

impl PlaceHints {
    fn with_budget(budget: usize) -> Self {
        Self {
            all: Mutex::default(),
            budget,
        }
    }

    /// The lock, even if a panic left it poisoned: every change under it
    /// leaves the state whole, and a write stuck "under way" keeps nothing.
    fn all(&self) -> MutexGuard<'_, All> {
        self.all.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What is known of `key` in `trees`.
    pub(super) fn known(&self, trees: Placed, key: &[u8]) -> Known {
        let mut all = self.all();
        let c = collection(&mut all.trees, trees.0);
        if c.writing == 0 {
            if let Some(record) = c.kept.get(key) {
                return Known::Record(record.clone());
            }
        }
        Known::Look {
            at: c.hints.get(key).cloned(),
            stable: c.stable().filter(|_| tracked(trees.0)),
        }
    }

    /// Remembers that `key`'s record was found at `place`, if that place
    /// names its key (see the module's doc), and keeps the record if the
    /// collection stood at generation `read_under` from before the read
    /// until now, and the bytes allow.
    pub(super) fn remember(
        &self,
        trees: Placed,
        key: &[u8],
        place: &[u8],
        record: &sled::IVec,
        read_under: Option<u64>,
    ) {
        if !super::place_names(place, key) {
            return;
        }
        let mut all = self.all();
        let All {
            trees: map,
            kept_bytes,
        } = &mut *all;
        let c = collection(map, trees.0);
        let at = Placed::record_key(place);
        let room = c.hints.len() < MOST;
        match c.hints.get_mut(key) {
            Some(known) if **known == *at => {}
            Some(known) => *known = at.into(),
            None if room => {
                c.hints.insert(key.into(), at.into());
            }
            None => return,
        }
        let unchanged = read_under.is_some() && c.stable() == read_under;
        if !tracked(trees.0) || !unchanged {
            return;
        }
        let freed = c.kept.get(key).map_or(0, |r| r.len());
        if *kept_bytes - freed + record.len() > self.budget {
            return;
        }
        c.kept.insert(key.into(), record.clone());
        c.kept_bytes = c.kept_bytes - freed + record.len();
        *kept_bytes = *kept_bytes - freed + record.len();
    }

    /// Marks a write of `tree` under way until the guard is dropped, and
    /// drops the records kept of it: none is given out from now on, nor
    /// kept from a read that overlapped the write. Untracked trees (no
    /// records kept) cost nothing.
    pub(super) fn writing<'a>(&'a self, tree: &'a str) -> UnderWay<'a> {
        if !tracked(tree) {
            return UnderWay {
                hints: self,
                tree: None,
            };
        }
        let mut all = self.all();
        let All { trees, kept_bytes } = &mut *all;
        let c = collection(trees, tree);
        c.writing += 1;
        c.generation += 1;
        *kept_bytes -= std::mem::take(&mut c.kept_bytes);
        let dropped = std::mem::take(&mut c.kept);
        drop(all);
        // Freed outside the lock: a full collection's records take a while.
        drop(dropped);
        UnderWay {
            hints: self,
            tree: Some(tree),
        }
    }
}

/// What the tests of this store ask of the hints.
#[cfg(test)]
impl PlaceHints {
    /// The record key `key`'s hint names, if any (and no record kept).
    pub(super) fn hinted(&self, trees: Placed, key: &[u8]) -> Option<Vec<u8>> {
        match self.known(trees, key) {
            Known::Look { at, .. } => at.map(Vec::from),
            Known::Record(_) => panic!("a record kept"),
        }
    }

    /// `key`'s record, if it is answered from memory.
    pub(super) fn kept(&self, trees: Placed, key: &[u8]) -> Option<Vec<u8>> {
        match self.known(trees, key) {
            Known::Record(r) => Some(r.to_vec()),
            Known::Look { .. } => None,
        }
    }
}

/// A write under way ([`PlaceHints::writing`]).
pub(super) struct UnderWay<'a> {
    hints: &'a PlaceHints,
    tree: Option<&'a str>,
}

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        if let Some(tree) = self.tree {
            collection(&mut self.hints.all().trees, tree).writing -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Placed = Placed("t.placed");

    /// Remembers `key` at `place` (keeping no record).
    fn hint(hints: &PlaceHints, key: &[u8], place: &[u8]) {
        hints.remember(T, key, place, &sled::IVec::from(&b"r"[..]), None);
    }

    #[test]
    fn only_a_place_that_names_its_key_is_remembered() {
        let hints = PlaceHints::default();
        hint(&hints, b"110101", b"grid-1\0h7\x00110101");
        assert_eq!(
            hints.hinted(T, b"110101").as_deref(),
            Some(&b"rgrid-1\0h7\x00110101"[..])
        );
        // A place that does not end in NUL and the key, or a key with a
        // NUL in it, could be another key's place: never a hint.
        for (key, place) in [
            (&b"101"[..], &b"grid-1\x00220101"[..]),
            (b"220202", b"grid-1\x00220202x"),
            (b"220202", b"220202"),
            (b"a\0b", b"grid\0a\0b"),
            (b"", b"grid\0"),
        ] {
            hint(&hints, key, place);
            assert_eq!(hints.hinted(T, key), None, "{key:?} at {place:?}");
        }
    }

    #[test]
    fn a_full_collection_learns_no_new_key_but_moves_a_known_one() {
        let hints = PlaceHints::default();
        let place = |g: &str, key: &str| format!("{g}\0{key}");
        for n in 0..MOST + 10 {
            let key = n.to_string();
            hint(&hints, key.as_bytes(), place("g", &key).as_bytes());
        }
        assert_eq!(hints.all().trees[T.0].hints.len(), MOST);
        assert_eq!(hints.hinted(T, (MOST + 9).to_string().as_bytes()), None);
        hint(&hints, b"7", place("h", "7").as_bytes());
        assert_eq!(
            hints.hinted(T, b"7").as_deref(),
            Some(format!("r{}", place("h", "7")).as_bytes())
        );
    }

    const KEY: &[u8] = b"110101";
    const PLACE: &[u8] = b"g1\x00110101";

    /// Reads `KEY` as the backend does: what is known, then a read of the
    /// store that finds `record`; the generation it read under.
    fn read(hints: &PlaceHints, record: &[u8]) -> Option<u64> {
        match hints.known(T, KEY) {
            Known::Record(_) => panic!("expected a read of the store"),
            Known::Look { stable, .. } => {
                hints.remember(T, KEY, PLACE, &record.into(), stable);
                stable
            }
        }
    }

    #[test]
    fn a_kept_record_is_given_only_until_a_write_of_its_collection_begins() {
        let hints = PlaceHints::default();
        read(&hints, b"v1");
        assert_eq!(hints.kept(T, KEY), Some(b"v1".to_vec()));
        // A write of another tree (a daily count, say) changes nothing here.
        drop(hints.writing("quota"));
        drop(hints.writing("other.placed"));
        assert_eq!(hints.kept(T, KEY), Some(b"v1".to_vec()));
        // From the moment a write of the collection begins, the kept
        // record is not given: the store may already hold the new one.
        let w = hints.writing(T.0);
        assert_eq!(hints.kept(T, KEY), None);
        drop(w);
        assert_eq!(hints.kept(T, KEY), None, "kept from before the write");
        assert_eq!(hints.all().kept_bytes, 0, "its bytes freed");
        read(&hints, b"v2");
        assert_eq!(hints.kept(T, KEY), Some(b"v2".to_vec()));
        assert_eq!(hints.all().kept_bytes, 2);
    }

    #[test]
    fn a_record_read_while_a_write_was_under_way_is_not_kept() {
        let hints = PlaceHints::default();
        // The read begins while a write is under way: nothing to keep under.
        let w = hints.writing(T.0);
        assert_eq!(read(&hints, b"old"), None);
        drop(w);
        assert_eq!(hints.kept(T, KEY), None);
        // The read begins before a write and ends while it is under way,
        // or after it ended: what it found may be older than the store.
        let Known::Look { stable, .. } = hints.known(T, KEY) else {
            panic!("nothing kept yet")
        };
        assert!(stable.is_some());
        let none_kept = || hints.all().trees[T.0].kept.is_empty();
        let w = hints.writing(T.0);
        hints.remember(T, KEY, PLACE, &b"old"[..].into(), stable);
        assert!(none_kept(), "kept while the write is under way");
        drop(w);
        assert_eq!(hints.kept(T, KEY), None);
        hints.remember(T, KEY, PLACE, &b"old"[..].into(), stable);
        assert!(none_kept(), "kept after the write");
        // Two writes under way: the first one's end does not make the
        // collection stable.
        let (a, b) = (hints.writing(T.0), hints.writing(T.0));
        drop(a);
        assert_eq!(read(&hints, b"mid"), None);
        drop(b);
        assert_eq!(hints.kept(T, KEY), None);
    }

    #[test]
    fn no_record_is_kept_of_an_untracked_tree_or_past_the_bytes() {
        let hints = PlaceHints::with_budget(8);
        // Its writes are not seen, so its records are never kept.
        const LOOSE: Placed = Placed("loose");
        let Known::Look { stable, .. } = hints.known(LOOSE, KEY) else {
            panic!("nothing kept yet")
        };
        assert_eq!(stable, None);
        hints.remember(LOOSE, KEY, PLACE, &b"r"[..].into(), Some(0));
        assert!(matches!(hints.known(LOOSE, KEY), Known::Look { .. }));
        // A record that would pass the bytes is not kept; its hint is.
        read(&hints, b"123456789");
        assert_eq!(hints.kept(T, KEY), None);
        assert_eq!(hints.hinted(T, KEY), Some(Placed::record_key(PLACE)));
        read(&hints, b"12345678");
        assert_eq!(
            hints.kept(T, KEY),
            Some(b"12345678".to_vec()),
            "exactly the bytes"
        );
    }

    #[test]
    fn the_bytes_kept_are_counted_across_collections_and_freed_with_them() {
        const U: Placed = Placed("u.placed");
        let hints = PlaceHints::with_budget(10);
        let keep = |trees: Placed, key: &[u8], record: &[u8]| {
            let place = [b"g\0", key].concat();
            let Known::Look { stable, .. } = hints.known(trees, key) else {
                panic!("{key:?} kept already")
            };
            hints.remember(trees, key, &place, &record.into(), stable);
        };
        let bytes = || {
            let all = hints.all();
            let each: usize = all.trees.values().map(|c| c.kept_bytes).sum();
            assert_eq!(all.kept_bytes, each, "the total is the sum");
            each
        };
        keep(T, b"a", b"1234");
        keep(U, b"b", b"123");
        assert_eq!(bytes(), 7);
        // Two readers that both missed remember the same key: counted once.
        let Known::Look { stable, .. } = hints.known(T, b"c") else {
            panic!()
        };
        hints.remember(T, b"c", b"g\0c", &b"12"[..].into(), stable);
        hints.remember(T, b"c", b"g\0c", &b"12"[..].into(), stable);
        assert_eq!(bytes(), 9);
        // Full across both collections: U cannot keep 2 more.
        keep(U, b"d", b"12");
        assert_eq!(bytes(), 9);
        // A write of T frees T's bytes only; then U's fits.
        drop(hints.writing(T.0));
        assert_eq!(bytes(), 3);
        keep(U, b"d", b"12");
        assert_eq!(bytes(), 5);
    }
}
