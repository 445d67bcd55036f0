//! `govshare snapshot restore`: a checked snapshot into an empty data dir,
//! as the next generation of its log, held until an administrator confirms.
//!
//! Nothing is written until the whole file has been checked (it is read
//! twice: once to check, once to write, checking again). Then the store,
//! the keys and the log are written; the log's next generation starts
//! ([`crate::audit::generation`]) — the snapshot always ends before the log
//! it came from, its own entry being after its checkpoint; and the store
//! is marked so the gateway releases no data until an administrator
//! confirms, because revocations made after the snapshot are not in it.

use crate::audit::checkpoint::LogVerifier;
use crate::audit::generation::{self, Begun, Start};
use crate::config::Config;
use crate::control::store::Store;
use crate::proto::storage::RestoreHold;
use crate::snapshot::{self, Checked, Discard};
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Present in a data dir while a restore writes it, removed as its last
/// step: a restore killed half-way leaves a partial store without its hold
/// and perhaps no log key, which a start must not take for a fresh gateway.
const UNFINISHED: &str = "restore-unfinished";

/// Refuses a data dir a restore did not finish.
pub fn check_finished(data_dir: &Path) -> Result<()> {
    if data_dir.join(UNFINISHED).exists() {
        bail!(
            "a restore into {} did not finish (it was interrupted): remove the directory (with store.backend = \"postgres\", also empty its database) and restore again",
            data_dir.display()
        );
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

/// What a restore did.
pub struct Restored {
    pub checked: Checked,
    pub generation: Begun,
}

/// Who restores, and why (for the generation's entry).
pub struct Why {
    pub operator: String,
    pub reason: String,
}

/// Restores `file` into `cfg.data_dir`, which must be empty or absent.
/// `configured`: whether `cfg` came from the operator's file, whose
/// `audit.origin` the snapshot's log must then be.
pub fn restore(
    cfg: &Config,
    configured: bool,
    file: &Path,
    identity: &age::x25519::Identity,
    pinned: Option<&LogVerifier>,
    why: Why,
) -> Result<Restored> {
    let dir = &cfg.data_dir;
    let existed = dir.exists();
    if existed
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty: a restore writes only into an empty directory",
            dir.display()
        );
    }
    let checked = snapshot::read(file, identity, pinned, &mut Discard)
        .context("REFUSED, nothing was written")?;
    let (base, _) = generation::split(&checked.manifest.origin);
    if configured && base != cfg.audit.origin {
        bail!(
            "the snapshot is of the log '{base}', the configuration names '{}' (audit.origin); nothing was written",
            cfg.audit.origin
        );
    }
    let written = write(cfg, file, identity, pinned, &checked, why);
    if written.is_err() {
        // Only what this restore wrote is there: take it away again.
        let _ = std::fs::remove_dir_all(dir);
        if existed {
            let _ = std::fs::create_dir_all(dir);
        }
    }
    Ok(Restored {
        generation: written?,
        checked,
    })
}

/// Writes the snapshot into the (empty) store and the log, and begins the
/// new generation.
fn fill(
    cfg: &Config,
    file: &Path,
    identity: &age::x25519::Identity,
    pinned: Option<&LogVerifier>,
    checked: &Checked,
    why: Why,
    backend: &std::sync::Arc<dyn crate::store::Backend>,
) -> Result<Begun> {
    let mut into = snapshot::restore::Restoring::new(
        backend.clone(),
        &cfg.audit_dir(),
        &cfg.pki_dir(),
        cfg.audit_options().segment_bytes,
    )?;
    let again = snapshot::read(file, identity, pinned, &mut into)
        .context("the snapshot changed while it was restored; nothing is left of the restore")?;
    if again.manifest != checked.manifest {
        bail!("the snapshot changed while it was restored; nothing is left of the restore");
    }
    into.finish()?;
    let m = &checked.manifest;
    generation::begin(
        &cfg.audit_dir(),
        &cfg.pki_dir(),
        generation::split(&m.origin).0,
        &cfg.audit_options(),
        Start {
            lost: format!(
                "entry {} (the snapshot's own) and every later entry of {}",
                m.size, m.origin
            ),
            started_by: why.operator.clone(),
            reason: why.reason,
            method: "govshare snapshot restore",
        },
    )
}

fn write(
    cfg: &Config,
    file: &Path,
    identity: &age::x25519::Identity,
    pinned: Option<&LogVerifier>,
    checked: &Checked,
    why: Why,
) -> Result<Begun> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&cfg.data_dir)?;
    std::fs::set_permissions(&cfg.data_dir, std::fs::Permissions::from_mode(0o700))?;
    let mark = cfg.data_dir.join(UNFINISHED);
    crate::base::files::write_secret_file(&mark, "a restore is writing this directory\n")?;
    sync_dir(&cfg.data_dir)?;
    let backend = crate::store::open(&cfg.store_location())?;
    // A shared database outlives any data dir: never restore over one that
    // holds another gateway's data.
    let held = backend.trees()?;
    anyhow::ensure!(
        held.is_empty(),
        "the configured store is not empty (it holds {}): a restore goes only into an empty one",
        held.join(", ")
    );
    let restored_by = why.operator.clone();
    let begun = fill(cfg, file, identity, pinned, checked, why, &backend);
    if begun.is_err() {
        // The store was empty: take away what this restore wrote (in a
        // shared database, removing the data dir does not).
        if let Err(e) = crate::store::copy::clear(backend.as_ref()) {
            tracing::error!(error = %e, "removing a failed restore's rows from the store failed; empty the database by hand");
        }
    }
    let begun = begun?;
    let m = &checked.manifest;
    let store = Store::new(backend);
    let now = crate::base::clock::now();
    store.put_restore_hold(&RestoreHold {
        snapshot_taken_at: Some(prost_types::Timestamp {
            seconds: m.taken,
            nanos: 0,
        }),
        log_size: m.size,
        generation: begun.number,
        restored_at: Some(crate::base::clock::to_timestamp(now)),
        restored_by,
    })?;
    store.sync()?;
    std::fs::remove_file(&mark)?;
    sync_dir(&cfg.data_dir)?;
    Ok(begun)
}
