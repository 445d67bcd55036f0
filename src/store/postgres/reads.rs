//! Point reads, gathered: every read this node asks for while others are
//! on their way goes out with them, as one statement per tree.
//!
//! Under load most of a pull's cost to the database is not the index probe
//! but the statement around it — a round trip, a bind, an execute, a
//! result — so 128 pulls in flight made 128 statements. Here a read waits
//! for nothing: it joins whatever is queued when a batch leaves, and at
//! most [`IN_FLIGHT`] batches are out at once, so the reads that arrive
//! meanwhile form the next. A lone read is one statement, as before.
//!
//! Each statement starts after every read in it was asked for, so a write
//! committed before a read was asked for is always seen. A read has the
//! store's deadline from the moment it is asked for, queueing included; one
//! whose caller has gone is not sent; a failing statement fails only the
//! reads of its tree.

use super::{READ, READ_PLACED, pooled, within_deadline};
use anyhow::{Context, Result, anyhow};
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Batches out at once (each holds a pooled connection while it runs).
const IN_FLIGHT: usize = 4;

/// Reads in one batch, at most.
const MAX_READS: usize = 512;

/// Reads waiting to leave, at most; an asker past it waits to queue.
const QUEUE: usize = 4096;

struct Read {
    tree: String,
    key: Vec<u8>,
    /// A placed read: `key` is a place key, answered with the record at
    /// that place (one statement for both).
    placed: bool,
    answer: oneshot::Sender<Result<Option<Vec<u8>>>>,
}

/// Where this node's point reads queue.
#[derive(Clone)]
pub(super) struct Reads(mpsc::Sender<Read>);

impl Reads {
    /// Starts the gatherer on `io`; it stops when every handle is dropped.
    pub(super) fn start(io: &tokio::runtime::Handle, pool: Pool) -> Self {
        let (tx, mut rx) = mpsc::channel::<Read>(QUEUE);
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        io.spawn(async move {
            while let Some(first) = rx.recv().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < MAX_READS {
                    match rx.try_recv() {
                        Ok(r) => batch.push(r),
                        Err(_) => break,
                    }
                }
                batch.retain(|r| !r.answer.is_closed());
                if batch.is_empty() {
                    continue;
                }
                let pool = pool.clone();
                tokio::spawn(async move {
                    answer(&pool, batch).await;
                    drop(slot);
                });
            }
        });
        Self(tx)
    }

    /// The value at `key` of `tree`, read with whatever else is asked now.
    pub(super) async fn get(&self, tree: String, key: Vec<u8>) -> Result<Option<Vec<u8>>> {
        self.ask(tree, key, false).await
    }

    /// The record at the place stored under the place key `key` of the
    /// placed collection `tree`, read with whatever else is asked now.
    pub(super) async fn get_placed(&self, tree: String, key: Vec<u8>) -> Result<Option<Vec<u8>>> {
        self.ask(tree, key, true).await
    }

    async fn ask(&self, tree: String, key: Vec<u8>, placed: bool) -> Result<Option<Vec<u8>>> {
        let (answer, answered) = oneshot::channel();
        let stopped = || anyhow!("the PostgreSQL I/O runtime has stopped");
        within_deadline(async {
            self.0
                .send(Read {
                    tree,
                    key,
                    placed,
                    answer,
                })
                .await
                .map_err(|_| stopped())?;
            answered.await.map_err(|_| stopped())?
        })
        .await
    }
}

/// Reads a batch, one statement per tree and kind of read (pipelined on
/// one connection), and answers every read in it.
async fn answer(pool: &Pool, batch: Vec<Read>) {
    let mut by_tree: HashMap<(String, bool), Vec<Read>> = HashMap::new();
    for r in batch {
        by_tree
            .entry((r.tree.clone(), r.placed))
            .or_default()
            .push(r);
    }
    let conn = within_deadline(async {
        let c = pooled(pool).await?;
        let read = c.prepare_cached(READ).await?;
        let placed = c.prepare_cached(READ_PLACED).await?;
        anyhow::Ok((c, read, placed))
    })
    .await;
    let (c, read, placed) = match conn {
        Ok(c) => c,
        Err(e) => return fail(by_tree.into_values().flatten(), &e),
    };
    let trees = by_tree.into_iter().map(|((tree, is_placed), reads)| {
        let c = &c;
        let stmt = if is_placed { &placed } else { &read };
        async move {
            let keys: Vec<&[u8]> = reads.iter().map(|r| r.key.as_slice()).collect();
            let rows = within_deadline(async {
                c.query(stmt, &[&tree, &keys])
                    .await
                    .with_context(|| format!("reading {tree}"))
            })
            .await;
            drop(keys);
            match rows {
                Ok(rows) => {
                    let values: HashMap<Vec<u8>, Vec<u8>> =
                        rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
                    for r in reads {
                        let _ = r.answer.send(Ok(values.get(&r.key).cloned()));
                    }
                }
                Err(e) => fail(reads, &e),
            }
        }
    });
    futures_util::future::join_all(trees).await;
}

/// Answers every read in `reads` with the error `e`.
fn fail(reads: impl IntoIterator<Item = Read>, e: &anyhow::Error) {
    let why = format!("{e:#}");
    for r in reads {
        let _ = r.answer.send(Err(anyhow!("{why}")));
    }
}
