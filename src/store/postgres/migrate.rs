//! Schema migrations: the numbered SQL files in `migrations/`, compiled into
//! the binary, applied in order under an advisory lock so that nodes
//! starting together apply each file once. `schema_version` records what
//! was applied; a database newer than this binary is refused, because a
//! binary cannot know what a later schema's rows mean.

use anyhow::{Context, Result, bail};
use tokio_postgres::Client;

/// `(version, file name, SQL)`, in version order.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "0001_store.sql",
        include_str!("../../../migrations/0001_store.sql"),
    ),
    (
        2,
        "0002_audit_log.sql",
        include_str!("../../../migrations/0002_audit_log.sql"),
    ),
    (
        3,
        "0003_append_only_log.sql",
        include_str!("../../../migrations/0003_append_only_log.sql"),
    ),
];

/// The advisory lock every migrating node takes (an arbitrary constant,
/// "govsmigr" in ASCII).
const MIGRATE_LOCK: i64 = i64::from_be_bytes(*b"govsmigr");

/// The schema version this binary writes and reads.
pub fn latest() -> i32 {
    MIGRATIONS.last().map_or(0, |m| m.0)
}

/// What a migration run found and did.
#[derive(Debug, PartialEq, Eq)]
pub struct Migrated {
    pub from: i32,
    pub to: i32,
}

/// Brings the schema up to this binary's version, or refuses a newer one.
pub async fn migrate(client: &mut Client) -> Result<Migrated> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .await
        .context("taking the migration lock")?;
    let result = apply(client).await;
    // The lock is the session's: released here, or when the connection ends.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
        .await;
    result
}

async fn apply(client: &mut Client) -> Result<Migrated> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .context("creating schema_version")?;
    let from = current(client).await?;
    refuse_newer(from)?;
    for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > from) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql)
            .await
            .with_context(|| format!("applying migration {name}"))?;
        tx.execute(
            "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit()
            .await
            .with_context(|| format!("committing migration {name}"))?;
        tracing::info!(version, name, "applied a schema migration");
    }
    Ok(Migrated {
        from,
        to: latest().max(from),
    })
}

/// The schema version the database holds (0: none yet).
pub async fn current(client: &Client) -> Result<i32> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client
        .query_one("SELECT max(version)::integer FROM schema_version", &[])
        .await
        .and_then(|row| row.try_get(0))
        .context("reading schema_version (a table of that name that is not govshare's?)")?;
    Ok(v.unwrap_or(0))
}

/// Refuses a schema this binary does not know.
pub fn refuse_newer(found: i32) -> Result<()> {
    if found > latest() {
        bail!(
            "the database's schema is version {found}, newer than this binary's version {}: \
             run a govshare built for schema {found} or later; nothing was changed",
            latest()
        );
    }
    Ok(())
}
