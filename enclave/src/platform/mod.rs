//! Where the guest's evidence comes from: the hardware through configfs-tsm
//! ([`TsmSource`]) or, on kernels without it, `/dev/sev-guest`
//! ([`SevGuestSource`], [`devices`]); in a Kata Confidential Containers
//! pod, the attestation agent ([`coco::CocoAgentSource`]); or the simulated platform
//! ([`crate::kbs_client::sim::SimSnpSource`], development only). All
//! produce the `tee-evidence` JSON the key broker and clients accept.
//!
//! [`devices`] is the only module here allowed `unsafe` (its ioctls; the
//! only other `unsafe` in ciel enters the engine's AVX2 kernel).

pub mod coco;
pub mod coco_sim;
pub mod devices;

use crate::kbs_client::EvidenceSource;
use crate::tsm::{RealFs, TSM_REPORT_ROOT, TsmFs, get_report};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ciel_attestation::snp::cert_table::CertTable;
use ciel_protocol::initdata::InitData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Evidence through configfs-tsm. SEV-SNP (`sev_guest`): the report and the
/// VCEK/VLEK, ASK and ARK from the certificate table in `auxblob`. TDX
/// (`tdx_guest`): the quote (its collateral comes from the verifier side).
#[derive(Debug)]
pub struct TsmSource<F: TsmFs = RealFs> {
    fs: F,
    root: PathBuf,
    tee: &'static str,
    requests: AtomicU64,
}

impl TsmSource<RealFs> {
    /// The kernel's configfs-tsm, provider detected with one request.
    pub fn detect() -> Result<Self, String> {
        TsmSource::with_fs(RealFs, PathBuf::from(TSM_REPORT_ROOT))
    }
}

impl<F: TsmFs> TsmSource<F> {
    /// configfs-tsm through `fs` under `root`; one request with an all-zero
    /// `report_data` learns the provider.
    pub fn with_fs(fs: F, root: PathBuf) -> Result<Self, String> {
        let probe =
            get_report(&fs, &root, &request_name(0), &[0u8; 64]).map_err(|e| e.to_string())?;
        let tee = match probe.provider.as_str() {
            "sev_guest" => "snp",
            "tdx_guest" => "tdx",
            other => {
                return Err(format!(
                    "configfs-tsm provider {other:?} is not supported (sev_guest, tdx_guest)"
                ));
            }
        };
        Ok(TsmSource {
            fs,
            root,
            tee,
            requests: AtomicU64::new(1),
        })
    }
}

fn request_name(n: u64) -> String {
    format!("ciel-{}-{n}", std::process::id())
}

fn pem_cert(der: &[u8]) -> String {
    let b64 = B64.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

impl<F: TsmFs + Send + Sync> EvidenceSource for TsmSource<F> {
    fn tee(&self) -> &str {
        self.tee
    }

    fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let r = get_report(&self.fs, &self.root, &request_name(n), &report_data)
            .map_err(|e| e.to_string())?;
        match self.tee {
            "snp" => {
                let aux = r.auxblob.ok_or(
                    "configfs-tsm gave no auxblob: the host did not provide the SNP certificate table (VCEK)",
                )?;
                snp_evidence(&r.outblob, &aux)
            }
            _ => Ok(serde_json::json!({"quote": B64.encode(&r.outblob)})),
        }
    }
}

/// SNP `tee-evidence` from a report and the host's certificate table:
/// `{report, vcek (the VCEK or VLEK), cert_chain (ASK/ARK PEM, if given)}`.
fn snp_evidence(report: &[u8], table: &[u8]) -> Result<serde_json::Value, String> {
    let table = CertTable::parse(table).map_err(|e| e.to_string())?;
    let mut doc = serde_json::json!({
        "report": B64.encode(report),
        "vcek": B64.encode(table.signer().map_err(|e| e.to_string())?),
    });
    let chain: String = [&table.ask, &table.ark]
        .into_iter()
        .flatten()
        .map(|c| pem_cert(c))
        .collect();
    if !chain.is_empty() {
        doc["cert_chain"] = chain.into();
    }
    Ok(doc)
}

/// A platform launched with init-data (Kata's, or any host that sets
/// `HOST_DATA` / `MRCONFIGID` to its digest), checked once against the
/// platform's own evidence: a guest given init-data its hardware does not
/// bind refuses to start, rather than be refused later by every verifier.
#[derive(Debug)]
pub struct WithInitData<S> {
    source: S,
    init_data: InitData,
}

impl<S: EvidenceSource> WithInitData<S> {
    pub fn bind(source: S, init_data: InitData) -> Result<Self, String> {
        let evidence = source.evidence([0u8; 64])?;
        let parsed = ciel_attestation::tee_evidence::parse_evidence(source.tee(), &evidence)?;
        let field = parsed.init_data_field().ok_or_else(|| {
            format!(
                "{} evidence has no field that binds init-data",
                source.tee()
            )
        })?;
        if !init_data.bound_by(&field) {
            return Err(format!(
                "init-data ({} digest {}) is not what this VM was launched with: its {} is {}",
                init_data.algorithm().name(),
                hex::encode(init_data.digest()),
                if field.len() == 32 {
                    "HOST_DATA"
                } else {
                    "MRCONFIGID"
                },
                hex::encode(&field)
            ));
        }
        Ok(WithInitData { source, init_data })
    }
}

impl<S: EvidenceSource> EvidenceSource for WithInitData<S> {
    fn tee(&self) -> &str {
        self.source.tee()
    }

    fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
        self.source.evidence(report_data)
    }

    fn init_data(&self) -> Option<&InitData> {
        Some(&self.init_data)
    }
}

/// SEV-SNP evidence through `/dev/sev-guest` (`SNP_GET_EXT_REPORT`).
#[derive(Debug)]
pub struct SevGuestSource {
    device: PathBuf,
}

impl SevGuestSource {
    pub const DEVICE: &'static str = "/dev/sev-guest";

    /// The device, if it exists.
    pub fn detect() -> Option<Self> {
        let device = PathBuf::from(Self::DEVICE);
        device.exists().then_some(SevGuestSource { device })
    }
}

impl EvidenceSource for SevGuestSource {
    fn tee(&self) -> &str {
        "snp"
    }

    fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
        let (report, table) =
            devices::snp_extended_report(&self.device, report_data).map_err(|e| e.to_string())?;
        if table.is_empty() {
            return Err(format!(
                "{}: the host supplied no certificate table (VCEK); configure it with the host's SNP certificates",
                self.device.display()
            ));
        }
        snp_evidence(&report, &table)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use ciel_attestation::sim::{SimSnpReport, SnpSim};
    use ciel_attestation::{Policy, UnixTime, tee_evidence, verify};
    use std::io;
    use std::path::Path;

    /// A configfs-tsm that signs with the simulated SNP hierarchy: outblob
    /// is a report for the inblob, auxblob the certificate table.
    struct SimKernel {
        sim: SnpSim,
    }

    impl TsmFs for SimKernel {
        fn mkdir(&self, path: &Path) -> io::Result<()> {
            std::fs::create_dir(path)?;
            std::fs::write(path.join("generation"), "1\n")?;
            std::fs::write(path.join("provider"), "sev_guest\n")
        }
        fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
            std::fs::write(path, data)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            let dir = path.parent().ok_or(io::ErrorKind::NotFound)?;
            if path.ends_with("outblob") {
                let inblob = std::fs::read(dir.join("inblob"))?;
                let report_data: [u8; 64] =
                    inblob.try_into().map_err(|_| io::ErrorKind::InvalidData)?;
                return self
                    .sim
                    .report(&SimSnpReport {
                        report_data,
                        ..SimSnpReport::default()
                    })
                    .map_err(io::Error::other);
            }
            if path.ends_with("auxblob") {
                let chain =
                    ciel_attestation::x509::Cert::parse_bundle(&self.sim.chain_pem()).unwrap();
                return Ok(CertTable {
                    vcek: Some(self.sim.vcek_der().to_vec()),
                    ask: chain
                        .iter()
                        .find(|c| !c.self_issued())
                        .map(|c| c.der().to_vec()),
                    ark: chain
                        .iter()
                        .find(|c| c.self_issued())
                        .map(|c| c.der().to_vec()),
                    vlek: None,
                }
                .encode());
            }
            std::fs::read(path)
        }
        fn rmdir(&self, path: &Path) -> io::Result<()> {
            std::fs::remove_dir_all(path)
        }
    }

    #[test]
    fn snp_evidence_from_configfs_verifies_with_its_certificate_table() {
        let now = UnixTime(1_790_000_000);
        let sim = SnpSim::generate(now).unwrap();
        let root_sha = sim.root_sha256();
        let dir = tempfile::tempdir().unwrap();
        let src = TsmSource::with_fs(SimKernel { sim }, dir.path().to_path_buf()).unwrap();
        assert_eq!(src.tee(), "snp");
        let rd = [0x5a; 64];
        let doc = src.evidence(rd).unwrap();
        let decoded = tee_evidence::decode("snp", &doc, None).unwrap();
        let mut policy = Policy::authenticity_only();
        policy.danger_trust_simulated_root(root_sha);
        policy.report_data = Some(rd);
        let v = verify(&decoded.evidence, &decoded.collateral, &policy, now);
        assert!(v.accepted, "{}", v.summary());
        // Every request directory was removed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
