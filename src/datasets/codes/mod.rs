//! Codes of the shared datasets and their validation rules (data-model.md).

pub mod citizen_id;
pub mod region;
pub mod uscc;

pub use citizen_id::CitizenId;
pub use region::{Level, RegionCode};
pub use uscc::Uscc;

/// A rule a code broke, phrased for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodeError(pub String);

impl CodeError {
    pub(crate) fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Parses an ISO date `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Result<chrono::NaiveDate, CodeError> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| CodeError::new(format!("'{s}' is not a date in the form YYYY-MM-DD")))
}
