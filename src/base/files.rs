//! Files only their owner may read: keys, tokens, secrets.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes `contents` to `path` with mode 0600, durably: keys and tokens.
pub fn write_secret_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut f, contents.as_ref())
        .with_context(|| format!("writing {}", path.display()))?;
    // A key restored from a snapshot must survive a crash; /dev/null (a
    // token nobody wants kept) cannot be synced.
    if f.metadata()?.is_file() {
        f.sync_all()
            .with_context(|| format!("syncing {}", path.display()))?;
    }
    Ok(())
}
