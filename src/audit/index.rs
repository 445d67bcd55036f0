//! The audit log's derived index in sled: Merkle nodes, a copy of each entry
//! by index, subject and department postings, and per-day statistics.
//!
//! Everything here is rebuilt from the segment files, which stay the source
//! of truth: on open the index catches up from wherever it stopped (from 0 if
//! it is missing). Each committed batch is indexed with one atomic sled batch
//! that also moves the "indexed up to" mark, so a crash never leaves a
//! half-counted batch behind.

use super::leaf_hash;
use super::merkle::{self, Hash, Nodes};
use crate::proto::{AuditEntry, DenialCount, DepartmentDayStats, EntryKind};
use crate::store::Store;
use anyhow::{Context, Result};
use prost::Message;
use std::collections::BTreeMap;

const TREE: &str = "audit_index";
const MERKLE: u8 = b'm';
const ENTRY: u8 = b'e';
const SUBJECT: u8 = b's';
const DEPARTMENT: u8 = b'd';
const STATS: u8 = b't';
const SIZE_KEY: &[u8] = b"z.size";

fn key(kind: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![kind];
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

fn merkle_key(level: u32, index: u64) -> Vec<u8> {
    key(MERKLE, &[&[level as u8], &index.to_be_bytes()])
}

fn posting_prefix(kind: u8, name: &str) -> Vec<u8> {
    key(kind, &[name.as_bytes(), &[0]])
}

/// The subjects (citizen IDs, credit codes) a pull touched: requested,
/// returned or found out of scope.
pub fn subjects(e: &AuditEntry) -> Vec<&str> {
    if e.kind != EntryKind::Pull as i32 {
        return Vec::new();
    }
    let mut out: Vec<&str> = e
        .keys_returned
        .iter()
        .chain(&e.keys_out_of_scope)
        .chain(e.query.iter().flat_map(|q| &q.keys))
        .map(String::as_str)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The local calendar day of an entry, as stats group it.
pub fn day_of(e: &AuditEntry) -> String {
    let secs = e.time.map_or(0, |t| t.seconds);
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_default()
}

/// Read access to the index; cheap to clone.
#[derive(Clone)]
pub struct AuditIndex {
    store: Store,
}

/// The single writer of the index (the indexer thread).
pub struct Indexer {
    index: AuditIndex,
    /// The rightmost perfect subtree per level (bit `l` of size set), so an
    /// append needs no reads.
    frontier: Vec<Option<Hash>>,
    size: u64,
}

impl Indexer {
    pub fn open(store: Store) -> Result<Self> {
        let size = store
            .backend()
            .get(TREE, SIZE_KEY)?
            .map(|b| u64::from_be_bytes(b.as_slice().try_into().unwrap_or_default()))
            .unwrap_or(0);
        let index = AuditIndex { store };
        let mut frontier = vec![None; 64];
        for level in 0..64u32 {
            if size >> level & 1 == 1 {
                frontier[level as usize] = Some(index.perfect(level, (size >> level) - 1)?);
            }
        }
        Ok(Self {
            index,
            frontier,
            size,
        })
    }

    pub fn reader(&self) -> AuditIndex {
        self.index.clone()
    }

    /// Entries indexed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Indexes a run of entries that starts at `self.size()`.
    pub fn ingest(&mut self, entries: &[Vec<u8>]) -> Result<()> {
        let backend = self.index.store.backend();
        let mut writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
        let mut stats: BTreeMap<Vec<u8>, DepartmentDayStats> = BTreeMap::new();
        for bytes in entries {
            let n = self.size;
            let e = AuditEntry::decode(bytes.as_slice()).context("decoding an audit entry")?;
            let mut cur = leaf_hash(bytes);
            writes.push((merkle_key(0, n), Some(cur.to_vec())));
            let mut level = 0u32;
            while n >> level & 1 == 1 {
                let left = self.frontier[level as usize].take().context("frontier")?;
                cur = merkle::node_hash(&left, &cur);
                level += 1;
                writes.push((merkle_key(level, n >> level), Some(cur.to_vec())));
            }
            self.frontier[level as usize] = Some(cur);
            let idx = n.to_be_bytes();
            writes.push((key(ENTRY, &[&idx]), Some(bytes.clone())));
            for s in subjects(&e) {
                writes.push((key(SUBJECT, &[s.as_bytes(), &[0], &idx]), Some(Vec::new())));
            }
            let dept = e.principal.as_ref().map_or("", |p| p.department.as_str());
            writes.push((
                key(DEPARTMENT, &[dept.as_bytes(), &[0], &idx]),
                Some(Vec::new()),
            ));
            let day = day_of(&e);
            let stats_key = key(STATS, &[day.as_bytes(), &[0], dept.as_bytes()]);
            if !stats.contains_key(&stats_key) {
                let old = backend
                    .get(TREE, &stats_key)?
                    .map(|b| DepartmentDayStats::decode(b.as_slice()))
                    .transpose()?
                    .unwrap_or_else(|| DepartmentDayStats {
                        department: dept.into(),
                        day,
                        ..Default::default()
                    });
                stats.insert(stats_key.clone(), old);
            }
            let row = stats.get_mut(&stats_key).expect("inserted above");
            row.calls += 1;
            row.records += e.record_count;
            if !e.reason_code.is_empty() {
                match row
                    .denials
                    .iter_mut()
                    .find(|d| d.reason_code == e.reason_code)
                {
                    Some(d) => d.count += 1,
                    None => row.denials.push(DenialCount {
                        reason_code: e.reason_code.clone(),
                        count: 1,
                    }),
                }
            }
            self.size += 1;
        }
        writes.extend(stats.into_iter().map(|(k, v)| (k, Some(v.encode_to_vec()))));
        writes.push((SIZE_KEY.to_vec(), Some(self.size.to_be_bytes().to_vec())));
        backend.apply_batch(TREE, writes)
    }
}

impl AuditIndex {
    pub fn entry(&self, index: u64) -> Result<Option<AuditEntry>> {
        self.store
            .backend()
            .get(TREE, &key(ENTRY, &[&index.to_be_bytes()]))?
            .map(|b| AuditEntry::decode(b.as_slice()).context("decoding an indexed entry"))
            .transpose()
    }

    /// Raw entry bytes in index order from `from`, at most `limit`.
    pub fn entry_bytes(&self, from: u64, limit: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let after = (from > 0).then(|| key(ENTRY, &[&(from - 1).to_be_bytes()]));
        self.store
            .backend()
            .scan(TREE, &[ENTRY], after.as_deref(), limit)?
            .into_iter()
            .map(|(k, v)| {
                Ok((
                    u64::from_be_bytes(k[1..9].try_into().context("entry key")?),
                    v,
                ))
            })
            .collect()
    }

    /// Entry indexes newest first: of a department or subject posting list
    /// (`kind`, `name`), or of the whole log; strictly below `before`.
    pub fn newest_first(
        &self,
        posting: Option<(u8, &str)>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<u64>> {
        let prefix = match posting {
            Some((kind, name)) => posting_prefix(kind, name),
            None => vec![ENTRY],
        };
        let before_key = before.map(|b| {
            let mut k = prefix.clone();
            k.extend_from_slice(&b.to_be_bytes());
            k
        });
        self.store
            .backend()
            .scan_rev(TREE, &prefix, before_key.as_deref(), limit)?
            .into_iter()
            .map(|(k, _)| {
                let tail: [u8; 8] = k[k.len() - 8..].try_into().context("posting key")?;
                Ok(u64::from_be_bytes(tail))
            })
            .collect()
    }

    /// Per-department, per-day statistics rows for days in `[from, to]`.
    pub fn stats(&self, from: &str, to: &str, department: &str) -> Result<Vec<DepartmentDayStats>> {
        let rows = self
            .store
            .backend()
            .scan(TREE, &[STATS], None, usize::MAX)?;
        rows.into_iter()
            .map(|(_, v)| DepartmentDayStats::decode(v.as_slice()).context("stats row"))
            .filter(|r| {
                r.as_ref().map_or(true, |r| {
                    r.day.as_str() >= from
                        && r.day.as_str() <= to
                        && (department.is_empty() || r.department == department)
                })
            })
            .collect()
    }
}

pub const BY_SUBJECT: u8 = SUBJECT;
pub const BY_DEPARTMENT: u8 = DEPARTMENT;

impl Nodes for AuditIndex {
    fn perfect(&self, level: u32, index: u64) -> Result<Hash> {
        let b = self
            .store
            .backend()
            .get(TREE, &merkle_key(level, index))?
            .with_context(|| format!("Merkle node {level}/{index} is not indexed"))?;
        b.as_slice().try_into().context("Merkle node length")
    }
}
