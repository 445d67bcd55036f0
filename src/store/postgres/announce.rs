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

use super::{Tls, within_deadline};
use anyhow::{Context, Result};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// The channel the fence counter's moves are announced on.
pub(super) const CHANNEL: &str = "govshare_fence";

/// How long a listener whose session ended waits before it reconnects.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// The highest fence counter value seen committed while this node's
/// listener had a session, or none known. Stored as the value plus one,
/// so 0 (the least, for `fetch_max`) is "none known".
#[derive(Default)]
pub(super) struct Seen {
    value: AtomicU64,
    /// Whether the listener's session is live: only then can a value be
    /// trusted to be followed by the announcements of later moves.
    listening: AtomicBool,
}

impl Seen {
    pub(super) fn get(&self) -> Option<u64> {
        self.value.load(Ordering::Acquire).checked_sub(1)
    }

    /// Notes `value` as read or written committed just now, while the
    /// listener's session is live. The counter only moves on, so a note
    /// that lands late (an append's read overtaken by an announcement)
    /// never takes the hint back.
    pub(super) fn saw(&self, value: u64) {
        if self.listening.load(Ordering::Acquire) {
            self.value
                .fetch_max(value.saturating_add(1), Ordering::AcqRel);
        }
    }

    /// The session is live from here on; nothing from before it counts.
    fn listening(&self) {
        self.value.store(0, Ordering::Release);
        self.listening.store(true, Ordering::Release);
    }

    /// The session ended: announcements may be missed from here on.
    fn deaf(&self) {
        self.listening.store(false, Ordering::Release);
        self.value.store(0, Ordering::Release);
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
            seen.deaf();
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    });
}

/// One listening session, until it ends.
async fn session(config: &tokio_postgres::Config, tls: &Tls, seen: &Arc<Seen>) -> Result<()> {
    let (client, mut connection) = within_deadline(async {
        config
            .connect(tls.clone())
            .await
            .context("connecting to PostgreSQL to listen")
    })
    .await?;
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
    seen.listening();
    driver
        .await
        .context("the listening session's task")?
        .context("the listening session")
}
