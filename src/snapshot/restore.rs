//! Writing a checked snapshot into a new data dir: the store's trees, the
//! key files, the log's segments and checkpoint file — exactly what the
//! snapshot holds, nothing derived (the log's index is rebuilt on start).

use super::read::Sink;
use crate::audit::segment::{SegmentWriter, frame_into};
use crate::store::Backend;
use anyhow::{Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a restore writes.
pub struct Restoring {
    store: Arc<dyn Backend>,
    audit_dir: PathBuf,
    pki_dir: PathBuf,
    segments: SegmentWriter,
}

impl Restoring {
    /// Writes into `store` (a new, empty backend), `audit_dir` and
    /// `pki_dir` (new, empty directories), rolling segments at
    /// `segment_bytes` as the gateway will.
    pub fn new(
        store: Arc<dyn Backend>,
        audit_dir: &Path,
        pki_dir: &Path,
        segment_bytes: u64,
    ) -> Result<Self> {
        std::fs::create_dir_all(pki_dir)
            .with_context(|| format!("creating {}", pki_dir.display()))?;
        Ok(Self {
            store,
            segments: SegmentWriter::resume(audit_dir, segment_bytes, 0, None)?,
            audit_dir: audit_dir.to_path_buf(),
            pki_dir: pki_dir.to_path_buf(),
        })
    }

    /// Makes the store durable.
    pub fn finish(self) -> Result<()> {
        self.store.sync()
    }
}

impl Sink for Restoring {
    fn store(&mut self, tree: &str, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        self.store
            .apply_batch(tree, pairs.into_iter().map(|(k, v)| (k, Some(v))).collect())
    }

    fn key_file(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        crate::base::files::write_secret_file(&self.pki_dir.join(name), bytes)
    }

    fn entries(&mut self, entries: &[Vec<u8>]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut frames = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for e in entries {
            offsets.push(frames.len() as u64);
            frame_into(&mut frames, e);
        }
        self.segments
            .append(&frames, &offsets, entries.len() as u64)
            .context("writing the log's segments")?;
        Ok(())
    }

    fn checkpoints(&mut self, notes: &[String]) -> Result<()> {
        let path = self.audit_dir.join("checkpoints.log");
        let mut frames = Vec::new();
        for n in notes {
            frame_into(&mut frames, n.as_bytes());
        }
        let mut f =
            std::fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
        f.write_all(&frames)?;
        f.sync_all()?;
        Ok(())
    }
}
