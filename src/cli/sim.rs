//! `ciel attest sim-report`: simulated evidence for development, with the
//! simulated vendor hierarchy kept under the user's data directory.

use super::attest::SimReportArgs;
use super::files;
use anyhow::{Context, Result, bail};
use ciel_attestation::UnixTime;
use ciel_attestation::sim::{NvidiaSim, SimError, SimSnpReport, SimTdxQuote, SnpSim, TdxSim};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `$CIEL_DATA_DIR`, else `$XDG_DATA_HOME/ciel`, else `~/.local/share/ciel`.
pub fn data_dir() -> Result<PathBuf> {
    let non_empty = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = non_empty("CIEL_DATA_DIR") {
        return Ok(d);
    }
    if let Some(d) = non_empty("XDG_DATA_HOME").filter(|d| d.is_absolute()) {
        return Ok(d.join("ciel"));
    }
    non_empty("HOME")
        .map(|h| h.join(".local/share/ciel"))
        .context("no data directory: set CIEL_DATA_DIR or HOME")
}

/// The simulated SNP hierarchy (generated on first use).
pub fn load_or_create_snp() -> Result<(SnpSim, PathBuf)> {
    load_or_create::<SnpSim>(&data_dir()?)
}

/// The same, under an explicit data directory.
pub fn load_or_create_snp_in(data: &Path) -> Result<(SnpSim, PathBuf)> {
    load_or_create::<SnpSim>(data)
}

/// The simulated Intel-style PKI and quoting enclave (generated on first use).
pub fn load_or_create_tdx() -> Result<(TdxSim, PathBuf)> {
    load_or_create::<TdxSim>(&data_dir()?)
}

/// The same, under an explicit data directory.
pub fn load_or_create_tdx_in(data: &Path) -> Result<(TdxSim, PathBuf)> {
    load_or_create::<TdxSim>(data)
}

/// The simulated NVIDIA device hierarchy (generated on first use).
pub fn load_or_create_nvidia() -> Result<(NvidiaSim, PathBuf)> {
    load_or_create::<NvidiaSim>(&data_dir()?)
}

/// The same, under an explicit data directory.
pub fn load_or_create_nvidia_in(data: &Path) -> Result<(NvidiaSim, PathBuf)> {
    load_or_create::<NvidiaSim>(data)
}

/// A simulated vendor hierarchy kept under the data directory.
trait Stored: Sized {
    const DIR: &'static str;
    const WHAT: &'static str;
    fn generate(now: UnixTime) -> Result<Self, SimError>;
    fn to_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>, SimError>;
    fn from_files(read: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Self, SimError>;
}

impl Stored for SnpSim {
    const DIR: &'static str = "snp";
    const WHAT: &'static str = "SEV-SNP hierarchy (RSA-4096 ARK/ASK, P-384 VCEK)";
    fn generate(now: UnixTime) -> Result<Self, SimError> {
        SnpSim::generate(now)
    }
    fn to_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>, SimError> {
        SnpSim::to_files(self)
    }
    fn from_files(read: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Self, SimError> {
        SnpSim::from_files(read)
    }
}

impl Stored for NvidiaSim {
    const DIR: &'static str = "nvidia";
    const WHAT: &'static str = "NVIDIA-style device identity PKI (P-384 root, provisioner CA)";
    fn generate(now: UnixTime) -> Result<Self, SimError> {
        NvidiaSim::generate(now)
    }
    fn to_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>, SimError> {
        NvidiaSim::to_files(self)
    }
    fn from_files(read: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Self, SimError> {
        NvidiaSim::from_files(read)
    }
}

impl Stored for TdxSim {
    const DIR: &'static str = "tdx";
    const WHAT: &'static str = "Intel-style PKI (P-256 root, PCK CA, PCK, TCB signer, QE)";
    fn generate(now: UnixTime) -> Result<Self, SimError> {
        TdxSim::generate(now)
    }
    fn to_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>, SimError> {
        TdxSim::to_files(self)
    }
    fn from_files(read: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Self, SimError> {
        TdxSim::from_files(read)
    }
}

/// Loads a simulated hierarchy, generating and storing it on first use.
fn load_or_create<T: Stored>(data: &Path) -> Result<(T, PathBuf)> {
    let dir = data.join("sim").join(T::DIR);
    let load = |dir: &Path| {
        T::from_files(|f| std::fs::read(dir.join(f)).ok()).with_context(|| {
            format!(
                "simulated hierarchy in {} (delete that directory to generate a new one)",
                dir.display()
            )
        })
    };
    if dir.is_dir() {
        return Ok((load(&dir)?, dir));
    }
    eprintln!(
        "ciel: generating the simulated {} in {} ...",
        T::WHAT,
        dir.display()
    );
    let sim = T::generate(UnixTime(files::now()))?;
    // Write into a fresh temporary directory, then rename: a crash or a
    // concurrent first use never leaves a half-written hierarchy.
    let parent = dir.parent().context("data dir has no parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let tmp = parent.join(format!(".{}-{}", T::DIR, std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    for (name, bytes) in sim.to_files()? {
        write_private(&tmp.join(name), &bytes)?;
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another process won the race; use its hierarchy.
        let _ = std::fs::remove_dir_all(&tmp);
        return Ok((load(&dir)?, dir));
    }
    Ok((sim, dir))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("write {}", path.display()))
}

/// Parses up to 64 bytes of hex into a zero-padded report_data.
pub fn parse_report_data(hex_str: &str) -> Result<[u8; 64]> {
    let b = hex::decode(hex_str.trim())
        .with_context(|| format!("--report-data {hex_str:?} is not hex"))?;
    if b.len() > 64 {
        bail!("--report-data is {} bytes, at most 64", b.len());
    }
    let mut out = [0u8; 64];
    out.get_mut(..b.len())
        .context("report_data length")?
        .copy_from_slice(&b);
    Ok(out)
}

fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `ciel attest sim-agent`: the CoCo attestation agent's REST API, imitated
/// on the simulated platform, until interrupted.
pub fn run_sim_agent(a: super::attest::SimAgentArgs) -> Result<ExitCode> {
    super::init_logging();
    let host_data = match &a.init_data {
        None => [0u8; 32],
        Some(p) => {
            let text = String::from_utf8(files::read("init-data", p)?)
                .with_context(|| format!("init-data {}: not UTF-8", p.display()))?;
            ciel_protocol::initdata::InitData::parse(&text)
                .with_context(|| format!("init-data {}", p.display()))?
                .host_data()
        }
    };
    let (sim, _) = load_or_create_snp()?;
    let agent = std::sync::Arc::new(ciel_enclave::platform::coco_sim::SimAgent {
        sim: Box::new(sim),
        template: SimSnpReport {
            host_data,
            ..SimSnpReport::default()
        },
    });
    eprintln!(
        "WARNING: SIMULATED attestation agent: its evidence proves nothing about hardware and gives NO confidentiality."
    );
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    rt.block_on(async move {
        let ep = ciel_transport::Endpoint::Tcp(a.listen.clone());
        let listener = ciel_transport::Listener::bind(&ep)
            .await
            .with_context(|| format!("listening on {}", a.listen))?;
        let addr = listener.tcp_addr().context("listener address")?;
        eprintln!(
            "simulated attestation agent on http://{addr} (HOST_DATA {})",
            hex::encode(host_data)
        );
        let router = ciel_enclave::platform::coco_sim::router(agent);
        tokio::select! {
            _ = ciel_transport::http::serve_metrics(listener, router) => {}
            _ = ciel_transport::shutdown_signal() => {}
        }
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_sim_report(a: SimReportArgs) -> Result<ExitCode> {
    let report_data = parse_report_data(&a.report_data)?;
    match a.platform.as_str() {
        "snp" => {
            let (sim, dir) = load_or_create::<SnpSim>(&data_dir()?)?;
            let report = sim.report(&SimSnpReport {
                report_data,
                ..Default::default()
            })?;
            let vcek = sibling(&a.out, ".vcek.der");
            let chain = sibling(&a.out, ".chain.pem");
            std::fs::write(&a.out, &report)
                .with_context(|| format!("write {}", a.out.display()))?;
            std::fs::write(&vcek, sim.vcek_der())
                .with_context(|| format!("write {}", vcek.display()))?;
            std::fs::write(&chain, sim.chain_pem())
                .with_context(|| format!("write {}", chain.display()))?;
            eprintln!(
                "WARNING: simulated evidence: NO hardware, NO confidentiality. For development only."
            );
            eprintln!(
                "wrote {} (SEV-SNP report v5), {} and {}",
                a.out.display(),
                vcek.display(),
                chain.display()
            );
            eprintln!("simulated ARK: {}", dir.join("ark.der").display());
            eprintln!(
                "to accept it, a policy must say:\n  danger_simulated_roots = [\"{}\"]",
                hex::encode(sim.root_sha256())
            );
            Ok(ExitCode::SUCCESS)
        }
        "tdx" => {
            let (sim, dir) = load_or_create_tdx()?;
            let quote = sim.quote(&SimTdxQuote {
                report_data,
                ..Default::default()
            })?;
            let collateral = sim.collateral(UnixTime(files::now()))?;
            let col_path = sibling(&a.out, ".collateral.json");
            std::fs::write(&a.out, &quote).with_context(|| format!("write {}", a.out.display()))?;
            let json = serde_json::to_vec_pretty(&collateral.to_json())?;
            std::fs::write(&col_path, json)
                .with_context(|| format!("write {}", col_path.display()))?;
            eprintln!(
                "WARNING: simulated evidence: NO hardware, NO confidentiality. For development only."
            );
            eprintln!(
                "wrote {} (TDX quote v4) and {} (collateral, valid 30 days)",
                a.out.display(),
                col_path.display()
            );
            eprintln!("simulated root CA: {}", dir.join("root.der").display());
            eprintln!(
                "to accept it, a policy must say:\n  danger_simulated_roots = [\"{}\"]",
                hex::encode(sim.root_sha256())
            );
            Ok(ExitCode::SUCCESS)
        }
        other => bail!("--platform {other}: expected snp or tdx"),
    }
}
