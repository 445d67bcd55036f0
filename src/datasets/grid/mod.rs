//! 网格 — grids and grid workers, published by the grid-management centre,
//! with the region tree above them: the catalog entry, the records, their
//! validation, and locating the grid that contains a point.

pub mod locate;
mod record;
mod validate;

use super::Dataset;
use super::catalog::{SET_BY_GATEWAY, DatasetSpec, MASKABLE, MaskKind, OPEN, field};
use crate::proto::Sensitivity as S;

pub static SPEC: DatasetSpec = DatasetSpec {
    name: "grid",
    source_department: "grid-centre",
    dataset: Dataset::Grid,
    description: "网格 — grids and grid workers, published by the grid-management centre; region names and codes come with any grid grant",
    fields: &[
        field("grid_code", "网格编码", S::Internal, MaskKind::None, OPEN),
        field("name", "网格名称", S::Internal, MaskKind::None, OPEN),
        field(
            "community_code",
            "所属社区",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        field("kind", "基础 / 专属", S::Internal, MaskKind::None, OPEN),
        field(
            "boundary",
            "边界 (polygon, CGCS2000)",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        field("area_m2", "面积", S::Internal, MaskKind::None, OPEN),
        field(
            "household_count",
            "户数 (maintained by the gateway)",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        field(
            "person_count",
            "人数 (maintained by the gateway)",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        field(
            "entity_count",
            "法人数 (maintained by the gateway)",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        field("updated_at", SET_BY_GATEWAY, S::Internal, MaskKind::None, OPEN),
        field("version", SET_BY_GATEWAY, S::Internal, MaskKind::None, OPEN),
        field(
            "worker.worker_id",
            "网格员编号",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        field(
            "worker.name",
            "网格员姓名",
            S::Personal,
            MaskKind::PersonName,
            MASKABLE,
        ),
        field(
            "worker.phone",
            "网格员电话 (a published service number)",
            S::Personal,
            MaskKind::Phone,
            MASKABLE,
        ),
        field(
            "worker.role",
            "网格长 / 专职 / 兼职",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        field(
            "worker.grid_code",
            "所属网格",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        field(
            "worker.since",
            "任职日期",
            S::Internal,
            MaskKind::None,
            OPEN,
        ),
        field("worker.updated_at", SET_BY_GATEWAY, S::Internal, MaskKind::None, OPEN),
        field("worker.version", SET_BY_GATEWAY, S::Internal, MaskKind::None, OPEN),
    ],
};
