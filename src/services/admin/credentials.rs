//! Departments and their credentials: certificates, tokens, signing keys.

use super::{AdminApi, Plan, Write, change, internal};
use crate::auth::token::new_key;
use crate::auth::{Principal, Role};
use crate::clock;
use crate::proto::storage::RevokedToken;
use crate::proto::*;
use std::time::Duration;
use tonic::Status;

/// Department ids are short slugs, as file names and token claims carry them.
fn check_department_id(id: &str) -> Result<(), Status> {
    let ok = (2..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "id: '{id}' must be 2–64 lower-case letters, digits or '-', e.g. housing-bureau"
        )))
    }
}

impl AdminApi {
    pub(super) fn existing_department(&self, id: &str) -> Result<Department, Status> {
        self.pipeline
            .store()
            .department(id)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "department '{id}' is not registered (see ListDepartments)"
                ))
            })
    }

    pub(super) fn plan_create_department(
        &self,
        _: &Principal,
        r: CreateDepartmentRequest,
    ) -> Result<Plan<Department>, Status> {
        check_department_id(&r.id)?;
        if r.name.trim().is_empty() {
            return Err(Status::invalid_argument(
                "name: give the department's official name",
            ));
        }
        if self
            .pipeline
            .store()
            .department(&r.id)
            .map_err(internal)?
            .is_some()
        {
            return Err(Status::already_exists(format!(
                "department '{}' already exists",
                r.id
            )));
        }
        let d = Department {
            id: r.id,
            name: r.name.trim().into(),
            status: DepartmentStatus::Active.into(),
            created_at: Some(clock::to_timestamp(clock::now())),
        };
        Ok(Plan::stored(
            "department",
            &d.id.clone(),
            None,
            d,
            Write::Department,
        ))
    }

    pub(super) fn plan_list_departments(
        &self,
        _: &Principal,
        _: ListDepartmentsRequest,
    ) -> Result<Plan<ListDepartmentsResponse>, Status> {
        let departments = self.pipeline.store().departments().map_err(internal)?;
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
        if !r.resume && r.reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "reason: say why the department is suspended",
            ));
        }
        if !r.resume && r.id == p.department() {
            return Err(Status::failed_precondition(
                "an administrator cannot suspend their own department",
            ));
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
        Ok(Plan::stored(
            "department",
            &r.id,
            Some(&before),
            after,
            Write::Department,
        ))
    }

    pub(super) fn plan_register_certificate(
        &self,
        _: &Principal,
        r: RegisterCertificateRequest,
    ) -> Result<Plan<RegisteredCertificate>, Status> {
        self.existing_department(&r.department)?;
        let verified = self
            .client_ca
            .verify_pem(&r.certificate_pem)
            .map_err(Status::invalid_argument)?;
        let store = self.pipeline.store();
        if let Some(existing) = store.certificate(&verified.thumbprint).map_err(internal)? {
            return Err(Status::already_exists(format!(
                "this certificate is already registered to '{}'",
                existing.department
            )));
        }
        let c = RegisteredCertificate {
            thumbprint: verified.thumbprint,
            department: r.department,
            subject: verified.subject,
            registered_at: Some(clock::to_timestamp(clock::now())),
        };
        Ok(Plan::stored(
            "certificate",
            &c.thumbprint.clone(),
            None,
            c,
            Write::Certificate,
        ))
    }

    /// Signs a token bound to a certificate registered to the department.
    /// `lifetime_seconds` 0 or above the configured maximum gets the maximum.
    pub(super) fn plan_issue_token(
        &self,
        _: &Principal,
        r: IssueTokenRequest,
    ) -> Result<Plan<IssueTokenResponse>, Status> {
        let dept = self.existing_department(&r.department)?;
        if dept.status != DepartmentStatus::Active as i32 {
            return Err(Status::failed_precondition(format!(
                "department '{}' is suspended; resume it first",
                r.department
            )));
        }
        let cert = self
            .pipeline
            .store()
            .certificate(&r.certificate_thumbprint)
            .map_err(internal)?
            .filter(|c| c.department == r.department)
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "certificate_thumbprint: no certificate with that thumbprint is registered to '{}' (RegisterCertificate first)",
                    r.department
                ))
            })?;
        if r.subject.trim().is_empty() || r.subject.len() > 128 {
            return Err(Status::invalid_argument(
                "subject: name the client system (1–128 characters), e.g. housing-case-system",
            ));
        }
        if r.roles.is_empty() {
            return Err(Status::invalid_argument(
                "roles: name at least one of puller, publisher, admin, auditor",
            ));
        }
        if let Some(bad) = r.roles.iter().find(|x| Role::parse(x).is_none()) {
            return Err(Status::invalid_argument(format!(
                "roles: '{bad}' is not one of puller, publisher, admin, auditor"
            )));
        }
        let max = self.settings.max_token_lifetime;
        let lifetime = match r.lifetime_seconds {
            0 => max,
            s => Duration::from_secs(s).min(max),
        };
        let keys = self.pipeline.authenticator().keys();
        let (token, claims) = keys
            .issue(
                &r.department,
                &r.subject,
                &r.roles,
                &cert.thumbprint,
                lifetime,
            )
            .map_err(internal)?;
        let response = IssueTokenResponse {
            token,
            jti: claims.jti.clone(),
            expires_at: Some(prost_types::Timestamp {
                seconds: claims.exp,
                nanos: 0,
            }),
        };
        // The audit log records the token's identity, never the token itself.
        let recorded = IssueTokenResponse {
            token: String::new(),
            ..response.clone()
        };
        Ok(Plan {
            change: Some(change("token", &claims.jti, None, Some(&recorded))),
            writes: Vec::new(),
            response,
        })
    }

    pub(super) fn plan_revoke_token(
        &self,
        p: &Principal,
        r: RevokeTokenRequest,
    ) -> Result<Plan<RevokeTokenResponse>, Status> {
        if r.jti.trim().is_empty() {
            return Err(Status::invalid_argument(
                "jti: name the token id (IssueToken returned it; the audit log shows it)",
            ));
        }
        let revoked = RevokedToken {
            jti: r.jti.clone(),
            revoked_at: Some(clock::to_timestamp(clock::now())),
            revoked_by: p.client_id().into(),
            reason: r.reason,
            expires_at: None,
        };
        Ok(Plan {
            change: Some(crate::proto::AdminChange {
                object: "token".into(),
                object_id: r.jti,
                before_json: String::new(),
                after_json: serde_json::json!({ "revoked": true, "reason": revoked.reason })
                    .to_string(),
            }),
            writes: vec![Write::RevokedToken(revoked)],
            response: RevokeTokenResponse {},
        })
    }

    pub(super) fn plan_rotate_signing_key(
        &self,
        _: &Principal,
        _: RotateSigningKeyRequest,
    ) -> Result<Plan<RotateSigningKeyResponse>, Status> {
        let key = new_key().map_err(internal)?;
        let response = RotateSigningKeyResponse {
            kid: key.kid.clone(),
        };
        Ok(Plan {
            change: Some(change("signing_key", &key.kid, None, Some(&response))),
            writes: vec![Write::SigningKey(key)],
            response,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::check_department_id;

    #[test]
    fn department_ids_are_slugs() {
        assert!(check_department_id("housing-bureau").is_ok());
        for bad in [
            "",
            "a",
            "Housing",
            "has space",
            "-lead",
            "x/y",
            &"a".repeat(65),
        ] {
            assert!(check_department_id(bad).is_err(), "{bad}");
        }
    }
}
