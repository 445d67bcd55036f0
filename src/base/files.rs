//! Files only their owner may read: keys, tokens, secrets.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes `contents` to `path` with mode 0600: keys and tokens.
pub fn write_secret_file(path: &Path, contents: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::io::Write::write_all(&mut f, contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
