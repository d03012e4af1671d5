//! Every architecture × weight type against llama.cpp's logits on the same
//! synthetic GGUF (`synthetic.rs`; the reference is committed).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use crate::model::Model;
use crate::synthetic::{
    ARCHS, WEIGHT_TYPES, file_name, gguf, llama_with_rope_freqs, phi3_with_long_rope, vocab_size,
};

/// How far a logit may be from llama.cpp's, as a fraction of the step's
/// largest logit, by weight type. Measured (llama, gemma2, gemma3, qwen2,
/// qwen3, phi3; Gemma's quantized models ≤ 2.3e-2, with its GELU):
/// f32 ≤ 2.1e-4 (Gemma's GELU goes through an f16 table in llama.cpp;
/// the others ≤ 2.7e-6); f16/bf16 ≤ 5.1e-3; quantized types ≤ 3.0e-2
/// (activations are quantized too, and llama.cpp's kernels for some types —
/// Q8_0, Q4_1, Q5_1 mostly, on the decode steps — round them differently;
/// Q5_0 and most K-quants match to 2.3e-6). Breaking the model moves f32
/// logits by 3–6e-2: a wrong sliding-window edge, a wrong local rotary
/// base, a wrong rotary pairing.
fn tolerance(weights: &str) -> f64 {
    match weights {
        "f32" => 1e-3,
        "f16" | "bf16" => 1e-2,
        _ => 4e-2,
    }
}

fn reference() -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference/synthetic-llamacpp.json");
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// One synthetic model's logits against llama.cpp's, after the digest
/// check; the worst difference seen.
fn check(r: &serde_json::Value, file: &str, bytes: &[u8], tolerance: f64) -> f64 {
    let prompt = ids(&r["prompt_ids"]);
    let fed = ids(&r["fed_ids"]);
    let entry = r["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["file"] == file)
        .unwrap_or_else(|| panic!("no reference for {file}"));
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
    assert_eq!(
        digest,
        entry["sha256"].as_str().unwrap(),
        "{file}: the generator no longer writes the bytes llama.cpp was run on"
    );
    let mut model = Model::load(&mut std::io::Cursor::new(bytes)).unwrap();
    let mut worst = 0f64;
    for (step, want) in entry["logits"].as_array().unwrap().iter().enumerate() {
        let logits = if step == 0 {
            model.forward(&prompt).unwrap()
        } else {
            model.forward(&[fed[step - 1]]).unwrap()
        };
        let want: Vec<f64> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(logits.len(), vocab_size());
        assert_eq!(want.len(), vocab_size());
        let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
        for (i, (&o, &w)) in logits.iter().zip(&want).enumerate() {
            let d = (f64::from(o) - w).abs() / scale;
            worst = worst.max(d);
            assert!(
                d <= tolerance,
                "{file}, step {step}, token {i}: ours {o}, llama.cpp's {w} ({d:.2e} of the largest logit)"
            );
        }
    }
    println!("{file}: worst relative difference {worst:.2e}");
    worst
}

#[test]
fn every_architecture_and_weight_type_gives_llama_cpps_logits() {
    let r = reference();
    let mut checked = 0;
    for &arch in ARCHS {
        for (name, dtype) in WEIGHT_TYPES {
            let file = file_name(arch, name);
            check(&r, &file, &gguf(arch, *dtype).unwrap(), tolerance(name));
            checked += 1;
        }
    }
    assert_eq!(checked, ARCHS.len() * WEIGHT_TYPES.len());
}

/// Llama 3.1's rotary frequency factors (`rope_freqs.weight`) are applied
/// as llama.cpp applies them, not ignored.
#[test]
fn llama_rope_frequency_factors_give_llama_cpps_logits() {
    let r = reference();
    let (file, bytes) = llama_with_rope_freqs().unwrap();
    check(&r, &file, &bytes, tolerance("f32"));
}

/// Phi-3 128k's LongRoPE: the long factors where more than the original
/// context is served, the short ones within it, and the attention factor
/// on cos and sin, as llama.cpp applies them; the two sets give different
/// logits, so a wrong choice fails.
#[test]
fn phi3_long_rope_factors_give_llama_cpps_logits() {
    let r = reference();
    let (long_file, long) = phi3_with_long_rope(16).unwrap();
    let (short_file, short) = phi3_with_long_rope(512).unwrap();
    check(&r, &long_file, &long, tolerance("f32"));
    check(&r, &short_file, &short, tolerance("f32"));
    let first = |file: &str| -> Vec<f64> {
        let entry = r["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["file"] == file)
            .unwrap();
        entry["logits"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    let (a, b) = (first(&long_file), first(&short_file));
    let apart = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(
        apart > 1e-2,
        "long and short factors gave the same logits ({apart})"
    );
}

/// A tensor the forward pass would not read (here: qwen2's q/k/v biases in
/// a file that says llama) refuses the model instead of being left out.
#[test]
fn a_tensor_the_pass_does_not_use_refuses_the_model() {
    use candle_core::quantized::gguf_file::{self, Value};
    let bytes = gguf(
        crate::arch::Arch::Qwen2,
        candle_core::quantized::GgmlDType::F32,
    )
    .unwrap();
    let mut cursor = std::io::Cursor::new(&bytes);
    let content = gguf_file::Content::read(&mut cursor).unwrap();
    let mut metadata: Vec<(String, Value)> = Vec::new();
    for (k, v) in &content.metadata {
        let k = k.replace("qwen2.", "llama.");
        let v = match k.as_str() {
            "general.architecture" => Value::String("llama".into()),
            _ => v.clone(),
        };
        metadata.push((k, v));
    }
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = content
        .tensor_infos
        .keys()
        .map(|n| {
            let t = content
                .tensor(&mut cursor, n, &candle_core::Device::Cpu)
                .unwrap();
            (n.clone(), t)
        })
        .collect();
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut relabelled = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut relabelled, &md, &ts).unwrap();
    let err = Model::load(&mut std::io::Cursor::new(relabelled.into_inner())).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("does not use") && msg.contains(".bias"),
        "{msg}"
    );
}

#[test]
fn the_kv_budget_bounds_the_context_and_a_full_context_is_refused() {
    let bytes = gguf(
        crate::arch::Arch::Llama,
        candle_core::quantized::GgmlDType::F32,
    )
    .unwrap();
    let mut model = Model::load(&mut std::io::Cursor::new(&bytes)).unwrap();
    // 2 layers × 2 KV heads × 64 dims × (key + value) × 4 bytes.
    assert_eq!(model.kv_bytes_per_token(), 2 * 2 * 64 * 2 * 4);
    let trained = model.context();
    assert_eq!(model.bound_kv_memory(u64::MAX).unwrap(), trained);
    // Whole blocks of 16 positions: one block holds the context.
    assert_eq!(model.bound_kv_memory(16 * 2048 + 100).unwrap(), 16);
    model.reset();
    model.forward(&[1; 15]).unwrap();
    model.forward(&[4]).unwrap();
    assert!(matches!(
        model.forward(&[5]),
        Err(crate::model::ModelError::ContextFull(16))
    ));
    assert_eq!(model.bound_kv_memory(16 * 2048 - 1).unwrap(), 0);
}

/// An unquantized synthetic llama, loaded with our kernels and candle's.
fn ours_and_candles() -> (Vec<u8>, Model, Model) {
    use crate::model::Kernels;
    let bytes = gguf(
        crate::arch::Arch::Llama,
        candle_core::quantized::GgmlDType::F32,
    )
    .unwrap();
    let load = |k| Model::load_with(&mut std::io::Cursor::new(&bytes), k).unwrap();
    let (ours, candle) = (load(Kernels::Ciel), load(Kernels::Candle));
    (bytes, ours, candle)
}

/// Unquantized, our pass (attention over the paged cache, in its own
/// order) and candle's `quantized_llama` compute the same logits up to f32
/// rounding, for a prompt and then token by token.
#[test]
fn our_pass_is_candles_llama_up_to_rounding() {
    let (_, mut ours, mut candle) = ours_and_candles();
    let mut step: Vec<u32> = (1..40).map(|i| (i * 7) % 30 + 1).collect();
    for round in 0..5 {
        let (a, b) = (ours.forward(&step).unwrap(), candle.forward(&step).unwrap());
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-4, "round {round}: logits differ by {worst}");
        step = vec![crate::model::argmax(&a).0];
    }
}

/// candle's pass (what runs on a GPU) through [`Model::step`], as the
/// scheduler drives it with `--max-batch 1`: a prompt whole or in chunks,
/// then token by token, each with our pass's logits up to rounding; a new
/// sequence from position 0 forgets the last; two sequences in one pass,
/// or a pass that does not continue the sequence, are refused.
#[test]
fn candles_pass_serves_one_sequence_at_a_time() {
    use crate::model::Kernels;
    use crate::transformer::Feed;
    let (bytes, mut ours, mut candle) = ours_and_candles();
    let prompt: Vec<u32> = (1..40).map(|i| (i * 5) % 30 + 1).collect();
    let feed = |pos, tokens, logits| Feed {
        blocks: &[],
        pos,
        tokens,
        logits,
    };
    let close = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
            < 1e-4
    };
    assert!(candle.step(&[]).unwrap().is_empty());
    // The prompt in two chunks, the first without logits.
    assert!(
        candle
            .step(&[feed(0, &prompt[..16], false)])
            .unwrap()
            .is_empty()
    );
    let chunked = candle.step(&[feed(16, &prompt[16..], true)]).unwrap();
    let whole = ours.forward(&prompt).unwrap();
    assert!(close(&chunked[0], &whole));
    let next = [crate::model::argmax(&whole).0];
    let a = candle.step(&[feed(prompt.len(), &next, true)]).unwrap();
    assert!(close(&a[0], &ours.forward(&next).unwrap()));
    // Another sequence from 0: the first one is forgotten.
    ours.reset();
    let other = [3u32, 1, 4, 1, 5];
    let b = candle.step(&[feed(0, &other, true)]).unwrap();
    assert!(close(&b[0], &ours.forward(&other).unwrap()));
    let e = candle
        .step(&[feed(5, &next, true), feed(0, &other, true)])
        .unwrap_err();
    assert!(e.to_string().contains("one sequence per pass"), "{e}");
    let e = candle.step(&[feed(2, &next, true)]).unwrap_err();
    assert!(e.to_string().contains("continue one sequence"), "{e}");
    // Our kernels are CPU code.
    let e = Model::load_on(
        &mut std::io::Cursor::new(&bytes),
        Kernels::Ciel,
        crate::device::ComputeDevice::Cuda(0),
    )
    .unwrap_err();
    assert!(e.to_string().contains("run on the CPU"), "{e}");
}
