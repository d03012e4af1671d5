//! Control messages between guest and host: CBOR bodies inside
//! [`frame`](crate::frame)s, in a versioned envelope. Today they fetch
//! sealed model blobs from the host (by name, in ranges, so the guest reads
//! in parallel and can resume); the blob bytes follow a `BlobData` frame as
//! a raw stream. Everything here comes from the other side of a trust
//! boundary: sizes are capped before anything is allocated.

use crate::frame::{self, FrameError, MAX_FRAME};
use serde::{Deserialize, Serialize};

/// The envelope version this code speaks.
pub const CONTROL_VERSION: u16 = 1;

/// Largest range one `BlobRead` may ask for (64 MiB).
pub const MAX_BLOB_READ: u64 = 64 << 20;

/// One message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Guest → host: how long is the blob?
    BlobStat { name: String },
    /// Guest → host: bytes `[offset, offset + len)` of the blob.
    BlobRead { name: String, offset: u64, len: u64 },
    /// Host → guest: the blob's length.
    BlobInfo { name: String, len: u64 },
    /// Host → guest: exactly `len` raw bytes follow.
    BlobData { offset: u64, len: u64 },
    /// Either way: the request failed.
    Error { code: String, message: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    v: u16,
    msg: Message,
}

/// Why a message was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("control message: not valid CBOR for this version: {0}")]
    Cbor(String),
    #[error("control message version {0} (this side speaks {CONTROL_VERSION})")]
    Version(u16),
    #[error("control stream: {0}")]
    Io(#[from] std::io::Error),
}

/// A blob name: 1–128 of `[A-Za-z0-9._-]`, not starting with a dot (no
/// paths, so a name can never leave the host's model directory).
pub fn valid_blob_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// One framed message.
pub fn encode(msg: &Message) -> Result<Vec<u8>, ControlError> {
    let mut body = Vec::new();
    ciborium::into_writer(
        &Envelope {
            v: CONTROL_VERSION,
            msg: msg.clone(),
        },
        &mut body,
    )
    .map_err(|e| ControlError::Cbor(e.to_string()))?;
    Ok(frame::encode(&body)?)
}

/// A frame's body back into a message.
pub fn decode(body: &[u8]) -> Result<Message, ControlError> {
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()).into());
    }
    let env: Envelope =
        ciborium::from_reader(body).map_err(|e| ControlError::Cbor(e.to_string()))?;
    if env.v != CONTROL_VERSION {
        return Err(ControlError::Version(env.v));
    }
    Ok(env.msg)
}

/// The length a frame header announces, refused above the cap.
pub fn frame_len(header: [u8; 4]) -> Result<usize, ControlError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len).into());
    }
    Ok(len)
}

/// Reads one message from a blocking stream.
pub fn read_message<R: std::io::Read>(r: &mut R) -> Result<Message, ControlError> {
    let mut header = [0u8; 4];
    r.read_exact(&mut header)?;
    let mut body = vec![0u8; frame_len(header)?];
    r.read_exact(&mut body)?;
    decode(&body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_bad_input_is_refused() {
        let msgs = [
            Message::BlobStat {
                name: "m.csm".into(),
            },
            Message::BlobRead {
                name: "m.csm".into(),
                offset: 7,
                len: 9,
            },
            Message::BlobData { offset: 7, len: 9 },
            Message::Error {
                code: "not_found".into(),
                message: "no".into(),
            },
        ];
        for m in &msgs {
            let framed = encode(m).unwrap();
            assert_eq!(read_message(&mut &framed[..]).unwrap(), *m);
            for cut in 0..framed.len() {
                assert!(read_message(&mut &framed[..cut]).is_err());
            }
        }
        let mut huge = (MAX_FRAME as u32 + 1).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert!(matches!(
            read_message(&mut &huge[..]),
            Err(ControlError::Frame(FrameError::TooLarge(_)))
        ));
        assert!(matches!(decode(&[0xff, 0x00]), Err(ControlError::Cbor(_))));
        let mut body = Vec::new();
        ciborium::into_writer(
            &Envelope {
                v: 9,
                msg: msgs[0].clone(),
            },
            &mut body,
        )
        .unwrap();
        assert!(matches!(decode(&body), Err(ControlError::Version(9))));
    }

    #[test]
    fn blob_names_cannot_be_paths() {
        assert!(valid_blob_name("smollm2.csm"));
        for bad in ["", "../x", "a/b", ".hidden", "a\0b", &"x".repeat(129)] {
            assert!(!valid_blob_name(bad), "{bad:?}");
        }
    }
}
