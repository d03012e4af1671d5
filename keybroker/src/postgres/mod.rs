//! The shared store for broker replicas: keys, sessions, admin nonces,
//! the token signing key and the hash-chained audit log in PostgreSQL, so
//! that any replica behind a load balancer can answer any step of a
//! guest's handshake and a replica killed mid-flow loses nothing (every
//! state change is committed before its answer leaves).
//!
//! Keys keep the file store's format (sealed by the master key, which
//! stays in its file or HSM: the database never sees a key in clear) and
//! the audit log keeps the file log's lines, so `ciel kbs audit verify`
//! checks either. One writer at a time extends the chain (a transaction
//! holding an advisory lock), whichever replica it is.

mod audit;
mod keys;
mod sessions;

pub use sessions::SharedSessions;

use crate::master_key::MasterKey;
use crate::problem::{ApiError, Kind};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::config::Host;

/// Why the shared store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    #[error("postgres: {0}")]
    Config(String),
    #[error("postgres: cannot get a connection: {0}")]
    Unavailable(String),
    #[error("postgres: {what}: {source}")]
    Query {
        what: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("postgres table {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
    #[error("postgres: the master key failed: {0}")]
    Sealing(String),
}

impl From<PgError> for ApiError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Unavailable(_) => ApiError::new(Kind::StoreUnavailable, e.to_string()),
            // A query that fails because the server went away is the same.
            PgError::Query { ref source, .. } if source.is_closed() => {
                ApiError::new(Kind::StoreUnavailable, e.to_string())
            }
            _ => ApiError::new(Kind::Internal, e.to_string()),
        }
    }
}

/// `[postgres]` in `kbs.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PgConfig {
    /// A libpq connection string (`postgresql://user@host:port/db` or
    /// `host=… user=… dbname=…`), without its password.
    pub url: String,
    /// The password, in a file of its own (kept out of config maps).
    pub password_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) for TLS to the database; required unless
    /// every host is loopback or a Unix socket.
    pub ca_file: Option<PathBuf>,
    /// The schema the broker's tables live in (created if absent).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Connections per replica.
    #[serde(default = "default_pool")]
    pub pool_size: usize,
}

/// The default schema.
pub fn default_schema() -> String {
    "ciel_kbs".into()
}

/// The default pool size.
pub fn default_pool() -> usize {
    16
}

impl PgConfig {
    /// Paths made relative to the configuration's directory, and the
    /// settings checked before anything connects.
    pub fn resolve(mut self, rel: impl Fn(&Path) -> PathBuf) -> Result<Self, String> {
        self.password_file = self.password_file.as_deref().map(&rel);
        self.ca_file = self.ca_file.as_deref().map(&rel);
        let valid = !self.schema.is_empty()
            && self.schema.len() <= 63
            && self
                .schema
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !self.schema.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err(format!(
                "postgres.schema {:?}: lower-case letters, digits and _, not starting with a digit",
                self.schema
            ));
        }
        if self.pool_size == 0 || self.pool_size > 256 {
            return Err(format!("postgres.pool_size {}: 1..=256", self.pool_size));
        }
        let parsed = self.connection()?;
        if parsed.get_password().is_some() {
            return Err(
                "postgres.url carries a password: put it in postgres.password_file instead".into(),
            );
        }
        if self.ca_file.is_none()
            && let Some(h) = parsed.get_hosts().iter().find(|h| !is_local(h))
        {
            return Err(format!(
                "postgres.url: host {} is not loopback or a Unix socket, and no postgres.ca_file is set: the database is only reached over TLS",
                match h {
                    Host::Tcp(name) => name.clone(),
                    Host::Unix(p) => p.display().to_string(),
                }
            ));
        }
        Ok(self)
    }

    fn connection(&self) -> Result<tokio_postgres::Config, String> {
        self.url
            .parse::<tokio_postgres::Config>()
            .map_err(|e| format!("postgres.url: {e}"))
    }
}

fn is_local(h: &Host) -> bool {
    match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// The connection pool and the master key: what every table needs.
#[derive(Clone)]
pub struct Shared {
    pool: Pool,
    master: Arc<MasterKey>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

/// Advisory lock keys (one namespace per purpose).
const LOCK_SCHEMA: i64 = 0x6369_656c_0001;
const LOCK_AUDIT: i64 = 0x6369_656c_0002;

impl Shared {
    /// Connects, creates the schema and its tables if absent, and checks
    /// that every stored key opens under `master` (a wrong master key is
    /// found at start-up, not at the first release).
    pub async fn open(config: &PgConfig, master: MasterKey) -> Result<Self, PgError> {
        let mut pg = config.connection().map_err(PgError::Config)?;
        if let Some(f) = &config.password_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| PgError::Config(format!("password_file {}: {e}", f.display())))?;
            pg.password(text.trim_end_matches(['\n', '\r']));
        }
        // Every connection works in the broker's schema.
        pg.options(format!("-c search_path={}", config.schema));
        pg.connect_timeout(Duration::from_secs(5));
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &config.ca_file {
            Some(ca) => {
                pg.ssl_mode(tokio_postgres::config::SslMode::Require);
                Manager::from_config(pg, tls(ca)?, manager_config)
            }
            None => Manager::from_config(pg, tokio_postgres::NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| PgError::Config(e.to_string()))?;
        let shared = Shared {
            pool,
            master: Arc::new(master),
        };
        shared.migrate(&config.schema).await?;
        shared.check_keys().await?;
        Ok(shared)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, PgError> {
        self.pool
            .get()
            .await
            .map_err(|e| PgError::Unavailable(e.to_string()))
    }

    async fn migrate(&self, schema: &str) -> Result<(), PgError> {
        let mut c = self.client().await?;
        let q = |source| PgError::Query {
            what: "creating the schema",
            source,
        };
        let tx = c.transaction().await.map_err(q)?;
        // Replicas that start together create the tables once.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_SCHEMA])
            .await
            .map_err(q)?;
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}.keys (
                 resource text NOT NULL, version integer NOT NULL,
                 nonce text NOT NULL, ciphertext text NOT NULL,
                 retired boolean NOT NULL DEFAULT false,
                 PRIMARY KEY (resource, version));
             CREATE TABLE IF NOT EXISTS {schema}.secrets (
                 name text PRIMARY KEY, nonce text NOT NULL, ciphertext text NOT NULL);
             CREATE TABLE IF NOT EXISTS {schema}.sessions (
                 id text PRIMARY KEY, tee text NOT NULL, nonce text NOT NULL,
                 created bigint NOT NULL, state smallint NOT NULL,
                 token_sha256 text UNIQUE, tee_pubkey text, evidence text, token text);
             CREATE INDEX IF NOT EXISTS sessions_created ON {schema}.sessions (created);
             CREATE TABLE IF NOT EXISTS {schema}.admin_nonces (
                 nonce text PRIMARY KEY, ts bigint NOT NULL);
             CREATE TABLE IF NOT EXISTS {schema}.audit_log (
                 seq bigint PRIMARY KEY, line text NOT NULL);"
        ))
        .await
        .map_err(q)?;
        tx.commit().await.map_err(q)
    }

    /// The broker's token signing key, shared by every replica (so a token
    /// from one verifies with the key any other shows): the first replica
    /// creates it, sealed by the master key; the others open it.
    pub async fn token_signing_key(&self) -> Result<zeroize::Zeroizing<Vec<u8>>, PgError> {
        const NAME: &str = "ear-signing-key";
        let c = self.client().await?;
        let q = |source| PgError::Query {
            what: "the token signing key",
            source,
        };
        let select = "SELECT nonce, ciphertext FROM secrets WHERE name = $1";
        let row = match c.query_opt(select, &[&NAME]).await.map_err(q)? {
            Some(row) => row,
            None => {
                // The first replica makes it; replicas starting together
                // keep whichever was stored first.
                let fresh = crate::ear::EarSigner::generate_pkcs8()
                    .map_err(|e| PgError::Sealing(e.to_string()))?;
                let label = secret_label(NAME);
                let sealed = crate::store::seal_version(&self.master, &label, 0, false, &fresh)
                    .map_err(PgError::Sealing)?;
                c.execute(
                    "INSERT INTO secrets (name, nonce, ciphertext) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                    &[&NAME, &sealed.nonce, &sealed.ciphertext],
                )
                .await
                .map_err(q)?;
                c.query_one(select, &[&NAME]).await.map_err(q)?
            }
        };
        let stored = crate::store::StoredKey {
            version: 0,
            nonce: row.get(0),
            ciphertext: row.get(1),
            retired: false,
        };
        crate::store::open_version(&self.master, &secret_label(NAME), &stored).map_err(
            |e| match e {
                crate::store::OpenError::Corrupt(message) => PgError::Corrupt {
                    table: "secrets",
                    message,
                },
                crate::store::OpenError::Sealing(m) => PgError::Sealing(m),
            },
        )
    }
}

/// A broker secret's name in the sealing's associated data: no slash, so it
/// can never be a resource path (`repo/kind/tag`).
fn secret_label(name: &str) -> String {
    format!("broker-secret:{name}")
}

/// TLS to the database, trusting only the CA in `ca`.
fn tls(ca: &Path) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    let bad = |m: String| PgError::Config(format!("ca_file {}: {m}", ca.display()));
    let text = std::fs::read(ca).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let certs = pem::parse_many(&text).map_err(|e| bad(e.to_string()))?;
    for c in certs.iter().filter(|c| c.tag() == "CERTIFICATE") {
        roots
            .add(rustls::pki_types::CertificateDer::from(
                c.contents().to_vec(),
            ))
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no CERTIFICATE in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, ca: bool) -> Result<PgConfig, String> {
        PgConfig {
            url: url.into(),
            password_file: None,
            ca_file: ca.then(|| PathBuf::from("ca.pem")),
            schema: default_schema(),
            pool_size: 4,
        }
        .resolve(|p| p.to_path_buf())
    }

    #[test]
    fn the_table_written_for_kbs_toml_reads_back_the_same() {
        let c = config("postgresql://ciel@127.0.0.1/ciel \"odd\" ü", false).unwrap();
        let text = crate::config::toml_table("postgres", &c).unwrap();
        #[derive(Deserialize)]
        struct Back {
            postgres: PgConfig,
        }
        let back: Back = toml::from_str(&text).unwrap();
        assert_eq!(back.postgres, c, "{text}");
    }

    #[test]
    fn plain_connections_only_to_loopback_and_no_password_in_the_url() {
        assert!(config("postgresql://ciel@127.0.0.1:5432/ciel", false).is_ok());
        assert!(config("host=/run/postgresql user=ciel", false).is_ok());
        assert!(config("postgresql://ciel@[::1]/ciel", false).is_ok());
        let remote = config("postgresql://ciel@db.example:5432/ciel", false).unwrap_err();
        assert!(remote.contains("db.example"), "{remote}");
        assert!(config("postgresql://ciel@db.example:5432/ciel", true).is_ok());
        let pw = config("postgresql://ciel:secret@127.0.0.1/ciel", false).unwrap_err();
        assert!(pw.contains("password_file"), "{pw}");
        let mut c = config("postgresql://ciel@127.0.0.1/ciel", false).unwrap();
        c.schema = "Robert'); DROP TABLE".into();
        assert!(
            c.resolve(|p| p.to_path_buf())
                .unwrap_err()
                .contains("schema")
        );
    }
}
