//! The tokenizer built from the demo model's GGUF gives exactly llama.cpp's
//! ids for every reference string (`../shared/reference/smollm2-llamacpp.json`).
//! The model comes from `scripts/fetch-model.sh` (the test script runs it).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
use common::ids;

use ciel_engine::gguf::parse_metadata;
use ciel_engine::tokenizer::Tokenizer;
use std::path::PathBuf;

fn model() -> Vec<u8> {
    let path = ciel_engine::demo_model_path();
    // Only the metadata is needed: read the first 8 MiB.
    use std::io::Read;
    let mut f = std::fs::File::open(&path).unwrap_or_else(|e| {
        panic!(
            "demo model {} missing ({e}): run scripts/fetch-model.sh",
            path.display()
        )
    });
    let mut head = vec![0u8; 8 << 20];
    let n = f.read(&mut head).unwrap();
    head.truncate(n);
    head
}

fn reference() -> serde_json::Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/smollm2-llamacpp.json");
    let p = std::env::var_os("CIEL_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or(p);
    serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap()
}

#[test]
fn ids_equal_llama_cpp_for_every_reference_string() {
    let meta = parse_metadata(&model()).unwrap();
    let tok = Tokenizer::from_gguf(&meta).unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    let r = reference();
    let cases = r["tokenize"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want = ids(&c["ids"]);
        let got = tok.encode(text, true);
        assert_eq!(got, want, "ids for {text:?}");
        assert_eq!(
            tok.decode(&got, false),
            c["detokenized"].as_str().unwrap(),
            "round trip of {text:?}"
        );
        assert_eq!(
            tok.decode(&got, true),
            text,
            "round trip with special tokens of {text:?}"
        );
    }
    // The chat prompts of the greedy references tokenize identically too.
    for g in r["greedy"].as_array().unwrap() {
        let want = ids(&g["prompt_ids"]);
        assert_eq!(tok.encode(g["prompt"].as_str().unwrap(), true), want);
    }
    assert_eq!((tok.bos, tok.eos), (Some(1), Some(2)));
    // Without special parsing, marker text is ordinary text.
    assert_ne!(tok.encode("<|im_start|>", false), vec![1]);
}

#[test]
fn the_models_chat_template_renders_the_reference_prompt() {
    use ciel_engine::chat::{ChatTemplate, Message};
    let meta = parse_metadata(&model()).unwrap();
    let t = ChatTemplate::from_gguf(&meta).unwrap().unwrap();
    let r = reference();
    let want = r["greedy"][0]["prompt"].as_str().unwrap();
    // No system message: the template adds SmolLM's default one.
    let msgs = [Message::new(
        "user",
        "Explain in a few sentences why the sky is blue.",
    )];
    assert_eq!(t.render(&msgs, true).unwrap(), want);
    let tok = Tokenizer::from_gguf(&meta).unwrap();
    let want_ids = ids(&r["greedy"][0]["prompt_ids"]);
    assert_eq!(tok.encode(&t.render(&msgs, true).unwrap(), true), want_ids);
    assert!(t.render(&[Message::new("robot", "x")], true).is_err());
}

/// Every BPE pre-tokenizer ciel implements gives llama.cpp's ids: the demo
/// model's vocabulary under each one (`tokenizer.ggml.pre` replaced), as
/// llama.cpp tokenized it (`reference/smollm2-pre-tokenizers-llamacpp.json`,
/// from `scripts/llamacpp-reference.py --pre-tokenizers`).
#[test]
fn every_pre_tokenizer_gives_llama_cpps_ids() {
    use ciel_engine::gguf::Value;
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference/smollm2-pre-tokenizers-llamacpp.json");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let mut meta = parse_metadata(&model()).unwrap();
    let pres = r["pre_tokenizers"].as_object().unwrap();
    assert!(pres.len() >= 5);
    for (pre, cases) in pres {
        meta.kv
            .insert("tokenizer.ggml.pre".into(), Value::Str(pre.clone()));
        let tok = Tokenizer::from_gguf(&meta).unwrap();
        for c in cases.as_array().unwrap() {
            let text = c["text"].as_str().unwrap();
            assert_eq!(
                tok.encode(text, true),
                ids(&c["ids"]),
                "pre-tokenizer {pre}, text {text:?}"
            );
        }
    }
}
