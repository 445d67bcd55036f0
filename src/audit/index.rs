//! The log's derived index, under `<audit dir>/index/`:
//!
//! - `tiles/` — the Merkle hashes in the tlog-tiles layout ([`super::tiles`]);
//! - `offsets` — each entry's byte offset in its segment (8 bytes per
//!   entry), so entry *i* is one positioned read;
//! - `postings/` — subject and department posting lists ([`super::postings`]);
//! - `stats.pb` — calls, records and denials per department and day.
//!
//! Everything here is rebuilt from the segments, which stay the source of
//! truth. The writer hands each committed batch over with what indexing
//! needs already extracted (leaf hash, place, department, subjects), so the
//! indexer decodes nothing on the hot path: a pushed hash, an 8-byte append,
//! a few postings and a map update per entry. Tiles and offsets are synced
//! at most every [`SYNC_EVERY`]; postings become runs in large batches;
//! statistics are kept in memory and written with each run.

use super::merkle::{Hash, Nodes};
use super::postings::{Posting, Postings, key_hash};
use super::segment::{read_frame, segment_path};
use super::tiles::{self, TileWriter, Tiles};
use crate::proto::storage::StatsSnapshot;
use crate::proto::{AuditEntry, DenialCount, DepartmentDayStats, EntryKind};
use anyhow::{Context, Result, bail};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Longest a committed entry waits to be durable in the index.
pub const SYNC_EVERY: Duration = Duration::from_secs(2);

/// What indexing needs of an entry, taken from it after it is encoded.
#[derive(Debug, Default)]
pub struct IndexInfo {
    pub department: String,
    /// Citizen IDs and credit codes a pull requested, returned or found out
    /// of scope; one may be named more than once (a GET's key is requested
    /// and returned). Taken as they are, on the writer's thread: the
    /// indexer keeps each once ([`Indexer::ingest`]).
    pub subjects: Vec<String>,
    pub reason_code: String,
    pub record_count: u64,
}

/// Whether a string looks like a subject key (18 characters, digits and
/// capitals): digests of oversized requests are not subjects.
fn is_subject(s: &str) -> bool {
    s.len() == 18
        && s.bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

impl IndexInfo {
    /// Moves what the index needs out of an entry that has been encoded.
    pub fn take(e: &mut AuditEntry) -> Self {
        let mut subjects = Vec::new();
        if is_use(e) {
            subjects.append(&mut e.keys_returned);
            subjects.append(&mut e.keys_out_of_scope);
            if let Some(q) = e.query.as_mut() {
                subjects.append(&mut q.keys);
            }
            subjects.retain(|s| is_subject(s));
        }
        Self {
            department: e
                .principal
                .as_mut()
                .map(|p| std::mem::take(&mut p.department))
                .unwrap_or_default(),
            subjects,
            reason_code: std::mem::take(&mut e.reason_code),
            record_count: e.record_count,
        }
    }
}

/// Whether an entry is a use of the records it names: a pull, or a
/// correction filed about one (which reads it as a pull does).
pub fn is_use(e: &AuditEntry) -> bool {
    e.kind == EntryKind::Pull as i32 || e.kind == EntryKind::Correction as i32
}

/// The subjects an entry mentions (what the data tracker matches on).
pub fn mentions(e: &AuditEntry, subject: &str) -> bool {
    is_use(e)
        && (e.keys_returned.iter().any(|k| k == subject)
            || e.keys_out_of_scope.iter().any(|k| k == subject)
            || e.query.iter().flat_map(|q| &q.keys).any(|k| k == subject))
}

/// One committed entry, as the writer hands it to the indexer.
pub struct Committed {
    pub index: u64,
    pub leaf: Hash,
    pub segment: u64,
    pub offset: u64,
    pub info: IndexInfo,
}

/// A committed batch: its entries and the local day they were written.
pub struct Batch {
    pub day: String,
    pub entries: Vec<Committed>,
}

/// The local calendar day of a time, as stats group it.
pub fn day_of(seconds: i64) -> String {
    chrono::DateTime::from_timestamp(seconds, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_default()
}

type StatsMap = BTreeMap<(String, String), DepartmentDayStats>;

/// Where entry bytes are: the offsets file and the segments.
struct Entries {
    audit_dir: PathBuf,
    offsets: File,
    /// First index of every segment, ascending.
    segments: RwLock<Vec<u64>>,
    files: Mutex<HashMap<u64, Arc<File>>>,
}

impl Entries {
    fn segment_of(&self, index: u64) -> Option<u64> {
        let s = self.segments.read().expect("segments lock");
        let pos = s.partition_point(|f| *f <= index);
        pos.checked_sub(1).map(|p| s[p])
    }

    fn file(&self, first: u64) -> Result<Arc<File>> {
        let mut files = self.files.lock().expect("files lock");
        if let Some(f) = files.get(&first) {
            return Ok(f.clone());
        }
        if files.len() >= 64 {
            files.clear();
        }
        let path = segment_path(&self.audit_dir, first);
        let f = Arc::new(File::open(&path).with_context(|| format!("opening {}", path.display()))?);
        files.insert(first, f.clone());
        Ok(f)
    }

    fn bytes(&self, index: u64) -> Result<Vec<u8>> {
        let mut b = [0u8; 8];
        self.offsets
            .read_exact_at(&mut b, index * 8)
            .context("reading the audit offsets index")?;
        let segment = self
            .segment_of(index)
            .with_context(|| format!("no segment holds entry {index}"))?;
        read_frame(self.file(segment)?.as_ref(), u64::from_le_bytes(b))
    }
}

/// Read access to the index; cheap to clone.
#[derive(Clone)]
pub struct AuditIndex {
    entries: Arc<Entries>,
    tiles: Tiles,
    postings: Postings,
    stats: Arc<RwLock<StatsMap>>,
    size: Arc<AtomicU64>,
}

impl AuditIndex {
    /// Entries indexed (readable, provable) so far.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn tiles(&self) -> &Tiles {
        &self.tiles
    }

    pub fn entry_bytes_at(&self, index: u64) -> Result<Option<Vec<u8>>> {
        if index >= self.size() {
            return Ok(None);
        }
        self.entries.bytes(index).map(Some)
    }

    pub fn entry(&self, index: u64) -> Result<Option<AuditEntry>> {
        self.entry_bytes_at(index)?
            .map(|b| AuditEntry::decode(b.as_slice()).context("decoding an indexed entry"))
            .transpose()
    }

    /// Raw entry bytes in index order from `from`, at most `limit`.
    pub fn entry_bytes(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let end = self.size().min(from.saturating_add(limit as u64));
        (from..end)
            .map(|i| Ok((i, self.entries.bytes(i)?)))
            .collect()
    }

    /// Entry indexes newest first, strictly below `before`: of a posting
    /// list (candidates to confirm against the entry), or of the whole log.
    pub fn newest_first(
        &self,
        posting: Option<(Posting, &str)>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<u64>> {
        let before = before.unwrap_or(u64::MAX).min(self.size());
        match posting {
            Some((kind, name)) => self
                .postings
                .newest_first(key_hash(kind, name), before, limit),
            None => Ok((0..before).rev().take(limit).collect()),
        }
    }

    /// Per-department, per-day statistics rows for days in `[from, to]`.
    pub fn stats(&self, from: &str, to: &str, department: &str) -> Vec<DepartmentDayStats> {
        self.stats
            .read()
            .expect("stats lock")
            .values()
            .filter(|r| {
                r.day.as_str() >= from
                    && r.day.as_str() <= to
                    && (department.is_empty() || r.department == department)
            })
            .cloned()
            .collect()
    }
}

impl Nodes for AuditIndex {
    fn perfect(&self, level: u32, index: u64) -> Result<Hash> {
        self.tiles.perfect(level, index)
    }
}

/// The single writer of the index (the indexer thread).
pub struct Indexer {
    dir: PathBuf,
    tiles: TileWriter,
    offsets: File,
    postings: Postings,
    stats_covers: u64,
    reader: AuditIndex,
    last_sync: Instant,
}

fn add_stats(stats: &mut StatsMap, day: &str, info: &IndexInfo) {
    let row = stats
        .entry((day.to_string(), info.department.clone()))
        .or_insert_with(|| DepartmentDayStats {
            department: info.department.clone(),
            day: day.to_string(),
            ..Default::default()
        });
    row.calls += 1;
    row.records += info.record_count;
    if !info.reason_code.is_empty() {
        match row
            .denials
            .iter_mut()
            .find(|d| d.reason_code == info.reason_code)
        {
            Some(d) => d.count += 1,
            None => row.denials.push(DenialCount {
                reason_code: info.reason_code.clone(),
                count: 1,
            }),
        }
    }
}

impl Indexer {
    /// How many entries each part of the index claims to cover, read
    /// without changing anything: an index ahead of the segments means
    /// entries were removed, and start refuses before it writes a byte.
    pub fn marks(audit_dir: &Path) -> Result<[(&'static str, u64); 4]> {
        let dir = audit_dir.join("index");
        let offsets = std::fs::metadata(dir.join("offsets")).map_or(0, |m| m.len() / 8);
        Ok([
            ("tiles", tiles::durable_size(&dir.join("tiles"))?),
            ("offsets", offsets),
            ("postings", Postings::open(&dir.join("postings"))?.durable()),
            ("statistics", read_stats(&dir)?.covers),
        ])
    }

    /// Opens the index of `audit_dir` for writing, as far as it is durable.
    /// The caller then feeds every entry from [`Indexer::resume_from`] on.
    pub fn open(audit_dir: &Path, segment_firsts: Vec<u64>) -> Result<Self> {
        let dir = audit_dir.join("index");
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tiles = TileWriter::open(&dir.join("tiles"))?;
        let postings = Postings::open(&dir.join("postings"))?;
        postings.tidy()?;
        let snapshot = read_stats(&dir)?;
        let stats: StatsMap = snapshot
            .rows
            .into_iter()
            .map(|r| ((r.day.clone(), r.department.clone()), r))
            .collect();
        let offsets_path = dir.join("offsets");
        let offsets = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&offsets_path)
            .with_context(|| format!("opening {}", offsets_path.display()))?;
        let have = offsets.metadata()?.len() / 8;
        if have < tiles.size() {
            bail!(
                "{} covers {have} entries but the tiles {}: the index is inconsistent; move {} aside to rebuild it from the segments",
                offsets_path.display(),
                tiles.size(),
                dir.display()
            );
        }
        offsets.set_len(tiles.size() * 8)?;
        let reader = AuditIndex {
            entries: Arc::new(Entries {
                audit_dir: audit_dir.to_path_buf(),
                offsets: File::open(&offsets_path)?,
                segments: RwLock::new(segment_firsts),
                files: Mutex::default(),
            }),
            tiles: tiles.reader(),
            postings: postings.clone(),
            stats: Arc::new(RwLock::new(stats)),
            size: Arc::new(AtomicU64::new(0)),
        };
        let me = Self {
            dir,
            tiles,
            offsets,
            postings,
            stats_covers: snapshot.covers,
            reader,
            last_sync: Instant::now(),
        };
        me.publish_size();
        Ok(me)
    }

    /// The first entry some part of the index still needs.
    pub fn resume_from(&self) -> u64 {
        self.tiles
            .size()
            .min(self.postings.covered())
            .min(self.stats_covers)
    }

    pub fn reader(&self) -> AuditIndex {
        self.reader.clone()
    }

    /// Entries every part of the index covers.
    pub fn size(&self) -> u64 {
        self.tiles.size()
    }

    fn publish_size(&self) {
        let size = self
            .tiles
            .size()
            .min(self.postings.covered())
            .min(self.stats_covers);
        self.reader.size.store(size, Ordering::Release);
    }

    /// Indexes a committed batch. Each part takes only the entries it does
    /// not cover yet, so a batch replayed after a restart is harmless.
    pub fn ingest(&mut self, batch: &Batch) -> Result<()> {
        let tiled = self.tiles.size();
        let fresh: Vec<&Committed> = batch.entries.iter().filter(|c| c.index >= tiled).collect();
        if let Some(first) = fresh.first() {
            anyhow::ensure!(
                first.index == tiled,
                "audit entry {} reached the indexer before entry {tiled}",
                first.index
            );
            let mut offsets = Vec::with_capacity(fresh.len() * 8);
            {
                let mut segs = self.reader.entries.segments.write().expect("segments lock");
                for c in &fresh {
                    offsets.extend_from_slice(&c.offset.to_le_bytes());
                    if segs.last().is_none_or(|l| *l < c.segment) {
                        segs.push(c.segment);
                    }
                }
            }
            self.offsets
                .write_all(&offsets)
                .context("appending to the audit offsets index")?;
            let leaves: Vec<Hash> = fresh.iter().map(|c| c.leaf).collect();
            self.tiles.append(&leaves)?;
        }
        let posted = self.postings.covered();
        let (mut pairs, mut subjects) = (Vec::new(), Vec::new());
        for c in batch.entries.iter().filter(|c| c.index >= posted) {
            pairs.push((key_hash(Posting::Department, &c.info.department), c.index));
            // Each subject once per entry: sorted as hashes, not as text.
            subjects.clear();
            subjects.extend(
                c.info
                    .subjects
                    .iter()
                    .map(|s| key_hash(Posting::Subject, s)),
            );
            subjects.sort_unstable();
            subjects.dedup();
            pairs.extend(subjects.iter().map(|h| (*h, c.index)));
        }
        if let Some(last) = batch.entries.last().filter(|l| l.index >= posted) {
            self.postings.append(&pairs, last.index + 1);
        }
        {
            let mut stats = self.reader.stats.write().expect("stats lock");
            let from = self.stats_covers;
            for c in batch.entries.iter().filter(|c| c.index >= from) {
                add_stats(&mut stats, &batch.day, &c.info);
                self.stats_covers = c.index + 1;
            }
        }
        if self.postings.maybe_flush(false)? {
            self.save_stats()?;
        }
        if self.last_sync.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        self.publish_size();
        Ok(())
    }

    fn save_stats(&self) -> Result<()> {
        let snapshot = StatsSnapshot {
            covers: self.stats_covers,
            rows: self
                .reader
                .stats
                .read()
                .expect("stats lock")
                .values()
                .cloned()
                .collect(),
        };
        tiles::replace_file(&self.dir, "stats.pb", &snapshot.encode_to_vec())
    }

    /// Makes tiles and offsets durable and records how far they go.
    pub fn sync(&mut self) -> Result<()> {
        self.offsets.sync_data()?;
        self.tiles.sync()?;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Everything durable, postings and statistics included: on shutdown.
    pub fn close(&mut self) -> Result<()> {
        self.sync()?;
        self.postings.maybe_flush(true)?;
        self.save_stats()
    }
}

fn read_stats(dir: &Path) -> Result<StatsSnapshot> {
    match std::fs::read(dir.join("stats.pb")) {
        Ok(b) => StatsSnapshot::decode(b.as_slice()).context("decoding stats.pb"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StatsSnapshot::default()),
        Err(e) => Err(e).context("reading stats.pb"),
    }
}

/// Builds the batch for an entry read back from a segment (recovery).
pub fn recovered(
    index: u64,
    segment: u64,
    offset: u64,
    bytes: &[u8],
) -> Result<(Committed, String)> {
    let mut e =
        AuditEntry::decode(bytes).with_context(|| format!("decoding audit entry {index}"))?;
    let day = day_of(e.time.map_or(0, |t| t.seconds));
    Ok((
        Committed {
            index,
            leaf: super::leaf_hash(bytes),
            segment,
            offset,
            info: IndexInfo::take(&mut e),
        },
        day,
    ))
}
