//! 统一社会信用代码 (GB 32100).

use super::CodeError;
use crate::base::text::cap_for_message;

const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// A well-formed unified social credit code. `check_ok` is false for codes
/// from early pilot regions that are real but fail the check character; they
/// are accepted with a data-quality warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uscc {
    code: String,
    check_ok: bool,
}

impl Uscc {
    pub fn parse(s: &str) -> Result<Self, CodeError> {
        let upper = s.to_ascii_uppercase();
        let b = upper.as_bytes();
        if b.len() != 18 {
            return Err(CodeError::new(format!(
                "a unified social credit code has 18 characters, '{}' has {}",
                cap_for_message(s),
                s.chars().count()
            )));
        }
        if let Some(c) = b.iter().find(|c| value(**c).is_none()) {
            return Err(CodeError::new(format!(
                "'{}' is not in the code alphabet 0-9 A-Y without I, O, Z, S, V",
                *c as char
            )));
        }
        if !b[2..8].iter().all(u8::is_ascii_digit) {
            return Err(CodeError::new(
                "characters 3-8 (the registering authority's division code) must be digits",
            ));
        }
        let check_ok = check_char(&b[..17]) == b[17];
        Ok(Self {
            code: upper,
            check_ok,
        })
    }

    /// Completes a 17-character body with its check character.
    pub fn with_check(body17: &str) -> Self {
        let check = check_char(body17.as_bytes()) as char;
        Self {
            code: format!("{body17}{check}"),
            check_ok: true,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.code
    }

    pub fn check_ok(&self) -> bool {
        self.check_ok
    }

    /// Positions 1–2: registering authority and entity category.
    pub fn category(&self) -> &str {
        &self.code[..2]
    }
}

fn value(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|a| *a == c).map(|p| p as u32)
}

fn check_char(body: &[u8]) -> u8 {
    let sum: u32 = body
        .iter()
        .zip(WEIGHTS)
        .map(|(c, w)| value(*c).unwrap_or(0) * w)
        .sum();
    ALPHABET[((31 - sum % 31) % 31) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_design_examples() {
        for ok in ["91350100M000100Y43", "91420000757013137P"] {
            let u = Uscc::parse(ok).unwrap();
            assert!(u.check_ok(), "{ok}");
            assert_eq!(u.category(), "91");
        }
    }

    #[test]
    fn a_bad_check_character_is_accepted_with_a_warning_flag() {
        let u = Uscc::parse("91350100M000100Y44").unwrap();
        assert!(!u.check_ok());
    }

    #[test]
    fn rejects_wrong_length_and_alphabet() {
        for (bad, rule) in [
            ("91350100M000100Y4", "18 characters"),
            ("91350100M000100Y433", "18 characters"),
            ("91350100M000100I43", "alphabet"),
            ("91350100O000100Y43", "alphabet"),
            ("913501Z0M000100Y43", "alphabet"),
            ("91AB0100M000100Y43", "division code"),
        ] {
            let err = Uscc::parse(bad).unwrap_err();
            assert!(err.0.contains(rule), "{bad}: {err}");
        }
    }

    #[test]
    fn with_check_completes_valid_codes() {
        assert_eq!(
            Uscc::with_check("91350100M000100Y4").as_str(),
            "91350100M000100Y43"
        );
    }
}
