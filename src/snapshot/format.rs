//! The plaintext inside a snapshot's encryption: a magic line, then named
//! parts, each a run of chunks ending in an empty one, then an end mark.
//!
//! ```text
//! "govshare-snapshot/1\n"
//! ( 'P' u16:name-length name  ( u32:length bytes )*  u32:0 )*
//! 'E'
//! ```
//!
//! A part's content is the concatenation of its chunks; what it means is
//! the part's (framed records for store trees, entries and notes; a file's
//! bytes for keys). Every part's SHA-256 and length are in the manifest,
//! the last part, which the log key signs. Chunks let a part be written
//! and read as a stream, whatever its size.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

pub const MAGIC: &[u8] = b"govshare-snapshot/1\n";
const PART: u8 = b'P';
const END: u8 = b'E';
/// Content bytes gathered before a chunk is written.
const CHUNK: usize = 64 << 10;
/// The largest chunk a reader accepts: a damaged length must not make it
/// allocate gigabytes.
const MAX_CHUNK: usize = 1 << 20;
/// The longest part name.
const MAX_NAME: usize = 256;

/// What a part held: its name, records, length and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub name: String,
    pub records: u64,
    pub bytes: u64,
    pub sha256: [u8; 32],
}

/// Writes parts to a plaintext stream.
pub struct PartWriter<W: Write> {
    out: W,
}

/// One part being written: its content, chunked, hashed and counted.
pub struct Part<'a, W: Write> {
    out: &'a mut W,
    name: String,
    buf: Vec<u8>,
    hash: Sha256,
    bytes: u64,
    records: u64,
}

impl<W: Write> PartWriter<W> {
    pub fn new(mut out: W) -> Result<Self> {
        out.write_all(MAGIC)?;
        Ok(Self { out })
    }

    /// Starts a part named `name`.
    pub fn part(&mut self, name: &str) -> Result<Part<'_, W>> {
        if name.is_empty() || name.len() > MAX_NAME {
            bail!("a part name has 1 to {MAX_NAME} bytes: '{name}'");
        }
        self.out.write_all(&[PART])?;
        self.out.write_all(&(name.len() as u16).to_le_bytes())?;
        self.out.write_all(name.as_bytes())?;
        Ok(Part {
            out: &mut self.out,
            name: name.to_string(),
            buf: Vec::with_capacity(CHUNK),
            hash: Sha256::new(),
            bytes: 0,
            records: 0,
        })
    }

    /// Ends the stream and returns what it was written to.
    pub fn finish(mut self) -> Result<W> {
        self.out.write_all(&[END])?;
        Ok(self.out)
    }
}

impl<W: Write> Part<'_, W> {
    /// Appends raw content (a file's bytes).
    pub fn bytes(&mut self, b: &[u8]) -> Result<()> {
        self.hash.update(b);
        self.bytes += b.len() as u64;
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends one framed record: `u32 length, bytes`.
    pub fn record(&mut self, r: &[u8]) -> Result<()> {
        self.bytes(&(u32::try_from(r.len()).context("a record over 4 GiB")?).to_le_bytes())?;
        self.bytes(r)?;
        self.records += 1;
        Ok(())
    }

    /// Appends a key-value record: two framed fields, one record.
    pub fn pair(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        self.record(k)?;
        self.record(v)?;
        self.records -= 1;
        Ok(())
    }

    /// Counts a part of raw bytes (a file) as one record.
    pub fn one_record(&mut self) {
        self.records = 1;
    }

    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.out.write_all(&(self.buf.len() as u32).to_le_bytes())?;
            self.out.write_all(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }

    /// Ends the part.
    pub fn end(mut self) -> Result<Summary> {
        self.flush()?;
        self.out.write_all(&0u32.to_le_bytes())?;
        Ok(Summary {
            name: std::mem::take(&mut self.name),
            records: self.records,
            bytes: self.bytes,
            sha256: std::mem::take(&mut self.hash).finalize().into(),
        })
    }
}

/// Reads parts from a plaintext stream.
pub struct PartReader<R: Read> {
    input: R,
}

/// One part being read: its content, across chunks, hashed as it is read.
pub struct PartContent<'a, R: Read> {
    input: &'a mut R,
    left_in_chunk: usize,
    done: bool,
    hash: Sha256,
    bytes: u64,
    pub records: u64,
}

impl<R: Read> PartReader<R> {
    pub fn new(mut input: R) -> Result<Self> {
        let mut magic = [0u8; MAGIC.len()];
        input
            .read_exact(&mut magic)
            .context("it does not start like a govshare snapshot")?;
        if magic != MAGIC {
            bail!("it is not a govshare snapshot of a version this build reads");
        }
        Ok(Self { input })
    }

    /// The next part's name and content, or `None` at the end mark.
    pub fn next_part(&mut self) -> Result<Option<(String, PartContent<'_, R>)>> {
        let mut tag = [0u8; 1];
        self.input
            .read_exact(&mut tag)
            .context("it ends before its end mark: truncated")?;
        match tag[0] {
            END => {
                let mut extra = [0u8; 1];
                if self.input.read(&mut extra)? != 0 {
                    bail!("bytes follow its end mark");
                }
                Ok(None)
            }
            PART => {
                let mut len = [0u8; 2];
                self.input.read_exact(&mut len)?;
                let len = u16::from_le_bytes(len) as usize;
                if len == 0 || len > MAX_NAME {
                    bail!("a part name of {len} bytes: damaged");
                }
                let mut name = vec![0u8; len];
                self.input.read_exact(&mut name)?;
                let name = String::from_utf8(name).context("a part name is not UTF-8: damaged")?;
                Ok(Some((
                    name,
                    PartContent {
                        input: &mut self.input,
                        left_in_chunk: 0,
                        done: false,
                        hash: Sha256::new(),
                        bytes: 0,
                        records: 0,
                    },
                )))
            }
            t => bail!("byte {t:#04x} where a part or the end was expected: damaged"),
        }
    }
}

impl<R: Read> Read for PartContent<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        if self.left_in_chunk == 0 {
            let mut len = [0u8; 4];
            self.input.read_exact(&mut len)?;
            let len = u32::from_le_bytes(len) as usize;
            if len == 0 {
                self.done = true;
                return Ok(0);
            }
            if len > MAX_CHUNK {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a chunk of {len} bytes: damaged"),
                ));
            }
            self.left_in_chunk = len;
        }
        let want = buf.len().min(self.left_in_chunk);
        let n = self.input.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.left_in_chunk -= n;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<R: Read> PartContent<'_, R> {
    /// The next framed record, or `None` at the part's end.
    pub fn record(&mut self) -> Result<Option<Vec<u8>>> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            let n = self.read(&mut len[got..])?;
            if n == 0 {
                if got == 0 {
                    return Ok(None);
                }
                bail!("a record's length is cut: damaged");
            }
            got += n;
        }
        let len = u32::from_le_bytes(len) as usize;
        let mut r = Vec::with_capacity(len.min(MAX_CHUNK));
        (&mut *self).take(len as u64).read_to_end(&mut r)?;
        if r.len() != len {
            bail!("a record is cut: damaged");
        }
        self.records += 1;
        Ok(Some(r))
    }

    /// The next key-value record, or `None` at the part's end.
    pub fn pair(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        let Some(k) = self.record()? else {
            return Ok(None);
        };
        let v = self.record()?.context("a key without its value: damaged")?;
        self.records -= 1;
        Ok(Some((k, v)))
    }

    /// Reads the rest of the part and returns its summary.
    pub fn finish(mut self, name: String) -> Result<Summary> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(Summary {
            name,
            records: self.records,
            bytes: self.bytes,
            sha256: std::mem::take(&mut self.hash).finalize().into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip_with_their_summaries() {
        let mut w = PartWriter::new(Vec::new()).unwrap();
        let mut p = w.part("store/population").unwrap();
        for i in 0..10_000u32 {
            p.pair(&i.to_be_bytes(), &[7u8; 30]).unwrap();
        }
        let a = p.end().unwrap();
        let mut p = w.part("pki/audit-log.key").unwrap();
        p.bytes(b"key").unwrap();
        p.one_record();
        let b = p.end().unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(a.records, 10_000);

        let mut r = PartReader::new(bytes.as_slice()).unwrap();
        let (name, mut c) = r.next_part().unwrap().unwrap();
        assert_eq!(name, "store/population");
        let mut n = 0u32;
        while let Some((k, v)) = c.pair().unwrap() {
            assert_eq!(k, n.to_be_bytes());
            assert_eq!(v.len(), 30);
            n += 1;
        }
        assert_eq!(c.finish(name).unwrap(), a);
        let (name, mut c) = r.next_part().unwrap().unwrap();
        let mut content = Vec::new();
        c.read_to_end(&mut content).unwrap();
        c.records = 1;
        assert_eq!(content, b"key");
        assert_eq!(c.finish(name).unwrap(), b);
        assert!(r.next_part().unwrap().is_none());
    }

    #[test]
    fn a_cut_stream_is_an_error_not_an_end() {
        let mut w = PartWriter::new(Vec::new()).unwrap();
        let mut p = w.part("log/entries").unwrap();
        p.record(b"entry").unwrap();
        p.end().unwrap();
        let bytes = w.finish().unwrap();
        for cut in 0..bytes.len() {
            let read = || -> Result<()> {
                let mut r = PartReader::new(&bytes[..cut])?;
                while let Some((name, mut c)) = r.next_part()? {
                    while c.record()?.is_some() {}
                    c.finish(name)?;
                }
                Ok(())
            };
            assert!(read().is_err(), "cut at {cut} read as whole");
        }
    }
}
