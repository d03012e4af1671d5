//! `ciel embeddings pack`: a sentence-transformers model folder as one
//! bundle file, to seal and serve like a GGUF (`ciel_engine::embeddings`).

use super::files;
use anyhow::{Context, Result, bail};
use ciel_engine::embeddings::{EmbeddingModel, read_folder};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum EmbeddingsCommand {
    /// Bundle a sentence-transformers folder (model.safetensors,
    /// tokenizer.json, config.json, sentence_bert_config.json,
    /// modules.json, 1_Pooling/config.json) into one file for `ciel seal`.
    Pack(PackArgs),
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The model folder (`scripts/fetch-model.sh minilm` prints one).
    #[arg(long)]
    pub from: PathBuf,
    /// The bundle to write (refused if it exists).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: EmbeddingsCommand) -> Result<ExitCode> {
    match cmd {
        EmbeddingsCommand::Pack(a) => run_pack(&a),
    }
}

fn run_pack(a: &PackArgs) -> Result<ExitCode> {
    if a.out.exists() {
        bail!("{} exists; not overwriting it", a.out.display());
    }
    let bundle = read_folder(&a.from).with_context(|| a.from.display().to_string())?;
    // Loaded once here, so that a bundle the guest could not serve is
    // refused now rather than at boot inside a VM.
    let model = EmbeddingModel::from_bundle(&bundle)?;
    super::files::write_atomic(&a.out, &bundle)?;
    let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bundle));
    println!(
        "{}: {} bytes, {} dimensions, at most {} tokens an input, sha256 {digest}",
        a.out.display(),
        bundle.len(),
        model.dimensions(),
        model.max_tokens()
    );
    Ok(ExitCode::SUCCESS)
}

/// For `ciel demo --embedding-model PATH`: the bundle to seal (PATH itself,
/// or PATH's folder packed into `work`) and the model's name in the API
/// (the folder's or file's name, lowercased).
pub fn demo_bundle(path: &std::path::Path, work: &std::path::Path) -> Result<(PathBuf, String)> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "embeddings".into());
    if !path.is_dir() {
        let bytes = files::read("embedding model bundle", path)?;
        EmbeddingModel::from_bundle(&bytes).with_context(|| path.display().to_string())?;
        return Ok((path.to_path_buf(), name));
    }
    let out = work.join(format!("{name}.embeddings"));
    if out.exists() {
        std::fs::remove_file(&out)?;
    }
    run_pack(&PackArgs {
        from: path.to_path_buf(),
        out: out.clone(),
    })?;
    Ok((out, name))
}
