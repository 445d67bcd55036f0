//! A node's replica of the shared log. When several nodes serve one store
//! the log's truth is the store's ([`crate::store::SharedLog`]); each node
//! copies it, in index order, into segments of its own dir, and indexes it
//! there as if it had written it: its queries, proofs, tiles and
//! checkpoints then cover every node's entries, and an export or an offline
//! `audit verify` of any node's dir checks them all.
//!
//! The replica trusts nothing it copies: each entry must carry the index it
//! is stored at and chain to the entry before it (`prev_leaf_hash`), so a
//! row rewritten or removed in the database stops the replica (loudly, with
//! the index) instead of entering it; what the replica already holds is
//! checked against its own checkpoints at every start.

use super::index::{Batch, Committed, IndexInfo, day_of};
use super::leaf_hash;
use super::merkle::Hash;
use super::segment::{SegmentWriter, frame_into};
use crate::proto::AuditEntry;
use crate::store::SharedLog;
use anyhow::{Result, bail};
use prost::Message;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

/// How often the replica looks for other nodes' entries; this node's own
/// appends wake it at once (and are handed over, not read back).
const FOLLOW_EVERY: Duration = Duration::from_millis(50);

/// Most entries copied per read.
const PAGE: usize = 1024;

/// Most of this node's own entries held for the replica: past it they are
/// read back from the database like any other node's.
const OWN_HELD: usize = 64 * 1024;

/// Entries this node's writer just committed, from index `start` on: the
/// replica takes them as they are instead of reading them back.
pub(super) struct Own {
    pub start: u64,
    pub rows: Vec<Vec<u8>>,
}

pub(super) struct Follower {
    pub log: Arc<dyn SharedLog>,
    pub segments: SegmentWriter,
    pub prev: Option<Hash>,
    pub indexer: Sender<Batch>,
    /// Each commit of this node's writer; closed when it stops.
    pub wake: Receiver<Own>,
    /// This node's committed entries not yet in the replica, by index.
    pub own: std::collections::BTreeMap<u64, Vec<u8>>,
}

impl Follower {
    pub(super) fn run(mut self) {
        let mut failing = false;
        loop {
            let stopping = match self.wake.recv_timeout(FOLLOW_EVERY) {
                Ok(own) => {
                    self.hold(own);
                    false
                }
                Err(RecvTimeoutError::Timeout) => false,
                Err(RecvTimeoutError::Disconnected) => true,
            };
            while let Ok(own) = self.wake.try_recv() {
                self.hold(own);
            }
            match self.catch_up() {
                Ok(()) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!("the audit replica follows the shared log again");
                    }
                    metrics::gauge!("govshare_audit_replica_healthy").set(1.0);
                }
                Err(e) => {
                    if !std::mem::replace(&mut failing, true) {
                        tracing::error!(error = %format!("{e:#}"), "the audit replica cannot follow the shared log; queries and checkpoints lag, retrying");
                    }
                    metrics::gauge!("govshare_audit_replica_healthy").set(0.0);
                }
            }
            if stopping {
                return;
            }
        }
    }

    fn hold(&mut self, own: Own) {
        let next = self.segments.next_index();
        for (i, row) in own.rows.into_iter().enumerate() {
            let at = own.start + i as u64;
            if at >= next && self.own.len() < OWN_HELD {
                self.own.insert(at, row);
            }
        }
    }

    /// Copies every entry the shared log has beyond the replica: this
    /// node's own from memory, the others' read from the database (up to
    /// the next one of its own).
    fn catch_up(&mut self) -> Result<()> {
        loop {
            let from = self.segments.next_index();
            while self.own.first_key_value().is_some_and(|(i, _)| *i < from) {
                self.own.pop_first();
            }
            let rows = match self.own.first_key_value().map(|(i, _)| *i) {
                Some(i) if i == from => {
                    let mut run = Vec::new();
                    while let Some(row) = self.own.remove(&(from + run.len() as u64)) {
                        run.push(row);
                        if run.len() == PAGE {
                            break;
                        }
                    }
                    run
                }
                Some(i) => self.log.read(from, PAGE.min((i - from) as usize))?,
                None => self.log.read(from, PAGE)?,
            };
            if rows.is_empty() {
                return Ok(());
            }
            let full = rows.len() == PAGE || self.own.contains_key(&(from + rows.len() as u64));
            // Each entry is decoded and hashed once: checked, then indexed.
            let mut frames = Vec::new();
            let mut offsets = Vec::with_capacity(rows.len());
            let mut checked = Vec::with_capacity(rows.len());
            let mut chain = self.prev;
            for (i, bytes) in rows.iter().enumerate() {
                let at = from + i as u64;
                let e = AuditEntry::decode(bytes.as_slice())
                    .map_err(|e| anyhow::anyhow!("shared audit entry {at} does not decode: {e}"))?;
                if e.index != at {
                    bail!(
                        "the shared log's row {at} holds entry {}: rows were moved",
                        e.index
                    );
                }
                let prev = chain.map(|h| h.to_vec()).unwrap_or_default();
                if e.prev_leaf_hash != prev {
                    bail!(
                        "shared audit entry {at} does not chain to entry {}: the shared log was altered",
                        at.wrapping_sub(1)
                    );
                }
                let leaf = leaf_hash(bytes);
                chain = Some(leaf);
                offsets.push(frames.len() as u64);
                frame_into(&mut frames, bytes);
                checked.push((leaf, e));
            }
            let placed = self.segments.append(&frames, &offsets, rows.len() as u64)?;
            self.prev = chain;
            let mut batch = Batch {
                day: String::new(),
                entries: Vec::with_capacity(rows.len()),
            };
            for (i, ((leaf, mut e), offset)) in checked.into_iter().zip(placed.offsets).enumerate()
            {
                let day = day_of(e.time.map_or(0, |t| t.seconds));
                if day != batch.day && !batch.entries.is_empty() {
                    let _ = self.indexer.send(std::mem::replace(
                        &mut batch,
                        Batch {
                            day: String::new(),
                            entries: Vec::new(),
                        },
                    ));
                }
                batch.day = day;
                batch.entries.push(Committed {
                    index: from + i as u64,
                    leaf,
                    segment: placed.segment_first,
                    offset,
                    info: IndexInfo::take(&mut e),
                });
            }
            let _ = self.indexer.send(batch);
            if !full && self.own.is_empty() {
                return Ok(());
            }
        }
    }
}

/// At start, before the replica follows: a replica must be a prefix of the
/// shared log. A shared log that is still empty (a store just moved up from
/// one node, `govshare store copy`) takes this node's whole log as its
/// beginning, chain and all, a chunk per transaction; a move cut short
/// resumes.
pub(super) fn reconcile(
    log: &dyn SharedLog,
    dir: &std::path::Path,
    entries: u64,
    last: Option<Hash>,
) -> Result<()> {
    let head = log.head()?;
    if entries <= head.size {
        if entries == 0 {
            return Ok(());
        }
        let row = log.read(entries - 1, 1)?;
        if row.first().map(|b| leaf_hash(b)) != last {
            bail!(
                "this data dir's log ({entries} entries) is not a prefix of the database's shared log ({} entries): it belongs to another log",
                head.size
            );
        }
        return Ok(());
    }
    // A move that stopped part way (a crash) resumes where it stopped, if
    // what the shared log holds is this log's beginning.
    if head.size > 0 {
        let mut ours = None;
        super::segment::walk_from(dir, head.size - 1, |i, _, _, bytes| {
            if i == head.size - 1 {
                ours = Some(leaf_hash(bytes));
            }
            Ok(())
        })?;
        if ours != head.last {
            bail!(
                "this data dir's log holds {entries} entries and the database's shared log {}, which are not this log's first: start this data dir on the database it was copied to",
                head.size
            );
        }
    }
    let mut page = Vec::new();
    let mut next = head.size;
    let upload = |page: &mut Vec<Vec<u8>>, next: &mut u64| -> Result<()> {
        let rows: Vec<_> = std::mem::take(page)
            .into_iter()
            .map(|bytes| crate::store::LogRow {
                leaf: leaf_hash(&bytes),
                bytes,
            })
            .collect();
        let (start, n) = (*next, rows.len() as u64);
        log.append(
            None,
            Box::new(move |_, head| {
                if head.size != start {
                    bail!(
                        "another node appended to the shared log while this one moved its log in"
                    );
                }
                Ok(rows)
            }),
        )?;
        *next += n;
        Ok(())
    };
    super::segment::walk_from(dir, head.size, |i, _, _, bytes| {
        if i < head.size || i >= entries {
            return Ok(());
        }
        page.push(bytes.to_vec());
        if page.len() >= PAGE {
            upload(&mut page, &mut next)?;
        }
        Ok(())
    })?;
    if !page.is_empty() {
        upload(&mut page, &mut next)?;
    }
    tracing::info!(entries, "moved this node's audit log into the shared log");
    Ok(())
}
