//! Signed admin requests to a key broker (`crate::cli::seal`'s key
//! registration, `ciel kbs retire`, `ciel kbs audit`): Ed25519 over method,
//! path, timestamp, a fresh nonce and the body, sent over TLS to the
//! broker's pinned CA only.

use super::files;
use anyhow::{Context, Result, bail};
use base64::Engine;
use ciel_keybroker::admin;
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the broker is and who is asking.
#[derive(Debug, Args)]
pub struct AdminTarget {
    /// The broker (https://HOST:PORT).
    #[arg(long)]
    pub kbs: String,
    /// The broker's CA certificate (PEM): the only root trusted.
    #[arg(long)]
    pub kbs_ca: Option<PathBuf>,
    /// An admin's Ed25519 private key (PKCS#8 DER, as `ciel kbs init` writes).
    #[arg(long)]
    pub admin_key: PathBuf,
}

#[derive(Debug, Args)]
pub struct RetireArgs {
    #[command(flatten)]
    pub target: AdminTarget,
    /// The resource (REPO/TYPE/TAG).
    pub resource: String,
    /// The version to retire (never released again; kept for audit).
    pub version: u32,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub target: AdminTarget,
}

/// Sends a signed admin request; returns the answer's body, or an error
/// carrying the broker's problem detail.
pub fn request(
    url: &str,
    admin_key: &Path,
    ca: Option<&Path>,
    (method, path): (&str, &str),
    body: &[u8],
) -> Result<Vec<u8>> {
    let pkcs8 = files::read("admin key", admin_key)?;
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| {
        anyhow::anyhow!(
            "admin key {} is not an Ed25519 PKCS#8 key",
            admin_key.display()
        )
    })?;
    let now = files::now();
    let nonce = admin::fresh_nonce().map_err(|e| anyhow::anyhow!("{}", e.detail))?;
    let sig = pair.sign(admin::admin_message(method, path, now, &nonce, body).as_bytes());
    let mut cfg = ureq::Agent::config_builder().http_status_as_error(false);
    if let Some(ca) = ca {
        let pem = files::read("broker CA", ca)?;
        let tls = ciel_enclave::kbs_client::pinned_tls(&pem)
            .with_context(|| format!("broker CA {}: no certificate", ca.display()))?;
        cfg = cfg.tls_config(tls);
    } else if url.starts_with("https://") {
        bail!(
            "--kbs {url}: give --kbs-ca with the broker's CA certificate (no system roots are trusted)"
        );
    }
    let agent: ureq::Agent = cfg.build().into();
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", url.trim_end_matches('/')))
        .header(admin::TIMESTAMP_HEADER, now.to_string())
        .header(admin::NONCE_HEADER, &nonce)
        .header(
            admin::SIGNATURE_HEADER,
            base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
        )
        .body(body.to_vec())
        .with_context(|| format!("key broker {url}: building the request"))?;
    let mut resp = agent
        .run(request)
        .with_context(|| format!("key broker {url}"))?;
    let bytes = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .with_context(|| format!("key broker {url}: reading the answer"))?;
    if !resp.status().is_success() {
        let problem: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        bail!(
            "key broker {url} refused {method} {path} ({}): {}",
            resp.status(),
            problem["detail"].as_str().unwrap_or("no detail")
        );
    }
    Ok(bytes)
}

/// `ciel kbs retire`.
pub fn retire(a: RetireArgs) -> Result<ExitCode> {
    let resource = ciel_keybroker::ResourcePath::parse(&a.resource)
        .with_context(|| format!("resource {:?}", a.resource))?;
    let t = &a.target;
    let path = format!("/kbs/v0/admin/retire/{resource}/{}", a.version);
    request(
        &t.kbs,
        &t.admin_key,
        t.kbs_ca.as_deref(),
        ("POST", &path),
        b"",
    )?;
    eprintln!(
        "retired {resource} version {}: it will not be released again",
        a.version
    );
    Ok(ExitCode::SUCCESS)
}

/// `ciel kbs audit`: the broker's audit log (JSON lines) on stdout.
pub fn audit(a: AuditArgs) -> Result<ExitCode> {
    use std::io::Write;
    let t = &a.target;
    let log = request(
        &t.kbs,
        &t.admin_key,
        t.kbs_ca.as_deref(),
        ("GET", "/kbs/v0/admin/audit"),
        b"",
    )?;
    std::io::stdout()
        .write_all(&log)
        .context("writing the audit log")?;
    Ok(ExitCode::SUCCESS)
}
