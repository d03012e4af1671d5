//! The certificate table an SEV-SNP guest receives with an extended report
//! (`SNP_GET_EXT_REPORT`, or configfs-tsm's `auxblob`): entries of
//! `{guid: [u8; 16], offset: u32 LE, length: u32 LE}`, ended by an all-zero
//! entry, offsets counted from the start of the table. GUIDs are in RFC
//! 4122 byte order (as AMD's tools write them with `uuid_parse`).
//!
//! The host fills this table: it is untrusted input. Every entry is bounds
//! checked; the certificates are only *candidates* that the chain
//! verification then accepts or rejects.

/// Why a table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertTableError {
    #[error("certificate table: entry {index} at byte {at} is truncated")]
    Truncated { index: usize, at: usize },
    #[error(
        "certificate table: entry {index} ({name}) points outside the table ({offset}+{length} > {len})"
    )]
    OutOfBounds {
        index: usize,
        name: &'static str,
        offset: u32,
        length: u32,
        len: usize,
    },
    #[error("certificate table: {0} appears twice")]
    Duplicate(&'static str),
    #[error("certificate table: no VCEK or VLEK")]
    NoSigner,
}

const VCEK: [u8; 16] = guid(
    0x63da758d,
    0xe664,
    0x4564,
    [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd],
);
const VLEK: [u8; 16] = guid(
    0xa8074bc2,
    0xa25a,
    0x483e,
    [0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1],
);
const ASK: [u8; 16] = guid(
    0x4ab7b379,
    0xbbac,
    0x4fe4,
    [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82],
);
const ARK: [u8; 16] = guid(
    0xc0b406a4,
    0xa803,
    0x4952,
    [0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae],
);

/// A GUID's 16 bytes in RFC 4122 order.
const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_be_bytes();
    let b = b.to_be_bytes();
    let c = c.to_be_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// The certificates of a table (DER), by role. Unknown GUIDs are skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertTable {
    pub vcek: Option<Vec<u8>>,
    pub vlek: Option<Vec<u8>>,
    pub ask: Option<Vec<u8>>,
    pub ark: Option<Vec<u8>>,
}

impl CertTable {
    /// The report's signing certificate (VLEK if present, else VCEK).
    pub fn signer(&self) -> Result<&[u8], CertTableError> {
        self.vlek
            .as_deref()
            .or(self.vcek.as_deref())
            .ok_or(CertTableError::NoSigner)
    }

    /// Builds a table (for the simulated platform and tests).
    pub fn encode(&self) -> Vec<u8> {
        let entries: Vec<([u8; 16], &Vec<u8>)> = [
            (VCEK, &self.vcek),
            (VLEK, &self.vlek),
            (ASK, &self.ask),
            (ARK, &self.ark),
        ]
        .into_iter()
        .filter_map(|(g, c)| c.as_ref().map(|c| (g, c)))
        .collect();
        let mut offset = entries.len().saturating_add(1).saturating_mul(24);
        let mut head = Vec::new();
        let mut body = Vec::new();
        for (g, cert) in entries {
            head.extend_from_slice(&g);
            head.extend_from_slice(&u32::try_from(offset).unwrap_or(u32::MAX).to_le_bytes());
            head.extend_from_slice(&u32::try_from(cert.len()).unwrap_or(u32::MAX).to_le_bytes());
            body.extend_from_slice(cert);
            offset = offset.saturating_add(cert.len());
        }
        head.extend_from_slice(&[0u8; 24]);
        head.extend_from_slice(&body);
        head
    }

    /// Parses a table.
    pub fn parse(table: &[u8]) -> Result<Self, CertTableError> {
        let mut out = CertTable::default();
        let mut index = 0usize;
        loop {
            let at = index.saturating_mul(24);
            let entry = at
                .checked_add(24)
                .and_then(|end| table.get(at..end))
                .ok_or(CertTableError::Truncated { index, at })?;
            let (g, rest) = entry.split_at(16);
            if entry.iter().all(|&b| b == 0) {
                break;
            }
            let word = |i: usize| {
                let mut w = [0u8; 4];
                w.copy_from_slice(rest.get(i..i.saturating_add(4)).unwrap_or(&[0; 4]));
                u32::from_le_bytes(w)
            };
            let (offset, length) = (word(0), word(4));
            let (name, slot) = match <[u8; 16]>::try_from(g).unwrap_or([0; 16]) {
                VCEK => ("VCEK", &mut out.vcek),
                VLEK => ("VLEK", &mut out.vlek),
                ASK => ("ASK", &mut out.ask),
                ARK => ("ARK", &mut out.ark),
                _ => {
                    index = index.saturating_add(1);
                    continue;
                }
            };
            let cert = (offset as usize)
                .checked_add(length as usize)
                .and_then(|end| table.get(offset as usize..end))
                .ok_or(CertTableError::OutOfBounds {
                    index,
                    name,
                    offset,
                    length,
                    len: table.len(),
                })?;
            if slot.is_some() {
                return Err(CertTableError::Duplicate(name));
            }
            *slot = Some(cert.to_vec());
            index = index.saturating_add(1);
        }
        Ok(out)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_in_rfc_4122_byte_order() {
        assert_eq!(hex::encode(VCEK), "63da758de6644564adc5f4b93be8accd");
        assert_eq!(hex::encode(ARK), "c0b406a4a803495297433fb6014cd0ae");
    }

    #[test]
    fn round_trips_and_refuses_bad_tables() {
        let t = CertTable {
            vcek: Some(b"vcek-der".to_vec()),
            ask: Some(b"ask".to_vec()),
            ark: Some(b"ark!".to_vec()),
            vlek: None,
        };
        let bytes = t.encode();
        assert_eq!(CertTable::parse(&bytes).unwrap(), t);
        assert_eq!(t.signer().unwrap(), b"vcek-der");
        // Every truncation fails cleanly (no panic) unless it keeps the
        // whole table.
        for cut in 0..bytes.len() {
            assert!(CertTable::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // An entry pointing past the end.
        let mut bad = bytes.clone();
        bad[20] = 0xff;
        assert!(matches!(
            CertTable::parse(&bad),
            Err(CertTableError::OutOfBounds { name: "VCEK", .. })
        ));
        // The same GUID twice.
        let mut dup = bytes.clone();
        dup[24..40].copy_from_slice(&VCEK);
        assert_eq!(
            CertTable::parse(&dup),
            Err(CertTableError::Duplicate("VCEK"))
        );
        assert_eq!(CertTable::default().signer(), Err(CertTableError::NoSigner));
    }
}
