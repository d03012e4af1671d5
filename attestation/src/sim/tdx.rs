//! A simulated Intel TDX platform: an Intel-style PKI (root CA, PCK CA, PCK
//! certificate with the SGX extension, TCB signing certificate, CRLs, all
//! ECDSA P-256), a quoting enclave whose report binds the attestation key,
//! v4 quotes in the real layout, and collateral (TCB info, QE identity)
//! signed the way Intel's PCS signs it. The same `dcap-qvl` code that checks
//! real quotes checks these; only the root differs.

use super::certs::{der_uint, ext, ext_critical, issue_ecdsa, x509_time};
use super::{SimError, StoredFiles, crypto, os_rng, pkcs8};
use crate::collateral::DcapCollateral;
use crate::time::UnixTime;
use crate::x509::sha256;
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{DerSignature, Signature, SigningKey};
use p256::elliptic_curve::Generate;
use p256::pkcs8::DecodePrivateKey;
use x509_cert::builder::{Builder, CrlBuilder};
use x509_cert::certificate::Certificate;
use x509_cert::der::{Decode, Encode, asn1::Uint, oid::ObjectIdentifier};
use x509_cert::ext::pkix::CrlNumber;

const ROOT_DN: &str = "CN=ciel Sim SGX Root CA,O=ciel simulated platform (NOT A TEE)";
const PCK_CA_DN: &str = "CN=ciel Sim SGX PCK Processor CA,O=ciel simulated platform (NOT A TEE)";
const TCB_DN: &str = "CN=ciel Sim SGX TCB Signing,O=ciel simulated platform (NOT A TEE)";
const PCK_DN: &str = "CN=ciel Sim SGX PCK Certificate,O=ciel simulated platform (NOT A TEE)";

const FMSPC: [u8; 6] = [0x00, 0x80, 0x6f, 0x05, 0x00, 0x00];
const PCE_ID: [u8; 2] = [0, 0];
const CPU_SVN: [u8; 16] = [3, 3, 2, 2, 4, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0];
const PCE_SVN: u16 = 13;
/// TEE_TCB_SVN with module major version 0, so the base `tdxModule` applies.
const TEE_TCB_SVN: [u8; 16] = [3, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const QE_SVN: u16 = 4;
const QE_PROD_ID: u16 = 2;
/// QE ATTRIBUTES: INIT | MODE64BIT, not DEBUG.
const QE_ATTRIBUTES: [u8; 16] = [0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/// TD ATTRIBUTES with SEPT_VE_DISABLE (bit 28), as production TDs have.
pub const TD_ATTRIBUTES_DEFAULT: [u8; 8] = [0, 0, 0, 0x10, 0, 0, 0, 0];
const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];

/// What to put in a simulated TD quote.
#[derive(Debug, Clone)]
pub struct SimTdxQuote {
    pub report_data: [u8; 64],
    pub mrtd: [u8; 48],
    pub rtmr: [[u8; 48]; 4],
    pub mrconfigid: [u8; 48],
    pub mrowner: [u8; 48],
    pub td_attributes: [u8; 8],
}

impl Default for SimTdxQuote {
    fn default() -> Self {
        SimTdxQuote {
            report_data: [0; 64],
            mrtd: crate::x509::sha384(b"ciel simulated TD"),
            rtmr: [[0; 48]; 4],
            mrconfigid: [0; 48],
            mrowner: [0; 48],
            td_attributes: TD_ATTRIBUTES_DEFAULT,
        }
    }
}

/// The simulated Intel PKI and quoting enclave.
pub struct TdxSim {
    root_key: SigningKey,
    root: Vec<u8>,
    pck_ca_key: SigningKey,
    pck_ca: Vec<u8>,
    tcb_key: SigningKey,
    tcb: Vec<u8>,
    pck_key: SigningKey,
    pck: Vec<u8>,
    attestation_key: SigningKey,
}

impl std::fmt::Debug for TdxSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TdxSim")
            .field("root_sha256", &hex::encode(self.root_sha256()))
            .finish_non_exhaustive()
    }
}

impl TdxSim {
    /// Generates the PKI; certificates valid from a day before `now`.
    pub fn generate(now: UnixTime) -> Result<Self, SimError> {
        let mut rng = os_rng();
        let mut key = || SigningKey::generate_from_rng(&mut rng);
        let (root_key, pck_ca_key, tcb_key, pck_key, attestation_key) =
            (key(), key(), key(), key(), key());
        let ca = |k: &SigningKey| -> Result<Vec<x509_cert::ext::Extension>, SimError> {
            let _ = k;
            Ok(vec![
                ext_critical("2.5.29.19", vec![0x30, 0x03, 0x01, 0x01, 0xff])?,
                // keyCertSign | cRLSign
                ext_critical("2.5.29.15", vec![0x03, 0x02, 0x01, 0x06])?,
            ])
        };
        // digitalSignature | nonRepudiation
        let leaf_ku = || ext_critical("2.5.29.15", vec![0x03, 0x02, 0x06, 0xc0]);
        let root = issue_ecdsa::<_, DerSignature>(
            &root_key,
            &root_key,
            ROOT_DN,
            ROOT_DN,
            1,
            ca(&root_key)?,
            now,
            25,
        )?;
        let pck_ca = issue_ecdsa::<_, DerSignature>(
            &pck_ca_key,
            &root_key,
            PCK_CA_DN,
            ROOT_DN,
            2,
            ca(&pck_ca_key)?,
            now,
            15,
        )?;
        let tcb = issue_ecdsa::<_, DerSignature>(
            &tcb_key,
            &root_key,
            TCB_DN,
            ROOT_DN,
            3,
            vec![leaf_ku()?],
            now,
            7,
        )?;
        let pck = issue_ecdsa::<_, DerSignature>(
            &pck_key,
            &pck_ca_key,
            PCK_DN,
            PCK_CA_DN,
            4,
            vec![leaf_ku()?, sgx_extension()?],
            now,
            7,
        )?;
        Ok(TdxSim {
            root_key,
            root,
            pck_ca_key,
            pck_ca,
            tcb_key,
            tcb,
            pck_key,
            pck,
            attestation_key,
        })
    }

    /// SHA-256 of the simulated root: what a policy names to trust it.
    pub fn root_sha256(&self) -> [u8; 32] {
        sha256(&self.root)
    }

    pub fn root_der(&self) -> &[u8] {
        &self.root
    }

    /// A v4 TD quote in Intel's layout, signed by the attestation key, with
    /// the QE report (signed by the PCK key) and the PCK chain embedded.
    pub fn quote(&self, req: &SimTdxQuote) -> Result<Vec<u8>, SimError> {
        let mut q = Vec::with_capacity(5000);
        // Header (48 bytes).
        q.extend_from_slice(&4u16.to_le_bytes());
        q.extend_from_slice(&2u16.to_le_bytes()); // ECDSA-256 with P-256
        q.extend_from_slice(&0x81u32.to_le_bytes()); // TDX
        q.extend_from_slice(&QE_SVN.to_le_bytes());
        q.extend_from_slice(&PCE_SVN.to_le_bytes());
        q.extend_from_slice(&INTEL_QE_VENDOR_ID);
        q.extend_from_slice(&[0u8; 20]);
        // TD report 1.0 body (584 bytes).
        q.extend_from_slice(&TEE_TCB_SVN);
        q.extend_from_slice(&sha384_of(b"ciel simulated TDX module")); // MRSEAM
        q.extend_from_slice(&[0u8; 48]); // MRSIGNERSEAM (Intel's module: zero)
        q.extend_from_slice(&[0u8; 8]); // SEAMATTRIBUTES
        q.extend_from_slice(&req.td_attributes);
        q.extend_from_slice(&[0xe7, 0x02, 0x06, 0, 0, 0, 0, 0]); // XFAM
        q.extend_from_slice(&req.mrtd);
        q.extend_from_slice(&req.mrconfigid);
        q.extend_from_slice(&req.mrowner);
        q.extend_from_slice(&[0u8; 48]); // MROWNERCONFIG
        for r in &req.rtmr {
            q.extend_from_slice(r);
        }
        q.extend_from_slice(&req.report_data);
        let signed_len = q.len();
        if signed_len != 48 + 584 {
            return Err(crypto("quote layout"));
        }
        let quote_sig: Signature = self.attestation_key.sign(&q);
        let att_pub = self.attestation_key.verifying_key().to_sec1_point(false);
        let att_pub = att_pub
            .as_bytes()
            .get(1..65)
            .ok_or_else(|| crypto("attestation key"))?
            .to_vec();

        // QE report: report_data = SHA-256(attestation key || QE auth data) || 0^32.
        let qe_auth = [0x5au8; 32];
        let mut binding = att_pub.clone();
        binding.extend_from_slice(&qe_auth);
        let qe_report = qe_report(&sha256(&binding));
        let qe_sig: Signature = self.pck_key.sign(&qe_report);
        let chain = self.pck_chain_pem();

        let mut qe_cert_data = Vec::new();
        qe_cert_data.extend_from_slice(&qe_report);
        qe_cert_data.extend_from_slice(&qe_sig.to_bytes());
        qe_cert_data.extend_from_slice(&u16_len(qe_auth.len())?.to_le_bytes());
        qe_cert_data.extend_from_slice(&qe_auth);
        qe_cert_data.extend_from_slice(&5u16.to_le_bytes()); // PCK certificate chain
        qe_cert_data.extend_from_slice(&u32_len(chain.len())?.to_le_bytes());
        qe_cert_data.extend_from_slice(&chain);

        let mut sig_data = Vec::new();
        sig_data.extend_from_slice(&quote_sig.to_bytes());
        sig_data.extend_from_slice(&att_pub);
        sig_data.extend_from_slice(&6u16.to_le_bytes()); // QE report certification data
        sig_data.extend_from_slice(&u32_len(qe_cert_data.len())?.to_le_bytes());
        sig_data.extend_from_slice(&qe_cert_data);

        q.extend_from_slice(&u32_len(sig_data.len())?.to_le_bytes());
        q.extend_from_slice(&sig_data);
        Ok(q)
    }

    /// Collateral as a PCCS would serve it at `now`: TCB info and QE
    /// identity issued an hour ago, valid 30 days, and fresh CRLs.
    pub fn collateral(&self, now: UnixTime) -> Result<DcapCollateral, SimError> {
        let issued = UnixTime(now.secs().saturating_sub(3600));
        let next = UnixTime(now.secs().saturating_add(30 * 86_400));
        let tcb_info = tcb_info_json(issued, next);
        let qe_identity = qe_identity_json(issued, next);
        let tcb_sig: Signature = self.tcb_key.sign(tcb_info.as_bytes());
        let qe_sig: Signature = self.tcb_key.sign(qe_identity.as_bytes());
        let signing_chain = pem_chain(&[&self.tcb, &self.root]);
        Ok(DcapCollateral {
            pck_crl_issuer_chain: pem_chain(&[&self.pck_ca, &self.root]),
            root_ca_crl: crl(&self.root, &self.root_key, issued, next)?,
            pck_crl: crl(&self.pck_ca, &self.pck_ca_key, issued, next)?,
            tcb_info_issuer_chain: signing_chain.clone(),
            tcb_info,
            tcb_info_signature: tcb_sig.to_bytes().to_vec(),
            qe_identity_issuer_chain: signing_chain,
            qe_identity,
            qe_identity_signature: qe_sig.to_bytes().to_vec(),
        })
    }

    fn pck_chain_pem(&self) -> Vec<u8> {
        pem_chain(&[&self.pck, &self.pck_ca, &self.root]).into_bytes()
    }

    /// The files that persist the PKI (name, bytes). Keys are PKCS#8 DER.
    pub fn to_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>, SimError> {
        Ok(vec![
            ("root.der", self.root.clone()),
            ("root.key.der", pkcs8(&self.root_key)?),
            ("pck_ca.der", self.pck_ca.clone()),
            ("pck_ca.key.der", pkcs8(&self.pck_ca_key)?),
            ("tcb.der", self.tcb.clone()),
            ("tcb.key.der", pkcs8(&self.tcb_key)?),
            ("pck.der", self.pck.clone()),
            ("pck.key.der", pkcs8(&self.pck_key)?),
            ("attestation.key.der", pkcs8(&self.attestation_key)?),
        ])
    }

    /// Loads a PKI saved by [`Self::to_files`].
    pub fn from_files(read: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Self, SimError> {
        let files = StoredFiles(read);
        let key = |f: &str| files.key(f, SigningKey::from_pkcs8_der);
        let cert = |f: &str| files.cert(f);
        Ok(TdxSim {
            root_key: key("root.key.der")?,
            root: cert("root.der")?,
            pck_ca_key: key("pck_ca.key.der")?,
            pck_ca: cert("pck_ca.der")?,
            tcb_key: key("tcb.key.der")?,
            tcb: cert("tcb.der")?,
            pck_key: key("pck.key.der")?,
            pck: cert("pck.der")?,
            attestation_key: key("attestation.key.der")?,
        })
    }
}

fn sha384_of(b: &[u8]) -> [u8; 48] {
    crate::x509::sha384(b)
}

fn u16_len(n: usize) -> Result<u16, SimError> {
    u16::try_from(n).map_err(crypto)
}

fn u32_len(n: usize) -> Result<u32, SimError> {
    u32::try_from(n).map_err(crypto)
}

/// The quoting enclave's SGX REPORT (384 bytes) with the binding hash.
fn qe_report(binding: &[u8; 32]) -> Vec<u8> {
    let mut r = Vec::with_capacity(384);
    r.extend_from_slice(&CPU_SVN);
    r.extend_from_slice(&0u32.to_le_bytes()); // MISCSELECT
    r.extend_from_slice(&[0u8; 28]);
    r.extend_from_slice(&QE_ATTRIBUTES);
    r.extend_from_slice(&sha256(b"ciel simulated quoting enclave")); // MRENCLAVE
    r.extend_from_slice(&[0u8; 32]);
    r.extend_from_slice(&qe_mrsigner());
    r.extend_from_slice(&[0u8; 96]);
    r.extend_from_slice(&QE_PROD_ID.to_le_bytes());
    r.extend_from_slice(&QE_SVN.to_le_bytes());
    r.extend_from_slice(&[0u8; 60]);
    r.extend_from_slice(binding);
    r.extend_from_slice(&[0u8; 32]);
    r
}

fn qe_mrsigner() -> [u8; 32] {
    sha256(b"ciel simulated QE signer")
}

fn svn_list(svns: &[u8]) -> String {
    let items: Vec<String> = svns.iter().map(|s| format!("{{\"svn\":{s}}}")).collect();
    format!("[{}]", items.join(","))
}

/// TCB info v3 for TDX with one level, met exactly by the simulated platform.
fn tcb_info_json(issued: UnixTime, next: UnixTime) -> String {
    format!(
        concat!(
            "{{\"id\":\"TDX\",\"version\":3,\"issueDate\":\"{}\",\"nextUpdate\":\"{}\",",
            "\"fmspc\":\"{}\",\"pceId\":\"{}\",\"tcbType\":0,\"tcbEvaluationDataNumber\":17,",
            "\"tdxModule\":{{\"mrsigner\":\"{}\",\"attributes\":\"0000000000000000\",\"attributesMask\":\"FFFFFFFFFFFFFFFF\"}},",
            "\"tdxModuleIdentities\":[],",
            "\"tcbLevels\":[{{\"tcb\":{{\"sgxtcbcomponents\":{},\"pcesvn\":{},\"tdxtcbcomponents\":{}}},",
            "\"tcbDate\":\"2024-03-13T00:00:00Z\",\"tcbStatus\":\"UpToDate\"}}]}}"
        ),
        issued,
        next,
        hex::encode_upper(FMSPC),
        hex::encode_upper(PCE_ID),
        "0".repeat(96),
        svn_list(&CPU_SVN),
        PCE_SVN,
        svn_list(&TEE_TCB_SVN),
    )
}

/// QE identity v2 for the TD quoting enclave.
fn qe_identity_json(issued: UnixTime, next: UnixTime) -> String {
    format!(
        concat!(
            "{{\"id\":\"TD_QE\",\"version\":2,\"issueDate\":\"{}\",\"nextUpdate\":\"{}\",\"tcbEvaluationDataNumber\":17,",
            "\"miscselect\":\"00000000\",\"miscselectMask\":\"FFFFFFFF\",",
            "\"attributes\":\"11000000000000000000000000000000\",\"attributesMask\":\"FBFFFFFFFFFFFFFF0000000000000000\",",
            "\"mrsigner\":\"{}\",\"isvprodid\":{},",
            "\"tcbLevels\":[{{\"tcb\":{{\"isvsvn\":{}}},\"tcbDate\":\"2024-03-13T00:00:00Z\",\"tcbStatus\":\"UpToDate\"}}]}}"
        ),
        issued,
        next,
        hex::encode_upper(qe_mrsigner()),
        QE_PROD_ID,
        QE_SVN,
    )
}

fn pem_chain(ders: &[&Vec<u8>]) -> String {
    let blocks: Vec<pem::Pem> = ders
        .iter()
        .map(|d| pem::Pem::new("CERTIFICATE", d.to_vec()))
        .collect();
    pem::encode_many(&blocks)
}

/// An empty CRL (v2, with CRL number and AKI) issued by `issuer`.
fn crl(
    issuer_der: &[u8],
    key: &SigningKey,
    this: UnixTime,
    next: UnixTime,
) -> Result<Vec<u8>, SimError> {
    let issuer = Certificate::from_der(issuer_der).map_err(crypto)?;
    let number = CrlNumber(Uint::new(&[1]).map_err(crypto)?);
    let builder = CrlBuilder::<x509_cert::certificate::Rfc5280>::new_with_this_update(
        &issuer,
        number,
        x509_time(this)?,
    )
    .map_err(crypto)?
    .with_next_update(Some(x509_time(next)?));
    let list = builder.build::<_, DerSignature>(key).map_err(crypto)?;
    list.to_der().map_err(crypto)
}

// --- the Intel SGX extension of PCK certificates (1.2.840.113741.1.13.1) ---

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    // Short form below 128 bytes, else the two-byte long form; the
    // extension is far below 64 KiB.
    let mut out = vec![tag];
    match u8::try_from(content.len()) {
        Ok(n) if n < 0x80 => out.push(n),
        _ => {
            let n = u16::try_from(content.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes();
            out.extend_from_slice(&[0x82, n[0], n[1]]);
        }
    }
    out.extend_from_slice(content);
    out
}

fn oid_der(s: &str) -> Result<Vec<u8>, SimError> {
    let oid = ObjectIdentifier::new(s).map_err(crypto)?;
    Ok(tlv(0x06, oid.as_bytes()))
}

fn entry(oid: &str, value: Vec<u8>) -> Result<Vec<u8>, SimError> {
    let mut c = oid_der(oid)?;
    c.extend_from_slice(&value);
    Ok(tlv(0x30, &c))
}

#[allow(clippy::arithmetic_side_effects, clippy::cast_possible_truncation)]
fn sgx_extension() -> Result<x509_cert::ext::Extension, SimError> {
    const BASE: &str = "1.2.840.113741.1.13.1";
    let mut tcb = Vec::new();
    for (i, svn) in CPU_SVN.iter().enumerate() {
        tcb.extend_from_slice(&entry(&format!("{BASE}.2.{}", i + 1), der_uint(*svn))?);
    }
    let pce = PCE_SVN.to_be_bytes();
    tcb.extend_from_slice(&entry(&format!("{BASE}.2.17"), tlv(0x02, &pce[1..]))?);
    tcb.extend_from_slice(&entry(&format!("{BASE}.2.18"), tlv(0x04, &CPU_SVN))?);
    let mut ppid = [0u8; 16];
    getrandom::fill(&mut ppid).map_err(crypto)?;
    let mut body = Vec::new();
    body.extend_from_slice(&entry(&format!("{BASE}.1"), tlv(0x04, &ppid))?);
    body.extend_from_slice(&entry(&format!("{BASE}.2"), tlv(0x30, &tcb))?);
    body.extend_from_slice(&entry(&format!("{BASE}.3"), tlv(0x04, &PCE_ID))?);
    body.extend_from_slice(&entry(&format!("{BASE}.4"), tlv(0x04, &FMSPC))?);
    body.extend_from_slice(&entry(&format!("{BASE}.5"), tlv(0x0a, &[0]))?);
    ext(BASE, tlv(0x30, &body))
}
