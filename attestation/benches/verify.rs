//! Verification latency on real evidence (criterion). Run:
//! `cargo bench -p ciel-attestation --bench verify`.
//!
//! Each benchmark does the whole job a verifier does per request: parse the
//! evidence, parse every certificate, verify the chain, the signature and
//! the policy. The `parse only` benchmark is the baseline it is compared to.

use ciel_attestation::collateral::DcapCollateral;
use ciel_attestation::evidence::decode_hex_text;
use ciel_attestation::roots::AmdProduct;
use ciel_attestation::{Collateral, Evidence, Policy, UnixTime, verify};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

fn testdata(rel: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(rel),
    )
    .unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let policy = Policy::authenticity_only();

    let snp = testdata("snp/genoa_oc.report.bin");
    let chain = pem::encode_many(&[
        pem::Pem::new("CERTIFICATE", AmdProduct::Genoa.ask_der().to_vec()),
        pem::Pem::new("CERTIFICATE", AmdProduct::Genoa.ark_der().to_vec()),
    ]);
    let snp_col = Collateral {
        snp_signer: Some(testdata("snp/genoa_oc.vcek.der")),
        snp_chain: Some(chain.into_bytes()),
        ..Default::default()
    };
    let at = UnixTime(1_759_305_600);
    c.bench_function("snp: parse only", |b| {
        b.iter(|| Evidence::parse(black_box(&snp)).is_ok())
    });
    c.bench_function("snp: report + VCEK/ASK/ARK chain", |b| {
        b.iter(|| match Evidence::parse(black_box(&snp)) {
            Ok(e) => verify(&e, &snp_col, &policy, at).accepted,
            Err(_) => false,
        })
    });

    let quote = testdata("tdx/tdx_quote");
    let dcap = DcapCollateral::from_json(&testdata("tdx/tdx_quote_collateral.json")).ok();
    let tdx_col = Collateral {
        dcap,
        ..Default::default()
    };
    let tdx_at = UnixTime(1_751_328_000);
    c.bench_function("tdx: quote + collateral", |b| {
        b.iter(|| match Evidence::parse(black_box(&quote)) {
            Ok(e) => verify(&e, &tdx_col, &policy, tdx_at).accepted,
            Err(_) => false,
        })
    });

    let gpu = decode_hex_text(&testdata("gpu/hopperAttestationReport.txt")).unwrap_or_default();
    let gpu_col = Collateral {
        gpu_cert_chain: Some(testdata("gpu/hopper_cert_chain_case1.txt")),
        ..Default::default()
    };
    c.bench_function("nvidia: report + 5-certificate chain", |b| {
        b.iter(|| match Evidence::parse(black_box(&gpu)) {
            Ok(e) => verify(&e, &gpu_col, &policy, at).accepted,
            Err(_) => false,
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
