//! The first administrator of a production gateway, enrolled once with
//! `govshare admin bootstrap` (scopes.md, "Bootstrap"): the department, its
//! certificate and an admin token, recorded as the log's first `ADMIN`
//! entry before anything is stored. Any later attempt is refused.

use crate::audit::AuditLog;
use crate::base::clock;
use crate::control::certs::ClientCa;
use crate::control::keys::{Claims, KeyRing};
use crate::control::roles::RoleDepartments;
use crate::control::store::Store;
use crate::proto::{
    AdminChange, AuditDecision, AuditEntry, Department, DepartmentStatus, EntryKind,
    RegisteredCertificate, TokenInfo,
};
use crate::store::WriteGate;
use anyhow::{Context, Result, bail};
use std::time::Duration;

/// Set once the demo identities (with their administrator) exist.
pub const IDENTITIES_DONE: &str = "bootstrap.identities";
/// Set once the first administrator was enrolled.
pub const FIRST_ADMIN_DONE: &str = "bootstrap.first_admin";

/// Whether an administrator exists, enrolled or seeded by the demo.
pub fn administrator_exists(store: &Store) -> Result<bool> {
    Ok(store.meta(FIRST_ADMIN_DONE)?.is_some() || store.meta(IDENTITIES_DONE)?.is_some())
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
    gate: &WriteGate,
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
    let _permit = gate.change().await;
    if administrator_exists(store)? {
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
            after_json: crate::proto::json::to_string(&department),
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

/// What the store keeps of an issued token: its identity and bounds, never
/// the token itself.
pub fn token_info(claims: &Claims, roles: &[String], by: &str) -> TokenInfo {
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
