//! Azure confidential VMs' vTPM evidence (Trustee's `az-snp-vtpm`) at the
//! broker, made by a simulated vTPM for each session's nonce: released to
//! genuine evidence; a quote for another session, a PCR the resource's
//! policy does not allow, init-data that PCR 8 does not bind: each refused
//! by name; the quoted PCRs in the token, where Trustee's Rego policies
//! read them.

use super::*;
use ciel_attestation::sim::AzVtpmSim;
use ciel_protocol::initdata::{InitData, InitDataDocument};

const INIT_DATA: &str = "version = \"0.1.0\"\nalgorithm = \"sha256\"\n\n[data]\n\"ciel.toml\" = 'kbs = \"https://kbs.ciel.svc:8443\"'\n";

fn vtpm() -> &'static AzVtpmSim {
    static VTPM: OnceLock<AzVtpmSim> = OnceLock::new();
    VTPM.get_or_init(|| AzVtpmSim::generate().unwrap())
}

/// The PCRs of the simulated VM: PCR 8 holds `init_data`'s digest
/// extended into zeros, as Kata's Azure images measure it.
fn pcrs(init_data: &InitData) -> [[u8; 32]; 24] {
    let mut pcrs: [[u8; 32]; 24] = std::array::from_fn(|i| [i as u8; 32]);
    let mut input = [0u8; 64];
    input[32..].copy_from_slice(init_data.digest());
    pcrs[8].copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &input).as_ref());
    pcrs
}

/// A simulated Azure CVM: its quotes carry the binding (the runtime data's
/// SHA-384, as Trustee's attester passes it), with the simulated AMD chain
/// beside (Azure's chain to AMD's pinned roots).
struct AzGuest {
    init_data: InitData,
    /// `az-tdx-vtpm`: the HCL variable data bound by a TD quote, whose
    /// DCAP collateral the evidence carries.
    tdx: bool,
}

impl AzGuest {
    fn new() -> Self {
        AzGuest {
            init_data: InitData::parse(INIT_DATA).unwrap(),
            tdx: false,
        }
    }
}

impl EvidenceSource for AzGuest {
    fn tee(&self) -> &str {
        if self.tdx {
            "az-tdx-vtpm"
        } else {
            "az-snp-vtpm"
        }
    }
    fn evidence(&self, report_data: [u8; 64]) -> Result<serde_json::Value, String> {
        if self.tdx {
            let e = vtpm()
                .evidence_tdx(
                    tdx_sim(),
                    &Default::default(),
                    &report_data[..48],
                    &pcrs(&self.init_data),
                )
                .map_err(|e| e.to_string())?;
            let mut json = e.to_json();
            json["collateral"] = tdx_sim()
                .collateral(ciel_attestation::UnixTime(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs(),
                ))
                .map_err(|e| e.to_string())?
                .to_json();
            return Ok(json);
        }
        let e = vtpm()
            .evidence(
                sim(),
                &SimSnpReport::default(),
                &report_data[..48],
                &pcrs(&self.init_data),
            )
            .map_err(|e| e.to_string())?;
        let mut json = e.to_json();
        json["cert_chain"] = String::from_utf8(sim().chain_pem()).unwrap().into();
        Ok(json)
    }
}

#[test]
fn azure_vtpm_evidence_gets_its_key_and_each_fault_is_refused_by_name() {
    let guest = AzGuest::new();
    let b = released_by_pcr8_only(&guest);
    assert!(b.audit().contains("pcr_not_allowed"), "{}", b.audit());
    // A guest whose evidence has no vTPM quote (a plain SNP report) does
    // not meet a resource's PCR rules.
    let e = client(&b)
        .fetch_resource("default/model-key/az", &genuine_guest())
        .unwrap_err();
    assert_eq!(refused_kind(e), "urn:ciel:kbs:policy-denied");

    // By hand: evidence whose quote carries another session's binding.
    let tee = TeeKeyPair::generate();
    let runtime_for = |nonce: String| RuntimeData {
        nonce,
        tee_pubkey: tee.public_jwk(),
    };
    let (cookie, nonce) = auth_as(&b.base, "az-snp-vtpm").unwrap();
    let (_, other_nonce) = auth_as(&b.base, "az-snp-vtpm").unwrap();
    let other = guest
        .evidence(binding::report_data(&runtime_for(other_nonce)).unwrap())
        .unwrap();
    let (status, body) = attest(&b.base, Some(&cookie), &runtime_for(nonce), other);
    assert_ne!(status, 200, "{body}");
    assert!(b.audit().contains("binding_mismatch"), "{}", b.audit());

    // Init-data: bound by PCR 8 when it is the VM's; another is refused.
    let attest_with = |init: &InitData| {
        let (cookie, nonce) = auth_as(&b.base, "az-snp-vtpm").unwrap();
        let runtime = runtime_for(nonce);
        let ev = guest
            .evidence(binding::report_data(&runtime).unwrap())
            .unwrap();
        let body = serde_json::json!({
            "runtime-data": runtime,
            "tee-evidence": ev,
            "init-data": InitDataDocument::toml(init),
        });
        let mut r = agent()
            .post(&format!("{}/kbs/v0/attest", b.base))
            .header("cookie", &cookie)
            .send_json(body)
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    };
    let (status, body) = attest_with(&guest.init_data);
    assert_eq!(status, 200, "{body}");
    let other_init = InitData::parse(&INIT_DATA.replace("8443", "9443")).unwrap();
    let (status, body) = attest_with(&other_init);
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("PCR 8"), "{body}");
    assert!(b.audit().contains("init_data_mismatch"), "{}", b.audit());
}

/// Azure's TDX vTPM evidence: released where the resource's PCR rule
/// holds, with the token naming the platform `az-tdx-vtpm`; another PCR
/// value refused.
#[test]
fn azure_tdx_vtpm_evidence_gets_its_key() {
    let guest = AzGuest {
        tdx: true,
        ..AzGuest::new()
    };
    let b = released_by_pcr8_only(&guest);
    assert!(b.audit().contains("az-tdx-vtpm"), "{}", b.audit());
}

/// A broker with a resource for `guest`'s PCR 8 and one for another
/// value: the first released to `guest`, the second refused.
fn released_by_pcr8_only(guest: &AzGuest) -> Broker {
    let pcr8 = hex::encode(pcrs(&guest.init_data)[8]);
    let b = start(
        300,
        true,
        &[
            (
                "default/model-key/az",
                format!("[vtpm]\npcrs = {{ 8 = [\"{pcr8}\"] }}\n"),
            ),
            (
                "default/model-key/other-pcr",
                format!("[vtpm]\npcrs = {{ 8 = [\"{}\"] }}\n", "00".repeat(32)),
            ),
        ],
    );
    let key = client(&b)
        .fetch_resource("default/model-key/az", guest)
        .unwrap();
    assert_eq!(key.as_slice(), &KEY);
    let e = client(&b)
        .fetch_resource("default/model-key/other-pcr", guest)
        .unwrap_err();
    assert_eq!(refused_kind(e), "urn:ciel:kbs:policy-denied");
    b
}

/// The token carries the quoted PCRs under `az-snp-vtpm.tpm.pcrNN`, as
/// Trustee's Azure verifier's claims do, and a Rego resource policy
/// decides over them.
#[test]
fn a_rego_policy_reads_the_quoted_pcrs_from_the_token() {
    let guest = AzGuest::new();
    let pcr8 = hex::encode(pcrs(&guest.init_data)[8]);
    let rego = |want: &str| {
        format!(
            "package policy\n\nimport rego.v1\n\ndefault allow := false\n\n\
             allow if {{\n    input.submods.cpu0[\"ear.veraison.annotated-evidence\"][\"az-snp-vtpm\"].tpm.pcr08 == \"{want}\"\n}}\n"
        )
    };
    let resources = [
        (
            "default/model-key/az",
            Policies {
                toml: None,
                rego: Some(rego(&pcr8)),
            },
        ),
        (
            "default/model-key/other",
            Policies {
                toml: None,
                rego: Some(rego(&"00".repeat(32))),
            },
        ),
    ];
    let b = start_with_policies(300, true, &resources, "", |c| {
        AuditLog::open(files(c).1).unwrap()
    });
    let key = client(&b)
        .fetch_resource("default/model-key/az", &guest)
        .unwrap();
    assert_eq!(key.as_slice(), &KEY);
    let e = client(&b)
        .fetch_resource("default/model-key/other", &guest)
        .unwrap_err();
    assert_eq!(refused_kind(e), "urn:ciel:kbs:policy-denied");
}
