//! The audit log: append-only, durable before the response, fail-closed,
//! verifiable by someone who does not trust the gateway.
//!
//! Entries live in their own segment files (sled's `flush` does not fsync);
//! one writer thread group-commits them with `fdatasync`. A caller gets its
//! [`Receipt`] only once its entry is on disk. An indexer thread derives the
//! Merkle tiles, entry offsets, postings and statistics; one checkpoint
//! writer signs checkpoints and gathers witness cosignatures; a scrub
//! re-reads sealed segments in the background.
//!
//! [`Runtime::open`] is where the log is trusted or refused: it re-checks
//! every frame of every segment, refuses an index or a checkpoint that is
//! ahead of the segments or disagrees with them, and changes nothing on disk
//! except cutting an incomplete final frame of the newest segment — a write
//! that never finished and was never acknowledged.

pub mod bounded;
pub mod checkpoint;
pub mod export;
mod follower;
pub mod generation;
mod http;
pub mod index;
pub mod merkle;
pub mod postings;
pub mod publish;
mod scrub;
pub mod segment;
pub mod signer;
pub mod tiles;
pub mod verify;
pub mod verify_tiles;
pub mod witness;
mod writer;

/// The group commit's rule, which the configuration reference states (and
/// its test holds it to).
#[cfg(test)]
pub(crate) use writer::{CONVOY, LINGER};

use crate::proto::{AuditEntry, AuditReceipt, EntryKind};
use crate::store::{Backend, FenceRow, SharedLog};
use anyhow::{Context, Result};
use checkpoint::{LogKey, LogVerifier};
use futures_util::FutureExt;
use index::{AuditIndex, Batch, Indexer, recovered};
use sha2::{Digest, Sha256};
use signer::{Signed, Signer, WitnessConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// RFC 6962 leaf hash: SHA-256(0x00 ‖ entry bytes).
pub fn leaf_hash(entry_bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry_bytes);
    h.finalize().into()
}

/// The metric label of an entry kind.
pub fn kind_name(kind: i32) -> &'static str {
    match EntryKind::try_from(kind) {
        Ok(EntryKind::Pull) => "pull",
        Ok(EntryKind::Publish) => "publish",
        Ok(EntryKind::Admin) => "admin",
        Ok(EntryKind::AuditRead) => "audit_read",
        Ok(EntryKind::AuthFailure) => "auth_failure",
        _ => "unspecified",
    }
}

/// A method as a listing shows it: its name, and the API version when it
/// is not v1 (`GetPerson`, `GetPerson (v2)`), so an auditor reading a
/// table tells the two apart; the entry keeps the full path.
pub fn method_label(method: &str) -> String {
    let (service, name) = method.rsplit_once('/').unwrap_or(("", method));
    // A package's version part: v2, v1alpha, v2beta1.
    let version = service.split('.').find(|part| {
        part.strip_prefix('v').is_some_and(|rest| {
            rest.starts_with(|c: char| c.is_ascii_digit())
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
    });
    match version {
        Some(v) if v != "v1" => format!("{name} ({v})"),
        _ => name.to_string(),
    }
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

/// Why an entry judged under a policy epoch was not appended.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Unavailable(#[from] AuditUnavailable),
    /// The policy epoch moved after the call was judged: nothing was
    /// written; the caller judges again under the new policy. The entry
    /// comes back, to append again if the call is still allowed as it was.
    #[error("the policy changed while the call was served")]
    PolicyMoved(Box<AuditEntry>),
}

/// The counter the writer checks against each entry's judgement before it
/// makes a batch durable: the control plane's policy epoch, which every
/// change that can take access away moves before it returns.
#[derive(Clone)]
pub struct Fence {
    pub backend: Arc<dyn Backend>,
    pub row: FenceRow,
}

impl Fence {
    /// The counter's current value (0 before its first move).
    fn read(&self) -> Result<u64> {
        Ok(self
            .backend
            .get(self.row.tree, self.row.key)?
            .and_then(|b| b.as_slice().try_into().ok())
            .map_or(0, u64::from_le_bytes))
    }
}

#[derive(Clone)]
pub struct AuditOptions {
    /// Gateway node id written into every entry.
    pub node: String,
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Most entries committed by one `fdatasync`.
    pub max_batch: usize,
    /// A checkpoint is signed at most this long after new entries.
    pub checkpoint_interval: Duration,
    /// How often sealed segments are re-read.
    pub scrub_interval: Duration,
    /// Where the tree is published; `None`: the index's tile directory.
    pub publish_dir: Option<PathBuf>,
    /// How long a superseded partial tile stays published.
    pub publish_grace: Duration,
    pub witnesses: Vec<WitnessConfig>,
    /// The policy counter entries that release data are checked against.
    pub fence: Option<Fence>,
    /// The store's shared log, when several nodes serve one store: then
    /// the log's truth is there and this node's dir keeps a replica.
    pub shared: Option<Arc<dyn SharedLog>>,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            node: "node-1".into(),
            segment_bytes: 64 << 20,
            max_batch: 1024,
            checkpoint_interval: Duration::from_secs(1),
            scrub_interval: Duration::from_secs(3600),
            publish_dir: None,
            publish_grace: Duration::from_secs(600),
            witnesses: Vec::new(),
            fence: None,
            shared: None,
        }
    }
}

/// An entry on its way to the writer. The entry is boxed as it is
/// submitted: at ~1 KB, held by value it would make every future awaiting
/// an append (the handler's, each level's) that much larger, and each
/// `Box::pin` of a handler's future copies the whole of it.
struct Pending {
    /// `None` once the writer has moved it into a shared append, or back
    /// to its caller.
    entry: Option<Box<AuditEntry>>,
    /// The entry's kind (the entry itself may move into the sink).
    kind: i32,
    /// The policy epoch the call was judged under, for an entry that
    /// releases data ([`Fence`]).
    judged: Option<u64>,
    done: Option<oneshot::Sender<Result<Receipt, AppendError>>>,
}

impl Pending {
    /// Completes the caller's wait (once).
    fn answer(&mut self, result: Result<Receipt, AppendError>) {
        if let Some(done) = self.done.take() {
            let _ = done.send(result);
        }
    }
}

/// The log's health, as the health service and `/readyz` report it.
#[derive(Clone)]
pub struct Health {
    /// `false` while appends or fsyncs fail.
    pub writable: watch::Receiver<bool>,
    /// `false` while the indexer cannot keep up (it retries).
    pub indexing: watch::Receiver<bool>,
    /// `false` once the scrub found a damaged sealed segment.
    pub scrubbed: watch::Receiver<bool>,
    /// Why the log is behind its witnesses, once a witness said so: then it
    /// releases no data until the next generation (also after a restart).
    pub behind: watch::Receiver<Option<Arc<str>>>,
}

/// Handle to the log. Cloning is cheap; the writer stops when every handle
/// is dropped, after committing what it was given.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
    /// Entries durably committed so far (the writer's count).
    committed: Arc<std::sync::atomic::AtomicU64>,
    health: Health,
    indexed: watch::Receiver<u64>,
    index: AuditIndex,
    checkpoints: watch::Receiver<Option<Arc<Signed>>>,
    checkpoint_file: Arc<PathBuf>,
    key: Arc<LogKey>,
    verifier_key: Arc<str>,
}

impl AuditLog {
    /// Appends `entry` (its index, time and node are assigned by the writer)
    /// and waits until it is durable.
    pub fn append(
        &self,
        entry: AuditEntry,
    ) -> impl Future<Output = Result<Receipt, AuditUnavailable>> + Send + '_ {
        self.submit(Box::new(entry), None).map(|r| {
            r.map_err(|e| match e {
                AppendError::Unavailable(u) => u,
                AppendError::PolicyMoved(_) => {
                    unreachable!("an entry judged under no epoch is never fenced")
                }
            })
        })
    }

    /// Appends the entry of a call judged under policy `epoch`, unless the
    /// epoch has moved by the time the entry would be made durable
    /// ([`AppendError::PolicyMoved`]: nothing was written). The entry
    /// comes boxed: a caller that gets it back keeps it for its next try
    /// (see [`Pending`]).
    pub fn append_judged(
        &self,
        entry: Box<AuditEntry>,
        epoch: u64,
    ) -> impl Future<Output = Result<Receipt, AppendError>> + Send + '_ {
        self.submit(entry, Some(epoch))
    }

    /// Builds the [`Pending`] before anything awaits, so the futures of
    /// `append` and its callers hold a pointer, not the entry; it is queued
    /// when first polled. Its `async` block is the one level that holds
    /// the `Pending`: `append`, `append_judged` and `Pipeline::record` add
    /// none of their own (an `async fn` or block around it would hold the
    /// level below twice over).
    fn submit(
        &self,
        entry: Box<AuditEntry>,
        judged: Option<u64>,
    ) -> impl Future<Output = Result<Receipt, AppendError>> + Send + '_ {
        let (done, wait) = oneshot::channel();
        let pending = Pending {
            kind: entry.kind,
            entry: Some(entry),
            judged,
            done: Some(done),
        };
        async move {
            let stopped = || {
                AppendError::Unavailable(AuditUnavailable("the audit writer has stopped".into()))
            };
            self.tx.send(pending).await.map_err(|_| stopped())?;
            wait.await.map_err(|_| stopped())?
        }
    }

    /// Entries durably committed so far; the index and checkpoints follow.
    pub fn committed(&self) -> u64 {
        self.committed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Read access to the index (entries, postings, Merkle tiles).
    pub fn index(&self) -> &AuditIndex {
        &self.index
    }

    /// How many entries are indexed (and so provable).
    pub fn indexed(&self) -> watch::Receiver<u64> {
        self.indexed.clone()
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The newest checkpoint (readers never sign: one writer does).
    pub fn latest_checkpoint(&self) -> Option<Arc<Signed>> {
        self.checkpoints.borrow().clone()
    }

    /// A receiver that sees each new checkpoint.
    pub fn checkpoints(&self) -> watch::Receiver<Option<Arc<Signed>>> {
        self.checkpoints.clone()
    }

    /// `checkpoints.log`, for streaming every checkpoint (export).
    pub fn checkpoint_file(&self) -> &Path {
        &self.checkpoint_file
    }

    /// The log's `signed-note` verifier key.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The log's current origin (its generation's).
    pub fn origin(&self) -> &str {
        self.key.origin()
    }

    /// A signed note of `text` under the log's key (a snapshot's manifest).
    pub fn sign_text(&self, text: &str) -> Result<String> {
        self.key.sign_text(text)
    }

    /// Why the log is behind its witnesses, if it is — then no data may be
    /// released: what to tell a caller or a probe.
    pub fn behind(&self) -> Option<String> {
        self.health
            .behind
            .borrow()
            .as_deref()
            .map(generation::behind_message)
    }
}

/// Why the log was refused at start.
fn refuse(why: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "the audit log was not opened, and nothing was changed: {why}. Inspect it with `govshare audit verify --data-dir`"
    )
}

/// The running log: its threads and tasks. [`Runtime::close`] drains it.
pub struct Runtime {
    log: AuditLog,
    writer: std::thread::JoinHandle<()>,
    /// The replica's copier, when the log is shared.
    follower: Option<std::thread::JoinHandle<()>>,
    indexer: std::thread::JoinHandle<()>,
    signer: Signer,
    scrub: tokio::task::JoinHandle<()>,
}

impl Runtime {
    /// Opens (or creates) the log in `dir` with its signing key in
    /// `key_dir`. Everything that could refuse the log is checked before a
    /// byte is written.
    pub fn open(dir: &Path, key_dir: &Path, origin: &str, opts: AuditOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let Checked {
            key,
            entries,
            torn,
            last_leaf,
            latest,
            checkpoint_file,
            ..
        } = Checked::open(dir, key_dir, origin)?;
        let key = Arc::new(key);
        key.write_public(key_dir)?;
        // The log is trusted: from here on, recovery may write.
        let latest = match latest {
            Some(l) => l,
            None => {
                // A new log starts with a signed empty tree, so a missing
                // checkpoint file is always a sign of tampering.
                let root = merkle::empty_root();
                let note = key.sign(0, root);
                checkpoint::append_note(&checkpoint_file, &note)?;
                Signed {
                    note,
                    size: 0,
                    root,
                    signed_at: crate::base::clock::now(),
                }
            }
        };
        let firsts = segment::segments(dir)?
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        let mut indexer = Indexer::open(dir, firsts)?;
        let from = indexer.resume_from().min(entries);
        let mut day = String::new();
        let mut batch = Vec::new();
        segment::walk_from(dir, from, |i, first, offset, bytes| {
            if i >= entries {
                return Ok(());
            }
            let (c, d) = recovered(i, first, offset, bytes)?;
            if (d != day || batch.len() >= 4096) && !batch.is_empty() {
                indexer.ingest(&Batch {
                    day: std::mem::replace(&mut day, d.clone()),
                    entries: std::mem::take(&mut batch),
                })?;
            }
            day = d;
            batch.push(c);
            Ok(())
        })?;
        if !batch.is_empty() {
            indexer.ingest(&Batch {
                day,
                entries: batch,
            })?;
        }
        let latest = Some(latest);

        let segments = segment::SegmentWriter::resume(dir, opts.segment_bytes, entries, torn)?;
        let index = indexer.reader();
        let (indexed_tx, indexed) = watch::channel(indexer.size());
        let (indexing_tx, indexing) = watch::channel(true);
        let (batches_tx, batches) = std::sync::mpsc::channel::<Batch>();
        let indexer = std::thread::Builder::new()
            .name("audit-indexer".into())
            .spawn(move || index_loop(indexer, batches, indexed_tx, indexing_tx))?;
        let (tx, rx) = mpsc::channel(opts.max_batch * 4);
        let (writable_tx, writable) = watch::channel(true);
        metrics::gauge!("govshare_audit_writable").set(1.0);
        let mut size = entries;
        let (sink, follower) = match &opts.shared {
            None => (
                writer::Sink::Local {
                    segments,
                    prev: last_leaf,
                    indexer: batches_tx,
                },
                None,
            ),
            Some(log) => {
                follower::reconcile(log.as_ref(), dir, entries, last_leaf).map_err(refuse)?;
                size = size.max(log.head()?.size);
                // Bounded: a commit whose hand-over finds it full is read
                // back from the database instead.
                let (wake_tx, wake) = std::sync::mpsc::sync_channel(64);
                let follower = follower::Follower {
                    log: log.clone(),
                    segments,
                    prev: last_leaf,
                    indexer: batches_tx,
                    wake,
                    own: Default::default(),
                };
                let follower = std::thread::Builder::new()
                    .name("audit-follower".into())
                    .spawn(move || follower.run())?;
                (
                    writer::Sink::Shared {
                        log: log.clone(),
                        follower: wake_tx,
                    },
                    Some(follower),
                )
            }
        };
        let committed = Arc::new(std::sync::atomic::AtomicU64::new(size));
        let writer = writer::Writer {
            committed: committed.clone(),
            sink,
            fence: opts.fence.clone(),
            rx,
            writable: writable_tx,
            max_batch: opts.max_batch,
            node: opts.node.clone(),
            runtime: tokio::runtime::Handle::current(),
        };
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run())?;
        let tiles_dir = dir.join("index").join("tiles");
        let publisher = publish::Publisher::open(
            opts.publish_dir.as_deref().unwrap_or(&tiles_dir),
            &tiles_dir,
            index.tiles().clone(),
            opts.publish_grace,
        )?;
        let (behind_tx, behind) = watch::channel(generation::behind(dir)?.map(Arc::<str>::from));
        if let Some(why) = behind.borrow().as_deref() {
            tracing::error!("{}", generation::behind_message(why));
        }
        let signer = Signer::start(signer::Setup {
            key: key.clone(),
            dir: dir.to_path_buf(),
            behind: behind_tx,
            path: checkpoint_file.clone(),
            index: index.clone(),
            indexed: indexed.clone(),
            latest,
            witnesses: opts.witnesses.clone(),
            shared: opts.shared.clone(),
            interval: opts.checkpoint_interval,
            publisher,
        })?;
        let (scrubbed_tx, scrubbed) = watch::channel(true);
        let scrub = tokio::spawn(scrub::run(
            dir.to_path_buf(),
            index.clone(),
            opts.scrub_interval,
            scrubbed_tx,
        ));
        Ok(Self {
            log: AuditLog {
                tx,
                committed,
                health: Health {
                    writable,
                    indexing,
                    scrubbed,
                    behind,
                },
                indexed,
                index,
                checkpoints: signer.watch(),
                checkpoint_file: Arc::new(checkpoint_file),
                verifier_key: key.verifier_key().into(),
                key,
            },
            writer,
            follower,
            indexer,
            signer,
            scrub,
        })
    }

    /// A handle for appending and reading.
    pub fn log(&self) -> AuditLog {
        self.log.clone()
    }

    /// Drains the log once every other handle is dropped: the writer commits
    /// what it was given, the indexer makes everything durable, and a final
    /// checkpoint (with witness cosignatures) covers every acknowledged
    /// entry. Returns the log's size.
    pub async fn close(self) -> Result<u64> {
        let Self {
            log,
            writer,
            follower,
            indexer,
            signer,
            scrub,
        } = self;
        scrub.abort();
        let index = log.index.clone();
        drop(log);
        tokio::task::spawn_blocking(move || {
            let _ = writer.join();
            if let Some(f) = follower {
                let _ = f.join();
            }
            let _ = indexer.join();
        })
        .await?;
        signer.close().await;
        Ok(index.size())
    }
}

/// A log as a start finds it, checked before anything is written: its key,
/// how many entries its segments hold (and where an incomplete final frame
/// starts), the tree they form, and its newest checkpoint, verified.
struct Checked {
    key: LogKey,
    entries: u64,
    torn: Option<(PathBuf, u64)>,
    frontier: merkle::Frontier,
    last_leaf: Option<merkle::Hash>,
    latest: Option<Signed>,
    checkpoint_file: PathBuf,
}

impl Checked {
    /// Checks the log in `dir` of the log named `base` (its generations
    /// are `base/2`, …). A new, empty log gets its key here; an existing
    /// one must have the key its checkpoints were signed with.
    fn open(dir: &Path, key_dir: &Path, base: &str) -> Result<Self> {
        // 1. The newest checkpoint: damaged frames refuse; it must be of
        //    this log, under this log's key.
        let checkpoint_file = dir.join("checkpoints.log");
        let notes = checkpoint::read_notes(&checkpoint_file).map_err(refuse)?;
        let newest_note = notes.as_deref().and_then(<[String]>::last).cloned();
        let origin = match &newest_note {
            Some(note) => {
                let origin = note.lines().next().unwrap_or_default();
                if generation::split(origin).0 != base {
                    return Err(refuse(format!(
                        "its checkpoints are of the log '{}', but the configuration names '{base}' (audit.origin)",
                        crate::base::text::cap_for_message(origin)
                    )));
                }
                origin.to_string()
            }
            None => base.to_string(),
        };
        let fresh = newest_note.is_none() && segment::segments(dir)?.is_empty();
        let key = if fresh {
            LogKey::load_or_create(key_dir, &origin)?
        } else {
            LogKey::load(key_dir, &origin).map_err(refuse)?
        };
        let verifier = LogVerifier::parse(&key.verifier_key())?;
        let newest = match newest_note {
            Some(note) => {
                let c = verifier.open(&note).map_err(|e| {
                    refuse(format!(
                        "the newest checkpoint in {} does not verify under the log key in {}: {e}. A log never continues under another key",
                        checkpoint_file.display(),
                        key_dir.join(checkpoint::KEY_FILE).display()
                    ))
                })?;
                Some((note, c))
            }
            None => None,
        };

        // 2. Every frame of every segment, and the tree they form.
        let signed_size = newest.as_ref().map(|(_, c)| c.size);
        let mut frontier = merkle::Frontier::default();
        let mut root_at_signed = (signed_size == Some(0)).then(merkle::empty_root);
        let mut last_leaf = None;
        let (entries, torn) = segment::walk(dir, |_, _, _, bytes| {
            let leaf = leaf_hash(bytes);
            frontier.push(leaf);
            last_leaf = Some(leaf);
            if Some(frontier.size()) == signed_size {
                root_at_signed = Some(frontier.root());
            }
            Ok(())
        })
        .map_err(refuse)?;

        // 3. The checkpoint agrees with the segments; no checkpoint means an
        //    empty log.
        let latest = match newest {
            Some((note, c)) => {
                if c.size > entries {
                    return Err(refuse(format!(
                        "the newest checkpoint signs {} entries but the segments hold {entries}: entries were removed",
                        c.size
                    )));
                }
                if root_at_signed != Some(c.root) {
                    return Err(refuse(format!(
                        "the segments do not hash to the newest checkpoint's root at size {}: entries were altered",
                        c.size
                    )));
                }
                Some(Signed {
                    note,
                    size: c.size,
                    root: c.root,
                    signed_at: crate::base::clock::now(),
                })
            }
            None if entries > 0 => {
                return Err(refuse(format!(
                    "{} is missing or empty but the log holds {entries} entries: checkpoints were removed",
                    checkpoint_file.display()
                )));
            }
            None => None,
        };

        // 4. The derived index may lag the segments, never lead them.
        for (part, mark) in Indexer::marks(dir)? {
            if mark > entries {
                return Err(refuse(format!(
                    "the index's {part} cover {mark} entries but the segments in {} hold {entries}: entries were removed",
                    dir.display()
                )));
            }
        }
        Ok(Self {
            key,
            entries,
            torn,
            frontier,
            last_leaf,
            latest,
            checkpoint_file,
        })
    }
}

/// The indexer thread: indexes each committed batch, retrying (with health
/// NOT_SERVING for the audit service) while it fails, and syncs when idle.
fn index_loop(
    mut indexer: Indexer,
    batches: std::sync::mpsc::Receiver<Batch>,
    indexed: watch::Sender<u64>,
    healthy: watch::Sender<bool>,
) {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        let batch = match batches.recv_timeout(index::SYNC_EVERY) {
            Ok(b) => b,
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = indexer.sync() {
                    tracing::error!(error = %e, "syncing the audit index failed");
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        loop {
            match indexer.ingest(&batch) {
                Ok(()) => {
                    healthy.send_if_modified(|h| !std::mem::replace(h, true));
                    break;
                }
                Err(e) => {
                    if healthy.send_if_modified(|h| std::mem::replace(h, false)) {
                        tracing::error!(error = %e, "audit indexing failed; queries lag, retrying every second");
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        indexed.send_replace(indexer.size());
        metrics::gauge!("govshare_audit_index_lag_entries").set(0.0);
    }
    if let Err(e) = indexer.close() {
        tracing::error!(error = %e, "closing the audit index failed; it catches up on the next start");
    }
    indexed.send_replace(indexer.size());
}

#[cfg(test)]
mod tests {
    use super::method_label;

    #[test]
    fn a_listing_names_the_method_and_any_version_but_v1() {
        for (method, label) in [
            ("/govshare.v1.PopulationService/GetPerson", "GetPerson"),
            ("/govshare.v2.PopulationService/GetPerson", "GetPerson (v2)"),
            (
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                "ServerReflectionInfo (v1alpha)",
            ),
            (
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                "ServerReflectionInfo",
            ),
            ("/grpc.health.v1.Health/Check", "Check"),
            ("bootstrap", "bootstrap"),
            ("/vault.Service/Get", "Get"),
            ("", ""),
        ] {
            assert_eq!(method_label(method), label, "{method}");
        }
    }
}
