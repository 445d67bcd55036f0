//! The export format: JSON Lines. Each entry is
//! `{"index": N, "bytes": "<base64 protobuf>", "entry": {...}}` — the bytes
//! are what is hashed, the JSON is for reading — then
//! `{"checkpoint": "<signed note>"}` per checkpoint and
//! `{"public_key": "<verifier key>"}`. A third party verifies it with
//! `govshare audit verify --export FILE --public-key KEY`, no gateway needed.

use crate::proto::AuditEntry;
use anyhow::{Context, Result, bail};
use data_encoding::BASE64;
use prost::Message;

pub fn entry_line(index: u64, bytes: &[u8]) -> String {
    let entry = AuditEntry::decode(bytes)
        .map(|e| crate::json::to_value(&e))
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

/// The tree size a note states (0 if unreadable).
pub fn note_size(note: &str) -> u64 {
    note.lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .unwrap_or(0)
}

/// An export read back: entry bytes in file order, and the notes.
pub struct Export {
    pub entries: Vec<Vec<u8>>,
    pub notes: Vec<String>,
}

pub fn parse(text: &str) -> Result<Export> {
    let mut out = Export {
        entries: Vec::new(),
        notes: Vec::new(),
    };
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("line {}: not JSON", n + 1))?;
        if let Some(b) = v.get("bytes").and_then(|b| b.as_str()) {
            out.entries.push(
                BASE64
                    .decode(b.as_bytes())
                    .with_context(|| format!("line {}: bytes are not base64", n + 1))?,
            );
        } else if let Some(c) = v.get("checkpoint").and_then(|c| c.as_str()) {
            out.notes.push(c.to_string());
        } else if v.get("public_key").is_none() {
            bail!(
                "line {}: neither an entry, a checkpoint nor the public key",
                n + 1
            );
        }
    }
    Ok(out)
}
