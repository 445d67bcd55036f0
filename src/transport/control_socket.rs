//! The gateway's local control socket, `<data_dir>/control.sock` (mode
//! 0600): what `govshare admin bootstrap` uses to enrol the first
//! administrator on a *running* gateway, whose store and audit log only the
//! gateway process may write. Only the gateway host's owner of the data
//! directory can reach it; it is not on the network.
//!
//! One request per connection: a JSON line in, a JSON line out.

use crate::audit::AuditLog;
use crate::control::certs::ClientCa;
use crate::control::enrol::{self, FirstAdmin};
use crate::control::keys::KeyRing;
use crate::control::roles::RoleDepartments;
use crate::control::store::Store;
use crate::store::WriteGate;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The socket's path in a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

#[derive(Debug, Serialize, Deserialize)]
pub struct EnrolRequest {
    pub department: String,
    pub department_name: String,
    pub certificate_pem: String,
    pub subject: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub token: Option<String>,
    pub error: Option<String>,
}

/// What the socket's handler needs from the running gateway.
pub struct Control {
    pub store: Store,
    pub log: AuditLog,
    pub keys: Arc<KeyRing>,
    pub client_ca: ClientCa,
    pub roles: RoleDepartments,
    pub token_lifetime: Duration,
    /// An enrolment is a change with its entry: a snapshot waits for it.
    pub gate: WriteGate,
}

/// Binds the socket (replacing a stale one) and serves it until the task is
/// dropped.
pub fn serve(path: &Path, control: Control) -> Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let control = Arc::new(control);
    Ok(tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let control = control.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(conn, &control).await {
                    tracing::warn!(error = %e, "control socket request failed");
                }
            });
        }
    }))
}

async fn handle(conn: UnixStream, control: &Control) -> Result<()> {
    let (read, mut write) = conn.into_split();
    let mut line = String::new();
    BufReader::new(read.take(1 << 20))
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<EnrolRequest>(&line) {
        Err(e) => Reply {
            token: None,
            error: Some(format!("not an enrolment request: {e}")),
        },
        Ok(r) => match enrol::enrol_first_admin(
            &control.gate,
            &control.store,
            &control.log,
            &control.keys,
            &control.client_ca,
            &control.roles,
            FirstAdmin {
                department: &r.department,
                department_name: &r.department_name,
                certificate_pem: &r.certificate_pem,
                subject: &r.subject,
                lifetime: control.token_lifetime,
            },
        )
        .await
        {
            Ok(token) => Reply {
                token: Some(token),
                error: None,
            },
            Err(e) => Reply {
                token: None,
                error: Some(format!("{e:#}")),
            },
        },
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

/// Sends one request to a running gateway's socket.
pub async fn request(path: &Path, r: &EnrolRequest) -> Result<Reply> {
    let conn = UnixStream::connect(path)
        .await
        .with_context(|| format!("connecting to {}", path.display()))?;
    let (read, mut write) = conn.into_split();
    let mut line = serde_json::to_vec(r)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut reply = String::new();
    BufReader::new(read).read_line(&mut reply).await?;
    serde_json::from_str(&reply).context("the gateway's reply is not understood")
}
