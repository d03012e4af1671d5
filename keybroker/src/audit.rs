//! The append-only audit log: one JSON object per line, written and synced
//! *before* a key is released. If the log cannot be written, the broker
//! refuses to release (nothing leaves unaudited). Never contains keys.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One decision.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// RFC 3339 UTC.
    pub time: String,
    pub client: String,
    pub event: &'static str,
    pub resource: Option<String>,
    pub decision: &'static str,
    pub reasons: Vec<String>,
    /// SHA-256 of the evidence bytes, hex.
    pub evidence_sha256: Option<String>,
    pub platform: Option<String>,
    pub measurement: Option<String>,
}

/// The log file, shared by all requests.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<File>,
}

impl AuditLog {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends and syncs one entry; an error means the entry is not durable.
    pub fn append(&self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("audit log lock poisoned"))?;
        f.write_all(&line)?;
        f.sync_data()
    }
}
