//! The catalog: every shared dataset's fields with sensitivity, sharing class
//! per view, and how a field is masked. It is the single source of field
//! names for grants, masking and validation.

use crate::proto::{self, FieldView, Sensitivity, SharingClass};
use std::collections::HashMap;

/// The three shared datasets, each with one source department (一数一源).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataset {
    Population,
    LegalEntity,
    Grid,
}

impl Dataset {
    pub const ALL: [Dataset; 3] = [Dataset::Population, Dataset::LegalEntity, Dataset::Grid];

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Population => "population",
            Dataset::LegalEntity => "legal_entity",
            Dataset::Grid => "grid",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.name() == s)
    }

    /// The department whose system is the authoritative publisher.
    pub fn source_department(self) -> &'static str {
        match self {
            Dataset::Population => "public-security",
            Dataset::LegalEntity => "market-regulation",
            Dataset::Grid => "grid-centre",
        }
    }

    pub fn spec(self) -> &'static DatasetSpec {
        match self {
            Dataset::Population => &POPULATION,
            Dataset::LegalEntity => &LEGAL_ENTITY,
            Dataset::Grid => &GRID,
        }
    }
}

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

pub struct DatasetSpec {
    pub dataset: Dataset,
    pub description: &'static str,
    pub fields: &'static [FieldSpec],
}

impl DatasetSpec {
    pub fn field(&self, name: &str) -> Option<&'static FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }
}

use FieldView::{Clear, Masked, Pseudonym};
use Sensitivity as S;
use SharingClass::{Conditional as Cond, Unconditional as Uncond};

const fn f(
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

const OPEN: &[(FieldView, SharingClass)] = &[(Clear, Uncond)];
const CONDITIONAL: &[(FieldView, SharingClass)] = &[(Clear, Cond)];
const MASKABLE: &[(FieldView, SharingClass)] = &[(Clear, Uncond), (Masked, Uncond)];
/// Clear value only through an approved request; masked and pseudonymous views freely.
const PROTECTED: &[(FieldView, SharingClass)] =
    &[(Clear, Cond), (Masked, Uncond), (Pseudonym, Uncond)];

static POPULATION: DatasetSpec = DatasetSpec {
    dataset: Dataset::Population,
    description: "人口 — population base data, published by public security",
    fields: &[
        f(
            "id_number",
            "公民身份号码",
            S::Personal,
            MaskKind::CitizenId,
            PROTECTED,
        ),
        f(
            "name",
            "姓名",
            S::Personal,
            MaskKind::PersonName,
            &[(Clear, Uncond), (Masked, Uncond), (Pseudonym, Uncond)],
        ),
        f(
            "sex",
            "性别 (derived from id_number)",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "birth_date",
            "出生日期 (derived from id_number)",
            S::Personal,
            MaskKind::BirthDate,
            &[(Clear, Cond), (Masked, Uncond)],
        ),
        f(
            "ethnicity",
            "民族, GB/T 3304",
            S::SensitivePersonal,
            MaskKind::None,
            CONDITIONAL,
        ),
        f(
            "marital_status",
            "婚姻状况, GB/T 2261.2",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        f("education", "文化程度", S::Personal, MaskKind::None, OPEN),
        f(
            "hukou_division",
            "户籍地区划",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "hukou_address",
            "户籍地详址",
            S::Personal,
            MaskKind::None,
            CONDITIONAL,
        ),
        f(
            "residence_grid",
            "居住地网格",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "residence_address",
            "居住地详址",
            S::Personal,
            MaskKind::Address,
            MASKABLE,
        ),
        f(
            "residence_status",
            "人户一致 / 人在户不在 / 户在人不在",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "population_type",
            "户籍 / 流动 / 境外",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        f("phone", "联系电话", S::Personal, MaskKind::Phone, PROTECTED),
        f(
            "household_id",
            "户号",
            S::Personal,
            MaskKind::None,
            &[(Clear, Uncond), (Pseudonym, Uncond)],
        ),
        f(
            "relation_to_head",
            "与户主关系",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "tags",
            "ordinary special-population tags (低保, 特困, 残疾, 独居老人, 留守儿童)",
            S::SensitivePersonal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "restricted_tags",
            "restricted tags (社区矫正, 刑满释放, 严重精神障碍)",
            S::SensitivePersonal,
            MaskKind::None,
            CONDITIONAL,
        ),
        f("deceased", "死亡注销", S::Personal, MaskKind::None, OPEN),
        f(
            "updated_at",
            "set by the gateway on every upsert",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "version",
            "set by the gateway on every upsert",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
    ],
};

static LEGAL_ENTITY: DatasetSpec = DatasetSpec {
    dataset: Dataset::LegalEntity,
    description: "法人 — legal entities, published by market regulation",
    fields: &[
        f("uscc", "统一社会信用代码", S::Public, MaskKind::None, OPEN),
        f("name", "名称", S::Public, MaskKind::None, OPEN),
        f(
            "category",
            "机构类别 (uscc positions 1-2)",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        f(
            "enterprise_type",
            "企业类型",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        f(
            "legal_representative",
            "法定代表人",
            S::Personal,
            MaskKind::PersonName,
            MASKABLE,
        ),
        f(
            "registered_capital",
            "注册资本",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        f(
            "established_date",
            "成立日期",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        f("term_end", "营业期限", S::Public, MaskKind::None, OPEN),
        f(
            "status",
            "存续 / 吊销 / 注销 / 撤销 / 迁出",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        f("domicile", "住所", S::Public, MaskKind::Address, MASKABLE),
        f(
            "domicile_grid",
            "住所网格",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "business_scope",
            "经营范围",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        f(
            "registration_authority",
            "登记机关",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        f(
            "industry_code",
            "行业代码, GB/T 4754",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        f(
            "phone",
            "联系电话",
            S::Personal,
            MaskKind::Phone,
            &[(Clear, Cond), (Masked, Uncond)],
        ),
        f(
            "updated_at",
            "set by the gateway on every upsert",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "version",
            "set by the gateway on every upsert",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
    ],
};

static GRID: DatasetSpec = DatasetSpec {
    dataset: Dataset::Grid,
    description: "网格 — grids and grid workers, published by the grid-management centre; region names and codes come with any grid grant",
    fields: &[
        f("grid_code", "网格编码", S::Internal, MaskKind::None, OPEN),
        f("name", "网格名称", S::Internal, MaskKind::None, OPEN),
        f(
            "community_code",
            "所属社区",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f("kind", "基础 / 专属", S::Internal, MaskKind::None, OPEN),
        f(
            "boundary",
            "边界 (polygon, CGCS2000)",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f("area_m2", "面积", S::Internal, MaskKind::None, OPEN),
        f(
            "household_count",
            "户数 (maintained by the gateway)",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "person_count",
            "人数 (maintained by the gateway)",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "entity_count",
            "法人数 (maintained by the gateway)",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "updated_at",
            "set by the gateway on every upsert",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "version",
            "set by the gateway on every upsert",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "worker.worker_id",
            "网格员编号",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "worker.name",
            "网格员姓名",
            S::Personal,
            MaskKind::PersonName,
            MASKABLE,
        ),
        f(
            "worker.phone",
            "网格员电话 (a published service number)",
            S::Personal,
            MaskKind::Phone,
            MASKABLE,
        ),
        f(
            "worker.role",
            "网格长 / 专职 / 兼职",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "worker.grid_code",
            "所属网格",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "worker.since",
            "任职日期",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "worker.updated_at",
            "set by the gateway on every upsert",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        f(
            "worker.version",
            "set by the gateway on every upsert",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
    ],
};

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
