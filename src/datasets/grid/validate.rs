//! Validating published grids (boundary, community), region nodes (level
//! and parent derived from the code) and grid workers.

use crate::datasets::check::{grid_code, known_enum, opt_date, phone, required};
use crate::datasets::codes::{Level, RegionCode};
use crate::datasets::record::Checked;
use crate::proto::{Grid, GridKind, GridWorker, RegionNode, WorkerRole};

pub(super) fn grid(mut g: Grid) -> Result<Checked<Grid>, String> {
    let code = grid_code("grid_code", &g.grid_code)?;
    required("name", &g.name)?;
    let community = code.parent().expect("a grid has a community").to_string();
    if g.community_code.as_ref().is_some_and(|c| *c != community) {
        return Err(format!(
            "community_code: a grid {code} lies in community {community}"
        ));
    }
    known_enum::<GridKind>("kind", g.kind)?;
    let outer = g.boundary.as_ref().and_then(|b| b.rings.first());
    if outer.is_none_or(|r| r.points.len() < 3) {
        return Err("boundary: needs an outer ring of at least 3 points".into());
    }
    for p in g
        .boundary
        .iter()
        .flat_map(|b| &b.rings)
        .flat_map(|r| &r.points)
    {
        if !(p.lon.is_finite()
            && p.lat.is_finite()
            && (-180.0..=180.0).contains(&p.lon)
            && (-90.0..=90.0).contains(&p.lat))
        {
            return Err(format!(
                "boundary: ({}, {}) is not a longitude/latitude in degrees",
                p.lon, p.lat
            ));
        }
    }
    if g.area_m2.is_some_and(|a| !a.is_finite() || a < 0.0) {
        return Err("area_m2: must be a non-negative number".into());
    }
    g.community_code = Some(community);
    // Counts are maintained by the gateway, never taken from the publisher.
    g.household_count = None;
    g.person_count = None;
    g.entity_count = None;
    g.views.clear();
    Ok(Checked {
        record: g,
        warnings: Vec::new(),
    })
}

pub(super) fn region(mut r: RegionNode) -> Result<Checked<RegionNode>, String> {
    let code = RegionCode::parse(&r.code).map_err(|e| format!("code: {e}"))?;
    if code.level() == Level::Grid {
        return Err("code: grids are published as Grid records, not region nodes".into());
    }
    if r.name.trim().is_empty() {
        return Err("name: is required".into());
    }
    r.level = code.level().to_proto() as i32;
    r.parent_code = code.parent().map(|p| p.to_string()).unwrap_or_default();
    r.children.clear();
    Ok(Checked {
        record: r,
        warnings: Vec::new(),
    })
}

pub(super) fn worker(mut w: GridWorker) -> Result<Checked<GridWorker>, String> {
    let id = required("worker_id", &w.worker_id)?;
    if id.len() > 40 || id.contains('\0') {
        return Err("worker_id: at most 40 characters".into());
    }
    required("name", &w.name)?;
    grid_code("grid_code", &w.grid_code)?;
    phone("phone", &w.phone)?;
    known_enum::<WorkerRole>("role", w.role)?;
    opt_date("since", &w.since)?;
    w.views.clear();
    Ok(Checked {
        record: w,
        warnings: Vec::new(),
    })
}
