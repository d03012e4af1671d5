//! `ciel host launch`: start (or print) the QEMU command for a confidential guest.

use super::files;
use anyhow::{Context, Result, bail};
use ciel_host::launch::{LaunchSpec, Platform, qemu_args, shell_line};
use ciel_transport::Endpoint;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Launch a guest image on SEV-SNP or TDX hardware (or print the command).
    Launch(LaunchArgs),
    /// The untrusted shim: proxy client connections to the guest's API
    /// (TLS passes through), serve sealed models to the guest, relay the
    /// guest's key-broker connections; Prometheus metrics.
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where clients connect (tcp://HOST:PORT or unix:PATH); repeatable.
    #[arg(long, default_value = "tcp://127.0.0.1:8443")]
    pub listen: Vec<Endpoint>,
    /// The guest's API port (vsock://CID:PORT, unix:PATH[?connect=PORT]).
    #[arg(long)]
    pub guest_api: Endpoint,
    /// Directory of sealed models the guest may fetch by name.
    #[arg(long, requires = "blob_listen")]
    pub models: Option<PathBuf>,
    /// Where the guest connects for model blobs.
    #[arg(long, requires = "models")]
    pub blob_listen: Option<Endpoint>,
    /// Where the guest connects to reach the key broker.
    #[arg(long, requires = "kbs_upstream")]
    pub kbs_relay_listen: Option<Endpoint>,
    /// The key broker (tcp://HOST:PORT): the only place the relay connects to.
    #[arg(long, requires = "kbs_relay_listen")]
    pub kbs_upstream: Option<Endpoint>,
    /// Serve attestation collateral (AMD KDS, Intel PCS, NVIDIA RIM and
    /// OCSP items), cached in this directory and refreshed before expiry.
    #[arg(long, requires = "collateral_listen")]
    pub collateral_cache: Option<PathBuf>,
    /// Where the collateral service listens: the guest's port
    /// (vsock://CID:PORT) and clients' (tcp://HOST:PORT); repeatable.
    #[arg(long, requires = "collateral_cache")]
    pub collateral_listen: Vec<Endpoint>,
    #[command(flatten)]
    pub collateral_upstreams: super::collateral::UpstreamArgs,
    /// Seconds between looks for items due to be fetched again.
    #[arg(long, default_value_t = 600)]
    pub collateral_refresh_secs: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics: Option<std::net::SocketAddr>,
    /// Open connections per service.
    #[arg(long, default_value_t = 1024, value_parser = super::connection_cap)]
    pub max_connections: usize,
    /// Close a connection after this many seconds without a byte either way.
    #[arg(long, default_value_t = 300)]
    pub idle_timeout_secs: u64,
    /// Seconds open connections get to finish after SIGINT/SIGTERM.
    #[arg(long, default_value_t = 30)]
    pub grace_secs: u64,
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
        HostCommand::Serve(a) => serve(a),
    }
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    use std::sync::Arc;
    super::init_logging();
    if a.collateral_cache.is_none() && !a.collateral_upstreams.upstream.is_empty() {
        bail!(
            "--collateral-upstream configures the collateral service: give --collateral-cache and --collateral-listen too"
        );
    }
    let cfg = ciel_host::shim::ShimConfig {
        listen: a.listen.clone(),
        guest_api: a.guest_api.clone(),
        blobs: a.blob_listen.clone().zip(a.models.clone()),
        kbs_relay: a.kbs_relay_listen.clone().zip(a.kbs_upstream.clone()),
        collateral: match &a.collateral_cache {
            Some(dir) => {
                let store = ciel_collateral::Store::open(dir)?;
                tracing::info!(cache = %dir.display(), items = store.entries().len(), "collateral cache");
                Some(ciel_host::shim::CollateralConfig {
                    listen: a.collateral_listen.clone(),
                    service: Arc::new(ciel_collateral::Service::new(
                        store,
                        a.collateral_upstreams.upstreams()?,
                        ciel_collateral::service::RefreshPolicy::default(),
                    )),
                    refresh_every: std::time::Duration::from_secs(a.collateral_refresh_secs.max(1)),
                })
            }
            None => None,
        },
        max_connections: a.max_connections,
        idle_timeout: std::time::Duration::from_secs(a.idle_timeout_secs.max(1)),
        grace: std::time::Duration::from_secs(a.grace_secs),
    };
    let metrics = Arc::new(ciel_host::metrics::Metrics::default());
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        if let Some(addr) = a.metrics {
            let l =
                ciel_transport::Listener::bind(&ciel_transport::Endpoint::Tcp(addr.to_string()))
                    .await
                    .with_context(|| format!("--metrics {addr}"))?;
            tracing::info!(%addr, "metrics at /metrics");
            tokio::spawn(ciel_host::metrics::serve(l, metrics.clone()));
        }
        ciel_host::shim::run(cfg, metrics, ciel_transport::shutdown_signal()).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
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
