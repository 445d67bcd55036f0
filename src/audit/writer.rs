//! The single writer: group commit. Whatever has queued while the previous
//! `fdatasync` ran is written and synced together, then every caller in the
//! batch is completed at once.

use super::segment::{SegmentWriter, frame_into};
use super::{AuditUnavailable, Pending, Receipt, leaf_hash};
use crate::clock;
use prost::Message;
use tokio::sync::{mpsc, watch};

pub(super) fn run(
    mut segments: SegmentWriter,
    mut rx: mpsc::Receiver<Pending>,
    writable: watch::Sender<bool>,
    max_batch: usize,
    indexer: std::sync::mpsc::Sender<Vec<Vec<u8>>>,
) {
    let mut prev = segments.last_leaf();
    let mut batch = Vec::with_capacity(max_batch);
    let mut frames = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let time = clock::to_timestamp(clock::now());
        let start = segments.next_index();
        frames.clear();
        let mut receipts = Vec::with_capacity(batch.len());
        let mut committed = Vec::with_capacity(batch.len());
        let mut chain = prev;
        for (i, p) in batch.iter_mut().enumerate() {
            p.entry.index = start + i as u64;
            p.entry.time = Some(time);
            p.entry.prev_leaf_hash = chain.map(|h| h.to_vec()).unwrap_or_default();
            let bytes = p.entry.encode_to_vec();
            let leaf = leaf_hash(&bytes);
            chain = Some(leaf);
            receipts.push(Receipt {
                index: p.entry.index,
                leaf_hash: leaf,
                time,
            });
            frame_into(&mut frames, &bytes);
            committed.push(bytes);
        }
        let last = chain.expect("a batch has at least one entry");
        match segments.append(&frames, batch.len() as u64, last) {
            Ok(()) => {
                prev = chain;
                let _ = indexer.send(committed);
                writable.send_if_modified(|w| !std::mem::replace(w, true));
                for (p, r) in batch.drain(..).zip(receipts) {
                    let _ = p.done.send(Ok(r));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, entries = batch.len(), "audit log write failed; failing closed");
                writable.send_if_modified(|w| std::mem::replace(w, false));
                let err = AuditUnavailable(e.to_string());
                for p in batch.drain(..) {
                    let _ = p.done.send(Err(err.clone()));
                }
            }
        }
    }
}
