//! The generation loop: prompt in one batched pass, then one token at a
//! time, sampled, streamed out as text, until EOS, a stop string or the
//! token limit. Text is released only in whole UTF-8 characters, and held
//! back while it could still turn into a stop string (so a client never
//! sees the start of a stop sequence).

use super::model::ModelError;
use super::sampling::{Sampler, SamplingError, SamplingParams};
use super::tokenizer::Tokenizer;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub ids: Vec<u32>,
    pub text: String,
    pub finish: Finish,
    pub prompt_tokens: usize,
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

/// Runs `req`; `emit` receives text as it becomes final.
pub fn generate(
    model: &mut impl Logits,
    tokenizer: &Tokenizer,
    req: &Request,
    emit: impl FnMut(&str),
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
    mut emit: impl FnMut(&str),
) -> Result<Completion, GenerateError> {
    if req.prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let mut sampler = Sampler::new(req.sampling.clone())?;
    if !wanted() {
        return Ok(Completion {
            ids: Vec::new(),
            text: String::new(),
            finish: Finish::Abandoned,
            prompt_tokens: req.prompt.len(),
        });
    }
    model.reset();
    let mut logits = model.forward(&req.prompt)?;
    let mut ids = Vec::new();
    let mut sent = 0usize; // bytes of `text` already emitted
    let mut text = String::new();
    let mut finish = Finish::Length;
    for step in 0..req.max_tokens {
        if !wanted() {
            finish = Finish::Abandoned;
            break;
        }
        let next = sampler.sample(&logits);
        if tokenizer.is_end_of_generation(next) {
            finish = Finish::Stop;
            break;
        }
        ids.push(next);
        // Whole characters only: a byte token may end mid-character.
        let decoded = tokenizer.decode(&ids, false);
        text = decoded.trim_end_matches('\u{fffd}').to_string();
        if let Some(at) = req.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
            text.truncate(at);
            finish = Finish::Stop;
            break;
        }
        let ready = text.len() - held_back(&text, &req.stop);
        if ready > sent {
            emit(&text[sent..ready]);
            sent = ready;
        }
        if step + 1 < req.max_tokens {
            logits = model.forward(&[next])?;
        }
    }
    if finish == Finish::Length {
        text = tokenizer.decode(&ids, false);
    }
    if text.len() > sent {
        emit(&text[sent..]);
    }
    Ok(Completion {
        ids,
        text,
        finish,
        prompt_tokens: req.prompt.len(),
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
        };
        let mut pieces = Vec::new();
        let c = generate(&mut m, &tokenizer(), &req, |s| pieces.push(s.to_string()))
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
    fn multibyte_characters_are_emitted_whole() {
        // é = C3 A9, as two byte tokens.
        let (c, p) = run(&[1, 5, 6, 0], 10, &[]);
        assert_eq!(c.text, "a\u{e9}");
        assert!(p.iter().all(|s| !s.contains('\u{fffd}')), "{p:?}");
        assert_eq!(p.concat(), "a\u{e9}");
    }
}
