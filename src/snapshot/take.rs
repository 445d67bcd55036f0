//! Taking a snapshot: the parts, in order, into an encrypted file.
//!
//! 1. `store/<tree>` — every tree of the store, as key-value records. The
//!    caller holds the write gate meanwhile, so no change is half-applied.
//! 2. `pki/<file>` — the keys the gateway signs with (the log key; in the
//!    demo also its dev PKI), never a backup identity (`*.agekey`).
//! 3. `log/checkpoints` — every checkpoint up to the one the caller waited
//!    for (it covers every change the store copy holds). Before the
//!    entries, so a reader checks each one's root as the entries pass by.
//! 4. `log/entries` — entries `0..n`, `n` that checkpoint's size.
//! 5. `manifest` — signed by the log key.
//!
//! The file is encrypted as it is written (age, to the configured
//! recipients only), so no plaintext of it ever touches the disk.

use super::format::{PartWriter, Summary};
use super::manifest::{Manifest, valid_part_name};
use crate::audit::checkpoint::read_notes_upto;
use crate::audit::index::AuditIndex;
use crate::audit::signer::Signed;
use crate::store::Backend;
use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Store records read per scan while copying a tree.
const PAGE: usize = 1024;

/// Passes bytes through and hashes them: the whole file's SHA-256, for the
/// log entry that names it.
struct Hashing<W: Write> {
    out: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

type Encrypted = age::stream::StreamWriter<Hashing<BufWriter<File>>>;

/// A snapshot being written.
pub struct Taker {
    path: PathBuf,
    out: PartWriter<Encrypted>,
    parts: Vec<Summary>,
}

/// A finished snapshot file.
#[derive(Debug)]
pub struct Taken {
    pub sha256: [u8; 32],
    pub bytes: u64,
    pub manifest: Manifest,
}

impl Taker {
    /// Creates `path` (which must not exist; owner-only) encrypted to
    /// `recipients`.
    pub fn create(path: &Path, recipients: &[age::x25519::Recipient]) -> Result<Self> {
        if recipients.is_empty() {
            bail!("no snapshot recipients: set [snapshot] recipients in the configuration");
        }
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        let sink = Hashing {
            out: BufWriter::with_capacity(256 << 10, file),
            hash: Sha256::new(),
            bytes: 0,
        };
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .context("setting up the snapshot's encryption")?;
        let stream = encryptor
            .wrap_output(sink)
            .context("starting the encrypted snapshot")?;
        Ok(Self {
            path: path.to_path_buf(),
            out: PartWriter::new(stream)?,
            parts: Vec::new(),
        })
    }

    /// 1. Every tree of the store. Hold the write gate while this runs.
    pub fn store(&mut self, backend: &dyn Backend) -> Result<()> {
        for tree in backend.trees()? {
            let name = format!("store/{tree}");
            if !valid_part_name(&name) {
                bail!("the store tree '{tree}' cannot be named in a snapshot");
            }
            let mut part = self.out.part(&name)?;
            let mut after: Option<Vec<u8>> = None;
            loop {
                let page = backend.scan(&tree, b"", after.as_deref(), PAGE)?;
                let Some((last, _)) = page.last() else { break };
                let last = last.clone();
                for (k, v) in &page {
                    part.pair(k, v)?;
                }
                after = Some(last);
            }
            self.parts.push(part.end()?);
        }
        Ok(())
    }

    /// 2. The key files of `pki_dir`, except backup identities.
    pub fn keys(&mut self, pki_dir: &Path) -> Result<()> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(pki_dir)
            .with_context(|| format!("reading {}", pki_dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "agekey"))
            .collect();
        files.sort();
        for path in files {
            let file = path.file_name().context("a file name")?.to_string_lossy();
            let name = format!("pki/{file}");
            if !valid_part_name(&name) {
                continue;
            }
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let mut part = self.out.part(&name)?;
            part.bytes(&bytes)?;
            part.one_record();
            self.parts.push(part.end()?);
        }
        Ok(())
    }

    /// 3–4. Every checkpoint up to `checkpoint`, and entries
    /// `0..checkpoint.size`.
    pub fn log(
        &mut self,
        index: &AuditIndex,
        checkpoint_file: &Path,
        checkpoint: &Signed,
    ) -> Result<()> {
        let notes = read_notes_upto(checkpoint_file, &checkpoint.note)?;
        let mut part = self.out.part("log/checkpoints")?;
        for n in &notes {
            part.record(n.as_bytes())?;
        }
        self.parts.push(part.end()?);
        drop(notes);
        let mut part = self.out.part("log/entries")?;
        let mut next = 0u64;
        while next < checkpoint.size {
            let want = (checkpoint.size - next).min(4096) as usize;
            let page = index.entry_bytes(next, want)?;
            if page.is_empty() {
                bail!(
                    "the log's index ends at {next}, before the checkpoint's {}",
                    checkpoint.size
                );
            }
            for (_, bytes) in page {
                part.record(&bytes)?;
                next += 1;
            }
        }
        self.parts.push(part.end()?);
        Ok(())
    }

    /// 5. The manifest, signed by `sign` (the log key); then the file is
    ///    finished and made durable.
    pub fn finish(
        mut self,
        header: Manifest,
        sign: impl FnOnce(&str) -> Result<String>,
    ) -> Result<Taken> {
        let manifest = Manifest {
            parts: std::mem::take(&mut self.parts),
            ..header
        };
        let note = sign(&manifest.text())?;
        let mut part = self.out.part("manifest")?;
        part.bytes(note.as_bytes())?;
        part.one_record();
        part.end()?;
        let stream = self.out.finish()?;
        let mut hashing = stream.finish().context("finishing the encryption")?;
        hashing.flush()?;
        let Hashing { out, hash, bytes } = hashing;
        out.into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()
            .with_context(|| format!("syncing {}", self.path.display()))?;
        Ok(Taken {
            sha256: hash.finalize().into(),
            bytes,
            manifest,
        })
    }
}
