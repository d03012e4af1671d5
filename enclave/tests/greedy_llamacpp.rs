//! The engine reproduces llama.cpp's greedy completions of the demo model
//! up to the first near-tie (where quantized kernels summing in another
//! order may legitimately pick the other token).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::needless_range_loop
)]

use ciel_enclave::engine::model::{Model, argmax};
use std::path::PathBuf;

/// Logit margin below which llama.cpp's choice may flip in another engine.
const NEAR_TIE: f64 = 0.25;

fn model_path() -> PathBuf {
    std::env::var_os("CIEL_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("CIEL_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/ciel")
                });
            cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn greedy_completions_match_llama_cpp_until_a_near_tie() {
    let path = model_path();
    let mut f = std::fs::File::open(&path).unwrap_or_else(|e| {
        panic!(
            "demo model {} missing ({e}): run scripts/fetch-model.sh",
            path.display()
        )
    });
    let mut model = Model::load(&mut f).unwrap();
    let refp = std::env::var_os("CIEL_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/reference/smollm2-llamacpp.json")
        });
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(refp).unwrap()).unwrap();
    for case in r["greedy"].as_array().unwrap() {
        let prompt = ids(&case["prompt_ids"]);
        let want = ids(&case["greedy_ids"]);
        let margins: Vec<f64> = case["top1_margin"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        // Compare while llama.cpp's choice was clear; stop at the first near-tie.
        let comparable = margins
            .iter()
            .position(|&m| m < NEAR_TIE)
            .unwrap_or(want.len())
            .min(want.len());
        model.reset();
        let mut logits = model.forward(&prompt).unwrap();
        let mut got = Vec::new();
        for step in 0..comparable {
            let (next, _) = argmax(&logits);
            got.push(next);
            assert_eq!(
                next,
                want[step],
                "step {step} of {:?}: ours {got:?}",
                case["text"].as_str().unwrap_or("")
            );
            if step + 1 < comparable {
                logits = model.forward(&[next]).unwrap();
            }
        }
        assert!(comparable >= 8, "too few comparable steps ({comparable})");
    }
}
