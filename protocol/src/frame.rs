//! Control frames on vsock: a big-endian u32 length, then that many bytes
//! of body. The length is checked against a hard cap *before* anything is
//! allocated, so a hostile host cannot make the guest reserve memory.

/// Largest body accepted (1 MiB): control messages are small; bulk data
/// and TLS travel as raw streams on their own ports.
pub const MAX_FRAME: usize = 1 << 20;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
}

/// Encodes one frame.
pub fn encode(body: &[u8]) -> Result<Vec<u8>, FrameError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l as usize <= MAX_FRAME)
        .ok_or(FrameError::TooLarge(body.len()))?;
    let mut out = Vec::with_capacity(body.len().saturating_add(4));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

/// Incremental decoder: feed bytes as they arrive, take whole frames out.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's body, `Ok(None)` if more bytes are needed,
    /// or an error for an oversized length (the stream must then be closed).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let Some(header) = self.buf.get(..4) else {
            return Ok(None);
        };
        let mut len = [0u8; 4];
        len.copy_from_slice(header);
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        let end = len.saturating_add(4);
        if self.buf.len() < end {
            return Ok(None);
        }
        let body = self.buf.get(4..end).map(<[u8]>::to_vec);
        self.buf.drain(..end);
        Ok(body)
    }

    /// Bytes held that are not yet a whole frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn oversized_lengths_are_refused_before_allocation() {
        let mut d = Decoder::new();
        d.push(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(d.next_frame(), Err(FrameError::TooLarge(0xffff_ffff)));
        assert!(encode(&vec![0; MAX_FRAME + 1]).is_err());
    }

    proptest! {
        #[test]
        fn frames_round_trip_in_any_chunking(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8), cut in 1usize..64) {
            let wire: Vec<u8> = bodies.iter().flat_map(|b| encode(b).unwrap()).collect();
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for chunk in wire.chunks(cut) {
                d.push(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            prop_assert_eq!(got, bodies);
            prop_assert_eq!(d.pending(), 0);
        }
    }
}
