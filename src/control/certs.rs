//! Client-certificate registration checks: a PEM submitted to
//! `RegisterCertificate` must chain to the gateway's client CA with the same
//! verifier the TLS handshake uses, so a registered certificate is always one
//! that can actually connect.

use anyhow::{Context, Result};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;

/// The SHA-256 thumbprint of a certificate's DER, base64url without padding,
/// as `cnf.x5t#S256` carries it.
pub fn thumbprint(cert_der: &[u8]) -> String {
    data_encoding::BASE64URL_NOPAD.encode(&Sha256::digest(cert_der))
}

/// A client certificate that passed verification.
pub struct VerifiedCert {
    pub thumbprint: String,
    pub subject: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
}

pub struct ClientCa {
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ClientCa {
    /// Loads the CA certificates (PEM) that client certificates must chain to.
    pub fn load(path: &Path) -> Result<Self> {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(cert.with_context(|| format!("parsing {}", path.display()))?)
                .with_context(|| format!("adding a CA from {}", path.display()))?;
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .context("building the client-certificate verifier")?;
        Ok(Self { verifier })
    }

    /// Verifies a PEM chain (leaf first, then any intermediates) as a TLS
    /// client certificate would be verified now. Errors are messages for the
    /// administrator.
    pub fn verify_pem(&self, pem: &str) -> Result<VerifiedCert, String> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("certificate_pem is not valid PEM: {e}"))?;
        let (leaf, intermediates) = chain
            .split_first()
            .ok_or("certificate_pem holds no CERTIFICATE block")?;
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map_err(|e| {
                format!("the certificate does not chain to the gateway's client CA: {e}")
            })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf)
            .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
        Ok(VerifiedCert {
            thumbprint: thumbprint(leaf),
            subject: parsed.subject().to_string(),
            not_after: parsed.validity().not_after.timestamp(),
        })
    }
}
