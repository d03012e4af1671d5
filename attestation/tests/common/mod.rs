//! Test helpers: the crate's bundled real vectors and a shared simulated
//! hierarchy.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use ciel_attestation::sim::SnpSim;
use ciel_attestation::{Collateral, UnixTime};
use std::sync::OnceLock;

pub fn testdata(rel: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// 2025-10-01T08:00:00Z, when every bundled SNP vector is valid.
pub const SNP_AT: UnixTime = UnixTime(1_759_305_600);
/// 2025-07-01T00:00:00Z, inside the dcap-qvl collateral windows.
pub const DCAP_AT: UnixTime = UnixTime(1_751_328_000);

/// A real SNP report with its VCEK and product chain.
pub struct SnpVector {
    pub name: &'static str,
    pub report: Vec<u8>,
    pub vcek: Vec<u8>,
    pub chain: Vec<u8>,
}

pub fn snp_vectors() -> Vec<SnpVector> {
    use ciel_attestation::roots::AmdProduct;
    let chain = |p: AmdProduct| {
        let blocks = [
            pem::Pem::new("CERTIFICATE", p.ask_der().to_vec()),
            pem::Pem::new("CERTIFICATE", p.ark_der().to_vec()),
        ];
        pem::encode_many(&blocks).into_bytes()
    };
    vec![
        SnpVector {
            name: "genoa v5",
            report: testdata("snp/genoa_oc.report.bin"),
            vcek: testdata("snp/genoa_oc.vcek.der"),
            chain: chain(AmdProduct::Genoa),
        },
        SnpVector {
            name: "milan v3",
            report: testdata("snp/milan_oc_release.report.bin"),
            vcek: testdata("snp/milan_oc_release.vcek.der"),
            chain: chain(AmdProduct::Milan),
        },
        SnpVector {
            name: "milan v2",
            report: testdata("snp/milan_v2.report.bin"),
            vcek: testdata("snp/milan_v2.vcek.der"),
            chain: chain(AmdProduct::Milan),
        },
    ]
}

impl SnpVector {
    pub fn collateral(&self) -> Collateral {
        Collateral {
            snp_signer: Some(self.vcek.clone()),
            snp_chain: Some(self.chain.clone()),
            ..Default::default()
        }
    }
}

/// One simulated hierarchy per test binary (RSA-4096 generation is slow-ish).
pub fn sim() -> &'static SnpSim {
    static SIM: OnceLock<SnpSim> = OnceLock::new();
    SIM.get_or_init(|| SnpSim::generate(SNP_AT).expect("generate sim"))
}

/// The shared real-hardware vectors: `$CIEL_VECTORS`, else
/// `../shared/vectors` beside the checkout.
pub fn shared_vectors() -> std::path::PathBuf {
    std::env::var_os("CIEL_VECTORS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors")
        })
}

/// One file of the shared vectors.
pub fn shared_vector(rel: &str) -> Vec<u8> {
    let p = shared_vectors().join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{} (set CIEL_VECTORS): {e}", p.display()))
}

/// The simulated hierarchy's collateral for a report signed by `vcek`.
pub fn sim_collateral(vcek: &[u8]) -> Collateral {
    Collateral {
        snp_signer: Some(vcek.to_vec()),
        snp_chain: Some(sim().chain_pem()),
        ..Default::default()
    }
}

/// A policy that names the simulated root, plus `extra` (TOML).
pub fn trusting_policy(extra: &str) -> ciel_attestation::Policy {
    let text = format!(
        "danger_simulated_roots = [\"{}\"]\n{extra}",
        hex::encode(sim().root_sha256())
    );
    ciel_attestation::Policy::from_toml(&text).unwrap()
}

/// A simulated report for `req`, verified against `policy` at [`SNP_AT`].
pub fn check(
    req: &ciel_attestation::sim::SimSnpReport,
    policy: &ciel_attestation::Policy,
) -> ciel_attestation::Verdict {
    let report = sim().report(req).unwrap();
    ciel_attestation::verify(
        &ciel_attestation::Evidence::parse(&report).unwrap(),
        &sim_collateral(sim().vcek_der()),
        policy,
        SNP_AT,
    )
}
