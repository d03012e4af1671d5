//! `ciel host launch`: start (or print) the QEMU command for a confidential guest.

use super::files;
use anyhow::{Context, Result, bail};
use ciel_host::launch::{LaunchSpec, Platform, qemu_args, shell_line};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Launch a guest image on SEV-SNP or TDX hardware (or print the command).
    Launch(LaunchArgs),
}

#[derive(Debug, Args)]
pub struct LaunchArgs {
    #[arg(long, value_parser = ["snp", "tdx"])]
    pub platform: String,
    /// Image directory holding `kernel`, `initrd` and `cmdline` (one line).
    #[arg(long)]
    pub image: PathBuf,
    /// Firmware: an AmdSev OVMF build (SNP) or TDVF (TDX).
    #[arg(long)]
    pub firmware: PathBuf,
    /// GPU to pass through (PCI address); repeat for several.
    #[arg(long = "gpu")]
    pub gpus: Vec<String>,
    #[arg(long, default_value_t = 4)]
    pub vcpus: u32,
    #[arg(long, default_value_t = 16384)]
    pub memory_mib: u64,
    /// vsock context ID of the guest.
    #[arg(long, default_value_t = 3)]
    pub cid: u32,
    /// SNP CPU model.
    #[arg(long, default_value = "EPYC-v4")]
    pub cpu: String,
    #[arg(long, default_value = "qemu-system-x86_64")]
    pub qemu: PathBuf,
    /// Print the command instead of running it.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(cmd: HostCommand) -> Result<ExitCode> {
    match cmd {
        HostCommand::Launch(a) => launch(a),
    }
}

fn launch(a: LaunchArgs) -> Result<ExitCode> {
    let need = |name: &str| -> Result<PathBuf> {
        let p = a.image.join(name);
        if !p.is_file() {
            bail!("image {}: no `{name}` file", a.image.display());
        }
        Ok(p)
    };
    let cmdline = String::from_utf8(files::read("kernel command line", &need("cmdline")?)?)
        .context("cmdline is not UTF-8")?
        .trim_end()
        .to_string();
    let spec = LaunchSpec {
        platform: if a.platform == "snp" {
            Platform::Snp
        } else {
            Platform::Tdx
        },
        qemu: a.qemu.clone(),
        firmware: a.firmware.clone(),
        kernel: need("kernel")?,
        initrd: need("initrd")?,
        cmdline,
        vcpus: a.vcpus,
        memory_mib: a.memory_mib,
        guest_cid: a.cid,
        gpus: a.gpus.clone(),
        cpu_model: a.cpu.clone(),
    };
    let args = qemu_args(&spec)?;
    if a.dry_run {
        super::attest::write_stdout(&format!("{}\n", shell_line(&args)));
        return Ok(ExitCode::SUCCESS);
    }
    let (prog, rest) = args.split_first().context("empty command")?;
    let status = std::process::Command::new(prog)
        .args(rest)
        .status()
        .with_context(|| format!("start {prog}"))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
