//! Segment files: `<first index, 20 digits>.seg`, each a run of frames
//! `[len: u32 LE][crc32c(payload): u32 LE][payload]`, payload = one encoded
//! `AuditEntry`. Only the newest segment is ever appended to.

use anyhow::{Context, Result, bail};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const HEADER: usize = 8;
/// No entry is anywhere near this; a larger length is a torn or corrupt frame.
const MAX_FRAME: usize = 16 << 20;

pub fn frame_into(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// The frames of one segment's bytes, and the length of its valid prefix.
/// Stops at the first incomplete or mismatching frame.
pub fn parse_frames(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut frames = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= HEADER {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
        if len > MAX_FRAME || bytes.len() - pos - HEADER < len {
            break;
        }
        let payload = &bytes[pos + HEADER..pos + HEADER + len];
        if crc32c::crc32c(payload) != crc {
            break;
        }
        frames.push(payload);
        pos += HEADER + len;
    }
    (frames, pos)
}

/// Segment paths in `dir`, ordered, with their first index.
pub fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = e?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                bail!("audit segment {} is not a regular file", path.display());
            }
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Every entry's bytes, in order. A torn tail on the newest segment (a crash
/// mid-write) ends the log; damage anywhere else is an error.
pub fn read_all(dir: &Path) -> Result<Vec<Vec<u8>>> {
    read_from(dir, 0)
}

/// Entries from index `from` on, reading only the segments that hold them,
/// with the same checks as [`read_all`]: segments must follow each other
/// without a gap, and only the newest may end in a torn frame.
pub fn read_from(dir: &Path, from: u64) -> Result<Vec<Vec<u8>>> {
    let segs = segments(dir)?;
    let mut out = Vec::new();
    let mut next: Option<u64> = None;
    for (i, (first, path)) in segs.iter().enumerate() {
        if segs.get(i + 1).is_some_and(|(n, _)| *n <= from) {
            continue;
        }
        let expected = next.unwrap_or((*first).min(from));
        if *first != expected {
            bail!(
                "segment {} starts at index {first}, expected {expected}",
                path.display()
            );
        }
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let (frames, good) = parse_frames(&bytes);
        if good != bytes.len() && i + 1 != segs.len() {
            bail!("segment {} is damaged at byte {good}", path.display());
        }
        next = Some(first + frames.len() as u64);
        for (k, f) in frames.into_iter().enumerate() {
            if first + k as u64 >= from {
                out.push(f.to_vec());
            }
        }
    }
    Ok(out)
}

pub fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}.seg"))
}

/// The newest segment, open for appending.
pub struct SegmentWriter {
    dir: PathBuf,
    file: Option<File>,
    len: u64,
    max_bytes: u64,
    next_index: u64,
    last_leaf: Option<[u8; 32]>,
}

impl SegmentWriter {
    /// Opens `dir`, truncates a torn tail of the newest segment and positions
    /// after the last complete entry.
    pub fn recover(dir: &Path, max_bytes: u64) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let segs = segments(dir)?;
        let Some((first, path)) = segs.last() else {
            return Ok(Self {
                dir: dir.into(),
                file: None,
                len: 0,
                max_bytes,
                next_index: 0,
                last_leaf: None,
            });
        };
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let (frames, good) = parse_frames(&bytes);
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        if good != bytes.len() {
            tracing::warn!(
                segment = %path.display(),
                torn_bytes = bytes.len() - good,
                "truncating a torn audit-log tail left by a crash"
            );
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        let mut last_leaf = frames.last().map(|f| super::leaf_hash(f));
        // A segment opened after a failed write may be empty: the chain
        // continues from the newest entry in an older one.
        for (_, older) in segs.iter().rev().skip(1) {
            if last_leaf.is_some() {
                break;
            }
            let bytes =
                std::fs::read(older).with_context(|| format!("reading {}", older.display()))?;
            last_leaf = parse_frames(&bytes).0.last().map(|f| super::leaf_hash(f));
        }
        Ok(Self {
            dir: dir.into(),
            file: Some(file),
            len: good as u64,
            max_bytes,
            next_index: first + frames.len() as u64,
            last_leaf,
        })
    }

    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Leaf hash of the newest durable entry (`None` for an empty log).
    pub fn last_leaf(&self) -> Option<[u8; 32]> {
        self.last_leaf
    }

    /// Appends `count` framed entries and makes them durable. On failure
    /// nothing is acknowledged and the segment is cut back to its last
    /// durable length; the next attempt opens a new segment.
    pub fn append(
        &mut self,
        frames: &[u8],
        count: u64,
        last_leaf: [u8; 32],
    ) -> std::io::Result<()> {
        if self.file.is_some() && self.len >= self.max_bytes {
            if let Some(old) = self.file.take() {
                old.sync_all()?;
            }
        }
        if self.file.is_none() {
            // No acknowledged entry can be in a segment named after the next
            // index, so whatever a failed attempt left there is discarded.
            let path = segment_path(&self.dir, self.next_index);
            let file = OpenOptions::new().create(true).append(true).open(&path)?;
            file.set_len(0)?;
            File::open(&self.dir)?.sync_all()?;
            self.file = Some(file);
            self.len = 0;
        }
        let file = self.file.as_mut().expect("opened above");
        let result = file.write_all(frames).and_then(|()| file.sync_data());
        match result {
            Ok(()) => {
                self.len += frames.len() as u64;
                self.next_index += count;
                self.last_leaf = Some(last_leaf);
                Ok(())
            }
            Err(e) => {
                // Cut back what this batch may have written, and start the
                // next batch in a fresh segment: the device under this one
                // may be gone or full.
                let _ = file.set_len(self.len);
                self.file = None;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::recover(dir.path(), 64).unwrap();
        for i in 0..10u8 {
            let mut buf = Vec::new();
            frame_into(&mut buf, &[i; 20]);
            w.append(&buf, 1, [0; 32]).unwrap();
        }
        assert!(
            segments(dir.path()).unwrap().len() > 1,
            "rolls at max_bytes"
        );
        let all = read_all(dir.path()).unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[9], [9u8; 20]);

        // Simulate a crash mid-frame on the newest segment.
        let (_, last) = segments(dir.path()).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let w = SegmentWriter::recover(dir.path(), 64).unwrap();
        assert_eq!(w.next_index(), 10);
        assert_eq!(read_all(dir.path()).unwrap().len(), 10);
    }

    #[test]
    fn damage_before_the_newest_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = SegmentWriter::recover(dir.path(), 30).unwrap();
        for i in 0..4u8 {
            let mut buf = Vec::new();
            frame_into(&mut buf, &[i; 24]);
            w.append(&buf, 1, [0; 32]).unwrap();
        }
        let (_, first) = segments(dir.path()).unwrap().remove(0);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&first, bytes).unwrap();
        assert!(
            read_all(dir.path())
                .unwrap_err()
                .to_string()
                .contains("damaged")
        );
    }
}
