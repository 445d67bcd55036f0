//! The log's Merkle hashes in the C2SP `tlog-tiles` layout: tiles of 256
//! hashes, `tile/<L>/<N>` with `N` in x-prefixed groups of three digits. A
//! level-0 tile holds leaf hashes; each hash of a level-L tile is the root of
//! a full tile at level L-1. Full tiles are written once and never change,
//! so appending a leaf is one hash pushed (and, every 256 leaves, one tile
//! written), and any perfect subtree a proof needs is read from one tile.
//!
//! The rightmost, partial tile of each level lives in memory; after a
//! restart it is rebuilt from the full tiles below it and the entries since
//! the last full level-0 tile. Tiles are derived data: the segments remain
//! the source of truth, and `tiles.mark` says how many leaves are durably
//! tiled. Hash tiles reveal nothing about entries; entry contents are never
//! written here.

use super::merkle::{self, Hash, Nodes};
use anyhow::{Context, Result, bail};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

pub const WIDTH: usize = 256;
const HEIGHT: u32 = 8;
const MARK: &str = "tiles.mark";

/// The C2SP path of a tile: `tile/<level>/<index>` for a full tile,
/// `…/<index>.p/<width>` for a partial one.
pub fn tile_path(level: u32, index: u64, width: usize) -> String {
    let mut n = index;
    let mut s = format!("{:03}", n % 1000);
    while n >= 1000 {
        n /= 1000;
        s = format!("x{:03}/{s}", n % 1000);
    }
    if width == WIDTH {
        format!("tile/{level}/{s}")
    } else {
        format!("tile/{level}/{s}.p/{width}")
    }
}

/// The root of a run of hashes whose length is a power of two.
pub(super) fn perfect_root(hashes: &[Hash]) -> Hash {
    debug_assert!(hashes.len().is_power_of_two());
    let mut level: Vec<Hash> = hashes.to_vec();
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| merkle::node_hash(&p[0], &p[1]))
            .collect();
    }
    level[0]
}

struct State {
    /// Leaves tiled so far (published to readers).
    size: u64,
    /// The partial tile of each level.
    partial: Vec<Vec<Hash>>,
}

/// Full tiles read from disk, by (level, index).
type TileCache = Mutex<HashMap<(u32, u64), Arc<Vec<Hash>>>>;

/// Read access for proofs and roots; cheap to clone.
#[derive(Clone)]
pub struct Tiles {
    dir: Arc<PathBuf>,
    state: Arc<RwLock<State>>,
    cache: Arc<TileCache>,
}

/// Full tiles kept in memory for proofs; beyond this the cache starts over.
const CACHED_TILES: usize = 1024;

fn read_tile(path: &Path) -> Result<Vec<Hash>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() != WIDTH * 32 {
        bail!(
            "{} holds {} bytes, not a full tile of {}",
            path.display(),
            bytes.len(),
            WIDTH * 32
        );
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| c.try_into().expect("32 bytes"))
        .collect())
}

impl Tiles {
    pub fn size(&self) -> u64 {
        self.state.read().expect("tiles lock").size
    }

    fn full_tile(&self, level: u32, index: u64) -> Result<Arc<Vec<Hash>>> {
        if let Some(t) = self.cache.lock().expect("tile cache").get(&(level, index)) {
            return Ok(t.clone());
        }
        let t = Arc::new(read_tile(&self.dir.join(tile_path(level, index, WIDTH)))?);
        let mut cache = self.cache.lock().expect("tile cache");
        if cache.len() >= CACHED_TILES {
            cache.clear();
        }
        cache.insert((level, index), t.clone());
        Ok(t)
    }

    /// Tile `index` at `level` as a tree of its current size or smaller
    /// shows it: its first `width` hashes (all 256 for a full tile).
    pub fn tile(&self, level: u32, index: u64, width: usize) -> Result<Vec<Hash>> {
        self.tile_hashes(level, index, 0, width)
    }

    /// The hashes `[start, start + width)` of tile `index` at `level`.
    fn tile_hashes(&self, level: u32, index: u64, start: usize, width: usize) -> Result<Vec<Hash>> {
        let (full_tiles, partial) = {
            let s = self.state.read().expect("tiles lock");
            let full = s.size >> (HEIGHT * (level + 1));
            let partial = if index >= full {
                s.partial.get(level as usize).cloned().unwrap_or_default()
            } else {
                Vec::new()
            };
            (full, partial)
        };
        let hashes = if index < full_tiles {
            self.full_tile(level, index)?.to_vec()
        } else if index == full_tiles {
            partial
        } else {
            Vec::new()
        };
        hashes
            .get(start..start + width)
            .map(<[Hash]>::to_vec)
            .with_context(|| {
                format!(
                    "tile {level}/{index} has no hashes {start}..{}",
                    start + width
                )
            })
    }
}

impl Nodes for Tiles {
    /// The perfect subtree of `2^level` leaves starting at `index * 2^level`:
    /// a run of hashes inside one tile.
    fn perfect(&self, level: u32, index: u64) -> Result<Hash> {
        let (tile_level, within) = (level / HEIGHT, level % HEIGHT);
        let span = index << within;
        let hashes = self.tile_hashes(
            tile_level,
            span >> HEIGHT,
            (span & (WIDTH as u64 - 1)) as usize,
            1 << within,
        )?;
        Ok(perfect_root(&hashes))
    }
}

/// The single writer of the tiles (the indexer thread).
pub struct TileWriter {
    tiles: Tiles,
    /// Tile files written since the last [`TileWriter::sync`].
    unsynced: Vec<PathBuf>,
}

impl TileWriter {
    /// Opens the tiles in `dir`, restored to the last full level-0 tile at
    /// or below the durable mark: the caller feeds the leaves from
    /// [`TileWriter::size`] on again.
    /// Reads only: nothing is created or changed until the first append.
    pub fn open(dir: &Path) -> Result<Self> {
        let mark = read_mark(dir)?;
        let size = mark - mark % WIDTH as u64;
        let tiles = Tiles {
            dir: Arc::new(dir.to_path_buf()),
            state: Arc::new(RwLock::new(State {
                size: 0,
                partial: vec![Vec::new()],
            })),
            cache: Arc::default(),
        };
        // Rebuild each level's partial tile from the full tiles below it.
        let mut partial = vec![Vec::new()];
        let mut level = 1u32;
        while size >> (HEIGHT * level) > 0 {
            let below_full = size >> (HEIGHT * level);
            let first = below_full - below_full % WIDTH as u64;
            let mut hashes = Vec::new();
            for t in first..below_full {
                let path = dir.join(tile_path(level - 1, t, WIDTH));
                hashes.push(perfect_root(&read_tile(&path)?));
            }
            partial.push(hashes);
            level += 1;
        }
        *tiles.state.write().expect("tiles lock") = State { size, partial };
        Ok(Self {
            tiles,
            unsynced: Vec::new(),
        })
    }

    pub fn reader(&self) -> Tiles {
        self.tiles.clone()
    }

    pub fn size(&self) -> u64 {
        self.tiles.size()
    }

    /// Appends a batch of leaf hashes: full tiles are written to disk first,
    /// then the new size is published to readers.
    pub fn append(&mut self, leaves: &[Hash]) -> Result<()> {
        let (mut size, mut partial) = {
            let s = self.tiles.state.read().expect("tiles lock");
            (s.size, s.partial.clone())
        };
        for leaf in leaves {
            partial[0].push(*leaf);
            size += 1;
            let mut level = 0usize;
            while partial[level].len() == WIDTH {
                let full = std::mem::take(&mut partial[level]);
                let index = (size >> (HEIGHT * (level as u32 + 1))) - 1;
                self.write_tile(level as u32, index, &full)?;
                if partial.len() == level + 1 {
                    partial.push(Vec::new());
                }
                partial[level + 1].push(perfect_root(&full));
                level += 1;
            }
        }
        *self.tiles.state.write().expect("tiles lock") = State { size, partial };
        Ok(())
    }

    /// Writes a full tile under a temporary name and renames it over its
    /// own: the tile directory may be served as it is, and a reader must
    /// see a full tile whole or not at all. [`Self::sync`] makes it durable.
    fn write_tile(&mut self, level: u32, index: u64, hashes: &[Hash]) -> Result<()> {
        let path = self.tiles.dir.join(tile_path(level, index, WIDTH));
        let parent = path.parent().context("a tile is in a directory")?;
        std::fs::create_dir_all(parent)?;
        let tmp = parent.join(format!(
            ".{}.tmp",
            path.file_name()
                .context("a tile has a name")?
                .to_string_lossy()
        ));
        let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        let bytes: Vec<u8> = hashes.iter().flatten().copied().collect();
        f.write_all(&bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        self.unsynced.push(path);
        Ok(())
    }

    /// Makes the tiles written so far durable and records how many leaves
    /// they cover.
    pub fn sync(&mut self) -> Result<()> {
        let mut dirs = BTreeSet::new();
        for path in self.unsynced.drain(..) {
            File::open(&path)?.sync_data()?;
            let mut d = path.parent();
            while let Some(p) = d {
                if !dirs.insert(p.to_path_buf()) || p == self.tiles.dir.as_path() {
                    break;
                }
                d = p.parent();
            }
        }
        for d in dirs {
            File::open(&d)?.sync_all()?;
        }
        std::fs::create_dir_all(self.tiles.dir.as_path())?;
        write_mark(&self.tiles.dir, self.size())
    }
}

fn read_mark(dir: &Path) -> Result<u64> {
    match std::fs::read(dir.join(MARK)) {
        Ok(b) => Ok(u64::from_le_bytes(
            b.as_slice()
                .try_into()
                .context("tiles.mark is not 8 bytes")?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).context("reading tiles.mark"),
    }
}

/// How many leaves a tile directory durably covers, without opening it.
pub fn durable_size(dir: &Path) -> Result<u64> {
    read_mark(dir)
}

/// Atomically replaces a small file: write a temporary, sync, rename, sync
/// the directory.
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

fn write_mark(dir: &Path, size: u64) -> Result<()> {
    replace_file(dir, MARK, &size.to_le_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::leaf_hash;
    use crate::audit::merkle::MemoryTree;

    #[test]
    fn paths_follow_c2sp() {
        assert_eq!(tile_path(0, 1_234_067, WIDTH), "tile/0/x001/x234/067");
        assert_eq!(tile_path(1, 1, 17), "tile/1/001.p/17");
        assert_eq!(tile_path(2, 0, WIDTH), "tile/2/000");
    }

    #[test]
    fn roots_and_proofs_over_tiles_match_a_memory_tree_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let leaves: Vec<Hash> = (0..70_000u32)
            .map(|i| leaf_hash(&i.to_le_bytes()))
            .collect();
        let mut mem = MemoryTree::new();
        leaves.iter().for_each(|l| mem.push(*l));
        let mut w = TileWriter::open(dir.path()).unwrap();
        w.append(&leaves[..66_000]).unwrap();
        w.sync().unwrap();
        drop(w);
        // Restart: restored to a tile boundary, fed the rest again.
        let mut w = TileWriter::open(dir.path()).unwrap();
        assert_eq!(w.size(), 66_000 - 66_000 % 256);
        w.append(&leaves[w.size() as usize..]).unwrap();
        let t = w.reader();
        for n in [1u64, 255, 256, 257, 65_536, 65_537, 69_999, 70_000] {
            assert_eq!(
                merkle::root(&t, n).unwrap(),
                merkle::root(&mem, n).unwrap(),
                "{n}"
            );
        }
        for (i, n) in [
            (0u64, 70_000u64),
            (65_535, 65_537),
            (69_999, 70_000),
            (12_345, 40_000),
        ] {
            assert_eq!(
                merkle::inclusion_proof(&t, i, n).unwrap(),
                merkle::inclusion_proof(&mem, i, n).unwrap()
            );
        }
        assert_eq!(
            merkle::consistency_proof(&t, 300, 70_000).unwrap(),
            merkle::consistency_proof(&mem, 300, 70_000).unwrap()
        );
    }
}
