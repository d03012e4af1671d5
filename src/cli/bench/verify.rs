//! `verify`: whole verifications of real evidence (parse, chain, signature,
//! policy) — latency percentiles and verifications per second per core,
//! beside parsing alone.

use super::{Report, percentile_ms, sample};
use anyhow::{Context, Result};
use ciel_attestation::collateral::DcapCollateral;
use ciel_attestation::evidence::decode_hex_text;
use ciel_attestation::roots::AmdProduct;
use ciel_attestation::{Collateral, Evidence, Policy, UnixTime, verify};

macro_rules! testdata {
    ($rel:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/attestation/testdata/",
            $rel
        ))
    };
}

pub fn run(r: &mut Report) -> Result<()> {
    let n = if r.quick { 100 } else { 1000 };
    let policy = Policy::authenticity_only();
    let chain = pem_chain(&[AmdProduct::Genoa.ask_der(), AmdProduct::Genoa.ark_der()]);
    let snp = Collateral {
        snp_signer: Some(testdata!("snp/genoa_oc.vcek.der").to_vec()),
        snp_chain: Some(chain.into_bytes()),
        ..Default::default()
    };
    let tdx = Collateral {
        dcap: Some(
            DcapCollateral::from_json(testdata!("tdx/tdx_quote_collateral.json"))
                .context("TDX collateral")?,
        ),
        ..Default::default()
    };
    let gpu = Collateral {
        gpu_cert_chain: Some(testdata!("gpu/hopper_cert_chain_case1.txt").to_vec()),
        ..Default::default()
    };
    let gpu_report =
        decode_hex_text(testdata!("gpu/hopperAttestationReport.txt")).context("GPU report")?;
    let cases: [(&str, &[u8], &Collateral, u64); 3] = [
        (
            "SNP report + VCEK/ASK/ARK (Genoa)",
            testdata!("snp/genoa_oc.report.bin"),
            &snp,
            1_759_305_600,
        ),
        (
            "TDX quote + collateral",
            testdata!("tdx/tdx_quote"),
            &tdx,
            1_751_328_000,
        ),
        (
            "NVIDIA H100 report + chain",
            &gpu_report,
            &gpu,
            1_759_305_600,
        ),
    ];
    for (name, bytes, col, at) in cases {
        let e = Evidence::parse(bytes).with_context(|| name.to_string())?;
        let v = verify(&e, col, &policy, UnixTime(at));
        anyhow::ensure!(v.accepted, "{name}: {}", v.summary());
        let parse = sample(n, || {
            let _ = std::hint::black_box(Evidence::parse(bytes));
        });
        let full = sample(n, || {
            if let Ok(e) = Evidence::parse(bytes) {
                std::hint::black_box(verify(&e, col, &policy, UnixTime(at)).accepted);
            }
        });
        let (p50, p99) = (percentile_ms(&full, 50.0), percentile_ms(&full, 99.0));
        r.compare(
            "verify",
            format!("{name}: p50"),
            p50,
            "ms",
            percentile_ms(&parse, 50.0) / p50,
            "parsing alone (share of the time)",
        );
        r.add("verify", format!("{name}: p99"), p99, "ms");
        r.add("verify", format!("{name}: per core"), 1e3 / p50, "verif/s");
    }
    Ok(())
}

fn pem_chain(ders: &[&[u8]]) -> String {
    ders.iter()
        .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.to_vec())))
        .collect()
}
