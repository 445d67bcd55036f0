//! The checkpoint writer: the one task that signs checkpoints and appends
//! them to `checkpoints.log`, so checkpoints can never be written out of
//! order. It signs at most about once per interval after new entries are
//! indexed, asks every configured witness to cosign (C2SP tlog-witness
//! `add-checkpoint`, with a consistency proof from the size the witness last
//! saw), appends the note with every cosignature it collected, and
//! publishes the tree of hash tiles with that note as plain files
//! ([`super::publish`]). Readers get the latest checkpoint from memory;
//! older ones stay on disk only.
//!
//! A witness that is down or slow delays its own cosignature, never a pull:
//! each request is bounded in time, and a failing witness is retried on the
//! next checkpoint.

use super::checkpoint::{
    Checkpoint, CosignatureVerifier, LogKey, add_signature_lines, append_note, own_cosignatures,
};
use super::index::AuditIndex;
use super::merkle::{self, Hash};
use super::publish::Publisher;
use crate::store::SharedLog;
use anyhow::{Context, Result, anyhow, bail};
use data_encoding::BASE64;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, watch};

/// The newest checkpoint, as readers see it.
#[derive(Debug, Clone)]
pub struct Signed {
    pub note: String,
    pub size: u64,
    pub root: Hash,
    /// When it was signed (for a checkpoint found on disk at start: then).
    pub signed_at: std::time::SystemTime,
}

/// A configured witness.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// The witness's key name (as in its verifier key).
    pub name: String,
    /// Its submission prefix; `add-checkpoint` is appended.
    pub url: String,
    /// Its `cosignature/v1` verifier key.
    pub key: String,
}

/// How long one witness request may take.
const WITNESS_TIMEOUT: Duration = Duration::from_secs(3);

/// The longest a checkpoint can take after new entries: the interval, then
/// each witness asked (twice at most, each bounded by its timeout), with
/// room for the disk. A snapshot waits this long for one.
pub fn longest_checkpoint_delay(interval: Duration, witnesses: usize) -> Duration {
    interval * 2 + WITNESS_TIMEOUT * 2 * witnesses as u32 + Duration::from_secs(10)
}

struct Witness {
    config: WitnessConfig,
    verifier: CosignatureVerifier,
    /// The size the witness last cosigned, once known.
    size: Option<u64>,
}

impl Witness {
    fn new(config: WitnessConfig) -> Result<Self> {
        let verifier = CosignatureVerifier::parse(&config.key)
            .with_context(|| format!("witness '{}': key", config.name))?;
        if verifier.name() != config.name {
            bail!(
                "witness '{}': its key is named '{}'",
                config.name,
                verifier.name()
            );
        }
        Ok(Self {
            config,
            verifier,
            size: None,
        })
    }

    /// Asks for a cosignature; returns the verified cosignature lines.
    async fn cosign(&mut self, index: &AuditIndex, signed: &Signed, held: u64) -> Result<String> {
        for _ in 0..2 {
            let old = self.size.unwrap_or(0).min(signed.size);
            let proof = if old == 0 || old == signed.size {
                Vec::new()
            } else {
                let (index, size) = (index.clone(), signed.size);
                tokio::task::spawn_blocking(move || merkle::consistency_proof(&index, old, size))
                    .await??
            };
            let mut body = format!("old {old}\n");
            for h in &proof {
                body.push_str(&BASE64.encode(h));
                body.push('\n');
            }
            body.push('\n');
            body.push_str(&signed.note);
            let (status, text) = tokio::time::timeout(
                WITNESS_TIMEOUT,
                super::http::post(
                    &format!("{}/add-checkpoint", self.config.url.trim_end_matches('/')),
                    body,
                ),
            )
            .await
            .map_err(|_| anyhow!("no answer within {WITNESS_TIMEOUT:?}"))??;
            match status {
                200 => {
                    let own = own_cosignatures(&signed.note, &text, &self.verifier);
                    if own.is_empty() {
                        bail!("its answer carries no valid cosignature by its key");
                    }
                    self.size = Some(signed.size);
                    return Ok(own);
                }
                409 => {
                    let seen: u64 = text
                        .trim()
                        .parse()
                        .map_err(|_| anyhow!("409 without a size: {}", text.trim()))?;
                    if seen > held {
                        return Err(Behind::Shorter {
                            witness: self.config.name.clone(),
                            seen,
                            held,
                        }
                        .into());
                    }
                    if old > 0 && seen == old {
                        // We sent the size it has, and it still conflicts:
                        // it cosigned another root there.
                        return Err(Behind::Forked {
                            witness: self.config.name.clone(),
                            at: old,
                        }
                        .into());
                    }
                    if seen > signed.size {
                        // The log holds what the witness saw (a checkpoint
                        // cosigned just before a crash, say): the next one
                        // will extend it.
                        self.size = Some(seen);
                        bail!("it has seen size {seen}; the next checkpoint extends it");
                    }
                    self.size = Some(seen);
                }
                // The proof from the size it cosigned does not verify: the
                // tree it saw is not a prefix of this log (a rollback that
                // has since grown past what the witness saw).
                422 if old > 0 => {
                    return Err(Behind::Forked {
                        witness: self.config.name.clone(),
                        at: old,
                    }
                    .into());
                }
                code => bail!("refused with HTTP {code}: {}", text.trim()),
            }
        }
        bail!("the witness's idea of the last size kept changing")
    }
}

/// A witness has seen another past of this log: the log lost its tail (or
/// was rolled back and grew again) and must not continue as if it had not.
#[derive(Debug, thiserror::Error)]
pub enum Behind {
    /// It has seen the log larger than it now is.
    #[error("witness '{witness}' has seen this log at size {seen}; it held {held} entries")]
    Shorter {
        witness: String,
        seen: u64,
        held: u64,
    },
    /// It cosigned a tree at `at` that this log's first `at` entries are
    /// not: a rollback that has since grown past what the witness saw.
    #[error(
        "witness '{witness}' has cosigned another tree at size {at}: this log's first {at} entries are not the ones it saw"
    )]
    Forked { witness: String, at: u64 },
}

/// Handle to the checkpoint writer.
pub struct Signer {
    latest: watch::Receiver<Option<Arc<Signed>>>,
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The `result` of a checkpoint published while no witness is configured:
/// an operator sees that the log is not witnessed, not an empty panel.
const UNWITNESSED: &str = "unwitnessed";

/// `govshare_witness_cosignatures_total{witness,result}`.
fn cosignatures(witness: &str, result: &'static str) -> metrics::Counter {
    metrics::counter!(
        "govshare_witness_cosignatures_total",
        "witness" => witness.to_string(),
        "result" => result,
    )
}

/// What the checkpoint writer signs, where it writes, whom it asks.
pub struct Setup {
    pub key: Arc<LogKey>,
    /// The log's directory, where a behind-witness mark is kept.
    pub dir: PathBuf,
    /// Set when a witness has seen the log larger than it is.
    pub behind: watch::Sender<Option<Arc<str>>>,
    /// `checkpoints.log`.
    pub path: PathBuf,
    pub index: AuditIndex,
    pub indexed: watch::Receiver<u64>,
    /// The newest checkpoint already on disk.
    pub latest: Option<Signed>,
    pub witnesses: Vec<WitnessConfig>,
    pub interval: Duration,
    pub publisher: Publisher,
    /// The store's shared log, when several nodes serve it: then only the
    /// node that leads asks the witnesses.
    pub shared: Option<Arc<dyn SharedLog>>,
}

/// Who asks the witnesses. Every node signs checkpoints of its replica
/// (under the one log key, of one log: any two are consistent), but a
/// witness must see one growing sequence of checkpoints, so one node at a
/// time asks it: the holder of the shared log's lead. A new leader asks
/// only once its replica holds everything the log held when it took the
/// lead, so it never shows a witness a tree smaller than the last leader
/// did.
struct Lead {
    log: Option<Arc<dyn SharedLog>>,
    /// How long the leader may go without asking before another node
    /// takes the lead: longer than its longest round.
    lease: Duration,
    /// The term of the lead this node holds, and the shared log's size
    /// when it took it.
    since: Option<(u64, u64)>,
}

impl Lead {
    /// Whether this node may show witnesses a checkpoint of `size` now.
    async fn asks(&mut self, size: u64) -> bool {
        let Some(log) = self.log.clone() else {
            return true;
        };
        let lease = self.lease;
        let held = tokio::task::spawn_blocking(move || {
            let Some(term) = log.try_lead(lease)? else {
                return anyhow::Ok(None);
            };
            Ok(Some((term, log.head()?.size)))
        })
        .await;
        match held {
            Ok(Ok(Some((term, head)))) => {
                // A new term: another node may have led (and shown the
                // witnesses a larger tree) meanwhile.
                if self.since.is_none_or(|(t, _)| t != term) {
                    tracing::info!(
                        size = head,
                        "this node leads the shared audit log: it asks the witnesses"
                    );
                    self.since = Some((term, head));
                }
                size >= self.since.map_or(u64::MAX, |(_, s)| s)
            }
            Ok(Ok(None)) => {
                self.since = None;
                false
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot tell whether this node leads the shared audit log; not asking witnesses");
                self.since = None;
                false
            }
            Err(_) => false,
        }
    }

    /// How many entries the log holds: over a shared store, the database's
    /// (a replica may lag it; a witness that has seen more than the
    /// replica but no more than the database is not ahead of the log).
    async fn log_size(&self, replica: u64) -> u64 {
        let Some(log) = self.log.clone() else {
            return replica;
        };
        match tokio::task::spawn_blocking(move || log.head()).await {
            Ok(Ok(head)) => head.size.max(replica),
            // Unknown: never call the log behind on a guess.
            _ => u64::MAX,
        }
    }
}

impl Signer {
    /// Starts the writer.
    pub fn start(setup: Setup) -> Result<Self> {
        let Setup {
            key,
            dir,
            behind,
            path,
            index,
            indexed,
            latest,
            witnesses,
            interval,
            mut publisher,
            shared,
        } = setup;
        let witnesses = witnesses
            .into_iter()
            .map(Witness::new)
            .collect::<Result<Vec<_>>>()?;
        let witness_count = witnesses.len();
        // Every series exists from the first scrape, at 0.
        for w in &witnesses {
            for result in ["ok", "error"] {
                cosignatures(&w.config.name, result).increment(0);
            }
        }
        if witnesses.is_empty() {
            cosignatures("", UNWITNESSED).increment(0);
        }
        // What is on disk is published at once, so the tree is readable
        // from the first moment.
        if let Some(l) = &latest {
            publisher
                .publish(l.size, &l.note)
                .context("publishing the newest checkpoint's tree")?;
        }
        let (latest_tx, latest_rx) = watch::channel(latest.map(Arc::new));
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(
            Loop {
                key,
                dir,
                behind,
                path,
                index,
                latest: latest_tx,
                witnesses,
                publisher: Arc::new(std::sync::Mutex::new(publisher)),
                lead: Lead {
                    log: shared,
                    lease: longest_checkpoint_delay(interval, witness_count),
                    since: None,
                },
            }
            .run(indexed, stop_rx, interval),
        );
        Ok(Self {
            latest: latest_rx,
            stop: Some(stop_tx),
            task: Some(task),
        })
    }

    /// The newest checkpoint, if any.
    pub fn latest(&self) -> Option<Arc<Signed>> {
        self.latest.borrow().clone()
    }

    /// A receiver that sees every new checkpoint.
    pub fn watch(&self) -> watch::Receiver<Option<Arc<Signed>>> {
        self.latest.clone()
    }

    /// Signs a final checkpoint over everything indexed, has it cosigned,
    /// and stops.
    pub async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let (done_tx, done_rx) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = done_rx.await;
            }
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

struct Loop {
    key: Arc<LogKey>,
    dir: PathBuf,
    behind: watch::Sender<Option<Arc<str>>>,
    path: PathBuf,
    index: AuditIndex,
    latest: watch::Sender<Option<Arc<Signed>>>,
    witnesses: Vec<Witness>,
    publisher: Arc<std::sync::Mutex<Publisher>>,
    lead: Lead,
}

impl Loop {
    async fn run(
        mut self,
        mut indexed: watch::Receiver<u64>,
        mut stop: oneshot::Receiver<oneshot::Sender<()>>,
        interval: Duration,
    ) {
        self.probe().await;
        loop {
            tokio::select! {
                changed = indexed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // Let a burst of entries settle into one checkpoint.
                    tokio::select! {
                        () = tokio::time::sleep(interval / 2) => {}
                        done = &mut stop => {
                            self.final_round(done.ok()).await;
                            return;
                        }
                    }
                    let size = *indexed.borrow_and_update();
                    if let Err(e) = self.round(size).await {
                        tracing::error!(error = %e, "signing an audit checkpoint failed");
                    }
                }
                done = &mut stop => {
                    self.final_round(done.ok()).await;
                    return;
                }
            }
        }
    }

    /// At start, shows every witness the newest checkpoint: a log put back
    /// from an old image learns it is behind before its next checkpoint.
    /// (A pull may be answered in the milliseconds this takes; the mark
    /// then stops every later one.)
    async fn probe(&mut self) {
        let Some(latest) = self.latest.borrow().clone() else {
            return;
        };
        if self.witnesses.is_empty() || !self.lead.asks(latest.size).await {
            return;
        }
        let held = self.lead.log_size(self.index.size()).await;
        for i in 0..self.witnesses.len() {
            let result = self.witnesses[i].cosign(&self.index, &latest, held).await;
            if let Err(e) = result {
                self.witness_failed(i, &e).await;
            }
        }
    }

    /// A witness gave no cosignature: counted and logged; when it has seen
    /// the log larger than it is, the log stops releasing data, durably.
    async fn witness_failed(&mut self, i: usize, e: &anyhow::Error) {
        let name = self.witnesses[i].config.name.clone();
        match e.downcast_ref::<Behind>() {
            // Over a shared log another node may have led meanwhile — this
            // one lost the lead in the middle of a round, or hung — and
            // shown the witness the log as it grew since this round read
            // its size: only a witness that has seen more than the log holds
            // now says the log is behind.
            Some(Behind::Shorter { seen, .. })
                if self.lead.log.is_some()
                    && self.lead.log_size(self.index.size()).await >= *seen =>
            {
                tracing::warn!(
                    witness = %name,
                    seen,
                    "the witness has seen a larger checkpoint of this log from another node: this node no longer leads"
                );
                self.lead.since = None;
            }
            Some(b) => {
                let why = b.to_string();
                tracing::error!(witness = %name, "{}", super::generation::behind_message(&why));
                if let Err(e) = super::generation::mark_behind(&self.dir, &why) {
                    tracing::error!(error = %e, "recording that the log is behind its witnesses failed");
                }
                self.behind.send_replace(Some(why.into()));
            }
            None => {
                tracing::warn!(witness = %name, error = %e, "no cosignature for this checkpoint")
            }
        }
        cosignatures(&name, "error").increment(1);
    }

    async fn final_round(&mut self, done: Option<oneshot::Sender<()>>) {
        let size = self.index.size();
        match self.round(size).await {
            Ok(true) => tracing::info!(size, "signed a final audit checkpoint"),
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "signing the final audit checkpoint failed"),
        }
        if let Some(d) = done {
            let _ = d.send(());
        }
    }

    /// Signs, cosigns and appends a checkpoint of `size` if it is newer
    /// than the last one.
    async fn round(&mut self, size: u64) -> Result<bool> {
        let last = self.latest.borrow().as_ref().map_or(0, |s| s.size);
        if size <= last && self.latest.borrow().is_some() {
            return Ok(false);
        }
        let index = self.index.clone();
        let root = tokio::task::spawn_blocking(move || merkle::root(&index, size)).await??;
        let mut signed = Signed {
            note: self.key.sign(size, root),
            size,
            root,
            signed_at: crate::base::clock::now(),
        };
        let body = Checkpoint {
            origin: self.key.origin().into(),
            size,
            root,
        }
        .body();
        debug_assert!(signed.note.starts_with(&body));
        if self.witnesses.is_empty() {
            cosignatures("", UNWITNESSED).increment(1);
        }
        let asks = !self.witnesses.is_empty() && self.lead.asks(size).await;
        let held = if asks {
            self.lead.log_size(self.index.size()).await
        } else {
            0
        };
        for i in 0..self.witnesses.len() {
            if !asks {
                break;
            }
            match self.witnesses[i].cosign(&self.index, &signed, held).await {
                Ok(lines) => {
                    signed.note = add_signature_lines(&signed.note, &lines)?;
                    cosignatures(&self.witnesses[i].config.name, "ok").increment(1);
                }
                Err(e) => self.witness_failed(i, &e).await,
            }
        }
        let (path, note) = (self.path.clone(), signed.note.clone());
        let publisher = self.publisher.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            append_note(&path, &note)?;
            // The published tree follows the durable checkpoint file; a
            // failure here leaves the previous published checkpoint, whole.
            if let Err(e) = publisher
                .lock()
                .expect("publisher lock")
                .publish(size, &note)
            {
                tracing::error!(error = %e, size, "publishing the tree of a checkpoint failed");
            }
            Ok(())
        })
        .await??;
        self.latest.send_replace(Some(Arc::new(signed)));
        Ok(true)
    }
}
