//! `ciel enclave boot`: the guest's boot flow in one process, for
//! development — attest to the key broker, receive the model key, unseal
//! the model in memory (never on disk), load it and answer one prompt.
//! With `--sim` the evidence comes from the simulated platform: it proves
//! nothing and gives no confidentiality.

use super::files;
use anyhow::{Context, Result, bail};
use ciel_attestation::sim::{SimSnpReport, SimTdxQuote};
use ciel_enclave::guest_settings::GuestSettings;
use ciel_enclave::kbs_client::sim::{SimSnpSource, SimTdxSource};
use ciel_enclave::kbs_client::{Backoff, EvidenceSource, KbsClient};
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
    /// Use a simulated platform for evidence, `snp` (the default) or `tdx`
    /// (quotes with the collateral to verify them; development only: NO
    /// confidentiality). Without it, evidence comes from the hardware
    /// through configfs-tsm (SEV-SNP or TDX guest kernels), or from the
    /// pod's attestation agent with --coco-agent.
    #[arg(long, conflicts_with = "coco_agent", value_name = "PLATFORM", num_args = 0..=1, default_missing_value = "snp", value_parser = ["snp", "tdx"])]
    pub sim: Option<String>,
    /// In a Kata Confidential Containers pod: evidence from the attestation
    /// agent's REST API (guest-components' api-server-rest; the pod needs
    /// the kernel parameter agent.guest_components_rest_api=all).
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = ciel_enclave::platform::coco::DEFAULT_URL)]
    pub coco_agent: Option<String>,
    /// On an Azure confidential VM: evidence from the vTPM (Trustee's
    /// az-snp-vtpm or az-tdx-vtpm: the paravisor's HCL report from NV index
    /// 0x01400001, a quote by the attestation key 0x81000003 over the
    /// session's nonce and PCRs 0-23, and on TDX the TD quote from
    /// --vtpm-imds). A TPM device (default /dev/tpmrm0)
    /// or unix:PATH, swtpm's socket. With --collateral-via the VCEK comes
    /// from the host's collateral service; without, verifiers need it from
    /// their own collateral source (a bundle).
    #[arg(long, value_name = "TPM", num_args = 0..=1, default_missing_value = "/dev/tpmrm0", conflicts_with_all = ["sim", "coco_agent"], value_parser = parse_tpm)]
    pub vtpm: Option<ciel_enclave::tpm::Transport>,
    /// With --vtpm on TDX: the instance metadata service that makes the TD
    /// quote for the HCL report's TDREPORT (Azure's; POST /acc/tdquote).
    #[arg(long, value_name = "URL", default_value = ciel_enclave::platform::vtpm::DEFAULT_IMDS, requires = "vtpm")]
    pub vtpm_imds: String,
    /// The GPUs attested with the CPU: `none`; `nvml` (every GPU the
    /// NVIDIA driver shows, through NVML loaded at run time; each must be
    /// in confidential-computing mode, DEVTOOLS off); or `sim:N`, N
    /// simulated GPUs (development only: NO confidentiality; their
    /// hierarchy is kept beside the simulated CPU's). Their reports go to
    /// the key broker with every release and into the attestation
    /// document; they are set ready only once a key was released.
    #[arg(long, default_value = "none", value_parser = parse_gpus)]
    pub gpus: GpuChoice,
    /// The init-data this VM was launched with (Kata's TOML, e.g. mounted
    /// from the pod's ConfigMap): checked against the evidence's HOST_DATA /
    /// MRCONFIGID before anything else, sent to the broker, carried in the
    /// attestation document; its `ciel.toml` entry may set kbs, kbs_ca,
    /// model_from and model_blob (flags may repeat but not contradict them).
    #[arg(long, value_name = "FILE")]
    pub init_data: Option<PathBuf>,
    /// Key broker URL as the guest sees it (https://HOST:PORT).
    #[arg(long)]
    pub kbs: Option<String>,
    /// The broker's CA certificate (PEM) to pin.
    #[arg(long)]
    pub kbs_ca: Option<PathBuf>,
    /// Reach the broker through the host's relay at this address
    /// (vsock://2:PORT in a VM; unix:PATH in development).
    #[arg(long)]
    pub kbs_via: Option<Endpoint>,
    /// The host's collateral service (vsock://2:PORT in a VM): a TDX
    /// quote's DCAP collateral goes into the evidence so clients verify it
    /// offline, and an SNP report's VCEK where the host gives no
    /// certificate table (and for --vtpm's HCL report). Untrusted: clients
    /// check every item.
    #[arg(long)]
    pub collateral_via: Option<Endpoint>,
    /// Where the sealed model comes from: the host's blob service (a
    /// transport address), an http(s):// object store serving byte ranges,
    /// or file:DIR, a mounted volume (in a pod).
    #[arg(long)]
    pub model_from: Option<String>,
    /// The CA certificate (PEM) of an https:// object store (the guest
    /// trusts no public root store).
    #[arg(long, value_name = "FILE")]
    pub model_ca: Option<PathBuf>,
    /// The sealed model's blob name at the host.
    #[arg(long)]
    pub model_blob: Option<String>,
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
    /// Where the forward pass runs: `cpu` (ciel's kernels, batched) or
    /// `cuda:N`, the GPU of that ordinal (a CUDA build, scripts/build-cuda.sh;
    /// candle's CUDA kernels, llama-architecture models, one sequence per
    /// pass). The weights are decrypted in guest memory, then uploaded.
    #[arg(long, default_value = "cpu")]
    pub device: ciel_engine::device::ComputeDevice,
    /// Sequences decoded together, one token each per forward pass
    /// (continuous batching: requests join and leave at every pass).
    /// Default 32 on the CPU; on a GPU 1, the only value it takes.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub max_batch: Option<usize>,
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
    /// Seconds between the certificate's evidence being made anew (fresh
    /// CPU and GPU evidence, the same TLS key), for clients whose policy
    /// bounds its age (`max_evidence_age_seconds`); 0: never.
    #[arg(long, default_value_t = 3600.0, value_parser = non_negative_seconds)]
    pub evidence_refresh: f64,
}

/// Where the guest's GPU evidence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuChoice {
    None,
    Nvml,
    Sim(u32),
}

pub fn parse_gpus(s: &str) -> Result<GpuChoice, String> {
    let max = ciel_attestation::nvidia::gpus::MAX_GPUS;
    match s {
        "none" => Ok(GpuChoice::None),
        "nvml" => Ok(GpuChoice::Nvml),
        _ => match s.strip_prefix("sim:").map(str::parse::<u32>) {
            Some(Ok(n)) if (1..=max as u32).contains(&n) => Ok(GpuChoice::Sim(n)),
            Some(_) => Err(format!("sim:N takes N from 1 to {max}")),
            None => Err("expected none, nvml or sim:N".into()),
        },
    }
}

/// The guest's GPU source for `choice`.
pub fn gpu_source(choice: GpuChoice) -> Result<std::sync::Arc<dyn ciel_enclave::gpu::GpuSource>> {
    use ciel_enclave::gpu::{NoGpus, NvmlGpus, SimGpus};
    Ok(match choice {
        GpuChoice::None => std::sync::Arc::new(NoGpus),
        GpuChoice::Nvml => {
            let nvml = NvmlGpus::open()
                .map_err(|e| anyhow::anyhow!(e))
                .context("GPU evidence through NVML (the NVIDIA driver's library)")?;
            tracing::info!("GPU evidence from NVML");
            std::sync::Arc::new(nvml)
        }
        GpuChoice::Sim(n) => {
            eprintln!(
                "WARNING: {n} SIMULATED GPUs: their evidence proves nothing about hardware and gives NO confidentiality."
            );
            let (sim, dir) = super::sim::load_or_create_nvidia()?;
            let gpus = SimGpus::new(sim, n, ciel_attestation::UnixTime(files::now()))
                .map_err(|e| anyhow::anyhow!(e))
                .with_context(|| format!("simulated GPUs from {}", dir.display()))?;
            std::sync::Arc::new(gpus)
        }
    })
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
    let on_gpu = a.device != ciel_engine::device::ComputeDevice::Cpu;
    let max_batch = match (a.max_batch, on_gpu) {
        (Some(n), true) if n > 1 => anyhow::bail!(
            "--max-batch {n} with --device {}: on a GPU ciel runs one sequence per pass (--max-batch 1)",
            a.device
        ),
        (Some(n), _) => n,
        (None, true) => 1,
        (None, false) => ciel_engine::scheduler::Limits::MAX_BATCH,
    };
    a.device
        .probe()
        .map_err(|e| anyhow::anyhow!("--device {e}"))?;
    if on_gpu && !a.no_prefix_cache {
        tracing::info!(device = %a.device, "prefix caching runs on ciel's CPU kernels only: off on the GPU");
    }
    if let Err(e) = ciel_engine::scheduler::Limits::check_pass(max_batch, a.step_tokens) {
        anyhow::bail!(
            "--step-tokens {} with --max-batch {max_batch}: {e}",
            a.step_tokens,
        );
    }
    let init_data = match &a.init_data {
        None => None,
        Some(path) => {
            let text = String::from_utf8(files::read("init-data", path)?)
                .with_context(|| format!("init-data {}: not UTF-8", path.display()))?;
            Some(
                ciel_protocol::initdata::InitData::parse(&text)
                    .with_context(|| format!("init-data {}", path.display()))?,
            )
        }
    };
    // The runtime first: the collateral bridge runs on it while the
    // evidence source (called off it) fetches through it.
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let collateral = match &a.collateral_via {
        Some(ep) => {
            let port = rt
                .block_on(ciel_enclave::serve::start_egress_bridge(ep.clone()))
                .with_context(|| format!("--collateral-via {ep}"))?;
            tracing::info!(via = %ep, "collateral from the host's collateral service");
            Some(
                ciel_collateral::Upstreams::service(
                    &format!("http://127.0.0.1:{port}"),
                    std::time::Duration::from_secs(30),
                )
                .map_err(anyhow::Error::msg)?,
            )
        }
        None => None,
    };
    let source = evidence_source(&a, init_data.as_ref(), collateral)?;
    let gpus = gpu_source(a.gpus)?;
    let settings = match &init_data {
        Some(init) => GuestSettings::from_init_data(init)?,
        None => GuestSettings::default(),
    };
    let platform: std::sync::Arc<dyn EvidenceSource + Send + Sync> = match init_data {
        None => std::sync::Arc::new(source),
        Some(init) => {
            let digest = hex::encode(init.digest());
            let bound = ciel_enclave::platform::WithInitData::bind(source, init)
                .map_err(|e| anyhow::anyhow!(e))
                .context("checking the init-data against this VM's evidence")?;
            tracing::info!(init_data = %digest, "init-data bound by the evidence");
            std::sync::Arc::new(bound)
        }
    };
    let kbs = GuestSettings::pick(settings.kbs.as_deref(), a.kbs.as_deref(), "kbs", "kbs")?;
    let flag_ca = match &a.kbs_ca {
        Some(p) => Some(
            String::from_utf8(files::read("broker CA", p)?)
                .with_context(|| format!("{}: not PEM text", p.display()))?,
        ),
        None => None,
    };
    let kbs_ca = GuestSettings::pick(
        settings.kbs_ca.as_deref(),
        flag_ca.as_deref(),
        "kbs-ca",
        "kbs_ca",
    )?;
    let model_from = GuestSettings::pick(
        settings.model_from.as_deref(),
        a.model_from.as_deref(),
        "model-from",
        "model_from",
    )?;
    let flag_model_ca = match &a.model_ca {
        Some(p) => Some(
            String::from_utf8(files::read("object store CA", p)?)
                .with_context(|| format!("{}: not PEM text", p.display()))?,
        ),
        None => None,
    };
    let model_ca = match (settings.model_ca.as_deref(), flag_model_ca.as_deref()) {
        (None, None) => None,
        (bound, given) => Some(GuestSettings::pick(bound, given, "model-ca", "model_ca")?),
    };
    let model_from = ciel_enclave::serve::fetch::ModelSource::parse(
        &model_from,
        model_ca.map(String::into_bytes),
    )
    .map_err(|e| anyhow::anyhow!("model_from: {e}"))?;
    let model_blob = GuestSettings::pick(
        settings.model_blob.as_deref(),
        a.model_blob.as_deref(),
        "model-blob",
        "model_blob",
    )?;
    let cfg = ciel_enclave::serve::ServeConfig {
        platform,
        gpus,
        kbs_url: kbs,
        kbs_ca_pem: kbs_ca.into_bytes(),
        kbs_via: a.kbs_via.clone(),
        model_from,
        model_blob,
        model_name: a.model_name.clone(),
        embedding_blob: a.embedding_model_blob.clone(),
        embedding_name: a.embedding_model_name.clone(),
        listen: a.listen.clone(),
        queue: a.queue,
        device: a.device,
        max_batch,
        step_tokens: a.step_tokens,
        prefix_cache: !a.no_prefix_cache && !on_gpu,
        limits: ciel_enclave::serve::ConnectionLimits {
            max_connections: a.max_connections,
            handshake: std::time::Duration::from_secs_f64(a.handshake_timeout),
            request_read: std::time::Duration::from_secs_f64(a.request_timeout),
        },
        max_tokens_limit: a.max_tokens_limit,
        kv_memory: a.kv_memory,
        fetch_parallel: a.fetch_parallel,
        evidence_refresh: (a.evidence_refresh > 0.0)
            .then(|| std::time::Duration::from_secs_f64(a.evidence_refresh)),
        kbs_backoff: Backoff {
            attempts: a.kbs_attempts,
            attempt_timeout: std::time::Duration::from_secs_f64(a.kbs_timeout),
            ..Backoff::default()
        },
    };
    rt.block_on(ciel_enclave::serve::run(cfg, |id| {
        tracing::info!(
            model = %id.claims.model.name,
            model_sha256 = %id.claims.model.sha256,
            gpus = id.claims.gpus.len(),
            "ready"
        );
    }))?;
    Ok(ExitCode::SUCCESS)
}

fn parse_tpm(s: &str) -> Result<ciel_enclave::tpm::Transport, String> {
    s.parse()
}

/// Where the evidence comes from: the simulated platform (`--sim`; with
/// init-data, a simulated host that launched the VM with its digest), the
/// pod's attestation agent (`--coco-agent`), an Azure vTPM (`--vtpm`), or
/// the hardware.
fn evidence_source(
    a: &ServeArgs,
    init_data: Option<&ciel_protocol::initdata::InitData>,
    collateral: Option<ciel_collateral::Upstreams>,
) -> Result<Box<dyn EvidenceSource + Send + Sync>> {
    if collateral.is_some() && (a.sim.is_some() || a.coco_agent.is_some()) {
        bail!(
            "--collateral-via is for evidence from configfs-tsm or --vtpm (the simulated platform carries its own collateral; the pod's attestation agent fetches its own)"
        );
    }
    if let Some(platform) = &a.sim {
        eprintln!(
            "WARNING: SIMULATED {platform} platform: this guest's evidence proves nothing about hardware and gives NO confidentiality."
        );
        if platform == "tdx" {
            let (sim, _) = super::sim::load_or_create_tdx()?;
            return Ok(Box::new(SimTdxSource {
                sim: std::sync::Arc::new(sim),
                template: SimTdxQuote {
                    mrconfigid: init_data.map(|i| i.mr_config_id()).unwrap_or([0; 48]),
                    ..SimTdxQuote::default()
                },
            }));
        }
        let (sim, _) = super::sim::load_or_create_snp()?;
        return Ok(Box::new(SimSnpSource {
            sim: std::sync::Arc::new(sim),
            template: SimSnpReport {
                host_data: init_data.map(|i| i.host_data()).unwrap_or_default(),
                ..SimSnpReport::default()
            },
        }));
    }
    if let Some(tpm) = &a.vtpm {
        let source = ciel_enclave::platform::VtpmSource::open(tpm.clone(), &a.vtpm_imds)
            .map_err(|e| anyhow::anyhow!(e))
            .with_context(|| format!("--vtpm {tpm}"))?;
        tracing::info!(%tpm, tee = source.tee(), "evidence from the Azure vTPM");
        return Ok(Box::new(match collateral {
            Some(service) => source.with_collateral(service),
            None => source,
        }));
    }
    if let Some(url) = &a.coco_agent {
        let agent = ciel_enclave::platform::coco::CocoAgentSource::connect(url)
            .map_err(|e| anyhow::anyhow!(e))?;
        tracing::info!(tee = agent.tee(), %url, "evidence from the pod's attestation agent");
        return Ok(Box::new(agent));
    }
    use ciel_enclave::platform::{SevGuestSource, TsmSource};
    match TsmSource::detect() {
        Ok(tsm) => {
            let tsm = match collateral {
                Some(service) => tsm.with_collateral(service),
                None => tsm,
            };
            tracing::info!(
                tee = tsm.tee(),
                "evidence from the hardware through configfs-tsm"
            );
            Ok(Box::new(tsm))
        }
        Err(tsm_error) => match SevGuestSource::detect() {
            Some(_) if collateral.is_some() => bail!(
                "--collateral-via: evidence comes from {} (configfs-tsm: {tsm_error}), which takes its VCEK from the host's certificate table only",
                SevGuestSource::DEVICE
            ),
            Some(dev) => {
                tracing::info!(
                    device = SevGuestSource::DEVICE,
                    "evidence from the hardware through the SEV guest driver"
                );
                Ok(Box::new(dev))
            }
            None => bail!(
                "no hardware evidence: configfs-tsm: {tsm_error}; and no {} (TDX quotes need configfs-tsm). In a Kata Confidential Containers pod pass --coco-agent; on a machine without SEV-SNP or TDX, pass --sim for development",
                SevGuestSource::DEVICE
            ),
        },
    }
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
    let (mut model, tokenizer, template) = ciel_enclave::serve::load_sealed_model(
        sealed,
        key,
        ciel_engine::device::ComputeDevice::Cpu,
    )
    .context("the sealed model")?;
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

/// Seconds, 0 (never) to a day.
fn non_negative_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(0.0) => Ok(0.0),
        _ => positive_seconds(text),
    }
}
