//! Segment files: `<first index, 20 digits>.seg`, each a run of frames
//! `[len: u32 LE][crc32c(payload): u32 LE][payload]`, payload = one encoded
//! `AuditEntry`. Only the newest segment is ever appended to.
//!
//! Damage is classified strictly. The only thing a crash can leave is an
//! *incomplete final frame* of the newest segment (the tail of a write that
//! never finished, never acknowledged); everything else — a CRC mismatch, a
//! length out of range, damage in an older segment, a gap between segments
//! — is tampering or rot, reported with file and offset and never "repaired".

use anyhow::{Context, Result, bail};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

pub const HEADER: usize = 8;
/// No entry is anywhere near this; a longer length field is damage.
pub const MAX_FRAME: usize = 16 << 20;

pub fn frame_into(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Where a run of frames stops being valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// The bytes from `at` to the end are a prefix of a frame: a write that
    /// never finished.
    Incomplete { at: u64 },
    /// The frame at `at` is complete but wrong.
    Corrupt { at: u64, why: &'static str },
}

impl Damage {
    pub fn at(&self) -> u64 {
        match self {
            Damage::Incomplete { at } | Damage::Corrupt { at, .. } => *at,
        }
    }
}

/// The frames of one file's bytes: their payloads, and the first damage.
pub struct Frames<'a> {
    pub payloads: Vec<&'a [u8]>,
    /// Byte offset of each payload's frame.
    pub offsets: Vec<u64>,
    pub damage: Option<Damage>,
}

pub fn scan_frames(bytes: &[u8]) -> Frames<'_> {
    let mut out = Frames {
        payloads: Vec::new(),
        offsets: Vec::new(),
        damage: None,
    };
    let mut pos = 0usize;
    while pos < bytes.len() {
        let at = pos as u64;
        let rest = bytes.len() - pos;
        if rest < HEADER {
            out.damage = Some(Damage::Incomplete { at });
            break;
        }
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().expect("4 bytes"));
        if len == 0 {
            // No entry encodes to nothing, and CRC32C of nothing is 0: a
            // run of zero bytes would parse as empty frames. Zeroes to the
            // end of the file are a write that never happened (some file
            // systems zero-fill after a crash) — a torn tail; anything
            // after them is damage.
            out.damage = Some(if bytes[pos..].iter().all(|b| *b == 0) {
                Damage::Incomplete { at }
            } else {
                Damage::Corrupt {
                    at,
                    why: "a frame of length 0",
                }
            });
            break;
        }
        if len > MAX_FRAME {
            out.damage = Some(Damage::Corrupt {
                at,
                why: "the length field is out of range",
            });
            break;
        }
        if rest - HEADER < len {
            // A write cut short ends the file. If a whole, valid frame
            // starts anywhere after this header, the length field was
            // altered instead, and cutting here would destroy entries.
            out.damage = Some(if valid_frame_after(bytes, pos + 1) {
                Damage::Corrupt {
                    at,
                    why: "the length field runs past frames that follow it",
                }
            } else {
                Damage::Incomplete { at }
            });
            break;
        }
        let payload = &bytes[pos + HEADER..pos + HEADER + len];
        if crc32c::crc32c(payload) != crc {
            // A file system may extend the file before the data lands and
            // zero-fill after a crash: zeroes from inside this frame to the
            // end of the file are a write that never finished.
            let zeroes_from = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
            out.damage = Some(if zeroes_from < pos + HEADER + len {
                Damage::Incomplete { at }
            } else {
                Damage::Corrupt {
                    at,
                    why: "the CRC does not match the contents",
                }
            });
            break;
        }
        out.payloads.push(payload);
        out.offsets.push(at);
        pos += HEADER + len;
    }
    out
}

/// Whether a whole frame with a matching CRC starts at or after `from`.
fn valid_frame_after(bytes: &[u8], from: usize) -> bool {
    (from..bytes.len().saturating_sub(HEADER)).any(|q| {
        let len = u32::from_le_bytes(bytes[q..q + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[q + 4..q + 8].try_into().expect("4 bytes"));
        len > 0
            && len <= MAX_FRAME
            && bytes.len() - q - HEADER >= len
            && crc32c::crc32c(&bytes[q + HEADER..q + HEADER + len]) == crc
    })
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

pub fn segment_path(dir: &Path, first_index: u64) -> PathBuf {
    dir.join(format!("{first_index:020}.seg"))
}

/// A problem with the segments, naming file and offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {why} (at byte {offset}); entry {index} would be the first affected", .file.display())]
pub struct SegmentProblem {
    pub file: PathBuf,
    pub offset: u64,
    /// The index of the first entry the problem concerns.
    pub index: u64,
    pub why: String,
}

/// Walks every segment in order, checking each frame and that segments
/// follow each other without a gap. `visit` sees each entry's index, the
/// first index of its segment, its frame offset and its bytes. Returns the number of entries and, when the
/// newest segment ends in an incomplete frame, where it starts.
pub fn walk(
    dir: &Path,
    mut visit: impl FnMut(u64, u64, u64, &[u8]) -> Result<()>,
) -> Result<(u64, Option<(PathBuf, u64)>)> {
    let segs = segments(dir)?;
    let mut next = 0u64;
    let mut torn = None;
    for (i, (first, path)) in segs.iter().enumerate() {
        let newest = i + 1 == segs.len();
        if *first != next {
            return Err(SegmentProblem {
                file: path.clone(),
                offset: 0,
                index: next,
                why: format!("starts at index {first}, but the segments before end at {next}: entries are missing"),
            }
            .into());
        }
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let frames = scan_frames(&bytes);
        for (k, (payload, offset)) in frames.payloads.iter().zip(&frames.offsets).enumerate() {
            visit(first + k as u64, *first, *offset, payload)?;
        }
        next = first + frames.payloads.len() as u64;
        match frames.damage {
            None => {}
            Some(Damage::Incomplete { at }) if newest => torn = Some((path.clone(), at)),
            Some(d) => {
                let why = match d {
                    Damage::Incomplete { .. } => {
                        "an older segment ends in an incomplete frame".to_string()
                    }
                    Damage::Corrupt { why, .. } => format!("a frame is damaged: {why}"),
                };
                return Err(SegmentProblem {
                    file: path.clone(),
                    offset: d.at(),
                    index: next,
                    why,
                }
                .into());
            }
        }
    }
    Ok((next, torn))
}

/// Visits the entries from index `from` on, reading only the segments that
/// hold them. For a log [`walk`] has already checked.
pub fn walk_from(
    dir: &Path,
    from: u64,
    mut visit: impl FnMut(u64, u64, u64, &[u8]) -> Result<()>,
) -> Result<()> {
    let segs = segments(dir)?;
    for (i, (first, path)) in segs.iter().enumerate() {
        if segs.get(i + 1).is_some_and(|(next, _)| *next <= from) {
            continue;
        }
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let frames = scan_frames(&bytes);
        for (k, (payload, offset)) in frames.payloads.iter().zip(&frames.offsets).enumerate() {
            let index = first + k as u64;
            if index >= from {
                visit(index, *first, *offset, payload)?;
            }
        }
    }
    Ok(())
}

/// Every entry's bytes, in order; an incomplete final frame of the newest
/// segment is left out, any other damage is an error.
pub fn read_all(dir: &Path) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    walk(dir, |_, _, _, b| {
        out.push(b.to_vec());
        Ok(())
    })?;
    Ok(out)
}

/// Reads the frame at `offset` of `file`, checking its CRC.
pub fn read_frame(file: &File, offset: u64) -> Result<Vec<u8>> {
    let mut header = [0u8; HEADER];
    file.read_exact_at(&mut header, offset)
        .context("reading an audit frame header")?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    anyhow::ensure!(
        len <= MAX_FRAME,
        "audit frame at {offset}: length out of range"
    );
    let mut payload = vec![0u8; len];
    file.read_exact_at(&mut payload, offset + HEADER as u64)
        .context("reading an audit frame")?;
    anyhow::ensure!(
        crc32c::crc32c(&payload) == crc,
        "audit frame at {offset}: CRC mismatch"
    );
    Ok(payload)
}

/// The newest segment, open for appending.
pub struct SegmentWriter {
    dir: PathBuf,
    file: Option<File>,
    first_index: u64,
    len: u64,
    max_bytes: u64,
    next_index: u64,
}

/// Where a committed batch landed: the segment and each frame's offset.
pub struct Placed {
    pub segment_first: u64,
    pub offsets: Vec<u64>,
}

impl SegmentWriter {
    /// Positions after the last complete entry of a log whose segments were
    /// already checked by [`walk`]: `entries` in all, the newest segment
    /// possibly ending in an incomplete frame at `torn`, which is cut off —
    /// the only change recovery ever makes.
    pub fn resume(
        dir: &Path,
        max_bytes: u64,
        entries: u64,
        torn: Option<(PathBuf, u64)>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if let Some((path, at)) = torn {
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            tracing::warn!(
                segment = %path.display(),
                offset = at,
                "cutting an incomplete final frame left by a crash (it was never acknowledged)"
            );
            f.set_len(at)?;
            f.sync_all()?;
        }
        let mut w = Self {
            dir: dir.into(),
            file: None,
            first_index: entries,
            len: 0,
            max_bytes,
            next_index: entries,
        };
        if let Some((first, path)) = segments(dir)?.pop() {
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            w.len = file.metadata()?.len();
            w.first_index = first;
            w.file = Some(file);
        }
        Ok(w)
    }

    pub fn next_index(&self) -> u64 {
        self.next_index
    }

    /// Appends `count` framed entries and makes them durable. On failure
    /// nothing is acknowledged and the segment is cut back to its last
    /// durable length; the next attempt opens a new segment.
    pub fn append(
        &mut self,
        frames: &[u8],
        offsets: &[u64],
        count: u64,
    ) -> std::io::Result<Placed> {
        if self.file.is_some() && self.len >= self.max_bytes {
            if let Some(old) = self.file.take() {
                old.sync_all()?;
            }
        }
        if self.file.is_none() {
            self.file = Some(self.open_next()?);
            self.first_index = self.next_index;
            self.len = 0;
        }
        let file = self.file.as_mut().expect("opened above");
        let result = file.write_all(frames).and_then(|()| file.sync_data());
        match result {
            Ok(()) => {
                let base = self.len;
                self.len += frames.len() as u64;
                self.next_index += count;
                Ok(Placed {
                    segment_first: self.first_index,
                    offsets: offsets.iter().map(|o| base + o).collect(),
                })
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

    /// A segment named after the next index. No acknowledged entry can be in
    /// it, so whatever a failed attempt left there is discarded.
    fn open_next(&self) -> std::io::Result<File> {
        let path = segment_path(&self.dir, self.next_index);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        file.set_len(0)?;
        File::open(&self.dir)?.sync_all()?;
        Ok(file)
    }

    /// Whether the disk takes writes again, without writing an entry:
    /// writes and syncs a page to a scratch file beside the segments (never
    /// into a segment, where a crash would leave it), removes it, and opens
    /// the next segment. What health uses to recover on its own after a
    /// write failure.
    pub fn probe(&mut self) -> std::io::Result<()> {
        let scratch = self.dir.join("probe.tmp");
        let written = File::create(&scratch)
            .and_then(|mut f| f.write_all(&[0u8; 4096]).and_then(|()| f.sync_data()));
        let _ = std::fs::remove_file(&scratch);
        written?;
        let file = self.open_next()?;
        self.file = Some(file);
        self.first_index = self.next_index;
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_entries(dir: &Path, n: u8, max: u64) {
        let (entries, torn) = walk(dir, |_, _, _, _| Ok(())).unwrap();
        let mut w = SegmentWriter::resume(dir, max, entries, torn).unwrap();
        for i in 0..n {
            let mut buf = Vec::new();
            frame_into(&mut buf, &[i; 20]);
            w.append(&buf, &[0], 1).unwrap();
        }
    }

    #[test]
    fn frames_round_trip_and_only_an_incomplete_final_frame_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        write_entries(dir.path(), 10, 64);
        assert!(
            segments(dir.path()).unwrap().len() > 1,
            "rolls at max_bytes"
        );
        let all = read_all(dir.path()).unwrap();
        assert_eq!(all.len(), 10);
        assert_eq!(all[9], [9u8; 20]);

        // A crash mid-frame on the newest segment.
        let (_, last) = segments(dir.path()).unwrap().pop().unwrap();
        let mut f = OpenOptions::new().append(true).open(&last).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        let (entries, torn) = walk(dir.path(), |_, _, _, _| Ok(())).unwrap();
        assert_eq!(entries, 10);
        assert!(torn.is_some());
        let w = SegmentWriter::resume(dir.path(), 64, entries, torn).unwrap();
        assert_eq!(w.next_index(), 10);
        assert_eq!(read_all(dir.path()).unwrap().len(), 10);
    }

    #[test]
    fn a_bad_frame_anywhere_else_is_damage_with_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        write_entries(dir.path(), 6, 1 << 20);
        let (_, only) = segments(dir.path()).unwrap().remove(0);
        let mut bytes = std::fs::read(&only).unwrap();
        bytes[28 * 2 + 12] ^= 1; // inside entry 2's payload; entries follow
        std::fs::write(&only, &bytes).unwrap();
        let e = walk(dir.path(), |_, _, _, _| Ok(())).unwrap_err();
        let p = e.downcast_ref::<SegmentProblem>().unwrap();
        assert_eq!((p.offset, p.index), (56, 2));
        assert!(p.why.contains("CRC"), "{p}");
    }

    #[test]
    fn a_last_frame_zeroed_to_the_end_of_the_file_is_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        write_entries(dir.path(), 6, 1 << 20);
        let (_, only) = segments(dir.path()).unwrap().remove(0);
        let mut bytes = std::fs::read(&only).unwrap();
        let n = bytes.len();
        bytes[n - 10..].fill(0); // the last frame's data never landed
        std::fs::write(&only, &bytes).unwrap();
        let (entries, torn) = walk(dir.path(), |_, _, _, _| Ok(())).unwrap();
        assert_eq!((entries, torn.is_some()), (5, true));
        // Zeroes followed by data are damage.
        bytes[n - 1] = 7;
        std::fs::write(&only, &bytes).unwrap();
        assert!(walk(dir.path(), |_, _, _, _| Ok(())).is_err());
    }

    #[test]
    fn a_length_enlarged_over_later_frames_is_damage_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        write_entries(dir.path(), 6, 1 << 20);
        let (_, only) = segments(dir.path()).unwrap().remove(0);
        let mut bytes = std::fs::read(&only).unwrap();
        bytes[28 * 2 + 1] = 0x10; // entry 2's length: 20 -> 4116, past the file's end
        std::fs::write(&only, &bytes).unwrap();
        let e = walk(dir.path(), |_, _, _, _| Ok(())).unwrap_err();
        let p = e.downcast_ref::<SegmentProblem>().unwrap();
        assert_eq!(p.offset, 56);
        assert!(p.why.contains("runs past"), "{p}");
        assert_eq!(std::fs::read(&only).unwrap(), bytes, "nothing was cut");
    }

    #[test]
    fn damage_before_the_newest_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write_entries(dir.path(), 4, 30);
        let (_, first) = segments(dir.path()).unwrap().remove(0);
        let mut bytes = std::fs::read(&first).unwrap();
        bytes.truncate(bytes.len() - 3);
        std::fs::write(&first, bytes).unwrap();
        let e = walk(dir.path(), |_, _, _, _| Ok(())).unwrap_err();
        assert!(e.to_string().contains("older segment"), "{e}");
    }
}
