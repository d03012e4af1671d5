//! The append-only audit log: one JSON object per line, written and synced
//! *before* a key is released. If the log cannot be written, the broker
//! refuses to release (nothing leaves unaudited). Never contains keys.
//!
//! Each line carries `prev`, the SHA-256 of the line before it (the first
//! line: 64 zeros), so editing, inserting or deleting any entry breaks the
//! chain. The broker checks the whole chain when it opens the log and
//! refuses to start on a broken one; the head (the hash of the last line) is
//! logged at start-up and printed by `ciel kbs verify-audit`, so an auditor
//! who keeps it elsewhere also detects a log cut short.
//!
//! A failed append (a full disk) is rolled back to the last whole line, so
//! the log stays verifiable and appends resume once there is room. If even
//! the rollback fails, the log refuses every later append until restart.

use ring::digest::{SHA256, digest};
use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `prev` of the first line.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

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

/// What is written: the entry and the link to the line before.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(flatten)]
    entry: &'a Entry,
    prev: &'a str,
}

/// Why the audit log cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("audit log {path}, line {line}: {message}")]
    Corrupt {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error(
        "audit log {path}: an earlier append failed and could not be rolled back; restart the broker once the log is writable"
    )]
    Poisoned { path: PathBuf },
}

/// Where lines go: a file in production; anything append-only that can be
/// cut back to a length (a test's full disk, say).
pub trait AuditSink: Send {
    /// Writes `bytes` at the end and makes them durable.
    fn append_durably(&mut self, bytes: &[u8]) -> std::io::Result<()>;
    /// Cuts the log back to `len` bytes.
    fn truncate(&mut self, len: u64) -> std::io::Result<()>;
}

impl AuditSink for File {
    fn append_durably(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.write_all(bytes)?;
        self.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.set_len(len)?;
        self.sync_data()
    }
}

/// A verified log: how many entries, its length and its head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub entries: u64,
    pub len: u64,
    /// SHA-256 of the last line, hex ([`GENESIS`] for an empty log).
    pub head: String,
}

struct State {
    sink: Box<dyn AuditSink>,
    chain: Chain,
    poisoned: bool,
}

/// The log, shared by all requests.
pub struct AuditLog {
    path: PathBuf,
    state: Mutex<State>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// One entry as its log line (without the end of line), chained to the
/// line before by that line's hash: the file and PostgreSQL logs alike.
pub(crate) fn chained_line(entry: &Entry, prev: &str) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Line { entry, prev })
}

pub(crate) fn line_hash(line: &[u8]) -> String {
    hex::encode(digest(&SHA256, line))
}

/// Checks the chain of the log at `path` (an absent file is an empty log).
pub fn verify(path: &Path) -> Result<Chain, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Chain {
                entries: 0,
                len: 0,
                head: GENESIS.into(),
            });
        }
        Err(e) => return Err(io(e)),
    };
    if !file.metadata().map_err(io)?.is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    verify_lines(path, BufReader::new(file))
}

/// Checks the chain of the lines `reader` yields (errors name `path`).
pub(crate) fn verify_lines(path: &Path, mut reader: impl BufRead) -> Result<Chain, AuditError> {
    let io = |source| AuditError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut chain = Chain {
        entries: 0,
        len: 0,
        head: GENESIS.into(),
    };
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(io)?;
        if n == 0 {
            return Ok(chain);
        }
        let number = chain.entries + 1;
        let corrupt = |message: String| AuditError::Corrupt {
            path: path.to_path_buf(),
            line: number,
            message,
        };
        let Some(body) = line.strip_suffix(b"\n") else {
            return Err(corrupt(format!(
                "the last entry is incomplete ({n} bytes, no end of line): a torn write"
            )));
        };
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        match value.get("prev").and_then(|p| p.as_str()) {
            Some(prev) if prev == chain.head => {}
            Some(prev) => {
                return Err(corrupt(format!(
                    "prev is {prev}, but the line before hashes to {}: an entry was edited, inserted or removed",
                    chain.head
                )));
            }
            None => return Err(corrupt("no prev field".into())),
        }
        chain.head = line_hash(body);
        chain.entries = number;
        chain.len += n as u64;
    }
}

impl AuditLog {
    /// Opens (creating, mode 0600) `path` for appending, after checking the
    /// chain of what is already there.
    pub fn open(path: &Path) -> Result<Self, AuditError> {
        let chain = verify(path)?;
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| AuditError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self::with_sink(path, Box::new(file), chain))
    }

    /// A log over another sink that already holds `chain`.
    pub fn with_sink(path: &Path, sink: Box<dyn AuditSink>, chain: Chain) -> Self {
        AuditLog {
            path: path.to_path_buf(),
            state: Mutex::new(State {
                sink,
                chain,
                poisoned: false,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The chain as it stands.
    pub fn chain(&self) -> Option<Chain> {
        self.state.lock().ok().map(|s| s.chain.clone())
    }

    /// The log as this broker has written it so far, read from its file and
    /// checked: the bytes up to the length this log knows (a concurrent
    /// append cannot leave half a line in it), and their chain must end in
    /// the head this log holds (a file edited behind the broker's back is
    /// an error, not an answer).
    pub fn snapshot(&self) -> Result<Vec<u8>, AuditError> {
        let known = self.chain().ok_or_else(|| AuditError::Poisoned {
            path: self.path.clone(),
        })?;
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let len = usize::try_from(known.len).map_err(|e| io(std::io::Error::other(e)))?;
        let mut bytes = Vec::with_capacity(len);
        File::open(&self.path)
            .map_err(io)?
            .take(known.len)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let read = verify_lines(&self.path, &bytes[..])?;
        if read != known {
            return Err(AuditError::Corrupt {
                path: self.path.clone(),
                line: read.entries,
                message: format!(
                    "the file's first {} bytes end in head {} ({} entries), but this broker wrote {} ({} entries): the log was changed behind it",
                    read.len, read.head, read.entries, known.head, known.entries
                ),
            });
        }
        Ok(bytes)
    }

    /// Appends one entry and makes it durable; an error means it is not in
    /// the log (and the caller must not act on the decision).
    pub fn append(&self, entry: &Entry) -> Result<(), AuditError> {
        let poisoned = || AuditError::Poisoned {
            path: self.path.clone(),
        };
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        if st.poisoned {
            return Err(poisoned());
        }
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let mut bytes =
            chained_line(entry, &st.chain.head).map_err(|e| io(std::io::Error::other(e)))?;
        let head = line_hash(&bytes);
        bytes.push(b'\n');
        if let Err(e) = st.sink.append_durably(&bytes) {
            let len = st.chain.len;
            if let Err(rollback) = st.sink.truncate(len) {
                st.poisoned = true;
                tracing::error!(error = %rollback, log = %self.path.display(), "audit log rollback failed");
            }
            return Err(io(e));
        }
        st.chain.len += bytes.len() as u64;
        st.chain.entries += 1;
        st.chain.head = head;
        Ok(())
    }
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
