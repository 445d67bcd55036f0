//! Storage. `Backend` is the small key-value contract a shared store must
//! meet so several stateless gateway nodes can run over it. The planes
//! above give the bytes their meaning: the control plane's typed store
//! (`control::store`) and the shared records (`pipeline::RecordStore`,
//! whose reads only the pull pipeline can call).

pub mod copy;
pub mod postgres;
mod sled_backend;

use anyhow::Result;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sled_backend::SledBackend;

/// What an indexed upsert writes: the new value and the index entry move.
pub struct IndexedWrite {
    pub value: Vec<u8>,
    pub old_index: Option<Vec<u8>>,
    pub new_index: Vec<u8>,
}

/// Computes one record's write from its current stored value: called with
/// the record's position in the call and its old bytes, if any.
pub type IndexedUpdate<'a> = dyn FnMut(usize, Option<&[u8]>) -> Result<IndexedWrite> + 'a;

/// A value being read without holding the caller's thread.
pub type Reading = std::pin::Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>>> + Send>>;

/// A key-value store with ordered trees and one atomic multi-tree operation.
pub trait Backend: Send + Sync + 'static {
    fn get(&self, tree: &str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// [`Backend::get`] for a caller on the async runtime's hot path (the
    /// policy epoch on every call): a shared backend awaits its database
    /// instead of holding a runtime thread; the embedded one answers from
    /// memory at once.
    fn get_async(&self, tree: &str, key: &[u8]) -> Reading {
        Box::pin(std::future::ready(self.get(tree, key)))
    }
    /// Whether reads are answered from memory (the embedded store): then a
    /// small read may run on the async runtime; otherwise it goes to the
    /// blocking pool.
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
    /// For each of `keys` in order, reads its current value (as written by
    /// earlier keys of the same call), lets `update(i, old)` compute the new
    /// value and index move, then writes every index move in one atomic
    /// step and every record in a second. A crash between the two leaves
    /// index entries whose record is absent or not yet moved: readers skip
    /// absent records and judge each record by its own row code, so such
    /// an entry can hide a record but never expose one. Callers make the
    /// write durable with [`Backend::sync`].
    fn upsert_indexed(
        &self,
        tree: &str,
        index: &str,
        keys: &[&[u8]],
        update: &mut IndexedUpdate<'_>,
    ) -> Result<()>;
    /// Atomically replaces a little-endian u64 counter by `f(current)`
    /// (0 when absent); returns `(old, new)`.
    fn update_counter(
        &self,
        tree: &str,
        key: &[u8],
        f: &mut dyn FnMut(u64) -> u64,
    ) -> Result<(u64, u64)>;
    /// Entries under `prefix` strictly below `before`, in descending key order.
    fn scan_rev(
        &self,
        tree: &str,
        prefix: &[u8],
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Applies puts (`Some`) and removes (`None`) to one tree atomically.
    fn apply_batch(&self, tree: &str, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<()>;
    /// Makes every write so far durable.
    fn sync(&self) -> Result<()>;
    /// The names of the trees that hold anything, for a snapshot's copy.
    fn trees(&self) -> Result<Vec<String>>;
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
