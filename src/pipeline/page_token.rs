//! Page tokens: opaque to the caller.
//!
//! A listing's cursor is a storage key — for a person
//! `grid\0household\0citizen id` — of the last row the scan examined,
//! released or not. Handed out as is, a token would give the caller the
//! clear key of a row whose fields it may not see (or a row filtered out).
//! So cursors leave sealed (ChaCha20-Poly1305, under a key derived from the
//! gateway's secret) and bound to the department and dataset they were
//! issued for: a token is unreadable, unforgeable, and useless to another
//! department or in another listing.

use data_encoding::BASE64URL_NOPAD;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

pub struct PageTokens {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl PageTokens {
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            key: LessSafeKey::new(
                UnboundKey::new(&CHACHA20_POLY1305, &key).expect("a 32-byte key"),
            ),
            rng: SystemRandom::new(),
        }
    }

    /// `cursor`, sealed for `department`'s listings of `dataset`.
    pub fn seal(&self, department: &str, dataset: &str, cursor: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system random generator works");
        let mut sealed = cursor.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(binding(department, dataset)),
                &mut sealed,
            )
            .expect("a cursor is far below the AEAD's size limit");
        let mut token = nonce.to_vec();
        token.extend_from_slice(&sealed);
        BASE64URL_NOPAD.encode(&token)
    }

    /// The cursor in `token`, if this gateway sealed it for this department
    /// and dataset; `None` for anything else.
    pub fn open(&self, department: &str, dataset: &str, token: &str) -> Option<Vec<u8>> {
        let bytes = BASE64URL_NOPAD.decode(token.as_bytes()).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let mut sealed = sealed.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let cursor = self
            .key
            .open_in_place(nonce, Aad::from(binding(department, dataset)), &mut sealed)
            .ok()?;
        Some(cursor.to_vec())
    }
}

fn binding(department: &str, dataset: &str) -> Vec<u8> {
    [
        b"govshare page token v1\0",
        department.as_bytes(),
        b"\0",
        dataset.as_bytes(),
    ]
    .concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_hides_its_cursor_and_opens_only_where_it_was_issued() {
        let t = PageTokens::new([7; 32]);
        let cursor = b"310115001001001\x00H1\x00310115199001011234";
        let token = t.seal("civil-affairs", "population", cursor);
        let raw = BASE64URL_NOPAD.decode(token.as_bytes()).unwrap();
        assert!(
            !raw.windows(8).any(|w| cursor.windows(8).any(|c| c == w)),
            "the cursor shows through the token"
        );
        assert_eq!(
            t.open("civil-affairs", "population", &token).unwrap(),
            cursor
        );
        assert!(t.open("street-office", "population", &token).is_none());
        assert!(t.open("civil-affairs", "grid", &token).is_none());
        assert!(
            PageTokens::new([8; 32])
                .open("civil-affairs", "population", &token)
                .is_none()
        );
        let mut forged = raw.clone();
        *forged.last_mut().unwrap() ^= 1;
        let forged = BASE64URL_NOPAD.encode(&forged);
        assert!(t.open("civil-affairs", "population", &forged).is_none());
        assert!(t.open("civil-affairs", "population", "").is_none());
        assert!(t.open("civil-affairs", "population", "!!").is_none());
        assert_ne!(
            token,
            t.seal("civil-affairs", "population", cursor),
            "fresh nonce"
        );
    }
}
