//! The audit log: append-only, durable before the response, fail-closed.
//!
//! Entries live in their own segment files (sled's `flush` does not fsync);
//! one writer thread group-commits them with `fdatasync`. A caller gets its
//! [`Receipt`] only once its entry is on disk.

pub mod checkpoint;
pub mod export;
pub mod index;
pub mod merkle;
pub mod segment;
pub mod verify;
mod writer;

use crate::proto::{AuditEntry, AuditReceipt};
use crate::store::Store;
use anyhow::{Result, bail};
use index::{AuditIndex, Indexer};
use sha2::{Digest, Sha256};
use std::path::Path;
use tokio::sync::{mpsc, oneshot, watch};

/// RFC 6962 leaf hash: SHA-256(0x00 ‖ entry bytes).
pub fn leaf_hash(entry_bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry_bytes);
    h.finalize().into()
}

/// Where an entry landed; returned only after it is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub index: u64,
    pub leaf_hash: [u8; 32],
    pub time: prost_types::Timestamp,
}

impl Receipt {
    pub fn to_proto(&self) -> AuditReceipt {
        AuditReceipt {
            leaf_index: self.index,
            leaf_hash: self.leaf_hash.to_vec(),
            time: Some(self.time),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("the audit log cannot be written: {0}")]
pub struct AuditUnavailable(pub String);

#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Gateway node id written into every entry.
    pub node: String,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Most entries committed by one `fdatasync`.
    pub max_batch: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            node: "node-1".into(),
            segment_bytes: 64 << 20,
            max_batch: 1024,
        }
    }
}

struct Pending {
    entry: AuditEntry,
    done: oneshot::Sender<Result<Receipt, AuditUnavailable>>,
}

/// Handle to the log. Cloning is cheap; the writer stops when every handle
/// is dropped, after committing what it was given.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
    writable: watch::Receiver<bool>,
    indexed: watch::Receiver<u64>,
    index: AuditIndex,
    node: String,
}

/// The writer and indexer threads; [`Threads::join`] waits until both have
/// drained (every handle dropped) and returns the final log size.
pub struct Threads {
    writer: std::thread::JoinHandle<()>,
    indexer: std::thread::JoinHandle<u64>,
}

impl Threads {
    pub fn join(self) -> u64 {
        let _ = self.writer.join();
        self.indexer.join().unwrap_or(0)
    }
}

impl AuditLog {
    /// Recovers the log in `dir` (truncating a torn tail), brings its index
    /// in `store` up to date from the segments, and starts the writer and
    /// indexer threads.
    pub fn open(dir: &Path, opts: AuditOptions, store: Store) -> Result<(Self, Threads)> {
        let segments = segment::SegmentWriter::recover(dir, opts.segment_bytes)?;
        let mut indexer = Indexer::open(store)?;
        if indexer.size() > segments.next_index() {
            bail!(
                "the audit index holds {} entries but the segments in {} only {}: entries were removed; run `govshare audit verify --data-dir`",
                indexer.size(),
                dir.display(),
                segments.next_index()
            );
        }
        let missing = segment::read_from(dir, indexer.size())?;
        for chunk in missing.chunks(1024) {
            indexer.ingest(chunk)?;
        }
        let index = indexer.reader();
        let (indexed_tx, indexed) = watch::channel(indexer.size());
        let (batches_tx, batches) = std::sync::mpsc::channel::<Vec<Vec<u8>>>();
        let indexer = std::thread::Builder::new()
            .name("audit-indexer".into())
            .spawn(move || {
                for batch in batches {
                    if let Err(e) = indexer.ingest(&batch) {
                        // The log itself is durable; the index catches up
                        // from the segments on the next start.
                        tracing::error!(error = %e, "audit index update failed; queries lag until restart");
                        break;
                    }
                    indexed_tx.send_replace(indexer.size());
                }
                indexer.size()
            })?;
        let (tx, rx) = mpsc::channel(opts.max_batch * 4);
        let (writable_tx, writable) = watch::channel(true);
        let max_batch = opts.max_batch;
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer::run(segments, rx, writable_tx, max_batch, batches_tx))?;
        Ok((
            Self {
                tx,
                writable,
                indexed,
                index,
                node: opts.node,
            },
            Threads { writer, indexer },
        ))
    }

    /// Read access to the index (entries, postings, Merkle nodes).
    pub fn index(&self) -> &AuditIndex {
        &self.index
    }

    /// How many entries are indexed (and so provable); changes as the
    /// indexer advances.
    pub fn indexed(&self) -> watch::Receiver<u64> {
        self.indexed.clone()
    }

    /// Appends `entry` (its index, time and node are assigned here) and waits
    /// until it is durable.
    pub async fn append(&self, mut entry: AuditEntry) -> Result<Receipt, AuditUnavailable> {
        entry.node.clone_from(&self.node);
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Pending { entry, done })
            .await
            .map_err(|_| AuditUnavailable("the audit writer has stopped".into()))?;
        wait.await
            .map_err(|_| AuditUnavailable("the audit writer has stopped".into()))?
    }

    /// `true` while the last write succeeded; drives the health service.
    pub fn writable(&self) -> watch::Receiver<bool> {
        self.writable.clone()
    }
}
