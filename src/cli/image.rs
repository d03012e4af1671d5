//! `ciel image measure`: recompute the measurements the hardware reports.

use super::files;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Build a reproducible guest image (initramfs with the enclave as /init).
    Build(BuildArgs),
    /// Compute launch or runtime measurements.
    #[command(subcommand)]
    Measure(MeasureCommand),
    /// Build the reproducible OCI container image (static ciel on an empty
    /// base) for Kata Confidential Containers pods.
    Oci(super::image_oci::OciArgs),
    /// The HOST_DATA / MRCONFIGID and Kata pod annotation of an init-data document.
    InitData(super::image_oci::InitDataArgs),
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The enclave runtime binary (statically linked), installed as /init.
    #[arg(long)]
    pub enclave: PathBuf,
    /// The guest kernel (bzImage / vmlinuz).
    #[arg(long)]
    pub kernel: PathBuf,
    /// Directory of kernel modules (*.ko); `load-order` in it lists them in
    /// load order, else they load in name order.
    #[arg(long)]
    pub modules: Option<PathBuf>,
    /// A further file for the image, as IMAGE_PATH=HOST_FILE (e.g.
    /// etc/ciel/kbs-ca.pem=./kbs/tls-ca.pem); repeatable. It is measured
    /// with the image, so pin configuration here, not on the host.
    #[arg(long = "file", value_name = "IMAGE_PATH=HOST_FILE")]
    pub files: Vec<String>,
    /// Kernel command line. Words after `--` are the runtime's arguments
    /// (e.g. `console=ttyS0 panic=-1 -- enclave serve ...`); other
    /// KEY=VALUE words become its environment.
    #[arg(long, default_value = "console=ttyS0 panic=-1")]
    pub cmdline: String,
    /// Output directory (created; must not exist or be empty).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum MeasureCommand {
    /// SEV-SNP: the launch digest (MEASUREMENT) of a guest (same results as AMD's sev-snp-measure).
    Snp(Box<SnpArgs>),
    /// TDX: replay a CC event log (CCEL) into RTMR0..RTMR3, and/or compute
    /// MRTD from a TDVF image.
    Tdx(TdxArgs),
}

#[derive(Debug, Args)]
pub struct SnpArgs {
    /// The OVMF firmware image (OVMF.fd).
    #[arg(long)]
    pub ovmf: PathBuf,
    /// Kernel for measured direct boot (needs an AmdSev OVMF build).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Initrd for measured direct boot.
    #[arg(long, requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, requires = "kernel")]
    pub append: Option<String>,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    pub vcpus: u32,
    /// vCPU model as QEMU names it (EPYC-v4, EPYC-Milan, EPYC-Genoa, ...).
    #[arg(long, default_value = "EPYC-v4", conflicts_with = "vcpu_sig")]
    pub vcpu_type: String,
    /// vCPU signature (CPUID 1 EAX) instead of --vcpu-type, e.g. 0x800f12.
    #[arg(long)]
    pub vcpu_sig: Option<String>,
    /// The VMM that launches the guest (EC2 and GCE ignore the vCPU type).
    #[arg(long, default_value = "qemu", value_parser = ["qemu", "ec2", "gce"])]
    pub vmm_type: String,
    /// SEV_FEATURES of the guest (hex). With --svsm the measured VMSAs are
    /// the SVSM's own (SNP alone); the guest's features are not in the digest.
    #[arg(long, default_value = "0x1")]
    pub guest_features: String,
    /// A Coconut SVSM image launched below OVMF (QEMU, no direct boot).
    #[arg(long, requires = "ovmf_vars_size", conflicts_with_all = ["kernel", "ovmf_hash_only", "snp_ovmf_hash"])]
    pub svsm: Option<PathBuf>,
    /// Size in bytes of OVMF's variable store (OVMF_VARS.fd), which sits
    /// between the SVSM and OVMF.
    #[arg(long, requires = "svsm")]
    pub ovmf_vars_size: Option<u64>,
    /// Start from a precomputed OVMF hash (hex) instead of hashing --ovmf.
    #[arg(long)]
    pub snp_ovmf_hash: Option<String>,
    /// Print only the OVMF hash.
    #[arg(long)]
    pub ovmf_hash_only: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Write the digest as policy reference values (a JSON policy document).
    #[arg(long)]
    pub reference_values: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("input").required(true).multiple(true).args(["ccel", "tdvf"]))]
pub struct TdxArgs {
    /// The CC event log (the ACPI CCEL table's log area).
    #[arg(long)]
    pub ccel: Option<PathBuf>,
    /// A TDVF image (TDX-enabled OVMF.fd): compute MRTD.
    #[arg(long)]
    pub tdvf: Option<PathBuf>,
    /// How the VMM adds the TDVF's pages: `interleaved` (each page added,
    /// then measured: upstream KVM and QEMU 10.1+) or `adds-first` (a
    /// section's pages all added, then measured: earlier TDX trees).
    #[arg(long, default_value = "interleaved", value_parser = ["interleaved", "adds-first"], requires = "tdvf")]
    pub page_add_order: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Write MRTD and/or the RTMRs as policy reference values (a JSON policy document).
    #[arg(long)]
    pub reference_values: Option<PathBuf>,
}

pub fn run(cmd: ImageCommand) -> Result<ExitCode> {
    match cmd {
        ImageCommand::Build(a) => build(a),
        ImageCommand::Measure(MeasureCommand::Tdx(a)) => measure_tdx(a),
        ImageCommand::Measure(MeasureCommand::Snp(a)) => measure_snp(*a),
        ImageCommand::Oci(a) => super::image_oci::oci(a),
        ImageCommand::InitData(a) => super::image_oci::init_data(a),
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b).as_ref())
}

fn build(a: BuildArgs) -> Result<ExitCode> {
    if a.out.exists()
        && std::fs::read_dir(&a.out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        anyhow::bail!("{} exists and is not empty", a.out.display());
    }
    let init = files::read("enclave binary", &a.enclave)?;
    let kernel = files::read("kernel", &a.kernel)?;
    let mut modules = Vec::new();
    if let Some(dir) = &a.modules {
        let order_file = dir.join("load-order");
        let names: Vec<String> = if order_file.is_file() {
            String::from_utf8(files::read("module load order", &order_file)?)
                .context("load-order is not UTF-8")?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        } else {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .with_context(|| format!("read {}", dir.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".ko"))
                .collect();
            v.sort();
            v
        };
        for n in names {
            let data = files::read("kernel module", &dir.join(&n))?;
            modules.push((n, data));
        }
    }
    let mut extra = Vec::new();
    for spec in &a.files {
        let (guest, host) = spec
            .split_once('=')
            .with_context(|| format!("--file {spec:?}: expected IMAGE_PATH=HOST_FILE"))?;
        let guest = guest.trim_start_matches('/').to_string();
        extra.push((
            guest,
            files::read("image file", std::path::Path::new(host))?,
        ));
    }
    let inputs = ciel_images::build::ImageInputs {
        init,
        modules,
        files: extra,
        cmdline: a.cmdline.clone(),
    };
    let initrd = ciel_images::build::initramfs(&inputs)?;
    let manifest = serde_json::json!({
        "format": "ciel-image-v1",
        "kernel_sha256": sha256_hex(&kernel),
        "initrd_sha256": sha256_hex(&initrd),
        "init_sha256": sha256_hex(&inputs.init),
        "cmdline": a.cmdline,
        "modules": inputs.modules.iter().map(|(n, d)| serde_json::json!({"name": n, "sha256": sha256_hex(d)})).collect::<Vec<_>>(),
        "files": inputs.files.iter().map(|(n, d)| serde_json::json!({"path": n, "sha256": sha256_hex(d)})).collect::<Vec<_>>(),
    });
    std::fs::create_dir_all(&a.out).with_context(|| format!("create {}", a.out.display()))?;
    let write = |name: &str, bytes: &[u8]| {
        let p = a.out.join(name);
        std::fs::write(&p, bytes).with_context(|| format!("write {}", p.display()))
    };
    write("kernel", &kernel)?;
    write("initrd", &initrd)?;
    write("cmdline", format!("{}\n", a.cmdline).as_bytes())?;
    write("manifest.json", &serde_json::to_vec_pretty(&manifest)?)?;
    eprintln!(
        "built {}: initrd {} bytes (sha256 {}), {} module(s)\nnext: ciel image measure snp --ovmf OVMF.fd --kernel {dir}/kernel --initrd {dir}/initrd --append \"{}\"",
        a.out.display(),
        initrd.len(),
        manifest["initrd_sha256"].as_str().unwrap_or(""),
        inputs.modules.len(),
        a.cmdline,
        dir = a.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn parse_hex_u64(what: &str, s: &str) -> Result<u64> {
    u64::from_str_radix(s.trim().trim_start_matches("0x"), 16)
        .with_context(|| format!("{what} {s:?} is not hex"))
}

fn measure_snp(a: SnpArgs) -> Result<ExitCode> {
    use ciel_images::snp_measure::{Ovmf, SnpLaunch, Vmm, launch_digest, ovmf_hash, vcpu_type_sig};
    let ovmf = Ovmf::parse(files::read("OVMF image", &a.ovmf)?)
        .with_context(|| format!("{}", a.ovmf.display()))?;
    if a.ovmf_hash_only {
        let h = hex::encode(ovmf_hash(&ovmf));
        super::attest::write_stdout(&if a.json {
            format!("{{\"ovmf_hash\": \"{h}\"}}\n")
        } else {
            format!("{h}\n")
        });
        return Ok(ExitCode::SUCCESS);
    }
    let vcpu_sig = match &a.vcpu_sig {
        Some(s) => u32::try_from(parse_hex_u64("--vcpu-sig", s)?).context("--vcpu-sig is larger than 32 bits")?,
        None => vcpu_type_sig(&a.vcpu_type).with_context(|| format!("--vcpu-type {:?} is not known (EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa), give --vcpu-sig", a.vcpu_type))?,
    };
    let kernel = a
        .kernel
        .as_ref()
        .map(|p| files::read("kernel", p))
        .transpose()?;
    let initrd = a
        .initrd
        .as_ref()
        .map(|p| files::read("initrd", p))
        .transpose()?;
    let precomputed = match &a.snp_ovmf_hash {
        Some(h) => Some(
            hex::decode(h.trim())
                .ok()
                .and_then(|b| <[u8; 48]>::try_from(b).ok())
                .context("--snp-ovmf-hash is not 48 bytes of hex")?,
        ),
        None => None,
    };
    let svsm = match &a.svsm {
        Some(path) => {
            let end = ovmf
                .gpa()
                .checked_sub(a.ovmf_vars_size.unwrap_or(0))
                .context("--ovmf-vars-size is larger than the space below OVMF")?;
            Some(
                Ovmf::parse_ending_at(files::read("SVSM image", path)?, end)
                    .with_context(|| format!("{}", path.display()))?,
            )
        }
        None => None,
    };
    let launch = SnpLaunch {
        ovmf: &ovmf,
        kernel: kernel.as_deref(),
        initrd: initrd.as_deref(),
        append: a.append.as_deref(),
        vcpus: a.vcpus,
        vcpu_sig,
        guest_features: parse_hex_u64("--guest-features", &a.guest_features)?,
        vmm: match a.vmm_type.as_str() {
            "ec2" => Vmm::Ec2,
            "gce" => Vmm::Gce,
            _ => Vmm::Qemu,
        },
        ovmf_hash: precomputed,
        svsm: svsm.as_ref(),
    };
    let digest = hex::encode(launch_digest(&launch)?);
    if let Some(out) = &a.reference_values {
        let doc = serde_json::json!({ "platforms": ["snp"], "snp": { "measurements": [digest] } });
        std::fs::write(out, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("write {}", out.display()))?;
        eprintln!("wrote reference values to {}", out.display());
    }
    let text = if a.json {
        format!("{{\"measurement\": \"{digest}\"}}\n")
    } else {
        format!("{digest}\n")
    };
    super::attest::write_stdout(&text);
    Ok(ExitCode::SUCCESS)
}

fn measure_tdx(a: TdxArgs) -> Result<ExitCode> {
    use ciel_images::tdvf::{PageAddOrder, mrtd};
    let mrtd = match &a.tdvf {
        Some(path) => {
            let image = ciel_images::snp_measure::Ovmf::parse(files::read("TDVF image", path)?)
                .with_context(|| format!("{}", path.display()))?;
            let order = if a.page_add_order == "adds-first" {
                PageAddOrder::AddsFirst
            } else {
                PageAddOrder::Interleaved
            };
            Some(hex::encode(
                mrtd(&image, order).with_context(|| format!("{}", path.display()))?,
            ))
        }
        None => None,
    };
    let replay = match &a.ccel {
        Some(path) => {
            let log = files::read("CC event log", path)?;
            let r =
                ciel_images::ccel::replay(&log).with_context(|| format!("{}", path.display()))?;
            let rtmr: Vec<String> = r.rtmr.iter().map(hex::encode).collect();
            Some((r, rtmr))
        }
        None => None,
    };
    if let Some(out) = &a.reference_values {
        let mut tdx = serde_json::Map::new();
        if let Some(m) = &mrtd {
            tdx.insert("mrtd".into(), serde_json::json!([m]));
        }
        if let Some((_, rtmr)) = &replay {
            for (i, v) in rtmr.iter().enumerate() {
                tdx.insert(format!("rtmr{i}"), serde_json::json!([v]));
            }
        }
        let doc = serde_json::json!({ "platforms": ["tdx"], "tdx": tdx });
        std::fs::write(out, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("write {}", out.display()))?;
        eprintln!(
            "wrote reference values to {} (use it as --policy, or merge it into a policy)",
            out.display()
        );
    }
    let text = if a.json {
        let mut doc = serde_json::Map::new();
        if let Some(m) = &mrtd {
            doc.insert("mrtd".into(), serde_json::json!(m));
        }
        if let Some((replay, rtmr)) = &replay {
            let events: Vec<serde_json::Value> = replay
                .events
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "offset": e.offset, "mr_index": e.mr_index, "event_type": e.event_type,
                        "sha384": e.sha384.map(hex::encode), "data_len": e.data_len,
                    })
                })
                .collect();
            doc.insert("rtmr".into(), serde_json::json!(rtmr));
            doc.insert("events".into(), serde_json::json!(events));
        }
        format!("{}\n", serde_json::to_string_pretty(&doc)?)
    } else {
        let mut s = String::new();
        if let Some(m) = &mrtd {
            s.push_str(&format!("MRTD: {m}\n"));
        }
        if let Some((replay, rtmr)) = &replay {
            s.push_str(&format!("events: {}\n", replay.events.len()));
            for (i, v) in rtmr.iter().enumerate() {
                s.push_str(&format!("RTMR{i}: {v}\n"));
            }
        }
        s
    };
    super::attest::write_stdout(&text);
    Ok(ExitCode::SUCCESS)
}
