//! `govshare audit verify-tiles`: checks a published tree from its files
//! alone — a directory or an HTTP(S) prefix, nothing from the gateway's
//! API — as an outside monitor would from cron:
//!
//! - the `checkpoint` is signed by the log's key (and, with `--witness`,
//!   cosigned by enough of the named witnesses);
//! - every tile the checkpoint's size needs is there, whole, and each hash
//!   of an upper level is the root of the full tile below it;
//! - the root those tiles give at the checkpoint's size is the signed root;
//! - with `--since`, a checkpoint saved earlier: same log, not larger, and
//!   the same tiles give its root at its size — the old tree is a prefix of
//!   the new one, proven from the tiles alone.

use super::checkpoint::{Checkpoint, CosignatureVerifier, LogVerifier, cosigners};
use super::merkle::{self, Hash, Nodes};
use super::tiles::{WIDTH, perfect_root, tile_path};
use anyhow::Result;
use std::collections::HashMap;
use std::path::PathBuf;

/// Where the published files are read from.
pub enum Source {
    Dir(PathBuf),
    Http(String),
}

impl Source {
    /// A URL (`http://`, `https://`) or a directory.
    pub fn parse(s: &str) -> Self {
        if s.starts_with("http://") || s.starts_with("https://") {
            Source::Http(s.trim_end_matches('/').to_string())
        } else {
            Source::Dir(PathBuf::from(s))
        }
    }

    async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, String> {
        match self {
            Source::Dir(dir) => match std::fs::read(dir.join(path)) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("reading {}: {e}", dir.join(path).display())),
            },
            Source::Http(prefix) => super::http::get(&format!("{prefix}/{path}"))
                .await
                .map_err(|e| format!("{e:#}")),
        }
    }
}

/// What to check beyond the checkpoint's own signature.
#[derive(Default)]
pub struct Options {
    /// A checkpoint saved earlier (a signed note) the tree must extend.
    pub since: Option<String>,
    pub witnesses: Vec<CosignatureVerifier>,
    pub min_witnesses: usize,
}

/// A published tree that verified.
#[derive(Debug)]
pub struct Report {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// The saved checkpoint it extends: its size and root.
    pub since: Option<(u64, Hash)>,
    pub cosigned_by: Vec<String>,
    pub tiles: usize,
}

/// The tiles of a tree of one size, as read: `(level, index)` -> hashes.
struct TileSet {
    size: u64,
    tiles: HashMap<(u32, u64), Vec<Hash>>,
}

impl Nodes for TileSet {
    fn perfect(&self, level: u32, index: u64) -> Result<Hash> {
        let (tile_level, within) = (level / 8, level % 8);
        let span = index << within;
        let tile = self
            .tiles
            .get(&(tile_level, span / WIDTH as u64))
            .ok_or_else(|| anyhow::anyhow!("no tile for subtree {level}/{index}"))?;
        let start = (span % WIDTH as u64) as usize;
        let hashes = tile
            .get(start..start + (1 << within))
            .ok_or_else(|| anyhow::anyhow!("tile too short for subtree {level}/{index}"))?;
        Ok(perfect_root(hashes))
    }
}

/// Verifies the tree published at `source` under the log key `key`.
/// Errors are one line: what is wrong, and where.
pub async fn verify(source: &Source, key: &str, opts: &Options) -> Result<Report, String> {
    let verifier = LogVerifier::parse(key).map_err(|e| format!("--public-key: {e:#}"))?;
    let note = source
        .get("checkpoint")
        .await?
        .ok_or("no `checkpoint` is published there")?;
    let note = String::from_utf8(note).map_err(|_| "the checkpoint is not text")?;
    let cp = verifier
        .open(&note)
        .map_err(|e| format!("the checkpoint does not verify under the log's key: {e}"))?;
    let cosigned_by: Vec<String> = cosigners(&note, &opts.witnesses)
        .into_iter()
        .map(str::to_string)
        .collect();
    if cosigned_by.len() < opts.min_witnesses {
        return Err(format!(
            "the checkpoint carries valid cosignatures from {} of the named witnesses ({}), fewer than --min-witnesses {}",
            cosigned_by.len(),
            cosigned_by.join(", "),
            opts.min_witnesses
        ));
    }
    let since = match &opts.since {
        Some(old) => {
            let old = verifier.open(old).map_err(|e| {
                format!("the --since checkpoint does not verify under the log's key: {e}")
            })?;
            if old.origin != cp.origin {
                return Err(format!(
                    "the --since checkpoint is of log '{}', the published one of '{}'",
                    old.origin, cp.origin
                ));
            }
            if old.size > cp.size {
                return Err(format!(
                    "the published checkpoint went backwards: size {} now, {} in the --since checkpoint",
                    cp.size, old.size
                ));
            }
            Some(old)
        }
        None => None,
    };
    let set = read_tiles(source, cp.size).await?;
    check_levels(&set)?;
    let root = root_at(&set, cp.size)?;
    if root != cp.root {
        return Err(format!(
            "the tiles give root {} at size {}, the checkpoint signs {}",
            b64(&root),
            cp.size,
            b64(&cp.root)
        ));
    }
    let since = match since {
        Some(Checkpoint { size, root, .. }) => {
            let at = root_at(&set, size)?;
            if at != root {
                return Err(format!(
                    "the published tree does not extend the --since checkpoint: at size {size} its tiles give root {}, the saved checkpoint signs {}",
                    b64(&at),
                    b64(&root)
                ));
            }
            Some((size, root))
        }
        None => None,
    };
    Ok(Report {
        origin: cp.origin,
        size: cp.size,
        root,
        since,
        cosigned_by,
        tiles: set.tiles.len(),
    })
}

fn b64(h: &Hash) -> String {
    data_encoding::BASE64.encode(h)
}

fn root_at(set: &TileSet, size: u64) -> Result<Hash, String> {
    merkle::root(set, size).map_err(|e| format!("computing the root at size {size}: {e:#}"))
}

/// Every tile a tree of `size` has: each level's full tiles and its
/// partial one.
async fn read_tiles(source: &Source, size: u64) -> Result<TileSet, String> {
    let mut tiles = HashMap::new();
    let mut level = 0u32;
    while size >> (8 * level) > 0 {
        let hashes = size >> (8 * level);
        let full = hashes / WIDTH as u64;
        let partial = (hashes % WIDTH as u64) as usize;
        let last = if partial > 0 { full + 1 } else { full };
        for index in 0..last {
            let width = if index < full { WIDTH } else { partial };
            let path = tile_path(level, index, width);
            let bytes = source
                .get(&path)
                .await?
                .ok_or_else(|| format!("tile {path} is missing"))?;
            if bytes.len() != width * 32 {
                return Err(format!(
                    "tile {path} holds {} bytes, not {} hashes ({} bytes): truncated or padded",
                    bytes.len(),
                    width,
                    width * 32
                ));
            }
            let hashes = bytes
                .chunks_exact(32)
                .map(|c| c.try_into().expect("32 bytes"))
                .collect();
            tiles.insert((level, index), hashes);
        }
        level += 1;
    }
    Ok(TileSet { size, tiles })
}

/// Each hash of a level above 0 is the root of the full tile it stands for.
fn check_levels(set: &TileSet) -> Result<(), String> {
    for (&(level, index), hashes) in &set.tiles {
        if level == 0 {
            continue;
        }
        for (k, h) in hashes.iter().enumerate() {
            let below = index * WIDTH as u64 + k as u64;
            let tile = set.tiles.get(&(level - 1, below)).ok_or_else(|| {
                format!(
                    "tile {} is missing below {}",
                    tile_path(level - 1, below, WIDTH),
                    tile_path(level, index, hashes.len())
                )
            })?;
            if tile.len() != WIDTH || perfect_root(tile) != *h {
                return Err(format!(
                    "tile {} does not hash to entry {k} of {}: a tile was altered",
                    tile_path(level - 1, below, WIDTH),
                    tile_path(level, index, hashes.len())
                ));
            }
        }
    }
    debug_assert!(set.size > 0 || set.tiles.is_empty());
    Ok(())
}
