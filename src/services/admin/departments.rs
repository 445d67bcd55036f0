//! Departments: creation with a jurisdiction, name and jurisdiction changes,
//! suspension. An administrator never changes their own department's scope,
//! and the gateway is never left without an active admin department.

use super::{AdminApi, Plan, Write, internal, required_reason};
use crate::auth::Principal;
use crate::base::clock;
use crate::control::authz::ALL_REGIONS;
use crate::control::policy::is_department_id;
use crate::datasets::codes::RegionCode;
use crate::proto::*;
use tonic::Status;

fn check_department_id(id: &str) -> Result<(), Status> {
    if is_department_id(id) {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "id: '{}' must be 2–64 lower-case letters, digits or '-', e.g. housing-bureau",
            crate::base::text::cap_for_message(id)
        )))
    }
}

fn check_name(name: &str) -> Result<String, Status> {
    let n = name.trim();
    if n.is_empty() || n.chars().count() > 128 {
        return Err(Status::invalid_argument(
            "name: give the department's official name (1–128 characters)",
        ));
    }
    Ok(n.to_string())
}

impl AdminApi {
    pub(super) fn existing_department(&self, id: &str) -> Result<Department, Status> {
        self.store.department(id).map_err(internal)?.ok_or_else(|| {
            Status::not_found(format!(
                "department '{}' is not registered (see ListDepartments)",
                crate::base::text::cap_for_message(id)
            ))
        })
    }

    /// A jurisdiction is `*` alone, or region codes of the region tree.
    fn check_jurisdiction(&self, regions: &[String]) -> Result<(), Status> {
        if regions.is_empty() {
            return Err(Status::invalid_argument(
                "jurisdiction: name the region codes the department serves, or '*' for the whole gateway",
            ));
        }
        if regions.iter().any(|r| r == ALL_REGIONS) && regions.len() > 1 {
            return Err(Status::invalid_argument(
                "jurisdiction: '*' already covers everything; name it alone",
            ));
        }
        for r in regions.iter().filter(|r| *r != ALL_REGIONS) {
            RegionCode::parse(r)
                .map_err(|e| Status::invalid_argument(format!("jurisdiction: {e}")))?;
            if !self.pipeline.region_exists(r) {
                return Err(Status::invalid_argument(format!(
                    "jurisdiction: '{r}' is not a region this gateway serves (see GetRegionTree)"
                )));
            }
        }
        Ok(())
    }

    pub(super) fn plan_create_department(
        &self,
        _: &Principal,
        r: CreateDepartmentRequest,
    ) -> Result<Plan<Department>, Status> {
        check_department_id(&r.id)?;
        let name = check_name(&r.name)?;
        self.check_jurisdiction(&r.jurisdiction)?;
        if self.store.department(&r.id).map_err(internal)?.is_some() {
            return Err(Status::already_exists(format!(
                "department '{}' already exists",
                r.id
            )));
        }
        let d = Department {
            id: r.id,
            name,
            status: DepartmentStatus::Active.into(),
            created_at: Some(clock::to_timestamp(clock::now())),
            jurisdiction: r.jurisdiction,
        };
        Ok(Plan::stored(
            "department",
            &d.id.clone(),
            None,
            d,
            Write::Department,
        ))
    }

    /// Changes a department's name and/or jurisdiction, audited before/after.
    pub(super) fn plan_update_department(
        &self,
        p: &Principal,
        r: UpdateDepartmentRequest,
    ) -> Result<Plan<Department>, Status> {
        let before = self.existing_department(&r.id)?;
        required_reason(&r.reason, "the department changes")?;
        let mut after = before.clone();
        if !r.name.is_empty() {
            after.name = check_name(&r.name)?;
        }
        if !r.jurisdiction.is_empty() {
            self.check_jurisdiction(&r.jurisdiction)?;
            if r.id == p.department() {
                return Err(Status::failed_precondition(
                    "an administrator cannot change their own department's jurisdiction; an administrator of another department must",
                ));
            }
            after.jurisdiction = r.jurisdiction;
        }
        if after == before {
            return Err(Status::invalid_argument(
                "name/jurisdiction: nothing to change",
            ));
        }
        Ok(Plan::stored(
            "department",
            &r.id,
            Some(&before),
            after,
            Write::Department,
        ))
    }

    pub(super) fn plan_list_departments(
        &self,
        _: &Principal,
        _: ListDepartmentsRequest,
    ) -> Result<Plan<ListDepartmentsResponse>, Status> {
        let departments = self.store.departments().map_err(internal)?;
        Ok(Plan::read(ListDepartmentsResponse { departments }))
    }

    /// Suspends (or with `resume`, reactivates) a department. Authentication
    /// reads the status on every call, so this takes effect on the next one.
    pub(super) fn plan_suspend_department(
        &self,
        p: &Principal,
        r: SuspendDepartmentRequest,
    ) -> Result<Plan<Department>, Status> {
        let before = self.existing_department(&r.id)?;
        if !r.resume {
            required_reason(&r.reason, "the department is suspended")?;
            if r.id == p.department() {
                return Err(Status::failed_precondition(
                    "an administrator cannot suspend their own department",
                ));
            }
            let roles = self.pipeline.directory().roles();
            let other_active_admin = self.store.departments().map_err(internal)?.iter().any(|d| {
                d.id != r.id
                    && d.status == DepartmentStatus::Active as i32
                    && roles.admin.contains(&d.id)
            });
            if roles.admin.contains(&r.id) && !other_active_admin {
                return Err(Status::failed_precondition(format!(
                    "'{}' is the last active admin department; suspending it would leave nobody to administer the gateway",
                    r.id
                )));
            }
        }
        let after = Department {
            status: if r.resume {
                DepartmentStatus::Active
            } else {
                DepartmentStatus::Suspended
            }
            .into(),
            ..before.clone()
        };
        if after == before {
            return Err(Status::failed_precondition(format!(
                "department '{}' is already {}",
                r.id,
                if r.resume { "active" } else { "suspended" }
            )));
        }
        Ok(Plan::stored(
            "department",
            &r.id,
            Some(&before),
            after,
            Write::Department,
        ))
    }
}
