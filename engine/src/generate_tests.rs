//! The generation loop on a scripted model and a tiny vocabulary.

use super::*;
use crate::testing::{Script, tokenizer};

fn run(script: &[u32], max: usize, stop: &[&str]) -> (Completion, Vec<String>) {
    let mut m = Script {
        tokens: script.to_vec(),
        at: 0,
        vocab: 7,
    };
    let req = Request {
        prompt: vec![1],
        max_tokens: max,
        stop: stop.iter().map(|s| s.to_string()).collect(),
        ..Request::default()
    };
    let mut pieces = Vec::new();
    let c = generate(&mut m, &tokenizer(), &req, |r| {
        pieces.push(r.text.to_string())
    })
    .unwrap_or_else(|e| panic!("{e}"));
    (c, pieces)
}

#[test]
fn eos_length_and_stop_strings() {
    let (c, p) = run(&[1, 2, 0, 3], 10, &[]);
    assert_eq!((c.text.as_str(), c.finish), ("ab", Finish::Stop));
    assert_eq!(p.concat(), "ab");
    let (c, _) = run(&[1, 2, 3, 1], 2, &[]);
    assert_eq!((c.text.as_str(), c.finish), ("ab", Finish::Length));
    // "bc" stops; "b" is held back until it is clear it starts "bc".
    let (c, p) = run(&[1, 2, 3, 1], 10, &["bc"]);
    assert_eq!((c.text.as_str(), c.finish), ("a", Finish::Stop));
    assert_eq!(p, vec!["a"]);
    // "b" followed by "a": the held-back "b" is released.
    let (c, p) = run(&[1, 2, 1, 0], 10, &["bc"]);
    assert_eq!(c.text, "aba");
    assert_eq!(p.concat(), "aba");
}

#[test]
fn an_unwanted_request_stops_computing() {
    let mut m = Script {
        tokens: [1, 2, 3].repeat(10),
        at: 0,
        vocab: 7,
    };
    let req = Request {
        prompt: vec![1],
        max_tokens: 1000,
        ..Request::default()
    };
    let mut asked = 0;
    let c = generate_while(
        &mut m,
        &tokenizer(),
        &req,
        || {
            asked += 1;
            asked <= 5
        },
        |_| {},
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Asked before the prompt pass, then before each of 4 tokens.
    assert_eq!((c.finish, c.ids.len()), (Finish::Abandoned, 4));
    assert_eq!(c.text, "abca");

    // A request nobody waits for any more is not even read: no pass.
    m.at = 7;
    let c = generate_while(&mut m, &tokenizer(), &req, || false, |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((c.finish, c.ids.len(), m.at), (Finish::Abandoned, 0, 7));
}

#[test]
fn logprobs_go_out_with_their_tokens_text_and_stop_at_a_stop_string() {
    let mut m = Script {
        tokens: vec![1, 2, 5, 6, 3, 1, 0],
        at: 0,
        vocab: 7,
    };
    let req = Request {
        prompt: vec![1],
        max_tokens: 10,
        stop: vec!["ca".into()],
        logprobs: Some(2),
        ..Request::default()
    };
    let mut released: Vec<(String, Vec<u32>)> = Vec::new();
    let c = generate(&mut m, &tokenizer(), &req, |r| {
        released.push((r.text.into(), r.logprobs.iter().map(|l| l.id).collect()));
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((c.text.as_str(), c.finish), ("ab\u{e9}", Finish::Stop));
    // "c" and "a" are the stop string: their tokens are not reported.
    let ids: Vec<u32> = c.logprobs.iter().map(|l| l.id).collect();
    assert_eq!(ids, [1, 2, 5, 6]);
    let offsets: Vec<usize> = c.logprobs.iter().map(|l| l.text_offset).collect();
    assert_eq!(offsets, [0, 1, 2, 2]);
    // The scripted token has logit 10, the six others 0.
    let expected = 10.0 - (10f64.exp() + 6.0).ln();
    assert!(
        c.logprobs
            .iter()
            .all(|l| (f64::from(l.logprob) - expected).abs() < 1e-6)
    );
    assert!(
        c.logprobs
            .iter()
            .all(|l| l.top.len() == 2 && l.top[0].0 == l.id)
    );
    // Streamed: the same text and tokens, each token with its text (the
    // first byte of "é" goes with the character it starts).
    let text: String = released.iter().map(|r| r.0.as_str()).collect();
    let streamed: Vec<u32> = released.iter().flat_map(|r| r.1.clone()).collect();
    assert_eq!((text.as_str(), streamed.as_slice()), ("ab\u{e9}", &ids[..]));
    assert_eq!(released[0], ("a".to_string(), vec![1]));
    // Not asked: none computed.
    let (c, _) = run(&[1, 2, 0], 10, &[]);
    assert!(c.logprobs.is_empty());
}

#[test]
fn a_grammar_overrules_the_model_and_ends_generation_where_complete() {
    // The model wants "cabab…"; the grammar allows exactly "ab".
    let mut g = Grammar::default();
    let root = g.literal(b"ab");
    g.set_root(root);
    let grammar = Some(Arc::new(g));
    for temperature in [0.0, 1.0] {
        let mut m = Script {
            tokens: vec![3, 1, 1, 2, 1, 2],
            at: 0,
            vocab: 7,
        };
        let req = Request {
            prompt: vec![1],
            max_tokens: 10,
            sampling: SamplingParams {
                temperature,
                ..SamplingParams::default()
            },
            grammar: grammar.clone(),
            ..Request::default()
        };
        let c = generate(&mut m, &tokenizer(), &req, |_| {}).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (c.text.as_str(), c.finish),
            ("ab", Finish::Stop),
            "{temperature}"
        );
        assert_eq!(c.ids, [1, 2]);
    }
}

/// Runs `script` with `grammar` (a literal) from `trigger`: the answer,
/// and what was streamed.
fn triggered(script: &[u32], grammar: &[u8], trigger: Trigger) -> (Completion, String) {
    let mut g = Grammar::default();
    let root = g.literal(grammar);
    g.set_root(root);
    let mut m = Script {
        tokens: script.to_vec(),
        at: 0,
        vocab: 7,
    };
    let req = Request {
        prompt: vec![1],
        max_tokens: 10,
        grammar: Some(Arc::new(g)),
        trigger: Some(trigger),
        ..Request::default()
    };
    let mut streamed = String::new();
    let c = generate(&mut m, &tokenizer(), &req, |r| streamed.push_str(r.text))
        .unwrap_or_else(|e| panic!("{e}"));
    (c, streamed)
}

fn trigger(text: &str, at_start: bool) -> Trigger {
    Trigger {
        text: text.into(),
        at_start,
    }
}

#[test]
fn a_triggered_grammar_holds_from_its_trigger_and_the_rest_is_not_streamed() {
    // Free "ab", then "c" starts "cab": the model's "cc" is overruled,
    // and the grammar ends the answer where "cab" is complete.
    let (c, streamed) = triggered(&[1, 2, 3, 3, 3, 3, 3], b"cab", trigger("c", false));
    assert_eq!((c.text.as_str(), c.finish), ("abcab", Finish::Stop));
    assert_eq!(streamed, "ab");
    // The grammar refuses what the trigger began ("c" is not "x…"):
    // the trigger is dropped and the answer goes on as free text.
    let (c, streamed) = triggered(&[1, 3, 2, 0], b"xy", trigger("c", false));
    assert_eq!((c.text.as_str(), streamed.as_str()), ("acb", "acb"));
    // Never triggered: free text, all streamed.
    let (c, streamed) = triggered(&[1, 2, 1, 0], b"cab", trigger("c", false));
    assert_eq!((c.text.as_str(), streamed.as_str()), ("aba", "aba"));
    // At the start after blanks: the blanks are not streamed either.
    let (c, streamed) = triggered(&[4, 1, 1, 1], b"ab", trigger("a", true));
    assert_eq!(
        (c.text.as_str(), c.finish, streamed.as_str()),
        (" ab", Finish::Stop, "")
    );
    // At the start only: an "a" later is text.
    let (c, streamed) = triggered(&[2, 1, 0], b"ab", trigger("a", true));
    assert_eq!((c.text.as_str(), streamed.as_str()), ("ba", "ba"));
    // An empty trigger: the grammar from the first token, nothing streamed.
    let (c, streamed) = triggered(&[3, 3, 3], b"ab", trigger("", false));
    assert_eq!(
        (c.text.as_str(), c.finish, streamed.as_str()),
        ("ab", Finish::Stop, "")
    );
}

#[test]
fn multibyte_characters_are_emitted_whole() {
    // é = C3 A9, as two byte tokens.
    let (c, p) = run(&[1, 5, 6, 0], 10, &[]);
    assert_eq!(c.text, "a\u{e9}");
    assert!(p.iter().all(|s| !s.contains('\u{fffd}')), "{p:?}");
    assert_eq!(p.concat(), "a\u{e9}");
}
