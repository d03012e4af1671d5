//! The guest's object-store source (a Kubernetes pod's sealed model): an
//! honest store gives back the bytes whole, on several ranges at once;
//! a store that ignores ranges or answers another range is refused by name;
//! one that corrupts bytes passes them on — and the sealed model's
//! authentication refuses them (`ciel unseal` here).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[path = "common/object_store.rs"]
mod object_store;
use ciel_enclave::serve::object_store::ObjectStore;
use object_store::{Behaviour, serve};

fn blob(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn an_honest_store_gives_the_object_whole_in_parallel_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(20 << 20); // three ranges of 8 MiB at most
    std::fs::write(dir.path().join("model.csm"), &data).unwrap();
    std::fs::create_dir(dir.path().join("team")).unwrap();
    std::fs::write(dir.path().join("team/small.csm"), b"x").unwrap();
    let (addr, _stop) = serve(dir.path(), Behaviour::Honest);
    let store = ObjectStore::new(&format!("http://{addr}/models/"), None).unwrap();
    assert_eq!(store.fetch("model.csm", 4, 1 << 30).unwrap(), data);
    assert_eq!(store.fetch("team/small.csm", 4, 1 << 30).unwrap(), b"x");
    // Larger than the limit: refused before memory is taken.
    let e = store.fetch("model.csm", 4, 1 << 20).unwrap_err();
    assert!(e.to_string().contains("limit"), "{e}");
    let e = store.fetch("absent.csm", 4, 1 << 30).unwrap_err();
    assert!(e.to_string().contains("HTTP 404"), "{e}");
}

#[test]
fn stores_that_do_not_serve_the_range_asked_for_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.csm"), blob(20 << 20)).unwrap();
    for (behaviour, expect) in [
        (Behaviour::IgnoresRanges, "HTTP 200"),
        (Behaviour::WrongRange, "Content-Range"),
    ] {
        let (addr, _stop) = serve(dir.path(), behaviour);
        let store = ObjectStore::new(&format!("http://{addr}/models"), None).unwrap();
        let e = store.fetch("model.csm", 2, 1 << 30).unwrap_err();
        assert!(e.to_string().contains(expect), "{behaviour:?}: {e}");
    }
}

#[test]
fn corrupted_bytes_are_caught_by_the_sealed_format() {
    use ciel_protocol::sealed::{
        DataKey, ModelInfo, SealParams, UnsealOptions, seal, unseal_in_memory,
    };
    let plain = blob(20 << 20);
    let sha: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &plain)
        .as_ref()
        .try_into()
        .unwrap();
    let key = DataKey::generate().unwrap();
    let params = SealParams {
        resource: "default/model-key/x".into(),
        model: ModelInfo {
            name: "x".into(),
            format: "raw".into(),
        },
        chunk_size: 1 << 20,
    };
    let mut sealed = Vec::new();
    seal(
        &mut &plain[..],
        plain.len() as u64,
        sha,
        &key,
        &params,
        &mut sealed,
        |_| {},
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.csm"), &sealed).unwrap();

    // The store flips a byte in every range but the first: the fetch cannot
    // tell (nothing from the store is believed) ...
    let (addr, _stop) = serve(dir.path(), Behaviour::Corrupts);
    let store = ObjectStore::new(&format!("http://{addr}/models"), None).unwrap();
    let got = store.fetch("model.csm", 3, 1 << 30).unwrap();
    assert_ne!(got, sealed);
    // ... and the authenticated decryption refuses the result.
    assert!(unseal_in_memory(got, &key, UnsealOptions::default()).is_err());
    assert!(unseal_in_memory(sealed, &key, UnsealOptions::default()).is_ok());
}
