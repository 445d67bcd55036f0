//! The single writer: group commit. Whatever has queued while the previous
//! commit ran is written and made durable together, then every caller in
//! the batch is completed at once.
//!
//! A batch goes to one of two sinks: this node's own segments, made durable
//! with `fdatasync` (the embedded store), or the store's shared log, made
//! durable by one PostgreSQL commit that also sequences it across nodes
//! (several nodes; this node's replica then follows the shared log,
//! [`super::follower`]).
//!
//! **The fence.** An entry that releases data carries the policy epoch its
//! call was judged under. Right before the batch is made durable the writer
//! reads the epoch — in the same transaction as the append, holding its
//! row, on a shared store — and takes out every entry judged under another
//! one: its caller is told the policy moved, judges again and releases
//! nothing it was not just allowed. A change returns only after its epoch
//! moved, so no data leaves after a revocation returned, on any node.
//!
//! While writes fail, the log is unwritable: every batch's callers get an
//! error (no data leaves), and once a second the writer probes the sink
//! without writing an entry, so the log becomes writable again — and health
//! SERVING — by itself when space (or the database) returns, not only when
//! some pull happens to be tried.

use super::index::{Batch, Committed, IndexInfo, day_of};
use super::merkle::Hash;
use super::segment::{SegmentWriter, frame_into};
use super::{AppendError, AuditUnavailable, Fence, Pending, Receipt, leaf_hash};
use crate::base::clock;
use crate::store::{BuildRows, LogRow, SharedLog};
use prost::Message;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How often a failed log is probed.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Longest a batch waits for more entries under load, and how often it
/// looks for them.
pub(crate) const LINGER: Duration = Duration::from_millis(2);
const LINGER_STEP: Duration = Duration::from_micros(250);

/// At least this many calls together are a convoy: a batch of them
/// lingers for more, and after their commit any batch found within
/// [`BUSY_FOR`] — a lone straggler too — is worth a step's wait. Fewer are
/// a few callers, for whom a step (250 µs, more with the timer's slack)
/// costs more than the sync it saves: lingering after every shared commit
/// halved the throughput at two calls in flight, and lingering over every
/// batch of two or more made four calls in flight slower than two. Not
/// 16: without a first linger, batches at 128 in flight hovered below it,
/// convoys did not form, and entries per fsync fell from ~50 to ~28. A
/// `max_batch` below this never lingers.
pub(crate) const CONVOY: usize = 8;

/// How long after a convoy's commit the log counts as busy. Under load
/// convoys come milliseconds apart, with smaller commits between them (at
/// 128 calls in flight on two cores each call comes round every ~7 ms); a
/// batch found then, even one lone straggler, has more close behind it.
/// Before any window a third of all commits at 128 in flight synced one
/// entry; a window of one `LINGER` had closed before the next convoy, and
/// still a fifth to over a quarter did. A wider window changes when a
/// batch lingers, not for how long: still at most `LINGER`.
const BUSY_FOR: Duration = Duration::from_millis(8);

/// Where batches are made durable.
pub(super) enum Sink {
    /// This node's segments; the indexer follows the writer.
    Local {
        segments: SegmentWriter,
        prev: Option<Hash>,
        indexer: std::sync::mpsc::Sender<Batch>,
    },
    /// The store's shared log; the follower gets each commit's entries.
    Shared {
        log: Arc<dyn SharedLog>,
        follower: std::sync::mpsc::SyncSender<super::follower::Own>,
    },
}

pub(super) struct Writer {
    pub committed: Arc<AtomicU64>,
    pub sink: Sink,
    pub fence: Option<Fence>,
    pub rx: mpsc::Receiver<Pending>,
    pub writable: watch::Sender<bool>,
    pub max_batch: usize,
    pub node: String,
    pub runtime: tokio::runtime::Handle,
}

/// Whether an entry was judged under another policy epoch than `epoch`.
fn moved(judged: Option<u64>, epoch: u64) -> bool {
    judged.is_some_and(|j| j != epoch)
}

impl Writer {
    pub(super) fn run(mut self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        // Until `BUSY_FOR` after the last commit of a convoy (`CONVOY`);
        // why, at the two constants.
        let mut busy_until: Option<Instant> = None;
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
            if batch.len() >= CONVOY || busy_until.is_some_and(|t| Instant::now() < t) {
                self.linger(&mut batch);
            }
            let served = batch.len();
            if self.commit(&mut batch) && served >= CONVOY {
                busy_until = Some(Instant::now() + BUSY_FOR);
            }
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

    /// Under load (a convoy waiting, or within [`BUSY_FOR`] of a convoy's
    /// commit), keeps gathering for up to [`LINGER`] while entries keep
    /// arriving: one commit then serves many calls, which costs each a
    /// little latency but frees the CPU the extra syncs would take. A few
    /// callers on a quiet log never wait here; a straggler on a busy one
    /// waits at least one step. The writer polls rather than waiting on the
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
        let probed = match &mut self.sink {
            Sink::Local { segments, .. } => segments.probe().map_err(anyhow::Error::from),
            Sink::Shared { log, .. } => log.head().map(drop),
        };
        match probed {
            Ok(()) => {
                tracing::info!("the audit log is writable again");
                self.writable.send_replace(true);
                metrics::gauge!("govshare_audit_writable").set(1.0);
            }
            Err(e) => tracing::warn!(error = %e, "the audit log is still not writable"),
        }
    }

    /// Makes the batch durable and answers its callers; whether it was
    /// written.
    fn commit(&mut self, batch: &mut Vec<Pending>) -> bool {
        let started = Instant::now();
        let fenced = self.fence.is_some() && batch.iter().any(|p| p.judged.is_some());
        let done = match &mut self.sink {
            Sink::Local { .. } => self.commit_local(batch, fenced),
            Sink::Shared { .. } => self.commit_shared(batch, fenced),
        };
        let written = done.is_ok();
        match done {
            Ok(Done { size, bytes }) => {
                metrics::histogram!("govshare_audit_fsync_seconds")
                    .record(started.elapsed().as_secs_f64());
                metrics::histogram!("govshare_audit_batch_entries").record(batch.len() as f64);
                metrics::counter!("govshare_audit_log_bytes").increment(bytes);
                metrics::gauge!("govshare_audit_log_entries").set(size as f64);
                let mut kinds: Vec<(i32, u64)> = Vec::new();
                for p in batch.iter() {
                    match kinds.iter_mut().find(|(k, _)| *k == p.kind) {
                        Some((_, n)) => *n += 1,
                        None => kinds.push((p.kind, 1)),
                    }
                }
                for (kind, n) in kinds {
                    metrics::counter!("govshare_audit_entries_total", "kind" => super::kind_name(kind))
                        .increment(n);
                }
                self.committed.fetch_max(size, Ordering::AcqRel);
                if self
                    .writable
                    .send_if_modified(|w| !std::mem::replace(w, true))
                {
                    metrics::gauge!("govshare_audit_writable").set(1.0);
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), entries = batch.len(), "audit log write failed; failing closed");
                self.writable
                    .send_if_modified(|w| std::mem::replace(w, false));
                metrics::gauge!("govshare_audit_writable").set(0.0);
                // Callers learn that, not why: the database's and the
                // disk's errors (paths, roles) stay in the gateway's log.
                let err = AuditUnavailable("its storage failed (see the gateway's log)".into());
                for mut p in batch.drain(..) {
                    p.answer(Err(AppendError::Unavailable(err.clone())));
                }
            }
        }
        // What is left in the batch was written; its receipts went out.
        batch.clear();
        written
    }

    /// Tells every caller whose entry was judged under another epoch than
    /// `epoch` that the policy moved, and keeps the rest.
    fn take_out_moved(batch: &mut Vec<Pending>, epoch: u64) {
        let mut kept = Vec::with_capacity(batch.len());
        for mut p in batch.drain(..) {
            if moved(p.judged, epoch) {
                metrics::counter!("govshare_audit_policy_moved_total").increment(1);
                let entry = p.entry.take().expect("an entry not yet written");
                p.answer(Err(AppendError::PolicyMoved(entry)));
            } else {
                kept.push(p);
            }
        }
        *batch = kept;
    }

    /// Frames the batch into this node's segments and syncs them.
    fn commit_local(&mut self, batch: &mut Vec<Pending>, fenced: bool) -> anyhow::Result<Done> {
        // From the fence's read until the batch is synced and answered, no
        // move of the fence completes: a change that returned has either
        // taken these entries out or waited for them.
        let lock = match (fenced, &self.fence) {
            (true, Some(f)) => f.backend.fence_lock(),
            _ => None,
        };
        let _held = lock.as_ref().map(|l| l.read().expect("fence lock"));
        if let (true, Some(f)) = (fenced, &self.fence) {
            Self::take_out_moved(batch, f.read()?);
        }
        let Sink::Local {
            segments,
            prev,
            indexer,
        } = &mut self.sink
        else {
            unreachable!("commit_local runs on the local sink");
        };
        let time = clock::to_timestamp(clock::now());
        let start = segments.next_index();
        let mut frames = Vec::new();
        let mut offsets = Vec::with_capacity(batch.len());
        let mut receipts = Vec::with_capacity(batch.len());
        let mut infos = Vec::with_capacity(batch.len());
        let mut chain = *prev;
        for (i, p) in batch.iter_mut().enumerate() {
            let e = p.entry.as_deref_mut().expect("an entry not yet written");
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
        if batch.is_empty() {
            return Ok(Done {
                size: start,
                bytes: 0,
            });
        }
        let placed = segments.append(&frames, &offsets, batch.len() as u64)?;
        *prev = chain;
        // Counted before any caller hears of it: whoever holds a receipt
        // finds the log at least that long.
        self.committed
            .fetch_max(segments.next_index(), Ordering::AcqRel);
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
        let _ = indexer.send(Batch {
            day: day_of(time.seconds),
            entries,
        });
        for (p, r) in batch.iter_mut().zip(receipts) {
            p.answer(Ok(r));
        }
        Ok(Done {
            size: segments.next_index(),
            bytes: frames.len() as u64,
        })
    }

    /// Appends the batch to the shared log in one transaction that holds
    /// the fence's row: sequenced, chained and durable across nodes.
    fn commit_shared(&mut self, batch: &mut Vec<Pending>, fenced: bool) -> anyhow::Result<Done> {
        let Sink::Shared { log, follower } = &mut self.sink else {
            unreachable!("commit_shared runs on the shared sink");
        };
        let time = clock::to_timestamp(clock::now());
        // The entries go into the append's transaction; those taken out by
        // the fence stay behind, to go back to their callers.
        let entries: Arc<std::sync::Mutex<Vec<Slot>>> = Arc::new(std::sync::Mutex::new(
            batch
                .iter_mut()
                .map(|p| (p.entry.take(), p.judged))
                .collect(),
        ));
        let node = self.node.clone();
        let building = entries.clone();
        let build: BuildRows = Box::new(move |epoch, head| {
            let mut entries = building.lock().expect("batch lock");
            let mut chain = head.last;
            let mut rows = Vec::with_capacity(entries.len());
            for (slot, judged) in entries.iter_mut() {
                if fenced && moved(*judged, epoch) {
                    continue;
                }
                let Some(mut e) = slot.take() else { continue };
                e.index = head.size + rows.len() as u64;
                e.time = Some(time);
                e.node.clone_from(&node);
                e.prev_leaf_hash = chain.map(|h| h.to_vec()).unwrap_or_default();
                let bytes = e.encode_to_vec();
                let leaf = leaf_hash(&bytes);
                chain = Some(leaf);
                rows.push(LogRow { bytes, leaf });
            }
            Ok(rows)
        });
        let fence = if fenced {
            self.fence.as_ref().map(|f| f.row)
        } else {
            None
        };
        let appended = log.append(fence, build)?;
        if fenced {
            // The entries the append left behind go back to their calls,
            // which the fence then answers as on the local sink.
            let mut back = entries.lock().expect("batch lock");
            for (p, (slot, _)) in batch.iter_mut().zip(back.iter_mut()) {
                if let Some(e) = slot.take() {
                    p.entry = Some(e);
                }
            }
            Self::take_out_moved(batch, appended.fence);
        }
        let size = appended.from.size + appended.rows.len() as u64;
        // Counted before any caller hears of it (as on the local sink).
        self.committed.fetch_max(size, Ordering::AcqRel);
        let mut bytes = 0;
        for (i, (p, row)) in batch.iter_mut().zip(&appended.rows).enumerate() {
            bytes += row.bytes.len() as u64;
            p.answer(Ok(Receipt {
                index: appended.from.size + i as u64,
                leaf_hash: row.leaf,
                time,
            }));
        }
        // This node's own entries need not be read back from the database.
        let _ = follower.try_send(super::follower::Own {
            start: appended.from.size,
            rows: appended.rows.into_iter().map(|r| r.bytes).collect(),
        });
        Ok(Done { size, bytes })
    }
}

/// A batch entry on its way into a shared append (taken when written), and
/// the epoch its call was judged under.
type Slot = (Option<Box<crate::proto::AuditEntry>>, Option<u64>);

/// What a commit made durable: the log's size after it, and its bytes.
struct Done {
    size: u64,
    bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::{BUSY_FOR, CONVOY, LINGER, LINGER_STEP};
    use crate::audit::{AppendError, AuditOptions, Fence, Pending, Receipt, Runtime};
    use crate::base::clock;
    use crate::proto::{AuditEntry, EntryKind};
    use crate::store::FenceRow;
    use futures_util::future::join_all;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    use tokio::sync::oneshot;

    const ROW: FenceRow = FenceRow {
        tree: "meta",
        key: b"epoch",
    };

    /// An entry of a pull, as the tests append it.
    fn pull() -> AuditEntry {
        AuditEntry {
            kind: EntryKind::Pull.into(),
            ..Default::default()
        }
    }

    /// On one node too: an entry judged under an epoch that has moved is
    /// not written, and its caller is told; one judged under the current
    /// epoch is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_entry_judged_under_a_moved_epoch_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let backend = crate::store::open_dir(&dir.path().join("store")).unwrap();
        let audit = Runtime::open(
            &dir.path().join("audit"),
            &dir.path().join("pki"),
            "govshare.test/fence",
            AuditOptions {
                fence: Some(Fence {
                    backend: backend.clone(),
                    row: ROW,
                }),
                ..AuditOptions::default()
            },
        )
        .unwrap();
        let log = audit.log();
        assert_eq!(
            log.append_judged(Box::new(pull()), 0).await.unwrap().index,
            0
        );
        backend
            .update_counter(ROW.tree, ROW.key, &mut |e| e + 1)
            .unwrap();
        assert!(matches!(
            log.append_judged(Box::new(pull()), 0).await,
            Err(AppendError::PolicyMoved(_))
        ));
        assert_eq!(log.committed(), 1, "the moved entry was not written");
        assert_eq!(
            log.append_judged(Box::new(pull()), 1).await.unwrap().index,
            1
        );
        // Entries that release nothing are never fenced.
        assert_eq!(log.append(pull()).await.unwrap().index, 2);
        drop(log);
        assert_eq!(audit.close().await.unwrap(), 3);
    }

    /// What became of a straggler: whether it shared the commit of the
    /// entries sent right behind it (one commit, one timestamp), and how
    /// long after it was sent its commit began.
    struct Straggler {
        shared: bool,
        waited: Duration,
    }

    /// Appends `before` entries at once, then, `pause` after their commit,
    /// a straggler the writer takes alone, then three entries right behind
    /// it. `None` if the last commit of the `before` entries was not what
    /// `before` asked for — a convoy's (at least [`CONVOY`] of them
    /// together), or, for fewer, a small shared one (two or more): the try
    /// says nothing then. Fewer than `CONVOY` are sent as `CONVOY - 1`, so
    /// that a writer that splits them still leaves two or more together.
    async fn straggler_after(
        log: &crate::audit::AuditLog,
        before: usize,
        pause: Duration,
    ) -> Option<Straggler> {
        let times: Vec<_> = join_all((0..before).map(|_| log.append(pull())))
            .await
            .into_iter()
            .map(|r| r.unwrap().time)
            .collect();
        let last = times.last().copied();
        let together = times.iter().filter(|t| Some(**t) == last).count();
        tokio::time::sleep(pause).await;
        let sent = clock::now();
        let straggler = send(log).await;
        taken(log);
        let behind = join_all((0..3).map(|_| log.append(pull())));
        let (straggler, behind) = tokio::join!(straggler, behind);
        let at = straggler.unwrap().unwrap().time;
        let shared = behind.into_iter().any(|r| r.unwrap().time == at);
        let waited = since(sent, &at);
        let asked = if before >= CONVOY {
            together >= CONVOY
        } else {
            (2..CONVOY).contains(&together)
        };
        asked.then_some(Straggler { shared, waited })
    }

    /// Puts a pull's entry on the writer's queue; its receipt comes on the
    /// channel returned.
    async fn send(log: &crate::audit::AuditLog) -> oneshot::Receiver<Result<Receipt, AppendError>> {
        let (done, receipt) = oneshot::channel();
        let pending = Pending {
            kind: EntryKind::Pull.into(),
            entry: Some(Box::new(pull())),
            judged: None,
            done: Some(done),
        };
        log.tx.send(pending).await.unwrap();
        receipt
    }

    /// Returns once the writer has taken everything queued: every slot is
    /// back. Yielding, so that other tests' threads and this log's own are
    /// not starved meanwhile.
    fn taken(log: &crate::audit::AuditLog) {
        while log.tx.capacity() < log.tx.max_capacity() {
            std::thread::yield_now();
        }
    }

    /// The commit stamp of a receipt to come.
    async fn stamp(
        receipt: oneshot::Receiver<Result<Receipt, AppendError>>,
    ) -> prost_types::Timestamp {
        receipt.await.unwrap().unwrap().time
    }

    /// How long after `sent` a commit stamped `at` began.
    fn since(sent: SystemTime, at: &prost_types::Timestamp) -> Duration {
        let committed = UNIX_EPOCH + Duration::new(at.seconds as u64, at.nanos as u32);
        committed.duration_since(sent).unwrap_or_default()
    }

    /// A fresh log of this node's own, in `dir`.
    fn quiet_log(dir: &tempfile::TempDir) -> Runtime {
        Runtime::open(
            &dir.path().join("audit"),
            &dir.path().join("pki"),
            "govshare.test/convoy",
            AuditOptions::default(),
        )
        .unwrap()
    }

    /// [`straggler_after`] on a fresh log until `tries` tries said
    /// something.
    async fn stragglers(tries: usize, before: usize, pause: Duration) -> Vec<Straggler> {
        let dir = tempfile::tempdir().unwrap();
        let audit = quiet_log(&dir);
        let log = audit.log();
        let (mut told, mut attempts) = (Vec::new(), 0);
        while told.len() < tries {
            attempts += 1;
            assert!(
                attempts <= 4 * tries,
                "the {before} entries never made the commit asked for"
            );
            told.extend(straggler_after(&log, before, pause).await);
        }
        drop(log);
        let appended = attempts * (before + 4);
        assert_eq!(audit.close().await.unwrap(), appended as u64);
        told
    }

    /// Under load, calls arrive in convoys: an entry the writer finds
    /// alone just after a convoy's commit is a straggler, and syncing it
    /// alone costs an fsync for one call. It waits a step for the calls
    /// behind it and shares their commit. A step is short, and a busy
    /// machine may hold back the calls behind it for longer: a few tries.
    /// A writer that syncs a straggler at once shares only if it is
    /// preempted between taking the straggler and looking for more, which
    /// all tries hardly are.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_straggler_after_a_convoy_shares_a_commit_with_the_calls_behind_it() {
        let tries = stragglers(5, 2 * CONVOY, Duration::ZERO).await;
        assert!(
            tries.iter().any(|t| t.shared),
            "the straggler was synced alone in 5 tries"
        );
    }

    /// Convoys come milliseconds apart, with smaller commits between
    /// them: a straggler that comes more than a `LINGER` after the last
    /// convoy's commit, but within [`BUSY_FOR`], still waits for the calls
    /// behind it. A writer busy for only a `LINGER` syncs it alone. Just
    /// past `LINGER`: a busy machine only ever makes the straggler later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_straggler_between_convoys_shares_a_commit_with_the_calls_behind_it() {
        let pause = LINGER + Duration::from_millis(1);
        let tries = stragglers(5, 2 * CONVOY, pause).await;
        assert!(
            tries.iter().any(|t| t.shared),
            "the straggler {pause:?} after a convoy was synced alone in 5 tries"
        );
    }

    /// The log is busy for a while, not for good: long after the last
    /// convoy a lone entry's commit begins at once, not a step later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_entry_long_after_a_convoy_is_synced_at_once() {
        let tries = stragglers(5, 2 * CONVOY, 2 * BUSY_FOR).await;
        let waits: Vec<_> = tries.iter().map(|t| t.waited).collect();
        assert!(
            waits.iter().any(|w| *w < LINGER_STEP),
            "the entry waited a step for company in every try: {waits:?}"
        );
    }

    /// A few calls together on a quiet log are no convoy: the writer
    /// commits them at once. Lingering over them — a step, and a second
    /// when the next call comes in the first — made four calls in flight
    /// slower than two. Three entries are queued while the writer commits
    /// a lead entry; once it has taken them, a fourth is sent. A writer
    /// that commits what it took lets it in only if it was held back
    /// between taking the third and looking for more (in a minority of
    /// tries at most); one that lingers lets it in every time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_few_calls_together_on_a_quiet_log_are_synced_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let audit = quiet_log(&dir);
        let log = audit.log();
        let mut joined = 0;
        for _ in 0..5 {
            let lead = send(&log).await;
            taken(&log);
            let mut few = Vec::new();
            for _ in 0..3 {
                few.push(send(&log).await);
            }
            taken(&log);
            let late = stamp(send(&log).await).await;
            let few = join_all(few.into_iter().map(stamp)).await;
            stamp(lead).await;
            joined += usize::from(few.contains(&late));
        }
        drop(log);
        assert_eq!(audit.close().await.unwrap(), 25);
        assert!(
            joined < 3,
            "in {joined} of 5 tries an entry sent after the writer took a few joined their commit: it lingered"
        );
    }

    /// At a few calls in flight a step's wait costs a call more than the
    /// sync it saves: after a shared commit of fewer than a convoy, a lone
    /// entry's commit begins at once, not a step later (in at least one of
    /// five tries: a busy machine may hold the writer back). A writer that
    /// waits sleeps a whole step first, in every try.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_entry_after_a_small_commit_is_synced_at_once() {
        let tries = stragglers(5, CONVOY - 1, Duration::ZERO).await;
        let waits: Vec<_> = tries.iter().map(|t| t.waited).collect();
        assert!(
            waits.iter().any(|w| *w < LINGER_STEP),
            "the entry waited a step for company in every try: {waits:?}"
        );
    }
}
