//! The audit log in PostgreSQL: the file log's lines, one row each,
//! numbered from 1. Appends from every replica form one chain: each runs in
//! a transaction that holds the audit lock, reads the head and adds the
//! line that names its hash.

use super::{LOCK_AUDIT, PgError, Shared};
use crate::audit::{Entry, GENESIS, chained_line, line_hash, verify_lines};
use std::path::Path;

/// How the log is named in errors (`AuditError` names a path).
const TABLE: &str = "postgres table audit_log";

impl Shared {
    /// Appends one entry, committed before this returns; an error means it
    /// is not in the log (and the caller must not act on the decision).
    pub async fn append_audit(&self, entry: &Entry) -> Result<(), PgError> {
        let q = |source| PgError::Query {
            what: "appending to the audit log",
            source,
        };
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(q)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_AUDIT])
            .await
            .map_err(q)?;
        let head = tx
            .query_opt(
                "SELECT seq, line FROM audit_log ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(q)?;
        let (seq, prev) = match head {
            Some(row) => {
                let seq: i64 = row.get(0);
                let line: String = row.get(1);
                (seq, line_hash(line.as_bytes()))
            }
            None => (0, GENESIS.to_string()),
        };
        let line = chained_line(entry, &prev).map_err(|e| PgError::Corrupt {
            table: "audit_log",
            message: e.to_string(),
        })?;
        let line = String::from_utf8(line).map_err(|e| PgError::Corrupt {
            table: "audit_log",
            message: e.to_string(),
        })?;
        tx.execute(
            "INSERT INTO audit_log (seq, line) VALUES ($1, $2)",
            &[&(seq + 1), &line],
        )
        .await
        .map_err(q)?;
        tx.commit().await.map_err(q)
    }

    /// The whole log as JSON lines (the file log's format), its chain
    /// checked: an edited, inserted or removed row is an error, not an
    /// answer.
    pub async fn audit_snapshot(&self) -> Result<Vec<u8>, PgError> {
        let rows = self
            .client()
            .await?
            .query("SELECT seq, line FROM audit_log ORDER BY seq", &[])
            .await
            .map_err(|source| PgError::Query {
                what: "reading the audit log",
                source,
            })?;
        let mut bytes = Vec::new();
        for (i, row) in rows.iter().enumerate() {
            let seq: i64 = row.get(0);
            if usize::try_from(seq).ok() != Some(i + 1) {
                return Err(PgError::Corrupt {
                    table: "audit_log",
                    message: format!("row {} has seq {seq}: rows were removed", i + 1),
                });
            }
            let line: String = row.get(1);
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        verify_lines(Path::new(TABLE), &bytes[..]).map_err(|e| PgError::Corrupt {
            table: "audit_log",
            message: e.to_string(),
        })?;
        Ok(bytes)
    }
}
