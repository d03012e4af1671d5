//! The matcher on JSON grammars: what it accepts and refuses, and that every
//! sentence it lets a random writer finish parses and matches its schema.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::json::{SchemaError, json_object, json_schema};
use super::*;
use serde_json::{Value, json};
use std::sync::Arc;

fn matcher(g: Grammar) -> Matcher {
    Matcher::new(Arc::new(g))
}

/// Whether `text` is a whole sentence of the grammar.
fn complete(m: &Matcher, text: &str) -> bool {
    let mut m = m.clone();
    m.advance(text.as_bytes()) && m.is_complete()
}

#[test]
fn json_object_accepts_objects_and_only_them() {
    let m = matcher(json_object());
    for ok in [
        "{}",
        " {\n  \"a\": [1, -2.5e3, 0.25, \"x\\u00e9\\n\", true, null, {\"b\": {}}]\n}",
        "{\"k\":\"caf\u{e9} \u{1F600}\",\"n\":0}",
    ] {
        assert!(complete(&m, ok), "{ok:?}");
        assert!(serde_json::from_str::<Value>(ok).unwrap().is_object());
    }
    for bad in [
        "[]",
        "\"s\"",
        "{\"a\" 1}",
        "{\"a\":01}",
        "{\"a\":1,}",
        "{\"a\":\"\\ud800\"}",
        "{\"a\":\"\u{1}\"}",
        "{}x",
        "{} ",
    ] {
        assert!(!complete(&m, bad), "{bad:?}");
    }
    // Unfinished is not complete, and invalid UTF-8 is refused at once.
    let mut part = m.clone();
    assert!(part.advance(b"{\"a\":1") && !part.is_complete());
    assert!(!part.accepts(b"\"\xff"));
    assert!(!part.accepts(b"\xc3\x28"));
    // A refused token changes nothing.
    assert!(!part.advance(b"]") && part.advance(b"}") && part.is_complete());
}

fn person() -> Value {
    json!({
        "type": "object",
        "title": "A person",
        "properties": {
            "age": {"type": "integer", "description": "years"},
            "name": {"type": "string"},
            "role": {"enum": ["admin", "user", 3]},
            "tags": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2},
            "note": {"type": ["string", "null"]}
        },
        "required": ["age", "name", "role"],
        "additionalProperties": false
    })
}

#[test]
fn a_schema_allows_its_values_in_name_order() {
    let m = matcher(json_schema(&person()).unwrap());
    for ok in [
        r#"{"age": 30, "name": "Ada", "role": "admin"}"#,
        r#"{"age":-1,"name":"","note":null,"role":3,"tags":[true]}"#,
        r#"{"age": 0, "name": "x", "note": "n", "role": "user", "tags": [false, true]}"#,
    ] {
        assert!(complete(&m, ok), "{ok:?}");
    }
    for bad in [
        r#"{"name": "Ada", "age": 30, "role": "admin"}"#,
        r#"{"age": 30, "name": "Ada"}"#,
        r#"{"age": 1.5, "name": "Ada", "role": "admin"}"#,
        r#"{"age": 1, "name": "Ada", "role": "root"}"#,
        r#"{"age": 1, "name": "Ada", "role": "user", "tags": []}"#,
        r#"{"age": 1, "name": "Ada", "role": "user", "tags": [true, true, true]}"#,
        r#"{"age": 1, "extra": 2, "name": "Ada", "role": "user"}"#,
    ] {
        assert!(!complete(&m, bad), "{bad:?}");
    }
}

#[test]
fn recursive_definitions_and_any_of() {
    let tree = json!({
        "$defs": {"node": {
            "type": "object",
            "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                           "v": {"anyOf": [{"type": "integer"}, {"const": "leaf"}]}},
            "required": ["kids", "v"]
        }},
        "$ref": "#/$defs/node"
    });
    let m = matcher(json_schema(&tree).unwrap());
    assert!(complete(&m, r#"{"kids":[{"kids":[],"v":"leaf"}],"v":7}"#));
    assert!(!complete(&m, r#"{"kids":[{"kids":[],"v":"tree"}],"v":7}"#));
    // Nesting deeper than the matcher's bound is refused, not a crash.
    let deep = "{\"kids\":[".repeat(MAX_DEPTH) + "{\"kids\":[],\"v\":1}";
    assert!(!m.clone().advance(deep.as_bytes()));
}

#[test]
fn what_the_compiler_does_not_build_is_refused_by_path() {
    let refused = |schema: Value| json_schema(&schema).unwrap_err();
    assert_eq!(
        refused(
            json!({"type": "object", "properties": {"s": {"type": "string", "pattern": "^a"}}})
        ),
        SchemaError {
            path: "#/properties/s/pattern".into(),
            message: "the keyword `pattern` is not supported in constrained output".into()
        }
    );
    assert_eq!(
        refused(json!({"type": "array", "maxItems": 1000})).path,
        "#/maxItems"
    );
    assert_eq!(refused(json!({"type": "thing"})).path, "#/type");
    assert_eq!(refused(json!({"$ref": "#/$defs/missing"})).path, "#");
    assert_eq!(
        refused(json!({"properties": {"a": {}}, "required": ["b"]})).path,
        "#/required"
    );
    assert_eq!(refused(json!(false)).path, "#");
    // A chain of distinct definitions, each referring to the next: refused
    // at the nesting bound, not followed until the stack overflows.
    let chain = |links: usize| {
        let defs: serde_json::Map<String, Value> = (0..links)
            .map(|i| {
                (
                    format!("d{i}"),
                    json!({"$ref": format!("#/$defs/d{}", i + 1)}),
                )
            })
            .chain([(format!("d{links}"), json!({"type": "null"}))])
            .collect();
        json!({"$defs": defs, "$ref": "#/$defs/d0"})
    };
    let e = refused(chain(10_000));
    assert!(e.message.contains("nest deeper than 64"), "{e:?}");
    let m = matcher(json_schema(&chain(10)).unwrap());
    assert!(complete(&m, "null"));
    // A definition that is only itself allows nothing.
    assert_eq!(refused(json!({"$ref": "#"})).path, "#");
    // An optional property that could never be written is left out.
    let m = matcher(
        json_schema(&json!({"$defs": {"loop": {"$ref": "#/$defs/loop"}},
                            "properties": {"a": {"$ref": "#/$defs/loop"}, "b": {"type": "null"}}}))
        .unwrap(),
    );
    assert!(complete(&m, r#"{"b": null}"#) && complete(&m, "{}"));
    assert!(!m.accepts(br#"{"a""#));
}

/// A writer that picks uniformly among the allowed next bytes.
fn random_sentence(m: &Matcher, seed: u64, max_len: usize) -> Option<Vec<u8>> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut m = m.clone();
    let mut out = Vec::new();
    while out.len() < max_len {
        if m.is_complete() && next().is_multiple_of(4) {
            return Some(out);
        }
        let next_bytes = m.next_bytes();
        let allowed: Vec<u8> = (0..=255u8).filter(|&b| next_bytes.contains(b)).collect();
        if seed.is_multiple_of(16) {
            // The set is exactly the bytes a step accepts.
            assert_eq!(
                allowed,
                (0..=255u8).filter(|&b| m.accepts(&[b])).collect::<Vec<_>>()
            );
        }
        if allowed.is_empty() {
            return m.is_complete().then_some(out);
        }
        // Prefer closing brackets as the text grows, so that it ends.
        let closing: Vec<u8> = allowed
            .iter()
            .copied()
            .filter(|b| b"}]\"".contains(b))
            .collect();
        let pool = if out.len() > max_len / 2 && !closing.is_empty() {
            &closing
        } else {
            &allowed
        };
        let b = pool[(next() % pool.len() as u64) as usize];
        assert!(m.advance(&[b]));
        out.push(b);
    }
    None
}

#[test]
fn every_sentence_a_random_writer_finishes_parses_and_matches() {
    let object = matcher(json_object());
    let person_m = matcher(json_schema(&person()).unwrap());
    let mut finished = 0;
    for seed in 0..200u64 {
        if let Some(s) = random_sentence(&object, seed, 400) {
            let v: Value = serde_json::from_slice(&s)
                .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&s)));
            assert!(v.is_object());
            finished += 1;
        }
        if let Some(s) = random_sentence(&person_m, seed, 400) {
            let v: Value = serde_json::from_slice(&s)
                .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&s)));
            let o = v.as_object().unwrap();
            assert!(o["age"].is_i64() && o["name"].is_string(), "{v}");
            assert!(
                [json!("admin"), json!("user"), json!(3)].contains(&o["role"]),
                "{v}"
            );
            if let Some(t) = o.get("tags") {
                let t = t.as_array().unwrap();
                assert!(
                    (1..=2).contains(&t.len()) && t.iter().all(Value::is_boolean),
                    "{v}"
                );
            }
            assert!(
                o.keys()
                    .all(|k| ["age", "name", "note", "role", "tags"].contains(&k.as_str()))
            );
            finished += 1;
        }
    }
    assert!(finished > 100, "only {finished} of 400 sentences finished");
}

#[test]
fn the_trie_finds_exactly_the_tokens_whose_bytes_are_allowed() {
    let tokenizer = crate::testing::tokenizer();
    let trie = TokenTrie::new(&tokenizer);
    // The test vocabulary: "a", "b", "c", " ", and the two bytes of "é".
    let in_string = {
        let mut m = matcher(json_object());
        assert!(m.advance(b"{\""));
        m
    };
    let by_hand: Vec<u32> = (0..tokenizer.vocab_size() as u32)
        .filter(|&id| tokenizer.writes_text(id) && in_string.accepts(&tokenizer.token_bytes(id)))
        .collect();
    // In a key: letters, the space and the first byte of "é" (its second
    // byte alone is not UTF-8); EOS is not text.
    assert_eq!(in_string.allowed(&trie), by_hand);
    assert_eq!(by_hand, [1, 2, 3, 4, 5]);
    let start = matcher(json_object());
    assert_eq!(
        start.allowed(&trie),
        [4],
        "only a blank may precede the object"
    );
}
