//! Checkpoints as C2SP `tlog-checkpoint` signed notes (`signed-note`,
//! Ed25519): an origin line, the tree size, the base64 root hash, a blank
//! line, and `— <key name> <base64(key id ‖ signature)>`. The key name is the
//! log's origin; the verifier key is published as
//! `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.

use super::merkle::Hash;
use anyhow::{Context, Result, anyhow, bail};
use data_encoding::{BASE64, HEXLOWER};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};
use std::path::Path;

const ED25519: u8 = 0x01;

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
}

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ED25519]);
    h.update(public);
    h.finalize()[..4].try_into().expect("4 bytes")
}

/// The log's signing key.
pub struct LogKey {
    name: String,
    key: SigningKey,
}

impl LogKey {
    /// Loads `audit-log.key` from `dir`, creating it (and `audit-log.pub`) on
    /// first start.
    pub fn load_or_create(dir: &Path, origin: &str) -> Result<Self> {
        let path = dir.join("audit-log.key");
        let key = if path.exists() {
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            SigningKey::from_pkcs8_pem(&pem).map_err(|e| anyhow!("{}: {e}", path.display()))?
        } else {
            std::fs::create_dir_all(dir)?;
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let pem = key
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| anyhow!("encoding the log key: {e}"))?;
            crate::pki::Pki::at(dir).write_secret("audit-log.key", &pem)?;
            key
        };
        let me = Self {
            name: origin.into(),
            key,
        };
        std::fs::write(
            dir.join("audit-log.pub"),
            format!("{}\n", me.verifier_key()),
        )
        .with_context(|| format!("writing {}", dir.join("audit-log.pub").display()))?;
        Ok(me)
    }

    /// The `signed-note` verifier key string.
    pub fn verifier_key(&self) -> String {
        let public = self.key.verifying_key().to_bytes();
        let mut encoded = vec![ED25519];
        encoded.extend_from_slice(&public);
        format!(
            "{}+{}+{}",
            self.name,
            HEXLOWER.encode(&key_id(&self.name, &public)),
            BASE64.encode(&encoded)
        )
    }

    pub fn sign(&self, c: &Checkpoint) -> String {
        let body = c.body();
        let sig = self.key.sign(body.as_bytes());
        let mut blob = key_id(&self.name, &self.key.verifying_key().to_bytes()).to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!("{body}\n\u{2014} {} {}\n", self.name, BASE64.encode(&blob))
    }
}

/// Checks notes against a published verifier key.
#[derive(Debug, Clone)]
pub struct NoteVerifier {
    name: String,
    id: [u8; 4],
    key: VerifyingKey,
}

impl NoteVerifier {
    pub fn parse(vkey: &str) -> Result<Self> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            bail!("a verifier key is NAME+KEYID+BASE64KEY");
        };
        let key = BASE64
            .decode(key.as_bytes())
            .context("verifier key is not base64")?;
        if key.len() != 33 || key[0] != ED25519 {
            bail!("verifier key is not an Ed25519 key");
        }
        let public: [u8; 32] = key[1..].try_into().expect("32 bytes");
        let id: [u8; 4] = HEXLOWER
            .decode(id.as_bytes())
            .ok()
            .and_then(|v| v.try_into().ok())
            .context("verifier key id is not 8 hex digits")?;
        if id != key_id(name, &public) {
            bail!("verifier key id does not match its name and key");
        }
        Ok(Self {
            name: name.into(),
            id,
            key: VerifyingKey::from_bytes(&public).context("verifier key")?,
        })
    }

    /// Verifies a note's signature and parses its checkpoint body.
    pub fn open(&self, note: &str) -> Result<Checkpoint, String> {
        let (body, sigs) = note
            .split_once("\n\n")
            .ok_or("not a signed note (no blank line before the signatures)")?;
        let body = format!("{body}\n");
        let signed = sigs.lines().any(|line| {
            let Some(rest) = line.strip_prefix("\u{2014} ") else {
                return false;
            };
            let Some((name, b64)) = rest.split_once(' ') else {
                return false;
            };
            let Ok(blob) = BASE64.decode(b64.as_bytes()) else {
                return false;
            };
            name == self.name
                && blob.len() == 68
                && blob[..4] == self.id
                && Signature::from_slice(&blob[4..])
                    .is_ok_and(|s| self.key.verify(body.as_bytes(), &s).is_ok())
        });
        if !signed {
            return Err(format!("no valid signature by the log key '{}'", self.name));
        }
        let mut lines = body.lines();
        let origin = lines.next().unwrap_or_default().to_string();
        if origin != self.name {
            return Err(format!("origin '{origin}' is not the log '{}'", self.name));
        }
        let size = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or("the size line is not a number")?;
        let root = lines
            .next()
            .and_then(|l| BASE64.decode(l.as_bytes()).ok())
            .and_then(|r| r.try_into().ok())
            .ok_or("the root line is not a base64 SHA-256 hash")?;
        Ok(Checkpoint { origin, size, root })
    }
}

/// Every signed checkpoint, in order, in `<audit dir>/checkpoints.log`
/// (length + CRC32C frames like the segments, one note per frame, fsynced).
pub struct Checkpoints {
    path: std::path::PathBuf,
    notes: std::sync::Mutex<Vec<String>>,
}

impl Checkpoints {
    pub fn open(audit_dir: &Path) -> Result<Self> {
        let path = audit_dir.join("checkpoints.log");
        Ok(Self {
            notes: std::sync::Mutex::new(read_notes(&path)?),
            path,
        })
    }

    pub fn latest(&self) -> Option<String> {
        self.notes.lock().expect("notes lock").last().cloned()
    }

    pub fn all(&self) -> Vec<String> {
        self.notes.lock().expect("notes lock").clone()
    }

    /// Appends a note durably.
    pub fn append(&self, note: String) -> Result<()> {
        use std::io::Write;
        let mut frame = Vec::new();
        super::segment::frame_into(&mut frame, note.as_bytes());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        f.write_all(&frame)?;
        f.sync_data()?;
        self.notes.lock().expect("notes lock").push(note);
        Ok(())
    }
}

/// The notes of a checkpoint file (a torn last frame is ignored).
pub fn read_notes(path: &Path) -> Result<Vec<String>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    super::segment::parse_frames(&bytes)
        .0
        .into_iter()
        .map(|f| String::from_utf8(f.to_vec()).context("a checkpoint note is not UTF-8"))
        .collect()
}

/// Signs a checkpoint of the first `size` entries if it is newer than the
/// last one. Returns whether it signed.
pub fn sign_if_new(
    key: &LogKey,
    store: &Checkpoints,
    index: &super::index::AuditIndex,
    size: u64,
) -> Result<bool> {
    let last = store.latest().map_or(0, |n| super::export::note_size(&n));
    if size <= last {
        return Ok(false);
    }
    let root = super::merkle::root(index, size)?;
    store.append(key.sign(&Checkpoint {
        origin: key.name.clone(),
        size,
        root,
    }))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_round_trip_and_other_keys_or_edits_fail() {
        let dir = tempfile::tempdir().unwrap();
        let key = LogKey::load_or_create(dir.path(), "govshare.test/audit").unwrap();
        let c = Checkpoint {
            origin: "govshare.test/audit".into(),
            size: 42,
            root: [7; 32],
        };
        let note = key.sign(&c);
        assert!(note.starts_with("govshare.test/audit\n42\nBwcH"));
        let v = NoteVerifier::parse(
            &std::fs::read_to_string(dir.path().join("audit-log.pub")).unwrap(),
        )
        .unwrap();
        assert_eq!(v.open(&note).unwrap(), c);
        assert!(v.open(&note.replace("\n42\n", "\n43\n")).is_err());
        let other =
            LogKey::load_or_create(tempfile::tempdir().unwrap().path(), "govshare.test/audit")
                .unwrap();
        assert!(v.open(&other.sign(&c)).is_err());
        // Reloading keeps the same key.
        let again = LogKey::load_or_create(dir.path(), "govshare.test/audit").unwrap();
        assert_eq!(again.verifier_key(), key.verifier_key());
    }
}
