//! `govshare snapshot save | inspect | restore`.

use super::{Connect, say, status_error};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use govshare::audit::checkpoint::LogVerifier;
use govshare::config::Config;
use govshare::proto::admin_service_client::AdminServiceClient;
use govshare::proto::*;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    pub command: SnapshotCommand,
}

#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Take a snapshot of a running gateway (as an administrator) and write
    /// it to FILE, or into --dir keeping the newest --keep.
    Save(SaveArgs),
    /// Decrypt and check a snapshot; print its manifest.
    Inspect(OpenArgs),
    /// Check a snapshot, then write it into an empty data dir as the next
    /// generation of its log.
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Where to write it.
    #[arg(required_unless_present = "dir", conflicts_with = "dir")]
    pub file: Option<PathBuf>,
    /// A directory of snapshots: write `govshare-<time>-<log size>.snapshot.age` there.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// With --dir: keep the newest this many snapshots (at least the one
    /// just written), remove older ones.
    #[arg(long, requires = "dir", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
}

#[derive(Args, Debug)]
pub struct OpenArgs {
    /// The snapshot file.
    pub file: PathBuf,
    /// The age identity file (`AGE-SECRET-KEY-1…`) it is encrypted to.
    #[arg(long)]
    pub identity: PathBuf,
    /// The log's verifier key as you know it (a file, e.g. a saved
    /// audit-log.pub): the snapshot's own key must be it. Without it the key
    /// inside the snapshot is used and printed, to compare.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub open: OpenArgs,
    /// The new data dir: empty or absent.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// The gateway's configuration file (its audit.origin must be the
    /// snapshot's log; its node_id names the restoring node).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Why, for the log's generation entry.
    #[arg(long, default_value = "restored from a snapshot")]
    pub reason: String,
    /// Who restores (default: the local user and host).
    #[arg(long)]
    pub operator: Option<String>,
}

pub async fn run(args: SnapshotArgs) -> Result<()> {
    match args.command {
        SnapshotCommand::Save(a) => save(a).await,
        SnapshotCommand::Inspect(a) => {
            let checked = govshare::snapshot::read(
                &a.file,
                &govshare::snapshot::identity(&a.identity)?,
                pinned(a.public_key.as_deref())?.as_ref(),
                &mut govshare::snapshot::Discard,
            )
            .context("REFUSED")?;
            print_manifest(&checked);
            say(
                "OK: it decrypts, its manifest is signed by the log key, every part and the log check out",
            );
            Ok(())
        }
        SnapshotCommand::Restore(a) => restore(a),
    }
}

fn pinned(file: Option<&Path>) -> Result<Option<LogVerifier>> {
    file.map(|f| {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        LogVerifier::parse(&text).with_context(|| format!("--public-key {}", f.display()))
    })
    .transpose()
}

fn when(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| t.with_timezone(&chrono::Local).to_rfc3339())
        .unwrap_or_else(|| seconds.to_string())
}

fn print_manifest(c: &govshare::snapshot::Checked) {
    let m = &c.manifest;
    say(format!(
        "log:       {} — {} entries, root {}",
        m.origin,
        m.size,
        data_encoding::BASE64.encode(&c.root)
    ));
    say(format!(
        "taken:     {} by {} (govshare {})",
        when(m.taken),
        m.taken_by,
        m.version
    ));
    say(format!("log key:   {}", c.verifier_key));
    for p in &m.parts {
        say(format!(
            "  {:<32} {:>10} records {:>12} bytes  sha256 {}",
            p.name,
            p.records,
            p.bytes,
            data_encoding::HEXLOWER.encode(&p.sha256)
        ));
    }
}

async fn save(a: SaveArgs) -> Result<()> {
    let client = a.connect.client("admin").await?;
    let mut admin = AdminServiceClient::new(client.channel.clone());
    let mut stream = admin
        .save_snapshot(client.request(SaveSnapshotRequest {}))
        .await
        .map_err(status_error)?
        .into_inner();
    let info = match stream.message().await.map_err(status_error)? {
        Some(SnapshotChunk {
            part: Some(snapshot_chunk::Part::Info(i)),
        }) => i,
        _ => bail!("the gateway's answer did not start with the snapshot's info"),
    };
    let file = match (&a.file, &a.dir) {
        (Some(f), _) => f.clone(),
        (None, Some(d)) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            // The time, then the log size: their order is their age, also
            // for two taken within a second.
            d.join(format!(
                "govshare-{}-{:012}.snapshot.age",
                chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
                info.log_size
            ))
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let partial = file.with_extension("partial");
    let mut out = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&partial)
            .with_context(|| format!("writing {}", partial.display()))?
    };
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    let written: Result<()> = async {
        while let Some(chunk) = stream.message().await.map_err(status_error)? {
            if let Some(snapshot_chunk::Part::Data(d)) = chunk.part {
                hash.update(&d);
                bytes += d.len() as u64;
                out.write_all(&d)?;
            }
        }
        out.sync_all()?;
        let sha = data_encoding::HEXLOWER.encode(&hash.finalize());
        if sha != info.sha256 || bytes != info.bytes {
            bail!("the file received is not the one the gateway announced (cut short?)");
        }
        Ok(())
    }
    .await;
    if let Err(e) = written {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &file)?;
    // The rename is part of the backup: a crash must not leave only the
    // pruned older snapshots behind.
    if let Some(parent) = file.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    say(format!(
        "wrote {}: {} bytes, the log's first {} entries, sha256 {}",
        file.display(),
        info.bytes,
        info.log_size,
        info.sha256
    ));
    say(format!("encrypted to: {}", info.recipients.join(", ")));
    if let Some(r) = &info.receipt {
        say(format!(
            "the snapshot is entry {} of the audit log",
            r.leaf_index
        ));
    }
    if let (Some(dir), Some(keep)) = (&a.dir, a.keep) {
        for old in prune(dir, keep as usize)? {
            say(format!(
                "removed {} (keeping the newest {keep})",
                old.display()
            ));
        }
    }
    Ok(())
}

/// Removes all but the newest `keep` snapshots `save --dir` wrote in `dir`.
fn prune(dir: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("govshare-") && n.ends_with(".snapshot.age"))
        })
        .collect();
    // Names carry the UTC time: their order is their age.
    all.sort();
    let old = all.len().saturating_sub(keep);
    let removed: Vec<PathBuf> = all.into_iter().take(old).collect();
    for p in &removed {
        std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(removed)
}

fn restore(a: RestoreArgs) -> Result<()> {
    let configured = a.config.is_some();
    let mut cfg = Config::load(a.config.as_deref())?;
    cfg.data_dir = a.data_dir.clone();
    let operator = a
        .operator
        .clone()
        .unwrap_or_else(super::audit::local_operator);
    let r = govshare::gateway::restore::restore(
        &cfg,
        configured,
        &a.open.file,
        &govshare::snapshot::identity(&a.open.identity)?,
        pinned(a.open.public_key.as_deref())?.as_ref(),
        govshare::gateway::restore::Why {
            operator,
            reason: a.reason,
        },
    )?;
    let m = &r.checked.manifest;
    let g = &r.generation;
    print_manifest(&r.checked);
    say(format!("restored into {}", a.data_dir.display()));
    say(format!(
        "the log continues as generation {}: {} — its entry {} records the restore and what is lost (entry {} onwards of {})",
        g.number, g.origin, g.size, m.size, m.origin
    ));
    say(format!(
        "verifier key (auditors: audit verify --public-key): {}",
        g.verifier_key
    ));
    say(format!(
        "witnesses: add  --log '{}'  to `govshare witness serve` (the gateway's [[audit.witness]] entries stay as they are)",
        g.verifier_key
    ));
    say(format!(
        "HELD: this gateway releases no data until an administrator confirms the restore. Revocations, suspensions and grant changes made after {} are not in this snapshot: make them again. To void every token issued before it: govshare admin key rotate --retire-previous. Then: govshare admin confirm-restore --note \"…\"",
        when(m.taken)
    ));
    say(format!(
        "auditors verify the restored log with: govshare audit verify --data-dir {} --accept-generation {}",
        a.data_dir.display(),
        g.number
    ));
    Ok(())
}
