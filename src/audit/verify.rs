//! Offline verification: with only the log's public key, recompute every
//! leaf and the tree, check each entry's place and hash-chain link, every
//! checkpoint's signature and root, and each checkpoint's consistency with
//! the next. The first problem is reported with the entry index it concerns.

use super::checkpoint::NoteVerifier;
use super::leaf_hash;
use super::merkle::{self, Hash, MemoryTree};
use super::segment::{parse_frames, segments};
use crate::proto::AuditEntry;
use prost::Message;
use std::path::Path;

/// An untouched log.
#[derive(Debug)]
pub struct Report {
    pub entries: u64,
    pub checkpoints: usize,
    /// Size of the newest checkpoint; entries past it are chained but not yet
    /// signed.
    pub signed_size: u64,
}

/// The first problem found.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    /// The entry index concerned (`None` when only a checkpoint is wrong).
    pub index: Option<u64>,
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.index {
            Some(i) => write!(f, "index {i}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

fn at(index: u64, reason: impl Into<String>) -> Problem {
    Problem {
        index: Some(index),
        reason: reason.into(),
    }
}

/// Entry bytes of a data directory's segments, checking each frame's CRC.
pub fn read_segments(audit_dir: &Path) -> Result<Vec<Vec<u8>>, Problem> {
    let segs = segments(audit_dir).map_err(|e| Problem {
        index: None,
        reason: e.to_string(),
    })?;
    let mut out = Vec::new();
    for (first, path) in segs {
        if first != out.len() as u64 {
            return Err(at(
                out.len() as u64,
                format!(
                    "segment {} starts at index {first}: entries are missing",
                    path.display()
                ),
            ));
        }
        let bytes =
            std::fs::read(&path).map_err(|e| at(first, format!("{}: {e}", path.display())))?;
        let (frames, good) = parse_frames(&bytes);
        out.extend(frames.into_iter().map(<[u8]>::to_vec));
        if good != bytes.len() {
            return Err(at(
                out.len() as u64,
                format!(
                    "frame at byte {good} of {} fails its length/CRC check (altered, or a torn tail the next start truncates)",
                    path.display()
                ),
            ));
        }
    }
    Ok(out)
}

/// Verifies entries (in order) and checkpoint notes against a verifier key.
pub fn verify(
    entries: &[Vec<u8>],
    notes: &[String],
    key: &NoteVerifier,
) -> Result<Report, Problem> {
    let n = entries.len() as u64;
    let mut tree = MemoryTree::new();
    let mut leaves: Vec<Hash> = Vec::with_capacity(entries.len());
    let mut prevs: Vec<Vec<u8>> = Vec::with_capacity(entries.len());
    for (i, bytes) in entries.iter().enumerate() {
        let i = i as u64;
        let e = AuditEntry::decode(bytes.as_slice())
            .map_err(|_| at(i, "the entry does not decode: altered"))?;
        if e.index != i {
            return Err(at(
                i,
                format!(
                    "the entry here says it is index {}: entries were deleted, inserted or reordered",
                    e.index
                ),
            ));
        }
        let leaf = leaf_hash(bytes);
        tree.push(leaf);
        leaves.push(leaf);
        prevs.push(e.prev_leaf_hash);
    }
    // Hash chain: entry i+1 records entry i's leaf hash.
    let link_ok = |i: usize| i + 1 >= leaves.len() || prevs[i + 1] == leaves[i];
    if !prevs.first().is_none_or(Vec::is_empty) {
        return Err(at(
            0,
            "the first entry names a predecessor: the log's start was cut",
        ));
    }
    if let Some(a) = (0..leaves.len()).find(|&i| !link_ok(i)) {
        // Entry a changed, so a+1's record of it mismatches; or a+1's own
        // record of a changed, and then a+1's successor mismatches too.
        let altered = if link_ok(a + 1) { a } else { a + 1 };
        return Err(at(
            altered as u64,
            "the entry does not hash to what its successor recorded: altered",
        ));
    }
    let mut last: Option<(u64, Hash)> = None;
    for (k, note) in notes.iter().enumerate() {
        let cp = key.open(note).map_err(|reason| Problem {
            index: None,
            reason: format!(
                "checkpoint #{} ({}): {reason}",
                k + 1,
                super::export::note_size(note)
            ),
        })?;
        if cp.size > n {
            return Err(at(
                n,
                format!(
                    "checkpoint #{} covers {} entries but the log ends at {n}: truncated",
                    k + 1,
                    cp.size
                ),
            ));
        }
        let root = merkle::root(&tree, cp.size).map_err(|e| at(cp.size, e.to_string()))?;
        if root != cp.root {
            return Err(at(
                cp.size.saturating_sub(1),
                format!(
                    "the entries do not match checkpoint #{} (size {})",
                    k + 1,
                    cp.size
                ),
            ));
        }
        if let Some((old, old_root)) = last {
            if cp.size < old {
                return Err(Problem {
                    index: None,
                    reason: format!(
                        "checkpoint #{} shrinks the log from {old} to {}",
                        k + 1,
                        cp.size
                    ),
                });
            }
            let proof = merkle::consistency_proof(&tree, old, cp.size)
                .map_err(|e| at(old, e.to_string()))?;
            if !merkle::verify_consistency(old, cp.size, &old_root, &cp.root, &proof) {
                return Err(at(
                    old,
                    format!(
                        "checkpoint #{} is not consistent with its predecessor",
                        k + 1
                    ),
                ));
            }
        }
        last = Some((cp.size, cp.root));
    }
    Ok(Report {
        entries: n,
        checkpoints: notes.len(),
        signed_size: last.map_or(0, |(s, _)| s),
    })
}
