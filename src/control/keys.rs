//! The token issuer: Ed25519-signed JWTs with a `kid`, bound to the client
//! certificate through `cnf.x5t#S256` (RFC 8705). Signing keys live in the
//! control-plane store, so a rotation on any node applies everywhere; the
//! public keys reach the verifier through the control-plane snapshot.

use crate::base::clock;
use crate::control::store::Store;
use crate::proto::storage::SigningKey as StoredKey;
use anyhow::{Context, Result, anyhow};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The token's binding to its certificate (RFC 8705).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Confirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

/// What a token asserts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub sub: String,
    pub dept: String,
    pub roles: Vec<String>,
    pub cnf: Confirmation,
}

/// How long the keys a rotation replaces keep verifying tokens.
#[derive(Debug, Clone, Copy)]
pub enum Retire {
    /// Until every token they signed has expired (the longest lifetime).
    After(std::time::Duration),
    /// Not at all: every token they signed is void at once.
    Now,
}

/// The issuer: its identity and its signing keys (the current one plus
/// old ones that still verify). Verifying is the auth layer's job, with the
/// public keys of the control-plane snapshot.
pub struct KeyRing {
    store: Store,
    issuer: String,
    audience: String,
}

impl KeyRing {
    /// Loads the signing keys, creating the first one on a new store.
    pub fn load_or_create(store: Store, issuer: &str, audience: &str) -> Result<Self> {
        if store.signing_keys()?.iter().all(|k| k.retired_at.is_some()) {
            store.put_signing_key(&new_key()?)?;
        }
        Ok(Self {
            store,
            issuer: issuer.into(),
            audience: audience.into(),
        })
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// Signs a token for a department's system, bound to `cert_thumbprint`.
    pub fn issue(
        &self,
        department: &str,
        subject: &str,
        roles: &[String],
        cert_thumbprint: &str,
        lifetime: std::time::Duration,
    ) -> Result<(String, Claims)> {
        let claims = self.claims(department, subject, roles, cert_thumbprint, lifetime);
        Ok((self.sign(&claims)?, claims))
    }

    /// What a token issued now asserts (a fresh `jti`).
    pub fn claims(
        &self,
        department: &str,
        subject: &str,
        roles: &[String],
        cert_thumbprint: &str,
        lifetime: std::time::Duration,
    ) -> Claims {
        let now = clock::unix_seconds(clock::now());
        Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            nbf: now,
            exp: now + lifetime.as_secs() as i64,
            jti: random_id(),
            sub: subject.into(),
            dept: department.into(),
            roles: roles.to_vec(),
            cnf: Confirmation {
                x5t_s256: cert_thumbprint.into(),
            },
        }
    }

    /// Signs `claims` with the current key, naming it in `kid`. The key is
    /// read from the store, so a rotation on any node applies everywhere.
    pub fn sign(&self, claims: &Claims) -> Result<String> {
        let current = self
            .store
            .signing_keys()?
            .into_iter()
            .filter(|k| k.retired_at.is_none())
            .max_by_key(|k| k.created_at.map(|t| (t.seconds, t.nanos)))
            .ok_or_else(|| anyhow!("no active signing key"))?;
        sign_with(claims, &current)
    }

    /// Makes `key` (from [`new_key`]) the signing key. Old keys keep
    /// verifying as `retire` says: for the longest token lifetime (so every
    /// token they signed expires first), or not at all; keys past their
    /// time are dropped.
    pub fn install(&self, key: &StoredKey, retire: Retire) -> Result<()> {
        let now = clock::now();
        let now_s = clock::unix_seconds(now);
        for mut k in self.store.signing_keys()? {
            if k.verify_until.is_some_and(|t| t.seconds < now_s) {
                self.store.remove_signing_key(&k.kid)?;
                continue;
            }
            let until = match retire {
                Retire::After(_) if k.retired_at.is_some() => continue,
                Retire::After(keep) => now + keep,
                // Already in the past: nothing it signed verifies from now on.
                Retire::Now => now - std::time::Duration::from_secs(1),
            };
            k.retired_at.get_or_insert(clock::to_timestamp(now));
            k.verify_until = Some(clock::to_timestamp(until));
            self.store.put_signing_key(&k)?;
        }
        self.store.put_signing_key(key)
    }

    /// The issuer's public keys that still verify tokens, as a JWKS document
    /// (RFC 7517, OKP/Ed25519 keys per RFC 8037), for other systems.
    pub fn jwks(&self) -> Result<serde_json::Value> {
        let now = clock::unix_seconds(clock::now());
        let keys: Vec<serde_json::Value> = self
            .store
            .signing_keys()?
            .into_iter()
            .filter(|k| k.verify_until.is_none_or(|t| t.seconds >= now))
            .map(|k| {
                serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "alg": "EdDSA",
                    "use": "sig",
                    "kid": k.kid,
                    "x": data_encoding::BASE64URL_NOPAD.encode(&k.public_key),
                })
            })
            .collect();
        Ok(serde_json::json!({ "keys": keys }))
    }
}

/// Signs `claims` with `key` (one not yet installed, say), naming it in
/// `kid`.
pub fn sign_with(claims: &Claims, key: &StoredKey) -> Result<String> {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid.clone());
    jsonwebtoken::encode(&header, claims, &encoding_key(key)?).context("signing a token")
}

fn encoding_key(k: &StoredKey) -> Result<EncodingKey> {
    let sk = ed25519_dalek::pkcs8::DecodePrivateKey::from_pkcs8_der(&k.pkcs8_der)
        .map(|sk: SigningKey| sk)
        .context("decoding the signing key")?;
    let pem = sk
        .to_pkcs8_pem(LineEnding::LF)
        .context("encoding the signing key")?;
    Ok(EncodingKey::from_ed_pem(pem.as_bytes())?)
}

/// A fresh Ed25519 signing key, not yet stored.
pub fn new_key() -> Result<StoredKey> {
    let sk = SigningKey::generate(&mut rand::rngs::OsRng);
    let public = sk.verifying_key().to_bytes();
    let kid = data_encoding::HEXLOWER.encode(&Sha256::digest(public)[..8]);
    let key = StoredKey {
        kid,
        pkcs8_der: sk
            .to_pkcs8_der()
            .context("encoding key")?
            .as_bytes()
            .to_vec(),
        public_key: public.to_vec(),
        created_at: Some(clock::to_timestamp(clock::now())),
        retired_at: None,
        verify_until: None,
    };
    Ok(key)
}

/// 128 random bits, base32: token and grant ids.
pub fn random_id() -> String {
    let bytes: [u8; 16] = rand::random();
    data_encoding::BASE32_NOPAD
        .encode(&bytes)
        .to_ascii_lowercase()
}
