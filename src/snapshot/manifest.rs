//! A snapshot's manifest: what it holds, as a `signed-note` text the log
//! key signs. Whoever reads the snapshot checks the signature, then every
//! part against its line.
//!
//! ```text
//! govshare-snapshot/1
//! version 0.1.0
//! origin govshare.local/audit
//! size 1234                      entries in log/entries, the checkpoint's size
//! taken 1796537193               unix seconds
//! by admin-console@gateway-admin
//! checkpoint <base64 of the signed checkpoint note>
//! part store/population 50000 19145302 <sha256 hex>
//! …
//! ```

use super::format::Summary;
use crate::base::text::cap_for_message as cap;
use anyhow::{Context, Result, bail};
use data_encoding::{BASE64, HEXLOWER};

const HEADER: &str = "govshare-snapshot/1";

/// What a snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The gateway version that took it.
    pub version: String,
    /// The log's origin (its generation's) when it was taken.
    pub origin: String,
    /// Entries it holds: `0..size`, the checkpoint's size.
    pub size: u64,
    /// Unix seconds.
    pub taken: i64,
    /// Who took it (`client@department`).
    pub taken_by: String,
    /// The signed checkpoint of `size`.
    pub checkpoint: String,
    pub parts: Vec<Summary>,
}

/// A part name: store trees, log parts and key files, no spaces.
pub fn valid_part_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        && !name
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
}

impl Manifest {
    /// The note text the log key signs.
    pub fn text(&self) -> String {
        let mut t = format!(
            "{HEADER}\nversion {}\norigin {}\nsize {}\ntaken {}\nby {}\ncheckpoint {}\n",
            self.version,
            self.origin,
            self.size,
            self.taken,
            self.taken_by,
            BASE64.encode(self.checkpoint.as_bytes())
        );
        for p in &self.parts {
            t.push_str(&format!(
                "part {} {} {} {}\n",
                p.name,
                p.records,
                p.bytes,
                HEXLOWER.encode(&p.sha256)
            ));
        }
        t
    }

    /// Parses a manifest's (verified) text strictly.
    pub fn parse(text: &str) -> Result<Self> {
        // Printed to an operator's terminal by `inspect`: no escape codes.
        if text.chars().any(|c| c.is_control() && c != '\n') {
            bail!("its manifest holds control characters");
        }
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            bail!("its manifest is not of a snapshot version this build reads");
        }
        let mut field = |name: &str| -> Result<String> {
            let line = lines
                .next()
                .with_context(|| format!("its manifest has no {name} line"))?;
            line.strip_prefix(name)
                .and_then(|r| r.strip_prefix(' '))
                .map(str::to_string)
                .with_context(|| format!("its manifest's line '{}' is not its {name}", cap(line)))
        };
        let version = field("version")?;
        let origin = field("origin")?;
        let size = field("size")?.parse().context("its manifest's size")?;
        let taken = field("taken")?.parse().context("its manifest's time")?;
        let taken_by = field("by")?;
        let checkpoint = String::from_utf8(
            BASE64
                .decode(field("checkpoint")?.as_bytes())
                .context("its manifest's checkpoint is not base64")?,
        )
        .context("its manifest's checkpoint is not text")?;
        let mut parts = Vec::new();
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            let [tag, name, records, bytes, sha] = f.as_slice() else {
                bail!("its manifest's line '{}' is not a part", cap(line));
            };
            if *tag != "part" || !valid_part_name(name) {
                bail!("its manifest's line '{}' is not a part", cap(line));
            }
            parts.push(Summary {
                name: (*name).to_string(),
                records: records.parse().context("a part's record count")?,
                bytes: bytes.parse().context("a part's length")?,
                sha256: HEXLOWER
                    .decode(sha.as_bytes())
                    .ok()
                    .and_then(|h| h.try_into().ok())
                    .context("a part's SHA-256")?,
            });
        }
        Ok(Self {
            version,
            origin,
            size,
            taken,
            taken_by,
            checkpoint,
            parts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_part_names_are_plain() {
        let m = Manifest {
            version: "0.1.0".into(),
            origin: "govshare.local/audit/2".into(),
            size: 42,
            taken: 1_796_537_193,
            taken_by: "admin@gateway-admin".into(),
            checkpoint: "govshare.local/audit/2\n42\nAAAA\n\n— sig\n".into(),
            parts: vec![Summary {
                name: "store/population".into(),
                records: 3,
                bytes: 99,
                sha256: [9; 32],
            }],
        };
        assert_eq!(Manifest::parse(&m.text()).unwrap(), m);
        for bad in ["", "a b", "../x", "pki/../../etc", "x//y", "a\nb"] {
            assert!(!valid_part_name(bad), "{bad:?}");
        }
        assert!(valid_part_name("pki/audit-log.key"));
        // An escape sequence for the operator's terminal is refused.
        let mut evil = m.clone();
        evil.taken_by = "admin\u{1b}]0;pwned\u{7}@gateway-admin".into();
        let err = Manifest::parse(&evil.text()).unwrap_err();
        assert!(err.to_string().contains("control characters"), "{err}");
    }
}
