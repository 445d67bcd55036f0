//! 公民身份号码 (GB 11643): 6-digit address code, birth date `YYYYMMDD`,
//! 3-digit sequence (odd = male), check character.

use super::CodeError;
use crate::base::text::cap_for_message;
use crate::proto::Sex;
use chrono::{Datelike, NaiveDate};

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK_CHARS: &[u8; 11] = b"10X98765432";

/// A citizen ID whose length, alphabet, birth date and check character are valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CitizenId(String);

impl CitizenId {
    pub fn parse(s: &str) -> Result<Self, CodeError> {
        let b = s.as_bytes();
        if b.len() != 18 {
            return Err(CodeError::new(format!(
                "a citizen ID has 18 characters, '{}' has {}",
                cap_for_message(s),
                s.chars().count()
            )));
        }
        if !b[..17].iter().all(u8::is_ascii_digit) {
            return Err(CodeError::new(
                "the first 17 characters of a citizen ID must be digits",
            ));
        }
        let date = birth(&b[6..14]).ok_or_else(|| {
            CodeError::new(format!(
                "characters 7-14 '{}' are not a valid birth date",
                &s[6..14]
            ))
        })?;
        if date.year() < 1900 {
            return Err(CodeError::new(format!("birth date {date} is before 1900")));
        }
        let expected = check_char(&b[..17]);
        let got = b[17].to_ascii_uppercase();
        if got != expected {
            return Err(CodeError::new(format!(
                "check character is '{}' but the first 17 digits require '{}'",
                b[17] as char, expected as char
            )));
        }
        let mut normalized = s[..17].to_string();
        normalized.push(got as char);
        Ok(Self(normalized))
    }

    /// Builds a valid ID from its parts (used by the demo generator).
    pub fn from_parts(address: &str, birth: NaiveDate, sequence: u16) -> Self {
        let first = format!("{address}{}{sequence:03}", birth.format("%Y%m%d"));
        let check = check_char(first.as_bytes()) as char;
        Self(format!("{first}{check}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn birth_date(&self) -> NaiveDate {
        birth(&self.0.as_bytes()[6..14]).expect("validated at parse")
    }

    pub fn sex(&self) -> Sex {
        if (self.0.as_bytes()[16] - b'0') % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        }
    }
}

/// The date `YYYYMMDD` of eight ASCII digits, if there is one. Read
/// straight from the digits: every keyed call parses its key, and
/// chrono's format-string parser cost more than the rest of the check.
fn birth(digits: &[u8]) -> Option<NaiveDate> {
    debug_assert!(digits.len() == 8 && digits.iter().all(u8::is_ascii_digit));
    let number = |r: std::ops::Range<usize>| {
        digits[r]
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'))
    };
    NaiveDate::from_ymd_opt(number(0..4) as i32, number(4..6), number(6..8))
}

fn check_char(first17: &[u8]) -> u8 {
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d - b'0') * w)
        .sum();
    CHECK_CHARS[(sum % 11) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_design_example_and_derives_sex_and_birth() {
        let id = CitizenId::parse("11010519491231002X").unwrap();
        assert_eq!(
            id.birth_date(),
            NaiveDate::from_ymd_opt(1949, 12, 31).unwrap()
        );
        assert_eq!(id.sex(), Sex::Female);
        // lower-case x is normalised
        assert_eq!(CitizenId::parse("11010519491231002x").unwrap(), id);
    }

    #[test]
    fn rejects_every_kind_of_malformed_id() {
        for (bad, rule) in [
            ("11010519491231002", "18 characters"),
            ("11010519491231002XX", "18 characters"),
            ("1101051949123100AX", "must be digits"),
            ("110105194913310020", "valid birth date"),
            ("110105194902300020", "valid birth date"),
            ("110105180001010020", "before 1900"),
            ("110105194912310021", "check character"),
            ("", "18 characters"),
            ("11010519491231002Ｘ", "18 characters"),
        ] {
            let err = CitizenId::parse(bad).unwrap_err();
            assert!(err.0.contains(rule), "{bad}: {err}");
        }
    }

    /// The digit reader finds the dates chrono's `%Y%m%d` finds, and only
    /// those: every month and day from 0 to past their bounds, in leap
    /// and common years, year zero and 9999.
    #[test]
    fn birth_dates_read_from_digits_agree_with_chrono() {
        for year in [0, 1, 999, 1899, 1900, 2000, 2023, 2024, 9999] {
            for month in 0..=13 {
                for day in 0..=32 {
                    let text = format!("{year:04}{month:02}{day:02}");
                    assert_eq!(
                        birth(text.as_bytes()),
                        NaiveDate::parse_from_str(&text, "%Y%m%d").ok(),
                        "{text}"
                    );
                }
            }
        }
    }

    #[test]
    fn from_parts_builds_ids_that_parse() {
        let id = CitizenId::from_parts("310115", NaiveDate::from_ymd_opt(1990, 2, 28).unwrap(), 7);
        let parsed = CitizenId::parse(id.as_str()).unwrap();
        assert_eq!(parsed.sex(), Sex::Male);
        assert_eq!(parsed.birth_date().to_string(), "1990-02-28");
    }
}
