//! 法人 — legal entities, published by market regulation: the catalog
//! entry, the record, and its validation.

mod record;
mod validate;

use super::Dataset;
use super::catalog::{SET_BY_GATEWAY, DatasetSpec, MASKABLE, MaskKind, OPEN, field};
use crate::proto::FieldView::{Clear, Masked};
use crate::proto::Sensitivity as S;
use crate::proto::SharingClass::{Conditional as Cond, Unconditional as Uncond};

pub static SPEC: DatasetSpec = DatasetSpec {
    name: "legal_entity",
    source_department: "market-regulation",
    dataset: Dataset::LegalEntity,
    description: "法人 — legal entities, published by market regulation",
    fields: &[
        field("uscc", "统一社会信用代码", S::Public, MaskKind::None, OPEN),
        field("name", "名称", S::Public, MaskKind::None, OPEN),
        field(
            "category",
            "机构类别 (uscc positions 1-2)",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        field(
            "enterprise_type",
            "企业类型",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        field(
            "legal_representative",
            "法定代表人",
            S::Personal,
            MaskKind::PersonName,
            MASKABLE,
        ),
        field(
            "registered_capital",
            "注册资本",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        field(
            "established_date",
            "成立日期",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        field("term_end", "营业期限", S::Public, MaskKind::None, OPEN),
        field(
            "status",
            "存续 / 吊销 / 注销 / 撤销 / 迁出",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        field("domicile", "住所", S::Public, MaskKind::Address, MASKABLE),
        field(
            "domicile_grid",
            "住所网格",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        field(
            "business_scope",
            "经营范围",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        field(
            "registration_authority",
            "登记机关",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        field(
            "industry_code",
            "行业代码, GB/T 4754",
            S::Public,
            MaskKind::None,
            OPEN,
        ),
        field(
            "phone",
            "联系电话",
            S::Personal,
            MaskKind::Phone,
            &[(Clear, Cond), (Masked, Uncond)],
        ),
        field("updated_at", SET_BY_GATEWAY, S::Internal, MaskKind::None, OPEN),
        field("version", SET_BY_GATEWAY, S::Internal, MaskKind::None, OPEN),
    ],
};
