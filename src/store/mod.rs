//! Storage. `Backend` is the small key-value contract a shared store must
//! meet so several stateless gateway nodes can run over it. The planes
//! above give the bytes their meaning: the control plane's typed store
//! (`control::store`) and the shared records (`pipeline::RecordStore`,
//! whose reads only the pull pipeline can call).

pub mod copy;
mod place_hints;
pub mod postgres;
mod sled_backend;
mod sled_trees;

use anyhow::Result;
use std::future::Future;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sled_backend::SledBackend;

/// A placed collection: one tree holding each record once under its
/// *place* — an ordered key its owner chooses (the region index key), so a
/// range of places reads whole records in order with no lookup per record
/// — and, beside them, each record's place under its key, for reads by
/// key. One tree, so a record and its place change in one atomic batch.
#[derive(Debug, Clone, Copy)]
pub struct Placed(pub &'static str);

impl Placed {
    /// Where `key`'s place is kept.
    pub fn place_key(key: &[u8]) -> Vec<u8> {
        [b"p", key].concat()
    }

    /// Where the record at `place` (or the range of places starting with
    /// it) is kept.
    pub fn record_key(place: &[u8]) -> Vec<u8> {
        [b"r", place].concat()
    }

    /// The place of a key [`Placed::record_key`] made.
    pub fn place_of(record_key: &[u8]) -> &[u8] {
        record_key.get(1..).unwrap_or_default()
    }
}

/// How many times [`Backend::get_placed`] reads a key's place and looks
/// for the record there: a record moved between the two reads is looked
/// for again where its place then says.
const MOVES_FOLLOWED: usize = 4;

/// `key`'s place and the record there, read through `get` (one tree's
/// point reads): the place, then the record. A record a write moves
/// between the two reads is looked for again where its place now says,
/// [`MOVES_FOLLOWED`] times — even at the same place, which it may have
/// left and come back to in between.
fn follow_place<V: AsRef<[u8]>>(
    key: &[u8],
    get: impl Fn(&[u8]) -> Result<Option<V>>,
) -> Result<Option<(V, V)>> {
    let at = Placed::place_key(key);
    for _ in 0..MOVES_FOLLOWED {
        let Some(place) = get(&at)? else {
            return Ok(None);
        };
        if let Some(record) = get(&Placed::record_key(place.as_ref()))? {
            return Ok(Some((place, record)));
        }
    }
    Ok(None)
}

/// A key whose place holds no record: nothing this gateway writes leaves
/// one (a record and its place change in one batch), so the store was
/// changed from outside. The record is written as new; said, not hidden.
fn placed_nowhere(trees: Placed, key: &[u8]) {
    tracing::warn!(
        tree = trees.0,
        key = %String::from_utf8_lossy(key),
        "a key's place holds no record; writing the record as new"
    );
}

/// What a placed upsert writes: the record's new bytes and its new place.
pub struct PlacedWrite {
    pub value: Vec<u8>,
    pub place: Vec<u8>,
}

/// A key a placed upsert writes, and where its record most likely is: the
/// place the caller's new record will take, when the caller knows it. Most
/// of a republished dataset is written again where it was; its records are
/// then found in one read instead of two (the key's place, then the record
/// there). Only a guess: a record found elsewhere, or nowhere, is found as
/// without one, and a place that does not end in NUL and its key is not
/// looked at (no other key's record can be taken for this one's).
#[derive(Debug, Clone, Copy)]
pub struct PlacedKey<'a> {
    pub key: &'a [u8],
    pub likely_place: Option<&'a [u8]>,
}

impl<'a> PlacedKey<'a> {
    /// `keys` with no guess of their places.
    pub fn without_places(keys: &[&'a [u8]]) -> Vec<Self> {
        keys.iter()
            .map(|&key| Self {
                key,
                likely_place: None,
            })
            .collect()
    }

    /// The likely place, if it can only be this key's ([`place_names`]).
    pub fn likely(&self) -> Option<&'a [u8]> {
        self.likely_place.filter(|at| place_names(at, self.key))
    }
}

/// Whether `place` ends in NUL and `key`, with no NUL in `key`: then no
/// other NUL-free key's place ends so (a record's place is its region's
/// code, NUL, its key), and a record found there can only be `key`'s.
fn place_names(place: &[u8], key: &[u8]) -> bool {
    !key.is_empty()
        && !key.contains(&0)
        && place.len() > key.len()
        && place.ends_with(key)
        && place[place.len() - key.len() - 1] == 0
}

/// Computes one record's write from its current bytes: called with the
/// record's position in the call and its bytes now, if any.
pub type PlacedUpdate<'a> = dyn FnMut(usize, Option<&[u8]>) -> Result<PlacedWrite> + 'a;

/// Sees one entry of a range read ([`Backend::scan_each`]): its key and
/// value, borrowed from the store; breaks to stop the read.
pub type ScanVisit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>> + 'a;

/// A value being read without holding the caller's thread.
pub type Reading = std::pin::Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>>> + Send>>;

/// A key-value store with ordered trees, atomic batches and placed
/// collections ([`Placed`]).
pub trait Backend: Send + Sync + 'static {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// The record stored under `key` in a placed collection: its place,
    /// then the record there. A record a write moves between the two reads
    /// is followed to its new place.
    fn get_placed(&self, trees: Placed, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(follow_place(key, |k| self.get(trees.0, k))?.map(|(_, record)| record))
    }
    /// [`Backend::get_placed`] for a caller on the async runtime's hot path
    /// (as [`Backend::get_async`]); a shared store answers it in one read.
    fn get_placed_async(&self, trees: Placed, key: &[u8]) -> Reading {
        Box::pin(std::future::ready(self.get_placed(trees, key)))
    }
    /// [`Backend::get`] for a caller on the async runtime's hot path (the
    /// policy epoch on every call): a shared backend awaits its database
    /// instead of holding a runtime thread; the embedded one answers from
    /// memory at once.
    fn get_async(&self, tree: &str, key: &[u8]) -> Reading {
        Box::pin(std::future::ready(self.get(tree, key)))
    }
    /// Whether reads are answered from memory (the embedded store): then a
    /// small read may run on the async runtime as it is; otherwise it is
    /// awaited through [`Backend::get_async`], or goes to the blocking
    /// pool.
    fn answers_from_memory(&self) -> bool {
        true
    }
    fn put(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<()>;
    fn remove(&self, tree: &str, key: &[u8]) -> Result<()>;
    /// Entries whose key starts with `prefix` and is strictly greater than
    /// `after`, in key order, at most `limit`.
    fn scan(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// [`Backend::scan`], each entry handed to `visit` as the store holds
    /// it instead of collected, until `visit` breaks: the embedded store
    /// then copies and allocates nothing per entry (a listing's page).
    fn scan_each(
        &self,
        tree: &str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        visit: &mut ScanVisit<'_>,
    ) -> Result<()> {
        for (key, value) in self.scan(tree, prefix, after, limit)? {
            if visit(&key, &value)?.is_break() {
                break;
            }
        }
        Ok(())
    }
    /// For each of `keys` — in an order the backend chooses, but a key
    /// named twice in the order named, so `update` must not depend on the
    /// order of different keys — finds its place and the record there (as
    /// an earlier naming of the same key in this call left it; a backend
    /// may look first where [`PlacedKey::likely`] says), lets
    /// `update(i, current)` compute the new bytes and place, then writes
    /// every record, every move out of an old place and every key's new
    /// place as one atomic batch: a crash leaves the collection as it was
    /// before the call or as after it, never a record at two places or a
    /// place with no record. An `update` that fails writes nothing. Two
    /// keys must never share a place (every record's place ends with its
    /// key), or the order of visits would decide which is left. Callers
    /// make the write durable with [`Backend::sync`].
    fn upsert_placed(
        &self,
        trees: Placed,
        keys: &[PlacedKey<'_>],
        update: &mut PlacedUpdate<'_>,
    ) -> Result<()>;
    /// Atomically replaces a little-endian u64 counter by `f(current)`
    /// (0 when absent); returns `(old, new)`.
    fn update_counter(
        &self,
        tree: &str,
        key: &[u8],
        f: &mut dyn FnMut(u64) -> u64,
    ) -> Result<(u64, u64)>;
    /// The keys starting with `prefix`, in order, without their values
    /// (counting what a range holds).
    fn scan_keys(&self, tree: &str, prefix: &[u8]) -> Result<Vec<Vec<u8>>> {
        let mut keys = Vec::new();
        self.scan_each(tree, prefix, None, usize::MAX, &mut |key, _| {
            keys.push(key.to_vec());
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(keys)
    }
    /// Entries under `prefix` strictly below `before`, in descending key order.
    fn scan_rev(
        &self,
        tree: &str,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Writes `value` at `key` unless a value is there already; returns the
    /// value stored now (`value` when this call wrote it). Atomic across
    /// processes: of several callers racing on one key, exactly one value
    /// wins and every caller learns which.
    fn put_if_absent(&self, tree: &str, key: &[u8], value: &[u8]) -> Result<Vec<u8>>;
    /// Applies puts (`Some`) and removes (`None`) to one tree atomically.
    fn apply_batch(&self, tree: &str, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()>;
    /// Makes every write so far durable.
    fn sync(&self) -> Result<()>;
    /// The names of the trees that hold anything, for a snapshot's copy.
    fn trees(&self) -> Result<Vec<String>>;
    /// Applies `writes` to `tree` and moves the fence counter `fence` on
    /// ([`next_fence`]), as one atomic step that waits for appends in flight under the
    /// fence and is seen by every append after it ([`FenceRow`]). Returns
    /// the counter's new value. A change and its move never come apart: a
    /// node never holds a change under the old value.
    fn write_moving_fence(
        &self,
        tree: &str,
        writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        fence: FenceRow,
    ) -> Result<u64>;
    /// What an append on this node holds, shared, from its read of the
    /// fence until its entries are durable, so no move completes in
    /// between; `None` where the append's own transaction holds the fence
    /// (a shared store).
    fn fence_lock(&self) -> Option<Arc<std::sync::RwLock<()>>> {
        None
    }
    /// The fence counter's value as this process last saw it committed —
    /// by its own moves and appends, and by other nodes' moves announced to
    /// it — without asking the store; `None` when the process knows no
    /// value it trusts, or where asking costs nothing (the embedded store
    /// answers from memory). Only a hint: it can lag a move made elsewhere
    /// by the time the announcement takes, so whatever is judged by it must
    /// be released through an append fenced by the counter itself, which
    /// reads the committed value in its own transaction.
    fn fence_seen(&self) -> Option<u64> {
        None
    }
    /// The log every node of a shared store appends to; `None` for the
    /// embedded store, whose node keeps its log in its own data dir.
    fn shared_log(&self) -> Option<Arc<dyn SharedLog>> {
        None
    }
}

/// Where a shared log stands: how many entries it holds, and the leaf hash
/// of the last (what the next entry chains to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogHead {
    pub size: u64,
    pub last: Option<[u8; 32]>,
}

/// One entry to append: its bytes and its leaf hash (the head's new
/// `last`). The store gives bytes no meaning beyond that.
pub struct LogRow {
    pub bytes: Vec<u8>,
    pub leaf: [u8; 32],
}

/// A counter that appends are fenced by: a change that moves it
/// ([`Backend::write_moving_fence`]) waits for the appends in flight, and
/// an append made durable after the change sees the new value (the fence,
/// `docs/design.md`).
#[derive(Debug, Clone, Copy)]
pub struct FenceRow {
    pub tree: &'static str,
    pub key: &'static [u8],
}

/// The fence counter's next value after `current`: one more in its high
/// half, fresh random bits in its low half. So it only moves forward, and
/// a store put back to an earlier state (a point-in-time recovery, a
/// failover that lost the last commits) that moves it again gives a value
/// no node has seen: a node holding the lost timeline's control plane
/// under the old value cannot take it for the new one.
pub fn next_fence(current: u64) -> u64 {
    (((current >> 32) + 1) << 32) | u64::from(rand::random::<u32>())
}

/// Builds an append's rows from the fence counter's value and the head,
/// inside the append's transaction. No rows: nothing is appended.
pub type BuildRows = Box<dyn FnOnce(u64, LogHead) -> Result<Vec<LogRow>> + Send>;

/// What an append committed: the head it started from, the fence value it
/// saw, and the rows (moved back to the caller).
pub struct Appended {
    pub from: LogHead,
    pub fence: u64,
    pub rows: Vec<LogRow>,
}

/// An append-only sequence of entries that every node of a shared store
/// appends to and reads back in index order.
pub trait SharedLog: Send + Sync {
    /// The head as committed now.
    fn head(&self) -> Result<LogHead>;
    /// In one durable transaction: reads `fence` (held shared until the
    /// commit), locks the head, lets `build` make the rows, inserts them at
    /// the next indexes and commits.
    fn append(&self, fence: Option<FenceRow>, build: BuildRows) -> Result<Appended>;
    /// Up to `limit` entries from index `from` on, in index order; the
    /// first is at `from` and there are no gaps.
    fn read(&self, from: u64, limit: usize) -> Result<Vec<Vec<u8>>>;
    /// Whether this process leads (asks the witnesses): at most one process
    /// holds the lead at a time; it passes to another when the holder's
    /// session ends, or when the holder has not asked for `lease` (it hangs:
    /// the one asking ends its session). A leader asks at the start of
    /// every round, so `lease` must outlast the longest round.
    /// `Some(term)` while leading, the term counting this process's
    /// takings of the lead (a new term: it may have led elsewhere
    /// meanwhile).
    fn try_lead(&self, lease: std::time::Duration) -> Result<Option<u64>>;
}

/// Writes that must agree with the audit log — a change and its `ADMIN`
/// entry, a publish chunk and its `PUBLISH` entry — happen under a shared
/// [`ChangePermit`]; a snapshot takes the gate whole ([`Quiesced`]) while it
/// copies the store, so its copy holds every change whose entry it holds
/// and no other. Reads (pulls) never take it.
#[derive(Clone, Default)]
pub struct WriteGate(Arc<tokio::sync::RwLock<()>>);

/// Held across one change's audit entry and its store writes.
pub struct ChangePermit {
    _shared: tokio::sync::OwnedRwLockReadGuard<()>,
}

/// Held while a snapshot copies the store: no change is half-applied.
pub struct Quiesced {
    _whole: tokio::sync::OwnedRwLockWriteGuard<()>,
}

impl WriteGate {
    /// Waits while a snapshot copies the store.
    pub async fn change(&self) -> ChangePermit {
        ChangePermit {
            _shared: self.0.clone().read_owned().await,
        }
    }

    /// Waits for every change in progress to finish, and holds new ones off.
    pub async fn quiesce(&self) -> Quiesced {
        Quiesced {
            _whole: self.0.clone().write_owned().await,
        }
    }
}

/// The smallest key above every key starting with `prefix` (`None`: no
/// bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Where a descending scan under `prefix` starts (exclusive): `before`,
/// but never past the prefix's end (`None`: unbounded).
fn rev_upper(prefix: &[u8], before: Option<&[u8]>) -> Option<Vec<u8>> {
    match (before, prefix_end(prefix)) {
        (Some(b), Some(end)) => Some(b.min(&end[..]).to_vec()),
        (Some(b), None) => Some(b.to_vec()),
        (None, end) => end,
    }
}

/// Which backend holds the store.
#[derive(Debug, Clone)]
pub enum Location {
    /// The embedded default: a sled database in this directory.
    Sled(PathBuf),
    /// A shared PostgreSQL database.
    Postgres(postgres::Location),
}

/// Opens the store. What the bytes mean is for the planes above: the
/// control plane's typed store and the pipeline's records each wrap the
/// same backend.
pub fn open(at: &Location) -> Result<Arc<dyn Backend>> {
    Ok(match at {
        Location::Sled(dir) => Arc::new(SledBackend::open(dir)?),
        Location::Postgres(pg) => Arc::new(postgres::PgBackend::open(pg)?),
    })
}

/// The embedded store in `dir` (tests and tools that work on a directory).
pub fn open_dir(dir: &Path) -> Result<Arc<dyn Backend>> {
    open(&Location::Sled(dir.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::VecDeque;

    /// The reads `follow_place` makes and the store's answer to each, in
    /// order, as a write interleaves them.
    fn replay(reads: &[(&[u8], Option<&[u8]>)]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let reads = RefCell::new(VecDeque::from(reads.to_vec()));
        let got = follow_place(b"k", |asked| {
            let (key, answer) = reads.borrow_mut().pop_front().expect("no more reads");
            assert_eq!(asked, key, "read out of order");
            Ok(answer.map(<[u8]>::to_vec))
        });
        assert!(
            reads.borrow().is_empty(),
            "reads left: {:?}",
            reads.borrow()
        );
        got
    }

    #[test]
    fn a_record_that_left_its_place_and_came_back_between_two_reads_is_found() {
        // Its place is P; it moves to Q before the record read, and back
        // to P before the place is read again.
        let got = replay(&[
            (b"pk", Some(b"P")),
            (b"rP", None),
            (b"pk", Some(b"P")),
            (b"rP", Some(b"v")),
        ]);
        assert_eq!(got.unwrap(), Some((b"P".to_vec(), b"v".to_vec())));
    }

    #[test]
    fn a_place_that_keeps_holding_no_record_reads_as_none() {
        let round: [(&[u8], Option<&[u8]>); 2] = [(b"pk", Some(b"P")), (b"rP", None)];
        let got = replay(&round.repeat(MOVES_FOLLOWED));
        assert_eq!(got.unwrap(), None);
    }
}
