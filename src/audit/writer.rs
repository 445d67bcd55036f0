//! The single writer: group commit. Whatever has queued while the previous
//! `fdatasync` ran is written and synced together, then every caller in the
//! batch is completed at once.
//!
//! While writes fail, the log is unwritable: every batch's callers get an
//! error (no data leaves), and once a second the writer probes the disk
//! without writing an entry, so the log becomes writable again — and health
//! SERVING — by itself when space returns, not only when some pull happens
//! to be tried.

use super::index::{Batch, Committed, IndexInfo, day_of};
use super::merkle::Hash;
use super::segment::{SegmentWriter, frame_into};
use super::{AuditUnavailable, Pending, Receipt, leaf_hash};
use crate::base::clock;
use prost::Message;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How often a failed log is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Longest a batch waits for more entries under load, and how often it
/// looks for them.
const LINGER: Duration = Duration::from_millis(2);
const LINGER_STEP: Duration = Duration::from_micros(250);

pub(super) struct Writer {
    pub committed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub segments: SegmentWriter,
    pub rx: mpsc::Receiver<Pending>,
    pub writable: watch::Sender<bool>,
    pub max_batch: usize,
    pub prev: Option<Hash>,
    pub node: String,
    pub indexer: std::sync::mpsc::Sender<Batch>,
    pub runtime: tokio::runtime::Handle,
}

impl Writer {
    pub(super) fn run(mut self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        loop {
            let first = if *self.writable.borrow() {
                match self.rx.blocking_recv() {
                    Some(p) => p,
                    None => return,
                }
            } else {
                let rx = &mut self.rx;
                let next = self
                    .runtime
                    .block_on(async { tokio::time::timeout(PROBE_EVERY, rx.recv()).await });
                match next {
                    Ok(Some(p)) => p,
                    Ok(None) => return,
                    Err(_) => {
                        self.probe();
                        continue;
                    }
                }
            };
            batch.push(first);
            self.drain(&mut batch);
            if batch.len() > 1 {
                self.linger(&mut batch);
            }
            self.commit(&mut batch);
        }
    }

    /// Takes what has queued, up to a full batch.
    fn drain(&mut self, batch: &mut Vec<Pending>) {
        while batch.len() < self.max_batch {
            match self.rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
    }

    /// Under concurrent load (more than one entry was waiting), keeps
    /// gathering for up to [`LINGER`] while entries keep arriving: one
    /// `fdatasync` then serves many calls, which costs each a little
    /// latency but frees the CPU the extra syncs would take. A lone caller
    /// never waits here. The writer polls rather than waiting on the
    /// queue, so appenders do not pay a thread wake-up each.
    fn linger(&mut self, batch: &mut Vec<Pending>) {
        let until = Instant::now() + LINGER;
        while batch.len() < self.max_batch && Instant::now() < until {
            std::thread::sleep(LINGER_STEP);
            let before = batch.len();
            self.drain(batch);
            if batch.len() == before {
                return;
            }
        }
    }

    fn probe(&mut self) {
        match self.segments.probe() {
            Ok(()) => {
                tracing::info!("the audit log is writable again");
                self.writable.send_replace(true);
                metrics::gauge!("govshare_audit_writable").set(1.0);
            }
            Err(e) => tracing::warn!(error = %e, "the audit log is still not writable"),
        }
    }

    fn commit(&mut self, batch: &mut Vec<Pending>) {
        let time = clock::to_timestamp(clock::now());
        let start = self.segments.next_index();
        let mut frames = Vec::new();
        let mut offsets = Vec::with_capacity(batch.len());
        let mut receipts = Vec::with_capacity(batch.len());
        let mut infos = Vec::with_capacity(batch.len());
        let mut chain = self.prev;
        for (i, p) in batch.iter_mut().enumerate() {
            let e = &mut p.entry;
            e.index = start + i as u64;
            e.time = Some(time);
            e.node.clone_from(&self.node);
            e.prev_leaf_hash = chain.map(|h| h.to_vec()).unwrap_or_default();
            let bytes = e.encode_to_vec();
            let leaf = leaf_hash(&bytes);
            chain = Some(leaf);
            receipts.push(Receipt {
                index: e.index,
                leaf_hash: leaf,
                time,
            });
            offsets.push(frames.len() as u64);
            frame_into(&mut frames, &bytes);
            // The entry is encoded: what the index needs can move out of it.
            infos.push((leaf, IndexInfo::take(e)));
        }
        let started = Instant::now();
        match self.segments.append(&frames, &offsets, batch.len() as u64) {
            Ok(placed) => {
                metrics::histogram!("govshare_audit_fsync_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("govshare_audit_batch_entries").record(batch.len() as f64);
                metrics::counter!("govshare_audit_log_bytes").increment(frames.len() as u64);
                metrics::gauge!("govshare_audit_log_entries")
                    .set(self.segments.next_index() as f64);
                let mut kinds: Vec<(i32, u64)> = Vec::new();
                for p in batch.iter() {
                    match kinds.iter_mut().find(|(k, _)| *k == p.entry.kind) {
                        Some((_, n)) => *n += 1,
                        None => kinds.push((p.entry.kind, 1)),
                    }
                }
                for (kind, n) in kinds {
                    metrics::counter!("govshare_audit_entries_total", "kind" => super::kind_name(kind))
                        .increment(n);
                }
                self.prev = chain;
                self.committed.store(
                    self.segments.next_index(),
                    std::sync::atomic::Ordering::Release,
                );
                let entries = infos
                    .into_iter()
                    .zip(placed.offsets)
                    .enumerate()
                    .map(|(i, ((leaf, info), offset))| Committed {
                        index: start + i as u64,
                        leaf,
                        segment: placed.segment_first,
                        offset,
                        info,
                    })
                    .collect();
                let _ = self.indexer.send(Batch {
                    day: day_of(time.seconds),
                    entries,
                });
                if self
                    .writable
                    .send_if_modified(|w| !std::mem::replace(w, true))
                {
                    metrics::gauge!("govshare_audit_writable").set(1.0);
                }
                for (p, r) in batch.drain(..).zip(receipts) {
                    let _ = p.done.send(Ok(r));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "audit log write failed; failing closed");
                self.writable
                    .send_if_modified(|w| std::mem::replace(w, false));
                metrics::gauge!("govshare_audit_writable").set(0.0);
                let err = AuditUnavailable(e.to_string());
                for p in batch.drain(..) {
                    let _ = p.done.send(Err(err.clone()));
                }
            }
        }
    }
}
