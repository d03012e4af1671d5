//! Unsealing a whole sealed file held in memory: chunks are authenticated
//! and decrypted in place, in parallel, and read back through a `Read +
//! Seek` view without being copied together.

use super::{DataKey, SealError, SealedHeader, TAG_LEN, UnsealOptions};
use ring::aead::{Aad, LessSafeKey};
use std::io::{self, Read};
use zeroize::Zeroizing;

/// A model unsealed in memory: the decrypted chunks stay where they were
/// decrypted (no copy), and [`Plaintext::reader`] reads them as one
/// contiguous stream. Zeroized when dropped.
pub struct Plaintext {
    buf: Zeroizing<Vec<u8>>,
    header: SealedHeader,
}

impl std::fmt::Debug for Plaintext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plaintext")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

impl Plaintext {
    pub fn header(&self) -> &SealedHeader {
        &self.header
    }

    /// Plaintext length.
    pub fn len(&self) -> u64 {
        self.header.header.plaintext_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The plaintext chunks, in order.
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.header.chunks()).map(|i| {
            let start = usize::try_from(self.header.chunk_offset(i)).unwrap_or(usize::MAX);
            self.buf
                .get(start..start.saturating_add(self.header.chunk_plain_len(i)))
                .unwrap_or_default()
        })
    }

    /// Re-checks the plaintext against the header's `plaintext_sha256` (a
    /// serial SHA-256 pass). [`unseal_in_memory`] does it unless told not
    /// to; a caller can instead run it beside other work on the plaintext.
    pub fn verify_digest(&self) -> Result<(), SealError> {
        let mut d = ring::digest::Context::new(&ring::digest::SHA256);
        self.chunks().for_each(|c| d.update(c));
        if hex::encode(d.finish()) == self.header.header.plaintext_sha256 {
            Ok(())
        } else {
            Err(SealError::PlaintextDigest)
        }
    }

    /// A `Read + Seek` view of the plaintext.
    pub fn reader(&self) -> PlaintextReader<'_> {
        PlaintextReader {
            plain: self,
            pos: 0,
        }
    }
}

/// Reads a [`Plaintext`] as one stream.
#[derive(Debug)]
pub struct PlaintextReader<'a> {
    plain: &'a Plaintext,
    pos: u64,
}

impl Read for PlaintextReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let h = &self.plain.header;
        if self.pos >= self.plain.len() || out.is_empty() {
            return Ok(0);
        }
        let cs = u64::from(h.header.chunk_size);
        // chunk_size is validated non-zero when the header is parsed.
        let (i, within) = (
            self.pos.checked_div(cs).unwrap_or(0),
            self.pos.checked_rem(cs).unwrap_or(0),
        );
        let start = h.chunk_offset(i).saturating_add(within);
        let avail = (h.chunk_plain_len(i) as u64).saturating_sub(within);
        let n = avail.min(out.len() as u64) as usize;
        let start = usize::try_from(start).unwrap_or(usize::MAX);
        let src = self
            .plain
            .buf
            .get(start..start.saturating_add(n))
            .ok_or_else(|| io::Error::other("plaintext layout"))?;
        out.get_mut(..n).unwrap_or_default().copy_from_slice(src);
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

impl io::Seek for PlaintextReader<'_> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let len = self.plain.len();
        let target = match to {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => len.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the model",
            )),
        }
    }
}

/// Authenticates and decrypts every chunk of `body` in place, in parallel
/// on the current rayon pool; returns the failures.
fn open_chunks(
    body: &mut [u8],
    stride: usize,
    aead: &LessSafeKey,
    h: &SealedHeader,
) -> Vec<Result<(), SealError>> {
    use rayon::prelude::*;
    body.par_chunks_mut(stride)
        .enumerate()
        .map(|(i, chunk)| {
            let i = i as u64;
            aead.open_in_place(h.nonce(i)?, Aad::from(h.aad), chunk)
                .map(|_| ())
                .map_err(|_| SealError::ChunkAuthentication {
                    chunk: i,
                    offset: h.chunk_offset(i),
                })
        })
        .filter(Result::is_err)
        .collect()
}

/// Unseals a whole sealed file held in memory, decrypting in place on
/// `options.threads` threads (no copy). The buffer is zeroized if
/// anything fails.
pub fn unseal_in_memory(
    sealed: Vec<u8>,
    key: &DataKey,
    options: UnsealOptions,
) -> Result<Plaintext, SealError> {
    let mut buf = Zeroizing::new(sealed);
    let h = SealedHeader::parse(&buf)?;
    let expected = h.file_len();
    if (buf.len() as u64) < expected {
        let i = (buf.len() as u64)
            .saturating_sub(h.len as u64)
            .checked_div(u64::from(h.header.chunk_size).saturating_add(TAG_LEN as u64))
            .unwrap_or(0);
        return Err(SealError::Truncated {
            chunk: i,
            offset: h.chunk_offset(i),
            needed: h.chunk_plain_len(i).saturating_add(TAG_LEN),
            available: usize::try_from((buf.len() as u64).saturating_sub(h.chunk_offset(i)))
                .unwrap_or(0),
        });
    }
    if (buf.len() as u64) > expected {
        return Err(SealError::TrailingData { offset: expected });
    }
    let aead = key.aead()?;
    let threads = options.threads.max(1);
    let body = buf.get_mut(h.len..).unwrap_or_default();
    let stride = (h.header.chunk_size as usize).saturating_add(TAG_LEN);
    // Rayon's pool keeps its workers alive between calls, so they are
    // already spread over the cores when the work arrives (freshly spawned
    // threads often start on the same core and short jobs finish before the
    // scheduler moves them). The global pool serves the default thread
    // count; another count gets a pool of its own.
    let results = if threads == rayon::current_num_threads() {
        open_chunks(body, stride, &aead, &h)
    } else {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| io::Error::other(format!("decryption threads: {e}")))?;
        pool.install(|| open_chunks(body, stride, &aead, &h))
    };
    // Report the first failing chunk in file order.
    if let Some(e) = results
        .into_iter()
        .filter_map(Result::err)
        .min_by_key(|e| match e {
            SealError::ChunkAuthentication { chunk, .. } => *chunk,
            _ => 0,
        })
    {
        return Err(e);
    }
    let plain = Plaintext { buf, header: h };
    if options.verify_plaintext_digest {
        plain.verify_digest()?;
    }
    Ok(plain)
}
