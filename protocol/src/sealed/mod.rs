//! The sealed model format (`.csm`, see `docs/sealed-model.md`): a JSON
//! header authenticated as associated data of every chunk, and the body as
//! AES-256-GCM chunks with the STREAM nonce construction.
//!
//! Sealing and unsealing stream from readers; unsealing authenticates
//! chunks on several threads and hands plaintext to the caller only after
//! its chunk verified, in order.

use crate::jcs;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use zeroize::{Zeroize, Zeroizing};

pub const MAGIC: [u8; 8] = *b"\x89CSM\r\n\x1a\n";
pub const VERSION: u16 = 1;
pub const ALG: &str = "AES-256-GCM-STREAM";
pub const TAG_LEN: usize = 16;
pub const DEFAULT_CHUNK: u32 = 1 << 20;
pub const MIN_CHUNK: u32 = 4096;
pub const MAX_CHUNK: u32 = 16 << 20;
const MAX_HEADER: u32 = 65_536;
const FIXED: usize = 14;

/// Why sealing or unsealing failed. Offsets are byte offsets in the sealed file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("not a sealed model: bad magic at offset 0")]
    Magic,
    #[error("sealed model format version {0} is not supported (expected {VERSION})")]
    Version(u16),
    #[error("sealed model header length {0} at offset 10 is out of range (1..={MAX_HEADER})")]
    HeaderLength(u32),
    #[error("sealed model header (offset 14): {0}")]
    HeaderJson(String),
    #[error("sealed model header field `{field}`: {message}")]
    Field {
        field: &'static str,
        message: String,
    },
    #[error(
        "sealed model truncated: chunk {chunk} at offset {offset} needs {needed} bytes, the file ends after {available}"
    )]
    Truncated {
        chunk: u64,
        offset: u64,
        needed: usize,
        available: usize,
    },
    #[error("sealed model has unexpected data after the last chunk, at offset {offset}")]
    TrailingData { offset: u64 },
    #[error(
        "chunk {chunk} at offset {offset} failed authentication: wrong key, or the file was tampered with (modified, reordered, spliced or truncated)"
    )]
    ChunkAuthentication { chunk: u64, offset: u64 },
    #[error("plaintext SHA-256 differs from the header's plaintext_sha256")]
    PlaintextDigest,
    #[error("model is larger than the header allows ({0} bytes)")]
    TooLong(u64),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

/// A 256-bit data key; zeroized when dropped.
#[derive(Clone)]
pub struct DataKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    /// A fresh random key from the operating system.
    pub fn generate() -> Result<Self, SealError> {
        let mut k = Zeroizing::new([0u8; 32]);
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), k.as_mut())
            .map_err(|_| io::Error::other("system random number generator failed"))?;
        Ok(DataKey(k))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        DataKey(Zeroizing::new(bytes))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn aead(&self) -> Result<LessSafeKey, SealError> {
        let k = UnboundKey::new(&AES_256_GCM, self.0.as_ref())
            .map_err(|_| io::Error::other("AES-256-GCM key setup failed"))?;
        Ok(LessSafeKey::new(k))
    }
}

/// Model metadata carried in the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub name: String,
    pub format: String,
}

/// The header's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub alg: String,
    pub chunk_size: u32,
    pub plaintext_len: u64,
    pub plaintext_sha256: String,
    pub nonce_prefix: String,
    pub resource: String,
    pub model: ModelInfo,
}

/// A parsed header with the digest every chunk is bound to.
#[derive(Debug, Clone)]
pub struct SealedHeader {
    pub header: Header,
    /// Bytes from offset 0 to the end of the header.
    pub len: usize,
    aad: [u8; 32],
    prefix: [u8; 7],
}

impl SealedHeader {
    /// Parses the header from the start of a sealed file (at least the
    /// whole header must be present).
    pub fn parse(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.get(..8) != Some(&MAGIC[..]) {
            return Err(SealError::Magic);
        }
        let version = u16::from_be_bytes(array(bytes, 8)?);
        if version != VERSION {
            return Err(SealError::Version(version));
        }
        let hlen = u32::from_be_bytes(array(bytes, 10)?);
        if hlen == 0 || hlen > MAX_HEADER {
            return Err(SealError::HeaderLength(hlen));
        }
        let end = FIXED.saturating_add(hlen as usize);
        let region = bytes.get(..end).ok_or(SealError::Truncated {
            chunk: 0,
            offset: 14,
            needed: hlen as usize,
            available: bytes.len().saturating_sub(FIXED),
        })?;
        let json = region.get(FIXED..).unwrap_or_default();
        let header: Header =
            serde_json::from_slice(json).map_err(|e| SealError::HeaderJson(e.to_string()))?;
        validate(&header)?;
        let mut prefix = [0u8; 7];
        let p = hex::decode(&header.nonce_prefix).map_err(|e| SealError::Field {
            field: "nonce_prefix",
            message: e.to_string(),
        })?;
        if p.len() != 7 {
            return Err(SealError::Field {
                field: "nonce_prefix",
                message: format!("{} bytes, expected 7", p.len()),
            });
        }
        prefix.copy_from_slice(&p);
        Ok(SealedHeader {
            aad: sha256(region),
            header,
            len: end,
            prefix,
        })
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u64 {
        chunk_count(self.header.plaintext_len, self.header.chunk_size)
    }

    /// Plaintext length of chunk `i`.
    pub fn chunk_plain_len(&self, i: u64) -> usize {
        let cs = u64::from(self.header.chunk_size);
        let start = i.saturating_mul(cs);
        self.header.plaintext_len.saturating_sub(start).min(cs) as usize
    }

    /// Offset of chunk `i` in the file.
    pub fn chunk_offset(&self, i: u64) -> u64 {
        let per = u64::from(self.header.chunk_size).saturating_add(TAG_LEN as u64);
        (self.len as u64).saturating_add(i.saturating_mul(per))
    }

    /// Total size of the sealed file.
    pub fn file_len(&self) -> u64 {
        let n = self.chunks();
        (self.len as u64)
            .saturating_add(self.header.plaintext_len)
            .saturating_add(n.saturating_mul(TAG_LEN as u64))
    }

    fn nonce(&self, i: u64) -> Result<Nonce, SealError> {
        let counter =
            u32::try_from(i).map_err(|_| SealError::TooLong(self.header.plaintext_len))?;
        let mut n = [0u8; NONCE_LEN];
        n[..7].copy_from_slice(&self.prefix);
        n[7..11].copy_from_slice(&counter.to_be_bytes());
        n[11] = u8::from(i.saturating_add(1) == self.chunks());
        Ok(Nonce::assume_unique_for_key(n))
    }
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], SealError> {
    bytes
        .get(at..at.saturating_add(N))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(SealError::Truncated {
            chunk: 0,
            offset: at as u64,
            needed: N,
            available: bytes.len().saturating_sub(at),
        })
}

fn validate(h: &Header) -> Result<(), SealError> {
    if h.alg != ALG {
        return Err(SealError::Field {
            field: "alg",
            message: format!("{:?}, expected {ALG:?}", h.alg),
        });
    }
    if !(MIN_CHUNK..=MAX_CHUNK).contains(&h.chunk_size) {
        return Err(SealError::Field {
            field: "chunk_size",
            message: format!("{} outside {MIN_CHUNK}..={MAX_CHUNK}", h.chunk_size),
        });
    }
    if chunk_count(h.plaintext_len, h.chunk_size) > u64::from(u32::MAX) {
        return Err(SealError::Field {
            field: "plaintext_len",
            message: "more chunks than the 32-bit counter allows".into(),
        });
    }
    if hex::decode(&h.plaintext_sha256).map(|d| d.len()) != Ok(32) {
        return Err(SealError::Field {
            field: "plaintext_sha256",
            message: "not 32 bytes of hex".into(),
        });
    }
    if !matches!(h.model.format.as_str(), "gguf" | "safetensors" | "raw") {
        return Err(SealError::Field {
            field: "model.format",
            message: format!("{:?} (gguf, safetensors, raw)", h.model.format),
        });
    }
    Ok(())
}

fn chunk_count(len: u64, chunk: u32) -> u64 {
    len.div_ceil(u64::from(chunk.max(1))).max(1)
}

fn sha256(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    out
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0usize;
    while n < buf.len() {
        match r.read(buf.get_mut(n..).unwrap_or_default()) {
            Ok(0) => break,
            Ok(k) => n = n.saturating_add(k),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What to seal.
#[derive(Debug, Clone)]
pub struct SealParams {
    pub resource: String,
    pub model: ModelInfo,
    pub chunk_size: u32,
}

/// Seals `plaintext_len` bytes from `input` (which the caller has hashed
/// already: `plaintext_sha256`) into `out`. `progress` gets plaintext bytes done.
pub fn seal(
    input: &mut impl Read,
    plaintext_len: u64,
    plaintext_sha256: [u8; 32],
    key: &DataKey,
    params: &SealParams,
    out: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> Result<SealedHeader, SealError> {
    let mut prefix = [0u8; 7];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut prefix)
        .map_err(|_| io::Error::other("system random number generator failed"))?;
    let header = Header {
        alg: ALG.into(),
        chunk_size: params.chunk_size,
        plaintext_len,
        plaintext_sha256: hex::encode(plaintext_sha256),
        nonce_prefix: hex::encode(prefix),
        resource: params.resource.clone(),
        model: params.model.clone(),
    };
    validate(&header)?;
    let value = serde_json::to_value(&header).map_err(|e| SealError::HeaderJson(e.to_string()))?;
    let json = jcs::canonicalize(&value).map_err(|e| SealError::HeaderJson(e.to_string()))?;
    let mut region = Vec::with_capacity(FIXED.saturating_add(json.len()));
    region.extend_from_slice(&MAGIC);
    region.extend_from_slice(&VERSION.to_be_bytes());
    region.extend_from_slice(
        &u32::try_from(json.len())
            .map_err(|_| SealError::HeaderLength(u32::MAX))?
            .to_be_bytes(),
    );
    region.extend_from_slice(json.as_bytes());
    let sealed = SealedHeader::parse(&region)?;
    out.write_all(&region)?;

    let aead = key.aead()?;
    let mut buf = Zeroizing::new(vec![
        0u8;
        (params.chunk_size as usize).saturating_add(TAG_LEN)
    ]);
    let mut done = 0u64;
    for i in 0..sealed.chunks() {
        let want = sealed.chunk_plain_len(i);
        let got = read_full(input, buf.get_mut(..want).unwrap_or_default())?;
        if got != want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("model shorter than {plaintext_len} bytes"),
            )
            .into());
        }
        let mut chunk = buf.get(..want).unwrap_or_default().to_vec();
        aead.seal_in_place_append_tag(sealed.nonce(i)?, Aad::from(sealed.aad), &mut chunk)
            .map_err(|_| io::Error::other("AES-256-GCM seal failed"))?;
        out.write_all(&chunk)?;
        chunk.zeroize();
        done = done.saturating_add(want as u64);
        progress(done);
    }
    let mut probe = [0u8; 1];
    if read_full(input, &mut probe)? != 0 {
        return Err(SealError::TooLong(plaintext_len));
    }
    Ok(sealed)
}

/// How to unseal.
#[derive(Debug, Clone, Copy)]
pub struct UnsealOptions {
    /// Threads that authenticate and decrypt chunks.
    pub threads: usize,
    /// Re-hash the plaintext and compare with the header's
    /// `plaintext_sha256`. Not needed for integrity (every chunk, its
    /// position and the end are authenticated); it re-checks the sealer's
    /// claim and costs a serial SHA-256 pass.
    pub verify_plaintext_digest: bool,
}

impl Default for UnsealOptions {
    fn default() -> Self {
        UnsealOptions {
            threads: cores(),
            verify_plaintext_digest: true,
        }
    }
}

/// Unseals from `input` (positioned at the start of the file); `sink`
/// receives authenticated plaintext in order, a batch at a time and only
/// once every chunk of the batch verified. Returns the header.
pub fn unseal(
    input: &mut impl Read,
    key: &DataKey,
    options: UnsealOptions,
    mut sink: impl FnMut(&[u8]) -> io::Result<()>,
) -> Result<SealedHeader, SealError> {
    let h = read_header(input)?;
    let aead = key.aead()?;
    let threads = options.threads.max(1);
    let total = h.chunks();
    let batch_len = threads
        .saturating_mul(4)
        .min(usize::try_from(total).unwrap_or(usize::MAX))
        .max(1);
    let chunk_cap = (h.header.chunk_size as usize).saturating_add(TAG_LEN);
    // Two sets of buffers: while the workers authenticate one batch, this
    // thread reads the next into the other. Buffers are reused and
    // zeroized once, when dropped.
    let new_set = || -> Batch {
        (0..batch_len)
            .map(|_| (0, Zeroizing::new(vec![0u8; chunk_cap]), 0))
            .collect()
    };
    let (mut current, mut next) = (new_set(), new_set());
    let mut digest = options
        .verify_plaintext_digest
        .then(|| ring::digest::Context::new(&ring::digest::SHA256));
    let mut filled = read_batch(input, &h, 0, &mut current)?;
    let mut first = 0u64;
    while filled > 0 {
        let following = first.saturating_add(filled as u64);
        let (results, next_filled) = std::thread::scope(|s| {
            let per_thread = filled.div_ceil(threads).max(1);
            let handles: Vec<_> = current
                .get_mut(..filled)
                .unwrap_or_default()
                .chunks_mut(per_thread)
                .map(|group| {
                    let (aead, h) = (&aead, &h);
                    s.spawn(move || open_group(aead, h, group))
                })
                .collect();
            // Overlap reading the next batch with decryption only when a
            // core is left for it; otherwise the reader just steals time.
            let overlap = cores() > threads;
            let mut next_filled = overlap.then(|| read_batch(input, &h, following, &mut next));
            let results: Vec<Result<(), SealError>> = handles
                .into_iter()
                .map(|j| {
                    j.join().unwrap_or_else(|_| {
                        Err(io::Error::other("decryption thread panicked").into())
                    })
                })
                .collect();
            if next_filled.is_none() {
                next_filled = Some(read_batch(input, &h, following, &mut next));
            }
            (results, next_filled.unwrap_or(Ok(0)))
        });
        // Release nothing of a batch until every chunk in it verified.
        for r in results {
            r?;
        }
        for (_, b, len) in current.get(..filled).unwrap_or_default() {
            let plain = b.get(..*len).unwrap_or_default();
            if let Some(d) = digest.as_mut() {
                d.update(plain);
            }
            sink(plain)?;
        }
        filled = next_filled?;
        first = following;
        std::mem::swap(&mut current, &mut next);
    }
    let mut probe = [0u8; 1];
    if read_full(input, &mut probe)? != 0 {
        return Err(SealError::TrailingData {
            offset: h.file_len(),
        });
    }
    if let Some(d) = digest
        && hex::encode(d.finish()) != h.header.plaintext_sha256
    {
        return Err(SealError::PlaintextDigest);
    }
    Ok(h)
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// A batch of (chunk index, buffer, used length) slots.
type Batch = Vec<(u64, Zeroizing<Vec<u8>>, usize)>;

/// Reads chunks `first..` into `slots` (as many as fit and exist);
/// returns how many were read.
fn read_batch(
    input: &mut impl Read,
    h: &SealedHeader,
    first: u64,
    slots: &mut Batch,
) -> Result<usize, SealError> {
    let total = h.chunks();
    let mut n = 0usize;
    for (i, slot) in (first..total).zip(slots.iter_mut()) {
        let want = h.chunk_plain_len(i).saturating_add(TAG_LEN);
        let got = read_full(input, slot.1.get_mut(..want).unwrap_or_default())?;
        if got != want {
            return Err(SealError::Truncated {
                chunk: i,
                offset: h.chunk_offset(i),
                needed: want,
                available: got,
            });
        }
        slot.0 = i;
        slot.2 = want;
        n = n.saturating_add(1);
    }
    Ok(n)
}

/// Authenticates and decrypts a group of chunks in place; each slot's
/// length becomes its plaintext length.
fn open_group(
    aead: &LessSafeKey,
    h: &SealedHeader,
    group: &mut [(u64, Zeroizing<Vec<u8>>, usize)],
) -> Result<(), SealError> {
    for (i, b, len) in group.iter_mut() {
        let sealed_part = b.get_mut(..*len).unwrap_or_default();
        *len = aead
            .open_in_place(h.nonce(*i)?, Aad::from(h.aad), sealed_part)
            .map_err(|_| SealError::ChunkAuthentication {
                chunk: *i,
                offset: h.chunk_offset(*i),
            })?
            .len();
    }
    Ok(())
}

/// Reads and parses the header region from the start of a stream.
fn read_header(input: &mut impl Read) -> Result<SealedHeader, SealError> {
    let mut fixed = [0u8; FIXED];
    let n = read_full(input, &mut fixed)?;
    if n < 8 || fixed[..8] != MAGIC {
        return Err(SealError::Magic);
    }
    if n < FIXED {
        return Err(SealError::Truncated {
            chunk: 0,
            offset: n as u64,
            needed: FIXED,
            available: n,
        });
    }
    let hlen = u32::from_be_bytes(array(&fixed, 10)?);
    if hlen == 0 || hlen > MAX_HEADER {
        return Err(SealError::HeaderLength(hlen));
    }
    let mut region = fixed.to_vec();
    region.resize(FIXED.saturating_add(hlen as usize), 0);
    let got = read_full(input, region.get_mut(FIXED..).unwrap_or_default())?;
    if got < hlen as usize {
        return Err(SealError::Truncated {
            chunk: 0,
            offset: FIXED as u64,
            needed: hlen as usize,
            available: got,
        });
    }
    SealedHeader::parse(&region)
}

mod in_memory;
pub use in_memory::{Plaintext, PlaintextReader, unseal_in_memory};
