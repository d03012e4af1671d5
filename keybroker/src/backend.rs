//! Where the broker's state lives: in this process and its files (one
//! broker, the embedded default), or in PostgreSQL shared by replicas. The
//! handlers ask this one interface and do not know which.

use crate::admin::{ReplayGuard, SignedNonce};
use crate::audit::{AuditLog, Entry};
use crate::postgres::{Shared, SharedSessions};
use crate::problem::{ApiError, Kind};
use crate::resource::ResourcePath;
use crate::session::{Attested, SessionEvidence, Sessions};
use crate::store::{KeyStore, Lookup, VersionedKey};
use ciel_attestation::collateral::CollateralLookup;
use ciel_protocol::kbs::Jwk;
use std::sync::{Arc, Mutex};

/// One broker's state in memory and files.
#[derive(Debug)]
pub struct Local {
    pub sessions: Sessions,
    pub store: Mutex<KeyStore>,
    pub audit: Arc<AuditLog>,
    /// Nonces of admin requests already accepted.
    pub admin_nonces: ReplayGuard,
}

/// The broker's state.
#[derive(Debug)]
pub enum Backend {
    Local(Box<Local>),
    /// Every replica's state in one PostgreSQL database.
    Shared {
        shared: Shared,
        sessions: SharedSessions,
    },
}

fn store_lock() -> ApiError {
    ApiError::new(Kind::Internal, "key store lock")
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(Kind::Internal, e.to_string())
}

impl Backend {
    /// Sessions not yet expired (for the metrics gauge).
    pub fn open_sessions(&self) -> usize {
        match self {
            Backend::Local(l) => l.sessions.open_count(),
            Backend::Shared { sessions, .. } => sessions.open_count(),
        }
    }

    /// Starts a session: (id, nonce).
    pub async fn create_session(&self, tee: &str) -> Result<(String, String), ApiError> {
        match self {
            Backend::Local(l) => l.sessions.create(tee),
            Backend::Shared { sessions, .. } => sessions.create(tee).await,
        }
    }

    /// For `/attest`: the session's tee and nonce, consuming the nonce.
    pub async fn consume_nonce(&self, id: &str) -> Result<(String, String), ApiError> {
        match self {
            Backend::Local(l) => l.sessions.consume_nonce(id),
            Backend::Shared { sessions, .. } => sessions.consume_nonce(id).await,
        }
    }

    /// Marks a session attested. `sent` is the request's `tee-evidence`
    /// whole (what a replica stores, and checks again when it reads it);
    /// `decoded` is its evidence decoded (what one broker keeps).
    pub async fn attest(
        &self,
        id: &str,
        tee_pubkey: Jwk,
        decoded: SessionEvidence,
        sent: &serde_json::Value,
        token: String,
        claims: serde_json::Value,
    ) -> Result<String, ApiError> {
        match self {
            Backend::Local(l) => l.sessions.attest(id, tee_pubkey, decoded, token, claims),
            Backend::Shared { sessions, .. } => sessions.attest(id, &tee_pubkey, sent, token).await,
        }
    }

    /// The attested state of the session named by a cookie or a token.
    pub async fn attested(
        &self,
        cookie: Option<&str>,
        token: Option<&str>,
        dcap: Option<&(dyn CollateralLookup + Sync)>,
        tokens: &crate::ear::EarSigner,
    ) -> Result<Arc<Attested>, ApiError> {
        match self {
            Backend::Local(l) => l.sessions.attested(cookie, token),
            Backend::Shared { sessions, .. } => {
                sessions.attested(cookie, token, dcap, tokens).await
            }
        }
    }

    /// A resource's key: the newest live version, or the one asked for.
    pub async fn key(
        &self,
        resource: &ResourcePath,
        version: Option<u32>,
    ) -> Result<Result<VersionedKey, Lookup>, ApiError> {
        match self {
            Backend::Local(l) => l
                .store
                .lock()
                .map_err(|_| store_lock())?
                .get(resource, version)
                .map_err(internal),
            Backend::Shared { shared, .. } => Ok(shared.get_key(resource, version).await?),
        }
    }

    /// Stores a new version of `resource`; `allowed(first)` decides, given
    /// whether it is the first version, whether the caller may (roles).
    /// One broker decides and stores under one lock; replicas may race two
    /// admins to the first version, and then both versions are kept.
    pub async fn put_key(
        &self,
        resource: &ResourcePath,
        key: &[u8],
        allowed: impl Fn(bool) -> Result<(), ApiError>,
    ) -> Result<u32, ApiError> {
        match self {
            Backend::Local(l) => {
                let mut store = l.store.lock().map_err(|_| store_lock())?;
                allowed(!store.contains(resource))?;
                store.put(resource, key).map_err(internal)
            }
            Backend::Shared { shared, .. } => {
                allowed(!shared.contains_key(resource).await?)?;
                Ok(shared.put_key(resource, key).await?)
            }
        }
    }

    /// Retires a version; `Ok(false)`: no such version.
    pub async fn retire_key(
        &self,
        resource: &ResourcePath,
        version: u32,
    ) -> Result<bool, ApiError> {
        match self {
            Backend::Local(l) => l
                .store
                .lock()
                .map_err(|_| store_lock())?
                .retire(resource, version)
                .map_err(internal),
            Backend::Shared { shared, .. } => Ok(shared.retire_key(resource, version).await?),
        }
    }

    /// Appends to the audit log, durably; an error means the caller must
    /// not act on its decision.
    pub async fn append_audit(&self, e: &Entry) -> Result<(), ApiError> {
        let result = match self {
            Backend::Local(l) => l.audit.append(e).map_err(|e| e.to_string()),
            Backend::Shared { shared, .. } => {
                shared.append_audit(e).await.map_err(|e| e.to_string())
            }
        };
        result.map_err(|err| {
            tracing::error!(error = %err, "audit log write failed");
            ApiError::new(
                Kind::AuditFailure,
                "the audit log cannot be written; refusing rather than acting unaudited",
            )
        })
    }

    /// The audit log as JSON lines, its chain checked.
    pub async fn audit_snapshot(&self) -> Result<Vec<u8>, ApiError> {
        let failed = |e: String| ApiError::new(Kind::AuditFailure, e);
        match self {
            Backend::Local(l) => {
                // Reading and checking a long file: off the async threads.
                let log = l.audit.clone();
                tokio::task::spawn_blocking(move || log.snapshot())
                    .await
                    .map_err(internal)?
                    .map_err(|e| failed(e.to_string()))
            }
            Backend::Shared { shared, .. } => shared
                .audit_snapshot()
                .await
                .map_err(|e| failed(e.to_string())),
        }
    }

    /// Admits a validly signed admin request's nonce once.
    pub async fn admit_admin_nonce(&self, n: &SignedNonce, now: u64) -> Result<(), ApiError> {
        match self {
            Backend::Local(l) => l.admin_nonces.admit(&n.nonce, n.timestamp, now),
            Backend::Shared { shared, .. } => {
                shared.admit_admin_nonce(&n.nonce, n.timestamp, now).await
            }
        }
    }
}

/// Why the broker's state did not open.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error(transparent)]
    MasterKey(#[from] crate::master_key::MasterKeyError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Postgres(#[from] crate::postgres::PgError),
    #[error("the token signing key: {0}")]
    Token(#[from] crate::ear::EarError),
}

/// Opens what `config.storage` names: the key store and audit log files
/// (whose chain is verified first: the broker never appends to a log it
/// cannot vouch for), or the shared database.
pub async fn open(config: crate::config::Config) -> Result<crate::server::AppState, OpenError> {
    use crate::config::Storage;
    let master = config.master_key.open()?;
    match &config.storage {
        Storage::Files {
            key_store,
            audit_log,
        } => {
            let store = KeyStore::open_with(key_store, master)?;
            let audit = AuditLog::open(audit_log)?;
            if let Some(chain) = audit.chain() {
                tracing::info!(
                    log = %audit_log.display(),
                    entries = chain.entries,
                    head = %chain.head,
                    "audit log chain verified"
                );
            }
            Ok(crate::server::AppState::new(config, store, audit)?)
        }
        Storage::Postgres(pg) => {
            let shared = Shared::open(pg, master).await?;
            tracing::info!(schema = %pg.schema, pool = pg.pool_size, "shared store opened (PostgreSQL)");
            Ok(crate::server::AppState::replica(config, shared).await?)
        }
    }
}
