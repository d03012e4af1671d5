//! The host's collateral service against a local imitation of AMD KDS and
//! Intel PCS serving real vectors (no outside network): items fetched once
//! and then served from the cache (also after a restart, with no upstream),
//! refreshed before they expire, never served expired; a bundle made from
//! the cache verifies the real TDX quote offline; what a lying cache hands
//! on is refused by verification.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ciel_attestation::collateral::DcapCollateral;
use ciel_attestation::roots::AmdProduct;
use ciel_attestation::snp::SnpReport;
use ciel_attestation::{Evidence, Policy, ReasonKind, UnixTime, tee_evidence};
use ciel_collateral::lookup;
use ciel_collateral::service::RefreshPolicy;
use ciel_collateral::upstream::FetchError;
use ciel_collateral::{Bundle, Item, Service, Store, Upstream, Upstreams};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn testdata(rel: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../attestation/testdata")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// 2025-07-01T00:00:00Z, inside the TDX collateral's window
/// (2025-06-19 … 2025-07-19).
const DCAP_AT: u64 = 1_751_328_000;
/// 2025-10-01T08:00:00Z, when the bundled SNP vectors verify.
const SNP_AT: u64 = 1_759_305_600;

/// The services' clock, moved by the tests (one per test binary; the tests
/// that move it run in one test function).
static NOW: AtomicU64 = AtomicU64::new(DCAP_AT);
/// Held by each test that moves the clock.
static CLOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
fn now() -> UnixTime {
    UnixTime(NOW.load(Ordering::SeqCst))
}

/// A body and its headers.
type Answer = (Vec<u8>, Vec<(String, String)>);

/// An imitation upstream: fixed answers by path and query, counting requests.
#[derive(Default)]
struct Imitation {
    answers: Mutex<HashMap<String, Answer>>,
    requests: Mutex<HashMap<String, usize>>,
    down: AtomicBool,
}

impl Imitation {
    fn serve(&self, key: &str, body: Vec<u8>, headers: &[(&str, String)]) {
        let h = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        self.answers
            .lock()
            .unwrap()
            .insert(key.to_string(), (body, h));
    }

    fn requests(&self, key: &str) -> usize {
        self.requests.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

async fn imitation_handler(
    axum::extract::State(im): axum::extract::State<Arc<Imitation>>,
    uri: Uri,
    _body: Bytes,
) -> Response {
    let key = uri.to_string();
    *im.requests.lock().unwrap().entry(key.clone()).or_default() += 1;
    if im.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match im.answers.lock().unwrap().get(&key) {
        Some((body, headers)) => {
            let mut h = HeaderMap::new();
            for (k, v) in headers {
                h.insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            (h, body.clone()).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn listen(router: axum::Router) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, router).await });
    format!("http://{addr}")
}

fn encoded(pem: &str) -> String {
    percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The imitation PCS serving the real TDX quote's collateral, split into
/// the answers PCS gives (signed JSON bodies, issuer chains in headers).
fn serve_intel(im: &Imitation, col: &DcapCollateral) {
    let signed = |field: &str, raw: &str, sig: &[u8]| {
        format!(
            "{{\"{field}\":{raw},\"signature\":\"{}\"}}",
            hex::encode(sig)
        )
        .into_bytes()
    };
    im.serve(
        "/tdx/certification/v4/tcb?fmspc=B0C06F000000",
        signed("tcbInfo", &col.tcb_info, &col.tcb_info_signature),
        &[("TCB-Info-Issuer-Chain", encoded(&col.tcb_info_issuer_chain))],
    );
    im.serve(
        "/tdx/certification/v4/qe/identity",
        signed(
            "enclaveIdentity",
            &col.qe_identity,
            &col.qe_identity_signature,
        ),
        &[(
            "SGX-Enclave-Identity-Issuer-Chain",
            encoded(&col.qe_identity_issuer_chain),
        )],
    );
    im.serve(
        "/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
        col.pck_crl.clone(),
        &[(
            "SGX-PCK-CRL-Issuer-Chain",
            encoded(&col.pck_crl_issuer_chain),
        )],
    );
    // As a PCCS answers it: hex text.
    im.serve(
        "/IntelSGXRootCA.der",
        hex::encode(&col.root_ca_crl).into_bytes(),
        &[],
    );
}

struct Setup {
    im: Arc<Imitation>,
    upstream_base: String,
    cache: tempfile::TempDir,
}

async fn imitation() -> Setup {
    let im = Arc::new(Imitation::default());
    let router = axum::Router::new()
        .fallback(imitation_handler)
        .with_state(im.clone());
    let upstream_base = listen(router).await;
    Setup {
        im,
        upstream_base,
        cache: tempfile::tempdir().unwrap(),
    }
}

impl Setup {
    fn upstreams(&self) -> Upstreams {
        let b = &self.upstream_base;
        let urls = BTreeMap::from([
            (Upstream::Amd, b.clone()),
            (Upstream::Intel, b.clone()),
            (Upstream::IntelRootCaCrl, format!("{b}/IntelSGXRootCA.der")),
        ]);
        Upstreams::new(urls, None, Duration::from_secs(10)).unwrap()
    }

    /// The service on loopback; its base URL, and the service.
    async fn service(&self, upstreams: Upstreams) -> (String, Arc<Service>) {
        let store = Store::open(self.cache.path()).unwrap();
        let svc = Arc::new(Service::with_clock(
            store,
            upstreams,
            RefreshPolicy::default(),
            now,
        ));
        (listen(svc.clone().router()).await, svc)
    }
}

/// A blocking client of the service, off the runtime.
async fn through(
    base: &str,
    f: impl FnOnce(Upstreams) -> Result<DcapCollateral, String> + Send + 'static,
) -> Result<DcapCollateral, String> {
    let client = Upstreams::service(base, Duration::from_secs(10)).unwrap();
    tokio::task::spawn_blocking(move || f(client))
        .await
        .unwrap()
}

fn verify_tdx(quote: &[u8], col: DcapCollateral) -> ciel_attestation::Verdict {
    let e = Evidence::parse(quote).unwrap();
    let c = ciel_attestation::Collateral {
        dcap: Some(col),
        ..Default::default()
    };
    ciel_attestation::verify(&e, &c, &Policy::authenticity_only(), UnixTime(DCAP_AT))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tdx_collateral_through_the_service_cache_refresh_and_bundle() {
    let _clock = CLOCK.lock().await;
    NOW.store(DCAP_AT, Ordering::SeqCst);
    let quote = testdata("tdx/tdx_quote");
    let want = DcapCollateral::from_json(&testdata("tdx/tdx_quote_collateral.json")).unwrap();
    let s = imitation().await;
    serve_intel(&s.im, &want);
    let (base, svc) = s.service(s.upstreams()).await;

    // Assembled from the service, the collateral is the vector's, byte for
    // byte, and verifies the real quote.
    let q = quote.clone();
    let got = through(&base, move |c| lookup::dcap_collateral(&c, &q))
        .await
        .unwrap();
    assert_eq!(got, want);
    assert!(verify_tdx(&quote, got).accepted);
    let tcb = "/tdx/certification/v4/tcb?fmspc=B0C06F000000";
    assert_eq!(s.im.requests(tcb), 1);

    // Asked again: from the cache, the upstream not asked.
    let q = quote.clone();
    through(&base, move |c| lookup::dcap_collateral(&c, &q))
        .await
        .unwrap();
    assert_eq!(s.im.requests(tcb), 1);
    assert_eq!(svc.metrics.hits.load(Ordering::SeqCst), 4);

    // Nothing is due on 2025-07-01; on 2025-07-18T12:00Z (the TCB info's
    // window ends 07-19T10:16, less than a quarter left) TCB info, QE
    // identity and PCK CRL are (the root CA's CRL runs for a year).
    assert_eq!(svc.refresh_due().await, (0, 0));
    NOW.store(1_752_840_000, Ordering::SeqCst);
    assert_eq!(svc.refresh_due().await, (3, 0));
    assert_eq!(s.im.requests(tcb), 2);

    // A restarted service with no upstream at all serves its disk cache.
    let (base2, _svc2) = s
        .service(Upstreams::new(BTreeMap::new(), None, Duration::from_secs(1)).unwrap())
        .await;
    let q = quote.clone();
    let again = through(&base2, move |c| lookup::dcap_collateral(&c, &q))
        .await
        .unwrap();
    assert_eq!(again, want);

    // The upstream down: a current copy is still served; once the content
    // has expired (2025-07-20) the request fails, naming the item and why.
    s.im.down.store(true, Ordering::SeqCst);
    let q = quote.clone();
    through(&base, move |c| lookup::dcap_collateral(&c, &q))
        .await
        .unwrap();
    NOW.store(1_752_969_600, Ordering::SeqCst);
    let q = quote.clone();
    let e = through(&base, move |c| lookup::dcap_collateral(&c, &q))
        .await
        .unwrap_err();
    assert!(e.contains("HTTP 502"), "{e}");
    let e = svc.get(Item::parse(tcb).unwrap(), None).await.unwrap_err();
    assert!(e.contains(tcb) && e.contains("HTTP 503"), "{e}");
    NOW.store(DCAP_AT, Ordering::SeqCst);

    // A bundle of the cache verifies the quote offline, through the same
    // decode the client and the broker use (Trustee's quote-only shape).
    let bundle = Bundle::new(now(), svc.store.entries());
    let bundle = Bundle::from_json(&bundle.to_json()).unwrap();
    assert_eq!(bundle.len(), 4);
    let doc = serde_json::json!({"quote": B64.encode(&quote)});
    let decoded = tee_evidence::decode("tdx", &doc, Some(&bundle)).unwrap();
    let v = decoded.verify(&Policy::authenticity_only(), UnixTime(DCAP_AT));
    assert!(v.accepted, "{:?}", v.reasons);

    // A lying cache or bundle can only deny: TCB info altered in a way its
    // shape checks cannot see is refused by its signature.
    let tcb_item = Item::parse(tcb).unwrap();
    let body = String::from_utf8(bundle.get(&tcb_item).unwrap().body.clone()).unwrap();
    let lied = body.replacen("\"tcbLevels\":[", "\"tcbLevels\":[ ", 1);
    assert_ne!(lied, body);
    let lying = Bundle::new(
        now(),
        bundle.entries().cloned().map(|mut e| {
            if e.item == tcb_item {
                e.body = lied.clone().into_bytes();
            }
            e
        }),
    );
    let lying = Bundle::from_json(&lying.to_json()).unwrap();
    let decoded = tee_evidence::decode("tdx", &doc, Some(&lying)).unwrap();
    let v = decoded.verify(&Policy::authenticity_only(), UnixTime(DCAP_AT));
    assert!(!v.accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_checked_and_bad_upstream_answers_refused() {
    let _clock = CLOCK.lock().await;
    NOW.store(DCAP_AT, Ordering::SeqCst);
    let s = imitation().await;
    let (base, svc) = s.service(s.upstreams()).await;
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let base2 = base.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let get = |path: &str| {
            let mut r = agent.get(&format!("{base2}{path}")).call().unwrap();
            (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
        };
        let post = agent
            .post(&format!("{base2}/vcek/v1/Milan/cert_chain"))
            .send(&b"x"[..])
            .unwrap()
            .status()
            .as_u16();
        (
            get("/vcek/v1/Naples/cert_chain"),
            get("/vcek/v1/Milan/cert_chain?debug=1"),
            get("/v1/rim/..%2F..%2Fetc"),
            get("/vcek/v1/Milan/cert_chain"),
            post,
        )
    })
    .await
    .unwrap();
    assert_eq!(answers.0.0, 400);
    assert!(
        answers.0.1.contains("unknown AMD product \"Naples\""),
        "{}",
        answers.0.1
    );
    assert_eq!(answers.1.0, 400);
    assert!(
        answers.1.1.contains("\"debug\" is not supported"),
        "{}",
        answers.1.1
    );
    assert_eq!(answers.2.0, 400);
    // Not served upstream (404 there): 502 naming it.
    assert_eq!(answers.3.0, 502);
    assert!(
        answers.3.1.contains("/vcek/v1/Milan/cert_chain") && answers.3.1.contains("404"),
        "{}",
        answers.3.1
    );
    assert_eq!(answers.4, 405);
    assert_eq!(svc.metrics.refused.load(Ordering::SeqCst), 3);

    // The upstream's 404 is remembered: asking again does not ask it again
    // until the hold has passed.
    let path = "/vcek/v1/Milan/cert_chain";
    s.im.serve(path, b"not PEM".to_vec(), &[]);
    let item = Item::parse(path).unwrap();
    assert_eq!(s.im.requests(path), 1);
    let e = svc.get(item.clone(), None).await.unwrap_err();
    assert!(
        e.contains("404") && e.contains("not asked upstream again for 300s"),
        "{e}"
    );
    assert_eq!(s.im.requests(path), 1);
    assert_eq!(svc.metrics.held_back.load(Ordering::SeqCst), 1);
    NOW.store(
        DCAP_AT + ciel_collateral::service::MISS_HOLD.as_secs(),
        Ordering::SeqCst,
    );
    // An upstream answer of the wrong shape is not kept, and held back for
    // the shorter failure hold.
    let e = svc.get(item.clone(), None).await.unwrap_err();
    assert!(e.contains("cert_chain") && !e.contains("404"), "{e}");
    assert_eq!(s.im.requests(path), 2);
    assert!(svc.store.get(&item).is_none());
    let e = svc.get(item.clone(), None).await.unwrap_err();
    assert!(e.contains("not asked upstream again for 30s"), "{e}");
    assert_eq!(s.im.requests(path), 2);
    assert!(
        svc.render_metrics()
            .contains("ciel_collateral_held_back_total 2")
    );
    // TCB info without its issuer chain header is refused.
    s.im.serve(
        "/tdx/certification/v4/tcb?fmspc=B0C06F000000",
        br#"{"tcbInfo":{},"signature":"00"}"#.to_vec(),
        &[],
    );
    let fetched = s.upstreams().fetch(
        &Item::parse("/tdx/certification/v4/tcb?fmspc=B0C06F000000").unwrap(),
        None,
        now(),
    );
    assert!(
        matches!(&fetched, Err(FetchError::Malformed { message, .. }) if message.contains("TCB-Info-Issuer-Chain")),
        "{fetched:?}"
    );
}

/// SNP: the real Genoa report's VCEK and chain, and a simulated chip's
/// VCEK, chain and CRL, through a bundle made by the service; evidence
/// with no VCEK verifies from it, and the CRL is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snp_vcek_chain_and_crl_through_a_bundle() {
    let _clock = CLOCK.lock().await;
    use ciel_attestation::sim::{SimSnpReport, SnpSim};
    let s = imitation().await;
    let report = testdata("snp/genoa_oc.report.bin");
    let parsed = SnpReport::parse(&report).unwrap();
    let vcek_item = lookup::vcek_item(&parsed, AmdProduct::Genoa);
    let path = vcek_item.to_string();
    s.im.serve(&path, testdata("snp/genoa_oc.vcek.der"), &[]);

    let sim = SnpSim::generate(UnixTime(SNP_AT - 86_400)).unwrap();
    let sim_report = sim.report(&SimSnpReport::default()).unwrap();
    let sim_parsed = SnpReport::parse(&sim_report).unwrap();
    let sim_product = sim_parsed.product().unwrap();
    s.im.serve(
        &lookup::vcek_item(&sim_parsed, sim_product).to_string(),
        sim.vcek_der().to_vec(),
        &[],
    );
    s.im.serve(
        &format!("/vcek/v1/{}/cert_chain", sim_product.name()),
        sim.chain_pem(),
        &[],
    );
    let crl = |revoked: &[u32]| {
        sim.crl(UnixTime(SNP_AT - 3600), UnixTime(SNP_AT + 86_400), revoked)
            .unwrap()
    };
    s.im.serve(
        &format!("/vcek/v1/{}/crl", sim_product.name()),
        crl(&[]),
        &[],
    );

    let (_base, svc) = s.service(s.upstreams()).await;
    NOW.store(SNP_AT, Ordering::SeqCst);
    for p in [
        path.clone(),
        lookup::vcek_item(&sim_parsed, sim_product).to_string(),
        format!("/vcek/v1/{}/cert_chain", sim_product.name()),
        format!("/vcek/v1/{}/crl", sim_product.name()),
    ] {
        svc.get(Item::parse(&p).unwrap(), None).await.unwrap();
    }
    let bundle = Bundle::from_json(&Bundle::new(now(), svc.store.entries()).to_json()).unwrap();
    assert_eq!(
        lookup::snp_vcek(&bundle, &parsed).unwrap(),
        testdata("snp/genoa_oc.vcek.der")
    );

    // The real report, its VCEK from the bundle (and AMD's chain, built
    // in: this bundle's Genoa chain is the simulated one, so it is left out).
    let vceks = Bundle::new(
        now(),
        bundle
            .entries()
            .filter(|e| matches!(e.item, Item::AmdVcek { .. }))
            .cloned(),
    );
    let doc = serde_json::json!({"report": B64.encode(&report)});
    let v = tee_evidence::decode("snp", &doc, Some(&vceks))
        .unwrap()
        .verify(&Policy::authenticity_only(), UnixTime(SNP_AT));
    assert!(v.accepted, "{:?}", v.reasons);
    // With no bundle the VCEK is missing, said so.
    let e = tee_evidence::decode("snp", &doc, None).unwrap_err();
    assert!(e.contains("vcek"), "{e}");

    // The simulated chip: VCEK, chain and CRL from the bundle; the policy
    // requires the CRL and names the simulated root.
    let mut policy = Policy::from_toml("[snp]\nrequire_crl = true\n").unwrap();
    policy.danger_trust_simulated_root(sim.root_sha256());
    let doc = serde_json::json!({"report": B64.encode(&sim_report)});
    let v = tee_evidence::decode("snp", &doc, Some(&bundle))
        .unwrap()
        .verify(&policy, UnixTime(SNP_AT));
    assert!(v.accepted, "{:?}", v.reasons);
    // A CRL revoking the VCEK (serial 3), in a bundle: refused by reason.
    let revoking = Bundle::new(
        now(),
        bundle.entries().cloned().map(|mut e| {
            if matches!(e.item, Item::AmdCrl { .. }) {
                e.body = crl(&[3]);
            }
            e
        }),
    );
    let v = tee_evidence::decode("snp", &doc, Some(&revoking))
        .unwrap()
        .verify(&policy, UnixTime(SNP_AT));
    assert!(!v.accepted);
    assert!(
        v.reasons
            .iter()
            .any(|r| r.kind == ReasonKind::CertificateRevoked),
        "{:?}",
        v.reasons
    );
    NOW.store(DCAP_AT, Ordering::SeqCst);
}
