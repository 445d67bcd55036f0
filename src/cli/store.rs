//! `govshare store copy`: moves a stopped node's sled store into
//! PostgreSQL. The audit log stays in the node's data dir and records the
//! move; the node then runs with `[store] backend = "postgres"` on the same
//! data dir.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use govshare::gateway::first_start;
use govshare::proto;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct StoreArgs {
    #[command(subcommand)]
    command: StoreCommand,
}

#[derive(Subcommand, Debug)]
enum StoreCommand {
    /// Copy a stopped gateway's sled store into an empty PostgreSQL
    /// database, check the copy, and record it in the gateway's audit log.
    Copy(CopyArgs),
}

#[derive(Args, Debug)]
struct CopyArgs {
    /// The stopped gateway's data dir (its `store/` is the source).
    #[arg(long = "from")]
    data_dir: PathBuf,
    /// The target database, as `store.url` will name it (better in the
    /// environment than on a command line others can read).
    #[arg(long = "to", env = "GOVSHARE_STORE__URL")]
    url: String,
    /// The database server's CA, as `store.ca` will name it.
    #[arg(long, env = "GOVSHARE_STORE__CA")]
    ca: Option<PathBuf>,
    /// The gateway's config file (its audit settings); none: the demo's.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Who does the copy, for the log (default: the local user and host).
    #[arg(long)]
    operator: Option<String>,
}

pub async fn run(args: StoreArgs) -> Result<()> {
    let StoreCommand::Copy(a) = args.command;
    let mut cfg = govshare::config::Config::load(a.config.as_deref())?;
    cfg.data_dir = a.data_dir.clone();
    govshare::gateway::restore::check_finished(&cfg.data_dir)?;
    let store_dir = cfg.store_dir();
    anyhow::ensure!(
        store_dir.is_dir(),
        "{} holds no sled store: --from names a gateway's data dir",
        cfg.data_dir.display()
    );
    // The gateway's own lock on its data dir (whatever its store), then
    // sled's: a running gateway holds them.
    let _stopped = govshare::gateway::lock_data_dir(&cfg.data_dir)
        .context("the gateway must be stopped to copy its store")?;
    let source = govshare::store::open_dir(&store_dir)
        .context("the gateway must be stopped to copy its store")?;
    let audit = cfg.open_audit(&source)?;
    // The store must be current and this log's; a store from before the
    // binding is bound here, so the copy carries it.
    let controls = govshare::control::store::Store::new(source.clone());
    first_start::check_log(&cfg, &controls)?;
    first_start::bind_log(&cfg, &controls, audit.log().verifier_key())?;
    let target = govshare::store::open(&govshare::store::Location::Postgres(
        govshare::store::postgres::Location {
            url: a.url.clone(),
            pool_size: 4,
            ca: a.ca.clone(),
        },
    ))?;
    let moving_to = govshare::control::store::Store::new(target.clone());
    let copied = {
        let source = source.clone();
        tokio::task::spawn_blocking(move || {
            govshare::store::copy::copy(source.as_ref(), target.as_ref())
        })
        .await??
    };
    let summary = format!(
        "copied the sled store in {} to PostgreSQL: {} rows in {} trees, sha256 {}",
        store_dir.display(),
        copied.rows(),
        copied.trees.len(),
        copied.digest
    );
    let receipt = audit
        .log()
        .append(proto::AuditEntry {
            kind: proto::EntryKind::Admin.into(),
            method: "govshare store copy".into(),
            decision: proto::AuditDecision::Allow.into(),
            message: format!(
                "{summary}; by {}",
                a.operator
                    .clone()
                    .unwrap_or_else(super::audit::local_operator)
            ),
            ..Default::default()
        })
        .await?;
    audit.close().await?;
    // No node may begin the database's log before this node's log is in it.
    first_start::mark_log_moving(&moving_to, receipt.index + 1)?;
    // Recorded: from here on the sled store never serves again.
    first_start::mark_moved(&controls, "PostgreSQL")?;
    super::say(&summary);
    super::say(format!("recorded as audit entry {}", receipt.index));
    super::say(format!(
        "next: set [store] backend = \"postgres\" and url (or GOVSHARE_STORE__URL) in the config, start the gateway on {}; its sled store is marked as moved and will not serve again",
        cfg.data_dir.display()
    ));
    Ok(())
}
