//! The client side of the CLI: `ciel verify`, `ciel chat`, `ciel proxy`.
//! Each verifies the guest's attestation against the user's policy before
//! sending anything.
//!
//! Exit codes: 0 success, 1 attestation refused, 2 other errors.

use super::files;
use anyhow::{Context, Result};
use ciel_client::{Client, ClientError};
use clap::Args;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The guest, through its host (https://HOST:PORT).
    pub url: String,
    /// Attestation policy (TOML, or JSON if the name ends in .json).
    #[arg(long)]
    pub policy: PathBuf,
    /// Collateral for evidence that carries none (a TDX guest whose host
    /// serves none; an air-gapped hub), from `ciel collateral bundle`.
    #[arg(long)]
    pub collateral_bundle: Option<PathBuf>,
    /// Also fetch fresh evidence for a random nonce (/v1/attestation).
    #[arg(long)]
    pub fresh: bool,
    /// Print one JSON object instead of a report for people.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The guest, through its host (https://HOST:PORT).
    pub url: String,
    #[arg(long)]
    pub policy: PathBuf,
    /// Collateral for evidence that carries none (a TDX guest whose host
    /// serves none; an air-gapped hub), from `ciel collateral bundle`.
    #[arg(long)]
    pub collateral_bundle: Option<PathBuf>,
    /// The question; without it, an interactive session (one line per turn).
    pub prompt: Option<String>,
    /// A system message to start the conversation with.
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print the verification report before chatting.
    #[arg(long)]
    pub show_verification: bool,
}

#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Local plain-HTTP address for unmodified OpenAI clients (loopback only).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// The guest, through its host (https://HOST:PORT).
    #[arg(long)]
    pub upstream: String,
    #[arg(long)]
    pub policy: PathBuf,
    /// Collateral for evidence that carries none (a TDX guest whose host
    /// serves none; an air-gapped hub), from `ciel collateral bundle`.
    #[arg(long)]
    pub collateral_bundle: Option<PathBuf>,
}

/// The guest at `url` under the policy file, with the collateral bundle
/// where one is given.
fn endpoint(
    url: &str,
    policy: &std::path::Path,
    bundle: Option<&std::path::Path>,
) -> Result<ciel_client::Endpoint> {
    let endpoint = ciel_client::Endpoint::new(url, files::load_policy(policy)?)?;
    Ok(match bundle {
        Some(p) => endpoint.with_collateral_bundle(
            ciel_collateral::Bundle::from_json(&files::read("collateral bundle", p)?)
                .with_context(|| p.display().to_string())?,
        ),
        None => endpoint,
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("starting the async runtime")
}

/// Prints the refusal report and maps it to exit code 1.
fn refused(e: &ClientError) -> Option<ExitCode> {
    if let ClientError::Refused { verification, .. } = e {
        eprint!("{}", ciel_client::report::render_verification(verification));
        eprintln!("error: {e}");
        return Some(ExitCode::from(1));
    }
    None
}

fn warn_if_simulated(c: &Client) {
    if c.verification()
        .verdict
        .as_ref()
        .is_some_and(|v| v.simulated)
    {
        super::attest::warn_simulated();
    }
}

pub fn run_verify(a: VerifyArgs) -> Result<ExitCode> {
    let endpoint = endpoint(&a.url, &a.policy, a.collateral_bundle.as_deref())?;
    runtime()?.block_on(async {
        let client = match Client::connect_to(endpoint).await {
            Ok(c) => c,
            Err(e) => {
                if a.json
                    && let ClientError::Refused { verification, .. } = &e
                {
                    println!("{}", serde_json::to_string_pretty(&verification.to_json())?);
                    return Ok(ExitCode::from(1));
                }
                return refused(&e).map_or_else(|| Err(e.into()), Ok);
            }
        };
        warn_if_simulated(&client);
        let fresh = if a.fresh {
            match client.fresh_attestation().await {
                Ok(v) => Some(v),
                Err(e) => return refused(&e).map_or_else(|| Err(e.into()), Ok),
            }
        } else {
            None
        };
        if a.json {
            let mut out = json!({"handshake": client.verification().to_json()});
            if let Some(f) = &fresh {
                out["fresh"] = f.to_json();
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            print!(
                "{}",
                ciel_client::report::render_verification(client.verification())
            );
            if let Some(f) = &fresh {
                println!(
                    "fresh evidence (nonce {}):",
                    f.claims.nonce.as_deref().unwrap_or("")
                );
                for c in &f.checks {
                    println!(
                        "  [{}] {}: {}",
                        if c.ok { " ok " } else { "FAIL" },
                        c.name,
                        c.detail
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_chat(a: ChatArgs) -> Result<ExitCode> {
    let endpoint = endpoint(&a.url, &a.policy, a.collateral_bundle.as_deref())?;
    runtime()?.block_on(async {
        let client = match Client::connect_to(endpoint).await {
            Ok(c) => c,
            Err(e) => return refused(&e).map_or_else(|| Err(e.into()), Ok),
        };
        warn_if_simulated(&client);
        if a.show_verification {
            eprint!(
                "{}",
                ciel_client::report::render_verification(client.verification())
            );
        }
        let model = client.verification().claims.model.name.clone();
        let mut messages: Vec<Value> = Vec::new();
        if let Some(s) = &a.system {
            messages.push(json!({"role": "system", "content": s}));
        }
        let interactive = a.prompt.is_none();
        let mut lines = std::io::stdin().lines();
        loop {
            let prompt = match &a.prompt {
                Some(p) => p.clone(),
                None => {
                    eprint!("> ");
                    let _ = std::io::stderr().flush();
                    match lines.next() {
                        Some(l) => l.context("reading the prompt from stdin")?,
                        None => break,
                    }
                }
            };
            if prompt.trim().is_empty() {
                continue;
            }
            messages.push(json!({"role": "user", "content": prompt}));
            let mut req = json!({
                "model": model,
                "messages": messages,
                "max_tokens": a.max_tokens,
                "temperature": a.temperature,
            });
            if let Some(seed) = a.seed {
                req["seed"] = json!(seed);
            }
            let mut answer = String::new();
            let mut out = std::io::stdout().lock();
            let finish = client
                .chat_stream(&req, |t| {
                    answer.push_str(t);
                    let _ = out.write_all(t.as_bytes());
                    let _ = out.flush();
                })
                .await;
            let _ = writeln!(out);
            drop(out);
            match finish {
                Ok(f) if f == "length" => eprintln!("(stopped at --max-tokens {})", a.max_tokens),
                Ok(_) => {}
                Err(e) => return refused(&e).map_or_else(|| Err(e.into()), Ok),
            }
            messages.push(json!({"role": "assistant", "content": answer}));
            if !interactive {
                break;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_proxy(a: ProxyArgs) -> Result<ExitCode> {
    super::init_logging();
    if !a.listen.ip().is_loopback() {
        anyhow::bail!(
            "--listen {}: the proxy speaks plain HTTP to its clients, so it listens on loopback only (prompts would cross the network unencrypted)",
            a.listen
        );
    }
    let endpoint = endpoint(&a.upstream, &a.policy, a.collateral_bundle.as_deref())?;
    runtime()?.block_on(async {
        let client = match Client::connect_to(endpoint).await {
            Ok(c) => c,
            Err(e) => return refused(&e).map_or_else(|| Err(e.into()), Ok),
        };
        warn_if_simulated(&client);
        let claims = &client.verification().claims;
        tracing::info!(
            upstream = %a.upstream,
            model = %claims.model.name,
            model_sha256 = %claims.model.sha256,
            "upstream verified; every forwarded request is verified again on its own connection"
        );
        let listener = ciel_transport::Listener::bind(&ciel_transport::Endpoint::Tcp(a.listen.to_string()))
            .await
            .with_context(|| format!("--listen {}", a.listen))?;
        let serving = super::proxy::serve(listener, std::sync::Arc::new(client));
        tracing::info!(listen = %a.listen, "OpenAI-compatible endpoint (plain HTTP, local use only)");
        serving.await;
        Ok(ExitCode::SUCCESS)
    })
}
