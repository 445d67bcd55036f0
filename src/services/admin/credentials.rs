//! Credentials: client certificates, tokens and the token-signing key.
//! Every issued token is registered by `jti` (never the token itself), so it
//! can be listed and revoked; revoking something that was never issued is
//! NOT_FOUND, not a silent success.

use super::{AdminApi, Plan, Write, actor, change, internal, required_reason};
use crate::auth::Principal;
use crate::base::clock;
use crate::control::keys::new_key;
use crate::control::roles::Role;
use crate::proto::*;
use std::time::Duration;
use tonic::Status;

impl AdminApi {
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
        if let Some(existing) = self
            .store
            .certificate(&verified.thumbprint)
            .map_err(internal)?
        {
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
            not_after: Some(prost_types::Timestamp {
                seconds: verified.not_after,
                nanos: 0,
            }),
            ..Default::default()
        };
        Ok(Plan::stored(
            "certificate",
            &c.thumbprint.clone(),
            None,
            c,
            Write::Certificate,
        ))
    }

    pub(super) fn plan_list_certificates(
        &self,
        _: &Principal,
        r: ListCertificatesRequest,
    ) -> Result<Plan<ListCertificatesResponse>, Status> {
        let certificates = self
            .store
            .certificates()
            .map_err(internal)?
            .into_iter()
            .filter(|c| r.department.is_empty() || c.department == r.department)
            .collect();
        Ok(Plan::read(ListCertificatesResponse { certificates }))
    }

    /// A revoked certificate's calls fail from the next request on, on
    /// every node (the policy epoch moves).
    pub(super) fn plan_revoke_certificate(
        &self,
        p: &Principal,
        r: RevokeCertificateRequest,
    ) -> Result<Plan<RegisteredCertificate>, Status> {
        let before = self
            .store
            .certificate(&r.thumbprint)
            .map_err(internal)?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no certificate with thumbprint '{}' is registered (see ListCertificates)",
                    crate::base::text::cap_for_message(&r.thumbprint)
                ))
            })?;
        let reason = required_reason(&r.reason, "the certificate is revoked")?;
        if before.revoked_at.is_some() {
            return Err(Status::failed_precondition(
                "this certificate is already revoked",
            ));
        }
        let after = RegisteredCertificate {
            revoked_at: Some(clock::to_timestamp(clock::now())),
            revoked_by: actor(p),
            revocation_reason: reason,
            ..before.clone()
        };
        Ok(Plan::stored(
            "certificate",
            &r.thumbprint,
            Some(&before),
            after,
            Write::Certificate,
        ))
    }

    /// Signs a token bound to a certificate registered to the department.
    /// `lifetime_seconds` 0 or above the configured maximum gets the maximum.
    /// `admin` and `auditor` go only to the departments configured for them.
    pub(super) fn plan_issue_token(
        &self,
        p: &Principal,
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
            .store
            .certificate(&r.certificate_thumbprint)
            .map_err(internal)?
            .filter(|c| c.department == r.department && c.revoked_at.is_none())
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "certificate_thumbprint: no unrevoked certificate with that thumbprint is registered to '{}' (RegisterCertificate first)",
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
        let roles = self.pipeline.directory().roles();
        for name in &r.roles {
            let role = Role::parse(name).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "roles: '{}' is not one of puller, publisher, admin, auditor",
                    crate::base::text::cap_for_message(name)
                ))
            })?;
            if !roles.allows(&r.department, role) {
                return Err(Status::permission_denied(format!(
                    "roles: '{name}' may be held only by the departments configured for it ({}_departments); '{}' is not one",
                    role.name(),
                    r.department
                )));
            }
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
        let info = TokenInfo {
            jti: claims.jti.clone(),
            department: r.department,
            subject: r.subject,
            roles: r.roles,
            certificate_thumbprint: cert.thumbprint,
            issued_at: Some(clock::to_timestamp(clock::now())),
            expires_at: Some(prost_types::Timestamp {
                seconds: claims.exp,
                nanos: 0,
            }),
            issued_by: actor(p),
            ..Default::default()
        };
        let response = IssueTokenResponse {
            token,
            jti: claims.jti.clone(),
            expires_at: info.expires_at,
        };
        // The audit log records the token's identity, never the token itself.
        Ok(Plan {
            change: Some(change("token", &claims.jti, None, Some(&info))),
            writes: vec![Write::Token(info)],
            response,
        })
    }

    pub(super) fn plan_list_tokens(
        &self,
        _: &Principal,
        r: ListTokensRequest,
    ) -> Result<Plan<ListTokensResponse>, Status> {
        let now = clock::unix_seconds(clock::now());
        let tokens = self
            .store
            .tokens()
            .map_err(internal)?
            .into_iter()
            .filter(|t| r.department.is_empty() || t.department == r.department)
            .filter(|t| r.include_expired || t.expires_at.is_none_or(|e| e.seconds > now))
            .collect();
        Ok(Plan::read(ListTokensResponse { tokens }))
    }

    pub(super) fn plan_revoke_token(
        &self,
        p: &Principal,
        r: RevokeTokenRequest,
    ) -> Result<Plan<RevokeTokenResponse>, Status> {
        if r.jti.trim().is_empty() {
            return Err(Status::invalid_argument(
                "jti: name the token id (IssueToken returned it; ListTokens shows it)",
            ));
        }
        let before = self.store.token(&r.jti).map_err(internal)?.ok_or_else(|| {
            Status::not_found(format!(
                "no token with jti '{}' was issued by this gateway (see ListTokens)",
                crate::base::text::cap_for_message(&r.jti)
            ))
        })?;
        let reason = required_reason(&r.reason, "the token is revoked")?;
        if before.revoked {
            return Err(Status::failed_precondition("this token is already revoked"));
        }
        let after = TokenInfo {
            revoked: true,
            revoked_at: Some(clock::to_timestamp(clock::now())),
            revoked_by: actor(p),
            revocation_reason: reason,
            ..before.clone()
        };
        Ok(Plan {
            change: Some(change("token", &r.jti, Some(&before), Some(&after))),
            writes: vec![Write::Token(after)],
            response: RevokeTokenResponse {},
        })
    }

    /// A new token-signing key. Older keys keep verifying until the tokens
    /// they signed expire — or, with `retire_previous`, stop at once: every
    /// token issued before is void (after a restore whose store predates
    /// later revocations, or a leaked key).
    pub(super) fn plan_rotate_signing_key(
        &self,
        p: &Principal,
        r: RotateSigningKeyRequest,
    ) -> Result<Plan<RotateSigningKeyResponse>, Status> {
        let key = new_key().map_err(internal)?;
        let mut response = RotateSigningKeyResponse {
            kid: key.kid.clone(),
            replacement_token: String::new(),
        };
        let mut change = change("signing_key", &key.kid, None, Some(&response));
        let mut writes = Vec::new();
        if r.retire_previous {
            change.object = "signing_key (every older key retired at once)".into();
            // The caller's own token dies with the rest: it gets one under
            // the new key, or no administrator could issue another — for
            // what was left of the old one, not a fresh lifetime.
            let left = p.expires_at() - crate::base::clock::unix_seconds(crate::base::clock::now());
            let lifetime = std::time::Duration::from_secs(left.max(60) as u64)
                .min(self.settings.max_token_lifetime);
            let roles: Vec<String> = p.roles().iter().map(|r| r.name().to_string()).collect();
            let keys = self.pipeline.authenticator().keys();
            let claims = keys.claims(
                p.department(),
                p.client_id(),
                &roles,
                p.cert_thumbprint(),
                lifetime,
            );
            response.replacement_token =
                crate::control::keys::sign_with(&claims, &key).map_err(internal)?;
            writes.push(Write::Token(crate::control::enrol::token_info(
                &claims,
                &roles,
                &actor(p),
            )));
        }
        writes.insert(
            0,
            Write::SigningKey {
                key,
                retire_previous: r.retire_previous,
            },
        );
        Ok(Plan {
            change: Some(change),
            writes,
            response,
        })
    }
}
