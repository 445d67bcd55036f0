//! Region and grid codes nest by prefix: 6 digits district, 9 street,
//! 12 community, 15 grid. A prefix is a region.

use super::CodeError;
use crate::base::text::cap_for_message;
use crate::proto::RegionLevel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    District,
    Street,
    Community,
    Grid,
}

impl Level {
    pub fn code_len(self) -> usize {
        match self {
            Level::District => 6,
            Level::Street => 9,
            Level::Community => 12,
            Level::Grid => 15,
        }
    }

    pub fn to_proto(self) -> RegionLevel {
        match self {
            Level::District => RegionLevel::District,
            Level::Street => RegionLevel::Street,
            Level::Community => RegionLevel::Community,
            Level::Grid => RegionLevel::Grid,
        }
    }
}

/// A valid region or grid code.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RegionCode(String);

impl RegionCode {
    pub fn parse(s: &str) -> Result<Self, CodeError> {
        if !s.bytes().all(|b| b.is_ascii_digit()) || s.is_empty() {
            return Err(CodeError::new(format!(
                "region code '{}' must be digits only",
                cap_for_message(s)
            )));
        }
        match s.len() {
            6 | 9 | 12 | 15 => Ok(Self(s.to_string())),
            n => Err(CodeError::new(format!(
                "region code '{}' has {n} digits; a district has 6, a street 9, a community 12, a grid 15",
                cap_for_message(s)
            ))),
        }
    }

    /// A code that must name a grid (15 digits).
    pub fn parse_grid(s: &str) -> Result<Self, CodeError> {
        let code = Self::parse(s)?;
        if code.level() != Level::Grid {
            return Err(CodeError::new(format!(
                "'{s}' is a {:?} code, a grid code has 15 digits",
                code.level()
            )));
        }
        Ok(code)
    }

    pub fn level(&self) -> Level {
        match self.0.len() {
            6 => Level::District,
            9 => Level::Street,
            12 => Level::Community,
            _ => Level::Grid,
        }
    }

    /// The enclosing region, or `None` for a district.
    pub fn parent(&self) -> Option<RegionCode> {
        (self.0.len() > 6).then(|| Self(self.0[..self.0.len() - 3].to_string()))
    }

    /// Whether `code` (a grid or region code) lies inside this region.
    pub fn contains(&self, code: &str) -> bool {
        code.starts_with(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RegionCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_nest_by_prefix() {
        let grid = RegionCode::parse_grid("310115004012003").unwrap();
        let community = grid.parent().unwrap();
        assert_eq!(community.as_str(), "310115004012");
        assert_eq!(community.level(), Level::Community);
        let street = community.parent().unwrap();
        assert_eq!(street.level(), Level::Street);
        assert!(street.contains(grid.as_str()));
        assert!(
            !RegionCode::parse("310115005")
                .unwrap()
                .contains(grid.as_str())
        );
        assert_eq!(street.parent().unwrap().parent(), None);
    }

    #[test]
    fn rejects_malformed_codes() {
        assert!(
            RegionCode::parse("31011")
                .unwrap_err()
                .0
                .contains("5 digits")
        );
        assert!(
            RegionCode::parse("3101150a4")
                .unwrap_err()
                .0
                .contains("digits only")
        );
        assert!(RegionCode::parse("").is_err());
        assert!(
            RegionCode::parse_grid("310115004012")
                .unwrap_err()
                .0
                .contains("15 digits")
        );
    }
}
