//! The sealed format's tampering matrix: every manipulation a host could
//! make is detected, names the chunk, and releases no unauthenticated
//! plaintext.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use ciel_protocol::sealed::{
    DataKey, ModelInfo, SealError, SealParams, SealedHeader, TAG_LEN, UnsealOptions, seal, unseal,
};

const CHUNK: u32 = 4096;

fn model(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

fn sha(b: &[u8]) -> [u8; 32] {
    let mut o = [0u8; 32];
    o.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, b).as_ref());
    o
}

fn seal_bytes(plain: &[u8], key: &DataKey) -> Vec<u8> {
    let params = SealParams {
        resource: "default/model-key/test".into(),
        model: ModelInfo {
            name: "test".into(),
            format: "raw".into(),
        },
        chunk_size: CHUNK,
    };
    let mut out = Vec::new();
    seal(
        &mut &plain[..],
        plain.len() as u64,
        sha(plain),
        key,
        &params,
        &mut out,
        |_| {},
    )
    .unwrap();
    out
}

/// Unseals, returning the plaintext released to the sink and the result.
fn open(
    sealed: &[u8],
    key: &DataKey,
    threads: usize,
) -> (Vec<u8>, Result<SealedHeader, SealError>) {
    let mut released = Vec::new();
    let r = unseal(
        &mut &sealed[..],
        key,
        UnsealOptions {
            threads,
            verify_plaintext_digest: true,
        },
        |b| {
            released.extend_from_slice(b);
            Ok(())
        },
    );
    (released, r)
}

#[test]
fn round_trips_at_every_size_boundary_and_thread_count() {
    let key = DataKey::generate().unwrap();
    for len in [0, 1, 4095, 4096, 4097, 3 * 4096, 3 * 4096 + 5, 50_000] {
        let plain = model(len);
        let sealed = seal_bytes(&plain, &key);
        let h = SealedHeader::parse(&sealed).unwrap();
        assert_eq!(h.file_len(), sealed.len() as u64, "len {len}");
        for threads in [1, 2, 3, 8] {
            let (got, r) = open(&sealed, &key, threads);
            r.unwrap();
            assert_eq!(got, plain, "len {len}, {threads} threads");
        }
    }
}

/// A 5-chunk file: every manipulation, and what it must produce.
#[test]
fn tampering_matrix() {
    let key = DataKey::generate().unwrap();
    let plain = model(4 * 4096 + 100);
    let sealed = seal_bytes(&plain, &key);
    let h = SealedHeader::parse(&sealed).unwrap();
    assert_eq!(h.chunks(), 5);
    let c = |i: u64| h.chunk_offset(i) as usize;
    let full = CHUNK as usize + TAG_LEN;

    // Flip a ciphertext byte in chunk 2: whatever was released before the
    // failure is an authenticated prefix; chunk 2 itself never is.
    for threads in [1, 4] {
        let mut t = sealed.clone();
        t[c(2) + 17] ^= 1;
        let (released, r) = open(&t, &key, threads);
        assert!(
            matches!(r, Err(SealError::ChunkAuthentication { chunk: 2, .. })),
            "{r:?}"
        );
        assert!(
            released.len() <= 2 * CHUNK as usize,
            "released {} bytes",
            released.len()
        );
        assert_eq!(&released[..], &plain[..released.len()]);
    }
    // Flip a tag byte of the last chunk.
    let mut t = sealed.clone();
    let n = t.len();
    t[n - 1] ^= 1;
    assert!(matches!(
        open(&t, &key, 2).1,
        Err(SealError::ChunkAuthentication { chunk: 4, .. })
    ));

    // Truncate: drop the last chunk, cut inside it, cut at an earlier boundary, drop one byte.
    for cut in [c(4), c(4) + 50, c(3), sealed.len() - 1] {
        let r = open(&sealed[..cut], &key, 2).1;
        assert!(
            matches!(r, Err(SealError::Truncated { .. })),
            "cut at {cut}: {r:?}"
        );
    }
    // Reorder chunks 1 and 2.
    let mut t = sealed.clone();
    t[c(1)..c(1) + full].copy_from_slice(&sealed[c(2)..c(2) + full]);
    t[c(2)..c(2) + full].copy_from_slice(&sealed[c(1)..c(1) + full]);
    assert!(matches!(
        open(&t, &key, 2).1,
        Err(SealError::ChunkAuthentication { chunk: 1, .. })
    ));
    // Duplicate chunk 0 over chunk 1.
    let mut t = sealed.clone();
    t[c(1)..c(1) + full].copy_from_slice(&sealed[c(0)..c(0) + full]);
    assert!(matches!(
        open(&t, &key, 2).1,
        Err(SealError::ChunkAuthentication { chunk: 1, .. })
    ));
    // Append a byte.
    let mut t = sealed.clone();
    t.push(0);
    assert!(matches!(
        open(&t, &key, 2).1,
        Err(SealError::TrailingData { .. })
    ));
    // Splice: chunk 3 from another file of the same plaintext and key.
    let other = seal_bytes(&plain, &key);
    let mut t = sealed.clone();
    t[c(3)..c(3) + full].copy_from_slice(&other[c(3)..c(3) + full]);
    assert!(matches!(
        open(&t, &key, 2).1,
        Err(SealError::ChunkAuthentication { chunk: 3, .. })
    ));
    // Wrong key: nothing released.
    let wrong = DataKey::generate().unwrap();
    let (released, r) = open(&sealed, &wrong, 2);
    assert!(matches!(
        r,
        Err(SealError::ChunkAuthentication { chunk: 0, .. })
    ));
    assert!(released.is_empty());
}

#[test]
fn header_edits_are_detected() {
    let key = DataKey::generate().unwrap();
    let plain = model(9000);
    let sealed = seal_bytes(&plain, &key);
    let h = SealedHeader::parse(&sealed).unwrap();
    let text = String::from_utf8_lossy(&sealed[14..h.len]).into_owned();
    // A same-length edit of the model name parses, but every chunk fails.
    let edited = text.replacen("\"name\":\"test\"", "\"name\":\"best\"", 1);
    assert_ne!(edited, text);
    let mut t = sealed.clone();
    t[14..h.len].copy_from_slice(edited.as_bytes());
    let (released, r) = open(&t, &key, 2);
    assert!(
        matches!(r, Err(SealError::ChunkAuthentication { chunk: 0, .. })),
        "{r:?}"
    );
    assert!(released.is_empty());
    // Magic, version, header length, JSON, unknown field.
    let mut t = sealed.clone();
    t[0] ^= 1;
    assert!(matches!(open(&t, &key, 1).1, Err(SealError::Magic)));
    let mut t = sealed.clone();
    t[9] = 2;
    assert!(matches!(open(&t, &key, 1).1, Err(SealError::Version(2))));
    let mut t = sealed.clone();
    t[10] = 0xff;
    assert!(matches!(
        open(&t, &key, 1).1,
        Err(SealError::HeaderLength(_))
    ));
    let mut t = sealed.clone();
    t[14] = b'[';
    assert!(matches!(open(&t, &key, 1).1, Err(SealError::HeaderJson(_))));
    let edited = text.replacen("\"alg\"", "\"alx\"", 1);
    let mut t = sealed.clone();
    t[14..h.len].copy_from_slice(edited.as_bytes());
    assert!(matches!(open(&t, &key, 1).1, Err(SealError::HeaderJson(_))));
}

#[test]
fn errors_name_chunk_and_offset() {
    let key = DataKey::generate().unwrap();
    let sealed = seal_bytes(&model(10_000), &key);
    let h = SealedHeader::parse(&sealed).unwrap();
    let mut t = sealed.clone();
    t[h.chunk_offset(1) as usize + 3] ^= 0x80;
    let msg = open(&t, &key, 1).1.unwrap_err().to_string();
    assert!(
        msg.contains("chunk 1") && msg.contains(&format!("offset {}", h.chunk_offset(1))),
        "{msg}"
    );
}

#[test]
fn truncation_at_every_length_never_panics_or_succeeds() {
    let key = DataKey::generate().unwrap();
    let sealed = seal_bytes(&model(5000), &key);
    for cut in 0..sealed.len() {
        assert!(open(&sealed[..cut], &key, 2).1.is_err(), "cut at {cut}");
    }
}

#[test]
fn in_memory_unsealing_matches_streaming_and_detects_the_same_tampering() {
    use ciel_protocol::sealed::unseal_in_memory;
    use std::io::{Read, Seek, SeekFrom};
    let key = DataKey::generate().unwrap();
    for len in [0, 1, 4096, 4097, 5 * 4096 + 33] {
        let plain = model(len);
        let sealed = seal_bytes(&plain, &key);
        for threads in [1, 2, 5] {
            let p = unseal_in_memory(
                sealed.clone(),
                &key,
                UnsealOptions {
                    threads,
                    verify_plaintext_digest: true,
                },
            )
            .unwrap();
            let mut got = Vec::new();
            p.reader().read_to_end(&mut got).unwrap();
            assert_eq!(got, plain, "len {len} threads {threads}");
            if len > 5000 {
                let mut r = p.reader();
                r.seek(SeekFrom::Start(4090)).unwrap();
                let mut b = [0u8; 20];
                r.read_exact(&mut b).unwrap();
                assert_eq!(&b[..], &plain[4090..4110], "read across a chunk boundary");
                assert!(r.seek(SeekFrom::Current(-100_000)).is_err());
            }
        }
    }
    let plain = model(4 * 4096 + 100);
    let sealed = seal_bytes(&plain, &key);
    let h = SealedHeader::parse(&sealed).unwrap();
    let opts = UnsealOptions {
        threads: 3,
        verify_plaintext_digest: false,
    };
    let mut t = sealed.clone();
    t[h.chunk_offset(3) as usize + 9] ^= 1;
    assert!(matches!(
        unseal_in_memory(t, &key, opts),
        Err(SealError::ChunkAuthentication { chunk: 3, .. })
    ));
    let cut = sealed[..h.chunk_offset(4) as usize].to_vec();
    assert!(matches!(
        unseal_in_memory(cut, &key, opts),
        Err(SealError::Truncated { chunk: 4, .. })
    ));
    let mut long = sealed.clone();
    long.push(1);
    assert!(matches!(
        unseal_in_memory(long, &key, opts),
        Err(SealError::TrailingData { .. })
    ));
    let wrong = DataKey::generate().unwrap();
    assert!(matches!(
        unseal_in_memory(sealed, &wrong, opts),
        Err(SealError::ChunkAuthentication { chunk: 0, .. })
    ));
}

#[test]
fn a_file_sealed_by_an_independent_implementation_opens() {
    // protocol/testdata/make_independent_vector.py wrote it from the spec alone.
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/independent-python.csm"
    ))
    .unwrap();
    let key = DataKey::from_bytes([3; 32]);
    let (got, r) = open(&bytes, &key, 2);
    let h = r.unwrap();
    assert_eq!(h.header.model.name, "seed");
    assert_eq!(
        got,
        (0..10_000usize)
            .map(|i| (i * 7 % 256) as u8)
            .collect::<Vec<u8>>()
    );
}
