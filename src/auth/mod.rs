//! The authenticate step: a verified client certificate plus a bearer token
//! bound to it become a [`Principal`]. Only this module can build one.

pub mod token;

use crate::base::clock;
use crate::control::certs::thumbprint;
use crate::control::directory::{Directory, Snapshot};
use crate::control::keys::KeyRing;
use crate::control::roles::Role;
use crate::proto::DepartmentStatus;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An authenticated caller. Fields are private and there is no public
/// constructor: holding one proves the checks in [`Authenticator`] passed.
#[derive(Clone)]
pub struct Principal {
    department: String,
    client_id: String,
    token_id: String,
    roles: Vec<Role>,
    cert_thumbprint: String,
    peer: String,
    /// The token's `exp` (unix seconds).
    expires_at: i64,
    /// The key that signed the token: retired, it ends the principal too.
    kid: String,
    /// The control plane as the checks saw it: the rest of the call is
    /// judged against the same view (and reads it once, not twice).
    snapshot: Arc<Snapshot>,
}

impl std::fmt::Debug for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Principal")
            .field("department", &self.department)
            .field("client_id", &self.client_id)
            .field("token_id", &self.token_id)
            .field("roles", &self.roles)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
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
    /// When the token it came with expires (Unix seconds).
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }

    pub fn roles(&self) -> &[Role] {
        &self.roles
    }
    pub fn has_role(&self, r: Role) -> bool {
        self.roles.contains(&r)
    }

    /// The control-plane snapshot the caller was authenticated against.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// A principal for in-crate tests of the steps after authentication.
    #[cfg(test)]
    pub(crate) fn for_test(department: &str, roles: &[Role], snapshot: Arc<Snapshot>) -> Self {
        Self {
            department: department.into(),
            client_id: format!("{department}-test"),
            token_id: "test".into(),
            roles: roles.to_vec(),
            cert_thumbprint: String::new(),
            peer: "127.0.0.1:1".into(),
            expires_at: i64::MAX,
            kid: String::new(),
            snapshot,
        }
    }
}

/// The registered, unrevoked certificate with this thumbprint.
fn certificate_standing<'s>(
    snapshot: &'s Snapshot,
    thumbprint: &str,
) -> Result<&'s crate::proto::RegisteredCertificate, &'static str> {
    let registered = snapshot
        .certificate(thumbprint)
        .ok_or("UNKNOWN_CERTIFICATE")?;
    if registered.revoked_at.is_some() {
        return Err("CERTIFICATE_REVOKED");
    }
    Ok(registered)
}

/// The token is not revoked and its department is active.
fn token_and_department_standing(
    snapshot: &Snapshot,
    jti: &str,
    department: &str,
) -> Result<(), &'static str> {
    if snapshot.token_revoked(jti) {
        return Err("TOKEN_REVOKED");
    }
    let dept = snapshot
        .department(department)
        .ok_or("UNKNOWN_DEPARTMENT")?;
    if dept.status != DepartmentStatus::Active as i32 {
        return Err("DEPARTMENT_SUSPENDED");
    }
    Ok(())
}

/// Every reason code an authentication failure can carry (the audit
/// entry's reason and the `reason` label of `govshare_auth_failures_total`).
pub const FAILURE_CODES: &[&str] = &[
    "NO_CLIENT_CERTIFICATE",
    "UNKNOWN_CERTIFICATE",
    "CERTIFICATE_REVOKED",
    "NO_BEARER_TOKEN",
    "MALFORMED_TOKEN",
    "ALGORITHM_NOT_ALLOWED",
    "NO_KEY_ID",
    "UNKNOWN_KEY_ID",
    "BAD_SIGNATURE",
    "BAD_ISSUER",
    "BAD_AUDIENCE",
    "BAD_TOKEN",
    "TOKEN_EXPIRED",
    "TOKEN_NOT_YET_VALID",
    "TOKEN_NOT_BOUND_TO_CERTIFICATE",
    "DEPARTMENT_MISMATCH",
    "TOKEN_REVOKED",
    "UNKNOWN_DEPARTMENT",
    "DEPARTMENT_SUSPENDED",
    "STORE_UNAVAILABLE",
    "HEADERS_TOO_LARGE",
];

/// What the transport established for one connection, once: the peer's
/// address and the thumbprint of the client certificate rustls verified
/// against the client CA. Every call on the connection shares it, so a
/// call does not hash the certificate again.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    pub addr: Arc<str>,
    pub thumbprint: Option<Arc<str>>,
}

impl Peer {
    pub fn new(addr: std::net::SocketAddr, leaf_cert: Option<&[u8]>) -> Self {
        Self {
            addr: addr.to_string().into(),
            thumbprint: leaf_cert.map(|c| thumbprint(c).into()),
        }
    }
}

/// What one call presented.
pub struct Credentials<'a> {
    pub peer: &'a Peer,
    pub bearer: Option<&'a str>,
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
    cache: Mutex<HashMap<[u8; 32], Arc<token::Verified>>>,
}

/// Verified tokens kept at most; past it, expired ones are purged first.
const CACHE_LIMIT: usize = 100_000;

/// The control plane a call is authenticated under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Under {
    /// As committed now: the policy epoch is read for the call.
    Committed,
    /// As this node holds it ([`Directory::held`]), so a call over a
    /// shared store costs no round trip here. Only for a call whose
    /// release is fenced by the policy epoch in its audit write (a data
    /// pull): a revocation this node has not heard of yet is caught there,
    /// and the call judged again. A refusal is checked again under the
    /// control plane as committed now, so a certificate or token issued on
    /// another node a moment ago is not refused.
    Held,
}

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
    /// every call, under the control plane `under` says.
    pub async fn authenticate(
        &self,
        c: &Credentials<'_>,
        under: Under,
    ) -> Result<Principal, Box<AuthFailure>> {
        let held = match under {
            Under::Committed => return self.authenticate_under(c, self.directory.fresh().await),
            Under::Held => match self.directory.held().await {
                Ok(held) => held,
                unreadable => return self.authenticate_under(c, unreadable),
            },
        };
        match self.authenticate_under(c, Ok(held.clone())) {
            Err(refused) if refused.code != "STORE_UNAVAILABLE" => {
                match self.directory.fresh().await {
                    Ok(now) if Arc::ptr_eq(&now, &held) => Err(refused),
                    now => self.authenticate_under(c, now),
                }
            }
            judged => judged,
        }
    }

    fn authenticate_under(
        &self,
        c: &Credentials<'_>,
        snapshot: anyhow::Result<Arc<Snapshot>>,
    ) -> Result<Principal, Box<AuthFailure>> {
        let mut seen = AuthFailure {
            peer: c.peer.addr.to_string(),
            ..Default::default()
        };
        match self.check(c, snapshot, &mut seen) {
            Ok(p) => Ok(p),
            Err(code) => Err(Box::new(AuthFailure { code, ..seen })),
        }
    }

    /// Runs every check in order under `snapshot`, filling `seen` with the
    /// identity established so far (for the audit entry of a failure).
    fn check(
        &self,
        c: &Credentials<'_>,
        snapshot: anyhow::Result<Arc<Snapshot>>,
        seen: &mut AuthFailure,
    ) -> Result<Principal, &'static str> {
        let cert = c
            .peer
            .thumbprint
            .as_deref()
            .ok_or("NO_CLIENT_CERTIFICATE")?;
        seen.cert_thumbprint = cert.to_string();
        let snapshot = snapshot.map_err(|e| {
            tracing::error!(error = format!("{e:#}"), "reading the control plane failed");
            "STORE_UNAVAILABLE"
        })?;
        let registered = certificate_standing(&snapshot, &seen.cert_thumbprint)?;
        seen.department.clone_from(&registered.department);
        let verified = self.verified_claims(&snapshot, c.bearer.ok_or("NO_BEARER_TOKEN")?)?;
        let claims = &verified.claims;
        seen.client_id.clone_from(&claims.sub);
        seen.token_id.clone_from(&claims.jti);
        if claims.cnf.x5t_s256 != seen.cert_thumbprint {
            return Err("TOKEN_NOT_BOUND_TO_CERTIFICATE");
        }
        if claims.dept != registered.department {
            return Err("DEPARTMENT_MISMATCH");
        }
        token_and_department_standing(&snapshot, &claims.jti, &registered.department)?;
        // A privileged role counts only for the departments configured to
        // hold it, whatever an older token claims.
        let roles = self.directory.roles();
        // Every check passed: what `seen` holds is the principal's, moved
        // rather than copied (no failure record will be made of it).
        let take = std::mem::take::<String>;
        Ok(Principal {
            roles: claims
                .roles
                .iter()
                .filter_map(|r| Role::parse(r))
                .filter(|r| roles.allows(&registered.department, *r))
                .collect(),
            department: take(&mut seen.department),
            client_id: take(&mut seen.client_id),
            token_id: take(&mut seen.token_id),
            cert_thumbprint: take(&mut seen.cert_thumbprint),
            peer: take(&mut seen.peer),
            expires_at: claims.exp,
            kid: verified.kid.clone(),
            snapshot,
        })
    }

    /// Whether `p` still stands now, against the current control plane:
    /// its token unexpired, its certificate and token not revoked, its
    /// department active. A stream asks before every page, so a revocation
    /// or suspension cuts it off at the next page, not only at the next
    /// call. Returns the principal with the snapshot it was judged on.
    pub async fn restand(&self, p: &Principal) -> Result<Principal, &'static str> {
        if p.expires_at <= clock::unix_seconds(clock::now()) {
            return Err("TOKEN_EXPIRED");
        }
        let snapshot = self
            .directory
            .fresh()
            .await
            .map_err(|_| "STORE_UNAVAILABLE")?;
        if Arc::ptr_eq(&snapshot, &p.snapshot) {
            return Ok(p.clone());
        }
        certificate_standing(&snapshot, &p.cert_thumbprint)?;
        token_and_department_standing(&snapshot, &p.token_id, &p.department)?;
        token::key_stands(&snapshot, &p.kid)?;
        Ok(Principal {
            snapshot,
            ..p.clone()
        })
    }

    fn verified_claims(
        &self,
        snapshot: &Snapshot,
        token: &str,
    ) -> Result<Arc<token::Verified>, &'static str> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = clock::unix_seconds(clock::now());
        let cached = self.cache.lock().expect("cache lock").get(&digest).cloned();
        if let Some(v) = cached {
            if v.claims.exp <= now {
                return Err("TOKEN_EXPIRED");
            }
            // The signature was checked once; the key must still stand.
            token::key_stands(snapshot, &v.kid)?;
            return Ok(v);
        }
        let claims = Arc::new(token::verify(
            snapshot,
            self.keys.issuer(),
            self.keys.audience(),
            token,
        )?);
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_LIMIT {
            cache.retain(|_, c| c.claims.exp > now);
            if cache.len() >= CACHE_LIMIT {
                cache.clear();
            }
        }
        cache.insert(digest, claims.clone());
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    /// Every code the authenticate step can fail with is listed, so each
    /// has its metric series from the first scrape.
    #[test]
    fn every_failure_code_is_listed() {
        for src in [include_str!("mod.rs"), include_str!("token.rs")] {
            let code = src.split("#[cfg(test)]").next().unwrap();
            for part in code.split(['(', ' ']).filter(|p| p.starts_with('"')) {
                let lit = part.trim_start_matches('"');
                let Some(end) = lit.find('"') else { continue };
                let lit = &lit[..end];
                let is_code = lit.len() > 3
                    && lit.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
                    && (code.contains(&format!("Err(\"{lit}\")"))
                        || code.contains(&format!("ok_or(\"{lit}\")"))
                        || code.contains(&format!("=> \"{lit}\"")));
                if is_code {
                    assert!(super::FAILURE_CODES.contains(&lit), "{lit} is not listed");
                }
            }
        }
    }
}
