//! The purpose registry and the catalog as callers see it. Purposes are
//! registered by administrators; grants, requests and pulls may name only
//! registered, active ones.

use super::{AdminApi, Plan, Write, actor, internal, required_reason};
use crate::auth::Principal;
use crate::base::clock;
use crate::control::policy::is_department_id;
use crate::proto::*;
use tonic::Status;

/// Purpose codes: lower-case letters, digits and '-', like department ids.
fn check_code(code: &str) -> Result<(), Status> {
    let ok = (2..=64).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !code.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "code: '{}' must be 2–64 lower-case letters, digits or '-', e.g. housing-security",
            crate::base::text::cap_for_message(code)
        )))
    }
}

impl AdminApi {
    pub(super) fn plan_get_catalog(
        &self,
        _: &Principal,
        _: GetCatalogRequest,
    ) -> Result<Plan<Catalog>, Status> {
        let mut catalog = self.pipeline.directory().catalog().to_proto();
        catalog.purposes = self.store.purposes().map_err(internal)?;
        Ok(Plan::read(catalog))
    }

    pub(super) fn plan_register_purpose(
        &self,
        p: &Principal,
        r: RegisterPurposeRequest,
    ) -> Result<Plan<Purpose>, Status> {
        let asked = r.purpose.ok_or_else(|| {
            Status::invalid_argument("purpose: the purpose to register is missing")
        })?;
        check_code(&asked.code)?;
        if asked.name.trim().is_empty() || asked.name.chars().count() > 128 {
            return Err(Status::invalid_argument(
                "name: give the purpose a name (1–128 characters)",
            ));
        }
        let legal_basis = asked.legal_basis.trim();
        if legal_basis.is_empty() || legal_basis.len() > 4096 {
            return Err(Status::invalid_argument(
                "legal_basis: cite the law or regulation this purpose serves (at most 4096 bytes)",
            ));
        }
        if let Some(d) = asked.departments.iter().find(|d| !is_department_id(d)) {
            return Err(Status::invalid_argument(format!(
                "departments: '{}' is not a department id",
                crate::base::text::cap_for_message(d)
            )));
        }
        if self.store.purpose(&asked.code).map_err(internal)?.is_some() {
            return Err(Status::already_exists(format!(
                "purpose '{}' is already registered",
                asked.code
            )));
        }
        let purpose = Purpose {
            code: asked.code,
            name: asked.name.trim().into(),
            legal_basis: legal_basis.into(),
            departments: asked.departments,
            status: PurposeStatus::Active.into(),
            registered_by: actor(p),
            registered_at: Some(clock::to_timestamp(clock::now())),
            ..Default::default()
        };
        Ok(Plan::stored(
            "purpose",
            &purpose.code.clone(),
            None,
            purpose,
            Write::Purpose,
        ))
    }

    /// A retired purpose authorizes nothing from the next request on; grants
    /// citing it stay on record.
    pub(super) fn plan_retire_purpose(
        &self,
        p: &Principal,
        r: RetirePurposeRequest,
    ) -> Result<Plan<Purpose>, Status> {
        let before = self
            .store
            .purpose(&r.code)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "purpose '{}' is not registered",
                    crate::base::text::cap_for_message(&r.code)
                ))
            })?;
        let reason = required_reason(&r.reason, "the purpose is retired")?;
        if before.status == PurposeStatus::Retired as i32 {
            return Err(Status::failed_precondition(format!(
                "purpose '{}' is already retired",
                r.code
            )));
        }
        let after = Purpose {
            status: PurposeStatus::Retired.into(),
            retired_by: actor(p),
            retired_at: Some(clock::to_timestamp(clock::now())),
            retirement_reason: reason,
            ..before.clone()
        };
        Ok(Plan::stored(
            "purpose",
            &r.code,
            Some(&before),
            after,
            Write::Purpose,
        ))
    }
}
