//! `ciel seal`, `ciel unseal`, `ciel inspect`: the sealed model format on
//! the command line. Outputs are written to a temporary file and renamed
//! only when complete, so a failure never leaves a partial model behind.

use super::files;
use anyhow::{Context, Result, bail};
use ciel_keybroker::ResourcePath;
use ciel_protocol::sealed::{self, DataKey, ModelInfo, SealParams, SealedHeader};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct SealArgs {
    /// The model file (GGUF, safetensors or any file).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Where to write the sealed model (.csm).
    #[arg(long)]
    pub out: PathBuf,
    /// Key broker resource for the data key: REPOSITORY/TYPE/TAG.
    #[arg(long)]
    pub resource: String,
    /// Write the fresh data key (hex) to this file, mode 0600.
    #[arg(long, required_unless_present = "kbs")]
    pub key_out: Option<PathBuf>,
    /// Register the data key at this key broker (https://HOST:PORT).
    #[arg(long, requires = "admin_key")]
    pub kbs: Option<String>,
    /// The broker's admin key (Ed25519 PKCS#8, from `ciel kbs init`).
    #[arg(long, requires = "kbs")]
    pub admin_key: Option<PathBuf>,
    /// CA certificate (PEM) the broker's TLS certificate must chain to.
    #[arg(long)]
    pub kbs_ca: Option<PathBuf>,
    /// Model name recorded in the header (default: the file name).
    #[arg(long)]
    pub name: Option<String>,
    /// Plaintext bytes per chunk.
    #[arg(long, default_value_t = sealed::DEFAULT_CHUNK)]
    pub chunk_size: u32,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct UnsealArgs {
    /// The sealed model.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// The data key file (hex), as written by `ciel seal --key-out`.
    #[arg(long)]
    pub key: PathBuf,
    /// Where to write the plaintext (debugging only: a guest never does this).
    #[arg(long)]
    pub out: PathBuf,
    /// Decryption threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The sealed model.
    pub file: PathBuf,
    /// Print the header as JSON.
    #[arg(long)]
    pub json: bool,
}

fn progress(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn detect_format(path: &Path) -> Result<&'static str> {
    let mut head = [0u8; 9];
    let n = File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .with_context(|| format!("cannot read model {}", path.display()))?;
    Ok(match head.get(..n) {
        Some(h) if h.starts_with(b"GGUF") => "gguf",
        Some([.., b'{']) if n == 9 => "safetensors",
        _ => "raw",
    })
}

fn refuse_overwrite(path: &Path, force: bool) -> Result<()> {
    if path.exists() && !force {
        bail!("{} exists (use --force to replace it)", path.display());
    }
    Ok(())
}

fn partial_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Creates `partial`, lets `write` fill it, then flushes and syncs it; on
/// any failure the partial file is removed, so nothing half-written (or
/// half-decrypted) stays behind. The caller renames it into place.
fn write_partial<T>(
    partial: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<T>,
) -> Result<T> {
    let result = (|| -> Result<T> {
        let mut out = BufWriter::new(
            File::create(partial).with_context(|| format!("create {}", partial.display()))?,
        );
        let value = write(&mut out)?;
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("write {}", partial.display()))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(partial);
    }
    result
}

fn write_key_file(path: &Path, key: &DataKey) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create key file {}", path.display()))?;
    let mut text = zeroize::Zeroizing::new(hex::encode(key.as_bytes()));
    text.push('\n');
    f.write_all(text.as_bytes())
        .with_context(|| format!("cannot write key file {}", path.display()))
}

/// Reads a key file: 64 hex digits.
pub fn read_key_file(path: &Path) -> Result<DataKey> {
    let raw = zeroize::Zeroizing::new(files::read("key file", path)?);
    let text = std::str::from_utf8(&raw)
        .with_context(|| format!("key file {} is not text", path.display()))?;
    let bytes = zeroize::Zeroizing::new(
        hex::decode(text.trim())
            .with_context(|| format!("key file {} is not hex", path.display()))?,
    );
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "key file {}: {} bytes, expected 32",
            path.display(),
            bytes.len()
        )
    })?;
    Ok(DataKey::from_bytes(arr))
}

pub fn run_seal(a: SealArgs) -> Result<ExitCode> {
    let resource = ResourcePath::parse(&a.resource)?;
    refuse_overwrite(&a.out, a.force)?;
    if let Some(k) = &a.key_out {
        refuse_overwrite(k, a.force)?;
    }
    let len = std::fs::metadata(&a.input)
        .with_context(|| format!("cannot read model {}", a.input.display()))?
        .len();
    let format = detect_format(&a.input)?;
    let name = a.name.clone().unwrap_or_else(|| {
        a.input
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });

    // Pass 1: the plaintext digest the header commits to.
    let bar = progress(len, "hashing");
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    let mut input = BufReader::with_capacity(
        1 << 20,
        File::open(&a.input).with_context(|| format!("open {}", a.input.display()))?,
    );
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = input
            .read(&mut buf)
            .with_context(|| format!("read {}", a.input.display()))?;
        if n == 0 {
            break;
        }
        digest.update(buf.get(..n).unwrap_or_default());
        bar.inc(n as u64);
    }
    bar.finish_and_clear();
    let mut sha = [0u8; 32];
    sha.copy_from_slice(digest.finish().as_ref());

    // Pass 2: seal into a temporary file, then rename.
    let key = DataKey::generate()?;
    let params = SealParams {
        resource: resource.to_string(),
        model: ModelInfo {
            name,
            format: format.into(),
        },
        chunk_size: a.chunk_size,
    };
    let partial = partial_path(&a.out);
    let h = write_partial(&partial, |out| {
        let mut input = BufReader::new(
            File::open(&a.input).with_context(|| format!("open {}", a.input.display()))?,
        );
        let bar = progress(len, "sealing");
        let h = sealed::seal(&mut input, len, sha, &key, &params, out, |done| {
            bar.set_position(done)
        })
        .with_context(|| format!("seal {}", a.input.display()))?;
        bar.finish_and_clear();
        Ok(h)
    })?;
    // The key goes where it was asked before the model is published: a
    // sealed model whose key was lost is no model at all.
    let mut key_notes = Vec::new();
    let stored = (|| -> Result<()> {
        if let Some(url) = &a.kbs {
            let admin = a.admin_key.as_deref().context("--admin-key")?;
            let version = register_key(url, admin, a.kbs_ca.as_deref(), &resource, &key)?;
            key_notes.push(format!(
                "registered at {url} as {resource} version {version}"
            ));
        }
        if let Some(k) = &a.key_out {
            write_key_file(k, &key)?;
            key_notes.push(format!("written to {} (keep it secret)", k.display()));
        }
        Ok(())
    })();
    if let Err(e) = stored {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    std::fs::rename(&partial, &a.out)
        .with_context(|| format!("rename {} to {}", partial.display(), a.out.display()))?;
    eprintln!(
        "sealed {} ({} bytes, {format}) into {} ({} chunks of {} bytes)\nresource: {resource}\nplaintext sha256: {}\ndata key: {}",
        a.input.display(),
        len,
        a.out.display(),
        h.chunks(),
        h.header.chunk_size,
        h.header.plaintext_sha256,
        key_notes.join("; ")
    );
    Ok(ExitCode::SUCCESS)
}

/// Stores `key` as a new version of `resource` through the broker's
/// signed admin endpoint; returns the version.
fn register_key(
    url: &str,
    admin_key: &Path,
    ca: Option<&Path>,
    resource: &ResourcePath,
    key: &DataKey,
) -> Result<u64> {
    let path = format!("/kbs/v0/admin/resource/{resource}");
    let answer =
        super::kbs_admin::request(url, admin_key, ca, ("POST", &path), &key.as_bytes()[..])?;
    let body: serde_json::Value =
        serde_json::from_slice(&answer).context("key broker answer is not JSON")?;
    body["version"]
        .as_u64()
        .context("key broker answer has no version")
}

pub fn run_unseal(a: UnsealArgs) -> Result<ExitCode> {
    refuse_overwrite(&a.out, a.force)?;
    let key = read_key_file(&a.key)?;
    let threads = a.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let total = std::fs::metadata(&a.input)
        .with_context(|| format!("cannot read {}", a.input.display()))?
        .len();
    let partial = partial_path(&a.out);
    // Never leaves (even authenticated) partial plaintext behind.
    let h = write_partial(&partial, |out| {
        let mut input = BufReader::with_capacity(
            1 << 20,
            File::open(&a.input).with_context(|| format!("open {}", a.input.display()))?,
        );
        let bar = progress(total, "unsealing");
        let opts = sealed::UnsealOptions {
            threads,
            verify_plaintext_digest: true,
        };
        let h = sealed::unseal(&mut input, &key, opts, |chunk| {
            bar.inc(chunk.len() as u64);
            out.write_all(chunk)
        })
        .with_context(|| format!("sealed model {}", a.input.display()))?;
        bar.finish_and_clear();
        Ok(h)
    })?;
    std::fs::rename(&partial, &a.out)
        .with_context(|| format!("rename {} to {}", partial.display(), a.out.display()))?;
    eprintln!(
        "unsealed {} ({} bytes, sha256 verified) into {}",
        h.header.model.name,
        h.header.plaintext_len,
        a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn run_inspect(a: InspectArgs) -> Result<ExitCode> {
    let mut f = File::open(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let mut head = Vec::new();
    Read::by_ref(&mut f)
        .take(14 + 65_536)
        .read_to_end(&mut head)
        .with_context(|| format!("read {}", a.file.display()))?;
    let h =
        SealedHeader::parse(&head).with_context(|| format!("sealed model {}", a.file.display()))?;
    let actual = std::fs::metadata(&a.file).map(|m| m.len()).unwrap_or(0);
    let size_note = if actual == h.file_len() {
        "ok".to_string()
    } else {
        format!(
            "MISMATCH: file has {actual} bytes, header implies {}",
            h.file_len()
        )
    };
    if a.json {
        let mut v = serde_json::to_value(&h.header)?;
        v["chunks"] = h.chunks().into();
        v["file_len_expected"] = h.file_len().into();
        v["file_len_actual"] = actual.into();
        super::attest::write_stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?));
    } else {
        super::attest::write_stdout(&format!(
            "format:           ciel sealed model v{}\nalgorithm:        {}\nmodel:            {} ({})\nresource:         {}\nplaintext:        {} bytes, sha256 {}\nchunks:           {} x {} bytes\nfile size:        {size_note}\n(the header is authenticated only when unsealing with the key)\n",
            sealed::VERSION,
            h.header.alg,
            h.header.model.name,
            h.header.model.format,
            h.header.resource,
            h.header.plaintext_len,
            h.header.plaintext_sha256,
            h.chunks(),
            h.header.chunk_size,
        ));
    }
    Ok(ExitCode::SUCCESS)
}
