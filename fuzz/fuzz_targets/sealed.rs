//! Sealed model headers and bodies under a fixed key: errors only.
#![no_main]
use ciel_protocol::sealed::{DataKey, SealedHeader, UnsealOptions, unseal, unseal_in_memory};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = SealedHeader::parse(data);
    let key = DataKey::from_bytes([3; 32]);
    let opts = UnsealOptions { threads: 2, verify_plaintext_digest: true };
    assert!(unseal(&mut &data[..], &key, opts, |_| Ok(())).is_err() || data.len() > 14);
    let _ = unseal_in_memory(data.to_vec(), &key, opts);
});
