//! Posting lists: which entries mention a subject (citizen ID, credit code)
//! or belong to a department, newest first — what the data tracker and
//! department queries read instead of scanning the log.
//!
//! A posting is `(key hash, entry index)`, 16 bytes. New postings collect in
//! memory in index order; past a threshold they are sorted and written as an
//! immutable *run* file covering an index range, and runs of similar size
//! are merged in the background of the indexer so their number stays
//! logarithmic in the log's size. A posting therefore costs a push and, once,
//! its share of a sort and a sequential write — not a store transaction.
//!
//! Keys are hashed (SHA-256, first 8 bytes): a match is a candidate, and the
//! reader confirms it against the entry itself.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

const MAGIC: &[u8; 8] = b"GSPOST01";
const HEADER: u64 = 32;
const PAIR: u64 = 16;

/// What a posting list is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posting {
    Subject,
    Department,
}

pub fn key_hash(kind: Posting, name: &str) -> u64 {
    let mut h = Sha256::new();
    h.update([kind as u8]);
    h.update(name.as_bytes());
    u64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// An immutable run: postings of entries `[from, to)`, sorted by (key, index).
struct Run {
    path: PathBuf,
    file: File,
    from: u64,
    to: u64,
    count: u64,
}

fn run_name(from: u64, to: u64) -> String {
    format!("run-{from:020}-{to:020}.post")
}

impl Run {
    fn open(path: PathBuf) -> Result<Self> {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut h = [0u8; HEADER as usize];
        file.read_exact_at(&mut h, 0)
            .with_context(|| format!("reading {}", path.display()))?;
        if &h[..8] != MAGIC {
            bail!("{} is not a posting run", path.display());
        }
        let word = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().expect("8 bytes"));
        let (from, to, count) = (word(8), word(16), word(24));
        if file.metadata()?.len() != HEADER + count * PAIR {
            bail!("{} is truncated", path.display());
        }
        Ok(Self {
            path,
            file,
            from,
            to,
            count,
        })
    }

    fn pair(&self, i: u64) -> Result<(u64, u64)> {
        let mut b = [0u8; PAIR as usize];
        self.file.read_exact_at(&mut b, HEADER + i * PAIR)?;
        Ok((
            u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
            u64::from_be_bytes(b[8..].try_into().expect("8 bytes")),
        ))
    }

    /// The position of the first pair not below `(key, index)`.
    fn lower_bound(&self, key: u64, index: u64) -> Result<u64> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.pair(mid)? < (key, index) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Indexes under `key` strictly below `before`, newest first.
    fn newest_first(&self, key: u64, before: u64, limit: usize, out: &mut Vec<u64>) -> Result<()> {
        let mut pos = self.lower_bound(key, before)?;
        while pos > 0 && out.len() < limit {
            pos -= 1;
            let (k, idx) = self.pair(pos)?;
            if k != key {
                break;
            }
            out.push(idx);
        }
        Ok(())
    }

    /// The run's pairs in order, read sequentially.
    fn reader(&self) -> Result<impl Iterator<Item = Result<(u64, u64)>>> {
        let mut f = self.file.try_clone()?;
        f.seek(SeekFrom::Start(HEADER))?;
        let mut r = BufReader::with_capacity(1 << 16, f);
        Ok((0..self.count).map(move |_| {
            let mut b = [0u8; PAIR as usize];
            r.read_exact(&mut b)?;
            Ok((
                u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
                u64::from_be_bytes(b[8..].try_into().expect("8 bytes")),
            ))
        }))
    }
}

/// Writes sorted pairs as a run (temporary name, synced, renamed).
fn write_run(
    dir: &Path,
    from: u64,
    to: u64,
    count: u64,
    pairs: impl Iterator<Item = Result<(u64, u64)>>,
) -> Result<Run> {
    let path = dir.join(run_name(from, to));
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::with_capacity(1 << 16, File::create(&tmp)?);
    w.write_all(MAGIC)?;
    for v in [from, to, count] {
        w.write_all(&v.to_le_bytes())?;
    }
    for pair in pairs {
        let (k, i) = pair?;
        w.write_all(&k.to_be_bytes())?;
        w.write_all(&i.to_be_bytes())?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_data()?;
    std::fs::rename(&tmp, &path)?;
    File::open(dir)?.sync_all()?;
    Run::open(path)
}

/// Merges sorted runs into one sorted stream, holding one pair per run.
fn merged(runs: &[Arc<Run>]) -> Result<impl Iterator<Item = Result<(u64, u64)>>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut readers = runs
        .iter()
        .map(|r| r.reader())
        .collect::<Result<Vec<_>>>()?;
    let mut heap = BinaryHeap::new();
    for (i, r) in readers.iter_mut().enumerate() {
        if let Some(p) = r.next() {
            heap.push(Reverse((p?, i)));
        }
    }
    Ok(std::iter::from_fn(move || {
        let Reverse((pair, i)) = heap.pop()?;
        match readers[i].next() {
            Some(Ok(p)) => heap.push(Reverse((p, i))),
            Some(Err(e)) => return Some(Err(e)),
            None => {}
        }
        Some(Ok(pair))
    }))
}

struct Shared {
    runs: Vec<Arc<Run>>,
    /// Postings of entries `[memory_from, covered)`, in index order.
    memory: Vec<(u64, u64)>,
    memory_from: u64,
    covered: u64,
}

/// The posting lists; the indexer appends, queries read. Cheap to clone.
#[derive(Clone)]
pub struct Postings {
    dir: Arc<PathBuf>,
    shared: Arc<RwLock<Shared>>,
}

/// Postings kept in memory before they become a run.
const FLUSH_AT: usize = 1 << 20;
/// Runs of similar size (within this factor) merge once this many line up.
const MERGE_FANIN: usize = 4;

impl Postings {
    /// Opens the runs in `dir`, reading only. A crash during a merge can
    /// leave the merged run beside the runs it replaced, or a temporary
    /// file: the redundant ones are ignored here and removed by
    /// [`Postings::tidy`].
    pub fn open(dir: &Path) -> Result<Self> {
        let mut runs = Vec::new();
        if dir.exists() {
            for e in std::fs::read_dir(dir)? {
                let path = e?.path();
                if path.extension().and_then(|x| x.to_str()) == Some("post") {
                    runs.push(Run::open(path)?);
                }
            }
        }
        // Widest first, so a merged run wins over the runs it covers.
        runs.sort_by_key(|r| (r.from, std::cmp::Reverse(r.to)));
        let mut kept: Vec<Arc<Run>> = Vec::new();
        for r in runs {
            match kept.last() {
                Some(last) if r.to <= last.to => {}
                Some(last) if r.from != last.to => bail!(
                    "posting runs in {} leave a gap at entry {}",
                    dir.display(),
                    last.to
                ),
                None if r.from != 0 => bail!(
                    "posting runs in {} start at entry {}",
                    dir.display(),
                    r.from
                ),
                _ => kept.push(Arc::new(r)),
            }
        }
        let covered = kept.last().map_or(0, |r| r.to);
        Ok(Self {
            dir: Arc::new(dir.to_path_buf()),
            shared: Arc::new(RwLock::new(Shared {
                runs: kept,
                memory: Vec::new(),
                memory_from: covered,
                covered,
            })),
        })
    }

    /// Creates the directory and removes files a crash left behind: runs
    /// a merged run covers, and temporary files.
    pub fn tidy(&self) -> Result<()> {
        std::fs::create_dir_all(self.dir.as_path())?;
        let keep: std::collections::HashSet<PathBuf> = self
            .shared
            .read()
            .expect("postings lock")
            .runs
            .iter()
            .map(|r| r.path.clone())
            .collect();
        for e in std::fs::read_dir(self.dir.as_path())? {
            let path = e?.path();
            let ext = path.extension().and_then(|x| x.to_str());
            if ext == Some("tmp") || (ext == Some("post") && !keep.contains(&path)) {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Entries covered so far (durably: up to the newest run).
    pub fn covered(&self) -> u64 {
        self.shared.read().expect("postings lock").covered
    }

    pub fn durable(&self) -> u64 {
        self.shared.read().expect("postings lock").memory_from
    }

    /// Adds the postings of entries up to (excluding) `covered`.
    pub fn append(&self, pairs: &[(u64, u64)], covered: u64) {
        let mut s = self.shared.write().expect("postings lock");
        s.memory.extend_from_slice(pairs);
        s.covered = covered;
    }

    /// Writes the in-memory postings as a run when there are enough of them
    /// (or always, with `force`), then merges runs that have lined up.
    pub fn maybe_flush(&self, force: bool) -> Result<bool> {
        let (from, to, mut pairs) = {
            let s = self.shared.read().expect("postings lock");
            if s.covered == s.memory_from || (!force && s.memory.len() < FLUSH_AT) {
                return Ok(false);
            }
            (s.memory_from, s.covered, s.memory.clone())
        };
        pairs.sort_unstable();
        let run = Arc::new(write_run(
            &self.dir,
            from,
            to,
            pairs.len() as u64,
            pairs.iter().map(|p| Ok(*p)),
        )?);
        {
            let mut s = self.shared.write().expect("postings lock");
            let flushed = pairs.len();
            s.memory.drain(..flushed);
            s.memory_from = to;
            s.runs.push(run);
        }
        self.merge()?;
        Ok(true)
    }

    fn merge(&self) -> Result<()> {
        loop {
            let window = {
                let s = self.shared.read().expect("postings lock");
                let runs = &s.runs;
                (0..runs.len().saturating_sub(MERGE_FANIN - 1)).find_map(|i| {
                    let w = &runs[i..i + MERGE_FANIN];
                    let min = w.iter().map(|r| r.count.max(1)).min()?;
                    let max = w.iter().map(|r| r.count).max()?;
                    (max <= min * MERGE_FANIN as u64).then(|| w.to_vec())
                })
            };
            let Some(window) = window else {
                return Ok(());
            };
            let (from, to) = (window[0].from, window[window.len() - 1].to);
            let count = window.iter().map(|r| r.count).sum();
            let combined = Arc::new(write_run(&self.dir, from, to, count, merged(&window)?)?);
            {
                let mut s = self.shared.write().expect("postings lock");
                let at = s
                    .runs
                    .iter()
                    .position(|r| r.from == from)
                    .expect("the window is still there");
                s.runs.splice(at..at + window.len(), [combined]);
            }
            for r in window {
                std::fs::remove_file(&r.path)?;
            }
        }
    }

    /// Entry indexes posted under `key` strictly below `before`, newest
    /// first, at most `limit` (candidates: confirm each against its entry).
    pub fn newest_first(&self, key: u64, before: u64, limit: usize) -> Result<Vec<u64>> {
        let (runs, memory) = {
            let s = self.shared.read().expect("postings lock");
            let memory: Vec<u64> = s
                .memory
                .iter()
                .rev()
                .filter(|(k, i)| *k == key && *i < before)
                .map(|(_, i)| *i)
                .take(limit)
                .collect();
            (s.runs.clone(), memory)
        };
        let mut out = memory;
        for r in runs.iter().rev() {
            if out.len() >= limit {
                break;
            }
            if r.from < before {
                r.newest_first(key, before, limit, &mut out)?;
            }
        }
        out.truncate(limit);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postings_survive_flushes_merges_and_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let p = Postings::open(dir.path()).unwrap();
        let a = key_hash(Posting::Subject, "a");
        let b = key_hash(Posting::Department, "b");
        let mut expect_a = Vec::new();
        for batch in 0..12u64 {
            let mut pairs = Vec::new();
            for i in batch * 100..(batch + 1) * 100 {
                pairs.push((b, i));
                if i % 7 == 0 {
                    pairs.push((a, i));
                    expect_a.push(i);
                }
            }
            p.append(&pairs, (batch + 1) * 100);
            p.maybe_flush(true).unwrap();
        }
        expect_a.reverse();
        assert_eq!(p.newest_first(a, u64::MAX, usize::MAX).unwrap(), expect_a);
        assert_eq!(p.newest_first(b, 1000, 3).unwrap(), vec![999, 998, 997]);
        let runs = std::fs::read_dir(dir.path()).unwrap().count();
        assert!(runs < 12, "runs were merged: {runs} left");
        let again = Postings::open(dir.path()).unwrap();
        assert_eq!(again.covered(), 1200);
        assert_eq!(again.newest_first(a, 500, 2).unwrap(), vec![497, 490]);
    }
}
