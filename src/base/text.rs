//! Caller input in messages, bounded. A status message goes back to the
//! caller and into the append-only log; quoting a megabyte of input in it
//! would let a refused call grow both. Every echo and every refusal passes
//! through here.

/// Caller input echoed back in a status message: at most 64 bytes, cut on
/// a character boundary, with the full length named.
pub fn cap_for_message(s: &str) -> String {
    const ECHO: usize = 64;
    if s.len() <= ECHO {
        return s.to_string();
    }
    let mut end = ECHO;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// Longest status message a refusal carries (and records).
pub const MAX_MESSAGE: usize = 400;

/// A refusal's message, cut to [`MAX_MESSAGE`] bytes on a character
/// boundary. Messages are built from caller input in many places (a parse
/// error names the value it could not parse); cutting them here, where
/// every refusal passes, keeps a megabyte of input out of both the reply
/// and the append-only log.
pub fn cap_message(mut s: String) -> String {
    if s.len() <= MAX_MESSAGE {
        return s;
    }
    let len = s.len();
    let mut end = MAX_MESSAGE - 32;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str(&format!("… ({len} bytes)"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_echoes_are_cut_on_a_character_boundary() {
        let m = cap_message(format!("bad code '{}'", "码".repeat(1 << 20)));
        assert!(
            m.len() <= MAX_MESSAGE && m.ends_with("(3145739 bytes)"),
            "{m}"
        );
        assert_eq!(cap_message("short".into()), "short");
        let m = cap_for_message(&"案".repeat(100));
        assert!(m.len() < 100 && m.ends_with("(300 bytes)"), "{m}");
    }
}
