//! Log-probabilities in OpenAI's two shapes: chat's `logprobs.content`
//! (one entry per token with its text, bytes and alternatives) and the
//! legacy completions' parallel lists (`tokens`, `token_logprobs`,
//! `top_logprobs` as token → log-probability maps, `text_offset`).

use super::request::Route;
use ciel_engine::logprobs::TokenLogprob;
use ciel_engine::tokenizer::Tokenizer;
use serde_json::{Map, Value, json};

/// The `logprobs` of a choice (or of one streamed chunk) for `route`.
pub(super) fn to_json(route: Route, tokenizer: &Tokenizer, tokens: &[TokenLogprob]) -> Value {
    let text = |id: u32| -> (String, Vec<u8>) {
        let bytes = tokenizer.token_bytes(id);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    };
    match route {
        Route::Chat => {
            let entry = |id: u32, logprob: f32| {
                let (token, bytes) = text(id);
                json!({"token": token, "logprob": logprob, "bytes": bytes})
            };
            let content: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    let mut e = entry(t.id, t.logprob);
                    e["top_logprobs"] = t.top.iter().map(|&(id, lp)| entry(id, lp)).collect();
                    e
                })
                .collect();
            json!({"content": content, "refusal": null})
        }
        Route::Text => {
            let top: Vec<Value> = tokens
                .iter()
                .map(|t| {
                    // The alternatives and, always, the chosen token.
                    let mut m = Map::new();
                    for &(id, lp) in t.top.iter().chain([(t.id, t.logprob)].iter()) {
                        m.insert(text(id).0, json!(lp));
                    }
                    Value::Object(m)
                })
                .collect();
            json!({
                "tokens": tokens.iter().map(|t| text(t.id).0).collect::<Vec<_>>(),
                "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                "top_logprobs": top,
                "text_offset": tokens.iter().map(|t| t.text_offset).collect::<Vec<_>>(),
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use ciel_engine::testing::tokenizer;

    fn tokens() -> Vec<TokenLogprob> {
        vec![
            TokenLogprob {
                id: 1,
                logprob: -0.5,
                top: vec![(1, -0.5), (2, -1.5)],
                text_offset: 0,
            },
            TokenLogprob {
                id: 5,
                logprob: -2.0,
                top: vec![(3, -0.25)],
                text_offset: 1,
            },
        ]
    }

    #[test]
    fn chat_entries_carry_text_bytes_and_alternatives() {
        let v = to_json(Route::Chat, &tokenizer(), &tokens());
        let c = &v["content"];
        assert_eq!(c[0]["token"], "a");
        assert_eq!(c[0]["logprob"], -0.5);
        assert_eq!(c[0]["bytes"], json!([97]));
        assert_eq!(c[0]["top_logprobs"][1]["token"], "b");
        // A byte token: its one byte, and its text lossy.
        assert_eq!(c[1]["bytes"], json!([0xc3]));
        assert_eq!(c[1]["token"], "\u{fffd}");
        assert_eq!(c[1]["top_logprobs"][0]["logprob"], -0.25);
        assert_eq!(v["refusal"], Value::Null);
    }

    #[test]
    fn completions_lists_include_the_chosen_token_among_the_alternatives() {
        let v = to_json(Route::Text, &tokenizer(), &tokens());
        assert_eq!(v["tokens"], json!(["a", "\u{fffd}"]));
        assert_eq!(v["token_logprobs"], json!([-0.5, -2.0]));
        assert_eq!(v["top_logprobs"][0], json!({"a": -0.5, "b": -1.5}));
        assert_eq!(v["top_logprobs"][1], json!({"c": -0.25, "\u{fffd}": -2.0}));
        assert_eq!(v["text_offset"], json!([0, 1]));
    }
}
