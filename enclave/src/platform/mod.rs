//! Where the guest's evidence comes from: the hardware through configfs-tsm
//! ([`TsmSource`]) or, on kernels without it, `/dev/sev-guest`
//! ([`SevGuestSource`], [`devices`]); in a Kata Confidential Containers
//! pod, the attestation agent ([`coco::CocoAgentSource`]); on Azure
//! confidential VMs, the vTPM ([`VtpmSource`]); or the simulated platform
//! ([`crate::kbs_client::sim::SimSnpSource`], development only). All
//! produce the `tee-evidence` JSON the key broker and clients accept.
//!
//! [`devices`] is the only module here allowed `unsafe` (its ioctls; the
//! only other `unsafe` in ciel enters the engine's AVX2 kernel).

pub mod coco;
pub mod coco_sim;
pub mod devices;
pub mod vtpm;

pub use vtpm::VtpmSource;

use crate::kbs_client::EvidenceSource;
use crate::tsm::{RealFs, TSM_REPORT_ROOT, TsmFs, get_report};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ciel_attestation::snp::cert_table::CertTable;
use ciel_collateral::Upstreams;
use ciel_collateral::lookup;
use ciel_protocol::initdata::InitData;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Evidence through configfs-tsm. SEV-SNP (`sev_guest`): the report and the
/// VCEK/VLEK, ASK and ARK from the certificate table in `auxblob` (or, when
/// the host gives none, the VCEK from the host's collateral service). TDX
/// (`tdx_guest`): the quote, with its DCAP collateral from the host's
/// collateral service when one is configured, so clients verify it offline
/// (the transport is untrusted: clients check every item's signature).
#[derive(Debug)]
pub struct TsmSource<F: TsmFs = RealFs> {
    fs: F,
    root: PathBuf,
    tee: &'static str,
    requests: AtomicU64,
    collateral: Option<Upstreams>,
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
            collateral: None,
        })
    }

    /// Takes collateral from the host's collateral service (`service`,
    /// reached through a loopback bridge): a quote's DCAP collateral, a
    /// report's VCEK when the host gives no certificate table.
    pub fn with_collateral(mut self, service: Upstreams) -> Self {
        self.collateral = Some(service);
        self
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
        match (self.tee, r.auxblob, &self.collateral) {
            ("snp", Some(aux), _) => snp_evidence(&r.outblob, &aux),
            ("snp", None, Some(service)) => {
                let report = ciel_attestation::snp::SnpReport::parse(&r.outblob)
                    .map_err(|e| format!("configfs-tsm outblob: {e}"))?;
                let (vcek, chain) = snp_from_service(service, &report).map_err(|e| {
                    format!("the host gave no SNP certificate table, and {e}")
                })?;
                let mut doc = serde_json::json!({
                    "report": B64.encode(&r.outblob),
                    "vcek": B64.encode(vcek),
                });
                if let Some(chain) = chain {
                    doc["cert_chain"] = chain.into();
                }
                Ok(doc)
            }
            ("snp", None, None) => Err(
                "configfs-tsm gave no auxblob: the host did not provide the SNP certificate table (VCEK), and no collateral service is configured (--collateral-via)".into(),
            ),
            (_, _, None) => Ok(serde_json::json!({"quote": B64.encode(&r.outblob)})),
            (_, _, Some(service)) => Ok(serde_json::json!({
                "quote": B64.encode(&r.outblob),
                "collateral": dcap_from_service(service, &r.outblob)?,
            })),
        }
    }
}

/// An SNP report's VCEK and AMD chain (PEM, where served) from the host's
/// collateral service.
fn snp_from_service(
    service: &Upstreams,
    report: &ciel_attestation::snp::SnpReport,
) -> Result<(Vec<u8>, Option<String>), String> {
    let vcek = lookup::snp_vcek(service, report)
        .map_err(|e| format!("the host's collateral service has no VCEK for it: {e}"))?;
    let chain = lookup::snp_chain(service, report)
        .map(|chain| String::from_utf8_lossy(&chain).into_owned());
    Ok((vcek, chain))
}

/// A TD quote's DCAP collateral (as evidence carries it) from the host's
/// collateral service.
fn dcap_from_service(service: &Upstreams, quote: &[u8]) -> Result<serde_json::Value, String> {
    lookup::dcap_collateral(service, quote)
        .map(|col| col.to_json())
        .map_err(|e| format!("the TD quote's collateral from the host's collateral service: {e}"))
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
        let anchor = ciel_attestation::tee_evidence::init_data_anchor(source.tee(), &evidence)?
            .ok_or_else(|| {
                format!(
                    "{} evidence has no field that binds init-data",
                    source.tee()
                )
            })?;
        anchor
            .binds(&init_data)
            .map_err(|why| format!("init-data is not what this VM was launched with: {why}"))?;
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

    /// A TDX configfs-tsm answering every request with the real quote.
    struct TdxKernel {
        quote: Vec<u8>,
    }

    impl TsmFs for TdxKernel {
        fn mkdir(&self, path: &Path) -> io::Result<()> {
            std::fs::create_dir(path)?;
            std::fs::write(path.join("generation"), "1\n")?;
            std::fs::write(path.join("provider"), "tdx_guest\n")
        }
        fn write(&self, path: &Path, data: &[u8]) -> io::Result<()> {
            std::fs::write(path, data)
        }
        fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
            if path.ends_with("outblob") {
                return Ok(self.quote.clone());
            }
            std::fs::read(path)
        }
        fn rmdir(&self, path: &Path) -> io::Result<()> {
            std::fs::remove_dir_all(path)
        }
    }

    /// 2025-07-01T00:00:00Z, inside the vector collateral's window.
    fn dcap_at() -> UnixTime {
        UnixTime(1_751_328_000)
    }

    #[test]
    fn tdx_evidence_carries_collateral_from_the_hosts_service() {
        use ciel_collateral::{Service, Store, lookup, service::RefreshPolicy};
        let testdata = |f: &str| {
            std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../attestation/testdata/tdx")
                    .join(f),
            )
            .unwrap()
        };
        let quote = testdata("tdx_quote");
        let col = ciel_attestation::collateral::DcapCollateral::from_json(&testdata(
            "tdx_quote_collateral.json",
        ))
        .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        // The host's service: a cache holding the quote's items, no upstream.
        let cache = tempfile::tempdir().unwrap();
        let serve = |with_items: bool| {
            let store = Store::open(&cache.path().join(with_items.to_string())).unwrap();
            if with_items {
                for e in lookup::dcap_entries(&quote, &col, dcap_at()).unwrap() {
                    store.put(e).unwrap();
                }
            }
            let none = Upstreams::new(Default::default(), None, std::time::Duration::from_secs(1));
            let svc = std::sync::Arc::new(Service::with_clock(
                store,
                none.unwrap(),
                RefreshPolicy::default(),
                dcap_at,
            ));
            rt.block_on(async {
                let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = l.local_addr().unwrap();
                tokio::spawn(async move { axum::serve(l, svc.router()).await });
                Upstreams::service(
                    &format!("http://{addr}"),
                    std::time::Duration::from_secs(10),
                )
                .unwrap()
            })
        };
        let dir = tempfile::tempdir().unwrap();
        let kernel = || TdxKernel {
            quote: quote.clone(),
        };
        let src = TsmSource::with_fs(kernel(), dir.path().to_path_buf())
            .unwrap()
            .with_collateral(serve(true));
        assert_eq!(src.tee(), "tdx");
        let doc = src.evidence([0; 64]).unwrap();
        let decoded = tee_evidence::decode("tdx", &doc, None).unwrap();
        assert_eq!(decoded.collateral.dcap.as_ref(), Some(&col));
        let v = decoded.verify(&Policy::authenticity_only(), dcap_at());
        assert!(v.accepted, "{}", v.summary());

        // No service: the quote alone. A service without the items: an
        // error naming where the collateral was to come from.
        let plain = TsmSource::with_fs(kernel(), dir.path().to_path_buf()).unwrap();
        assert!(plain.evidence([0; 64]).unwrap().get("collateral").is_none());
        let empty = TsmSource::with_fs(kernel(), dir.path().to_path_buf())
            .unwrap()
            .with_collateral(serve(false));
        let e = empty.evidence([0; 64]).unwrap_err();
        assert!(
            e.contains("collateral service") && e.contains("pckcrl?ca=platform"),
            "{e}"
        );
    }
}
