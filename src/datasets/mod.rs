//! The shared datasets, one folder each: its catalog entry (fields,
//! sensitivity, sharing class per view, source department), its record
//! types, and their validation. Beside them, what the datasets share: the
//! catalog in force, masking (the projector, which works on the stored
//! wire format), the checks, and the codes their keys are made of.
//!
//! A fourth dataset is one new folder (a `SPEC` and [`Record`] impls) and
//! one line in the registry below.

pub mod catalog;
mod check;
pub mod codes;
pub mod mask;
pub mod record;

pub use catalog::DatasetSpec;
pub use record::{Checked, GridCounts, Record, Reference};

/// Declares the datasets: their folders, the [`Dataset`] enum and its
/// catalog entries, from one line each.
macro_rules! registry {
    ($($variant:ident => $folder:ident: $record:ty),* $(,)?) => {
        $(pub mod $folder;)*

        /// A shared dataset, each with one source department (一数一源).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Dataset {
            $($variant),*
        }

        impl Dataset {
            pub const ALL: &'static [Dataset] = &[$(Dataset::$variant),*];

            /// The dataset's catalog entry.
            pub fn spec(self) -> &'static DatasetSpec {
                match self {
                    $(Dataset::$variant => &$folder::SPEC),*
                }
            }

            /// Runs `v` with the dataset's main record type.
            pub fn visit<V: RecordVisitor>(self, v: V) -> V::Output {
                match self {
                    $(Dataset::$variant => v.visit::<$record>()),*
                }
            }
        }
    };
}

registry! {
    Population => population: crate::proto::Person,
    LegalEntity => legal_entity: crate::proto::LegalEntity,
    Grid => grid: crate::proto::Grid,
}

/// Work generic over a dataset's main record type, chosen at run time by
/// [`Dataset::visit`].
pub trait RecordVisitor {
    type Output;
    fn visit<R: Record + crate::proto::json::Named>(self) -> Self::Output;
}

impl Dataset {
    /// The dataset's name, as grants, requests and the log write it.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|d| d.name() == s)
    }

    /// A key as the dataset stores it (a citizen ID's check character in
    /// capitals), or the text as given when it is not a valid key. The log
    /// records keys this way, so one record is one subject however its key
    /// was typed.
    pub fn canonical_key(self, key: &str) -> String {
        struct Canonical<'a>(&'a str);
        impl RecordVisitor for Canonical<'_> {
            type Output = Option<String>;
            fn visit<R: Record + crate::proto::json::Named>(self) -> Option<String> {
                R::parse_key(self.0).ok()
            }
        }
        self.visit(Canonical(key))
            .unwrap_or_else(|| key.to_string())
    }

    /// The department whose system is the authoritative publisher.
    pub fn source_department(self) -> &'static str {
        self.spec().source_department
    }
}
