//! A simulated AMD SEV-SNP platform: ARK → ASK → VCEK with AMD's
//! algorithms, and reports in the real v3/v5 layout signed by the VCEK.

use super::certs::{Profile, build_pss, der_ia5, der_uint, ext, name, serial, validity};
use super::{SimError, StoredFiles, crypto, os_rng, pkcs8};
use crate::snp::report::{RawReport, SIGNED_LEN};
use crate::time::UnixTime;
use p384::ecdsa::signature::Signer;
use p384::elliptic_curve::Generate;
use rsa::pkcs8::DecodePrivateKey;
use sha2::Sha384;
use x509_cert::builder::CertificateBuilder;
use x509_cert::spki::SubjectPublicKeyInfo;
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromZeros, IntoBytes};

/// RSA modulus size of the simulated ARK and ASK (AMD's are 4096-bit).
const RSA_BITS: usize = 4096;
const ARK_DN: &str = "CN=ARK-Sim,O=ciel simulated platform (NOT A TEE)";
const ASK_DN: &str = "CN=SEV-Sim,O=ciel simulated platform (NOT A TEE)";
const VCEK_DN: &str = "CN=SEV-VCEK,O=ciel simulated platform (NOT A TEE)";
const ASVK_DN: &str = "CN=SEV-VLEK-Sim,O=ciel simulated platform (NOT A TEE)";
const VLEK_DN: &str = "CN=SEV-VLEK,O=ciel simulated platform (NOT A TEE)";
/// The simulated CPU: family 19h model 11h (a Genoa part), or with
/// [`SimSnpReport::turin`] family 1Ah (Turin, whose TCB layout differs).
const SIM_CPUID: (u8, u8, u8) = (0x19, 0x11, 0x01);
const SIM_CPUID_TURIN: (u8, u8, u8) = (0x1a, 0x02, 0x01);

/// The simulated hierarchy and the chip it belongs to.
pub struct SnpSim {
    ark_key: rsa::PrivateKey,
    ark: Vec<u8>,
    ask_key: rsa::PrivateKey,
    ask: Vec<u8>,
    asvk_key: rsa::PrivateKey,
    asvk: Vec<u8>,
    vcek_key: p384::ecdsa::SigningKey,
    vcek: Vec<u8>,
    chip_id: [u8; 64],
    tcb: u64,
}

impl std::fmt::Debug for SnpSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnpSim")
            .field("root_sha256", &hex::encode(self.root_sha256()))
            .finish_non_exhaustive()
    }
}

/// What to put in a simulated report.
#[derive(Debug, Clone)]
pub struct SimSnpReport {
    /// 3 (Genoa layout with CPUID) or 5 (with mitigation vectors).
    pub version: u32,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub policy: u64,
    pub vmpl: u32,
    /// Claim a Turin CPU (family 1Ah): Turin TCB layout and 8-byte chip ID.
    pub turin: bool,
    /// Signed by a VLEK (SIGNING_KEY = 1) rather than a VCEK.
    pub vlek: bool,
    /// The committed, current and launch TCBs (raw TCB_VERSIONs); `None`:
    /// the chip's TCB, which is also the reported one.
    pub committed_tcb: Option<u64>,
    pub current_tcb: Option<u64>,
    pub launch_tcb: Option<u64>,
}

impl Default for SimSnpReport {
    fn default() -> Self {
        SimSnpReport {
            version: 5,
            report_data: [0; 64],
            measurement: crate::x509::sha384(b"ciel simulated guest"),
            host_data: [0; 32],
            // SMT allowed, reserved bit 17 set (required), no debug, no migration agent.
            policy: 0x3_0000,
            vmpl: 0,
            turin: false,
            vlek: false,
            committed_tcb: None,
            current_tcb: None,
            launch_tcb: None,
        }
    }
}

/// The TCB the simulated chip reports (Milan/Genoa layout): bl 10, tee 0, snp 25, ucode 84.
pub const SIM_TCB: u64 = 0x5419_0000_0000_000a;

impl SnpSim {
    /// Generates a fresh hierarchy whose certificates are valid from a day
    /// before `now` for 25 years (ARK/ASK) and 7 years (VCEK), like AMD's.
    pub fn generate(now: UnixTime) -> Result<Self, SimError> {
        let mut rng = os_rng();
        let ark_key = rsa::PrivateKey::new(&mut rng, RSA_BITS).map_err(crypto)?;
        let ask_key = rsa::PrivateKey::new(&mut rng, RSA_BITS).map_err(crypto)?;
        let ark = issue_rsa(&ark_key, &ark_key, ARK_DN, ARK_DN, 1, now, 25)?;
        let ask = issue_rsa(&ask_key, &ark_key, ASK_DN, ARK_DN, 2, now, 25)?;
        let asvk_key = rsa::PrivateKey::new(&mut rng, RSA_BITS).map_err(crypto)?;
        let asvk = issue_rsa(&asvk_key, &ark_key, ASVK_DN, ARK_DN, 4, now, 25)?;
        let mut chip_id = [0u8; 64];
        getrandom::fill(&mut chip_id).map_err(crypto)?;
        let vcek_key = p384::ecdsa::SigningKey::generate_from_rng(&mut rng);
        let mut sim = SnpSim {
            ark_key,
            ark,
            ask_key,
            ask,
            asvk_key,
            asvk,
            vcek_key,
            vcek: Vec::new(),
            chip_id,
            tcb: SIM_TCB,
        };
        sim.vcek = sim.issue_vcek(&sim.vcek_key, SIM_TCB, &chip_id, now)?;
        Ok(sim)
    }

    /// Issues a VCEK for `tcb` and `chip_id` (Milan/Genoa layout), signed
    /// by the simulated ASK. Tests use it to make a VCEK that disagrees
    /// with a report.
    pub fn issue_vcek(
        &self,
        key: &p384::ecdsa::SigningKey,
        tcb: u64,
        chip_id: &[u8; 64],
        now: UnixTime,
    ) -> Result<Vec<u8>, SimError> {
        self.issue_leaf(
            key,
            &LeafSpec {
                tcb,
                chip_id: *chip_id,
                turin: false,
                vlek: false,
            },
            now,
        )
    }

    /// Issues a VCEK (signed by the ASK) or a VLEK (signed by the ASVK,
    /// with a CSP ID and no hwID), with the SPL extensions of the
    /// product's TCB layout.
    pub fn issue_leaf(
        &self,
        key: &p384::ecdsa::SigningKey,
        spec: &LeafSpec,
        now: UnixTime,
    ) -> Result<Vec<u8>, SimError> {
        let t = crate::snp::TcbVersion::decode(spec.tcb, spec.turin);
        let mut extensions = vec![
            ext("1.3.6.1.4.1.3704.1.1", der_uint(1))?,
            ext(
                "1.3.6.1.4.1.3704.1.2",
                der_ia5(if spec.turin { "Turin-B0" } else { "Sim-B0" }),
            )?,
            ext("1.3.6.1.4.1.3704.1.3.1", der_uint(t.bl))?,
            ext("1.3.6.1.4.1.3704.1.3.2", der_uint(t.tee))?,
            ext("1.3.6.1.4.1.3704.1.3.3", der_uint(t.snp))?,
            ext("1.3.6.1.4.1.3704.1.3.8", der_uint(t.ucode))?,
        ];
        if let Some(fmc) = t.fmc {
            extensions.push(ext("1.3.6.1.4.1.3704.1.3.9", der_uint(fmc))?);
        }
        let (subject, issuer, issuer_key) = if spec.vlek {
            extensions.push(ext("1.3.6.1.4.1.3704.1.5", der_ia5("ciel-sim-csp"))?);
            (VLEK_DN, ASVK_DN, &self.asvk_key)
        } else {
            let n = if spec.turin { 8 } else { 64 };
            extensions.push(ext(
                "1.3.6.1.4.1.3704.1.4",
                spec.chip_id.get(..n).unwrap_or_default().to_vec(),
            )?);
            (VCEK_DN, ASK_DN, &self.ask_key)
        };
        let spki = SubjectPublicKeyInfo::from_key(key.verifying_key()).map_err(crypto)?;
        let profile = Profile {
            subject: name(subject)?,
            issuer: name(issuer)?,
            extensions,
        };
        let builder =
            CertificateBuilder::new(profile, serial(3), validity(now, 7)?, spki).map_err(crypto)?;
        build_pss(
            builder,
            &rsa::pss::SigningKey::<Sha384>::new(issuer_key.clone()),
        )
    }

    /// The chip ID this simulated platform reports.
    pub fn chip_id(&self) -> [u8; 64] {
        self.chip_id
    }

    /// SHA-256 of the simulated ARK: what a policy names to trust it.
    pub fn root_sha256(&self) -> [u8; 32] {
        crate::x509::sha256(&self.ark)
    }

    pub fn ark_der(&self) -> &[u8] {
        &self.ark
    }

    pub fn vcek_der(&self) -> &[u8] {
        &self.vcek
    }

    pub fn ask_der(&self) -> &[u8] {
        &self.ask
    }

    /// The ARK's CRL (DER), valid from `this_update` to `next_update`,
    /// revoking the certificates with these serial numbers (ARK 1, ASK 2,
    /// VCEK 3, ASVK 4).
    pub fn crl(
        &self,
        this_update: UnixTime,
        next_update: UnixTime,
        revoked: &[u32],
    ) -> Result<Vec<u8>, SimError> {
        super::certs::crl_pss(ARK_DN, &self.ark_key, this_update, next_update, revoked)
    }

    /// PEM bundle of the ASK, ASVK and ARK, the `--cert-chain` for sim reports.
    pub fn chain_pem(&self) -> Vec<u8> {
        let blocks = [
            pem::Pem::new("CERTIFICATE", self.ask.clone()),
            pem::Pem::new("CERTIFICATE", self.asvk.clone()),
            pem::Pem::new("CERTIFICATE", self.ark.clone()),
        ];
        pem::encode_many(&blocks).into_bytes()
    }

    /// A report in the real layout, signed by the simulated VCEK.
    pub fn report(&self, req: &SimSnpReport) -> Result<Vec<u8>, SimError> {
        self.report_signed_by(req, &self.vcek_key, self.tcb)
    }

    /// A report like `template` but binding `report_data`.
    pub fn report_binding(
        &self,
        template: &SimSnpReport,
        report_data: [u8; 64],
    ) -> Result<Vec<u8>, SimError> {
        self.report(&SimSnpReport {
            report_data,
            ..template.clone()
        })
    }

    /// A report signed by `key` claiming `tcb` (for negative tests).
    pub fn report_signed_by(
        &self,
        req: &SimSnpReport,
        key: &p384::ecdsa::SigningKey,
        tcb: u64,
    ) -> Result<Vec<u8>, SimError> {
        if !matches!(req.version, 3 | 5) {
            return Err(SimError::Input(format!(
                "report version {} (3 or 5)",
                req.version
            )));
        }
        let mut r = RawReport::new_zeroed();
        r.version = U32::new(req.version);
        r.guest_svn = U32::new(0);
        r.policy = U64::new(req.policy);
        r.vmpl = U32::new(req.vmpl);
        r.signature_algo = U32::new(1);
        r.reported_tcb = U64::new(tcb);
        r.committed_tcb = U64::new(req.committed_tcb.unwrap_or(tcb));
        r.current_tcb = U64::new(req.current_tcb.unwrap_or(tcb));
        r.launch_tcb = U64::new(req.launch_tcb.unwrap_or(tcb));
        r.platform_info = U64::new(0x25);
        r.report_data = req.report_data;
        r.measurement = req.measurement;
        r.host_data = req.host_data;
        getrandom::fill(&mut r.report_id).map_err(crypto)?;
        (r.cpuid_fam_id, r.cpuid_mod_id, r.cpuid_step) = if req.turin {
            SIM_CPUID_TURIN
        } else {
            SIM_CPUID
        };
        r.chip_id = self.chip_id;
        if req.turin {
            // Turin chip IDs are 8 bytes; the rest of the field is zero.
            r.chip_id.iter_mut().skip(8).for_each(|b| *b = 0);
        }
        if req.vlek {
            r.key_info = U32::new(1 << 2);
        }
        (r.current_major, r.current_minor, r.current_build) = (1, 55, 43);
        (r.committed_major, r.committed_minor, r.committed_build) = (1, 55, 43);
        if req.version >= 5 {
            r.launch_mit_vector = U64::new(1);
            r.current_mit_vector = U64::new(1);
        }
        let signed = r
            .as_bytes()
            .get(..SIGNED_LEN)
            .ok_or_else(|| crypto("report layout"))?
            .to_vec();
        let sig: p384::ecdsa::Signature = key.sign(&signed);
        let (rb, sb) = sig.split_bytes();
        for (i, b) in rb.iter().rev().enumerate() {
            *r.signature_r.get_mut(i).ok_or_else(|| crypto("r"))? = *b;
        }
        for (i, b) in sb.iter().rev().enumerate() {
            *r.signature_s.get_mut(i).ok_or_else(|| crypto("s"))? = *b;
        }
        Ok(r.as_bytes().to_vec())
    }

    /// The files that persist the hierarchy (name, bytes). Keys are PKCS#8 DER.
    pub fn to_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>, SimError> {
        Ok(vec![
            ("ark.der", self.ark.clone()),
            ("ark.key.der", pkcs8(&self.ark_key)?),
            ("ask.der", self.ask.clone()),
            ("ask.key.der", pkcs8(&self.ask_key)?),
            ("asvk.der", self.asvk.clone()),
            ("asvk.key.der", pkcs8(&self.asvk_key)?),
            ("vcek.der", self.vcek.clone()),
            ("vcek.key.der", pkcs8(&self.vcek_key)?),
            ("chip_id", self.chip_id.to_vec()),
        ])
    }

    /// Loads a hierarchy saved by [`Self::to_files`]; `read` returns a file's bytes.
    pub fn from_files(read: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Self, SimError> {
        let files = StoredFiles(read);
        let rsa_key = |f: &str| files.key(f, rsa::PrivateKey::from_pkcs8_der);
        let chip_id: [u8; 64] =
            files
                .bytes("chip_id")?
                .try_into()
                .map_err(|_| SimError::Stored {
                    file: "chip_id".into(),
                    message: "not 64 bytes".into(),
                })?;
        Ok(SnpSim {
            ark_key: rsa_key("ark.key.der")?,
            ark: files.cert("ark.der")?,
            ask_key: rsa_key("ask.key.der")?,
            ask: files.cert("ask.der")?,
            asvk_key: rsa_key("asvk.key.der")?,
            asvk: files.cert("asvk.der")?,
            vcek_key: files.key(
                "vcek.key.der",
                <p384::ecdsa::SigningKey as p384::pkcs8::DecodePrivateKey>::from_pkcs8_der,
            )?,
            vcek: files.cert("vcek.der")?,
            chip_id,
            tcb: SIM_TCB,
        })
    }
}

/// What leaf certificate to issue.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub tcb: u64,
    pub chip_id: [u8; 64],
    pub turin: bool,
    pub vlek: bool,
}

fn issue_rsa(
    subject_key: &rsa::PrivateKey,
    issuer_key: &rsa::PrivateKey,
    subject: &str,
    issuer: &str,
    serial_no: u32,
    now: UnixTime,
    years: u64,
) -> Result<Vec<u8>, SimError> {
    let spki = SubjectPublicKeyInfo::from_key(&subject_key.to_public_key()).map_err(crypto)?;
    let profile = Profile {
        subject: name(subject)?,
        issuer: name(issuer)?,
        extensions: Vec::new(),
    };
    let builder = CertificateBuilder::new(profile, serial(serial_no), validity(now, years)?, spki)
        .map_err(crypto)?;
    build_pss(
        builder,
        &rsa::pss::SigningKey::<Sha384>::new(issuer_key.clone()),
    )
}
