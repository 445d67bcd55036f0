//! First start of the embedded default: the dev PKI, the demo departments
//! with certificates, tokens and grants, and the demo district.

use crate::auth::token::{KeyRing, thumbprint};
use crate::catalog::Dataset;
use crate::clock;
use crate::config::Config;
use crate::demo::{self, DISTRICT_CODE};
use crate::pki::Pki;
use crate::proto::{
    Department, DepartmentStatus, FieldGrant, FieldView, Grant, GrantLimits, Operation,
    RegisteredCertificate,
};
use crate::store::Store;
use anyhow::Result;
use std::time::Duration;

/// A demo identity: client id (file names), department, department name, roles.
pub struct Identity {
    pub id: &'static str,
    pub department: &'static str,
    pub department_name: &'static str,
    pub roles: &'static [&'static str],
}

pub const IDENTITIES: &[Identity] = &[
    Identity {
        id: "admin",
        department: "gateway-admin",
        department_name: "网关管理",
        roles: &["admin"],
    },
    Identity {
        id: "auditor",
        department: "audit-office",
        department_name: "审计办公室",
        roles: &["auditor"],
    },
    Identity {
        id: "public-security",
        department: "public-security",
        department_name: "公安局",
        roles: &["publisher", "puller"],
    },
    Identity {
        id: "market-regulation",
        department: "market-regulation",
        department_name: "市场监督管理局",
        roles: &["publisher", "puller"],
    },
    Identity {
        id: "grid-centre",
        department: "grid-centre",
        department_name: "网格化管理中心",
        roles: &["publisher", "puller"],
    },
    Identity {
        id: "civil-affairs",
        department: "civil-affairs",
        department_name: "民政局",
        roles: &["puller"],
    },
    Identity {
        id: "street-office",
        department: "street-office",
        department_name: "街道办事处",
        roles: &["puller"],
    },
];

/// Lifetime of the demo tokens.
pub const DEMO_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

const IDENTITIES_DONE: &str = "bootstrap.identities";
const DEMO_DONE: &str = "bootstrap.demo_data";

/// Runs whatever part of the first start has not happened yet; returns a
/// line per step taken (empty when there was nothing to do).
pub fn first_start(cfg: &Config, store: &Store, keys: &KeyRing) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if !cfg.demo {
        return Ok(done);
    }
    let pki = Pki::at(&cfg.pki_dir());
    if !pki.exists() {
        pki.init()?;
        done.push(format!("created a dev PKI in {}", pki.dir().display()));
    }
    if store.meta(IDENTITIES_DONE)?.is_none() {
        for ident in IDENTITIES {
            enroll(store, keys, &pki, ident)?;
        }
        for g in demo_grants() {
            store.put_grant(&g)?;
        }
        store.put_meta(IDENTITIES_DONE, b"1")?;
        done.push(format!(
            "enrolled {} demo identities with certificates, tokens and grants",
            IDENTITIES.len()
        ));
    }
    if cfg.demo_persons > 0 && store.meta(DEMO_DONE)?.is_none() {
        done.push(load_demo(store, cfg.demo_seed, cfg.demo_persons)?);
    }
    store.sync()?;
    Ok(done)
}

/// Loads a generated district straight into the store.
pub fn load_demo(store: &Store, seed: u64, persons: usize) -> Result<String> {
    let d = demo::generate(seed, persons);
    for r in &d.regions {
        store.upsert(r.clone())?;
    }
    for g in &d.grids {
        store.upsert(g.clone())?;
    }
    for w in &d.workers {
        store.upsert(w.clone())?;
    }
    for p in &d.persons {
        store.upsert(p.clone())?;
    }
    for e in &d.entities {
        store.upsert(e.clone())?;
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

fn enroll(store: &Store, keys: &KeyRing, pki: &Pki, ident: &Identity) -> Result<()> {
    let now = Some(clock::to_timestamp(clock::now()));
    if store.department(ident.department)?.is_none() {
        store.put_department(&Department {
            id: ident.department.into(),
            name: ident.department_name.into(),
            status: DepartmentStatus::Active.into(),
            created_at: now,
        })?;
    }
    let cert = pki.issue_client(ident.id)?;
    let thumb = thumbprint(&cert.der);
    store.put_certificate(&RegisteredCertificate {
        thumbprint: thumb.clone(),
        department: ident.department.into(),
        subject: ident.id.into(),
        registered_at: now,
    })?;
    let roles: Vec<String> = ident.roles.iter().map(|r| r.to_string()).collect();
    let (token, _) = keys.issue(
        ident.department,
        ident.id,
        &roles,
        &thumb,
        DEMO_TOKEN_LIFETIME,
    )?;
    pki.write_secret(&format!("{}.token", ident.id), &token)
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
    ]
}
