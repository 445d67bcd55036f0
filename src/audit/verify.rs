//! Offline verification: with only the log's public key, recompute every
//! leaf and the tree, check each entry's place and hash-chain link, every
//! checkpoint's signature and root, and each checkpoint's consistency with
//! the next — and refuse what a verifier must refuse (audit-log.md, "What
//! verification must refuse"):
//!
//! - a damaged frame anywhere but the incomplete final frame of the newest
//!   segment, in a segment or in the checkpoint file;
//! - a missing or empty checkpoint file, or a newest checkpoint older than
//!   the entries by more than the signing interval: an error with
//!   `strict`, otherwise [`Outcome::Unsigned`] (the CLI exits non-zero
//!   unless `--allow-unsigned`) — "0 checkpoints verified" is never OK;
//! - a log shorter than, or inconsistent with, a checkpoint the auditor
//!   saved earlier (`trusted`): rollback and rewrite;
//! - fewer than `min_witnesses` valid cosignatures on the newest checkpoint.

use super::checkpoint::{CosignatureVerifier, LogVerifier, cosigners};
use super::generation;
use super::leaf_hash;
use super::merkle::{self, Hash, MemoryTree};
use crate::proto::{AuditEntry, Generation};
use prost::Message;
use std::time::Duration;

/// What to check beyond the log itself.
#[derive(Default)]
pub struct Options {
    pub strict: bool,
    /// Checkpoints saved earlier (signed notes).
    pub trusted: Vec<String>,
    pub witnesses: Vec<CosignatureVerifier>,
    pub min_witnesses: usize,
    /// How far the newest checkpoint may trail the newest entry: the
    /// signing interval plus slack.
    pub max_unsigned: Duration,
}

/// Where the log lost its tail and went on as a new generation: what its
/// generation entry records, checked against the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub number: u32,
    pub origin: String,
    pub predecessor: String,
    /// Entries kept (the generation entry's index).
    pub at: u64,
    pub lost: String,
    pub started_by: String,
    pub reason: String,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "generation {} ({}) continues {} after its first {} entries; lost: {}; started by {}: {}",
            self.number,
            self.origin,
            self.predecessor,
            self.at,
            self.lost,
            self.started_by,
            self.reason
        )
    }
}

/// A log that verified.
#[derive(Debug)]
pub struct Report {
    pub entries: u64,
    pub checkpoints: usize,
    /// Size of the newest checkpoint.
    pub signed_size: u64,
    /// Witnesses that cosigned the newest checkpoint.
    pub cosigned_by: Vec<String>,
    /// Things worth saying that are not tampering (a torn final frame).
    pub notes: Vec<String>,
    /// Every generation after the first: each a gap a verifier must accept
    /// knowingly.
    pub gaps: Vec<Gap>,
}

/// Verified, or verified only as far as its (missing or stale) checkpoints go.
#[derive(Debug)]
pub enum Outcome {
    Ok(Report),
    /// Every entry and checkpoint checks out, but the entries are not (all)
    /// covered by a checkpoint in time: a deleted checkpoint file and a
    /// rolled-back one look like this.
    Unsigned(Report, String),
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

fn checkpoint_problem(reason: impl Into<String>) -> Problem {
    Problem {
        index: None,
        reason: reason.into(),
    }
}

/// Entry bytes of a data directory's segments, with any torn final frame
/// reported as a note; other damage is a problem naming file and offset.
pub fn read_segments(audit_dir: &std::path::Path) -> Result<(Vec<Vec<u8>>, Vec<String>), Problem> {
    let mut out = Vec::new();
    let walked = super::segment::walk(audit_dir, |_, _, _, b| {
        out.push(b.to_vec());
        Ok(())
    });
    match walked {
        Ok((_, torn)) => Ok((
            out,
            torn.map(|(path, at)| {
                format!(
                    "{} ends in an incomplete frame at byte {at} (a write cut short by a crash; never acknowledged)",
                    path.display()
                )
            })
            .into_iter()
            .collect(),
        )),
        Err(e) => match e.downcast::<super::segment::SegmentProblem>() {
            Ok(p) => Err(at(p.index, p.to_string())),
            Err(e) => Err(checkpoint_problem(e.to_string())),
        },
    }
}

/// Checks entries alone: each decodes, sits at its own index, and records
/// its predecessor's leaf hash. Returns the tree of their leaves.
/// The longest any entry may be withheld from the resident tracker: a
/// grant's `disclosure_delay_days` is at most 180, plus a minute of slack
/// between the call's judgement and the writer's timestamp.
const MAX_WITHHELD_SECONDS: i64 = 180 * 86_400 + 60;

/// What the entries say of their withholding from residents: how many are
/// withheld at all, and the longest delay in days.
#[derive(Debug, Default)]
struct Withheld {
    entries: u64,
    longest_days: i64,
}

/// What [`check_entries`] found: the tree, each entry's time, what is
/// withheld from residents, and the generation entries by index.
struct Checked {
    tree: MemoryTree,
    times: Vec<i64>,
    withheld: Withheld,
    generations: Vec<(u64, Generation)>,
}

fn check_entries(entries: &[Vec<u8>]) -> Result<Checked, Problem> {
    let mut withheld = Withheld::default();
    let mut generations = Vec::new();
    let mut tree = MemoryTree::new();
    let mut leaves: Vec<Hash> = Vec::with_capacity(entries.len());
    let mut prevs: Vec<Vec<u8>> = Vec::with_capacity(entries.len());
    let mut times = Vec::with_capacity(entries.len());
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
        let time = e.time.map_or(0, |t| t.seconds);
        if let Some(after) = e.disclosed_after {
            let held = after.seconds.checked_sub(time).unwrap_or(i64::MAX);
            if held > MAX_WITHHELD_SECONDS {
                return Err(at(
                    i,
                    format!(
                        "the entry is withheld from residents for {} days, longer than the 180 any grant may set",
                        held / 86_400
                    ),
                ));
            }
            withheld.entries += 1;
            withheld.longest_days = withheld.longest_days.max((held + 86_399) / 86_400);
        }
        if let Some(g) = e.generation {
            generations.push((i, g));
        }
        prevs.push(e.prev_leaf_hash);
        times.push(time);
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
    Ok(Checked {
        tree,
        times,
        withheld,
        generations,
    })
}

/// Each generation entry sits where its predecessor's kept entries end,
/// names the origins in order, and records the root the tree has there.
fn check_generations(
    base: &str,
    tree: &MemoryTree,
    found: Vec<(u64, Generation)>,
) -> Result<Vec<Gap>, Problem> {
    let mut gaps = Vec::with_capacity(found.len());
    for (k, (i, g)) in found.into_iter().enumerate() {
        let number = k as u32 + 2;
        let bad = |why: String| at(i, format!("a generation entry {why}: altered"));
        if g.number != number
            || g.origin != generation::origin_of(base, number)
            || g.predecessor_origin != generation::origin_of(base, number - 1)
        {
            return Err(bad(format!(
                "names generation {} ({} after {}), but it is generation {number} of '{base}'",
                g.number, g.origin, g.predecessor_origin
            )));
        }
        if g.size != i {
            return Err(bad(format!(
                "says it keeps {} entries but sits at {i}",
                g.size
            )));
        }
        let root = merkle::root(tree, i).map_err(|e| at(i, e.to_string()))?;
        if g.root != root {
            return Err(bad("records a root the kept entries do not have".into()));
        }
        gaps.push(Gap {
            number,
            origin: g.origin,
            predecessor: g.predecessor_origin,
            at: i,
            lost: g.lost,
            started_by: g.started_by,
            reason: g.reason,
        });
    }
    Ok(gaps)
}

/// Verifies entries (in order) and checkpoint notes (`None`: no checkpoint
/// file at all) against the log's key.
pub fn verify(
    entries: &[Vec<u8>],
    notes: Option<&[String]>,
    key: &LogVerifier,
    opts: &Options,
) -> Result<Outcome, Problem> {
    let n = entries.len() as u64;
    let Checked {
        tree,
        times,
        withheld,
        generations,
    } = check_entries(entries)?;
    let base = generation::split(key.name()).0;
    let gaps = check_generations(base, &tree, generations)?;
    // Where generation g starts (its entry's index); generation 1 at 0.
    let start = |g: u32| match g {
        1 => Some(0),
        g => gaps.get(g as usize - 2).map(|gap| gap.at),
    };
    let notes = notes.unwrap_or_default();
    let mut last: Option<(u64, Hash)> = None;
    let mut newest_generation = 1;
    for (k, note) in notes.iter().enumerate() {
        let cp = key.open_any_generation(note).map_err(|reason| {
            checkpoint_problem(format!(
                "checkpoint #{} (size {}): {reason}",
                k + 1,
                super::checkpoint::note_size(note)
            ))
        })?;
        // A checkpoint belongs to the generation its origin names: after
        // that generation's entry, and not past where the next one starts.
        let g = generation::split(&cp.origin).1;
        let within = match (start(g), start(g + 1)) {
            (None, _) => false,
            (Some(from), next) => (g == 1 || cp.size > from) && next.is_none_or(|to| cp.size <= to),
        };
        if !within || g < newest_generation {
            return Err(checkpoint_problem(format!(
                "checkpoint #{} (size {}) is of generation {g}, which holds no such size: a generation was forged or removed",
                k + 1,
                cp.size
            )));
        }
        newest_generation = g;
        if cp.size > n {
            return Err(at(
                n,
                format!(
                    "checkpoint #{} covers {} entries but the log ends at {n}: entries were removed",
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
                return Err(checkpoint_problem(format!(
                    "checkpoint #{} shrinks the log from {old} to {}",
                    k + 1,
                    cp.size
                )));
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
    let mut notes_out = Vec::new();
    for (k, t) in opts.trusted.iter().enumerate() {
        let cp = key.open_any_generation(t).map_err(|reason| {
            checkpoint_problem(format!("trusted checkpoint #{}: {reason}", k + 1))
        })?;
        // Of an older generation and beyond where the next one started:
        // part of what that generation's gap says was lost.
        let g = generation::split(&cp.origin).1;
        if let Some(next) = start(g + 1).filter(|&next| cp.size > next) {
            notes_out.push(format!(
                "trusted checkpoint #{} ({} at size {}) reaches past where generation {} started ({next}): entries {next}..{} of it are lost",
                k + 1,
                cp.origin,
                cp.size,
                g + 1,
                cp.size
            ));
            continue;
        }
        if cp.size > n {
            return Err(checkpoint_problem(format!(
                "the log holds {n} entries but you trusted a checkpoint of {}: it was rolled back",
                cp.size
            )));
        }
        if merkle::root(&tree, cp.size).map_err(|e| at(cp.size, e.to_string()))? != cp.root {
            return Err(at(
                cp.size.saturating_sub(1),
                format!(
                    "the log's first {} entries are not those of the checkpoint you trusted: it was rewritten",
                    cp.size
                ),
            ));
        }
    }
    let cosigned_by: Vec<String> = notes
        .last()
        .map(|n| {
            cosigners(n, &opts.witnesses)
                .into_iter()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if cosigned_by.len() < opts.min_witnesses {
        return Err(checkpoint_problem(format!(
            "the newest checkpoint carries valid cosignatures from {} of the named witnesses ({}), fewer than --min-witnesses {}",
            cosigned_by.len(),
            cosigned_by.join(", "),
            opts.min_witnesses
        )));
    }
    let signed_size = last.map_or(0, |(s, _)| s);
    let report = Report {
        entries: n,
        checkpoints: notes.len(),
        signed_size,
        cosigned_by,
        notes: {
            if withheld.entries > 0 {
                notes_out.push(format!(
                    "{} entries are withheld from the resident tracker for at most {} days each (no grant may set more than 180)",
                    withheld.entries, withheld.longest_days
                ));
            }
            notes_out
        },
        gaps,
    };
    let unsigned = if notes.is_empty() {
        Some(format!(
            "no checkpoint signs this log ({n} entries): the checkpoint file is missing or empty, or there is no log here"
        ))
    } else if signed_size < n && opts.strict {
        // Unsigned entries are covered by nothing but their own hash chain
        // and timestamps, which whoever can write the files can rewrite.
        Some(format!(
            "the newest checkpoint signs {signed_size} of {n} entries; with --strict every entry must be signed (verify a stopped gateway's data dir, which signs a final checkpoint, or an export)"
        ))
    } else if signed_size < n {
        let span = times[n as usize - 1] - times[signed_size as usize];
        (span > opts.max_unsigned.as_secs() as i64).then(|| {
            format!(
                "the newest checkpoint signs {signed_size} of {n} entries, and the unsigned ones span {span} s — longer than the gateway takes to sign: newer checkpoints were removed"
            )
        })
    } else {
        None
    };
    match unsigned {
        Some(why) if opts.strict => Err(checkpoint_problem(why)),
        Some(why) => Ok(Outcome::Unsigned(report, why)),
        None => Ok(Outcome::Ok(report)),
    }
}

#[cfg(test)]
mod withheld_tests {
    use super::*;

    fn entry(index: u64, prev: Vec<u8>, held_days: i64) -> Vec<u8> {
        AuditEntry {
            index,
            time: Some(prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 0,
            }),
            prev_leaf_hash: prev,
            disclosed_after: Some(prost_types::Timestamp {
                seconds: 1_800_000_000 + held_days * 86_400,
                nanos: 0,
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// An export shows whether anything was hidden from residents longer
    /// than a grant may allow: the entry itself records until when.
    #[test]
    fn an_entry_withheld_beyond_180_days_is_refused() {
        let first = entry(0, Vec::new(), 90);
        let ok = check_entries(std::slice::from_ref(&first))
            .unwrap()
            .withheld;
        assert_eq!((ok.entries, ok.longest_days), (1, 90));
        let second = entry(1, leaf_hash(&first).to_vec(), 200);
        let Err(err) = check_entries(&[first, second]) else {
            panic!("a 200-day withholding passed");
        };
        assert_eq!(err.index, Some(1));
        assert!(err.reason.contains("200 days"), "{}", err.reason);
    }

    /// A crafted export's times cannot make the check overflow (a panic in
    /// a debug build, a wrapped "in range" in a release one).
    #[test]
    fn withholding_times_out_of_range_are_refused_not_overflowed() {
        let mut e = AuditEntry::decode(entry(0, Vec::new(), 0).as_slice()).unwrap();
        e.time = Some(prost_types::Timestamp {
            seconds: i64::MIN + 5,
            nanos: 0,
        });
        e.disclosed_after = Some(prost_types::Timestamp {
            seconds: i64::MAX - 5,
            nanos: 0,
        });
        let Err(err) = check_entries(&[e.encode_to_vec()]) else {
            panic!("an out-of-range withholding passed");
        };
        assert_eq!(err.index, Some(0));
    }
}
