//! `ciel enclave boot`: the guest's boot flow in one process, for
//! development — attest to the key broker, receive the model key, unseal
//! the model in memory (never on disk), load it and answer one prompt.
//! With `--sim` the evidence comes from the simulated platform: it proves
//! nothing and gives no confidentiality.

use super::files;
use anyhow::{Context, Result, bail};
use ciel_attestation::sim::SimSnpReport;
use ciel_enclave::kbs_client::sim::SimSnpSource;
use ciel_enclave::kbs_client::{Backoff, KbsClient};
use ciel_engine::chat::user_prompt;
use ciel_engine::generate::{Request, generate};
use ciel_engine::sampling::SamplingParams;
use ciel_protocol::sealed::DataKey;
use ciel_transport::Endpoint;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum EnclaveCommand {
    /// One-shot boot: key release, in-memory unseal, model load, one answer.
    Boot(BootArgs),
    /// The guest service: key release through the host's relay, the sealed
    /// model fetched from the host and decrypted in memory, then the
    /// OpenAI-compatible API over attested TLS until SIGTERM.
    Serve(Box<ServeArgs>),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Use the simulated SEV-SNP platform for evidence (development only:
    /// NO confidentiality). Without it, evidence comes from the hardware
    /// through configfs-tsm (SEV-SNP or TDX guest kernels).
    #[arg(long)]
    pub sim: bool,
    /// Key broker URL as the guest sees it (https://HOST:PORT).
    #[arg(long)]
    pub kbs: String,
    /// The broker's CA certificate (PEM) to pin.
    #[arg(long)]
    pub kbs_ca: PathBuf,
    /// Reach the broker through the host's relay at this address
    /// (vsock://2:PORT in a VM; unix:PATH in development).
    #[arg(long)]
    pub kbs_via: Option<Endpoint>,
    /// The host's blob service.
    #[arg(long)]
    pub model_from: Endpoint,
    /// The sealed model's blob name at the host.
    #[arg(long)]
    pub model_blob: String,
    /// The model's name for clients (default: the sealed header's).
    #[arg(long)]
    pub model_name: Option<String>,
    /// A sealed sentence-embedding model's blob name at the host (from
    /// `ciel embeddings pack`, then `ciel seal`), served on /v1/embeddings.
    #[arg(long)]
    pub embedding_model_blob: Option<String>,
    /// The embedding model's name for clients (default: the sealed header's).
    #[arg(long, requires = "embedding_model_blob")]
    pub embedding_model_name: Option<String>,
    /// Where the API listens (vsock://any:PORT in a VM).
    #[arg(long)]
    pub listen: Endpoint,
    /// Requests that may wait beyond the running batch before 429.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Sequences decoded together, one token each per forward pass
    /// (continuous batching: requests join and leave at every pass).
    #[arg(long, default_value_t = ciel_engine::scheduler::Limits::MAX_BATCH, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub max_batch: usize,
    /// Tokens one forward pass carries: the batch's decodes, then chunks of
    /// waiting prompts (a long prompt is cut into chunks between decode
    /// steps). At least --max-batch + 16.
    #[arg(long, default_value_t = ciel_engine::scheduler::Limits::STEP_TOKENS)]
    pub step_tokens: usize,
    /// Do not reuse the keys and values of prompt prefixes that requests
    /// share (e.g. one system prompt). The cache is shared by every client
    /// of this guest, so its timing can tell a client whether another sent
    /// the same prefix recently; turn it off where that matters.
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Open client connections; more are closed at once.
    #[arg(long, default_value_t = 256, value_parser = super::connection_cap)]
    pub max_connections: usize,
    /// Seconds a client has to finish its TLS handshake.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    pub handshake_timeout: f64,
    /// Seconds a client has to send a request's headers, and again its body
    /// (408 after that): slow-drip clients cannot hold connections.
    #[arg(long, default_value_t = 30.0, value_parser = positive_seconds)]
    pub request_timeout: f64,
    /// Largest max_tokens a request may ask for.
    #[arg(long, default_value_t = 2048)]
    pub max_tokens_limit: usize,
    /// Memory the K/V cache may take (bytes, or with KiB/MiB/GiB), for all
    /// running sequences together, in blocks of 16 positions: the context
    /// served is the model's trained one or what fits, whichever is
    /// smaller (a request that does not fit is a 400 saying so); requests
    /// wait in the queue while the blocks they need are held.
    #[arg(long, default_value = "2GiB", value_parser = super::byte_size)]
    pub kv_memory: u64,
    /// Parallel range requests when fetching the sealed model.
    #[arg(long, default_value_t = 4)]
    pub fetch_parallel: usize,
    /// Attempts at each key-broker step before giving up (with backoff
    /// between them: 0.2 s doubling up to 5 s).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub kbs_attempts: u32,
    /// Seconds one exchange with the key broker may take.
    #[arg(long, default_value_t = 30.0, value_parser = positive_seconds)]
    pub kbs_timeout: f64,
}

#[derive(Debug, Args)]
pub struct BootArgs {
    /// Key broker (https://HOST:PORT).
    #[arg(long)]
    pub kbs: String,
    /// The broker's CA certificate (PEM) to pin.
    #[arg(long)]
    pub kbs_ca: PathBuf,
    /// The sealed model (.csm); its header names the key's resource.
    #[arg(long)]
    pub model: PathBuf,
    /// Use the simulated SEV-SNP platform for evidence (development only).
    #[arg(long)]
    pub sim: bool,
    /// The user's question.
    #[arg(long)]
    pub prompt: String,
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
}

pub fn run(cmd: EnclaveCommand) -> Result<ExitCode> {
    match cmd {
        EnclaveCommand::Boot(a) => boot(a),
        EnclaveCommand::Serve(a) => serve(*a),
    }
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    super::init_logging();
    // Checked before the key release and the model's load, not after.
    if let Err(e) = ciel_engine::scheduler::Limits::check_pass(a.max_batch, a.step_tokens) {
        anyhow::bail!(
            "--step-tokens {} with --max-batch {}: {e}",
            a.step_tokens,
            a.max_batch
        );
    }
    use ciel_enclave::kbs_client::EvidenceSource;
    let platform: std::sync::Arc<dyn EvidenceSource + Send + Sync> = if a.sim {
        eprintln!(
            "WARNING: SIMULATED platform: this guest's evidence proves nothing about hardware and gives NO confidentiality."
        );
        let (sim, _) = super::sim::load_or_create_snp()?;
        std::sync::Arc::new(SimSnpSource {
            sim: std::sync::Arc::new(sim),
            template: SimSnpReport::default(),
        })
    } else {
        use ciel_enclave::platform::{SevGuestSource, TsmSource};
        match TsmSource::detect() {
            Ok(tsm) => {
                tracing::info!(
                    tee = tsm.tee(),
                    "evidence from the hardware through configfs-tsm"
                );
                std::sync::Arc::new(tsm)
            }
            Err(tsm_error) => match SevGuestSource::detect() {
                Some(dev) => {
                    tracing::info!(
                        device = SevGuestSource::DEVICE,
                        "evidence from the hardware through the SEV guest driver"
                    );
                    std::sync::Arc::new(dev)
                }
                None => bail!(
                    "no hardware evidence: configfs-tsm: {tsm_error}; and no {} (TDX quotes need configfs-tsm). On a machine without SEV-SNP or TDX, pass --sim for development",
                    SevGuestSource::DEVICE
                ),
            },
        }
    };
    let cfg = ciel_enclave::serve::ServeConfig {
        platform,
        kbs_url: a.kbs.clone(),
        kbs_ca_pem: files::read("broker CA", &a.kbs_ca)?,
        kbs_via: a.kbs_via.clone(),
        model_from: a.model_from.clone(),
        model_blob: a.model_blob.clone(),
        model_name: a.model_name.clone(),
        embedding_blob: a.embedding_model_blob.clone(),
        embedding_name: a.embedding_model_name.clone(),
        listen: a.listen.clone(),
        queue: a.queue,
        max_batch: a.max_batch,
        step_tokens: a.step_tokens,
        prefix_cache: !a.no_prefix_cache,
        limits: ciel_enclave::serve::ConnectionLimits {
            max_connections: a.max_connections,
            handshake: std::time::Duration::from_secs_f64(a.handshake_timeout),
            request_read: std::time::Duration::from_secs_f64(a.request_timeout),
        },
        max_tokens_limit: a.max_tokens_limit,
        kv_memory: a.kv_memory,
        fetch_parallel: a.fetch_parallel,
        kbs_backoff: Backoff {
            attempts: a.kbs_attempts,
            attempt_timeout: std::time::Duration::from_secs_f64(a.kbs_timeout),
            ..Backoff::default()
        },
    };
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(ciel_enclave::serve::run(cfg, |id| {
        tracing::info!(
            model = %id.claims.model.name,
            model_sha256 = %id.claims.model.sha256,
            "ready"
        );
    }))?;
    Ok(ExitCode::SUCCESS)
}

fn boot(a: BootArgs) -> Result<ExitCode> {
    super::init_logging();
    if !a.sim {
        bail!(
            "only --sim is available in this one-shot mode; on SEV-SNP/TDX hardware the guest runtime gets evidence from the platform"
        );
    }
    eprintln!(
        "WARNING: SIMULATED platform: this evidence proves nothing about hardware and gives NO confidentiality."
    );
    let sealed = files::read("sealed model", &a.model)?;
    let header = ciel_protocol::sealed::SealedHeader::parse(&sealed)
        .with_context(|| format!("sealed model {}", a.model.display()))?;
    let resource = header.header.resource.clone();
    let (sim, _) = super::sim::load_or_create_snp()?;
    let ca = files::read("broker CA", &a.kbs_ca)?;
    let client = KbsClient::with_pinned_ca(&a.kbs, &ca, Backoff::default())?;
    let source = SimSnpSource {
        sim: &sim,
        template: SimSnpReport::default(),
    };
    let key = client
        .fetch_resource(&resource, &source)
        .with_context(|| format!("key release for {resource}"))?;
    let key: [u8; 32] = key
        .as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("the released key is {} bytes, expected 32", key.len()))?;
    let key = DataKey::from_bytes(key);
    let t = std::time::Instant::now();
    let (mut model, tokenizer, template) =
        ciel_enclave::serve::load_sealed_model(sealed, key).context("the sealed model")?;
    tracing::info!(
        ms = t.elapsed().as_millis() as u64,
        "model unsealed and loaded in memory; data key dropped"
    );
    // A chat model answers the prompt as a user message; a base model (no
    // chat template) continues it as raw text.
    if template.is_none() {
        eprintln!("note: the model has no chat template; continuing the prompt as raw text");
    }
    let (_, prompt_ids) = user_prompt(template.as_ref(), &tokenizer, &a.prompt)?;
    let req = Request {
        prompt: prompt_ids,
        max_tokens: a.max_tokens,
        sampling: SamplingParams::default(),
        stop: vec![],
        logprobs: None,
        ..Request::default()
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    generate(&mut model, &tokenizer, &req, |r| {
        let _ = out.write_all(r.text.as_bytes());
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    Ok(ExitCode::SUCCESS)
}

/// A number of seconds, more than zero and at most a day.
fn positive_seconds(text: &str) -> Result<f64, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if secs > 0.0 && secs <= 86_400.0 {
        Ok(secs)
    } else {
        Err(format!(
            "{text} s is out of range (more than 0, at most 86400)"
        ))
    }
}
