//! The broker's `collateral_bundle`: SNP evidence that carries no VCEK
//! (a host that gives no certificate table) gets its key when the bundle
//! holds the chip's VCEK; without one it is refused saying so; the
//! bundle's CRL is applied (a revoked VCEK is refused by name).

use super::*;
use ciel_attestation::UnixTime;
use ciel_attestation::snp::SnpReport;
use ciel_collateral::{Bundle, Entry, Item, lookup};

/// The simulated chip's reports, without their VCEK.
struct VcekLess;

impl EvidenceSource for VcekLess {
    fn tee(&self) -> &str {
        "snp"
    }
    fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
        let report = sim()
            .report_binding(&SimSnpReport::default(), report_data)
            .map_err(|e| e.to_string())?;
        Ok(serde_json::json!({"report": B64.encode(report)}))
    }
}

fn now() -> UnixTime {
    UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
}

/// A bundle with the chip's VCEK, its chain and a CRL revoking `revoked`.
fn bundle(dir: &std::path::Path, name: &str, revoked: &[u32]) -> String {
    let report = SnpReport::parse(&sim().report(&SimSnpReport::default()).unwrap()).unwrap();
    let product = report.product().unwrap();
    let [chain, crl] = lookup::amd_items(&report, product);
    let now = now();
    let crl_der = sim()
        .crl(
            UnixTime(now.secs() - 3600),
            UnixTime(now.secs() + 86_400),
            revoked,
        )
        .unwrap();
    let entries = [
        (
            lookup::vcek_item(&report, product),
            sim().vcek_der().to_vec(),
        ),
        (chain, sim().chain_pem()),
        (crl, crl_der),
    ]
    .map(|(item, body): (Item, Vec<u8>)| {
        Entry::assess(item, body, Default::default(), now).unwrap()
    });
    let path = dir.join(name);
    std::fs::write(&path, Bundle::new(now, entries).to_json()).unwrap();
    path.display().to_string()
}

#[test]
fn snp_evidence_without_a_vcek_is_verified_with_the_brokers_collateral_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let policy = format!("[snp]\nmeasurements = [\"{}\"]\n", measurement());
    let broker = |bundle: Option<String>| {
        let extra = bundle
            .map(|p| format!("collateral_bundle = \"{p}\"\n"))
            .unwrap_or_default();
        let resources = [(
            "default/model-key/m",
            broker::Policies {
                toml: Some(policy.clone()),
                rego: None,
            },
        )];
        start_with_policies(300, true, &resources, &extra, |c| {
            AuditLog::open(files(c).1).unwrap()
        })
    };

    let b = broker(Some(bundle(dir.path(), "ok.json", &[])));
    let key = client(&b)
        .fetch_resource("default/model-key/m", &VcekLess)
        .unwrap();
    assert_eq!(key.as_slice(), &KEY);

    let b = broker(None);
    let e = client(&b)
        .fetch_resource("default/model-key/m", &VcekLess)
        .unwrap_err();
    assert!(format!("{e}").contains("vcek"), "{e}");

    // The bundle's CRL revokes the VCEK (serial 3).
    let b = broker(Some(bundle(dir.path(), "revoking.json", &[3])));
    let e = client(&b)
        .fetch_resource("default/model-key/m", &VcekLess)
        .unwrap_err();
    assert_eq!(refused_kind(e), "urn:ciel:kbs:bad-evidence");
    assert!(b.audit().contains("certificate_revoked"), "{}", b.audit());
}
