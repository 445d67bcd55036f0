//! The dev PKI: a CA that signs the server certificate and the demo
//! departments' client certificates. Production deployments bring their own.
//!
//! Layout under `<data-dir>/pki/`: `ca.pem`, `ca.key`, `server.pem`,
//! `server.key`, `<id>.pem`, `<id>.key` per client identity, and the
//! demo's backup identity `backup.agekey` with its `backup.recipient`.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

pub struct Pki {
    dir: PathBuf,
}

/// A freshly issued client certificate.
pub struct ClientCert {
    pub cert_pem: String,
    pub der: Vec<u8>,
}

impl Pki {
    pub fn at(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn exists(&self) -> bool {
        self.path("ca.pem").exists() && self.path("server.pem").exists()
    }

    /// Creates the CA and the server certificate, for `hosts` (default
    /// `localhost` and `127.0.0.1`). Fails rather than overwrite an
    /// existing CA.
    pub fn init(&self, hosts: &[String]) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        anyhow::ensure!(
            !self.path("ca.pem").exists(),
            "a CA already exists in {}",
            self.dir.display()
        );
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "govshare dev CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        self.write("ca.pem", &ca_cert.pem())?;
        self.write_secret("ca.key", &ca_key.serialize_pem())?;

        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let names = if hosts.is_empty() {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            hosts.to_vec()
        };
        let mut p = CertificateParams::new(names)?;
        p.distinguished_name
            .push(DnType::CommonName, "govshare gateway");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &issuer)?;
        self.write("server.pem", &cert.pem())?;
        self.write_secret("server.key", &key.serialize_pem())?;
        Ok(())
    }

    /// Issues a client certificate with common name `id`, written as
    /// `<id>.pem` and `<id>.key`.
    pub fn issue_client(&self, id: &str) -> Result<ClientCert> {
        anyhow::ensure!(
            !id.is_empty()
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "a client id is letters, digits, '-' and '_'"
        );
        let ca_key = KeyPair::from_pem(&std::fs::read_to_string(self.path("ca.key"))?)?;
        let issuer =
            Issuer::from_ca_cert_pem(&std::fs::read_to_string(self.path("ca.pem"))?, ca_key)
                .context("loading the dev CA")?;
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, id);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer)?;
        self.write(&format!("{id}.pem"), &cert.pem())?;
        self.write_secret(&format!("{id}.key"), &key.serialize_pem())?;
        Ok(ClientCert {
            cert_pem: cert.pem(),
            der: cert.der().to_vec(),
        })
    }

    /// Makes the demo's backup identity (an age X25519 key) unless it
    /// exists; returns whether it made one. Snapshots of the demo are
    /// encrypted to its recipient; restoring one needs the identity — which
    /// a real deployment keeps off the gateway host.
    pub fn backup_identity(&self) -> Result<bool> {
        use age::secrecy::ExposeSecret;
        if self.path(crate::config::BACKUP_IDENTITY).exists() {
            return Ok(false);
        }
        let identity = age::x25519::Identity::generate();
        self.write_secret(
            crate::config::BACKUP_IDENTITY,
            &format!(
                "# the demo's snapshot backup identity; recipient: {}\n{}\n",
                identity.to_public(),
                identity.to_string().expose_secret()
            ),
        )?;
        self.write(
            crate::config::BACKUP_RECIPIENT,
            &format!("{}\n", identity.to_public()),
        )?;
        Ok(true)
    }

    pub fn write(&self, name: &str, contents: &str) -> Result<()> {
        let path = self.path(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
    }

    /// Writes a file only its owner can read.
    pub fn write_secret(&self, name: &str, contents: &str) -> Result<()> {
        crate::base::files::write_secret_file(&self.path(name), contents)
    }
}
