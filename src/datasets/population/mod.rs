//! 人口 — population base data, published by public security: the catalog
//! entry, the record, and its validation.

mod record;
mod validate;

use super::Dataset;
use super::catalog::{SET_BY_GATEWAY, CONDITIONAL, DatasetSpec, MASKABLE, MaskKind, OPEN, PROTECTED, field};
use crate::proto::FieldView::{Clear, Masked, Pseudonym};
use crate::proto::Sensitivity as S;
use crate::proto::SharingClass::{Conditional as Cond, Unconditional as Uncond};

pub static SPEC: DatasetSpec = DatasetSpec {
    name: "population",
    source_department: "public-security",
    dataset: Dataset::Population,
    description: "人口 — population base data, published by public security",
    fields: &[
        field(
            "id_number",
            "公民身份号码",
            S::Personal,
            MaskKind::CitizenId,
            PROTECTED,
        ),
        field(
            "name",
            "姓名",
            S::Personal,
            MaskKind::PersonName,
            &[(Clear, Uncond), (Masked, Uncond), (Pseudonym, Uncond)],
        ),
        field(
            "sex",
            "性别 (derived from id_number)",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        field(
            "birth_date",
            "出生日期 (derived from id_number)",
            S::Personal,
            MaskKind::BirthDate,
            &[(Clear, Cond), (Masked, Uncond)],
        ),
        field(
            "ethnicity",
            "民族, GB/T 3304",
            S::SensitivePersonal,
            MaskKind::None,
            CONDITIONAL,
        ),
        field(
            "marital_status",
            "婚姻状况, GB/T 2261.2",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        field("education", "文化程度", S::Personal, MaskKind::None, OPEN),
        field(
            "hukou_division",
            "户籍地区划",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        field(
            "hukou_address",
            "户籍地详址",
            S::Personal,
            MaskKind::None,
            CONDITIONAL,
        ),
        field(
            "residence_grid",
            "居住地网格",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        field(
            "residence_address",
            "居住地详址",
            S::Personal,
            MaskKind::Address,
            MASKABLE,
        ),
        field(
            "residence_status",
            "人户一致 / 人在户不在 / 户在人不在",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        field(
            "population_type",
            "户籍 / 流动 / 境外",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        field("phone", "联系电话", S::Personal, MaskKind::Phone, PROTECTED),
        field(
            "household_id",
            "户号",
            S::Personal,
            MaskKind::None,
            &[(Clear, Uncond), (Pseudonym, Uncond)],
        ),
        field(
            "relation_to_head",
            "与户主关系",
            S::Personal,
            MaskKind::None,
            OPEN,
        ),
        field(
            "tags",
            "ordinary special-population tags (低保, 特困, 残疾, 独居老人, 留守儿童)",
            S::SensitivePersonal,
            MaskKind::None,
            OPEN,
        ),
        field(
            "restricted_tags",
            "restricted tags (社区矫正, 刑满释放, 严重精神障碍)",
            S::SensitivePersonal,
            MaskKind::None,
            CONDITIONAL,
        ),
        field("deceased", "死亡注销", S::Personal, MaskKind::None, OPEN),
        field("updated_at", SET_BY_GATEWAY, S::Internal, MaskKind::None, OPEN),
        field("version", SET_BY_GATEWAY, S::Internal, MaskKind::None, OPEN),
    ],
};
