//! `ciel enclave boot`: the guest's boot flow in one process, for
//! development — attest to the key broker, receive the model key, unseal
//! the model in memory (never on disk), load it and answer one prompt.
//! With `--sim` the evidence comes from the simulated platform: it proves
//! nothing and gives no confidentiality.

use super::files;
use anyhow::{Context, Result, bail};
use ciel_attestation::sim::SimSnpReport;
use ciel_enclave::engine::chat::{ChatTemplate, Message};
use ciel_enclave::engine::generate::{Request, generate};
use ciel_enclave::engine::gguf::parse_metadata;
use ciel_enclave::engine::model::Model;
use ciel_enclave::engine::sampling::SamplingParams;
use ciel_enclave::engine::tokenizer::Tokenizer;
use ciel_enclave::kbs_client::sim::SimSnpSource;
use ciel_enclave::kbs_client::{Backoff, KbsClient};
use ciel_protocol::sealed::{DataKey, UnsealOptions, unseal_in_memory};
use clap::{Args, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum EnclaveCommand {
    /// One-shot boot: key release, in-memory unseal, model load, one answer.
    Boot(BootArgs),
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
    // The plaintext digest is re-checked beside the load (Model::load_unsealed).
    let options = UnsealOptions {
        verify_plaintext_digest: false,
        ..UnsealOptions::default()
    };
    let plain = unseal_in_memory(sealed, &key, options).context("unsealing the model")?;
    drop(key);
    tracing::info!(
        bytes = plain.len(),
        ms = t.elapsed().as_millis() as u64,
        "model unsealed in memory; data key dropped"
    );
    let mut head = vec![0u8; (8usize << 20).min(plain.len() as usize)];
    plain
        .reader()
        .read_exact(&mut head)
        .context("reading the model header")?;
    let meta = parse_metadata(&head).context("model metadata")?;
    let tokenizer = Tokenizer::from_gguf(&meta)?;
    let template = ChatTemplate::from_gguf(&meta)?;
    let mut model = Model::load_unsealed(&plain)?;
    drop(plain);
    let prompt = template.render(
        &[Message {
            role: "user".into(),
            content: a.prompt.clone(),
        }],
        true,
    )?;
    let req = Request {
        prompt: tokenizer.encode(&prompt, true),
        max_tokens: a.max_tokens,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    generate(&mut model, &tokenizer, &req, |s| {
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    })?;
    let _ = writeln!(out);
    Ok(ExitCode::SUCCESS)
}
