//! TDX measurement replay from a CC event log (the ACPI CCEL table's log:
//! TCG2 "crypto agile" format, with the MR index in the PCR field:
//! 1 = RTMR0 … 4 = RTMR3). Replaying every SHA-384 digest gives the RTMR
//! values a TD quote must report, so a verifier can check each logged
//! event against a quote.

/// Why a log could not be replayed. Offsets are byte offsets in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CcelError {
    #[error("CC event log: {what} at offset {offset} runs past the end ({len} bytes)")]
    Truncated {
        what: &'static str,
        offset: usize,
        len: usize,
    },
    #[error("CC event log: the first event at offset 0 is not a TCG Spec ID event ({0})")]
    NoSpecId(String),
    #[error(
        "CC event log: event at offset {offset} uses algorithm {alg:#06x} not declared in the Spec ID event"
    )]
    UnknownAlgorithm { offset: usize, alg: u16 },
    #[error("CC event log: event at offset {offset} has no SHA-384 digest")]
    NoSha384 { offset: usize },
    #[error("CC event log: more than {0} events")]
    TooManyEvents(usize),
}

/// TPM_ALG_SHA384.
const SHA384: u16 = 0x000c;
const EV_NO_ACTION: u32 = 0x3;
const MAX_EVENTS: usize = 100_000;
const MAX_DIGEST_ALGS: u32 = 16;

/// One replayed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub offset: usize,
    /// CC measurement register index (0 MRTD, 1..=4 RTMR0..3).
    pub mr_index: u32,
    pub event_type: u32,
    pub sha384: Option<[u8; 48]>,
    pub data_len: usize,
}

/// The replay's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    pub rtmr: [[u8; 48]; 4],
    pub events: Vec<Event>,
}

struct Cursor<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CcelError> {
        let end = self.p.checked_add(n).filter(|&e| e <= self.b.len());
        let s = end
            .and_then(|e| self.b.get(self.p..e))
            .ok_or(CcelError::Truncated {
                what,
                offset: self.p,
                len: self.b.len(),
            })?;
        self.p = self.p.saturating_add(n);
        Ok(s)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, CcelError> {
        let s = self.take(2, what)?;
        Ok(u16::from_le_bytes([
            s.first().copied().unwrap_or(0),
            s.get(1).copied().unwrap_or(0),
        ]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, CcelError> {
        let s = self.take(4, what)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(s);
        Ok(u32::from_le_bytes(a))
    }
}

/// Replays `log` into RTMR0..3.
pub fn replay(log: &[u8]) -> Result<Replay, CcelError> {
    let mut c = Cursor { b: log, p: 0 };
    // TCG_PCR_EVENT (SHA-1 format) carrying the Spec ID Event03.
    let _index = c.u32("spec id index")?;
    let ty = c.u32("spec id type")?;
    c.take(20, "spec id digest")?;
    let size = c.u32("spec id size")? as usize;
    let spec = c.take(size, "spec id event")?;
    if ty != EV_NO_ACTION || !spec.starts_with(b"Spec ID Event03\0") {
        return Err(CcelError::NoSpecId(format!("type {ty:#x}")));
    }
    let mut s = Cursor { b: spec, p: 24 };
    let n = s.u32("spec id algorithm count")?;
    if n == 0 || n > MAX_DIGEST_ALGS {
        return Err(CcelError::NoSpecId(format!("{n} algorithms")));
    }
    let mut sizes = Vec::new();
    for _ in 0..n {
        let alg = s.u16("spec id algorithm")?;
        let len = s.u16("spec id digest size")?;
        sizes.push((alg, usize::from(len)));
    }

    let mut rtmr = [[0u8; 48]; 4];
    let mut events = Vec::new();
    loop {
        let offset = c.p;
        let rest = log.get(offset..).unwrap_or_default();
        // The table is padded (0xFF, sometimes 0x00) after the last event.
        if rest.len() < 8 || rest.iter().all(|&b| b == 0xff) || rest.iter().all(|&b| b == 0) {
            break;
        }
        let mr_index = c.u32("event index")?;
        if mr_index == u32::MAX {
            break;
        }
        if events.len() >= MAX_EVENTS {
            return Err(CcelError::TooManyEvents(MAX_EVENTS));
        }
        let event_type = c.u32("event type")?;
        let count = c.u32("digest count")?;
        if count > MAX_DIGEST_ALGS {
            return Err(CcelError::Truncated {
                what: "digest count",
                offset,
                len: log.len(),
            });
        }
        let mut sha384 = None;
        for _ in 0..count {
            let alg = c.u16("digest algorithm")?;
            let len = sizes
                .iter()
                .find(|(a, _)| *a == alg)
                .map(|(_, l)| *l)
                .ok_or(CcelError::UnknownAlgorithm { offset, alg })?;
            let d = c.take(len, "digest")?;
            if alg == SHA384 && len == 48 {
                let mut a = [0u8; 48];
                a.copy_from_slice(d);
                sha384 = Some(a);
            }
        }
        let data_len = c.u32("event size")? as usize;
        c.take(data_len, "event data")?;
        if event_type != EV_NO_ACTION && (1..=4).contains(&mr_index) {
            let digest = sha384.ok_or(CcelError::NoSha384 { offset })?;
            if let Some(reg) = rtmr.get_mut((mr_index - 1) as usize) {
                let mut buf = [0u8; 96];
                buf[..48].copy_from_slice(reg);
                buf[48..].copy_from_slice(&digest);
                reg.copy_from_slice(ring::digest::digest(&ring::digest::SHA384, &buf).as_ref());
            }
        }
        events.push(Event {
            offset,
            mr_index,
            event_type,
            sha384,
            data_len,
        });
    }
    Ok(Replay { rtmr, events })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(matches!(replay(&[]), Err(CcelError::Truncated { .. })));
        assert!(matches!(
            replay(&[0u8; 64]),
            Err(CcelError::NoSpecId(_)) | Err(CcelError::Truncated { .. })
        ));
        let mut x = vec![0u8; 40];
        x[4] = 3;
        x[28] = 200;
        assert!(replay(&x).is_err());
    }
}
