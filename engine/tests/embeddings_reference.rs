//! all-MiniLM-L6-v2 against sentence-transformers (PyTorch) on the same
//! weights (`reference/minilm-sentence-transformers.json`, written by
//! `scripts/embeddings-reference.py`): the same token ids for every
//! reference text, and vectors within 1e-4 of cosine of its vectors. The
//! model folder comes from `scripts/fetch-model.sh minilm` (the test
//! script runs it); the test packs it into one bundle as `ciel embeddings
//! pack` does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use ciel_engine::embeddings::{EmbeddingError, EmbeddingModel, read_folder};
use std::path::PathBuf;

fn folder() -> PathBuf {
    ciel_engine::cached_model("all-MiniLM-L6-v2")
}

fn bundle() -> Vec<u8> {
    read_folder(&folder()).unwrap_or_else(|e| panic!("{e} (scripts/fetch-model.sh minilm)"))
}

fn reference() -> serde_json::Value {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/minilm-sentence-transformers.json"
    );
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn vectors_and_token_ids_equal_sentence_transformers() {
    let r = reference();
    let weights = std::fs::read(folder().join("model.safetensors")).unwrap();
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&weights));
    assert_eq!(digest, r["model_safetensors_sha256"].as_str().unwrap());
    let bytes = bundle();
    assert_eq!(bytes, bundle(), "the same folder packs to the same bytes");
    let model = EmbeddingModel::from_bundle(&bytes).unwrap();
    assert_eq!(model.dimensions(), 384);
    assert_eq!(
        model.max_tokens() as u64,
        r["max_seq_length"].as_u64().unwrap()
    );
    let mut worst = 1.0f64;
    for case in r["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let want_ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = model.tokenize(text).unwrap();
        assert_eq!(ids, want_ids, "{text:?}");
        let ours = model.embed_ids(&ids).unwrap();
        let theirs: Vec<f64> = case["vector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(ours.len(), theirs.len());
        let dot: f64 = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| f64::from(*a) * b)
            .sum();
        let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
        let cosine = dot
            / (norm(&mut ours.iter().map(|x| f64::from(*x))) * norm(&mut theirs.iter().copied()));
        worst = worst.min(cosine);
        assert!(cosine >= 1.0 - 1e-4, "{text:?}: cosine {cosine}");
        // Normalised, as the model's Normalize module makes them.
        let length = norm(&mut ours.iter().map(|x| f64::from(*x)));
        assert!((length - 1.0).abs() < 1e-5, "{text:?}: length {length}");
    }
    println!("worst cosine against sentence-transformers: {worst:.8}");
}

#[test]
fn inputs_beyond_the_limit_and_empty_ones_are_refused_not_cut() {
    let model = EmbeddingModel::from_bundle(&bundle()).unwrap();
    let long = "word ".repeat(300);
    let inputs = ["fine".to_string(), long, String::new()];
    match model.tokenize_all(&inputs[..2]) {
        Err(EmbeddingError::TooLong {
            index: 1,
            tokens,
            limit: 256,
        }) => assert!(tokens > 256),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        model.tokenize_all(&inputs[2..]),
        Err(EmbeddingError::Empty(0))
    ));
    // Not a bundle: the raw safetensors, and a truncated bundle.
    let raw = std::fs::read(folder().join("model.safetensors")).unwrap();
    let e = EmbeddingModel::from_bundle(&raw).unwrap_err().to_string();
    assert!(e.contains("not a ciel embedding bundle"), "{e}");
    let mut cut = bundle();
    cut.truncate(cut.len() / 2);
    assert!(EmbeddingModel::from_bundle(&cut).is_err());
}
