//! The cluster's one audit log in PostgreSQL (`migrations/0002_audit_log.sql`).
//!
//! An append is one transaction on a pooled connection: the fence's
//! advisory lock, shared, then the fence counter read, then the head row
//! `FOR UPDATE` — always in this order, so appends and changes never wait
//! on each other crosswise — then the entries at the next indexes, the new
//! head, and a `COMMIT` that returns only once durable
//! (`synchronous_commit` is checked at open). A change that moves the
//! counter takes the same lock exclusively for its transaction
//! (`PgBackend::write_moving_fence`): it waits for the appends in flight,
//! and an append that asks after it queues behind it, so it reads the new
//! value. (Unlike a row's `FOR SHARE`, which lets new sharers in ahead of a
//! waiting `FOR UPDATE`, the lock manager's queue cannot starve the
//! change under load.) The head lock serializes appends, so indexes are dense and
//! commit in index order: a reader never sees an entry before the ones
//! below it.
//!
//! The lead (who signs checkpoints and asks witnesses) is a session-level
//! advisory lock on a connection of its own: PostgreSQL releases it when
//! that session ends, however the holder died, and the next node to ask
//! takes it. A holder that hangs keeps its session open, so a node that
//! finds the lead held by a session unused past the lease ends it.

use super::{Io, Open, Tls, announce, connect, pooled};
use crate::store::{Appended, BuildRows, FenceRow, LogHead, SharedLog};
use anyhow::{Context, Result, anyhow, bail};
use deadpool_postgres::Pool;
use std::sync::Arc;

/// The advisory lock of the lead ("govslead" in ASCII).
const LEAD_LOCK: i64 = i64::from_be_bytes(*b"govslead");

/// Ends the session holding the lead if it has sat idle past the lease
/// (`$2`, seconds), in one statement (a holder that wakes between a look
/// and a kill is not killed): its process holds the lock but has stopped
/// leading. A frozen or wedged process keeps its session open — its kernel
/// still answers keepalives — and would keep the lead forever.
const END_STUCK_LEADER: &str = "SELECT pg_terminate_backend(a.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
       AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
       AND l.classid::bigint = ($1::bigint >> 32) AND l.objid::bigint = ($1::bigint & 4294967295) \
       AND a.state = 'idle' AND a.state_change < now() - make_interval(secs => $2)";

/// The fence's transaction-level advisory lock ("govsfenc" in ASCII).
pub(super) const FENCE_LOCK: i64 = i64::from_be_bytes(*b"govsfenc");

pub(super) const LOCK_SHARED: &str = "SELECT pg_advisory_xact_lock_shared($1)";
pub(super) const LOCK_WHOLE: &str = "SELECT pg_advisory_xact_lock($1)";
pub(super) const FENCE: &str = "SELECT value FROM kv WHERE tree = $1 AND key = $2";
const HEAD: &str = "SELECT size, last_leaf FROM audit_head FOR UPDATE";
const INSERT: &str = "INSERT INTO audit_entries (idx, entry) \
     SELECT $1 + o - 1, e FROM unnest($2::bytea[]) WITH ORDINALITY AS t(e, o)";
const MOVE_HEAD: &str = "UPDATE audit_head SET size = $1, last_leaf = $2";

pub struct PgLog {
    pool: Pool,
    io: Arc<Io>,
    config: tokio_postgres::Config,
    tls: Tls,
    /// The session holding [`LEAD_LOCK`], while this process leads.
    lead: Arc<tokio::sync::Mutex<Option<(tokio_postgres::Client, u64)>>>,
    /// Where each fenced append notes the counter it read.
    seen: Arc<announce::Seen>,
}

impl PgLog {
    pub(super) fn new(
        pool: Pool,
        io: Arc<Io>,
        config: tokio_postgres::Config,
        tls: Tls,
        seen: Arc<announce::Seen>,
    ) -> Self {
        Self {
            pool,
            io,
            config,
            tls,
            lead: Arc::default(),
            seen,
        }
    }
}

fn head_of(row: &tokio_postgres::Row) -> Result<LogHead> {
    let size: i64 = row.get(0);
    let last: Option<Vec<u8>> = row.get(1);
    let last = match last {
        Some(l) => Some(
            l.try_into()
                .map_err(|_| anyhow!("audit_head.last_leaf is not a 32-byte hash"))?,
        ),
        None => None,
    };
    Ok(LogHead {
        size: u64::try_from(size).context("audit_head.size is negative")?,
        last,
    })
}

pub(super) fn counter_of(value: Option<Vec<u8>>) -> u64 {
    value
        .and_then(|b| b.as_slice().try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// Takes the lead on `client`'s session if no session holds it.
async fn take_lead(client: &tokio_postgres::Client) -> Result<bool> {
    Ok(client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&LEAD_LOCK])
        .await
        .context("asking for the lead")?
        .get(0))
}

impl SharedLog for PgLog {
    fn head(&self) -> Result<LogHead> {
        let pool = self.pool.clone();
        self.io.run(async move {
            let c = pooled(&pool).await?;
            let row = c
                .query_one("SELECT size, last_leaf FROM audit_head", &[])
                .await
                .context("reading the audit log's head")?;
            head_of(&row)
        })
    }

    fn append(&self, fence: Option<FenceRow>, build: BuildRows) -> Result<Appended> {
        let (pool, seen) = (self.pool.clone(), self.seen.clone());
        self.io.run(async move {
            let conn = Open(Some(pooled(&pool).await?));
            let c = conn.client();
            let (lock_stmt, fence_stmt, head_stmt, insert, move_head) = tokio::try_join!(
                c.prepare_cached(LOCK_SHARED),
                c.prepare_cached(FENCE),
                c.prepare_cached(HEAD),
                c.prepare_cached(INSERT),
                c.prepare_cached(MOVE_HEAD),
            )?;
            // Lock and read in one round trip: BEGIN, the fence's lock and
            // counter, the head. Every statement is prepared, so each is
            // sent on `try_join!`'s first poll, which polls in order: the
            // server gets them, and runs them, in this order, and the
            // counter is read (in a snapshot of its own) once the lock is
            // held. (A statement prepared on the spot is sent a round trip
            // later, after the read: the counter was read before the lock.)
            let (_, _, fenced, head) = tokio::try_join!(
                async { c.batch_execute("BEGIN").await.context("starting an append") },
                async {
                    match fence {
                        Some(_) => c
                            .execute(&lock_stmt, &[&FENCE_LOCK])
                            .await
                            .map(drop)
                            .context("taking the policy fence"),
                        None => Ok(()),
                    }
                },
                async {
                    match fence {
                        Some(f) => c
                            .query_opt(&fence_stmt, &[&f.tree, &f.key])
                            .await
                            .map(|r| counter_of(r.map(|r| r.get(0))))
                            .context("reading the policy epoch"),
                        None => Ok(0),
                    }
                },
                async {
                    c.query_one(&head_stmt, &[])
                        .await
                        .context("locking the audit log's head")
                },
            )?;
            if fence.is_some() {
                seen.saw(fenced);
            }
            let from = head_of(&head)?;
            let rows = build(fenced, from)?;
            if rows.is_empty() {
                c.batch_execute("ROLLBACK").await.context("rolling back")?;
                conn.committed();
                return Ok(Appended {
                    from,
                    fence: fenced,
                    rows,
                });
            }
            let size = i64::try_from(from.size + rows.len() as u64).context("log size")?;
            let start = from.size as i64;
            let last = rows.last().map(|r| r.leaf.to_vec());
            let bytes: Vec<&[u8]> = rows.iter().map(|r| r.bytes.as_slice()).collect();
            // Writes and COMMIT in a second round trip; COMMIT returns once
            // the entries are durable.
            tokio::try_join!(
                async {
                    c.execute(&insert, &[&start, &bytes])
                        .await
                        .context("inserting audit entries")
                },
                async {
                    c.execute(&move_head, &[&size, &last])
                        .await
                        .context("moving the audit log's head")
                },
                async {
                    c.batch_execute("COMMIT")
                        .await
                        .context("committing the append")
                },
            )?;
            drop(bytes);
            conn.committed();
            Ok(Appended {
                from,
                fence: fenced,
                rows,
            })
        })
    }

    fn read(&self, from: u64, limit: usize) -> Result<Vec<Vec<u8>>> {
        let pool = self.pool.clone();
        self.io.run(async move {
            let c = pooled(&pool).await?;
            let stmt = c
                .prepare_cached(
                    "SELECT idx, entry FROM audit_entries WHERE idx >= $1 ORDER BY idx LIMIT $2",
                )
                .await?;
            let rows = c
                .query(&stmt, &[&(from as i64), &(limit as i64)])
                .await
                .context("reading audit entries")?;
            let mut out = Vec::with_capacity(rows.len());
            for (i, r) in rows.into_iter().enumerate() {
                let idx: i64 = r.get(0);
                if idx as u64 != from + i as u64 {
                    bail!(
                        "the shared audit log has no entry {} (the next is {idx})",
                        from + i as u64
                    );
                }
                out.push(r.get(1));
            }
            Ok(out)
        })
    }

    fn try_lead(&self, lease: std::time::Duration) -> Result<Option<u64>> {
        let (config, tls, lead) = (self.config.clone(), self.tls.clone(), self.lead.clone());
        self.io.run(async move {
            // The lock's session lives as long as this process leads; it
            // must answer now, or the lead may already be another's.
            let mut held = lead.lock().await;
            if let Some((client, term)) = held.as_ref() {
                if client.simple_query("SELECT 1").await.is_ok() {
                    return Ok(Some(*term));
                }
            }
            let term = held.as_ref().map_or(0, |(_, t)| t + 1);
            *held = None;
            let client = connect(&config, &tls).await?;
            // The server notices a vanished holder in seconds, not the
            // system's two hours, and frees the lead.
            client
                .batch_execute(
                    "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; SET tcp_keepalives_count = 3",
                )
                .await
                .context("setting the lead session's keepalives")?;
            if take_lead(&client).await? {
                *held = Some((client, term));
                return Ok(Some(term));
            }
            // Held by a session idle past the lease: its process no longer
            // leads. Ending that session frees the lead (the database's
            // role may end its own sessions); the stuck process finds its
            // session gone when it next asks, and follows.
            let lease = lease.as_secs_f64();
            let ended = client
                .query(END_STUCK_LEADER, &[&LEAD_LOCK, &lease])
                .await
                .context("ending a stuck leader's session")?;
            if !ended.is_empty() {
                tracing::warn!(
                    lease_secs = lease,
                    "the audit log's leader had not used its database session past its lease; ended that session to take the lead"
                );
                // Its locks go when its backend has exited: ask again
                // until then, within the call's deadline.
                for _ in 0..50 {
                    if take_lead(&client).await? {
                        *held = Some((client, term));
                        return Ok(Some(term));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
            Ok(None)
        })
    }
}
