//! Moving a store to another backend (`govshare store copy`): every tree,
//! key by key, into an empty target, then both sides read back and compared.
//! A copy is refused into a target that holds anything, so it can never
//! merge two gateways' control planes or overwrite one.

use super::Backend;
use anyhow::{Result, bail};
use sha2::{Digest, Sha256};

/// Rows moved per batch (one transaction on PostgreSQL).
const BATCH: usize = 5_000;

/// What was copied: each tree with its rows and a digest of its contents,
/// the same on both sides.
#[derive(Debug)]
pub struct Copied {
    pub trees: Vec<(String, u64)>,
    pub digest: String,
}

impl Copied {
    pub fn rows(&self) -> u64 {
        self.trees.iter().map(|t| t.1).sum()
    }
}

/// Copies every tree of `from` into `to`, which must be empty.
pub fn copy(from: &dyn Backend, to: &dyn Backend) -> Result<Copied> {
    let already = to.trees()?;
    if !already.is_empty() {
        bail!(
            "the target store is not empty (it holds {}): a copy goes only into an empty store, so two gateways' data are never merged",
            already.join(", ")
        );
    }
    if let Err(e) = fill(from, to) {
        // The target was empty: take away what this copy wrote, so it can
        // be run again.
        return Err(match clear(to) {
            Ok(()) => e.context("the copy failed and the target is empty again"),
            Err(c) => e.context(format!(
                "the copy failed, and removing what it wrote failed too ({c:#}): empty the target by hand"
            )),
        });
    }
    let (source, target) = (summary(from)?, summary(to)?);
    if source.trees != target.trees || source.digest != target.digest {
        bail!(
            "the copy does not read back as the source ({} rows in {}, {} in the target): do not use the target",
            source.rows(),
            source.digest,
            target.rows()
        );
    }
    Ok(source)
}

/// Writes every tree of `from` into `to`.
fn fill(from: &dyn Backend, to: &dyn Backend) -> Result<()> {
    for tree in from.trees()? {
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = from.scan(&tree, b"", after.as_deref(), BATCH)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            let full = page.len() == BATCH;
            to.apply_batch(&tree, page.into_iter().map(|(k, v)| (k, Some(v))).collect())?;
            if !full {
                break;
            }
        }
    }
    to.sync()
}

/// Removes every row of every tree: what a failed copy or restore into a
/// store that was empty leaves behind.
pub fn clear(store: &dyn Backend) -> Result<()> {
    for tree in store.trees()? {
        loop {
            let page = store.scan(&tree, b"", None, BATCH)?;
            if page.is_empty() {
                break;
            }
            store.apply_batch(&tree, page.into_iter().map(|(k, _)| (k, None)).collect())?;
        }
    }
    store.sync()
}

/// Every tree's row count and one SHA-256 over every (tree, key, value).
pub fn summary(store: &dyn Backend) -> Result<Copied> {
    let mut hash = Sha256::new();
    let mut trees = Vec::new();
    for tree in store.trees()? {
        let (mut rows, mut after) = (0u64, None::<Vec<u8>>);
        loop {
            let page = store.scan(&tree, b"", after.as_deref(), BATCH)?;
            for (k, v) in &page {
                for part in [tree.as_bytes(), k, v] {
                    hash.update((part.len() as u64).to_be_bytes());
                    hash.update(part);
                }
            }
            rows += page.len() as u64;
            let full = page.len() == BATCH;
            after = page.into_iter().last().map(|(k, _)| k);
            if !full {
                break;
            }
        }
        trees.push((tree, rows));
    }
    Ok(Copied {
        trees,
        digest: data_encoding::HEXLOWER.encode(&hash.finalize()),
    })
}
