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
use super::generation;
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
            Source::Dir(dir) => {
                use std::io::Read;
                let file = dir.join(path);
                let mut bytes = Vec::new();
                match std::fs::File::open(&file) {
                    // No more than a published file can hold, plus one byte
                    // to tell that it holds more.
                    Ok(f) => f
                        .take(super::http::MAX_FILE as u64 + 1)
                        .read_to_end(&mut bytes)
                        .map(|_| Some(bytes))
                        .map_err(|e| format!("reading {}: {e}", file.display())),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(format!("reading {}: {e}", file.display())),
                }
            }
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
    /// Generations accepted as having started since `since` (each lost
    /// the tail of the one before: a restore).
    pub accept_generations: Vec<u32>,
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
    /// The checkpoint that verified, to save as the next run's `--since`.
    pub note: String,
    /// The log's generation now, and the saved checkpoint's: when they
    /// differ the log lost its tail in between (a restore).
    pub generation: u32,
    pub since_generation: Option<u32>,
}

/// The tiles of a tree of one size that roots are computed from, as read:
/// `(level, index)` -> hashes; and how many tiles were read and checked.
struct TileSet {
    tiles: HashMap<(u32, u64), Vec<Hash>>,
    read: usize,
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
        .open_any_generation(&note)
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
    let generation = generation::split(&cp.origin).1;
    let mut since_generation = None;
    let since = match &opts.since {
        Some(old) => {
            let old = verifier.open_any_generation(old).map_err(|e| {
                format!("the --since checkpoint does not verify under the log's key: {e}")
            })?;
            let then = generation::split(&old.origin).1;
            since_generation = Some(then);
            if then > generation {
                return Err(format!(
                    "the published log is of generation {generation}, older than the saved checkpoint's {then}: it was rolled back"
                ));
            }
            if then < generation {
                // Each generation after `then` kept only a prefix of the one
                // before, cut where the files do not say (entry contents are
                // not published): the saved tree cannot be checked against
                // this one, only the gap accepted, every generation of it.
                if let Some(g) =
                    (then + 1..=generation).find(|g| !opts.accept_generations.contains(g))
                {
                    return Err(format!(
                        "NOT VERIFIED: the log went on as generation {g} since the saved checkpoint of generation {then}: it lost entries in between (a restore); see `audit verify` on an export for the gap, then accept each of generations {}..={generation} with --accept-generation",
                        then + 1
                    ));
                }
                None
            } else if old.size > cp.size {
                return Err(format!(
                    "the published checkpoint went backwards: size {} now, {} in the --since checkpoint",
                    cp.size, old.size
                ));
            } else {
                Some(old)
            }
        }
        None => None,
    };
    let roots: Vec<u64> = std::iter::once(cp.size)
        .chain(since.as_ref().map(|c| c.size))
        .collect();
    let set = check_tiles(source, cp.size, &roots).await?;
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
        generation,
        since_generation,
        origin: cp.origin,
        size: cp.size,
        root,
        since,
        cosigned_by,
        tiles: set.read,
        note,
    })
}

fn b64(h: &Hash) -> String {
    data_encoding::BASE64.encode(h)
}

fn root_at(set: &TileSet, size: u64) -> Result<Hash, String> {
    merkle::root(set, size).map_err(|e| format!("computing the root at size {size}: {e:#}"))
}

/// Reads and checks every tile a tree of `size` has, depth first from each
/// level's partial tile: a full tile must hash to the entry of the level
/// above that stands for it. Memory stays a few tiles per level whatever
/// the tree's size; only the tiles the roots at the sizes in `roots` are
/// computed from are kept.
async fn check_tiles(source: &Source, size: u64, roots: &[u64]) -> Result<TileSet, String> {
    let levels = (0u32..).take_while(|&l| size >> (8 * l) > 0).count() as u32;
    let keep: std::collections::HashSet<(u32, u64)> = roots
        .iter()
        .flat_map(|&s| (0..levels).map(move |l| (l, s >> (8 * (l + 1)))))
        .collect();
    let mut set = TileSet {
        tiles: HashMap::new(),
        read: 0,
    };
    // (level, index, the hash the level above holds for it)
    let mut stack: Vec<(u32, u64, Hash)> = Vec::new();
    for level in (0..levels).rev() {
        let hashes = size >> (8 * level);
        let width = (hashes % WIDTH as u64) as usize;
        if width == 0 {
            continue;
        }
        let index = hashes / WIDTH as u64;
        let tile = fetch(source, &mut set, &keep, level, index, width).await?;
        push_children(&mut stack, level, index, &tile);
    }
    while let Some((level, index, expected)) = stack.pop() {
        let tile = fetch(source, &mut set, &keep, level, index, WIDTH).await?;
        if perfect_root(&tile) != expected {
            return Err(format!(
                "tile {} does not hash to entry {} of {}: a tile was altered",
                tile_path(level, index, WIDTH),
                index % WIDTH as u64,
                tile_path(
                    level + 1,
                    index / WIDTH as u64,
                    parent_width(size, level + 1, index)
                )
            ));
        }
        push_children(&mut stack, level, index, &tile);
    }
    Ok(set)
}

/// Queues the full tiles below a tile of a level above 0, each with the
/// hash this tile holds for it.
fn push_children(stack: &mut Vec<(u32, u64, Hash)>, level: u32, index: u64, tile: &[Hash]) {
    if level == 0 {
        return;
    }
    for (k, h) in tile.iter().enumerate().rev() {
        stack.push((level - 1, index * WIDTH as u64 + k as u64, *h));
    }
}

/// The width of the tile at `level` holding the entry for full tile
/// `child` of the level below (for messages).
fn parent_width(size: u64, level: u32, child: u64) -> usize {
    let hashes = size >> (8 * level);
    if child / (WIDTH as u64) < hashes / (WIDTH as u64) {
        WIDTH
    } else {
        (hashes % WIDTH as u64) as usize
    }
}

/// One tile, whole: exactly `width` hashes.
async fn fetch(
    source: &Source,
    set: &mut TileSet,
    keep: &std::collections::HashSet<(u32, u64)>,
    level: u32,
    index: u64,
    width: usize,
) -> Result<Vec<Hash>, String> {
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
    let hashes: Vec<Hash> = bytes
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect();
    set.read += 1;
    if keep.contains(&(level, index)) {
        set.tiles.insert((level, index), hashes.clone());
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::tiles::TileWriter;

    /// A monitor checks every tile but keeps only the few the roots are
    /// computed from: at a billion entries, keeping them all would take
    /// 32 GB.
    #[tokio::test]
    async fn every_tile_is_read_and_only_the_right_edge_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = TileWriter::open(tmp.path()).unwrap();
        let leaves: Vec<Hash> = (0..70_000u64)
            .map(|i| crate::audit::leaf_hash(&i.to_le_bytes()))
            .collect();
        w.append(&leaves).unwrap();
        w.sync().unwrap();
        crate::audit::publish::Publisher::open(
            tmp.path(),
            tmp.path(),
            w.reader(),
            std::time::Duration::ZERO,
        )
        .unwrap()
        .publish_tiles(70_000)
        .unwrap();
        let source = Source::Dir(tmp.path().to_path_buf());
        let set = check_tiles(&source, 70_000, &[70_000, 1_000])
            .await
            .unwrap();
        // Level 0: 273 full + 1 partial; level 1: 1 full + 1 partial;
        // level 2: 1 partial.
        assert_eq!(set.read, 277);
        assert!(set.tiles.len() <= 6, "kept {} tiles", set.tiles.len());
        let mut full = crate::audit::merkle::MemoryTree::new();
        for l in &leaves {
            full.push(*l);
        }
        for size in [70_000, 1_000] {
            assert_eq!(
                root_at(&set, size).unwrap(),
                crate::audit::merkle::root(&full, size).unwrap()
            );
        }
    }
}
