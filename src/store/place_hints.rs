//! Where the embedded store last found each record of a placed collection,
//! so a read by key ([`super::Backend::get_placed`]) of a record read
//! before reads the record directly instead of its place first: one sled
//! point read instead of two (each ~2.5 µs of a pull's server CPU, `perf`
//! under `govshare bench --only unary`).
//!
//! A hint is never trusted, only tried. It is kept only for a place that
//! *names its key*: ends in a NUL and the key, the key free of NUL. Every
//! place this gateway writes is one (`Record::index_key`, tested for each
//! record type), and every key it writes is validated free of NUL when it
//! is published. No other NUL-free key's place can end so, so whatever
//! record sits at a hinted place is that key's; and a record and its place
//! change in one atomic batch, so at any instant a key's record is at
//! exactly one place. A record found at the hint is therefore the key's
//! current record; none found (it moved, or the store was changed from
//! outside) falls back to reading the place, as before hints. Writes need
//! not touch the hints, and a stale one costs one read.

use super::Placed;
use std::collections::HashMap;
use std::sync::Mutex;

/// Most hints kept per collection. A full collection remembers no new key
/// (a known key's hint is still moved): a bound on memory, ~160 bytes a
/// hint (a `Person`'s key and record key on the heap, and the table) and so
/// ~21 MB a full collection, with no eviction to pay for on a pull's path.
const MOST: usize = 1 << 17;

/// One collection's hints: key → the record key (`Placed::record_key`) it
/// was last found at.
type Hints = HashMap<Box<[u8]>, Box<[u8]>>;

#[derive(Default)]
pub(super) struct PlaceHints {
    trees: Mutex<HashMap<&'static str, Hints>>,
}

impl PlaceHints {
    /// The record key where `key`'s record was last found, if known.
    pub(super) fn record_key(&self, trees: Placed, key: &[u8]) -> Option<Box<[u8]>> {
        let hints = self.trees.lock().expect("place hints lock");
        hints.get(trees.0)?.get(key).cloned()
    }

    /// Remembers that `key`'s record was found at `place`, if that place
    /// names its key (see the module's doc).
    pub(super) fn remember(&self, trees: Placed, key: &[u8], place: &[u8]) {
        if !names(place, key) {
            return;
        }
        let at: Box<[u8]> = Placed::record_key(place).into();
        let mut hints = self.trees.lock().expect("place hints lock");
        let hints = hints.entry(trees.0).or_default();
        if let Some(known) = hints.get_mut(key) {
            *known = at;
        } else if hints.len() < MOST {
            hints.insert(key.into(), at);
        }
    }
}

/// Whether `place` ends in NUL and `key`, with no NUL in `key`: then no
/// other NUL-free key's place ends so.
fn names(place: &[u8], key: &[u8]) -> bool {
    !key.is_empty()
        && !key.contains(&0)
        && place.len() > key.len()
        && place.ends_with(key)
        && place[place.len() - key.len() - 1] == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Placed = Placed("t.placed");

    #[test]
    fn only_a_place_that_names_its_key_is_remembered() {
        let hints = PlaceHints::default();
        hints.remember(T, b"110101", b"grid-1\0h7\x00110101");
        assert_eq!(
            hints.record_key(T, b"110101").as_deref(),
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
            hints.remember(T, key, place);
            assert_eq!(hints.record_key(T, key), None, "{key:?} at {place:?}");
        }
    }

    #[test]
    fn a_full_collection_learns_no_new_key_but_moves_a_known_one() {
        let hints = PlaceHints::default();
        let place = |g: &str, key: &str| format!("{g}\0{key}");
        for n in 0..MOST + 10 {
            let key = n.to_string();
            hints.remember(T, key.as_bytes(), place("g", &key).as_bytes());
        }
        assert_eq!(hints.trees.lock().unwrap()[T.0].len(), MOST);
        assert_eq!(hints.record_key(T, (MOST + 9).to_string().as_bytes()), None);
        hints.remember(T, b"7", place("h", "7").as_bytes());
        assert_eq!(
            hints.record_key(T, b"7").as_deref(),
            Some(format!("r{}", place("h", "7")).as_bytes())
        );
    }
}
