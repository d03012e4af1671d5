//! The guest's sealed load: the model comes back only if the plaintext
//! matches the digest its header claims, checked beside the load.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ciel_enclave::sealed_model::{SealedModelError, load_unsealed};
use ciel_protocol::sealed::{
    DataKey, ModelInfo, SealError, SealParams, UnsealOptions, seal, unseal_in_memory,
};

fn sealed_with_claim(plain: &[u8], claimed_sha256: [u8; 32], key: &DataKey) -> Vec<u8> {
    let params = SealParams {
        resource: "test/model-key/demo".into(),
        model: ModelInfo {
            name: "demo".into(),
            format: "gguf".into(),
        },
        chunk_size: 1 << 20,
    };
    let mut out = Vec::new();
    seal(
        &mut &plain[..],
        plain.len() as u64,
        claimed_sha256,
        key,
        &params,
        &mut out,
        |_| {},
    )
    .unwrap();
    out
}

#[test]
fn sealed_load_refuses_a_plaintext_that_is_not_the_claimed_model() {
    let path = ciel_engine::demo_model_path();
    let plain = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "demo model {} missing ({e}): run scripts/fetch-model.sh",
            path.display()
        )
    });
    let key = DataKey::from_bytes([5; 32]);
    let options = UnsealOptions {
        verify_plaintext_digest: false,
        ..UnsealOptions::default()
    };
    let mut sha = [0u8; 32];
    sha.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, &plain).as_ref());

    let honest = unseal_in_memory(sealed_with_claim(&plain, sha, &key), &key, options).unwrap();
    let mut model = load_unsealed(&honest).unwrap();
    assert_eq!(model.forward(&[1]).unwrap().len(), 49152);

    // Authentic chunks (the sealer holds the key) but a false digest claim.
    sha[0] ^= 1;
    let lying = unseal_in_memory(sealed_with_claim(&plain, sha, &key), &key, options).unwrap();
    match load_unsealed(&lying) {
        Err(SealedModelError::Sealed(SealError::PlaintextDigest)) => {}
        other => panic!("expected a digest refusal, got {other:?}"),
    }
}
