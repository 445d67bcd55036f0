//! The demo's identities, purposes and grants, and loading a generated
//! district: what the embedded default seeds on its first start
//! (`gateway::first_start` enrols the identities).

use super::{self as demo, DISTRICT_CODE};
use crate::base::clock;
use crate::control::store::Store;
use crate::datasets::Dataset;
use crate::pipeline::RecordStore;
use crate::proto::{
    AccessRequest, AccessRequestStatus, FieldGrant, FieldView, Grant, GrantLimits, Operation,
};
use anyhow::Result;
use std::time::Duration;

/// A demo identity: client id (file names), department, department name, roles.
pub struct Identity {
    pub id: &'static str,
    pub department: &'static str,
    pub department_name: &'static str,
    pub roles: &'static [&'static str],
    /// Region prefixes the department serves.
    pub jurisdiction: &'static str,
}

pub const IDENTITIES: &[Identity] = &[
    Identity {
        id: "admin",
        department: "gateway-admin",
        department_name: "网关管理",
        jurisdiction: "*",
        roles: &["admin"],
    },
    Identity {
        id: "auditor",
        department: "audit-office",
        department_name: "审计办公室",
        jurisdiction: "*",
        roles: &["auditor"],
    },
    Identity {
        id: "public-security",
        department: "public-security",
        department_name: "公安局",
        jurisdiction: "310115",
        roles: &["publisher", "puller"],
    },
    Identity {
        id: "market-regulation",
        department: "market-regulation",
        department_name: "市场监督管理局",
        jurisdiction: "310115",
        roles: &["publisher", "puller"],
    },
    Identity {
        id: "grid-centre",
        department: "grid-centre",
        department_name: "网格化管理中心",
        jurisdiction: "310115",
        roles: &["publisher", "puller"],
    },
    Identity {
        id: "civil-affairs",
        department: "civil-affairs",
        department_name: "民政局",
        jurisdiction: "310115",
        roles: &["puller"],
    },
    Identity {
        id: "street-office",
        department: "street-office",
        department_name: "街道办事处",
        jurisdiction: "310115001",
        roles: &["puller"],
    },
    Identity {
        id: "resident-portal",
        department: "resident-portal",
        department_name: "一网通办（居民端）",
        jurisdiction: "310115",
        roles: &["resident-portal"],
    },
];

/// Lifetime of the demo tokens: a year, so a demo clock moved past a
/// disclosure delay (`demo_clock_offset`) still has working identities.
pub const DEMO_TOKEN_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

const DEMO_DONE: &str = "bootstrap.demo_data";
const EXAMPLE_ID: &str = "demo.example_id";
pub const BOOTSTRAP: &str = "bootstrap";

/// The purposes the demo's grants and walkthroughs cite.
pub const DEMO_PURPOSES: &[(&str, &str, &str)] = &[
    ("social-assistance", "社会救助", "社会救助暂行办法"),
    (
        "grid-event-handling",
        "网格事件处置",
        "城市网格化管理规定（示范）",
    ),
    ("public-security", "公安业务", "人民警察法"),
    ("market-supervision", "市场监管", "市场主体登记管理条例"),
    ("housing-security", "住房保障", "公共租赁住房管理办法"),
    ("epidemic-response", "疫情防控", "传染病防治法"),
    ("criminal-investigation", "刑事侦查", "刑事诉讼法"),
];

/// Days the demo's covert-investigation grant hides its pulls from the
/// resident tracker.
pub const COVERT_DELAY_DAYS: u32 = 90;

/// Whether the demo district was loaded already.
pub fn district_loaded(store: &Store) -> Result<bool> {
    Ok(store.meta(DEMO_DONE)?.is_some())
}

/// Writes records in chunks of a few thousand, one atomic write each.
fn load_all<R: crate::datasets::Record + Clone>(records: &RecordStore, all: &[R]) -> Result<()> {
    for chunk in all.chunks(4096) {
        records.upsert_all(chunk.to_vec())?;
    }
    Ok(())
}

/// Loads a generated district straight into the record store.
pub fn load_demo(
    store: &Store,
    records: &RecordStore,
    seed: u64,
    persons: usize,
) -> Result<String> {
    let d = demo::generate(seed, persons);
    load_all(records, &d.regions)?;
    load_all(records, &d.grids)?;
    load_all(records, &d.workers)?;
    load_all(records, &d.persons)?;
    load_all(records, &d.entities)?;
    if let Some(id) = d.persons.first().and_then(|p| p.id_number.as_ref()) {
        store.put_meta(EXAMPLE_ID, id.as_bytes())?;
    }
    store.put_meta(DEMO_DONE, b"1")?;
    Ok(format!(
        "loaded the demo district {DISTRICT_CODE}: {} grids, {} persons, {} legal entities, {} grid workers",
        d.grids.len(),
        d.persons.len(),
        d.entities.len(),
        d.workers.len()
    ))
}

/// A citizen ID of the demo district, for the example call printed at start.
pub fn example_id(store: &Store) -> Option<String> {
    store
        .meta(EXAMPLE_ID)
        .ok()
        .flatten()
        .and_then(|b| String::from_utf8(b).ok())
}

/// Whether a grant needs an approved request as its provenance: it names
/// a conditionally shared view (by the default catalog), or a disclosure
/// delay.
pub fn needs_request(g: &Grant) -> bool {
    if g.disclosure_delay_days > 0 {
        return true;
    }
    let catalog = crate::datasets::catalog::Catalog::default();
    let Some(dataset) = Dataset::parse(&g.dataset) else {
        return false;
    };
    g.fields.iter().any(|f| {
        FieldView::try_from(f.view).is_ok_and(|v| {
            catalog.sharing(dataset, &f.field, v) == Some(crate::proto::SharingClass::Conditional)
        })
    })
}

/// The approved access request a demo grant carries as its provenance, so
/// the catalog in force releases its conditional views.
pub fn provenance(g: &Grant) -> AccessRequest {
    AccessRequest {
        id: g.access_request_id.clone(),
        department: g.department.clone(),
        dataset: g.dataset.clone(),
        operations: g.operations.clone(),
        fields: g.fields.clone(),
        regions: g.regions.clone(),
        purposes: g.purposes.clone(),
        limits: g.limits,
        disclosure_delay_days: g.disclosure_delay_days,
        justification: "demo seed".into(),
        legal_basis: g.legal_basis.clone(),
        status: AccessRequestStatus::Approved.into(),
        submitted_by: BOOTSTRAP.into(),
        submitted_at: g.created_at,
        decided_by: BOOTSTRAP.into(),
        decided_at: g.created_at,
        decision_reason: "demo seed".into(),
        grant_id: g.id.clone(),
        ..Default::default()
    }
}

fn all_clear(dataset: Dataset) -> Vec<(&'static str, FieldView)> {
    dataset
        .spec()
        .fields
        .iter()
        .filter(|f| f.sharing_for(FieldView::Clear).is_some())
        .map(|f| (f.name, FieldView::Clear))
        .collect()
}

fn demo_grant(
    department: &str,
    dataset: Dataset,
    fields: Vec<(&str, FieldView)>,
    region: &str,
    purpose: &str,
    max_records_per_call: u32,
) -> Grant {
    Grant {
        id: format!("demo-{department}-{}", dataset.name()),
        department: department.into(),
        dataset: dataset.name().into(),
        operations: vec![
            Operation::Get as i32,
            Operation::BatchGet as i32,
            Operation::List as i32,
        ],
        fields: fields
            .into_iter()
            .map(|(f, v)| FieldGrant {
                field: f.into(),
                view: v as i32,
            })
            .collect(),
        regions: vec![region.into()],
        purposes: vec![purpose.into()],
        limits: Some(GrantLimits {
            max_records_per_call,
            ..Default::default()
        }),
        legal_basis: "demo seed".into(),
        created_by: "bootstrap".into(),
        approved_by: "bootstrap".into(),
        created_at: Some(clock::to_timestamp(clock::now())),
        ..Default::default()
    }
}

/// The demo grants the README and the tests rely on.
pub fn demo_grants() -> Vec<Grant> {
    use FieldView::{Clear, Masked, Pseudonym};
    let first_street = format!("{DISTRICT_CODE}001");
    vec![
        demo_grant(
            "public-security",
            Dataset::Population,
            all_clear(Dataset::Population),
            DISTRICT_CODE,
            "public-security",
            0,
        ),
        demo_grant(
            "market-regulation",
            Dataset::LegalEntity,
            all_clear(Dataset::LegalEntity),
            DISTRICT_CODE,
            "market-supervision",
            0,
        ),
        demo_grant(
            "grid-centre",
            Dataset::Grid,
            all_clear(Dataset::Grid),
            DISTRICT_CODE,
            "grid-event-handling",
            0,
        ),
        demo_grant(
            "civil-affairs",
            Dataset::Population,
            vec![
                ("name", Clear),
                ("id_number", Masked),
                ("phone", Masked),
                ("birth_date", Masked),
                ("residence_grid", Clear),
                ("tags", Clear),
                ("residence_address", Clear),
            ],
            DISTRICT_CODE,
            "social-assistance",
            100,
        ),
        demo_grant(
            "street-office",
            Dataset::Population,
            vec![
                ("name", Clear),
                ("id_number", Pseudonym),
                ("residence_grid", Clear),
                ("residence_address", Clear),
            ],
            &first_street,
            "grid-event-handling",
            0,
        ),
        demo_grant(
            "street-office",
            Dataset::LegalEntity,
            vec![
                ("name", Clear),
                ("uscc", Clear),
                ("status", Clear),
                ("domicile", Clear),
                ("domicile_grid", Clear),
            ],
            &first_street,
            "grid-event-handling",
            0,
        ),
        demo_grant(
            "street-office",
            Dataset::Grid,
            all_clear(Dataset::Grid),
            &first_street,
            "grid-event-handling",
            0,
        ),
        // A covert investigation: its pulls reach the log at once and the
        // resident tracker only after the delay.
        Grant {
            id: "demo-public-security-covert".into(),
            disclosure_delay_days: COVERT_DELAY_DAYS,
            legal_basis: "刑事诉讼法 第五十四条（示范）".into(),
            ..demo_grant(
                "public-security",
                Dataset::Population,
                vec![("name", Clear), ("id_number", Clear), ("phone", Clear)],
                DISTRICT_CODE,
                "criminal-investigation",
                0,
            )
        },
    ]
}
