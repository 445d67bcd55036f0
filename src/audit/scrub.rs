//! The scrub: re-reads sealed segments in the background — every frame's
//! CRC, and every entry's leaf hash against the level-0 tiles — and reports
//! damage through health (the audit service turns NOT_SERVING), the log and
//! `govshare_audit_scrub_damage`. It never changes a byte.

use super::index::AuditIndex;
use super::merkle::Nodes;
use super::segment::{Damage, scan_frames, segments};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

pub(super) async fn run(dir: PathBuf, index: AuditIndex, every: Duration, ok: watch::Sender<bool>) {
    loop {
        tokio::time::sleep(every).await;
        let (dir, index) = (dir.clone(), index.clone());
        match tokio::task::spawn_blocking(move || scrub(&dir, &index)).await {
            Ok(None) => {
                metrics::gauge!("govshare_audit_scrub_damage").set(0.0);
            }
            Ok(Some(problem)) => {
                tracing::error!(%problem, "the audit scrub found a damaged sealed segment");
                metrics::gauge!("govshare_audit_scrub_damage").set(1.0);
                ok.send_replace(false);
            }
            Err(e) => tracing::error!(error = %e, "the audit scrub failed to run"),
        }
    }
}

/// The first problem in the sealed (not newest) segments, if any.
pub(super) fn scrub(dir: &Path, index: &AuditIndex) -> Option<String> {
    let segs = match segments(dir) {
        Ok(s) => s,
        Err(e) => return Some(e.to_string()),
    };
    let tiled = index.tiles().size();
    for (first, path) in segs.iter().take(segs.len().saturating_sub(1)) {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return Some(format!("{}: {e}", path.display())),
        };
        let frames = scan_frames(&bytes);
        if let Some(d) = frames.damage {
            let why = match d {
                Damage::Incomplete { .. } => "ends in an incomplete frame",
                Damage::Corrupt { why, .. } => why,
            };
            return Some(format!("{} at byte {}: {why}", path.display(), d.at()));
        }
        for (k, payload) in frames.payloads.iter().enumerate() {
            let i = first + k as u64;
            if i >= tiled {
                break;
            }
            match index.tiles().perfect(0, i) {
                Ok(leaf) if leaf == super::leaf_hash(payload) => {}
                Ok(_) => {
                    return Some(format!(
                        "{}: entry {i} no longer hashes to its leaf in the Merkle tree",
                        path.display()
                    ));
                }
                Err(e) => return Some(format!("reading the leaf of entry {i}: {e}")),
            }
        }
    }
    None
}
