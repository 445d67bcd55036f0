//! The published tree: the log's hash tiles and its newest checkpoint as
//! plain files in the C2SP `tlog-tiles` layout, so anyone with an HTTP
//! client — an auditor's office, a court, another government, a witness —
//! can check that the log only grows without asking the gateway anything
//! (`govshare audit verify-tiles`).
//!
//! For every checkpoint the checkpoint writer publishes (after the
//! witnesses answered, so the note carries their cosignatures):
//!
//! 1. the partial tile of every level the checkpoint's size needs
//!    (`tile/<L>/<N>.p/<W>`) — and, when the publish directory is not the
//!    index's own tile directory, the full tiles it lacks (in the index's
//!    own directory the full tiles are already there; they are synced);
//! 2. how many full tiles per level are published (`published-full`, so a
//!    restart does not copy them again);
//! 3. then the signed note as `checkpoint`.
//!
//! Each file is written to a temporary name, synced and renamed (and its
//! directory synced), tiles before the checkpoint: a reader never finds a
//! checkpoint whose tiles are missing, and a crash between the two leaves
//! the previous checkpoint with all of its tiles. Full tiles never change.
//! A partial tile is removed only once its full tile exists and a grace
//! period has passed, so readers of the previous checkpoint still find it.
//!
//! Entry contents are never published: they are personal data. The tree
//! reveals how many entries there are and, by when files appear, roughly
//! when they were added — nothing of what they say.

use super::merkle::Hash;
use super::tiles::{Tiles, WIDTH, tile_path};
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file naming the partial tiles this publisher wrote and not yet
/// removed, so a restart can still remove them.
const PARTIALS: &str = "published-partials";

/// The file holding how many full tiles of each level are published and
/// durable, one count per line from level 0.
const FULL: &str = "published-full";

/// Writes the published tree of one log.
pub struct Publisher {
    dir: PathBuf,
    tiles: Tiles,
    /// Whether `dir` is the tile directory itself (full tiles are there).
    in_place: bool,
    grace: Duration,
    /// Full tiles already in `dir`, per level (when not in place).
    full_published: Vec<u64>,
    /// Partial tiles written, with when their full tile was first seen.
    partials: BTreeMap<String, Option<Instant>>,
}

/// The hashes a tree of `size` leaves keeps at `level`.
fn level_width(size: u64, level: u32) -> u64 {
    size >> (8 * level)
}

impl Publisher {
    /// Publishes into `dir` from `tiles` (whose own directory is
    /// `tiles_dir`). Partial tiles a previous run wrote are picked up again.
    pub fn open(dir: &Path, tiles_dir: &Path, tiles: Tiles, grace: Duration) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let in_place = same_dir(dir, tiles_dir);
        let partials = match std::fs::read_to_string(dir.join(PARTIALS)) {
            Ok(text) => text
                .lines()
                .filter(|l| l.starts_with("tile/") && l.contains(".p/"))
                .map(|l| (l.to_string(), None))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).context("reading the list of published partial tiles"),
        };
        let full_published = match std::fs::read_to_string(dir.join(FULL)) {
            Ok(text) => text
                .lines()
                .map(str::parse)
                .collect::<Result<Vec<u64>, _>>()
                .with_context(|| format!("{} is damaged", dir.join(FULL).display()))?,
            // In place, what the index synced needs no syncing again.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && in_place => {
                let durable = super::tiles::durable_size(tiles_dir)?;
                (0..)
                    .map(|level| level_width(durable, level) / WIDTH as u64)
                    .take_while(|&full| full > 0)
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).context("reading the count of published full tiles"),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            tiles,
            in_place,
            grace,
            full_published,
            partials,
        })
    }

    /// Publishes a checkpoint of `size` entries: its tiles, then `note`.
    pub fn publish(&mut self, size: u64, note: &str) -> Result<()> {
        self.publish_tiles(size)?;
        self.publish_checkpoint(note)?;
        self.remove_stale_partials(size)
    }

    /// Step 1: every tile a reader of a checkpoint of `size` needs.
    pub fn publish_tiles(&mut self, size: u64) -> Result<()> {
        let mut level = 0u32;
        let mut more_full = false;
        while level_width(size, level) > 0 {
            let hashes = level_width(size, level);
            let full = hashes / WIDTH as u64;
            let from = self
                .full_published
                .get(level as usize)
                .copied()
                .unwrap_or(0);
            for index in from..full {
                let path = tile_path(level, index, WIDTH);
                if self.in_place {
                    // The index wrote it; it must be durable before a
                    // checkpoint points at it.
                    sync_file(&self.dir.join(&path))?;
                } else {
                    let tile = self.tiles.tile(level, index, WIDTH)?;
                    self.write_tile(&path, &tile)?;
                }
            }
            if full > from {
                if self.full_published.len() <= level as usize {
                    self.full_published.resize(level as usize + 1, 0);
                }
                self.full_published[level as usize] = full;
                more_full = true;
            }
            let width = (hashes % WIDTH as u64) as usize;
            if width > 0 {
                let path = tile_path(level, full, width);
                if !self.partials.contains_key(&path) {
                    let tile = self.tiles.tile(level, full, width)?;
                    self.write_tile(&path, &tile)?;
                    self.partials.insert(path, None);
                    self.save_partials()?;
                }
            }
            level += 1;
        }
        if more_full {
            let counts: String = self
                .full_published
                .iter()
                .map(|n| format!("{n}\n"))
                .collect();
            write_atomically(&self.dir.join(FULL), counts.as_bytes())?;
        }
        Ok(())
    }

    /// Step 2: the signed note, once its tiles are in place.
    pub fn publish_checkpoint(&self, note: &str) -> Result<()> {
        write_atomically(&self.dir.join("checkpoint"), note.as_bytes())
    }

    /// Removes partial tiles whose full tile exists (at `size`) once the
    /// grace period since that was first seen has passed.
    fn remove_stale_partials(&mut self, size: u64) -> Result<()> {
        let now = Instant::now();
        let mut removed = false;
        for (path, since) in &mut self.partials {
            let (level, index) = partial_position(path)?;
            if index >= level_width(size, level) / WIDTH as u64 {
                continue;
            }
            let since = since.get_or_insert(now);
            if now.duration_since(*since) >= self.grace {
                let file = self.dir.join(path);
                match std::fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("removing {}", file.display()));
                    }
                }
                if let Some(dir) = file.parent() {
                    // The `<N>.p` directory goes with its last partial.
                    let _ = std::fs::remove_dir(dir);
                }
                removed = true;
            }
        }
        if removed {
            let grace = self.grace;
            self.partials
                .retain(|_, since| since.is_none_or(|s| now.duration_since(s) < grace));
            self.save_partials()?;
        }
        Ok(())
    }

    fn write_tile(&self, path: &str, hashes: &[Hash]) -> Result<()> {
        let bytes: Vec<u8> = hashes.iter().flatten().copied().collect();
        write_atomically(&self.dir.join(path), &bytes)
    }

    fn save_partials(&self) -> Result<()> {
        let list: String = self.partials.keys().map(|p| format!("{p}\n")).collect();
        write_atomically(&self.dir.join(PARTIALS), list.as_bytes())
    }
}

/// `(level, tile index)` of a partial tile's path `tile/L/…/N.p/W`.
fn partial_position(path: &str) -> Result<(u32, u64)> {
    let bad = || anyhow::anyhow!("'{path}' is not a partial tile path");
    let rest = path.strip_prefix("tile/").ok_or_else(bad)?;
    let (level, rest) = rest.split_once('/').ok_or_else(bad)?;
    let (index, _) = rest.split_once(".p/").ok_or_else(bad)?;
    let mut n = 0u64;
    for part in index.split('/') {
        let digits = part.trim_start_matches('x');
        n = n * 1000 + digits.parse::<u64>().map_err(|_| bad())?;
    }
    Ok((level.parse().map_err(|_| bad())?, n))
}

/// Makes a file the index wrote durable, with its directory (where its
/// rename was recorded).
fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_data())
        .with_context(|| format!("syncing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Writes `path` so that a reader sees the old file or the whole new one
/// (a temporary file, synced, renamed over it, the directory synced),
/// creating its directory first.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file in a directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().context("a file name")?.to_string_lossy();
    super::tiles::replace_file(dir, &name, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_paths_name_their_tile() {
        assert_eq!(partial_position("tile/0/004.p/29").unwrap(), (0, 4));
        assert_eq!(
            partial_position("tile/1/x001/x234/067.p/5").unwrap(),
            (1, 1_234_067)
        );
        assert!(partial_position("tile/0/004").is_err());
    }
}
