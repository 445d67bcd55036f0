//! First start. In demo mode (the embedded default): the dev PKI, the demo
//! departments with jurisdictions, certificates, registered tokens, the
//! purposes they cite and their grants (each with an approved access request
//! as its provenance), and the demo district. In production: nothing — the
//! first administrator is enrolled once with `govshare admin bootstrap`
//! ([`enrol_first_admin`]), which is the log's first `ADMIN` entry.

use crate::audit::AuditLog;
use crate::auth::token::{KeyRing, thumbprint};
use crate::catalog::Dataset;
use crate::certs::ClientCa;
use crate::clock;
use crate::config::Config;
use crate::demo::{self, DISTRICT_CODE};
use crate::directory::RoleDepartments;
use crate::pipeline::RecordStore;
use crate::pki::Pki;
use crate::proto::{
    AccessRequest, AccessRequestStatus, AdminChange, AuditDecision, AuditEntry, Department,
    DepartmentStatus, EntryKind, FieldGrant, FieldView, Grant, GrantLimits, Operation, Purpose,
    PurposeStatus, RegisteredCertificate, TokenInfo,
};
use crate::store::Store;
use anyhow::{Context, Result, bail};
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
];

/// Lifetime of the demo tokens.
pub const DEMO_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

const IDENTITIES_DONE: &str = "bootstrap.identities";
const DEMO_DONE: &str = "bootstrap.demo_data";
const FIRST_ADMIN_DONE: &str = "bootstrap.first_admin";
const EXAMPLE_ID: &str = "demo.example_id";
const BOOTSTRAP: &str = "bootstrap";

/// The purposes the demo's grants and walkthroughs cite.
const DEMO_PURPOSES: &[(&str, &str, &str)] = &[
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
];

/// Runs whatever part of the first start has not happened yet; returns a
/// line per step taken (empty when there was nothing to do). Production
/// creates nothing.
pub fn first_start(
    cfg: &Config,
    store: &Store,
    records: &RecordStore,
    keys: &KeyRing,
) -> Result<Vec<String>> {
    let mut done = Vec::new();
    if !cfg.demo {
        return Ok(done);
    }
    let pki = Pki::at(&cfg.pki_dir());
    if !pki.exists() {
        pki.init()?;
        done.push(format!("created a dev PKI in {}", pki.dir().display()));
    }
    if cfg.demo_persons > 0 && store.meta(DEMO_DONE)?.is_none() {
        done.push(load_demo(store, records, cfg.demo_seed, cfg.demo_persons)?);
    }
    if store.meta(IDENTITIES_DONE)?.is_none() {
        for (code, name, basis) in DEMO_PURPOSES {
            store.put_purpose(&Purpose {
                code: (*code).into(),
                name: (*name).into(),
                legal_basis: (*basis).into(),
                status: PurposeStatus::Active.into(),
                registered_by: BOOTSTRAP.into(),
                registered_at: Some(clock::to_timestamp(clock::now())),
                ..Default::default()
            })?;
        }
        for ident in IDENTITIES {
            enroll(store, keys, &pki, ident)?;
        }
        for mut g in demo_grants() {
            if needs_request(&g) {
                g.access_request_id = format!("ar-{}", g.id);
                store.put_access_request(&provenance(&g))?;
            }
            store.put_grant(&g)?;
        }
        store.put_meta(IDENTITIES_DONE, b"1")?;
        done.push(format!(
            "enrolled {} demo identities with certificates, tokens, purposes and grants",
            IDENTITIES.len()
        ));
    }
    store.sync()?;
    records.sync()?;
    Ok(done)
}

/// What production prints while no administrator exists.
pub fn enrolment_hint(cfg: &Config, store: &Store) -> Result<Option<String>> {
    if cfg.demo || store.meta(FIRST_ADMIN_DONE)?.is_some() {
        return Ok(None);
    }
    Ok(Some(format!(
        "no administrator exists yet. On this host, enrol the first one (once) with:\n  govshare admin bootstrap --data-dir {} --dept {} --cert admin.pem --out admin.token",
        cfg.data_dir.display(),
        cfg.admin_departments[0]
    )))
}

/// Writes records in chunks of a few thousand, one atomic write each.
fn load_all<R: crate::records::Record + Clone>(records: &RecordStore, all: &[R]) -> Result<()> {
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

fn enroll(store: &Store, keys: &KeyRing, pki: &Pki, ident: &Identity) -> Result<()> {
    let now = Some(clock::to_timestamp(clock::now()));
    if store.department(ident.department)?.is_none() {
        store.put_department(&Department {
            id: ident.department.into(),
            name: ident.department_name.into(),
            status: DepartmentStatus::Active.into(),
            created_at: now,
            jurisdiction: vec![ident.jurisdiction.into()],
        })?;
    }
    let cert = pki.issue_client(ident.id)?;
    let thumb = thumbprint(&cert.der);
    store.put_certificate(&RegisteredCertificate {
        thumbprint: thumb.clone(),
        department: ident.department.into(),
        subject: ident.id.into(),
        registered_at: now,
        ..Default::default()
    })?;
    let roles: Vec<String> = ident.roles.iter().map(|r| r.to_string()).collect();
    let (token, claims) = keys.issue(
        ident.department,
        ident.id,
        &roles,
        &thumb,
        DEMO_TOKEN_LIFETIME,
    )?;
    store.put_token(&token_info(&claims, &roles, BOOTSTRAP))?;
    pki.write_secret(&format!("{}.token", ident.id), &token)
}

fn token_info(claims: &crate::auth::token::Claims, roles: &[String], by: &str) -> TokenInfo {
    TokenInfo {
        jti: claims.jti.clone(),
        department: claims.dept.clone(),
        subject: claims.sub.clone(),
        roles: roles.to_vec(),
        certificate_thumbprint: claims.cnf.x5t_s256.clone(),
        issued_at: Some(prost_types::Timestamp {
            seconds: claims.iat,
            nanos: 0,
        }),
        expires_at: Some(prost_types::Timestamp {
            seconds: claims.exp,
            nanos: 0,
        }),
        issued_by: by.into(),
        ..Default::default()
    }
}

/// Whether a grant names a conditionally shared view (by the default catalog).
fn needs_request(g: &Grant) -> bool {
    let catalog = crate::catalog::Catalog::default();
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
fn provenance(g: &Grant) -> AccessRequest {
    AccessRequest {
        id: g.access_request_id.clone(),
        department: g.department.clone(),
        dataset: g.dataset.clone(),
        operations: g.operations.clone(),
        fields: g.fields.clone(),
        regions: g.regions.clone(),
        purposes: g.purposes.clone(),
        limits: g.limits,
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

/// What enrolling the first administrator needs.
pub struct FirstAdmin<'a> {
    pub department: &'a str,
    pub department_name: &'a str,
    pub certificate_pem: &'a str,
    pub subject: &'a str,
    pub lifetime: Duration,
}

/// Enrols the first administrator, once: registers the department
/// (jurisdiction `*`) and its certificate, issues an admin token bound to it,
/// and records all of it as an `ADMIN` entry — durable before anything is
/// stored. Any later attempt is refused.
pub async fn enrol_first_admin(
    store: &Store,
    log: &AuditLog,
    keys: &KeyRing,
    client_ca: &ClientCa,
    roles: &RoleDepartments,
    a: FirstAdmin<'_>,
) -> Result<String> {
    // One enrolment at a time: between the check below and the flag set
    // after the durable audit entry, a second request would pass the check
    // too (eight simultaneous requests enrolled eight administrators).
    static ENROLLING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = ENROLLING.lock().await;
    if store.meta(FIRST_ADMIN_DONE)?.is_some() || store.meta(IDENTITIES_DONE)?.is_some() {
        bail!(
            "an administrator was already enrolled; further administrators are managed with `govshare admin` by an existing one"
        );
    }
    if a.subject.is_empty() || a.subject.len() > 128 {
        bail!("the subject (the administrator's client system) must have 1-128 bytes");
    }
    if a.department_name.len() > 128 {
        bail!("the department name must have at most 128 bytes");
    }
    if !roles.admin.iter().any(|d| d == a.department) {
        bail!(
            "'{}' is not one of the configured admin_departments ({}); add it there first",
            a.department,
            roles.admin.join(", ")
        );
    }
    let verified = client_ca
        .verify_pem(a.certificate_pem)
        .map_err(anyhow::Error::msg)?;
    let now = clock::to_timestamp(clock::now());
    let department = Department {
        id: a.department.into(),
        name: a.department_name.into(),
        status: DepartmentStatus::Active.into(),
        created_at: Some(now),
        jurisdiction: vec!["*".into()],
    };
    let cert = RegisteredCertificate {
        thumbprint: verified.thumbprint.clone(),
        department: a.department.into(),
        subject: verified.subject,
        registered_at: Some(now),
        not_after: Some(prost_types::Timestamp {
            seconds: verified.not_after,
            nanos: 0,
        }),
        ..Default::default()
    };
    let admin_roles = vec!["admin".to_string()];
    let (token, claims) = keys.issue(
        a.department,
        a.subject,
        &admin_roles,
        &verified.thumbprint,
        a.lifetime,
    )?;
    let info = token_info(&claims, &admin_roles, "govshare admin bootstrap");
    log.append(AuditEntry {
        kind: EntryKind::Admin.into(),
        method: "govshare admin bootstrap".into(),
        decision: AuditDecision::Allow.into(),
        message: format!(
            "enrolled the first administrator: department '{}', certificate {}, token {}",
            a.department, cert.thumbprint, info.jti
        ),
        change: Some(AdminChange {
            object: "department".into(),
            object_id: a.department.into(),
            before_json: String::new(),
            after_json: crate::json::to_string(&department),
        }),
        ..Default::default()
    })
    .await
    .context("recording the enrolment in the audit log")?;
    store.put_department(&department)?;
    store.put_certificate(&cert)?;
    store.put_token(&info)?;
    store.put_meta(FIRST_ADMIN_DONE, b"1")?;
    store.sync()?;
    Ok(token)
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
