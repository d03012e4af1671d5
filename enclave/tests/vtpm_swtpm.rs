//! The guest's Azure vTPM collection against a real TPM 2.0 (swtpm),
//! provisioned the way Azure's paravisor provisions a confidential VM's
//! vTPM: an RSA-2048 restricted signing attestation key at 0x81000003 and,
//! at NV index 0x01400001, an HCL report (simulated: an SNP report signed
//! by the simulated VCEK, binding variable data naming that key).
//! Evidence collected through `VtpmSource` verifies for its nonce and its
//! PCRs; another nonce, a PCR policy it does not meet, and a vTPM without
//! the HCL report or the key are refused with clear messages. On TDX the
//! HCL report holds a TDREPORT, whose TD quote an imitation of Azure's
//! metadata service makes with the simulated quoting enclave.
//!
//! Ignored by default: it needs `swtpm` and `tpm2-tools` (Debian), which
//! `scripts/test.sh` installs and names with `CIEL_SWTPM`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use ciel_attestation::sim::{
    SimSnpReport, SimTdxQuote, SnpSim, TdxSim, az_snp_hcl_report, az_tdx_hcl_report,
};
use ciel_attestation::{Policy, UnixTime, tee_evidence};
use ciel_enclave::kbs_client::EvidenceSource;
use ciel_enclave::platform::VtpmSource;
use ciel_enclave::platform::vtpm::{AK_HANDLE, DEFAULT_IMDS, HCL_REPORT_INDEX};
use ciel_enclave::tpm::Transport;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;

/// A swtpm on a Unix socket in `dir`, killed on drop.
struct Swtpm {
    child: Child,
    socket: PathBuf,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Swtpm {
    fn start(binary: &str, dir: &Path) -> Swtpm {
        let socket = dir.join("tpm.sock");
        let child = Command::new(binary)
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", dir.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            // tpm2-tools' swtpm TCTI finds the control socket beside it.
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}.ctrl", socket.display()))
            .spawn()
            .unwrap_or_else(|e| panic!("{binary}: {e}"));
        let swtpm = Swtpm { child, socket };
        for _ in 0..100 {
            if swtpm.socket.exists() {
                return swtpm;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("swtpm did not create {}", swtpm.socket.display());
    }

    /// Runs a tpm2-tools command against this TPM; its stdout.
    fn tool(&self, dir: &Path, args: &[&str]) -> String {
        let out = Command::new(args[0])
            .args(&args[1..])
            .current_dir(dir)
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:path={}", self.socket.display()),
            )
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (tpm2-tools installed?)", args[0]));
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn transport(&self) -> Transport {
        Transport::Socket(self.socket.clone())
    }
}

/// Creates the attestation key as Azure's (RSA-2048, restricted signing,
/// RSASSA-SHA256) and persists it at 0x81000003: its modulus and exponent.
fn provision_ak(tpm: &Swtpm, dir: &Path) -> (Vec<u8>, Vec<u8>) {
    tpm.tool(
        dir,
        &[
            "tpm2_createprimary",
            "-C",
            "o",
            "-G",
            "rsa2048:rsassa-sha256:null",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign|noda",
            "-c",
            "ak.ctx",
            "-Q",
        ],
    );
    let handle = format!("{AK_HANDLE:#010x}");
    tpm.tool(
        dir,
        &[
            "tpm2_evictcontrol",
            "-C",
            "o",
            "-c",
            "ak.ctx",
            &handle,
            "-Q",
        ],
    );
    let public = tpm.tool(dir, &["tpm2_readpublic", "-c", &handle]);
    let field = |name: &str| {
        public
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap_or_else(|| panic!("tpm2_readpublic gave no {name}"))
            .to_string()
    };
    let n = hex::decode(field("rsa:")).unwrap();
    let e: u32 = field("exponent:").parse().unwrap();
    let e = e
        .to_be_bytes()
        .into_iter()
        .skip_while(|b| *b == 0)
        .collect();
    (n, e)
}

fn write_nv(tpm: &Swtpm, dir: &Path, data: &[u8]) {
    let index = format!("{HCL_REPORT_INDEX:#010x}");
    std::fs::write(dir.join("hcl.bin"), data).unwrap();
    tpm.tool(
        dir,
        &[
            "tpm2_nvdefine",
            &index,
            "-C",
            "o",
            "-s",
            &data.len().to_string(),
            "-a",
            "ownerread|ownerwrite|authread|authwrite",
        ],
    );
    tpm.tool(dir, &["tpm2_nvwrite", &index, "-C", "o", "-i", "hcl.bin"]);
}

fn swtpm_binary() -> Option<String> {
    std::env::var("CIEL_SWTPM").ok().filter(|s| !s.is_empty())
}

#[test]
#[ignore = "needs swtpm and tpm2-tools (scripts/test.sh sets CIEL_SWTPM)"]
fn vtpm_evidence_from_swtpm_verifies_for_its_nonce_and_pcrs() {
    let binary = swtpm_binary().expect("CIEL_SWTPM: the swtpm binary");
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(&binary, dir.path());
    // Before provisioning: no HCL report, refused by name.
    let err = VtpmSource::open(tpm.transport(), DEFAULT_IMDS).unwrap_err();
    assert!(err.contains("NV index 0x01400001"), "{err}");

    let now = UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    let snp = SnpSim::generate(UnixTime(now.0 - 86_400)).unwrap();
    let (n, e) = provision_ak(&tpm, dir.path());
    let hcl = az_snp_hcl_report(&snp, &SimSnpReport::default(), &n, &e).unwrap();
    write_nv(&tpm, dir.path(), &hcl);
    // Something measured into PCR 8 (where Kata's agent extends init-data).
    let measured = "ab".repeat(32);
    tpm.tool(
        dir.path(),
        &["tpm2_pcrextend", &format!("8:sha256={measured}")],
    );

    let source = VtpmSource::open(tpm.transport(), DEFAULT_IMDS).unwrap();
    assert_eq!(source.tee(), "az-snp-vtpm");
    let nonce: [u8; 64] = std::array::from_fn(|i| i as u8 ^ 0xa5);
    let mut doc = source.evidence(nonce).unwrap();
    assert!(doc["vcek"].is_null(), "no collateral service: no VCEK");
    // The verifier's collateral (here: the simulated VCEK and chain).
    doc["vcek"] = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        snp.vcek_der(),
    )
    .into();
    doc["cert_chain"] = String::from_utf8(snp.chain_pem()).unwrap().into();
    let decoded = tee_evidence::decode("az-snp-vtpm", &doc, None).unwrap();
    assert_eq!(decoded.bound_report_data(), nonce);
    let pcr8 = decoded.vtpm.as_ref().unwrap().pcrs[8].1;
    let expected_pcr8 = ring::digest::digest(
        &ring::digest::SHA256,
        &[
            [0u8; 32],
            <[u8; 32]>::try_from(hex::decode(&measured).unwrap()).unwrap(),
        ]
        .concat(),
    );
    assert_eq!(pcr8.as_slice(), expected_pcr8.as_ref());
    let policy = |nonce: &[u8; 64], extra: &str| {
        let mut p = Policy::from_toml(&format!(
            "report_data = \"{}\"\n{extra}",
            hex::encode(nonce)
        ))
        .unwrap();
        p.danger_trust_simulated_root(snp.root_sha256());
        p
    };
    let pcr_rule = format!("[vtpm]\npcrs = {{ 8 = [\"{}\"] }}", hex::encode(pcr8));
    let v = decoded.verify(&policy(&nonce, &pcr_rule), now);
    assert!(v.accepted, "{}", v.summary());
    assert!(v.simulated);
    // Another nonce, another PCR 8.
    let v = decoded.verify(&policy(&[0; 64], ""), now);
    assert_eq!(v.reason_codes(), ["report_data_mismatch"]);
    let other = format!("[vtpm]\npcrs = {{ 8 = [\"{}\"] }}", "00".repeat(32));
    assert_eq!(
        decoded.verify(&policy(&nonce, &other), now).reason_codes(),
        ["pcr_not_allowed"]
    );
    // Each evidence is fresh: another nonce, another quote.
    let again = source.collect(&[7; 64]).unwrap();
    assert_eq!(again.quoted().unwrap().0, vec![7; 64]);
    assert_eq!(again.hcl_report, hcl);

    // Without the attestation key: the quote fails, naming the key.
    tpm.tool(
        dir.path(),
        &[
            "tpm2_evictcontrol",
            "-C",
            "o",
            "-c",
            &format!("{AK_HANDLE:#010x}"),
            "-Q",
        ],
    );
    let err = source.evidence(nonce).unwrap_err();
    assert!(err.contains("attestation key 0x81000003"), "{err}");
}

#[test]
#[ignore = "needs swtpm and tpm2-tools (scripts/test.sh sets CIEL_SWTPM)"]
fn an_nv_index_that_holds_no_hcl_report_is_refused_at_open() {
    let binary = swtpm_binary().expect("CIEL_SWTPM: the swtpm binary");
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(&binary, dir.path());
    write_nv(&tpm, dir.path(), b"not an HCL report");
    let err = VtpmSource::open(tpm.transport(), DEFAULT_IMDS).unwrap_err();
    assert!(err.contains("HCLA"), "{err}");
    let missing = VtpmSource::open(
        Transport::Device("/nonexistent/tpmrm0".into()),
        DEFAULT_IMDS,
    )
    .unwrap_err();
    assert!(missing.contains("/nonexistent/tpmrm0"), "{missing}");
}

/// An imitation of Azure's metadata service: `POST /acc/tdquote` turns the
/// TDREPORT it is sent into a simulated TD quote with the same
/// `report_data`, counting requests.
async fn tdquote(
    axum::extract::State((tdx, count)): axum::extract::State<(
        Arc<TdxSim>,
        Arc<std::sync::atomic::AtomicUsize>,
    )>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> axum::Json<serde_json::Value> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let report = b64.decode(body["report"].as_str().unwrap()).unwrap();
    assert_eq!(report.len(), 1024, "a TDREPORT");
    let quote = tdx
        .quote(&SimTdxQuote {
            report_data: report[128..192].try_into().unwrap(),
            ..Default::default()
        })
        .unwrap();
    axum::Json(serde_json::json!({"quote": b64.encode(quote)}))
}

#[test]
#[ignore = "needs swtpm and tpm2-tools (scripts/test.sh sets CIEL_SWTPM)"]
fn tdx_vtpm_evidence_from_swtpm_and_the_metadata_service_verifies() {
    let binary = swtpm_binary().expect("CIEL_SWTPM: the swtpm binary");
    let dir = tempfile::tempdir().unwrap();
    let tpm = Swtpm::start(&binary, dir.path());
    let now = UnixTime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    );
    let tdx = Arc::new(TdxSim::generate(UnixTime(now.0 - 86_400)).unwrap());
    let (n, e) = provision_ak(&tpm, dir.path());
    write_nv(&tpm, dir.path(), &az_tdx_hcl_report(&n, &e).unwrap());
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let imds = rt.block_on(async {
        let router = axum::Router::new()
            .route("/acc/tdquote", axum::routing::post(tdquote))
            .with_state((tdx.clone(), count.clone()));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, router).await });
        format!("http://{addr}")
    });
    let err = VtpmSource::open(tpm.transport(), "https://169.254.169.254").unwrap_err();
    assert!(err.contains("http:// URL"), "{err}");
    let source = VtpmSource::open(tpm.transport(), &imds).unwrap();
    assert_eq!(source.tee(), "az-tdx-vtpm");
    let nonce = [0x3c; 64];
    let mut doc = source.evidence(nonce).unwrap();
    // The verifier's collateral for the TD quote.
    doc["collateral"] = tdx.collateral(now).unwrap().to_json();
    let decoded = tee_evidence::decode("az-tdx-vtpm", &doc, None).unwrap();
    let policy = |nonce: &[u8; 64]| {
        let mut p =
            Policy::from_toml(&format!("report_data = \"{}\"", hex::encode(nonce))).unwrap();
        p.danger_trust_simulated_root(tdx.root_sha256());
        p
    };
    let v = decoded.verify(&policy(&nonce), now);
    assert!(v.accepted, "{}", v.summary());
    assert_eq!(v.platform.to_string(), "tdx");
    assert_eq!(
        decoded.verify(&policy(&[0; 64]), now).reason_codes(),
        ["report_data_mismatch"]
    );
    // The TD quote binds the HCL report, not the nonce: made once.
    source.evidence([1; 64]).unwrap();
    assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A metadata service that is not there: named.
    let gone = VtpmSource::open(tpm.transport(), "http://127.0.0.1:9").unwrap();
    let err = gone.evidence(nonce).unwrap_err();
    assert!(err.contains("http://127.0.0.1:9/acc/tdquote"), "{err}");
}
