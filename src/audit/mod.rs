//! The audit log: append-only, durable before the response, fail-closed.
//!
//! Entries live in their own segment files (sled's `flush` does not fsync);
//! one writer thread group-commits them with `fdatasync`. A caller gets its
//! [`Receipt`] only once its entry is on disk.

pub mod segment;
mod writer;

use crate::proto::{AuditEntry, AuditReceipt};
use anyhow::Result;
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
    node: String,
}

impl AuditLog {
    /// Recovers the log in `dir` (truncating a torn tail) and starts the writer.
    pub fn open(dir: &Path, opts: AuditOptions) -> Result<(Self, std::thread::JoinHandle<()>)> {
        let segments = segment::SegmentWriter::recover(dir, opts.segment_bytes)?;
        let (tx, rx) = mpsc::channel(opts.max_batch * 4);
        let (writable_tx, writable) = watch::channel(true);
        let max_batch = opts.max_batch;
        let handle = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer::run(segments, rx, writable_tx, max_batch))?;
        Ok((
            Self {
                tx,
                writable,
                node: opts.node,
            },
            handle,
        ))
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
