//! Bearer tokens: Ed25519-signed JWTs with a `kid`, bound to the client
//! certificate through `cnf.x5t#S256` (RFC 8705).

use crate::base::clock;
use crate::control::store::Store;
use crate::proto::storage::SigningKey as StoredKey;
use anyhow::{Context, Result, anyhow};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey, spki::der::pem::LineEnding};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::RwLock;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Confirmation {
    #[serde(rename = "x5t#S256")]
    pub x5t_s256: String,
}

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

/// The SHA-256 thumbprint of a certificate's DER, base64url without padding,
/// as `cnf.x5t#S256` carries it.
pub fn thumbprint(cert_der: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(&Sha256::digest(cert_der))
}

/// Issuer identity and the signing keys (current plus still-verifying old ones).
pub struct KeyRing {
    store: Store,
    issuer: String,
    audience: String,

    verifying: RwLock<HashMap<String, DecodingKey>>,
    /// When an unknown `kid` last made us reload the keys from the store.
    /// A key rotated on another node shows up within a second; a flood of
    /// made-up `kid`s costs one reload a second, not one per call.
    unknown_kid_reload: std::sync::Mutex<Option<std::time::Instant>>,
}

impl KeyRing {
    /// Loads the signing keys, creating the first one on a new store.
    pub fn load_or_create(store: Store, issuer: &str, audience: &str) -> Result<Self> {
        if store.signing_keys()?.iter().all(|k| k.retired_at.is_some()) {
            store.put_signing_key(&new_key()?)?;
        }
        let ring = Self {
            verifying: RwLock::new(HashMap::new()),
            unknown_kid_reload: std::sync::Mutex::new(None),
            store,
            issuer: issuer.into(),
            audience: audience.into(),
        };
        ring.reload_verifying()?;
        Ok(ring)
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
        let now = clock::unix_seconds(clock::now());
        let claims = Claims {
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
        };
        Ok((self.sign(&claims)?, claims))
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
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(current.kid.clone());
        jsonwebtoken::encode(&header, claims, &encoding_key(&current)?).context("signing a token")
    }

    /// Makes `key` (from [`new_key`]) the signing key. Old keys keep
    /// verifying for `keep_verifying` (the longest token lifetime, so every
    /// token they signed expires first); keys past that are dropped.
    pub fn install(&self, key: &StoredKey, keep_verifying: std::time::Duration) -> Result<()> {
        let now = clock::now();
        for mut k in self.store.signing_keys()? {
            if k.verify_until
                .is_some_and(|t| t.seconds < clock::unix_seconds(now))
            {
                self.store.remove_signing_key(&k.kid)?;
            } else if k.retired_at.is_none() {
                k.retired_at = Some(clock::to_timestamp(now));
                k.verify_until = Some(clock::to_timestamp(now + keep_verifying));
                self.store.put_signing_key(&k)?;
            }
        }
        self.store.put_signing_key(key)?;
        self.reload_verifying()
    }

    /// Verifies signature, algorithm, issuer, audience and validity times.
    pub fn verify(&self, token: &str) -> Result<Claims, &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "MALFORMED_TOKEN")?;
        if header.alg != Algorithm::EdDSA {
            return Err("ALGORITHM_NOT_ALLOWED");
        }
        let kid = header.kid.ok_or("NO_KEY_ID")?;
        let key = match self.decoding_key(&kid) {
            Some(k) => k,
            None => {
                let due = {
                    let mut last = self.unknown_kid_reload.lock().expect("reload lock");
                    let due = last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(1));
                    if due {
                        *last = Some(std::time::Instant::now());
                    }
                    due
                };
                if due {
                    self.reload_verifying()
                        .map_err(|_| "KEY_STORE_UNAVAILABLE")?;
                }
                self.decoding_key(&kid).ok_or("UNKNOWN_KEY_ID")?
            }
        };
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[&self.audience]);
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub", "jti"]);
        v.validate_nbf = true;
        v.leeway = 30;
        jsonwebtoken::decode::<Claims>(token, &key, &v)
            .map(|d| d.claims)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                match e.kind() {
                    K::ExpiredSignature => "TOKEN_EXPIRED",
                    K::ImmatureSignature => "TOKEN_NOT_YET_VALID",
                    K::InvalidSignature => "BAD_SIGNATURE",
                    K::InvalidIssuer => "BAD_ISSUER",
                    K::InvalidAudience => "BAD_AUDIENCE",
                    _ => "BAD_TOKEN",
                }
            })
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

    fn decoding_key(&self, kid: &str) -> Option<DecodingKey> {
        self.verifying.read().expect("key lock").get(kid).cloned()
    }

    fn reload_verifying(&self) -> Result<()> {
        let now = clock::unix_seconds(clock::now());
        let mut map = HashMap::new();
        for k in self.store.signing_keys()? {
            if k.verify_until.is_some_and(|t| t.seconds < now) {
                continue;
            }
            let vk = ed25519_dalek::VerifyingKey::from_bytes(
                k.public_key
                    .as_slice()
                    .try_into()
                    .context("public key length")?,
            )?;
            let pem = vk
                .to_public_key_pem(LineEnding::LF)
                .context("encoding public key")?;
            map.insert(k.kid.clone(), DecodingKey::from_ed_pem(pem.as_bytes())?);
        }
        *self.verifying.write().expect("key lock") = map;
        Ok(())
    }
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
