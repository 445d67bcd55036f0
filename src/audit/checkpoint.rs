//! Checkpoints: C2SP `tlog-checkpoint` bodies (origin, tree size, base64
//! root) in C2SP `signed-note`s, signed by the log's Ed25519 key and
//! cosigned by witnesses (C2SP `tlog-cosignature`, `cosignature/v1`).
//!
//! Note parsing, signing and verification are the `signed_note` crate's (a
//! port of Go's `sumdb/note`, with the spec's rule that a known key's bad
//! signature rejects the whole note). It has no cosignature type, so
//! [`CosignatureKey`] and [`CosignatureVerifier`] add `cosignature/v1`
//! through its `Signer`/`Verifier` traits.
//!
//! `<audit dir>/checkpoints.log` holds every checkpoint in order, framed like
//! the segments. It is read strictly: any damaged frame — complete or not —
//! is reported with its offset, never dropped as a "torn tail".

use super::merkle::Hash;
use super::segment::{Damage, frame_into, scan_frames};
use anyhow::{Context, Result, anyhow, bail};
use data_encoding::{BASE64, HEXLOWER};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use signed_note::{Note, Signature, StandardVerifier, VerifierList};
use std::io::Write;
use std::path::{Path, PathBuf};

const ED25519: u8 = 0x01;
const COSIGNATURE_V1: u8 = 0x04;

/// A checkpoint's signed content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            BASE64.encode(&self.root)
        )
    }

    /// Parses a checkpoint body strictly: decimal size without leading
    /// zeros, base64 of exactly 32 bytes.
    pub fn parse_body(text: &str) -> Result<Self, String> {
        let mut lines = text.lines();
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or("no origin line")?;
        let size_line = lines.next().ok_or("no size line")?;
        if size_line.is_empty()
            || !size_line.bytes().all(|b| b.is_ascii_digit())
            || (size_line.len() > 1 && size_line.starts_with('0'))
        {
            return Err("the size line is not a decimal number".into());
        }
        let size = size_line.parse().map_err(|_| "the size is out of range")?;
        let root = lines
            .next()
            .and_then(|l| BASE64.decode(l.as_bytes()).ok())
            .and_then(|r| r.try_into().ok())
            .ok_or("the root line is not a base64 SHA-256 hash")?;
        Ok(Self {
            origin: origin.into(),
            size,
            root,
        })
    }
}

fn key_id(name: &str, alg: u8, public: &[u8; 32]) -> u32 {
    let mut k = vec![alg];
    k.extend_from_slice(public);
    signed_note::key_id(name, &k)
}

fn vkey(name: &str, alg: u8, public: &[u8; 32]) -> String {
    let mut encoded = vec![alg];
    encoded.extend_from_slice(public);
    format!(
        "{name}+{}+{}",
        HEXLOWER.encode(&key_id(name, alg, public).to_be_bytes()),
        BASE64.encode(&encoded)
    )
}

/// Loads an Ed25519 key (PKCS#8 PEM) from `path`, creating it when absent.
pub fn load_or_create_key(path: &Path) -> Result<SigningKey> {
    if path.exists() {
        let pem =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        return SigningKey::from_pkcs8_pem(&pem).map_err(|e| anyhow!("{}: {e}", path.display()));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| anyhow!("encoding a key: {e}"))?;
    crate::base::files::write_secret_file(path, &pem)?;
    Ok(key)
}

/// The log's signing key; its name is the log's origin.
pub struct LogKey {
    name: String,
    key: SigningKey,
}

impl signed_note::Signer for LogKey {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        key_id(&self.name, ED25519, &self.key.verifying_key().to_bytes())
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

/// The log key's file in a key directory.
pub const KEY_FILE: &str = "audit-log.key";

impl LogKey {
    /// Loads `audit-log.key` from `dir`, creating it (and `audit-log.pub`)
    /// on first start.
    pub fn load_or_create(dir: &Path, origin: &str) -> Result<Self> {
        let key = load_or_create_key(&dir.join(KEY_FILE))?;
        let me = Self {
            name: origin.into(),
            key,
        };
        me.write_public(dir)?;
        Ok(me)
    }

    /// Loads the key of an existing log; never makes one: a log that
    /// continued under a new key would not verify, and must not start.
    pub fn load(dir: &Path, origin: &str) -> Result<Self> {
        let path = dir.join(KEY_FILE);
        if !path.exists() {
            bail!(
                "{} is missing: the log's checkpoints are signed with a key this data dir no longer holds (put the key back; a new key would not verify the log)",
                path.display()
            );
        }
        Ok(Self {
            name: origin.into(),
            key: load_or_create_key(&path)?,
        })
    }

    /// The key in a PEM text (a snapshot's copy of `audit-log.key`).
    pub fn from_pem(pem: &str, origin: &str) -> Result<Self> {
        Ok(Self {
            name: origin.into(),
            key: SigningKey::from_pkcs8_pem(pem).map_err(|e| anyhow!("the log key: {e}"))?,
        })
    }

    /// Writes `audit-log.pub`, the verifier key of the current origin.
    pub fn write_public(&self, dir: &Path) -> Result<()> {
        let public = dir.join("audit-log.pub");
        std::fs::write(&public, format!("{}\n", self.verifier_key()))
            .with_context(|| format!("writing {}", public.display()))
    }

    /// The same key under another origin (a later generation of the log).
    pub fn with_origin(&self, origin: &str) -> Self {
        Self {
            name: origin.into(),
            key: self.key.clone(),
        }
    }

    pub fn origin(&self) -> &str {
        &self.name
    }

    /// A signed note of any text (a snapshot's manifest), under the log's
    /// current origin.
    pub fn sign_text(&self, text: &str) -> Result<String> {
        let mut note =
            Note::new(text.as_bytes(), &[]).map_err(|e| anyhow!("not a note text: {e}"))?;
        note.add_sigs(&[self])
            .map_err(|e| anyhow!("signing a note: {e}"))?;
        String::from_utf8(note.to_bytes()).context("notes are UTF-8")
    }

    /// The `signed-note` verifier key string.
    pub fn verifier_key(&self) -> String {
        vkey(&self.name, ED25519, &self.key.verifying_key().to_bytes())
    }

    /// A signed note of a checkpoint of this log.
    pub fn sign(&self, size: u64, root: Hash) -> String {
        let body = Checkpoint {
            origin: self.name.clone(),
            size,
            root,
        }
        .body();
        let mut note = Note::new(body.as_bytes(), &[]).expect("a checkpoint body is a note text");
        note.add_sigs(&[self])
            .expect("the origin is a valid key name");
        String::from_utf8(note.to_bytes()).expect("notes are UTF-8")
    }
}

/// Verifies the log's signature on notes.
#[derive(Clone)]
pub struct LogVerifier {
    name: String,
    public: [u8; 32],
    verifier: StandardVerifier,
}

impl LogVerifier {
    pub fn parse(vkey: &str) -> Result<Self> {
        let vkey = vkey.trim();
        let verifier = StandardVerifier::new(vkey)
            .map_err(|e| anyhow!("not an Ed25519 signed-note verifier key: {e}"))?;
        // name+hash+key: the name has no '+', the base64 key may.
        let public = vkey
            .splitn(3, '+')
            .nth(2)
            .and_then(|b| BASE64.decode(b.as_bytes()).ok())
            .filter(|k| k.len() == 33 && k[0] == ED25519)
            .and_then(|k| <[u8; 32]>::try_from(&k[1..]).ok())
            .ok_or_else(|| anyhow!("not an Ed25519 signed-note verifier key"))?;
        Ok(Self {
            name: signed_note::Verifier::name(&verifier).to_string(),
            public,
            verifier,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key string (`name+id+key`).
    pub fn verifier_key(&self) -> String {
        vkey(&self.name, ED25519, &self.public)
    }

    /// The same key under another origin: the log's key signs every
    /// generation, each under its own name.
    pub fn for_origin(&self, origin: &str) -> Result<Self> {
        Self::parse(&vkey(origin, ED25519, &self.public))
    }

    /// Verifies a checkpoint of any generation of this key's log: the note's
    /// origin names the generation, and the signature must be the key's
    /// under that name.
    pub fn open_any_generation(&self, note: &str) -> Result<Checkpoint, String> {
        let origin = note.lines().next().unwrap_or_default();
        let (base, _) = super::generation::split(&self.name);
        if super::generation::split(origin).0 != base {
            return Err(format!(
                "origin '{}' is not a generation of the log '{base}'",
                crate::base::text::cap_for_message(origin)
            ));
        }
        self.for_origin(origin)
            .map_err(|e| format!("{e:#}"))?
            .open(note)
    }

    /// Verifies a note's log signature and returns its text (a snapshot's
    /// manifest, or a checkpoint body).
    pub fn open_text(&self, note: &str) -> Result<String, String> {
        let parsed =
            Note::from_bytes(note.as_bytes()).map_err(|e| format!("not a signed note: {e}"))?;
        let list = VerifierList::new(vec![Box::new(self.verifier.clone())]);
        parsed
            .verify(&list)
            .map_err(|e| format!("no valid signature by the log key '{}': {e}", self.name))?;
        String::from_utf8(parsed.text().to_vec()).map_err(|_| "the note is not UTF-8".into())
    }

    /// Verifies a note's log signature and parses its checkpoint body.
    /// Other signatures (cosignatures) are left for [`cosigners`].
    pub fn open(&self, note: &str) -> Result<Checkpoint, String> {
        let text = self.open_text(note)?;
        let c = Checkpoint::parse_body(&text)?;
        if c.origin != self.name {
            return Err(format!(
                "origin '{}' is not the log '{}'",
                c.origin, self.name
            ));
        }
        Ok(c)
    }
}

/// A witness's key: signs `cosignature/v1` lines.
pub struct CosignatureKey {
    name: String,
    key: SigningKey,
}

/// The message a `cosignature/v1` signs: a header line, a timestamp line,
/// then the checkpoint body.
fn cosigned_message(timestamp: u64, body: &[u8]) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    m.extend_from_slice(body);
    m
}

impl CosignatureKey {
    pub fn new(name: &str, key: SigningKey) -> Result<Self> {
        if !signed_note::is_key_name_valid(name) {
            bail!("'{name}' is not a key name (no spaces or '+')");
        }
        Ok(Self {
            name: name.into(),
            key,
        })
    }

    pub fn verifier_key(&self) -> String {
        vkey(
            &self.name,
            COSIGNATURE_V1,
            &self.key.verifying_key().to_bytes(),
        )
    }

    /// The cosignature line for a checkpoint body, at `timestamp` (Unix
    /// seconds, never zero).
    pub fn cosign(&self, body: &str, timestamp: u64) -> String {
        let sig = self.key.sign(&cosigned_message(timestamp, body.as_bytes()));
        let mut blob = timestamp.to_be_bytes().to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        let id = key_id(
            &self.name,
            COSIGNATURE_V1,
            &self.key.verifying_key().to_bytes(),
        );
        let line = Signature::new(self.name.clone(), id, blob).expect("a valid key name");
        String::from_utf8(line.to_bytes()).expect("UTF-8")
    }
}

/// Verifies one witness's `cosignature/v1` lines.
#[derive(Clone)]
pub struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl PartialEq for CosignatureVerifier {
    /// The same witness: the same key. A `cosignature/v1` signs the time
    /// and the body, not the witness's name, so one key under two names is
    /// still one witness.
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl signed_note::Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    /// `sig` is the 8-byte big-endian timestamp and the Ed25519 signature.
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = <[u8; 72]>::try_from(sig) else {
            return false;
        };
        let timestamp = u64::from_be_bytes(sig[..8].try_into().expect("8 bytes"));
        if timestamp == 0 || timestamp > i64::MAX as u64 {
            return false;
        }
        let s = ed25519_dalek::Signature::from_bytes(sig[8..].try_into().expect("64 bytes"));
        self.key
            .verify_strict(&cosigned_message(timestamp, msg), &s)
            .is_ok()
    }
}

impl CosignatureVerifier {
    /// From a witness's verifier key `name+id+base64(0x04 ‖ key)`.
    pub fn parse(vkey: &str) -> Result<Self> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("a witness key is NAME+KEYID+BASE64KEY");
        };
        let raw = BASE64
            .decode(key.as_bytes())
            .context("the witness key is not base64")?;
        if raw.len() != 33 || raw[0] != COSIGNATURE_V1 {
            bail!("the witness key is not a cosignature/v1 (0x04) Ed25519 key");
        }
        let public: [u8; 32] = raw[1..].try_into().expect("32 bytes");
        let id_given = HEXLOWER
            .decode(id.as_bytes())
            .ok()
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_be_bytes)
            .context("the witness key id is not 8 hex digits")?;
        let me = Self::from_parts(name, public)?;
        if me.id != id_given {
            bail!("the witness key id does not match its name and key");
        }
        Ok(me)
    }

    /// From a name and a raw Ed25519 public key.
    pub fn from_parts(name: &str, public: [u8; 32]) -> Result<Self> {
        if !signed_note::is_key_name_valid(name) {
            bail!("'{name}' is not a key name");
        }
        Ok(Self {
            name: name.into(),
            id: key_id(name, COSIGNATURE_V1, &public),
            key: VerifyingKey::from_bytes(&public).context("not an Ed25519 public key")?,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The witnesses among `witnesses` whose cosignature on `note` verifies.
pub fn cosigners<'a>(note: &str, witnesses: &'a [CosignatureVerifier]) -> Vec<&'a str> {
    let Ok(parsed) = Note::from_bytes(note.as_bytes()) else {
        return Vec::new();
    };
    witnesses
        .iter()
        .filter(|w| {
            parsed
                .verify(&VerifierList::new(vec![Box::new((*w).clone())]))
                .is_ok()
        })
        .map(|w| w.name.as_str())
        .collect()
}

/// The signature lines of `lines` (a witness's answer) that are valid
/// cosignatures of `note` by `witness` — and nothing else. A witness's
/// answer is kept only this far: any other line it sent (a bogus line in
/// another witness's name, placed first, would make a verifier reject that
/// witness's real cosignature) never reaches the stored note.
pub fn own_cosignatures(note: &str, lines: &str, witness: &CosignatureVerifier) -> String {
    lines
        .lines()
        .filter(|line| {
            add_signature_lines(note, &format!("{line}\n"))
                .is_ok_and(|n| !cosigners(&n, std::slice::from_ref(witness)).is_empty())
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Appends signature lines (cosignatures a witness returned) to a note;
/// every line must be a well-formed signature line.
pub fn add_signature_lines(note: &str, lines: &str) -> Result<String> {
    let full = format!("{note}{lines}");
    let parsed = Note::from_bytes(full.as_bytes())
        .map_err(|e| anyhow!("the signature lines are malformed: {e}"))?;
    Ok(String::from_utf8(parsed.to_bytes()).expect("notes are UTF-8"))
}

/// The tree size a note states (0 if unreadable), without verifying it.
pub fn note_size(note: &str) -> u64 {
    note.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
}

/// Damage in the checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: checkpoint frame at byte {offset}: {why}", .file.display())]
pub struct CheckpointDamage {
    pub file: PathBuf,
    pub offset: u64,
    pub why: String,
}

/// Every note of a checkpoint file, in order. A missing file is `Ok(None)`;
/// any damaged frame is an error naming its offset.
pub fn read_notes(path: &Path) -> Result<Option<Vec<String>>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let frames = scan_frames(&bytes);
    if let Some(d) = frames.damage {
        let why = match d {
            Damage::Incomplete { .. } => {
                "incomplete (cut short, or its length was altered)".to_string()
            }
            Damage::Corrupt { why, .. } => why.to_string(),
        };
        return Err(CheckpointDamage {
            file: path.to_path_buf(),
            offset: d.at(),
            why,
        }
        .into());
    }
    let mut notes = Vec::with_capacity(frames.payloads.len());
    for (p, at) in frames.payloads.iter().zip(&frames.offsets) {
        notes.push(String::from_utf8(p.to_vec()).map_err(|_| CheckpointDamage {
            file: path.to_path_buf(),
            offset: *at,
            why: "the note is not UTF-8".into(),
        })?);
    }
    Ok(Some(notes))
}

/// The notes of a live checkpoint file up to and including `last`. The
/// checkpoint writer may be appending as this reads: an incomplete final
/// frame is its write in progress, not damage.
pub fn read_notes_upto(path: &Path, last: &str) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let frames = scan_frames(&bytes);
    if let Some(Damage::Corrupt { why, at }) = frames.damage {
        return Err(CheckpointDamage {
            file: path.to_path_buf(),
            offset: at,
            why: why.to_string(),
        }
        .into());
    }
    let mut notes = Vec::new();
    for p in frames.payloads {
        let note = String::from_utf8(p.to_vec()).context("a checkpoint note is not UTF-8")?;
        let done = note == last;
        notes.push(note);
        if done {
            return Ok(notes);
        }
    }
    bail!(
        "{} does not hold the checkpoint being copied",
        path.display()
    )
}

/// Appends a note to a checkpoint file durably.
pub fn append_note(path: &Path, note: &str) -> Result<()> {
    let mut frame = Vec::new();
    frame_into(&mut frame, note.as_bytes());
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    f.write_all(&frame)
        .with_context(|| format!("writing {}", path.display()))?;
    f.sync_data()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_other_keys_or_edits_fail() {
        let dir = tempfile::tempdir().unwrap();
        let key = LogKey::load_or_create(dir.path(), "govshare.test/audit").unwrap();
        let note = key.sign(42, [7; 32]);
        assert!(note.starts_with("govshare.test/audit\n42\nBwcH"));
        let v =
            LogVerifier::parse(&std::fs::read_to_string(dir.path().join("audit-log.pub")).unwrap())
                .unwrap();
        let c = v.open(&note).unwrap();
        assert_eq!((c.size, c.root), (42, [7; 32]));
        assert!(v.open(&note.replace("\n42\n", "\n43\n")).is_err());
        let other =
            LogKey::load_or_create(tempfile::tempdir().unwrap().path(), "govshare.test/audit")
                .unwrap();
        assert!(v.open(&other.sign(42, [7; 32])).is_err());
        let again = LogKey::load_or_create(dir.path(), "govshare.test/audit").unwrap();
        assert_eq!(again.verifier_key(), key.verifier_key());
    }

    #[test]
    fn cosignatures_verify_for_their_witness_only() {
        let log = LogKey::load_or_create(tempfile::tempdir().unwrap().path(), "log.test").unwrap();
        let note = log.sign(9, [1; 32]);
        let w_key = SigningKey::generate(&mut rand::rngs::OsRng);
        let w = CosignatureKey::new("witness.test/w1", w_key.clone()).unwrap();
        let other = CosignatureKey::new(
            "witness.test/w2",
            SigningKey::generate(&mut rand::rngs::OsRng),
        )
        .unwrap();
        let body =
            Checkpoint::parse_body("log.test\n9\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n")
                .unwrap()
                .body();
        let cosigned = add_signature_lines(&note, &w.cosign(&body, 1_700_000_000)).unwrap();
        let verifiers = [
            CosignatureVerifier::parse(&w.verifier_key()).unwrap(),
            CosignatureVerifier::parse(&other.verifier_key()).unwrap(),
        ];
        assert_eq!(cosigners(&cosigned, &verifiers), ["witness.test/w1"]);
        assert!(w.verifier_key().split('+').nth(2).unwrap().starts_with("B"));
        // The log signature still verifies on the cosigned note.
        let v = LogVerifier::parse(&log.verifier_key()).unwrap();
        assert_eq!(v.open(&cosigned).unwrap().size, 9);
        // A cosignature over another body does not.
        let forged = add_signature_lines(
            &note,
            &w.cosign(
                "log.test\n10\nAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n",
                1,
            ),
        )
        .unwrap();
        assert!(cosigners(&forged, &verifiers[..1]).is_empty());

        // A witness's answer is kept only as far as its own valid
        // cosignature: a bogus line in another witness's name placed first
        // would otherwise make verifiers reject that witness's real one.
        let real_other = other.cosign(&body, 1_700_000_000);
        let bogus_other = other.cosign("log.test\n1\nAQ==\n", 5);
        let answer = format!("{bogus_other}{}", w.cosign(&body, 1_700_000_000));
        let kept = own_cosignatures(&note, &answer, &verifiers[0]);
        assert_eq!(kept.lines().count(), 1);
        let stored =
            add_signature_lines(&add_signature_lines(&note, &kept).unwrap(), &real_other).unwrap();
        assert_eq!(cosigners(&stored, &verifiers).len(), 2, "{stored}");
        assert!(own_cosignatures(&note, &bogus_other, &verifiers[1]).is_empty());
        assert!(verifiers[0] == CosignatureVerifier::parse(&w.verifier_key()).unwrap());
        assert!(verifiers[0] != verifiers[1]);
        // One key under another name is the same witness.
        let alias = CosignatureKey::new("witness.test/alias", w_key).unwrap();
        assert!(CosignatureVerifier::parse(&alias.verifier_key()).unwrap() == verifiers[0]);
    }
}
