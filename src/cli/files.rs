//! Reading inputs with errors that name the file.

use anyhow::{Context, Result};
use std::path::Path;

/// Reads a whole file; the error names the role and the path.
pub fn read(role: &str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {role} {}", path.display()))
}

/// Parses an RFC 3339 instant into Unix seconds.
pub fn parse_instant(s: &str) -> Result<u64> {
    let t = chrono::DateTime::parse_from_rfc3339(s).with_context(|| {
        format!("--at {s:?} is not an RFC 3339 time (e.g. 2025-10-01T08:00:00Z)")
    })?;
    u64::try_from(t.timestamp()).with_context(|| format!("--at {s:?} is before 1970"))
}

/// The current time in Unix seconds.
pub fn now() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)
}

/// An attestation policy: TOML, or JSON if the name ends in `.json`.
pub fn load_policy(p: &Path) -> Result<ciel_attestation::Policy> {
    Ok(ciel_client::policy::load(p)?)
}

/// Writes `bytes` to `path` whole or not at all: a temporary file beside
/// it, renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
