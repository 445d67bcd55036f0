//! The export format: JSON Lines. Each entry is
//! `{"index": N, "bytes": "<base64 protobuf>", "entry": {...}}` — the bytes
//! are what is hashed, the JSON is for reading — then
//! `{"checkpoint": "<signed note>"}` per checkpoint and
//! `{"public_key": "<verifier key>"}`. A third party verifies it with
//! `govshare audit verify --export FILE --public-key KEY`, no gateway needed.
//!
//! The JSON is only a view: a reader must never be shown a field the hash
//! does not cover, so [`parse`] refuses an export whose JSON differs from
//! what its bytes decode to.

use crate::proto::AuditEntry;
use anyhow::{Context, Result, bail};
use data_encoding::BASE64;
use prost::Message;

pub fn entry_line(index: u64, bytes: &[u8]) -> String {
    let entry = AuditEntry::decode(bytes)
        .map(|e| crate::proto::json::to_value(&e))
        .unwrap_or(serde_json::Value::Null);
    format!(
        "{}\n",
        serde_json::json!({ "index": index, "bytes": BASE64.encode(bytes), "entry": entry })
    )
}

pub fn note_line(note: &str) -> String {
    format!("{}\n", serde_json::json!({ "checkpoint": note }))
}

pub fn key_line(key: &str) -> String {
    format!("{}\n", serde_json::json!({ "public_key": key }))
}

/// An export read back: entry bytes in file order, and the notes.
pub struct Export {
    pub entries: Vec<Vec<u8>>,
    pub notes: Vec<String>,
}

/// An entry line whose JSON is not what its hashed bytes say.
#[derive(Debug, thiserror::Error)]
#[error(
    "line {line}: the JSON shown for this entry is not what its hashed bytes say ({why}): altered"
)]
pub struct ViewMismatch {
    pub line: usize,
    pub why: String,
}

fn check_view(line: &serde_json::Value, bytes: &[u8]) -> Result<(), String> {
    let entry = AuditEntry::decode(bytes).map_err(|_| "the bytes do not decode".to_string())?;
    if line.get("index").and_then(serde_json::Value::as_u64) != Some(entry.index) {
        return Err(format!("its index is not {}", entry.index));
    }
    if line.get("entry") != Some(&crate::proto::json::to_value(&entry)) {
        return Err("its fields differ".into());
    }
    Ok(())
}

/// Reads an export back, strictly: every line must be exactly what the
/// exporter writes for its bytes, note or key — no extra, repeated or
/// missing keys — so no line can show a reader something the hash does
/// not cover, and there is one key line at most.
pub fn parse(text: &str) -> Result<Export> {
    let mut out = Export {
        entries: Vec::new(),
        notes: Vec::new(),
    };
    let mut keys = 0;
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {}: not JSON", n + 1))?;
        let exact = |expected: String| expected.trim_end() == line.trim_end();
        if let Some(b) = v.get("bytes").and_then(|b| b.as_str()) {
            let bytes = BASE64
                .decode(b.as_bytes())
                .with_context(|| format!("line {}: bytes are not base64", n + 1))?;
            check_view(&v, &bytes).map_err(|why| ViewMismatch { line: n + 1, why })?;
            let index = v
                .get("index")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0);
            if !exact(entry_line(index, &bytes)) {
                return Err(ViewMismatch {
                    line: n + 1,
                    why: "it carries keys beside its index, bytes and their view".into(),
                }
                .into());
            }
            out.entries.push(bytes);
        } else if let Some(c) = v.get("checkpoint").and_then(|c| c.as_str()) {
            if !exact(note_line(c)) {
                bail!("line {}: a checkpoint line with other keys", n + 1);
            }
            out.notes.push(c.to_string());
        } else if let Some(k) = v.get("public_key").and_then(|k| k.as_str()) {
            keys += 1;
            if keys > 1 || !exact(key_line(k)) {
                bail!("line {}: a second or altered public key line", n + 1);
            }
        } else {
            bail!(
                "line {}: neither an entry, a checkpoint nor the public key",
                n + 1
            );
        }
    }
    Ok(out)
}
