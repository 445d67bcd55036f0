//! What a node knows of the fence counter without asking the database.
//!
//! Every move of the counter (`PgBackend::write_moving_fence`) announces
//! its new value on [`CHANNEL`] (`pg_notify`, delivered at its commit), and
//! every fenced append reads the committed value in its transaction. Each
//! node keeps the last value it saw in [`Seen`], so a node that holds the
//! control plane as of that value can judge a call without a round trip.
//!
//! Nothing here is needed for correctness: an announcement can be late or
//! lost (a listener reconnecting misses what was said meanwhile), and then
//! a call is judged under the older control plane — but its release goes
//! through an append that reads the counter in its own transaction, sees
//! the move, and has the call judged again. What the hint buys is that an
//! idle node learns of a change within milliseconds, not at its next pull.

use super::{CALL_DEADLINE, Tls};
use anyhow::{Context, Result, anyhow};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The channel the fence counter's moves are announced on.
pub(super) const CHANNEL: &str = "govshare_fence";

/// How long a listener whose session ended waits before it reconnects.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The fence counter's last value seen committed, or none known.
pub(super) struct Seen(AtomicU64);

/// No value known (a fresh start, a listener that lost its session).
const UNKNOWN: u64 = u64::MAX;

impl Default for Seen {
    fn default() -> Self {
        Self(AtomicU64::new(UNKNOWN))
    }
}

impl Seen {
    pub(super) fn get(&self) -> Option<u64> {
        Some(self.0.load(Ordering::Acquire)).filter(|v| *v != UNKNOWN)
    }

    /// Notes `value` as read or written committed just now. Two notes can
    /// land out of order (an append's read overtaken by a move's
    /// announcement); the next append's read puts it right, and a wrong
    /// value only ever costs a round trip or a judgement made again.
    pub(super) fn saw(&self, value: u64) {
        self.0.store(value, Ordering::Release);
    }

    fn forget(&self) {
        self.0.store(UNKNOWN, Ordering::Release);
    }
}

/// Listens on [`CHANNEL`] for as long as `io` runs, on a session of its
/// own, reconnecting after any loss; while it has no session, nothing is
/// known.
pub(super) fn listen(
    io: &tokio::runtime::Handle,
    config: tokio_postgres::Config,
    tls: Tls,
    seen: Arc<Seen>,
) {
    io.spawn(async move {
        loop {
            if let Err(e) = session(&config, &tls, &seen).await {
                tracing::warn!(error = format!("{e:#}"), "listening for policy changes");
            }
            seen.forget();
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    });
}

/// One listening session, until it ends.
async fn session(config: &tokio_postgres::Config, tls: &Tls, seen: &Arc<Seen>) -> Result<()> {
    let (client, mut connection) = tokio::time::timeout(CALL_DEADLINE, config.connect(tls.clone()))
        .await
        .map_err(|_| anyhow!("PostgreSQL did not answer within {CALL_DEADLINE:?}"))?
        .context("connecting to PostgreSQL to listen")?;
    let heard = seen.clone();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if let Ok(value) = n.payload().parse() {
                        heard.saw(value);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .context("LISTEN")?;
    // What was announced before the LISTEN took effect is lost: start
    // from nothing known, not from a value that may predate a move.
    seen.forget();
    driver
        .await
        .context("the listening session's task")?
        .context("the listening session")
}
