//! The few TPM 2.0 commands the guest needs of a vTPM, marshalled here:
//! `NV_ReadPublic` and `NV_Read` (the paravisor's HCL report),
//! `PCR_Read` and `Quote` (the attestation key's signature over a nonce
//! and the PCRs). Four commands with fixed shapes did not justify the C
//! TSS (tss-esapi) in the guest image; every response is read strictly
//! (sizes, tags, trailing bytes), as anything from the TPM's transport is.
//!
//! Transports: the kernel's resource manager (`/dev/tpmrm0`, one command
//! written and one response read per call) or swtpm's Unix socket (the
//! same bytes, for development and tests).

use std::io::{Read, Write};
use std::path::PathBuf;

const TPM_ST_NO_SESSIONS: u16 = 0x8001;
const TPM_ST_SESSIONS: u16 = 0x8002;
const TPM_CC_NV_READ: u32 = 0x0000_014e;
const TPM_CC_QUOTE: u32 = 0x0000_0158;
const TPM_CC_NV_READ_PUBLIC: u32 = 0x0000_0169;
const TPM_CC_PCR_READ: u32 = 0x0000_017e;
/// The password session with an empty password.
const TPM_RS_PW: u32 = 0x4000_0009;
const TPM_ALG_SHA256: u16 = 0x000b;
const TPM_ALG_RSASSA: u16 = 0x0014;
/// A response larger than this is refused (the TPM's own limit is 4096).
const MAX_RESPONSE: usize = 8192;
/// How much `NV_Read` asks for at once (TPM_PT_NV_BUFFER_MAX is at least
/// 512 on every TPM; swtpm and Azure's vTPM allow 1024).
const NV_CHUNK: u16 = 512;
/// The PCRs of the SHA-256 bank a quote covers: 0 to 23.
pub const PCR_COUNT: usize = 24;

/// Why a TPM command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    #[error("TPM {transport}: {source}")]
    Io {
        transport: String,
        source: std::io::Error,
    },
    #[error("TPM {command}: response code {code:#010x}")]
    Code { command: &'static str, code: u32 },
    #[error("TPM {command}: malformed response: {what}")]
    Malformed { command: &'static str, what: String },
}

/// Where TPM commands go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// A character device (`/dev/tpmrm0`).
    Device(PathBuf),
    /// swtpm's data socket (`--server type=unixio,path=…`).
    Socket(PathBuf),
}

impl std::str::FromStr for Transport {
    type Err = String;
    /// `/dev/tpmrm0` (a device) or `unix:/path/to/swtpm.sock`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("unix:") {
            Some("") => Err("unix: needs a socket path (unix:/path/to/swtpm.sock)".into()),
            Some(path) => Ok(Transport::Socket(path.into())),
            None if s.starts_with('/') => Ok(Transport::Device(s.into())),
            None => Err(format!(
                "{s:?}: a TPM device path (/dev/tpmrm0) or unix:/path/to/swtpm.sock"
            )),
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Device(p) => write!(f, "{}", p.display()),
            Transport::Socket(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Warnings after which the same command is sent again: TPM_RC_YIELDED,
/// TPM_RC_TESTING (self-test still running) and TPM_RC_RETRY.
const TRY_AGAIN: [u32; 3] = [0x908, 0x90a, 0x922];
/// How often, 50 ms apart.
const TRIES: u32 = 40;

impl Transport {
    /// Sends one command, again while the TPM asks for that; returns its
    /// response (header checked, success).
    fn execute(&self, command: &'static str, bytes: &[u8]) -> Result<Vec<u8>, TpmError> {
        let mut tries = 1;
        loop {
            match self.execute_once(command, bytes) {
                Err(TpmError::Code { code, .. }) if TRY_AGAIN.contains(&code) && tries < TRIES => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return other,
            }
        }
    }

    fn execute_once(&self, command: &'static str, bytes: &[u8]) -> Result<Vec<u8>, TpmError> {
        let io = |source| TpmError::Io {
            transport: self.to_string(),
            source,
        };
        let response = match self {
            Transport::Device(path) => {
                let mut dev = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(io)?;
                dev.write_all(bytes).map_err(io)?;
                // The resource manager returns the whole response to one read.
                let mut buf = vec![0u8; MAX_RESPONSE];
                let n = dev.read(&mut buf).map_err(io)?;
                buf.truncate(n);
                buf
            }
            Transport::Socket(path) => {
                let mut s = std::os::unix::net::UnixStream::connect(path).map_err(io)?;
                s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                    .map_err(io)?;
                s.write_all(bytes).map_err(io)?;
                let mut header = [0u8; 10];
                s.read_exact(&mut header).map_err(io)?;
                let size = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if !(10..=MAX_RESPONSE).contains(&size) {
                    return Err(TpmError::Malformed {
                        command,
                        what: format!("a response of {size} bytes"),
                    });
                }
                let mut rest = vec![0u8; size - 10];
                s.read_exact(&mut rest).map_err(io)?;
                let mut all = header.to_vec();
                all.extend_from_slice(&rest);
                all
            }
        };
        let mut r = Reader::new(command, &response);
        r.u16()?;
        let size = r.u32()?;
        let code = r.u32()?;
        if usize::try_from(size).ok() != Some(response.len()) {
            return Err(r.malformed(format!("header says {size} bytes, {} came", response.len())));
        }
        if code != 0 {
            return Err(TpmError::Code { command, code });
        }
        Ok(response)
    }

    /// The size of NV index `index`'s data.
    pub fn nv_size(&self, index: u32) -> Result<u16, TpmError> {
        let cmd = Command::new(TPM_ST_NO_SESSIONS, TPM_CC_NV_READ_PUBLIC)
            .u32(index)
            .finish();
        let resp = self.execute("NV_ReadPublic", &cmd)?;
        let mut r = Reader::new("NV_ReadPublic", &resp);
        r.skip(10)?;
        let public = r.sized()?;
        r.sized()?; // nvName
        r.end()?;
        let mut p = Reader::new("NV_ReadPublic", public);
        let got = p.u32()?;
        if got != index {
            return Err(p.malformed(format!("the public area of {got:#x}, not {index:#x}")));
        }
        p.u16()?; // nameAlg
        p.u32()?; // attributes
        p.sized()?; // authPolicy
        let size = p.u16()?;
        p.end()?;
        Ok(size)
    }

    /// NV index `index`'s data, read in chunks with its own (empty)
    /// authorization.
    pub fn nv_read(&self, index: u32) -> Result<Vec<u8>, TpmError> {
        let size = self.nv_size(index)?;
        let mut data = Vec::with_capacity(usize::from(size));
        let mut offset: u16 = 0;
        while offset < size {
            let want = NV_CHUNK.min(size - offset);
            let cmd = Command::new(TPM_ST_SESSIONS, TPM_CC_NV_READ)
                .u32(index)
                .u32(index)
                .password_session()
                .u16(want)
                .u16(offset)
                .finish();
            let resp = self.execute("NV_Read", &cmd)?;
            let mut r = Reader::new("NV_Read", &resp);
            r.skip(10)?;
            r.u32()?; // parameterSize
            let chunk = r.sized()?;
            if chunk.len() != usize::from(want) {
                return Err(r.malformed(format!("{} bytes for {want} asked", chunk.len())));
            }
            data.extend_from_slice(chunk);
            offset += want;
        }
        Ok(data)
    }

    /// The SHA-256 bank's PCRs 0 to 23 (a TPM returns at most eight per
    /// `PCR_Read`).
    pub fn pcrs(&self) -> Result<Vec<[u8; 32]>, TpmError> {
        let mut values: Vec<Option<[u8; 32]>> = vec![None; PCR_COUNT];
        for _ in 0..PCR_COUNT {
            let missing: Vec<usize> = (0..PCR_COUNT).filter(|&i| values[i].is_none()).collect();
            if missing.is_empty() {
                break;
            }
            let cmd = Command::new(TPM_ST_NO_SESSIONS, TPM_CC_PCR_READ)
                .pcr_selection(&missing)
                .finish();
            let resp = self.execute("PCR_Read", &cmd)?;
            let mut r = Reader::new("PCR_Read", &resp);
            r.skip(10)?;
            r.u32()?; // pcrUpdateCounter
            let selected = r.pcr_selection()?;
            let count = r.u32()?;
            if usize::try_from(count).ok() != Some(selected.len()) || selected.is_empty() {
                return Err(r.malformed(format!(
                    "{count} digests for {} PCRs selected",
                    selected.len()
                )));
            }
            for i in selected {
                let digest = r.sized()?;
                let value = <[u8; 32]>::try_from(digest)
                    .map_err(|_| r.malformed(format!("PCR {i}: {} bytes", digest.len())))?;
                match values.get_mut(i) {
                    Some(slot) => *slot = Some(value),
                    None => return Err(r.malformed(format!("PCR {i} returned"))),
                }
            }
            r.end()?;
        }
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                v.ok_or_else(|| TpmError::Malformed {
                    command: "PCR_Read",
                    what: format!("PCR {i} never returned"),
                })
            })
            .collect()
    }

    /// `TPM2_Quote` by the key at `handle` (RSASSA, SHA-256) over `nonce`
    /// and PCRs 0 to 23: the signed `TPMS_ATTEST` and the signature.
    pub fn quote(&self, handle: u32, nonce: &[u8]) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
        let nonce_len = u16::try_from(nonce.len())
            .ok()
            .filter(|n| *n <= 64)
            .ok_or_else(|| TpmError::Malformed {
                command: "Quote",
                what: format!("a nonce of {} bytes (at most 64)", nonce.len()),
            })?;
        let all: Vec<usize> = (0..PCR_COUNT).collect();
        let cmd = Command::new(TPM_ST_SESSIONS, TPM_CC_QUOTE)
            .u32(handle)
            .password_session()
            .u16(nonce_len)
            .bytes(nonce)
            .u16(TPM_ALG_RSASSA)
            .u16(TPM_ALG_SHA256)
            .pcr_selection(&all)
            .finish();
        let resp = self.execute("Quote", &cmd)?;
        let mut r = Reader::new("Quote", &resp);
        r.skip(10)?;
        r.u32()?; // parameterSize
        let attest = r.sized()?.to_vec();
        let (alg, hash) = (r.u16()?, r.u16()?);
        if (alg, hash) != (TPM_ALG_RSASSA, TPM_ALG_SHA256) {
            return Err(r.malformed(format!(
                "a signature of scheme {alg:#06x}/{hash:#06x}, not RSASSA/SHA-256"
            )));
        }
        let signature = r.sized()?.to_vec();
        Ok((attest, signature))
    }
}

/// A command being marshalled (big-endian, size patched at the end).
struct Command(Vec<u8>);

impl Command {
    fn new(tag: u16, code: u32) -> Self {
        let mut b = tag.to_be_bytes().to_vec();
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&code.to_be_bytes());
        Command(b)
    }
    fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// One password session, empty password: authorizationSize, then
    /// handle, empty nonce, attributes 0, empty hmac.
    fn password_session(self) -> Self {
        self.u32(9).u32(TPM_RS_PW).u16(0).bytes(&[0]).u16(0)
    }
    /// One SHA-256 selection of `pcrs` (three bitmap bytes).
    fn pcr_selection(self, pcrs: &[usize]) -> Self {
        let mut bits = [0u8; 3];
        for &i in pcrs {
            if let Some(b) = bits.get_mut(i / 8) {
                *b |= 1 << (i % 8);
            }
        }
        self.u32(1).u16(TPM_ALG_SHA256).bytes(&[3]).bytes(&bits)
    }
    fn finish(mut self) -> Vec<u8> {
        let size = u32::try_from(self.0.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes();
        self.0[2..6].copy_from_slice(&size);
        self.0
    }
}

struct Reader<'a> {
    command: &'static str,
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(command: &'static str, b: &'a [u8]) -> Self {
        Reader { command, b, at: 0 }
    }
    fn malformed(&self, what: String) -> TpmError {
        TpmError::Malformed {
            command: self.command,
            what,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TpmError> {
        let end = self.at.saturating_add(n);
        let s = self.b.get(self.at..end).ok_or_else(|| {
            self.malformed(format!(
                "{n} bytes at offset {} run past its {}",
                self.at,
                self.b.len()
            ))
        })?;
        self.at = end;
        Ok(s)
    }
    fn skip(&mut self, n: usize) -> Result<(), TpmError> {
        self.take(n).map(|_| ())
    }
    fn u16(&mut self) -> Result<u16, TpmError> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, TpmError> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn sized(&mut self) -> Result<&'a [u8], TpmError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
    /// A `TPML_PCR_SELECTION`: the SHA-256 bank's selected PCRs.
    fn pcr_selection(&mut self) -> Result<Vec<usize>, TpmError> {
        let count = self.u32()?;
        if count > 16 {
            return Err(self.malformed(format!("{count} PCR selections")));
        }
        let mut out = Vec::new();
        for _ in 0..count {
            let hash = self.u16()?;
            let size = self.take(1)?[0];
            let bits = self.take(usize::from(size))?;
            if hash != TPM_ALG_SHA256 {
                continue;
            }
            for (byte, b) in bits.iter().enumerate() {
                out.extend(
                    (0..8)
                        .filter(|bit| b >> bit & 1 == 1)
                        .map(|bit| byte * 8 + bit),
                );
            }
        }
        Ok(out)
    }
    fn end(&self) -> Result<(), TpmError> {
        if self.at == self.b.len() {
            Ok(())
        } else {
            Err(self.malformed(format!(
                "{} bytes after offset {}",
                self.b.len() - self.at,
                self.at
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_marshalled_as_the_tpm_reads_them() {
        let cmd = Command::new(TPM_ST_NO_SESSIONS, TPM_CC_PCR_READ)
            .pcr_selection(&[0, 9, 23])
            .finish();
        assert_eq!(
            hex::encode(&cmd),
            "8001000000140000017e00000001000b03010280"
        );
        let cmd = Command::new(TPM_ST_SESSIONS, TPM_CC_NV_READ)
            .u32(0x0140_0001)
            .u32(0x0140_0001)
            .password_session()
            .u16(512)
            .u16(1024)
            .finish();
        assert_eq!(
            hex::encode(&cmd),
            "8002000000230000014e01400001014000010000000940000009000000000002000400"
        );
    }

    #[test]
    fn responses_are_read_strictly() {
        let mut r = Reader::new("PCR_Read", &[0, 0, 0, 1, 0, 0x0b, 3, 0x01, 0x01, 0x80]);
        assert_eq!(r.pcr_selection().unwrap_or_default(), vec![0, 8, 23]);
        assert!(r.end().is_ok());
        let mut short = Reader::new("Quote", &[0, 5, 1, 2]);
        let err = short
            .sized()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("Quote: malformed response: 5 bytes at offset 2"),
            "{err}"
        );
        assert!(Reader::new("x", &[1]).end().is_err());
        assert!("vtpm".parse::<Transport>().is_err());
        assert!("unix:".parse::<Transport>().is_err());
        assert_eq!(
            "unix:/run/swtpm.sock".parse::<Transport>(),
            Ok(Transport::Socket("/run/swtpm.sock".into()))
        );
    }
}
