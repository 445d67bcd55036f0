//! Generations: a log is never rewound (audit-log.md, "Generations").
//!
//! A log that lost its tail — a data dir restored from a snapshot, a disk
//! put back from an old image — cannot extend the tree its witnesses saw
//! without lying. It keeps the entries it still holds (`0..n`, so receipts
//! and proofs up to `n` stay valid) and continues under a new origin,
//! `<origin>/2`, `/3`, …, signed by the same key. Entry `n` records the
//! predecessor's origin, `n`, the root at `n`, what is known to be lost, who
//! started the generation and why; verification follows the chain and
//! reports every gap.
//!
//! A generation is started offline, on a stopped gateway (a restore, or
//! `govshare audit new-generation`): it appends that one entry and signs
//! the first checkpoint of the new origin. The base origin may not end in
//! `/<number>` (configuration refuses it), so every origin names its base
//! and generation unambiguously.

use super::checkpoint::{LogKey, append_note};
use super::segment::{SegmentWriter, frame_into};
use super::{AuditOptions, leaf_hash};
use crate::proto::{AuditDecision, AuditEntry, EntryKind, Generation};
use anyhow::{Context, Result, bail};
use prost::Message;
use std::path::Path;

/// Splits an origin into its base and generation: `x/3` is generation 3 of
/// `x`; an origin without such a suffix is generation 1.
pub fn split(origin: &str) -> (&str, u32) {
    if let Some((base, g)) = origin.rsplit_once('/') {
        let canonical = !g.starts_with('0') && g.bytes().all(|b| b.is_ascii_digit());
        if canonical && !base.is_empty() {
            if let Ok(n) = g.parse::<u32>() {
                if n >= 2 {
                    return (base, n);
                }
            }
        }
    }
    (origin, 1)
}

/// The origin of generation `number` of `base`.
pub fn origin_of(base: &str, number: u32) -> String {
    if number <= 1 {
        base.to_string()
    } else {
        format!("{base}/{number}")
    }
}

/// The file a log behind its witnesses is marked with: it releases no data
/// until the next generation starts, also across restarts.
const BEHIND: &str = "behind-witness";

/// Why the log in `dir` is behind its witnesses, if it is.
pub fn behind(dir: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(dir.join(BEHIND)) {
        Ok(why) => Ok(Some(why.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.join(BEHIND).display())),
    }
}

/// What a caller, a probe and the log are told while the log is behind
/// its witnesses (`why`: which witness saw what).
pub fn behind_message(why: &str) -> String {
    format!(
        "the audit log is behind its witnesses ({why}): it lost its tail (restored by hand, or put back from an old image), and no data is released until an operator starts its next generation: govshare audit new-generation --reason …"
    )
}

/// Marks the log in `dir` as behind its witnesses, durably.
pub fn mark_behind(dir: &Path, why: &str) -> Result<()> {
    super::tiles::replace_file(dir, BEHIND, format!("{why}\n").as_bytes())
}

/// What the operator says about a new generation.
pub struct Start {
    /// What is known to be lost (a witness's larger size, the snapshot's
    /// own entry and everything after it, a checkpoint the operator holds).
    pub lost: String,
    pub started_by: String,
    pub reason: String,
    /// The entry's `method`: the command that started it.
    pub method: &'static str,
}

/// A generation that was started.
#[derive(Debug)]
pub struct Begun {
    pub number: u32,
    pub origin: String,
    /// Entries kept from the predecessor (the generation entry's index).
    pub size: u64,
    /// The new origin's verifier key: what auditors and witnesses now use.
    pub verifier_key: String,
}

/// Starts the next generation of the (stopped) log in `dir`: checks the
/// log as a start would, appends the generation entry at the end of what it
/// holds, signs the new origin's first checkpoint over it, and clears a
/// behind-witness mark.
pub fn begin(
    dir: &Path,
    key_dir: &Path,
    base: &str,
    opts: &AuditOptions,
    start: Start,
) -> Result<Begun> {
    let log = super::Checked::open(dir, key_dir, base)?;
    let size = log.entries;
    if size == 0 {
        bail!(
            "the log in {} is empty: there is nothing to continue",
            dir.display()
        );
    }
    let (_, number) = split(log.key.origin());
    let number = number + 1;
    let origin = origin_of(base, number);
    let root = log.frontier.root();
    let entry = AuditEntry {
        index: size,
        time: Some(crate::base::clock::to_timestamp(crate::base::clock::now())),
        node: opts.node.clone(),
        kind: EntryKind::Admin.into(),
        method: start.method.into(),
        decision: AuditDecision::Allow.into(),
        message: super::bounded::cap(&start.reason),
        prev_leaf_hash: log.last_leaf.map(|h| h.to_vec()).unwrap_or_default(),
        generation: Some(Generation {
            number,
            origin: origin.clone(),
            predecessor_origin: log.key.origin().to_string(),
            size,
            root: root.to_vec(),
            lost: super::bounded::cap(&start.lost),
            started_by: super::bounded::cap(&start.started_by),
            reason: super::bounded::cap(&start.reason),
        }),
        ..Default::default()
    };
    let bytes = entry.encode_to_vec();
    let mut frame = Vec::new();
    frame_into(&mut frame, &bytes);
    let mut segments = SegmentWriter::resume(dir, opts.segment_bytes, size, log.torn)?;
    segments
        .append(&frame, &[0], 1)
        .with_context(|| format!("appending the generation entry to {}", dir.display()))?;
    let mut frontier = log.frontier;
    frontier.push(leaf_hash(&bytes));
    let key: LogKey = log.key.with_origin(&origin);
    append_note(&log.checkpoint_file, &key.sign(size + 1, frontier.root()))?;
    key.write_public(key_dir)?;
    match std::fs::remove_file(dir.join(BEHIND)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("clearing the behind-witness mark"),
    }
    Ok(Begun {
        number,
        origin,
        size,
        verifier_key: key.verifier_key(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_name_their_base_and_generation() {
        assert_eq!(split("govshare.local/audit"), ("govshare.local/audit", 1));
        assert_eq!(split("govshare.local/audit/2"), ("govshare.local/audit", 2));
        assert_eq!(
            split("govshare.local/audit/17"),
            ("govshare.local/audit", 17)
        );
        // Not generations: 1, 0, leading zeros, words.
        for o in ["x/1", "x/0", "x/02", "x/two", "/3", "x/"] {
            assert_eq!(split(o), (o, 1), "{o}");
        }
        assert_eq!(origin_of("x", 1), "x");
        assert_eq!(origin_of("x", 3), "x/3");
    }
}
