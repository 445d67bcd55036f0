//! The checks published records share: each names the field and the rule.

use super::codes::{RegionCode, parse_date};

pub(super) fn required<'a>(field: &str, v: &'a Option<String>) -> Result<&'a str, String> {
    match v.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(format!("{field}: is required")),
    }
}

pub(super) fn text(field: &str, v: &Option<String>, max_chars: usize) -> Result<(), String> {
    match v {
        Some(s) if s.chars().count() > max_chars => {
            Err(format!("{field}: longer than {max_chars} characters"))
        }
        _ => Ok(()),
    }
}

pub(super) fn code2(field: &str, v: &Option<String>) -> Result<(), String> {
    match v.as_deref() {
        Some(s) if !(s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit())) => {
            Err(format!("{field}: '{s}' is not a 2-digit code"))
        }
        _ => Ok(()),
    }
}

pub(super) fn date(field: &str, v: &str) -> Result<(), String> {
    parse_date(v)
        .map(|_| ())
        .map_err(|e| format!("{field}: {e}"))
}

pub(super) fn opt_date(field: &str, v: &Option<String>) -> Result<(), String> {
    match v.as_deref() {
        Some(s) if !s.is_empty() => date(field, s),
        _ => Ok(()),
    }
}

pub(super) fn phone(field: &str, v: &Option<String>) -> Result<(), String> {
    match v.as_deref() {
        Some(s)
            if !(5..=20).contains(&s.len())
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-' || b == b'+') =>
        {
            Err(format!(
                "{field}: '{s}' is not a phone number (5-20 digits, '+' or '-')"
            ))
        }
        _ => Ok(()),
    }
}

pub(super) fn grid_code(field: &str, v: &Option<String>) -> Result<RegionCode, String> {
    RegionCode::parse_grid(required(field, v)?).map_err(|e| format!("{field}: {e}"))
}

pub(super) fn known_enum<E: TryFrom<i32>>(field: &str, v: Option<i32>) -> Result<(), String> {
    match v {
        Some(x) if x == 0 || E::try_from(x).is_err() => {
            Err(format!("{field}: {x} is not a defined value"))
        }
        _ => Ok(()),
    }
}
