//! `ciel kbs init | serve | verify-audit`: run the key broker, check its
//! audit log.

use anyhow::{Context, Result, bail};
use ciel_keybroker::config::Config;
use ciel_keybroker::server::{ServeOptions, metrics_router, serve};
use ciel_keybroker::tls::{generate_dev_pki, server_config};
use ciel_transport::{Endpoint, Listener};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum KbsCommand {
    /// Create a broker directory: master key, admin key pair, TLS
    /// certificates (a development CA guests can pin) and a config file.
    Init(InitArgs),
    /// Serve the key broker (Trustee KBS protocol v0.4.0).
    Serve(ServeArgs),
    /// Check an audit log's hash chain; prints its entry count and head
    /// (keep the head elsewhere to detect a log later cut short).
    VerifyAudit(VerifyAuditArgs),
    /// Retire a key version at a running broker (an admin key with the
    /// retire role): never released again, kept for audit.
    Retire(super::kbs_admin::RetireArgs),
    /// Print a running broker's audit log (an admin key with the audit
    /// role), after the broker checked its hash chain.
    Audit(super::kbs_admin::AuditArgs),
}

#[derive(Debug, Args)]
pub struct VerifyAuditArgs {
    /// The audit log (JSON lines).
    pub log: PathBuf,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Directory to create.
    pub dir: PathBuf,
    /// Names (DNS or IP) for the TLS certificate.
    #[arg(long, default_values_t = ["127.0.0.1".to_string(), "localhost".to_string()])]
    pub tls_name: Vec<String>,
    /// Keep the master key in an HSM: this PKCS#11 module (e.g.
    /// /usr/lib/softhsm/libsofthsm2.so) generates an AES-256 key inside the
    /// token, never extractable, instead of master.key.
    #[arg(long, value_name = "MODULE", requires_all = ["pkcs11_token", "pkcs11_pin_file"])]
    pub pkcs11_module: Option<PathBuf>,
    /// The token's label.
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    pub pkcs11_token: Option<String>,
    /// A file holding the token's user PIN (kbs.toml refers to it).
    #[arg(long, value_name = "FILE", requires = "pkcs11_module")]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// The key's label in the token.
    #[arg(long, value_name = "LABEL", default_value = "ciel-kbs-master")]
    pub pkcs11_key_label: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Broker configuration (TOML), as written by `ciel kbs init`.
    #[arg(long)]
    pub config: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// TLS certificate chain (PEM). Without it the broker speaks plain HTTP
    /// (loopback development only).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics (`GET /metrics`, plain HTTP) on this
    /// address, apart from the guests' listener.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Open connections at most; one more is closed at once.
    #[arg(long, default_value_t = ServeOptions::MAX_CONNECTIONS, value_parser = super::connection_cap)]
    pub max_connections: usize,
    /// Seconds a client has to finish its TLS handshake.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub handshake_timeout: u64,
    /// Seconds a client has to send a request's headers, and again its body.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub request_timeout: u64,
}

pub fn run(cmd: KbsCommand) -> Result<ExitCode> {
    match cmd {
        KbsCommand::Init(a) => init(a),
        KbsCommand::Serve(a) => serve_cmd(a),
        KbsCommand::VerifyAudit(a) => verify_audit(a),
        KbsCommand::Retire(a) => super::kbs_admin::retire(a),
        KbsCommand::Audit(a) => super::kbs_admin::audit(a),
    }
}

fn verify_audit(a: VerifyAuditArgs) -> Result<ExitCode> {
    if !a.log.exists() {
        bail!("audit log {}: no such file", a.log.display());
    }
    let chain = ciel_keybroker::audit::verify(&a.log)?;
    println!(
        "{}: chain intact, {} entries, head {}",
        a.log.display(),
        chain.entries,
        chain.head
    );
    Ok(ExitCode::SUCCESS)
}

fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("write {}", path.display()))
}

fn init(a: InitArgs) -> Result<ExitCode> {
    if a.dir.exists()
        && std::fs::read_dir(&a.dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!("{} exists and is not empty", a.dir.display());
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("create {}", a.dir.display()))?;
    let rng = ring::rand::SystemRandom::new();
    let master_line = match (&a.pkcs11_module, &a.pkcs11_token, &a.pkcs11_pin_file) {
        (Some(module), Some(token), Some(pin)) => {
            let pin = std::path::absolute(pin).with_context(|| format!("{}", pin.display()))?;
            let cfg = ciel_keybroker::master_key::Pkcs11Config {
                module: module.clone(),
                token_label: token.clone(),
                key_label: a.pkcs11_key_label.clone(),
                pin_file: pin,
            };
            ciel_keybroker::master_key::MasterKey::generate_pkcs11(&cfg)?;
            ciel_keybroker::config::toml_table("master_key_pkcs11", &cfg)?
        }
        _ => {
            let mut master = zeroize::Zeroizing::new([0u8; 32]);
            ring::rand::SecureRandom::fill(&rng, master.as_mut())
                .map_err(|_| anyhow::anyhow!("random number generator failed"))?;
            write_new(
                &a.dir.join("master.key"),
                format!("{}\n", hex::encode(master.as_ref())).as_bytes(),
                true,
            )?;
            "master_key_file = \"master.key\"\n".to_string()
        }
    };
    let admin = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .map_err(|_| anyhow::anyhow!("admin key generation failed"))?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(admin.as_ref())
        .map_err(|_| anyhow::anyhow!("admin key"))?;
    use ring::signature::KeyPair;
    write_new(&a.dir.join("admin.key"), admin.as_ref(), true)?;
    let pki = generate_dev_pki(&a.tls_name)?;
    write_new(&a.dir.join("tls-ca.pem"), pki.ca_pem.as_bytes(), false)?;
    write_new(&a.dir.join("tls.pem"), pki.cert_pem.as_bytes(), false)?;
    write_new(&a.dir.join("tls.key"), pki.key_pem.as_bytes(), true)?;
    let config = format!(
        "# ciel key broker configuration (paths relative to this file)\nkey_store = \"keys.json\"\naudit_log = \"audit.jsonl\"\nsession_ttl_seconds = 300\n# Ed25519 public key of admin.key: signs `ciel seal --kbs` registrations.\nadmin_public_key = \"{}\"\n# More admins, each with only the roles it needs (register, rotate, retire, audit):\n# [[admin]]\n# name = \"auditor\"\n# public_key = \"<hex Ed25519 public key>\"\n# roles = [\"audit\"]\n# DANGER: trust simulated evidence (development only):\n# danger_simulated_roots = [\"<fingerprint printed by ciel attest sim-report>\"]\n\n# Every resource names the attestation policy a guest must satisfy: ciel's TOML\n# over the evidence, a Trustee resource policy (Rego, `package policy`, `allow`)\n# over the attestation token's claims and the resource path, or both:\n# [[resource]]\n# path = \"default/model-key/my-model\"\n# policy_file = \"my-model.policy.toml\"\n# rego_policy_file = \"my-model.rego\"\n\n# Replicas behind a load balancer: keys, sessions and the audit log in PostgreSQL\n# instead of key_store and audit_log (the master key stays where it is below):\n# [postgres]\n# url = \"postgresql://ciel@db:5432/ciel\"\n# password_file = \"pg-password\"\n# ca_file = \"pg-ca.pem\"        # TLS to the database; required unless it is on loopback\n# schema = \"ciel_kbs\"\n\n# The key store's master key:\n{master_line}",
        hex::encode(pair.public_key().as_ref())
    );
    write_new(&a.dir.join("kbs.toml"), config.as_bytes(), false)?;
    eprintln!(
        "created {dir}: kbs.toml, {master}admin.key (0600), tls.pem/tls.key and tls-ca.pem (pin this in guests)\nnext: add [[resource]] entries, then\n  ciel kbs serve --config {dir}/kbs.toml --tls-cert {dir}/tls.pem --tls-key {dir}/tls.key",
        dir = a.dir.display(),
        master = if a.pkcs11_module.is_some() {
            "the master key in the HSM (never extractable), "
        } else {
            "master.key (0600), "
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGINT or SIGTERM (handlers installed now, see
/// [`ciel_transport::shutdown_signal`]).
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    let signal = ciel_transport::shutdown_signal();
    async move {
        signal.await;
        tracing::info!("shutting down: finishing requests in flight");
    }
}

async fn bind_tcp(addr: &str, flag: &str) -> Result<Listener> {
    Listener::bind(&Endpoint::Tcp(addr.to_string()))
        .await
        .with_context(|| format!("{flag} {addr}"))
}

fn serve_cmd(a: ServeArgs) -> Result<ExitCode> {
    super::init_logging();
    let config = Config::load(&a.config)?;
    if config.resources.is_empty() {
        tracing::warn!("no [[resource]] configured: every resource request will be refused");
    }
    if config.attest_policy.trusts_any_simulated_root() {
        tracing::warn!(
            "DANGER: this broker accepts SIMULATED evidence (danger_simulated_roots): no confidentiality"
        );
    }
    if let ciel_keybroker::config::MasterKeySource::Pkcs11(p) = &config.master_key {
        tracing::info!(module = %p.module.display(), token = %p.token_label, key = %p.key_label, "master key in the HSM");
    }
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some(server_config(c, k)?),
        _ => None,
    };
    let resources = config.resources.len();
    let mut options = ServeOptions::new(tls);
    options.limits.max_connections = a.max_connections;
    options.http.handshake = Duration::from_secs(a.handshake_timeout);
    options.http.request_read = Duration::from_secs(a.request_timeout);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let state = Arc::new(ciel_keybroker::backend::open(config).await?);
        let listener = bind_tcp(&a.listen, "--listen").await?;
        let addr = listener.tcp_addr()?;
        if options.tls.is_some() {
            tracing::info!(%addr, resources, max_connections = options.limits.max_connections, "key broker listening (HTTPS)");
        } else {
            if !addr.ip().is_loopback() {
                bail!("refusing plain HTTP on a non-loopback address {addr}: give --tls-cert and --tls-key");
            }
            tracing::warn!(%addr, resources, "key broker listening on plain HTTP (loopback development only)");
        }
        if let Some(m) = &a.metrics_listen {
            let l = bind_tcp(m, "--metrics-listen").await?;
            tracing::info!(addr = %l.tcp_addr()?, "metrics at /metrics");
            tokio::spawn(ciel_transport::http::serve_metrics(
                l,
                metrics_router(state.clone()),
            ));
        }
        serve(listener, state, options, shutdown_signal()).await;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}
