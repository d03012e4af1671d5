//! A simulated NVIDIA GPU: an NVIDIA-style device identity hierarchy (root
//! CA, provisioner CA, one device certificate per GPU, and the attestation
//! certificate carrying the firmware's FWID, all ECDSA P-384), SPDM 1.1
//! `GET_MEASUREMENTS` request/response pairs in the real layout signed by
//! the attestation key, and OCSP responses for the device certificates as
//! NVIDIA's responder would give them. The verifier checks these with the
//! same code as a real H100's; only the root differs, and it is trusted
//! only when a policy names it.

use super::certs::{ext, ext_critical, issue_ecdsa};
use super::{SimError, StoredFiles, crypto, os_rng, pkcs8};
use crate::time::UnixTime;
use crate::x509::{sha256, sha384};
use p384::ecdsa::signature::Signer;
use p384::ecdsa::{DerSignature, Signature, SigningKey};
use p384::elliptic_curve::Generate;
use p384::pkcs8::DecodePrivateKey;

pub(super) const ROOT_DN: &str =
    "CN=ciel Sim NVIDIA Device Identity CA,O=ciel simulated platform (NOT A TEE)";
const ICA_DN: &str = "CN=ciel Sim GH100 Provisioner ICA,O=ciel simulated platform (NOT A TEE)";
/// The firmware digest the attestation certificate and the reports carry.
const SIM_FWID_INPUT: &[u8] = b"ciel simulated GH100 firmware";

/// What to put in one simulated report.
#[derive(Debug, Clone)]
pub struct SimGpuReport {
    pub nonce: [u8; 32],
    pub driver_version: String,
    /// The five VBIOS version bytes as the report carries them.
    pub vbios: [u8; 5],
    /// The protected-PCIe status opaque field (multi-GPU mode).
    pub protected_pcie: bool,
    /// Measurement values by index (1-based in the report).
    pub measurements: Vec<Vec<u8>>,
    /// Unsigned bytes after the signature, as recent drivers return.
    pub trailing: usize,
}

impl Default for SimGpuReport {
    fn default() -> Self {
        SimGpuReport {
            nonce: [0; 32],
            driver_version: "550.90.07".into(),
            vbios: [0x00, 0x9f, 0x00, 0x96, 0x01],
            protected_pcie: false,
            measurements: (0u8..10)
                .map(|i| sha384(&[b"ciel simulated GPU measurement ", &[i][..]].concat()).to_vec())
                .collect(),
            trailing: 0,
        }
    }
}

/// OCSP status to state for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimOcspStatus {
    Good,
    Revoked,
    Unknown,
}

/// A delegated OCSP responder: a certificate a CA issued for signing its
/// OCSP responses (RFC 6960 4.2.2.2), and its key.
pub struct SimOcspResponder {
    pub cert: Vec<u8>,
    key: SigningKey,
    /// The chain position whose certificates it answers for.
    position: usize,
}

impl std::fmt::Debug for SimOcspResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimOcspResponder")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// The simulated device identity hierarchy (root and provisioner CA).
pub struct NvidiaSim {
    pub(super) root_key: SigningKey,
    pub(super) root: Vec<u8>,
    ica_key: SigningKey,
    ica: Vec<u8>,
}

impl std::fmt::Debug for NvidiaSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NvidiaSim")
            .field("root_sha256", &hex::encode(self.root_sha256()))
            .finish_non_exhaustive()
    }
}

/// One simulated GPU: its device certificate and attestation key.
pub struct SimGpu {
    pub uuid: String,
    device: Vec<u8>,
    attestation_key: SigningKey,
    attestation: Vec<u8>,
    ica: Vec<u8>,
    root: Vec<u8>,
}

impl std::fmt::Debug for SimGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimGpu")
            .field("uuid", &self.uuid)
            .finish_non_exhaustive()
    }
}

fn ca_extensions() -> Result<Vec<x509_cert::ext::Extension>, SimError> {
    Ok(vec![
        ext_critical("2.5.29.19", vec![0x30, 0x03, 0x01, 0x01, 0xff])?,
        // keyCertSign | cRLSign
        ext_critical("2.5.29.15", vec![0x03, 0x02, 0x01, 0x06])?,
    ])
}

impl NvidiaSim {
    /// Generates the hierarchy; certificates valid from a day before `now`.
    pub fn generate(now: UnixTime) -> Result<Self, SimError> {
        let mut rng = os_rng();
        let root_key = SigningKey::generate_from_rng(&mut rng);
        let ica_key = SigningKey::generate_from_rng(&mut rng);
        let root = issue_ecdsa::<_, DerSignature>(
            &root_key,
            &root_key,
            ROOT_DN,
            ROOT_DN,
            1,
            ca_extensions()?,
            now,
            25,
        )?;
        let ica = issue_ecdsa::<_, DerSignature>(
            &ica_key,
            &root_key,
            ICA_DN,
            ROOT_DN,
            2,
            ca_extensions()?,
            now,
            15,
        )?;
        Ok(NvidiaSim {
            root_key,
            root,
            ica_key,
            ica,
        })
    }

    /// SHA-256 of the simulated root: what a policy names to trust it.
    pub fn root_sha256(&self) -> [u8; 32] {
        sha256(&self.root)
    }

    /// Issues GPU number `index`: a device certificate under the
    /// provisioner CA and an attestation certificate under it with the
    /// firmware's FWID, valid from a day before `now`.
    pub fn issue_gpu(&self, index: u32, now: UnixTime) -> Result<SimGpu, SimError> {
        let mut rng = os_rng();
        let device_key = SigningKey::generate_from_rng(&mut rng);
        let attestation_key = SigningKey::generate_from_rng(&mut rng);
        let id = sha256(device_key.verifying_key().to_sec1_point(false).as_bytes());
        let hex_id = hex::encode(id);
        let uuid = format!(
            "GPU-{}-{}-{}-{}-{}",
            hex_id.get(..8).unwrap_or_default(),
            hex_id.get(8..12).unwrap_or_default(),
            hex_id.get(12..16).unwrap_or_default(),
            hex_id.get(16..20).unwrap_or_default(),
            hex_id.get(20..32).unwrap_or_default()
        );
        let device_dn = format!(
            "CN=ciel Sim GH100 A01 FSP BROM {},O=ciel simulated platform (NOT A TEE)",
            hex_id.get(..16).unwrap_or_default()
        );
        let attestation_dn = format!(
            "CN=ciel Sim GH100 A01 GSP FMC LF {},O=ciel simulated platform (NOT A TEE)",
            hex_id.get(..16).unwrap_or_default()
        );
        let serial_base = index.saturating_mul(2).saturating_add(10);
        let device = issue_ecdsa::<_, DerSignature>(
            &device_key,
            &self.ica_key,
            &device_dn,
            ICA_DN,
            serial_base,
            ca_extensions()?,
            now,
            10,
        )?;
        let attestation = issue_ecdsa::<_, DerSignature>(
            &attestation_key,
            &device_key,
            &attestation_dn,
            &device_dn,
            serial_base.saturating_add(1),
            vec![
                // digitalSignature
                ext_critical("2.5.29.15", vec![0x03, 0x02, 0x07, 0x80])?,
                ext("2.23.133.5.4.1", fwid_extension(&sha384(SIM_FWID_INPUT)))?,
            ],
            now,
            10,
        )?;
        Ok(SimGpu {
            uuid,
            device,
            attestation_key,
            attestation,
            ica: self.ica.clone(),
            root: self.root.clone(),
        })
    }

    /// An OCSP response for `gpu`'s certificate number `position` in its
    /// chain (1: the device certificate, signed by the provisioner CA; 2:
    /// the provisioner CA, signed by the root), produced at `this_update`
    /// and valid until `next_update`.
    pub fn ocsp(
        &self,
        gpu: &SimGpu,
        position: usize,
        status: SimOcspStatus,
        this_update: UnixTime,
        next_update: UnixTime,
    ) -> Result<Vec<u8>, SimError> {
        let (cert, issuer, key) = self.position(gpu, position)?;
        let signer = super::ocsp::Signer { key, cert: None };
        super::ocsp::response(cert, issuer, &signer, status, this_update, next_update)
    }

    /// The same, signed by a delegated `responder` (as NVIDIA's OCSP
    /// service signs), which the response carries.
    pub fn ocsp_by(
        &self,
        gpu: &SimGpu,
        position: usize,
        responder: &SimOcspResponder,
        status: SimOcspStatus,
        this_update: UnixTime,
        next_update: UnixTime,
    ) -> Result<Vec<u8>, SimError> {
        let (cert, issuer, _) = self.position(gpu, position)?;
        let signer = super::ocsp::Signer {
            key: &responder.key,
            cert: Some(&responder.cert),
        };
        super::ocsp::response(cert, issuer, &signer, status, this_update, next_update)
    }

    /// A delegated OCSP responder for the certificates at chain `position`
    /// (1: issued by the provisioner CA, 2: by the root), valid for a year
    /// from a day before `from`; `ocsp_signing`: with the OCSP-signing
    /// purpose (without it, no verifier may accept its responses).
    pub fn ocsp_responder(
        &self,
        position: usize,
        ocsp_signing: bool,
        from: UnixTime,
    ) -> Result<SimOcspResponder, SimError> {
        let (issuer_key, issuer_dn, serial) = match position {
            1 => (&self.ica_key, ICA_DN, 901),
            2 => (&self.root_key, ROOT_DN, 902),
            other => {
                return Err(SimError::Input(format!(
                    "no OCSP responder for chain position {other}"
                )));
            }
        };
        let key = SigningKey::generate_from_rng(&mut os_rng());
        let mut extensions = vec![ext_critical("2.5.29.15", vec![0x03, 0x02, 0x07, 0x80])?];
        if ocsp_signing {
            // extKeyUsage: id-kp-OCSPSigning.
            extensions.push(ext(
                "2.5.29.37",
                vec![
                    0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09,
                ],
            )?);
        }
        let cert = issue_ecdsa::<_, DerSignature>(
            &key,
            issuer_key,
            &format!("CN=ciel Sim OCSP Responder {position},O=ciel simulated platform (NOT A TEE)"),
            issuer_dn,
            serial,
            extensions,
            from,
            1,
        )?;
        Ok(SimOcspResponder {
            cert,
            key,
            position,
        })
    }

    /// `gpu`'s certificate at chain `position`, its issuer and the issuer's key.
    fn position<'a>(
        &'a self,
        gpu: &'a SimGpu,
        position: usize,
    ) -> Result<(&'a [u8], &'a [u8], &'a SigningKey), SimError> {
        match position {
            1 => Ok((&gpu.device, &self.ica, &self.ica_key)),
            2 => Ok((&self.ica, &self.root, &self.root_key)),
            other => Err(SimError::Input(format!(
                "no OCSP for chain position {other}"
            ))),
        }
    }

    /// The files that persist the hierarchy (name, bytes). Keys are PKCS#8 DER.
    pub fn to_files(&self) -> Result<Vec<(&'static str, Vec<u8>)>, SimError> {
        Ok(vec![
            ("root.der", self.root.clone()),
            ("root.key.der", pkcs8(&self.root_key)?),
            ("ica.der", self.ica.clone()),
            ("ica.key.der", pkcs8(&self.ica_key)?),
        ])
    }

    /// Loads a hierarchy saved by [`Self::to_files`]; `read` returns a file's bytes.
    pub fn from_files(read: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Self, SimError> {
        let files = StoredFiles(read);
        let key = |f: &str| files.key(f, SigningKey::from_pkcs8_der);
        Ok(NvidiaSim {
            root_key: key("root.key.der")?,
            root: files.cert("root.der")?,
            ica_key: key("ica.key.der")?,
            ica: files.cert("ica.der")?,
        })
    }
}

impl SimGpu {
    /// The certificate chain as NVML returns it: PEM, attestation
    /// certificate first, root last.
    pub fn chain_pem(&self) -> Vec<u8> {
        let blocks: Vec<pem::Pem> = [&self.attestation, &self.device, &self.ica, &self.root]
            .iter()
            .map(|d| pem::Pem::new("CERTIFICATE", d.to_vec()))
            .collect();
        pem::encode_many(&blocks).into_bytes()
    }

    /// An SPDM 1.1 GET_MEASUREMENTS request and its signed response.
    pub fn report(&self, req: &SimGpuReport) -> Result<Vec<u8>, SimError> {
        let mut out = vec![0x11, 0xe0, 0x01, 0xff];
        out.extend_from_slice(&req.nonce);
        out.push(0); // slot
        let mut record = Vec::new();
        for (i, value) in req.measurements.iter().enumerate() {
            let index = u8::try_from(i.saturating_add(1)).map_err(crypto)?;
            let vlen = u16::try_from(value.len()).map_err(crypto)?;
            let size = vlen
                .checked_add(3)
                .ok_or_else(|| crypto("measurement size"))?;
            record.push(index);
            record.push(0x01); // DMTF measurement specification
            record.extend_from_slice(&size.to_le_bytes());
            record.push(0x01); // DMTF value type: mutable firmware, raw digest
            record.extend_from_slice(&vlen.to_le_bytes());
            record.extend_from_slice(value);
        }
        let blocks = u8::try_from(req.measurements.len()).map_err(crypto)?;
        let rec_len = u32::try_from(record.len()).map_err(crypto)?.to_le_bytes();
        out.extend_from_slice(&[0x11, 0x60, 0x00, 0x00, blocks]);
        out.extend_from_slice(rec_len.get(..3).unwrap_or_default());
        out.extend_from_slice(&record);
        let mut response_nonce = [0u8; 32];
        getrandom::fill(&mut response_nonce).map_err(crypto)?;
        out.extend_from_slice(&response_nonce);
        let mut opaque = Vec::new();
        let mut field = |ty: u16, v: &[u8]| -> Result<(), SimError> {
            opaque.extend_from_slice(&ty.to_le_bytes());
            opaque.extend_from_slice(&u16::try_from(v.len()).map_err(crypto)?.to_le_bytes());
            opaque.extend_from_slice(v);
            Ok(())
        };
        let mut driver = req.driver_version.as_bytes().to_vec();
        driver.push(0);
        field(3, &driver)?;
        let mut vbios = req.vbios.to_vec();
        vbios.extend_from_slice(&[0, 0, 0]);
        field(6, &vbios)?;
        field(15, b"GH100\0")?;
        field(17, b"ciel-sim\0")?;
        field(20, &sha384(SIM_FWID_INPUT))?;
        field(21, &[u8::from(req.protected_pcie)])?;
        out.extend_from_slice(&u16::try_from(opaque.len()).map_err(crypto)?.to_le_bytes());
        out.extend_from_slice(&opaque);
        let sig: Signature = self.attestation_key.sign(&out);
        out.extend_from_slice(&sig.to_bytes());
        out.extend(std::iter::repeat_n(0u8, req.trailing));
        Ok(out)
    }
}

/// The TCG DICE FWID extension: `SEQUENCE { SEQUENCE { sha384, digest } }`.
fn fwid_extension(digest: &[u8; 48]) -> Vec<u8> {
    let oid = [
        0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
    ];
    let mut fwid = oid.to_vec();
    fwid.extend_from_slice(&[0x04, 48]);
    fwid.extend_from_slice(digest);
    let mut inner = vec![0x30, u8::try_from(fwid.len()).unwrap_or(0)];
    inner.extend_from_slice(&fwid);
    let mut outer = vec![0x30, u8::try_from(inner.len()).unwrap_or(0)];
    outer.extend_from_slice(&inner);
    outer
}
