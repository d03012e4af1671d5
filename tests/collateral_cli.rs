//! The host's collateral service and bundles through the CLI: `ciel host
//! serve --collateral-cache` serves a simulated TDX quote's collateral from
//! its cache (no upstream: every one turned off), `ciel collateral bundle
//! --from` fetches what the quote needs into a bundle, and `ciel attest
//! verify --collateral-bundle` verifies the quote with it offline; a
//! bundle whose TCB info was altered is refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use ciel_attestation::UnixTime;
use ciel_attestation::collateral::DcapCollateral;
use common::{ciel, free_port, listening, sim_report};
use std::ffi::OsString;

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_hosts_collateral_service_feeds_a_bundle_that_verifies_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let quote = tmp.path().join("td.quote");
    let run = sim_report("tdx", "ab", &quote);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let fp = run
        .stderr
        .lines()
        .find(|l| l.contains("danger_simulated_roots"))
        .expect("policy hint")
        .trim()
        .to_string();
    let policy = tmp.path().join("policy.toml");
    std::fs::write(&policy, format!("{fp}\n")).unwrap();

    // The host's cache, holding the quote's four items as PCS serves them.
    let col = DcapCollateral::from_json(
        &std::fs::read(tmp.path().join("td.quote.collateral.json")).unwrap(),
    )
    .unwrap();
    let cache = tmp.path().join("cache");
    let store = ciel_collateral::Store::open(&cache).unwrap();
    let now = UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    for e in
        ciel_collateral::lookup::dcap_entries(&std::fs::read(&quote).unwrap(), &col, now).unwrap()
    {
        store.put(e).unwrap();
    }

    let port = free_port();
    let mut args: Vec<OsString> = [
        "host",
        "serve",
        "--guest-api",
        "tcp://127.0.0.1:9",
        "--listen",
    ]
    .map(OsString::from)
    .to_vec();
    args.push(format!("tcp://127.0.0.1:{}", free_port()).into());
    args.extend(["--collateral-cache".into(), cache.clone().into_os_string()]);
    args.extend([
        "--collateral-listen".into(),
        format!("tcp://127.0.0.1:{port}").into(),
    ]);
    for u in [
        "amd",
        "intel",
        "intel-root-ca-crl",
        "nvidia-rim",
        "nvidia-ocsp",
    ] {
        args.extend(["--collateral-upstream".into(), format!("{u}=none").into()]);
    }
    let mut host = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_ciel"))
            .args(&args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(listening(port, &mut host.0), "the host did not start");

    let bundle = tmp.path().join("bundle.json");
    let base = format!("http://127.0.0.1:{port}");
    // `ciel collateral bundle --from` the host's service `--for` evidence.
    let bundle_for = |evidence: &std::path::Path, out: &std::path::Path| {
        ciel([
            "collateral".as_ref(),
            "bundle".as_ref(),
            "--from".as_ref(),
            base.as_ref(),
            "--for".as_ref(),
            evidence.as_os_str(),
            "--out".as_ref(),
            out.as_os_str(),
        ])
    };
    let run = bundle_for(&quote, &bundle);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = ciel(["collateral".as_ref(), "show".as_ref(), bundle.as_os_str()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    for kind in [
        "intel-tcb-info",
        "intel-qe-identity",
        "intel-pck-crl",
        "intel-root-ca-crl",
    ] {
        assert!(run.stdout.contains(kind), "{}", run.stdout);
    }
    assert!(run.stdout.contains("4 items"), "{}", run.stdout);
    // Azure TDX vTPM evidence carrying that quote: the same four items.
    let mut az = ciel_attestation::sim::AzVtpmSim::generate()
        .unwrap()
        .evidence_tdx(
            &ciel_attestation::sim::TdxSim::generate(now).unwrap(),
            &Default::default(),
            b"nonce",
            &[[0; 32]; 24],
        )
        .unwrap();
    az.td_quote = Some(std::fs::read(&quote).unwrap());
    let az_file = tmp.path().join("az-tdx.json");
    std::fs::write(&az_file, serde_json::to_vec(&az.to_json()).unwrap()).unwrap();
    let az_bundle = tmp.path().join("az-bundle.json");
    let run = bundle_for(&az_file, &az_bundle);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let run = ciel([
        "collateral".as_ref(),
        "show".as_ref(),
        az_bundle.as_os_str(),
    ]);
    assert!(run.stdout.contains("4 items"), "{}", run.stdout);

    let verify = |bundle: &std::path::Path| {
        ciel([
            "attest".as_ref(),
            "verify".as_ref(),
            quote.as_os_str(),
            "--collateral-bundle".as_ref(),
            bundle.as_os_str(),
            "--policy".as_ref(),
            policy.as_os_str(),
            "--json".as_ref(),
        ])
    };
    let run = verify(&bundle);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json()["platform"], "tdx");
    assert!(run.reason_codes().is_empty(), "{}", run.stdout);

    // The service answered from its cache: four hits for each bundle,
    // nothing fetched.
    let mut metrics = String::new();
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        s.read_to_string(&mut metrics).unwrap();
    }
    assert!(
        metrics.contains("ciel_collateral_cache_hits_total 8\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ciel_collateral_fetched_total 0\n"),
        "{metrics}"
    );

    // A bundle made from the cache directory is the same four items.
    let from_cache = tmp.path().join("from-cache.json");
    let run = ciel([
        "collateral".as_ref(),
        "bundle".as_ref(),
        "--from-cache".as_ref(),
        cache.as_os_str(),
        "--out".as_ref(),
        from_cache.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(verify(&from_cache).code, 0);

    // TCB info altered in the bundle: the signature refuses it.
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    for item in doc["items"].as_array_mut().unwrap() {
        if item["item"].as_str().unwrap().contains("/tcb?") {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD;
            let body =
                String::from_utf8(b64.decode(item["body"].as_str().unwrap()).unwrap()).unwrap();
            let lied = body.replacen("\"tcbLevels\":[", "\"tcbLevels\":[ ", 1);
            assert_ne!(body, lied);
            item["body"] = b64.encode(lied).into();
        }
    }
    let lying = tmp.path().join("lying.json");
    std::fs::write(&lying, serde_json::to_vec(&doc).unwrap()).unwrap();
    let run = verify(&lying);
    assert_eq!(run.code, 1, "{}", run.stdout);
    assert!(!run.reason_codes().is_empty(), "{}", run.stdout);

    // Missing evidence and a bad bundle: errors naming the file.
    let run = bundle_for("/nonexistent.quote".as_ref(), &bundle);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("/nonexistent.quote"), "{}", run.stderr);
    std::fs::write(
        &lying,
        b"{\"format\":\"other\",\"created_at\":0,\"items\":[]}",
    )
    .unwrap();
    let run = verify(&lying);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("lying.json") && run.stderr.contains("format"),
        "{}",
        run.stderr
    );
}
