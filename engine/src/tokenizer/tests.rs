//! The tokenizer's rules on tiny vocabularies; llama.cpp's ids on real
//! vocabularies are checked in `tests/tokenizer_llamacpp.rs`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

fn meta(model: &str, tokens: &[(&str, u64, f64)], extra: &[(&str, Value)]) -> Metadata {
    let mut kv = std::collections::BTreeMap::new();
    kv.insert("tokenizer.ggml.model".into(), Value::Str(model.into()));
    kv.insert(
        "tokenizer.ggml.tokens".into(),
        Value::Array(tokens.iter().map(|t| Value::Str(t.0.into())).collect()),
    );
    kv.insert(
        "tokenizer.ggml.token_type".into(),
        Value::Array(tokens.iter().map(|t| Value::U64(t.1)).collect()),
    );
    kv.insert(
        "tokenizer.ggml.scores".into(),
        Value::Array(tokens.iter().map(|t| Value::F64(t.2)).collect()),
    );
    for (k, v) in extra {
        kv.insert((*k).into(), v.clone());
    }
    Metadata {
        version: 3,
        tensor_count: 0,
        kv,
        end: 0,
    }
}

/// A SentencePiece vocabulary: BOS/EOS, a chat marker, a user-defined
/// token, byte tokens for 'x' and two bytes of 'é', and scored pieces.
fn spm(extra: &[(&str, Value)]) -> Tokenizer {
    let tokens = [
        ("<s>", 3, 0.0),           // 0
        ("</s>", 3, 0.0),          // 1
        ("<turn>", 3, 0.0),        // 2
        ("<b>", 4, 0.0),           // 3 user-defined
        ("<0x78>", 6, 0.0),        // 4 'x'
        ("<0xC3>", 6, 0.0),        // 5
        ("<0xA9>", 6, 0.0),        // 6
        ("▁", 1, -1.0),            // 7
        ("a", 1, -2.0),            // 8
        ("b", 1, -2.0),            // 9
        ("ab", 1, -1.5),           // 10
        ("▁a", 1, -0.5),           // 11
        ("▁ab", 1, -3.0),          // 12
        ("bb", 1, -0.1),           // 13
        ("<end_of_turn>", 3, 0.0), // 14
    ];
    let mut kv = vec![
        ("tokenizer.ggml.bos_token_id", Value::U64(0)),
        ("tokenizer.ggml.eos_token_id", Value::U64(1)),
    ];
    kv.extend(extra.iter().cloned());
    Tokenizer::from_gguf(&meta("llama", &tokens, &kv)).unwrap()
}

#[test]
fn sentencepiece_merges_by_score_with_the_space_prefix() {
    let t = spm(&[]);
    // "▁a" (-0.5) beats "ab" (-1.5); "▁ab" is then reachable but never
    // proposed: "▁a"+"b" merges only if "▁ab" scores, and it does (-3.0).
    assert_eq!(t.encode("ab", false), vec![12]);
    // "bb" (-0.1) is merged before "ab" (-1.5): a + bb.
    assert_eq!(t.encode("abb", false), vec![11, 13]);
    // Space prefix only where the model asks for it (default: yes).
    let no_prefix = spm(&[("tokenizer.ggml.add_space_prefix", Value::Bool(false))]);
    assert_eq!(no_prefix.encode("ab", false), vec![10]);
    assert_eq!(no_prefix.encode(" a", false), vec![11]);
}

#[test]
fn sentencepiece_falls_back_to_bytes_and_decodes_them() {
    let t = spm(&[("tokenizer.ggml.add_space_prefix", Value::Bool(false))]);
    assert_eq!(t.encode("xé", false), vec![4, 5, 6]);
    assert_eq!(t.decode(&[4, 5, 6, 11], false), "xé a");
}

#[test]
fn special_tokens_are_cut_out_and_prefix_the_next_text_with_a_space() {
    let t = spm(&[]);
    // With special parsing the marker is its token, and the text after it
    // is prefixed with a space again (llama.cpp's SentencePiece rule).
    assert_eq!(t.encode("<turn>a", true), vec![2, 11]);
    // Without, the marker is text (here: bytes it has no pieces for are
    // dropped to their byte tokens, which this vocabulary lacks) ...
    assert!(!t.encode("<turn>a", false).contains(&2));
    // ... but a user-defined token is always itself.
    assert_eq!(t.encode("a<b>a", false), vec![11, 3, 11]);
    assert_eq!(t.decode(&[2, 3], false), "<b>");
    assert_eq!(t.decode(&[2, 3], true), "<turn><b>");
}

#[test]
fn bos_and_eos_are_added_where_the_model_says_on_every_prompt() {
    // SentencePiece adds BOS by default.
    let t = spm(&[]);
    assert!(t.adds_bos());
    assert_eq!(t.encode_prompt("a", false), vec![0, 11]);
    assert_eq!(t.encode_chat("<turn>a"), vec![0, 2, 11]);
    // A template that already starts with BOS does not get a second one;
    // a raw prompt gets what it asks for, as in llama.cpp.
    assert_eq!(t.encode_chat("<s>a"), vec![0, 11]);
    assert_eq!(t.encode_prompt("<s>a", true), vec![0, 0, 11]);
    let t = spm(&[
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
    ]);
    assert_eq!(t.encode_prompt("a", false), vec![11, 1]);
    assert_eq!(t.encode("a", false), vec![11]);
}

#[test]
fn end_of_turn_markers_end_generation() {
    let t = spm(&[]);
    assert!(t.is_end_of_generation(1));
    assert!(t.is_end_of_generation(14));
    assert!(!t.is_end_of_generation(2));
}

#[test]
fn longer_special_tokens_are_cut_first_as_in_llama_cpp() {
    // "xab" starts earlier, but "abcd" is longer and is cut first.
    let tokens = [
        ("xab", 4, 0.0),
        ("abcd", 4, 0.0),
        ("x", 1, 0.0),
        ("c", 1, 0.0),
        ("d", 1, 0.0),
    ];
    let t = Tokenizer::from_gguf(&meta(
        "llama",
        &tokens,
        &[
            ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ],
    ))
    .unwrap();
    assert_eq!(t.encode("xabcd", false), vec![2, 1]);
}

#[test]
fn malformed_vocabularies_are_refused_by_key() {
    let bad = meta(
        "llama",
        &[("a", 1, 0.0)],
        &[("tokenizer.ggml.bos_token_id", Value::U64(7))],
    );
    assert_eq!(
        Tokenizer::from_gguf(&bad).unwrap_err(),
        TokenizerError::BadId {
            key: "tokenizer.ggml.bos_token_id",
            id: 7,
            tokens: 1
        }
    );
    let mut short = meta("llama", &[("a", 1, 0.0), ("b", 1, 0.0)], &[]);
    short.kv.insert(
        "tokenizer.ggml.scores".into(),
        Value::Array(vec![Value::F64(0.0)]),
    );
    assert!(matches!(
        Tokenizer::from_gguf(&short).unwrap_err(),
        TokenizerError::Length {
            key: "tokenizer.ggml.scores",
            ..
        }
    ));
    // SentencePiece adds BOS by default: a vocabulary without one is refused.
    assert_eq!(
        Tokenizer::from_gguf(&meta("llama", &[("a", 1, 0.0)], &[])).unwrap_err(),
        TokenizerError::NoSpecial("BOS")
    );
    assert_eq!(
        Tokenizer::from_gguf(&meta("bert", &[("a", 1, 0.0)], &[])).unwrap_err(),
        TokenizerError::Model("bert".into())
    );
    let bpe = meta(
        "gpt2",
        &[("a", 1, 0.0)],
        &[
            ("tokenizer.ggml.pre", Value::Str("tiktoken-x".into())),
            ("tokenizer.ggml.merges", Value::Array(vec![])),
        ],
    );
    assert_eq!(
        Tokenizer::from_gguf(&bpe).unwrap_err(),
        TokenizerError::Pre("tiktoken-x".into())
    );
}
