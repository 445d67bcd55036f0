//! Bounds on what a caller can make the log (and the status messages)
//! hold. The log is append-only and kept for years: a refused call must not
//! be able to grow it by more than its own small, fixed cost.

use sha2::{Digest, Sha256};

/// Longest caller-supplied string recorded as is.
pub const MAX_RECORDED: usize = 256;

/// `s` when it is at most [`MAX_RECORDED`] bytes; otherwise its length and
/// SHA-256, so an auditor can still match it against a value they hold.
pub fn cap(s: &str) -> String {
    if s.len() <= MAX_RECORDED {
        s.to_string()
    } else {
        digest_of(s.len(), s.as_bytes())
    }
}

/// A list of caller-supplied keys recorded as its count and one SHA-256 over
/// them (each followed by a newline), when it is longer than `max`.
pub fn cap_keys(keys: &[String], max: usize) -> Vec<String> {
    if keys.len() <= max && keys.iter().all(|k| k.len() <= MAX_RECORDED) {
        return keys.to_vec();
    }
    let mut h = Sha256::new();
    let mut bytes = 0usize;
    for k in keys {
        h.update(k.as_bytes());
        h.update(b"\n");
        bytes += k.len() + 1;
    }
    vec![format!(
        "<{} keys, {bytes} bytes, sha256:{}>",
        keys.len(),
        data_encoding::HEXLOWER.encode(&h.finalize())
    )]
}

fn digest_of(len: usize, bytes: &[u8]) -> String {
    format!(
        "<{len} bytes, sha256:{}>",
        data_encoding::HEXLOWER.encode(&Sha256::digest(bytes))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_become_their_length_and_digest() {
        assert_eq!(cap("CASE-1"), "CASE-1");
        let big = "x".repeat(4 << 20);
        let c = cap(&big);
        assert!(
            c.starts_with("<4194304 bytes, sha256:") && c.len() < 100,
            "{c}"
        );
        let keys: Vec<String> = (0..100_000).map(|i| format!("{i:018}")).collect();
        let k = cap_keys(&keys, 1000);
        assert_eq!(k.len(), 1);
        assert!(k[0].starts_with("<100000 keys"), "{}", k[0]);
        assert_eq!(cap_keys(&keys[..3], 1000), keys[..3]);
    }
}
