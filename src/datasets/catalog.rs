//! The catalog: every shared dataset's fields with sensitivity, sharing class
//! per view, and how a field is masked — each dataset's entry lives in its
//! own folder (`population::SPEC`, …); this module holds their shape, the
//! building blocks the entries are written with, and the catalog in force
//! (the entries with config overrides applied).

use super::Dataset;
use crate::proto::{self, FieldView, Sensitivity, SharingClass};
use std::collections::HashMap;

/// How the `MASKED` view of a field is derived (scopes.md, "Masking").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskKind {
    /// First 6 + `********` + last 4.
    CitizenId,
    /// First 3 + `****` + last 4.
    Phone,
    /// First character + `*` per remaining character.
    PersonName,
    /// Cut to the name of the record's community; detail dropped.
    Address,
    /// Year only.
    BirthDate,
    /// No masked form.
    None,
}

pub struct FieldSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub sensitivity: Sensitivity,
    pub mask: MaskKind,
    /// Supported views, each with the sharing class it needs.
    pub views: &'static [(FieldView, SharingClass)],
}

impl FieldSpec {
    pub fn sharing_for(&self, view: FieldView) -> Option<SharingClass> {
        self.views.iter().find(|(v, _)| *v == view).map(|(_, s)| *s)
    }
}

/// A dataset's catalog entry: its name, its one source department (一数一
/// 源), and every field it shares.
pub struct DatasetSpec {
    pub dataset: Dataset,
    pub name: &'static str,
    pub source_department: &'static str,
    pub description: &'static str,
    pub fields: &'static [FieldSpec],
}

impl DatasetSpec {
    pub fn field(&self, name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

// ---- Building blocks of the catalog entries ------------------------------

use FieldView::{Clear, Masked, Pseudonym};
use SharingClass::{Conditional as Cond, Unconditional as Uncond};

/// One field of a catalog entry.
pub const fn field(
    name: &'static str,
    description: &'static str,
    sensitivity: Sensitivity,
    mask: MaskKind,
    views: &'static [(FieldView, SharingClass)],
) -> FieldSpec {
    FieldSpec {
        name,
        description,
        sensitivity,
        mask,
        views,
    }
}

/// What the gateway stamps on every upsert (`updated_at`, `version`).
pub const SET_BY_GATEWAY: &str = "set by the gateway on every upsert";

/// Shared in the clear with any grantee.
pub const OPEN: &[(FieldView, SharingClass)] = &[(Clear, Uncond)];
/// In the clear only through an approved access request.
pub const CONDITIONAL: &[(FieldView, SharingClass)] = &[(Clear, Cond)];
/// Clear or masked, both unconditional.
pub const MASKABLE: &[(FieldView, SharingClass)] = &[(Clear, Uncond), (Masked, Uncond)];
/// Clear value only through an approved request; masked and pseudonymous views freely.
pub const PROTECTED: &[(FieldView, SharingClass)] =
    &[(Clear, Cond), (Masked, Uncond), (Pseudonym, Uncond)];

/// A change to a field view's sharing class, from config.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub dataset: String,
    pub field: String,
    /// `CLEAR`, `MASKED` or `PSEUDONYM`.
    pub view: String,
    /// `unconditional`, `conditional` or `not_shared`.
    pub sharing: String,
}

/// The catalog in force: the defaults in code with config overrides applied.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    overrides: HashMap<(Dataset, &'static str, FieldView), SharingClass>,
}

pub fn parse_view(s: &str) -> Option<FieldView> {
    match s.to_ascii_uppercase().as_str() {
        "CLEAR" => Some(FieldView::Clear),
        "MASKED" => Some(FieldView::Masked),
        "PSEUDONYM" => Some(FieldView::Pseudonym),
        _ => None,
    }
}

impl Catalog {
    /// Applies overrides; each must name a real dataset, field and supported view.
    pub fn with_overrides(overrides: &[Override]) -> anyhow::Result<Self> {
        let mut c = Self::default();
        for o in overrides {
            let dataset = Dataset::parse(&o.dataset).ok_or_else(|| {
                anyhow::anyhow!("catalog override: unknown dataset '{}'", o.dataset)
            })?;
            let field = dataset.spec().field(&o.field).ok_or_else(|| {
                anyhow::anyhow!("catalog override: {} has no field '{}'", o.dataset, o.field)
            })?;
            let view = parse_view(&o.view)
                .filter(|v| field.sharing_for(*v).is_some())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "catalog override: {}.{} has no view '{}'",
                        o.dataset,
                        o.field,
                        o.view
                    )
                })?;
            let sharing = match o.sharing.as_str() {
                "unconditional" => SharingClass::Unconditional,
                "conditional" => SharingClass::Conditional,
                "not_shared" => SharingClass::NotShared,
                s => anyhow::bail!(
                    "catalog override: sharing '{s}' is not unconditional, conditional or not_shared"
                ),
            };
            c.overrides.insert((dataset, field.name, view), sharing);
        }
        Ok(c)
    }

    /// The sharing class of one field in one view; `None` if the field or
    /// view does not exist.
    pub fn sharing(&self, dataset: Dataset, field: &str, view: FieldView) -> Option<SharingClass> {
        let spec = dataset.spec().field(field)?;
        let default = spec.sharing_for(view)?;
        Some(
            self.overrides
                .get(&(dataset, spec.name, view))
                .copied()
                .unwrap_or(default),
        )
    }

    /// The catalog as `AdminService.GetCatalog` returns it.
    pub fn to_proto(&self) -> proto::Catalog {
        let mut c = defaults_proto();
        for d in &mut c.datasets {
            let dataset = Dataset::parse(&d.name).expect("own dataset");
            for f in &mut d.fields {
                for v in &mut f.views {
                    let view = FieldView::try_from(v.view).unwrap_or_default();
                    if let Some(s) = self.sharing(dataset, &f.name, view) {
                        v.sharing = s.into();
                    }
                }
            }
        }
        c
    }
}

fn defaults_proto() -> proto::Catalog {
    proto::Catalog {
        datasets: Dataset::ALL
            .iter()
            .map(|d| {
                let spec = d.spec();
                proto::CatalogDataset {
                    name: d.name().into(),
                    description: spec.description.into(),
                    source_department: d.source_department().into(),
                    fields: spec
                        .fields
                        .iter()
                        .map(|f| proto::CatalogField {
                            name: f.name.into(),
                            description: f.description.into(),
                            sensitivity: f.sensitivity.into(),
                            views: f
                                .views
                                .iter()
                                .map(|(v, s)| proto::ViewClass {
                                    view: (*v).into(),
                                    sharing: (*s).into(),
                                })
                                .collect(),
                        })
                        .collect(),
                }
            })
            .collect(),
        purposes: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_masked_view_has_a_mask_and_field_names_are_unique() {
        for d in Dataset::ALL {
            let spec = d.spec();
            let mut names: Vec<_> = spec.fields.iter().map(|f| f.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(names.len(), spec.fields.len(), "{}", d.name());
            for field in spec.fields {
                if field.sharing_for(FieldView::Masked).is_some() {
                    assert_ne!(field.mask, MaskKind::None, "{}.{}", d.name(), field.name);
                }
            }
        }
    }
}
