//! `ciel image oci` (the reproducible container image a Kata Confidential
//! Containers pod runs) and `ciel image init-data` (the values the pod's
//! hardware and Kata's runtime take from an init-data document).

use super::files;
use anyhow::{Context, Result};
use base64::Engine;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct OciArgs {
    /// The `ciel` binary, statically linked (`./scripts/oci-image.sh`
    /// builds it; a dynamically linked one would not run on the empty base).
    #[arg(long)]
    pub binary: PathBuf,
    /// Output directory for the OCI image layout (created; must not exist
    /// or be empty). `podman load -i oci-archive:…` or `skopeo copy oci:DIR
    /// …` take it from there.
    #[arg(long)]
    pub out: PathBuf,
    /// The tag recorded in the layout's index.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    pub tag: String,
    /// Where the image's source lives (the `org.opencontainers.image.source` label).
    #[arg(long)]
    pub source: Option<String>,
}

#[derive(Debug, Args)]
pub struct InitDataArgs {
    /// The init-data document (Kata's TOML).
    pub file: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn oci(a: OciArgs) -> Result<ExitCode> {
    let binary = files::read("ciel binary", &a.binary)?;
    if binary.get(..4) != Some(b"\x7fELF") {
        anyhow::bail!("{}: not an ELF executable", a.binary.display());
    }
    let mut labels = std::collections::BTreeMap::from([
        (
            "org.opencontainers.image.title".to_string(),
            "ciel".to_string(),
        ),
        (
            "org.opencontainers.image.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "org.opencontainers.image.description".to_string(),
            "ciel confidential inference runtime (static binary on an empty base)".to_string(),
        ),
    ]);
    if let Some(src) = a.source {
        labels.insert("org.opencontainers.image.source".into(), src);
    }
    let image = ciel_images::oci::build(&ciel_images::oci::OciInputs {
        binary,
        cmd: vec!["--help".into()],
        ports: vec![8443],
        labels,
        tag: a.tag.clone(),
    })?;
    image
        .write_layout(&a.out)
        .with_context(|| format!("writing the OCI layout to {}", a.out.display()))?;
    std::fs::write(
        a.out.join("image.digest"),
        format!("{}\n", image.manifest_digest),
    )
    .with_context(|| format!("writing {}/image.digest", a.out.display()))?;
    println!("{}", image.manifest_digest);
    eprintln!(
        "wrote the OCI layout {} (tag {}): pin it as ciel@{} in the pod spec and the pod policy",
        a.out.display(),
        a.tag,
        image.manifest_digest
    );
    Ok(ExitCode::SUCCESS)
}

pub fn init_data(a: InitDataArgs) -> Result<ExitCode> {
    let text = String::from_utf8(files::read("init-data", &a.file)?)
        .with_context(|| format!("init-data {}: not UTF-8", a.file.display()))?;
    let init = ciel_protocol::initdata::InitData::parse(&text)
        .with_context(|| format!("init-data {}", a.file.display()))?;
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    gz.write_all(text.as_bytes())?;
    let annotation = base64::engine::general_purpose::STANDARD.encode(gz.finish()?);
    let host_data = hex::encode(init.host_data());
    let mr_config_id = hex::encode(init.mr_config_id());
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "algorithm": init.algorithm().name(),
                "digest": hex::encode(init.digest()),
                "snp_host_data": host_data,
                "tdx_mrconfigid": mr_config_id,
                "entries": init.entries().keys().collect::<Vec<_>>(),
                "annotation": { ciel_protocol::initdata::KATA_ANNOTATION: annotation },
            })
        );
    } else {
        println!(
            "{} digest: {}",
            init.algorithm().name(),
            hex::encode(init.digest())
        );
        println!("SEV-SNP HOST_DATA: {host_data}   (policy: [snp] host_data = [\"{host_data}\"])");
        println!(
            "TDX MRCONFIGID:    {mr_config_id}   (policy: [tdx] mrconfigid = [\"{mr_config_id}\"])"
        );
        println!(
            "entries: {}",
            init.entries()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("{}: {annotation}", ciel_protocol::initdata::KATA_ANNOTATION);
    }
    Ok(ExitCode::SUCCESS)
}
