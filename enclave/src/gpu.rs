//! The guest's GPUs: evidence from each (through NVML, loaded at run time,
//! or the simulated GPU), requested with the session's device nonce, and
//! the "ready" state set only once the key broker has accepted them.
//!
//! The guest refuses before asking for any key when a GPU is not in
//! confidential-computing mode or runs DEVTOOLS: the broker would refuse
//! too, but a guest that knows it cannot keep a secret does not ask.

use ciel_attestation::UnixTime;
use ciel_attestation::nvidia::{CcMode, GpuEvidence, mode_refusal};
use ciel_attestation::policy::NvidiaPolicy;
use ciel_attestation::sim::{
    NvidiaSim, SimGpu, SimGpuReport, SimOcspResponder, SimOcspStatus, SimRim,
};
use std::sync::atomic::{AtomicBool, Ordering};

/// Where GPU evidence comes from.
pub trait GpuSource: Send + Sync {
    /// Every GPU's evidence, each report carrying `nonce`.
    fn collect(&self, nonce: [u8; 32]) -> Result<Vec<GpuEvidence>, String>;
    /// Lets the GPUs accept work (after the broker accepted their evidence).
    fn set_ready(&self) -> Result<(), String>;
}

/// A guest without GPUs.
#[derive(Debug, Default)]
pub struct NoGpus;

impl GpuSource for NoGpus {
    fn collect(&self, _nonce: [u8; 32]) -> Result<Vec<GpuEvidence>, String> {
        Ok(Vec::new())
    }
    fn set_ready(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Refuses GPUs that cannot keep a secret, naming them: the verifier's
/// rule ([`mode_refusal`]) under the strict defaults (CC on, no DEVTOOLS).
pub fn refuse_unsafe_modes(gpus: &[GpuEvidence]) -> Result<(), String> {
    let strict = NvidiaPolicy::default();
    for (i, g) in gpus.iter().enumerate() {
        if let Some(r) = mode_refusal(g.cc_mode, &strict) {
            return Err(format!(
                "GPU {i} ({}): {} ({}): refusing to ask for keys",
                g.uuid,
                r.message,
                r.kind.code()
            ));
        }
    }
    Ok(())
}

/// The GPUs through NVML (`libnvidia-ml.so.1`, loaded at run time).
pub struct NvmlGpus {
    nvml: nvml_wrapper::Nvml,
}

impl std::fmt::Debug for NvmlGpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvmlGpus").finish_non_exhaustive()
    }
}

impl NvmlGpus {
    /// Loads NVML; fails (with NVML's reason) where there is no driver.
    pub fn open() -> Result<Self, String> {
        nvml_wrapper::Nvml::init()
            .map(|nvml| NvmlGpus { nvml })
            .map_err(|e| format!("NVML: {e}"))
    }
}

impl GpuSource for NvmlGpus {
    fn collect(&self, nonce: [u8; 32]) -> Result<Vec<GpuEvidence>, String> {
        let n = self
            .nvml
            .device_count()
            .map_err(|e| format!("NVML device count: {e}"))?;
        let mut out = Vec::new();
        // CC mode, DEVTOOLS and protected PCIe are the system's settings
        // (nvmlSystemGetConfComputeSettings): read once, through GPU 0.
        let mut settings = None;
        for index in 0..n {
            let err = |what: &str, e: nvml_wrapper::error::NvmlError| {
                format!("GPU {index}: NVML {what}: {e}")
            };
            let d = self
                .nvml
                .device_by_index(index)
                .map_err(|e| err("device", e))?;
            let (cc, devtools, ppcie) = match settings {
                Some(s) => s,
                None => *settings.insert((
                    d.is_cc_enabled().map_err(|e| err("CC settings", e))?,
                    d.is_cc_dev_mode_enabled().map_err(|e| err("DEVTOOLS", e))?,
                    d.is_multi_gpu_protected_pcie_enabled()
                        .map_err(|e| err("protected PCIe", e))?,
                )),
            };
            let report = d
                .confidential_compute_gpu_attestation_report(nonce)
                .map_err(|e| err("attestation report", e))?;
            let cert = d
                .confidential_compute_gpu_certificate()
                .map_err(|e| err("certificate chain", e))?;
            out.push(GpuEvidence {
                arch: format!(
                    "{:?}",
                    d.architecture().map_err(|e| err("architecture", e))?
                )
                .to_ascii_uppercase(),
                uuid: d.uuid().map_err(|e| err("UUID", e))?,
                report: report.attestation_report,
                certificate: cert.attestation_cert_chain,
                cc_mode: Some(match (cc, devtools) {
                    (false, _) => CcMode::Off,
                    (true, true) => CcMode::Devtools,
                    (true, false) => CcMode::On,
                }),
                protected_pcie: Some(ppcie),
                ocsp: Vec::new(),
                rims: Vec::new(),
            });
        }
        Ok(out)
    }

    fn set_ready(&self) -> Result<(), String> {
        let n = self
            .nvml
            .device_count()
            .map_err(|e| format!("NVML device count: {e}"))?;
        for index in 0..n {
            let d = self
                .nvml
                .device_by_index(index)
                .map_err(|e| format!("GPU {index}: NVML device: {e}"))?;
            d.set_confidential_compute_state(true)
                .map_err(|e| format!("GPU {index}: setting the ready state: {e}"))?;
        }
        Ok(())
    }
}

/// Simulated GPUs (development and tests only): reports signed by the
/// simulated hierarchy, with OCSP responses stapled as the host's
/// collateral service would (signed by delegated responders, as NVIDIA's
/// OCSP service signs), and the driver's and VBIOS's RIMs with their
/// signers' OCSP.
#[derive(Debug)]
pub struct SimGpus {
    pub sim: NvidiaSim,
    pub gpus: Vec<SimGpu>,
    /// The responders for the device certificates and the provisioner CA.
    responders: [SimOcspResponder; 2],
    /// The driver's and the VBIOS's RIMs, stapled with their signers' OCSP.
    rims: [SimRim; 2],
    pub cc_mode: CcMode,
    /// The VBIOS version bytes the reports state.
    pub vbios: [u8; 5],
    pub ready: AtomicBool,
}

impl SimGpus {
    /// `count` GPUs from `sim`, CC on.
    pub fn new(sim: NvidiaSim, count: u32, now: UnixTime) -> Result<Self, String> {
        let gpus = (0..count)
            .map(|i| sim.issue_gpu(i, now))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let responder = |position| {
            sim.ocsp_responder(position, true, now)
                .map_err(|e| e.to_string())
        };
        let responders = [responder(1)?, responder(2)?];
        // The reports' measurements as golden values: blocks 1-5 the
        // driver's, 6-10 the VBIOS's.
        let mut golden: Vec<(u32, Vec<u8>)> =
            (0u32..).zip(SimGpuReport::default().measurements).collect();
        let vbios = golden.split_off(5.min(golden.len()));
        let rim = |name, version, values: &[(u32, Vec<u8>)]| {
            sim.rim(name, version, values, now)
                .map_err(|e| e.to_string())
        };
        let rims = [
            rim("driver", "550.90.07", &golden)?,
            rim("vbios", "96.00.9f.00.01", &vbios)?,
        ];
        Ok(SimGpus {
            sim,
            gpus,
            responders,
            rims,
            cc_mode: CcMode::On,
            vbios: SimGpuReport::default().vbios,
            ready: AtomicBool::new(false),
        })
    }
}

impl GpuSource for SimGpus {
    fn collect(&self, nonce: [u8; 32]) -> Result<Vec<GpuEvidence>, String> {
        let now = crate::unix_now();
        let several = self.gpus.len() > 1;
        self.gpus
            .iter()
            .map(|g| {
                let report = g
                    .report(&SimGpuReport {
                        nonce,
                        vbios: self.vbios,
                        protected_pcie: several,
                        ..Default::default()
                    })
                    .map_err(|e| e.to_string())?;
                let ocsp = self
                    .responders
                    .iter()
                    .zip(1..)
                    .map(|(responder, pos)| {
                        self.sim.ocsp_by(
                            g,
                            pos,
                            responder,
                            SimOcspStatus::Good,
                            UnixTime(now.saturating_sub(60)),
                            UnixTime(now.saturating_add(86_400)),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let rim_ocsp = self
                    .rims
                    .iter()
                    .map(|r| {
                        self.sim.rim_ocsp(
                            r,
                            SimOcspStatus::Good,
                            UnixTime(now.saturating_sub(60)),
                            UnixTime(now.saturating_add(86_400)),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                Ok(GpuEvidence {
                    arch: "HOPPER".into(),
                    uuid: g.uuid.clone(),
                    report,
                    certificate: g.chain_pem(),
                    cc_mode: Some(self.cc_mode),
                    protected_pcie: Some(several),
                    ocsp: [ocsp, rim_ocsp].concat(),
                    rims: self.rims.iter().map(|r| r.xml.clone()).collect(),
                })
            })
            .collect()
    }

    fn set_ready(&self) -> Result<(), String> {
        self.ready.store(true, Ordering::SeqCst);
        Ok(())
    }
}
