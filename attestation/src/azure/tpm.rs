//! The vTPM's quote: `TPMS_ATTEST` (big-endian, as the TPM marshals it)
//! read strictly, its RSASSA-PKCS1-v1_5 SHA-256 signature by the HCL
//! report's attestation key, its nonce, its PCR digest and the policy's
//! PCR allowlists.

use crate::policy::Policy;
use crate::verdict::{ReasonKind, Verdict};

/// `TPM_GENERATED_VALUE` and `TPM_ST_ATTEST_QUOTE`.
pub(crate) const TPM_GENERATED: u32 = 0xff54_4347;
pub(crate) const TPM_ST_ATTEST_QUOTE: u16 = 0x8018;
pub(crate) const TPM_ALG_SHA256: u16 = 0x000b;
/// Most PCRs a quote may cover.
pub(crate) const PCRS: usize = 24;

/// What a quote attests.
pub(crate) struct Attest {
    pub extra_data: Vec<u8>,
    /// PCR indices of the SHA-256 bank, in order.
    pub selected: Vec<usize>,
    pub pcr_digest: Vec<u8>,
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).ok_or("overflow")?;
        let s = self.b.get(self.at..end).ok_or_else(|| {
            format!(
                "TPM quote: {what} at offset {} runs past its {} bytes",
                self.at,
                self.b.len()
            )
        })?;
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let s = self.take(N, what)?;
        s.try_into().map_err(|_| format!("TPM quote: {what}"))
    }
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        self.array::<2>(what).map(u16::from_be_bytes)
    }
    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.array::<4>(what).map(u32::from_be_bytes)
    }
    fn sized(&mut self, what: &str) -> Result<&'a [u8], String> {
        let n = self.u16(what)?;
        self.take(usize::from(n), what)
    }
}

pub(crate) fn parse_attest(message: &[u8]) -> Result<Attest, String> {
    let mut r = Reader { b: message, at: 0 };
    if r.u32("magic")? != TPM_GENERATED {
        return Err("TPM quote: not TPM-generated (magic at offset 0)".into());
    }
    if r.u16("type")? != TPM_ST_ATTEST_QUOTE {
        return Err("TPM quote: offset 4 is not a quote's type (TPM_ST_ATTEST_QUOTE)".into());
    }
    r.sized("qualifiedSigner")?;
    let extra_data = r.sized("extraData")?.to_vec();
    r.take(17, "clockInfo")?;
    r.take(8, "firmwareVersion")?;
    let count = r.u32("pcrSelect count")?;
    let mut selected = Vec::new();
    for _ in 0..count.min(16) {
        let hash = r.u16("pcrSelect hash")?;
        let [size] = r.array::<1>("sizeofSelect")?;
        let bits = r.take(usize::from(size), "pcrSelect")?;
        if hash != TPM_ALG_SHA256 {
            if bits.iter().any(|b| *b != 0) {
                return Err(format!(
                    "TPM quote: PCRs of hash algorithm {hash:#06x} selected; only the SHA-256 bank is read"
                ));
            }
            continue;
        }
        for (byte, b) in bits.iter().enumerate() {
            for bit in 0..8 {
                if b >> bit & 1 == 1 {
                    selected.push(byte.saturating_mul(8).saturating_add(bit));
                }
            }
        }
    }
    if count > 16 {
        return Err(format!("TPM quote: {count} PCR selections"));
    }
    let pcr_digest = r.sized("pcrDigest")?.to_vec();
    if r.at != message.len() {
        return Err(format!(
            "TPM quote: {} bytes after the quote",
            message.len().saturating_sub(r.at)
        ));
    }
    Ok(Attest {
        extra_data,
        selected,
        pcr_digest,
    })
}

/// `bytes` zero-padded to the 64 bytes a policy's `report_data` holds, or
/// `None` when longer.
pub(crate) fn padded64(bytes: &[u8]) -> Option<[u8; 64]> {
    if bytes.len() > 64 {
        return None;
    }
    let mut out = [0u8; 64];
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = *b;
    }
    Some(out)
}

/// SHA-256 of the `selected` PCRs' values, in order (what a quote's
/// `pcrDigest` is), or the first selected PCR `pcrs` lacks.
pub(crate) fn selected_digest(
    selected: &[usize],
    pcrs: &[[u8; 32]],
) -> Result<ring::digest::Digest, usize> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for &i in selected {
        ctx.update(pcrs.get(i).ok_or(i)?);
    }
    Ok(ctx.finish())
}

/// The quote's own checks, added to `v`: signed by the attestation key
/// `(n, e)`, over `policy.report_data` (when set) as its nonce, with `pcrs`
/// the values its digest covers, and the policy's `[vtpm] pcrs` rules.
pub(crate) fn verify_quote(
    message: &[u8],
    signature: &[u8],
    pcrs: &[[u8; 32]],
    key: Result<(Vec<u8>, Vec<u8>), String>,
    policy: &Policy,
    v: &mut Verdict,
) {
    let attest = match parse_attest(message) {
        Ok(a) => a,
        Err(m) => return v.reject(ReasonKind::TpmQuoteInvalid, m),
    };
    match key {
        Err(m) => v.reject(ReasonKind::TpmQuoteInvalid, m),
        Ok((n, e)) => {
            let key = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
            if key
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    message,
                    signature,
                )
                .is_err()
            {
                v.reject(
                    ReasonKind::TpmQuoteInvalid,
                    "the TPM quote is not signed by the attestation key of the HCL report",
                );
            }
        }
    }
    if let Some(expected) = &policy.report_data
        && padded64(&attest.extra_data).as_ref() != Some(expected)
    {
        v.reject(
            ReasonKind::ReportDataMismatch,
            format!(
                "the TPM quote's nonce is {}, not the expected one",
                hex::encode(&attest.extra_data)
            ),
        );
    }
    match selected_digest(&attest.selected, pcrs) {
        Err(i) => {
            return v.reject(
                ReasonKind::TpmPcrDigestMismatch,
                format!("the quote covers PCR {i}, whose value the evidence does not give"),
            );
        }
        Ok(d) if d.as_ref() != attest.pcr_digest.as_slice() => v.reject(
            ReasonKind::TpmPcrDigestMismatch,
            "the PCR values given are not those the quote's digest covers",
        ),
        Ok(_) => {}
    }
    for (index, allowed) in &policy.vtpm.pcrs {
        let value = attest
            .selected
            .contains(index)
            .then(|| pcrs.get(*index))
            .flatten();
        match value {
            None => v.reject(
                ReasonKind::PcrNotAllowed,
                format!("the policy constrains PCR {index}, which the quote does not cover"),
            ),
            Some(value) if !allowed.contains(value) => v.reject(
                ReasonKind::PcrNotAllowed,
                format!(
                    "PCR {index} is {}, not one the policy allows",
                    hex::encode(value)
                ),
            ),
            Some(_) => {}
        }
    }
}
