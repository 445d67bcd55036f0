//! `govshare admin bootstrap`: enrols the first administrator of a
//! production gateway, once, on its host. With the gateway running it goes
//! through the gateway's control socket; with the gateway stopped it opens
//! the data directory itself — in both cases the enrolment is the log's
//! first `ADMIN` entry, durable before anything is stored.

use super::admin::BootstrapArgs;
use anyhow::{Context, Result, bail};
use govshare::audit::AuditLog;
use govshare::config::Config;
use govshare::control::certs::ClientCa;
use govshare::control::enrol::{self, FirstAdmin};
use govshare::control::keys::KeyRing;
use govshare::transport::control_socket::{self, EnrolRequest};
use std::time::Duration;

pub async fn run(a: BootstrapArgs) -> Result<()> {
    let mut cfg = Config::load(a.config.as_deref())?;
    cfg.data_dir = a.data_dir.clone();
    let certificate_pem = std::fs::read_to_string(&a.cert)
        .with_context(|| format!("reading {}", a.cert.display()))?;
    let name = a.name.clone().unwrap_or_else(|| a.dept.clone());
    let socket = control_socket::socket_path(&cfg.data_dir);
    let token = if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        let reply = control_socket::request(
            &socket,
            &EnrolRequest {
                department: a.dept.clone(),
                department_name: name,
                certificate_pem,
                subject: a.subject.clone(),
            },
        )
        .await?;
        match (reply.token, reply.error) {
            (Some(t), _) => t,
            (None, Some(e)) => bail!("{e}"),
            (None, None) => bail!("the gateway gave no answer"),
        }
    } else {
        offline(&cfg, &a, &name, &certificate_pem).await?
    };
    govshare::base::files::write_secret_file(&a.out, &token)?;
    println!(
        "enrolled '{}' as the first administrator; its token is in {}",
        a.dept,
        a.out.display()
    );
    Ok(())
}

/// The gateway is stopped: open its store and audit log here.
async fn offline(cfg: &Config, a: &BootstrapArgs, name: &str, pem: &str) -> Result<String> {
    if !cfg.data_dir.is_dir() {
        bail!(
            "{} is not a gateway data directory (start the gateway once first)",
            cfg.data_dir.display()
        );
    }
    let _stopped = govshare::gateway::lock_data_dir(&cfg.data_dir)
        .context("the gateway is running, but its control socket did not answer")?;
    let (store, _records) = govshare::gateway::open_store(&cfg.store_location()).context(
        "opening the store (if the gateway is running, its control socket did not answer)",
    )?;
    let keys = KeyRing::load_or_create(store.clone(), &cfg.issuer, &cfg.audience)?;
    let client_ca = ClientCa::load(&cfg.client_ca_path())?;
    let audit = cfg.open_audit(store.backend())?;
    let log: AuditLog = audit.log();
    // The gateway is stopped: nothing else changes the store.
    let token = enrol::enrol_first_admin(
        &Default::default(),
        &store,
        &log,
        &keys,
        &client_ca,
        &cfg.role_departments(),
        FirstAdmin {
            department: &a.dept,
            department_name: name,
            certificate_pem: pem,
            subject: &a.subject,
            lifetime: Duration::from_secs(cfg.max_token_days * 86_400),
        },
    )
    .await;
    drop(log);
    audit.close().await?;
    token
}
