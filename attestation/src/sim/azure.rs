//! A simulated Azure confidential VM's vTPM evidence (Trustee's
//! `az-snp-vtpm` and `az-tdx-vtpm` shapes, [`crate::azure`]): the
//! paravisor's HCL report — a simulated SEV-SNP report at VMPL 0, or a
//! TDREPORT beside a simulated TD quote, whose `report_data` starts with
//! SHA-256 of the variable data, which names the vTPM's attestation key —
//! and a TPM quote that key signs over a nonce and the PCRs, in the real
//! byte layouts. For running the vTPM path (key broker, verification)
//! with fresh nonces where there is no Azure VM; trusted only where a
//! policy names the simulated root, like every simulated report.

use super::{SimError, SimSnpReport, SimTdxQuote, SnpSim, TdxSim, crypto, os_rng};
use crate::azure::{AzVtpm, HclHardware};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use rsa::pkcs8::EncodePrivateKey;
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

/// The attestation key's size (Azure's vTPM AK is RSA 2048).
const AK_BITS: usize = 2048;

/// A simulated vTPM: its attestation key.
pub struct AzVtpmSim {
    ak: rsa::PrivateKey,
}

impl std::fmt::Debug for AzVtpmSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AzVtpmSim { ak: RSA-2048 }")
    }
}

impl AzVtpmSim {
    /// A vTPM with a fresh attestation key.
    pub fn generate() -> Result<Self, SimError> {
        let ak = rsa::PrivateKey::new(&mut os_rng(), AK_BITS).map_err(crypto)?;
        Ok(AzVtpmSim { ak })
    }

    /// The HCL variable data naming this vTPM's attestation key
    /// ([`var_data_for`]).
    pub fn var_data(&self) -> Vec<u8> {
        let public = self.ak.to_public_key();
        var_data_for(&public.n_bytes(), &public.e_bytes())
    }

    /// Evidence for `nonce` (the quote's `extraData`, at most 64 bytes)
    /// over `pcrs` (all 24 SHA-256 PCRs quoted), the HCL report's SNP
    /// report made from `template` (its `report_data` and VMPL replaced:
    /// SHA-256 of the variable data, VMPL 0) and signed by `snp`'s VCEK,
    /// which the evidence carries.
    pub fn evidence(
        &self,
        snp: &SnpSim,
        template: &SimSnpReport,
        nonce: &[u8],
        pcrs: &[[u8; 32]; 24],
    ) -> Result<AzVtpm, SimError> {
        let public = self.ak.to_public_key();
        let hcl_report = az_snp_hcl_report(snp, template, &public.n_bytes(), &public.e_bytes())?;
        let mut e = self.quoted(hcl_report, nonce, pcrs)?;
        e.vcek = Some(snp.vcek_der().to_vec());
        Ok(e)
    }

    /// `az-tdx-vtpm` evidence for `nonce` over `pcrs`: the HCL report holds
    /// a TDREPORT-shaped area (its type and `report_data`; verifiers do not
    /// read it, a real one is MAC'd for the local platform only) and the TD
    /// quote beside it is made from `template` with its `report_data`
    /// replaced by SHA-256 of the variable data, signed by `tdx`'s quoting
    /// enclave.
    pub fn evidence_tdx(
        &self,
        tdx: &TdxSim,
        template: &SimTdxQuote,
        nonce: &[u8],
        pcrs: &[[u8; 32]; 24],
    ) -> Result<AzVtpm, SimError> {
        let public = self.ak.to_public_key();
        let hcl_report = az_tdx_hcl_report(&public.n_bytes(), &public.e_bytes())?;
        let td_quote = tdx.quote(&SimTdxQuote {
            report_data: binding(&self.var_data()),
            ..template.clone()
        })?;
        let mut e = self.quoted(hcl_report, nonce, pcrs)?;
        e.td_quote = Some(td_quote);
        Ok(e)
    }

    /// Evidence v1 of `hcl_report` and a `TPM2_Quote` by the attestation
    /// key over `nonce` and `pcrs` (no VCEK, no TD quote yet).
    fn quoted(
        &self,
        hcl_report: Vec<u8>,
        nonce: &[u8],
        pcrs: &[[u8; 32]; 24],
    ) -> Result<AzVtpm, SimError> {
        if nonce.len() > 64 {
            return Err(SimError::Input(format!(
                "a quote nonce of {} bytes (at most 64)",
                nonce.len()
            )));
        }
        let message = quote_message(nonce, pcrs);
        Ok(AzVtpm {
            version: 1,
            hcl_report,
            quote_signature: self.sign(&message)?,
            quote_message: message,
            pcrs: pcrs.to_vec(),
            vcek: None,
            td_quote: None,
        })
    }
}

/// The HCL variable data: a JSON document naming the attestation key
/// (`HCLAkPub`, RSA, base64url modulus `n` and exponent `e`), as Azure's
/// paravisor writes it.
pub fn var_data_for(n: &[u8], e: &[u8]) -> Vec<u8> {
    serde_json::json!({
        "keys": [{
            "kid": "HCLAkPub",
            "key_ops": ["sign"],
            "kty": "RSA",
            "e": B64URL.encode(e),
            "n": B64URL.encode(n),
        }],
        "vm-configuration": {"secure-boot": true, "tpm-enabled": true},
    })
    .to_string()
    .into_bytes()
}

/// A simulated paravisor's HCL report for a vTPM whose attestation key is
/// `(n, e)` (a real TPM's, such as swtpm's): an SNP report made from
/// `template` at VMPL 0, signed by `snp`'s VCEK, binding the variable data
/// that names the key. What a vTPM's NV index 0x01400001 holds.
pub fn az_snp_hcl_report(
    snp: &SnpSim,
    template: &SimSnpReport,
    n: &[u8],
    e: &[u8],
) -> Result<Vec<u8>, SimError> {
    let var_data = var_data_for(n, e);
    let report = snp.report(&SimSnpReport {
        report_data: binding(&var_data),
        vmpl: 0,
        ..template.clone()
    })?;
    hcl_report(HclHardware::Snp, &report, &var_data)
}

/// A simulated paravisor's HCL report on TDX for a vTPM whose attestation
/// key is `(n, e)`: a TDREPORT-shaped area (REPORTTYPE 0x81 at 0, the
/// `report_data` binding the variable data at 128, 1024 bytes; real ones
/// are MAC'd for their platform, so no verifier reads it) — what a TD
/// quote is made from, by the host ([`TdxSim::quote`] with the same
/// `report_data` stands in).
pub fn az_tdx_hcl_report(n: &[u8], e: &[u8]) -> Result<Vec<u8>, SimError> {
    let var_data = var_data_for(n, e);
    let mut td_report = vec![0x81];
    td_report.resize(128, 0);
    td_report.extend_from_slice(&binding(&var_data));
    td_report.resize(1024, 0);
    hcl_report(HclHardware::Tdx, &td_report, &var_data)
}

/// The `report_data` that binds `var_data`: its SHA-256, zero-padded.
fn binding(var_data: &[u8]) -> [u8; 64] {
    let mut report_data = [0u8; 64];
    report_data[..32].copy_from_slice(&Sha256::digest(var_data));
    report_data
}

impl AzVtpmSim {
    /// RSASSA-PKCS1-v1_5 with SHA-256 by the attestation key (what
    /// `TPM2_Quote` makes with Azure's AK).
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SimError> {
        let der = self.ak.to_pkcs8_der().map_err(crypto)?;
        let key = ring::signature::RsaKeyPair::from_pkcs8(der.as_bytes()).map_err(crypto)?;
        let mut signature = vec![0u8; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            message,
            &mut signature,
        )
        .map_err(crypto)?;
        Ok(signature)
    }
}

/// An HCL report: `HCLA` and the rest of its 32-byte header, the hardware
/// report (zero-padded to its 1184-byte area), then the IGVM request data
/// (data size, version, report type, hash type 1 = SHA-256, variable data
/// size: little-endian u32s) and the variable data.
fn hcl_report(hardware: HclHardware, report: &[u8], var_data: &[u8]) -> Result<Vec<u8>, SimError> {
    let var_len = u32::try_from(var_data.len()).map_err(crypto)?;
    let mut b = Vec::new();
    b.extend_from_slice(b"HCLA");
    b.extend_from_slice(&2u32.to_le_bytes()); // header version
    b.extend_from_slice(&u32::try_from(report.len()).map_err(crypto)?.to_le_bytes());
    b.extend_from_slice(&[0u8; 20]);
    let mut area = report.to_vec();
    area.resize(crate::azure::hcl::HARDWARE_AREA.max(report.len()), 0);
    b.extend_from_slice(&area);
    for field in [
        var_len.saturating_add(20),
        1,
        hardware.report_type(),
        1,
        var_len,
    ] {
        b.extend_from_slice(&field.to_le_bytes());
    }
    b.extend_from_slice(var_data);
    Ok(b)
}

/// A `TPMS_ATTEST` of type quote (big-endian, as the TPM marshals it): the
/// nonce as `extraData`, all 24 SHA-256 PCRs selected, and their digest.
fn quote_message(nonce: &[u8], pcrs: &[[u8; 32]; 24]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&0xff54_4347u32.to_be_bytes()); // TPM_GENERATED_VALUE
    m.extend_from_slice(&0x8018u16.to_be_bytes()); // TPM_ST_ATTEST_QUOTE
    let signer_name = [0u8; 34]; // qualifiedSigner: not read by verifiers
    for sized in [&signer_name[..], nonce] {
        // `nonce` is at most 64 bytes (checked) and the name 34.
        m.extend_from_slice(&(sized.len() as u16).to_be_bytes());
        m.extend_from_slice(sized);
    }
    m.extend_from_slice(&[0u8; 17]); // clockInfo
    m.extend_from_slice(&[0u8; 8]); // firmwareVersion
    m.extend_from_slice(&1u32.to_be_bytes()); // one PCR selection
    m.extend_from_slice(&0x000bu16.to_be_bytes()); // SHA-256
    m.extend_from_slice(&[3, 0xff, 0xff, 0xff]); // PCRs 0..=23
    let digest = Sha256::digest(pcrs.concat());
    m.extend_from_slice(&32u16.to_be_bytes());
    m.extend_from_slice(&digest);
    m
}
