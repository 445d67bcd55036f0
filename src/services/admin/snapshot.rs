//! `SaveSnapshot` and `ConfirmRestore`.
//!
//! Saving, in order: the caller must be an administrator and the operator
//! must have named recipients; the write gate is taken whole (changes in
//! progress finish, new ones wait; pulls go on) while the store is copied
//! and until a checkpoint covers every change it copied; the snapshot then
//! copies the log up to that checkpoint and the signing keys, and signs its
//! manifest. So the store and the log are of one moment: no change is in
//! one but not the other.
//! The file is written encrypted beside the data dir's store; only once its
//! `ADMIN` entry (who, the log size, the file's SHA-256) is durable is a
//! byte of it streamed, and it is removed when the stream ends.

use super::{AdminApi, Plan, Write, internal};
use crate::audit::signer::Signed;
use crate::auth::Principal;
use crate::base::clock;
use crate::control::keys::random_id;
use crate::control::roles::Role;
use crate::pipeline::principal_entry;
use crate::proto::*;
use crate::snapshot::{Manifest, Taker};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tonic::{Request, Response, Status};

/// What the operator configured for snapshots.
pub struct SnapshotSettings {
    /// Whom snapshots are encrypted to (`[snapshot] recipients`).
    pub recipients: Vec<age::x25519::Recipient>,
    /// Where a snapshot is written before it is streamed (in the data dir).
    pub work_dir: PathBuf,
    /// The keys the gateway signs with.
    pub pki_dir: PathBuf,
    /// One snapshot at a time.
    pub busy: Arc<tokio::sync::Mutex<()>>,
    /// The longest it waits for a checkpoint covering what it copied
    /// ([`crate::audit::signer::longest_checkpoint_delay`]).
    pub checkpoint_wait: Duration,
}

/// The stream of a snapshot: its info, then the file in pieces.
pub type Chunks = tokio_stream::wrappers::ReceiverStream<Result<SnapshotChunk, Status>>;

/// How long a caller may stop reading a snapshot before it is cut off.
const STALLED: Duration = Duration::from_secs(60);
/// Bytes of the file per streamed message.
const PIECE: usize = 256 << 10;

/// A snapshot's file in the work dir, while it is written and streamed.
const SCRATCH_PREFIX: &str = ".snapshot-";

/// Removes what a snapshot cut short by a crash left in `work_dir` (each
/// file encrypted, but a full copy of the store): run at start.
pub fn remove_stale(work_dir: &std::path::Path) {
    let Ok(dir) = std::fs::read_dir(work_dir) else {
        return;
    };
    for e in dir.flatten() {
        if e.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Removes the snapshot's file when dropped: after streaming, or when the
/// caller goes away, or on any failure.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

const METHOD: &str = "/govshare.v1.AdminService/SaveSnapshot";

impl AdminApi {
    pub(super) async fn save(
        &self,
        req: Request<SaveSnapshotRequest>,
    ) -> Result<Response<Chunks>, Status> {
        let principal = self.pipeline.authenticate(&req, METHOD).await?;
        if !principal.has_role(Role::Admin) {
            let status =
                Status::permission_denied("this call needs the 'admin' role on your token");
            return Err(self.refuse(&principal, METHOD, true, status).await);
        }
        let settings = &self.settings.snapshot;
        if settings.recipients.is_empty() {
            let status = Status::failed_precondition(
                "no snapshot recipients are configured: the operator names them in [snapshot] recipients",
            );
            return Err(self.refuse(&principal, METHOD, false, status).await);
        }
        let Ok(one) = settings.busy.clone().try_lock_owned() else {
            let status =
                Status::resource_exhausted("a snapshot is being taken; try again when it is done");
            return Err(self.refuse(&principal, METHOD, false, status).await);
        };
        let (taken, scratch) = match self.take(&principal).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "taking a snapshot failed");
                let status = Status::unavailable(format!("the snapshot could not be taken: {e:#}"));
                return Err(self.refuse(&principal, METHOD, false, status).await);
            }
        };
        let sha256 = data_encoding::HEXLOWER.encode(&taken.sha256);
        let recipients: Vec<String> = settings
            .recipients
            .iter()
            .map(ToString::to_string)
            .collect();
        let mut entry = principal_entry(&principal, METHOD, EntryKind::Admin);
        entry.decision = AuditDecision::Allow.into();
        entry.change = Some(AdminChange {
            object: "snapshot".into(),
            object_id: sha256.clone(),
            before_json: String::new(),
            after_json: serde_json::json!({
                "log_size": taken.manifest.size,
                "origin": taken.manifest.origin,
                "bytes": taken.bytes,
                "sha256": sha256,
                "recipients": recipients,
            })
            .to_string(),
        });
        let receipt = self.pipeline.record(entry).await?;
        let info = SnapshotInfo {
            log_size: taken.manifest.size,
            sha256,
            bytes: taken.bytes,
            recipients,
            receipt: Some(receipt.to_proto()),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(stream_file(info, scratch, one, tx));
        Ok(Response::new(Chunks::new(rx)))
    }

    /// Copies the store under the closed gate, waits for a checkpoint that
    /// covers it, and writes the rest.
    async fn take(
        &self,
        principal: &Principal,
    ) -> anyhow::Result<(crate::snapshot::Taken, Scratch)> {
        let settings = &self.settings.snapshot;
        std::fs::create_dir_all(&settings.work_dir)?;
        let scratch = Scratch(
            settings
                .work_dir
                .join(format!("{SCRATCH_PREFIX}{}.age", random_id())),
        );
        let path = scratch.0.clone();
        let recipients = settings.recipients.clone();
        let pki = settings.pki_dir.clone();
        let backend = self.store.backend().clone();
        let closed = self.pipeline.gate().quiesce().await;
        // Every change whose entry is below this is in the store copy.
        let changes_up_to = self.log.committed();
        let taker = tokio::task::spawn_blocking(move || -> anyhow::Result<Taker> {
            let mut t = Taker::create(&path, &recipients)?;
            t.store(backend.as_ref())?;
            t.keys(&pki)?;
            Ok(t)
        })
        .await??;
        // The gate stays closed until a checkpoint covers the copy: the log
        // part ends at that checkpoint, and a change let through before it
        // would have its entry in the log but not its write in the store.
        // Entries that land meanwhile change nothing the copy holds (pulls,
        // reads, refusals).
        let checkpoint = self.checkpoint_covering(changes_up_to).await?;
        drop(closed);
        let log = self.log.clone();
        let header = Manifest {
            version: env!("CARGO_PKG_VERSION").into(),
            origin: log.origin().to_string(),
            size: checkpoint.size,
            taken: clock::unix_seconds(clock::now()),
            taken_by: format!("{}@{}", principal.client_id(), principal.department()),
            checkpoint: checkpoint.note.clone(),
            parts: Vec::new(),
        };
        let taken = tokio::task::spawn_blocking(move || {
            let mut t = taker;
            t.log(log.index(), log.checkpoint_file(), &checkpoint)?;
            t.finish(header, |text| log.sign_text(text))
        })
        .await??;
        Ok((taken, scratch))
    }

    /// The first checkpoint of at least `size` entries.
    async fn checkpoint_covering(&self, size: u64) -> anyhow::Result<Arc<Signed>> {
        let mut checkpoints = self.log.checkpoints();
        let wait = checkpoints.wait_for(|c| c.as_ref().is_some_and(|c| c.size >= size));
        let most = self.settings.snapshot.checkpoint_wait;
        match tokio::time::timeout(most, wait).await {
            Ok(Ok(c)) => Ok(c.clone().expect("waited for one")),
            Ok(Err(_)) => anyhow::bail!("the checkpoint writer has stopped"),
            Err(_) => {
                anyhow::bail!("no checkpoint covered the log's {size} entries within {most:?}")
            }
        }
    }

    /// A restored gateway serves again once an administrator says so.
    pub(super) fn plan_confirm_restore(
        &self,
        p: &Principal,
        r: ConfirmRestoreRequest,
    ) -> Result<Plan<ConfirmRestoreResponse>, Status> {
        if self.store.restore_hold().map_err(internal)?.is_none() {
            return Err(Status::failed_precondition(
                "this gateway is not waiting for a restore to be confirmed",
            ));
        }
        let note = r.note.trim();
        if note.len() > 1024 {
            return Err(Status::invalid_argument("note: at most 1024 bytes"));
        }
        let response = ConfirmRestoreResponse {
            confirmed_at: Some(clock::to_timestamp(clock::now())),
        };
        let c = AdminChange {
            object: "restore".into(),
            object_id: "confirmed".into(),
            before_json: String::new(),
            after_json: serde_json::json!({
                "confirmed_by": super::actor(p),
                "note": note,
            })
            .to_string(),
        };
        Ok(Plan {
            change: Some(c),
            writes: vec![Write::RestoreConfirmed],
            response,
        })
    }
}

/// Streams the info, then the file, then lets the scratch file go — and
/// only then the next snapshot begin: each holds a full copy of the store
/// in the data dir until it is streamed. A caller that stops reading for
/// [`STALLED`] is cut off, so a stalled client cannot keep a copy (or the
/// one-at-a-time lock) for ever.
async fn stream_file(
    info: SnapshotInfo,
    scratch: Scratch,
    _one: tokio::sync::OwnedMutexGuard<()>,
    tx: tokio::sync::mpsc::Sender<Result<SnapshotChunk, Status>>,
) {
    let send = |m: Result<SnapshotChunk, Status>| {
        let tx = tx.clone();
        async move { tx.send_timeout(m, STALLED).await.is_ok() }
    };
    let first = SnapshotChunk {
        part: Some(snapshot_chunk::Part::Info(info)),
    };
    if !send(Ok(first)).await {
        return;
    }
    let mut file = match tokio::fs::File::open(&scratch.0).await {
        Ok(f) => f,
        Err(e) => {
            send(Err(Status::unavailable(format!(
                "reading the snapshot: {e}"
            ))))
            .await;
            return;
        }
    };
    loop {
        let mut piece = vec![0u8; PIECE];
        let n = match file.read(&mut piece).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                send(Err(Status::unavailable(format!(
                    "reading the snapshot: {e}"
                ))))
                .await;
                return;
            }
        };
        piece.truncate(n);
        let chunk = SnapshotChunk {
            part: Some(snapshot_chunk::Part::Data(piece)),
        };
        if !send(Ok(chunk)).await {
            return;
        }
    }
}
