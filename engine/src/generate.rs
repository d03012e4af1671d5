//! The generation loop: prompt in one batched pass, then one token at a
//! time, sampled, streamed out as text, until EOS, a stop string or the
//! token limit. Text is released only in whole UTF-8 characters, and held
//! back while it could still turn into a stop string (so a client never
//! sees the start of a stop sequence).

use super::grammar::{Grammar, Matcher};
use super::logprobs::{TokenLogprob, token_logprob};
use super::model::ModelError;
use super::sampling::{Sampler, SamplingError, SamplingParams};
use super::tokenizer::Tokenizer;
use std::sync::Arc;

/// What produces next-token logits (the model; a script in tests).
pub trait Logits {
    fn reset(&mut self);
    fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>, ModelError>;
}

impl Logits for super::model::Model {
    fn reset(&mut self) {
        super::model::Model::reset(self);
    }
    fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        super::model::Model::forward(self, ids)
    }
}

/// A generation request.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    /// Report each token's log-probability with this many alternatives
    /// (`None`: none reported).
    pub logprobs: Option<usize>,
    /// Only text of this grammar may be written (a JSON schema's values),
    /// and generation ends only where a sentence of it is complete.
    pub grammar: Option<Arc<Grammar>>,
}

/// Text that became final, and the log-probabilities of the tokens it
/// completes (when asked for).
#[derive(Debug, Clone, Copy)]
pub struct Released<'a> {
    pub text: &'a str,
    pub logprobs: &'a [TokenLogprob],
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// EOS or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// Whoever asked stopped waiting (a client that went away): the rest
    /// was not computed.
    Abandoned,
}

/// The result.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub ids: Vec<u32>,
    pub text: String,
    pub finish: Finish,
    pub prompt_tokens: usize,
    /// One per token of `text` when asked for (a token wholly inside a
    /// stop string is not part of the text).
    pub logprobs: Vec<TokenLogprob>,
}

/// Why generation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sampling(#[from] SamplingError),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("no token of the vocabulary continues the required format here")]
    Grammar,
}

/// Longest suffix of `text` that is a proper prefix of some stop string.
fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| {
            (1..s.len())
                .rev()
                .filter(move |&n| s.is_char_boundary(n))
                .map(move |n| &s[..n])
        })
        .filter(|p| text.ends_with(p))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// Tokens drawn and refused before every allowed token is worked out.
const CONSTRAINED_TRIES: usize = 32;

/// The next token under a grammar: the sampler's draw with the tokens the
/// grammar refuses taken out (for plain temperature sampling, exactly the
/// distribution restricted to the allowed tokens; greedy: the likeliest
/// allowed token); the end of generation is allowed where the grammar is
/// complete. A model asked for the format mostly draws allowed tokens, so
/// drawing and checking comes first; only after [`CONSTRAINED_TRIES`]
/// refusals is every allowed token worked out through the trie.
fn constrained(
    m: &Matcher,
    sampler: &mut Sampler,
    logits: &[f32],
    tokenizer: &Tokenizer,
) -> Result<u32, GenerateError> {
    let allows = |id: u32| {
        if tokenizer.is_end_of_generation(id) {
            m.is_complete()
        } else {
            tokenizer.writes_text(id) && m.accepts(&tokenizer.token_bytes(id))
        }
    };
    let mut work = logits.to_vec();
    for _ in 0..CONSTRAINED_TRIES {
        if !work.iter().any(|l| l.is_finite()) {
            break;
        }
        let next = sampler.sample(&work);
        if allows(next) {
            return Ok(next);
        }
        if let Some(l) = work.get_mut(next as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
    let mut allowed = m.allowed(tokenizer.token_trie());
    if m.is_complete() {
        allowed.extend_from_slice(tokenizer.end_of_generation_ids());
    }
    let Some(&first) = allowed.first() else {
        return Err(GenerateError::Grammar);
    };
    let mut masked = vec![f32::NEG_INFINITY; work.len()];
    for &id in &allowed {
        if let Some(l) = work.get(id as usize) {
            masked[id as usize] = *l;
        }
    }
    let next = sampler.sample(&masked);
    // Every allowed logit may be -inf (a model that rules them all out):
    // take an allowed token rather than one the grammar refuses.
    Ok(if allows(next) { next } else { first })
}

/// Runs `req`; `emit` receives text as it becomes final.
pub fn generate(
    model: &mut impl Logits,
    tokenizer: &Tokenizer,
    req: &Request,
    emit: impl FnMut(Released<'_>),
) -> Result<Completion, GenerateError> {
    generate_while(model, tokenizer, req, || true, emit)
}

/// [`generate`], asking `wanted` before the prompt pass and before each new
/// token: once it says no, generation ends as [`Finish::Abandoned`] without
/// computing the rest (nothing at all for a request nobody waits for).
pub fn generate_while(
    model: &mut impl Logits,
    tokenizer: &Tokenizer,
    req: &Request,
    mut wanted: impl FnMut() -> bool,
    mut emit: impl FnMut(Released<'_>),
) -> Result<Completion, GenerateError> {
    if req.prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let mut sampler = Sampler::new(req.sampling.clone())?;
    let mut matcher = req.grammar.clone().map(Matcher::new);
    if !wanted() {
        return Ok(Completion {
            ids: Vec::new(),
            text: String::new(),
            finish: Finish::Abandoned,
            prompt_tokens: req.prompt.len(),
            logprobs: Vec::new(),
        });
    }
    model.reset();
    let mut logits = model.forward(&req.prompt)?;
    let mut ids = Vec::new();
    let mut sent = 0usize; // bytes of `text` already emitted
    let mut text = String::new();
    let mut finish = Finish::Length;
    // With logprobs: each token's, and the byte offset where its text ends.
    let mut logprobs: Vec<TokenLogprob> = Vec::new();
    let mut ends: Vec<usize> = Vec::new();
    let mut sent_logprobs = 0usize;
    for step in 0..req.max_tokens {
        if !wanted() {
            finish = Finish::Abandoned;
            break;
        }
        let next = match &mut matcher {
            None => sampler.sample(&logits),
            Some(m) => {
                let next = constrained(m, &mut sampler, &logits, tokenizer)?;
                if !tokenizer.is_end_of_generation(next) {
                    m.advance(&tokenizer.token_bytes(next));
                }
                next
            }
        };
        if tokenizer.is_end_of_generation(next) {
            finish = Finish::Stop;
            break;
        }
        ids.push(next);
        let start = text.len();
        // Whole characters only: a byte token may end mid-character.
        let decoded = tokenizer.decode(&ids, false);
        text = decoded.trim_end_matches('\u{fffd}').to_string();
        if let Some(top) = req.logprobs {
            let mut lp = token_logprob(&logits, next, top);
            lp.text_offset = text.get(..start).map_or(0, |t| t.chars().count());
            logprobs.push(lp);
            ends.push(text.len());
        }
        if let Some(at) = req.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(at);
            finish = Finish::Stop;
            break;
        }
        let ready = text.len() - held_back(&text, &req.stop);
        if ready > sent {
            // The tokens whose text is now all out go with it.
            let done = sent_logprobs + ends[sent_logprobs..].partition_point(|&e| e <= ready);
            emit(Released {
                text: &text[sent..ready],
                logprobs: &logprobs[sent_logprobs..done],
            });
            sent = ready;
            sent_logprobs = done;
        }
        if step + 1 < req.max_tokens {
            logits = model.forward(&[next])?;
        }
    }
    if finish == Finish::Length {
        text = tokenizer.decode(&ids, false);
    }
    if finish == Finish::Stop {
        // A token that starts inside the stop string is not in the answer.
        let chars = text.chars().count();
        let kept = logprobs.partition_point(|lp| lp.text_offset < chars);
        logprobs.truncate(kept.max(sent_logprobs));
    }
    if text.len() > sent || logprobs.len() > sent_logprobs {
        emit(Released {
            text: text.get(sent..).unwrap_or_default(),
            logprobs: &logprobs[sent_logprobs..],
        });
    }
    Ok(Completion {
        ids,
        text,
        finish,
        prompt_tokens: req.prompt.len(),
        logprobs,
    })
}

#[cfg(test)]
mod tests {
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
            sampling: SamplingParams::default(),
            stop: stop.iter().map(|s| s.to_string()).collect(),
            logprobs: None,
            grammar: None,
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
            sampling: SamplingParams::default(),
            stop: vec![],
            logprobs: None,
            grammar: None,
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
            sampling: SamplingParams::default(),
            stop: vec!["ca".into()],
            logprobs: Some(2),
            grammar: None,
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
                stop: vec![],
                logprobs: None,
                grammar: grammar.clone(),
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

    #[test]
    fn multibyte_characters_are_emitted_whole() {
        // é = C3 A9, as two byte tokens.
        let (c, p) = run(&[1, 5, 6, 0], 10, &[]);
        assert_eq!(c.text, "a\u{e9}");
        assert!(p.iter().all(|s| !s.contains('\u{fffd}')), "{p:?}");
        assert_eq!(p.concat(), "a\u{e9}");
    }
}
