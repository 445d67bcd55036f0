//! Verifying bearer tokens: Ed25519 JWTs (the issuer is
//! [`crate::control::keys`]) checked against the public keys of the
//! control-plane snapshot — so a key rotated on any node verifies on every
//! node at its next call, and a key past its `verify_until` verifies
//! nothing, with no cache of keys to go stale.

use crate::base::clock;
use crate::control::directory::Snapshot;
use crate::control::keys::Claims;
use jsonwebtoken::{Algorithm, Validation};

/// Clock skew tolerated on `exp` and `nbf`, seconds.
const LEEWAY: i64 = 30;

/// A token that verified: what it asserts, and the key (`kid`) that signed
/// it — which must still verify at every later use, so a key retired at
/// once takes its tokens with it, cached or not.
pub struct Verified {
    pub claims: Claims,
    pub kid: String,
}

/// Verifies a token's algorithm, signature (under a key the snapshot
/// holds), issuer, audience and validity times. Errors are the short reason
/// codes an authentication failure records.
pub fn verify(
    snapshot: &Snapshot,
    issuer: &str,
    audience: &str,
    token: &str,
) -> Result<Verified, &'static str> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| "MALFORMED_TOKEN")?;
    if header.alg != Algorithm::EdDSA {
        return Err("ALGORITHM_NOT_ALLOWED");
    }
    let kid = header.kid.ok_or("NO_KEY_ID")?;
    let key = snapshot
        .verifying_key(&kid, clock::unix_seconds(clock::now()))
        .ok_or("UNKNOWN_KEY_ID")?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub", "jti"]);
    // Validity times are judged below against the gateway's one clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    let claims = jsonwebtoken::decode::<Claims>(token, key, &v)
        .map(|d| d.claims)
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => "BAD_SIGNATURE",
                K::InvalidIssuer => "BAD_ISSUER",
                K::InvalidAudience => "BAD_AUDIENCE",
                _ => "BAD_TOKEN",
            }
        })?;
    let now = clock::unix_seconds(clock::now());
    if claims.exp <= now - LEEWAY {
        return Err("TOKEN_EXPIRED");
    }
    if claims.nbf > now + LEEWAY {
        return Err("TOKEN_NOT_YET_VALID");
    }
    Ok(Verified { claims, kid })
}

/// Whether the key that signed a token still verifies now.
pub fn key_stands(snapshot: &Snapshot, kid: &str) -> Result<(), &'static str> {
    snapshot
        .verifying_key(kid, clock::unix_seconds(clock::now()))
        .map(|_| ())
        .ok_or("UNKNOWN_KEY_ID")
}
