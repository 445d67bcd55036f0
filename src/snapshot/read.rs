//! Reading a snapshot: decrypt, check everything, and hand what it holds
//! to a [`Sink`] — nothing, to inspect it; a new data dir, to restore it.
//!
//! What is checked, all of it before a restore writes a byte (the restore
//! reads the file twice): the file decrypts with the identity, whole (age
//! authenticates every chunk and the end); the parts are well formed; the
//! manifest is signed by the log key (the key in the snapshot, or the one
//! the caller names) and lists exactly the parts read, with their counts,
//! lengths and SHA-256; every entry decodes, sits at its index and links to
//! its predecessor; the entries hash to the manifest's checkpoint, which the
//! log key signed at their count; every earlier checkpoint verifies, none
//! is larger, and the entries hash to each one's root at its size (as
//! `audit verify` checks a log).

use super::format::{PartContent, PartReader, Summary};
use super::manifest::{Manifest, valid_part_name};
use crate::audit::checkpoint::{Checkpoint, LogKey, LogVerifier};
use crate::audit::leaf_hash;
use crate::audit::merkle::Frontier;
use crate::proto::AuditEntry;
use anyhow::{Context, Result, anyhow, bail};
use prost::Message;
use std::io::{BufReader, Read};
use std::path::Path;

/// Where what a snapshot holds goes. Called in the snapshot's order; a
/// restore must not trust anything until [`read`] returns `Ok`.
pub trait Sink {
    fn store(&mut self, tree: &str, pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()>;
    fn key_file(&mut self, name: &str, bytes: &[u8]) -> Result<()>;
    fn entries(&mut self, entries: &[Vec<u8>]) -> Result<()>;
    fn checkpoints(&mut self, notes: &[String]) -> Result<()>;
}

/// Inspection: keeps nothing.
pub struct Discard;

impl Sink for Discard {
    fn store(&mut self, _: &str, _: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        Ok(())
    }
    fn key_file(&mut self, _: &str, _: &[u8]) -> Result<()> {
        Ok(())
    }
    fn entries(&mut self, _: &[Vec<u8>]) -> Result<()> {
        Ok(())
    }
    fn checkpoints(&mut self, _: &[String]) -> Result<()> {
        Ok(())
    }
}

/// A snapshot that checked out.
#[derive(Debug)]
pub struct Checked {
    pub manifest: Manifest,
    /// The log key's verifier key under the manifest's origin.
    pub verifier_key: String,
    /// The root of the tree of its entries.
    pub root: [u8; 32],
}

/// Reads an age identity file (`AGE-SECRET-KEY-1…`, `#` comments allowed).
pub fn identity(path: &Path) -> Result<age::x25519::Identity> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the identity {}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| anyhow!("{} holds no age identity", path.display()))?
        .parse()
        .map_err(|e| anyhow!("{}: not an age X25519 identity: {e}", path.display()))
}

/// Batches of store records handed to the sink.
const BATCH: usize = 1024;

/// Decrypts and checks `file`, handing its contents to `sink`. `pinned`:
/// the log's verifier key as the caller knows it (otherwise the key inside
/// the snapshot is used, and reported for comparison).
pub fn read(
    file: &Path,
    identity: &age::x25519::Identity,
    pinned: Option<&LogVerifier>,
    sink: &mut dyn Sink,
) -> Result<Checked> {
    let input = BufReader::with_capacity(
        256 << 10,
        std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?,
    );
    let decryptor = age::Decryptor::new(input)
        .map_err(|e| anyhow!("it is not an age-encrypted file, or its header is damaged: {e}"))?;
    let plain = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => {
                anyhow!("it is not encrypted to this identity")
            }
            e => anyhow!("its header is damaged: {e}"),
        })?;
    let mut parts = PartReader::new(BufReader::with_capacity(256 << 10, plain))
        .map_err(|e| anyhow!("it is damaged or truncated: {e:#}"))?;
    let mut state = State::default();
    loop {
        let next = parts
            .next_part()
            .map_err(|e| anyhow!("it is damaged or truncated: {e:#}"))?;
        let Some((name, content)) = next else { break };
        if state.manifest_note.is_some() {
            bail!("a part follows its manifest: damaged");
        }
        if !valid_part_name(&name) || state.seen.iter().any(|s| s.name == name) {
            bail!("it holds a part named '{name}' twice, or one that is not a name");
        }
        let summary = state
            .part(name, content, sink)
            .map_err(|e| anyhow!("it is damaged or truncated: {e:#}"))?;
        if let Some(s) = summary {
            state.seen.push(s);
        }
    }
    state.check(pinned)
}

#[derive(Default)]
struct State {
    seen: Vec<Summary>,
    log_key_pem: Option<String>,
    entries: u64,
    frontier: Frontier,
    last_leaf: Option<[u8; 32]>,
    notes: Vec<String>,
    /// The checkpoints' (size, root, number) not yet reached by the
    /// entries, smallest first (their signatures are checked at the end,
    /// with the manifest's key).
    pending: std::collections::VecDeque<(u64, [u8; 32], usize)>,
    manifest_note: Option<String>,
}

impl State {
    /// Reads one part; `None` for the manifest (which lists the others).
    fn part<R: Read>(
        &mut self,
        name: String,
        mut c: PartContent<'_, R>,
        sink: &mut dyn Sink,
    ) -> Result<Option<Summary>> {
        if let Some(tree) = name.strip_prefix("store/") {
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(pair) = c.pair()? {
                batch.push(pair);
                if batch.len() == BATCH {
                    sink.store(tree, std::mem::take(&mut batch))?;
                }
            }
            if !batch.is_empty() {
                sink.store(tree, batch)?;
            }
        } else if let Some(file) = name.strip_prefix("pki/") {
            let mut bytes = Vec::new();
            c.read_to_end(&mut bytes)?;
            c.records = 1;
            if file == crate::audit::checkpoint::KEY_FILE {
                self.log_key_pem =
                    Some(String::from_utf8(bytes.clone()).context("the log key is not PEM")?);
            }
            sink.key_file(file, &bytes)?;
        } else if name == "log/entries" {
            if self.notes.is_empty() {
                bail!("its entries come before its checkpoints");
            }
            let mut batch = Vec::with_capacity(BATCH);
            while let Some(bytes) = c.record()? {
                self.entry(&bytes)?;
                batch.push(bytes);
                if batch.len() == BATCH {
                    sink.entries(&batch)?;
                    batch.clear();
                }
            }
            sink.entries(&batch)?;
        } else if name == "log/checkpoints" {
            while let Some(bytes) = c.record()? {
                let note = String::from_utf8(bytes).context("a checkpoint is not text")?;
                let k = self.notes.len() + 1;
                let cp = Checkpoint::parse_body(&note)
                    .map_err(|e| anyhow!("its checkpoint #{k}: {e}"))?;
                if self.pending.back().is_some_and(|(s, _, _)| *s > cp.size) {
                    bail!("its checkpoint #{k} is out of order");
                }
                self.pending.push_back((cp.size, cp.root, k));
                self.notes.push(note);
            }
            self.reached()?;
            sink.checkpoints(&self.notes)?;
        } else if name == "manifest" {
            let mut bytes = Vec::new();
            c.read_to_end(&mut bytes)?;
            self.manifest_note =
                Some(String::from_utf8(bytes).context("the manifest is not text")?);
            return Ok(None);
        } else {
            bail!("a part '{name}' this build does not know");
        }
        c.finish(name).map(Some)
    }

    /// One entry: it decodes, sits at its index, names its predecessor.
    fn entry(&mut self, bytes: &[u8]) -> Result<()> {
        let i = self.entries;
        let e = AuditEntry::decode(bytes).with_context(|| format!("entry {i} does not decode"))?;
        if e.index != i {
            bail!("the entry at {i} says it is {}", e.index);
        }
        let prev = self.last_leaf.map(|h| h.to_vec()).unwrap_or_default();
        if e.prev_leaf_hash != prev {
            bail!("entry {i} does not link to its predecessor");
        }
        let leaf = leaf_hash(bytes);
        self.frontier.push(leaf);
        self.last_leaf = Some(leaf);
        self.entries += 1;
        self.reached()
    }

    /// The checkpoints of the size the entries have reached: their roots
    /// must be the entries' root there.
    fn reached(&mut self) -> Result<()> {
        while let Some(&(size, root, k)) = self.pending.front() {
            if size != self.entries {
                break;
            }
            if self.frontier.root() != root {
                bail!("its checkpoint #{k} does not match its entries at size {size}");
            }
            self.pending.pop_front();
        }
        Ok(())
    }

    /// Everything the manifest says against what was read.
    fn check(self, pinned: Option<&LogVerifier>) -> Result<Checked> {
        let note = self
            .manifest_note
            .ok_or_else(|| anyhow!("it has no manifest: truncated"))?;
        // The signature line (`— <name> <signature>`) names the origin the
        // manifest is signed under; the text must name the same.
        let signed_by = note
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("\u{2014} "))
            .and_then(|l| l.split(' ').next())
            .ok_or_else(|| anyhow!("its manifest carries no signature"))?
            .to_string();
        let pem = self
            .log_key_pem
            .ok_or_else(|| anyhow!("it holds no log key (pki/audit-log.key)"))?;
        let inside = LogVerifier::parse(&LogKey::from_pem(&pem, &signed_by)?.verifier_key())?;
        let verifier = match pinned {
            Some(p) => {
                let p = p.for_origin(&signed_by)?;
                if p.verifier_key() != inside.verifier_key() {
                    bail!(
                        "its log key is not the one you named (--public-key): it is {}",
                        inside.verifier_key()
                    );
                }
                p
            }
            None => inside,
        };
        let text = verifier
            .open_text(&note)
            .map_err(|e| anyhow!("its manifest is not signed by its log key: {e}"))?;
        let m = Manifest::parse(&text)?;
        if m.origin != signed_by {
            bail!(
                "its manifest names the log '{}' but is signed as '{signed_by}'",
                m.origin
            );
        }
        if m.parts != self.seen {
            let differ = m
                .parts
                .iter()
                .zip(&self.seen)
                .find(|(a, b)| a != b)
                .map_or_else(
                    || format!("{} parts listed, {} read", m.parts.len(), self.seen.len()),
                    |(a, _)| format!("part {} is not what the manifest lists", a.name),
                );
            bail!("it does not hold what its manifest lists: {differ}");
        }
        if m.size != self.entries {
            bail!(
                "its manifest lists {} entries, it holds {}",
                m.size,
                self.entries
            );
        }
        let cp = verifier
            .open(&m.checkpoint)
            .map_err(|e| anyhow!("its checkpoint does not verify: {e}"))?;
        let root = self.frontier.root();
        if cp.size != self.entries || cp.root != root {
            bail!(
                "its entries do not hash to its checkpoint (size {})",
                cp.size
            );
        }
        let mut last = 0;
        for (k, n) in self.notes.iter().enumerate() {
            let c = verifier
                .open_any_generation(n)
                .map_err(|e| anyhow!("its checkpoint #{} does not verify: {e}", k + 1))?;
            if c.size < last || c.size > self.entries {
                bail!(
                    "its checkpoint #{} is out of order or beyond its entries",
                    k + 1
                );
            }
            last = c.size;
        }
        if self.notes.last() != Some(&m.checkpoint) {
            bail!("its checkpoints do not end with the manifest's");
        }
        Ok(Checked {
            verifier_key: verifier.verifier_key(),
            manifest: m,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::format::PartWriter;

    /// Two linked entries.
    fn entries() -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        for i in 0..2u64 {
            let prev = out
                .last()
                .map(|e| leaf_hash(e).to_vec())
                .unwrap_or_default();
            out.push(
                AuditEntry {
                    index: i,
                    prev_leaf_hash: prev,
                    ..Default::default()
                }
                .encode_to_vec(),
            );
        }
        out
    }

    /// The entries, after checkpoints at sizes 0, 1 and 2 with these
    /// roots, read part by part as `read` does.
    fn read_log(roots: [[u8; 32]; 3]) -> Result<()> {
        let mut w = PartWriter::new(Vec::new())?;
        let mut p = w.part("log/checkpoints")?;
        for (size, root) in roots.iter().enumerate() {
            let cp = Checkpoint {
                origin: "test/log".into(),
                size: size as u64,
                root: *root,
            };
            p.record(cp.body().as_bytes())?;
        }
        p.end()?;
        let mut p = w.part("log/entries")?;
        for e in entries() {
            p.record(&e)?;
        }
        p.end()?;
        let bytes = w.finish()?;
        let mut parts = PartReader::new(bytes.as_slice())?;
        let mut state = State::default();
        while let Some((name, content)) = parts.next_part()? {
            state.part(name, content, &mut Discard)?;
        }
        Ok(())
    }

    /// What `audit verify` refuses, inspect and restore refuse too: an
    /// earlier checkpoint whose root is not the entries' root at its size.
    #[test]
    fn every_checkpoints_root_is_checked_against_the_entries() {
        let mut tree = Frontier::default();
        let mut good = [tree.root(); 3];
        for (i, e) in entries().iter().enumerate() {
            tree.push(leaf_hash(e));
            good[i + 1] = tree.root();
        }
        read_log(good).unwrap();
        for wrong in 0..3 {
            let mut roots = good;
            roots[wrong] = [7; 32];
            let err = read_log(roots).unwrap_err().to_string();
            assert!(
                err.contains(&format!("checkpoint #{} does not match", wrong + 1)),
                "{err}"
            );
        }
    }
}
