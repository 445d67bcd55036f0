//! The authenticate step: a verified client certificate plus a bearer token
//! bound to it become a [`Principal`]. Only this module can build one.

pub mod token;

use crate::clock;
use crate::directory::Directory;
use crate::proto::DepartmentStatus;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use token::{Claims, KeyRing};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Puller,
    Publisher,
    Admin,
    Auditor,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "puller" => Some(Role::Puller),
            "publisher" => Some(Role::Publisher),
            "admin" => Some(Role::Admin),
            "auditor" => Some(Role::Auditor),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Puller => "puller",
            Role::Publisher => "publisher",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

/// An authenticated caller. Fields are private and there is no public
/// constructor: holding one proves the checks in [`Authenticator`] passed.
#[derive(Debug, Clone)]
pub struct Principal {
    department: String,
    client_id: String,
    token_id: String,
    roles: Vec<Role>,
    cert_thumbprint: String,
    peer: String,
}

impl Principal {
    pub fn department(&self) -> &str {
        &self.department
    }
    pub fn client_id(&self) -> &str {
        &self.client_id
    }
    pub fn token_id(&self) -> &str {
        &self.token_id
    }
    pub fn cert_thumbprint(&self) -> &str {
        &self.cert_thumbprint
    }
    pub fn peer(&self) -> &str {
        &self.peer
    }
    pub fn roles(&self) -> &[Role] {
        &self.roles
    }
    pub fn has_role(&self, r: Role) -> bool {
        self.roles.contains(&r)
    }

    /// A principal for in-crate tests of the steps after authentication.
    #[cfg(test)]
    pub(crate) fn for_test(department: &str, roles: &[Role]) -> Self {
        Self {
            department: department.into(),
            client_id: format!("{department}-test"),
            token_id: "test".into(),
            roles: roles.to_vec(),
            cert_thumbprint: String::new(),
            peer: "127.0.0.1:1".into(),
        }
    }
}

/// What the transport presented.
pub struct Credentials<'a> {
    /// The verified client chain, leaf first (rustls already checked it
    /// against the client CA).
    pub leaf_cert: Option<&'a [u8]>,
    pub bearer: Option<&'a str>,
    pub peer: String,
}

/// Why authentication failed, with whatever identity could be established
/// (for the audit entry only — the caller gets just the reason code).
#[derive(Debug, Clone, Default)]
pub struct AuthFailure {
    pub code: &'static str,
    pub department: String,
    pub client_id: String,
    pub token_id: String,
    pub cert_thumbprint: String,
    pub peer: String,
}

pub struct Authenticator {
    directory: Arc<Directory>,
    keys: Arc<KeyRing>,
    cache: Mutex<HashMap<[u8; 32], Arc<Claims>>>,
}

/// Verified tokens kept at most; past it, expired ones are purged first.
const CACHE_LIMIT: usize = 100_000;

impl Authenticator {
    pub fn new(directory: Arc<Directory>, keys: Arc<KeyRing>) -> Self {
        Self {
            directory,
            keys,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// Verified tokens held in the cache.
    pub fn cached_tokens(&self) -> usize {
        self.cache.lock().expect("cache lock").len()
    }

    /// Signature checks are cached per token until it expires; binding,
    /// revocation and certificate and department status are checked on
    /// every call, against the current control-plane snapshot.
    pub fn authenticate(&self, c: &Credentials<'_>) -> Result<Principal, Box<AuthFailure>> {
        let mut seen = AuthFailure {
            peer: c.peer.clone(),
            ..Default::default()
        };
        self.check(c, &mut seen)
            .map_err(|code| Box::new(AuthFailure { code, ..seen }))
    }

    /// Runs every check in order, filling `seen` with the identity established
    /// so far (for the audit entry of a failure).
    fn check(
        &self,
        c: &Credentials<'_>,
        seen: &mut AuthFailure,
    ) -> Result<Principal, &'static str> {
        let cert = c.leaf_cert.ok_or("NO_CLIENT_CERTIFICATE")?;
        seen.cert_thumbprint = token::thumbprint(cert);
        let snapshot = self.directory.current().map_err(|_| "STORE_UNAVAILABLE")?;
        let registered = snapshot
            .certificate(&seen.cert_thumbprint)
            .ok_or("UNKNOWN_CERTIFICATE")?;
        seen.department.clone_from(&registered.department);
        if registered.revoked_at.is_some() {
            return Err("CERTIFICATE_REVOKED");
        }
        let claims = self.verified_claims(c.bearer.ok_or("NO_BEARER_TOKEN")?)?;
        seen.client_id.clone_from(&claims.sub);
        seen.token_id.clone_from(&claims.jti);
        if claims.cnf.x5t_s256 != seen.cert_thumbprint {
            return Err("TOKEN_NOT_BOUND_TO_CERTIFICATE");
        }
        if claims.dept != registered.department {
            return Err("DEPARTMENT_MISMATCH");
        }
        if snapshot.token_revoked(&claims.jti) {
            return Err("TOKEN_REVOKED");
        }
        let dept = snapshot
            .department(&registered.department)
            .ok_or("UNKNOWN_DEPARTMENT")?;
        if dept.status != DepartmentStatus::Active as i32 {
            return Err("DEPARTMENT_SUSPENDED");
        }
        // A privileged role counts only for the departments configured to
        // hold it, whatever an older token claims.
        let roles = self.directory.roles();
        Ok(Principal {
            department: registered.department.clone(),
            client_id: claims.sub.clone(),
            token_id: claims.jti.clone(),
            roles: claims
                .roles
                .iter()
                .filter_map(|r| Role::parse(r))
                .filter(|r| roles.allows(&registered.department, *r))
                .collect(),
            cert_thumbprint: seen.cert_thumbprint.clone(),
            peer: seen.peer.clone(),
        })
    }

    fn verified_claims(&self, token: &str) -> Result<Arc<Claims>, &'static str> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = clock::unix_seconds(clock::now());
        if let Some(c) = self.cache.lock().expect("cache lock").get(&digest) {
            return if c.exp > now {
                Ok(c.clone())
            } else {
                Err("TOKEN_EXPIRED")
            };
        }
        let claims = Arc::new(self.keys.verify(token)?);
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, c| c.exp > now);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(digest, claims.clone());
        Ok(claims)
    }
}
