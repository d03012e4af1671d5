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

/// A generation request (default: no prompt, no tokens, greedy, nothing
/// else asked).
#[derive(Debug, Clone, Default)]
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
    /// With a grammar: where it starts holding (`None`: from the start,
    /// and the text is streamed as usual). See [`Trigger`].
    pub trigger: Option<Trigger>,
}

/// Where a grammar starts holding: once `text` appears in the answer
/// (anywhere, or only as its start after blanks when `at_start`), the
/// grammar holds from the trigger's first byte on (a tool call that the
/// model began of its own accord). Text from the trigger on is never
/// streamed: the caller reads it from the [`Completion`] (the calls). An
/// empty `text` starts the grammar at once, so nothing is streamed (a call
/// that must be made). Should the grammar refuse what the model wrote at
/// the trigger, the trigger is dropped and the answer goes on as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub text: String,
    pub at_start: bool,
}

impl Trigger {
    /// Where the trigger is in `text`, if it is, looking from `from` (the
    /// text streamed so far cannot hold it: a text that could still become
    /// the trigger is held back, [`Self::held_back`]), so that each token
    /// costs the unstreamed rest, not the whole answer.
    fn find(&self, text: &str, from: usize) -> Option<usize> {
        if self.at_start {
            let lead = text.len() - text.trim_start().len();
            text[lead..].starts_with(&self.text).then_some(lead)
        } else {
            text.get(from..)?.find(&self.text).map(|i| from + i)
        }
    }

    /// How much of the end of `text` to hold back while it could still
    /// become the trigger; `None` when it no longer can (an answer that
    /// began otherwise, for a trigger at the start).
    fn held_back(&self, text: &str) -> Option<usize> {
        if self.at_start {
            let body = text.trim_start();
            self.text.starts_with(body).then_some(text.len())
        } else {
            Some(held_back(text, std::slice::from_ref(&self.text)))
        }
    }
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
    let mut g = Generation::new(req.clone())?;
    if !wanted() {
        g.abandon();
        return Ok(g.finish(tokenizer, emit));
    }
    model.reset();
    let mut logits = model.forward(&req.prompt)?;
    loop {
        if !wanted() {
            g.abandon();
            break;
        }
        match g.advance(&logits, tokenizer, &mut emit)? {
            Some(next) => logits = model.forward(&[next])?,
            None => break,
        }
    }
    Ok(g.finish(tokenizer, emit))
}

/// One request's generation as a state machine fed the logits after each
/// token: what [`generate_while`] drives for one sequence, and the batch
/// scheduler for each of its sequences. Its sampler and grammar state are
/// its own, so a generation's tokens depend only on its logits.
pub struct Generation {
    req: Request,
    sampler: Sampler,
    /// The grammar that holds now, and the one waiting for its trigger.
    matcher: Option<Matcher>,
    pending: Option<(Arc<Grammar>, Trigger)>,
    /// Where the text stops being streamed.
    silent_from: Option<usize>,
    /// The prompt, then every token generated (`req.prompt` is moved here).
    tokens: Vec<u32>,
    prompt_len: usize,
    text: String,
    /// Bytes of `text` already emitted.
    sent: usize,
    finish: Finish,
    ended: bool,
    /// With logprobs: each token's, and the byte offset where its text ends.
    logprobs: Vec<TokenLogprob>,
    ends: Vec<usize>,
    sent_logprobs: usize,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the prompt or the text: sizes only.
        f.debug_struct("Generation")
            .field("prompt_tokens", &self.prompt_len)
            .field("tokens", &self.generated().len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Generation {
    /// A generation of `req`, before its prompt pass.
    pub fn new(mut req: Request) -> Result<Self, GenerateError> {
        if req.prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt);
        }
        let sampler = Sampler::new(req.sampling.clone())?;
        let (mut matcher, mut pending, mut silent_from) = (None, None, None);
        match (&req.grammar, &req.trigger) {
            (Some(g), Some(t)) if t.text.is_empty() => {
                matcher = Some(Matcher::new(Arc::clone(g)));
                silent_from = Some(0);
            }
            (Some(g), Some(t)) => pending = Some((Arc::clone(g), t.clone())),
            (Some(g), None) => matcher = Some(Matcher::new(Arc::clone(g))),
            (None, _) => {}
        }
        let tokens = std::mem::take(&mut req.prompt);
        Ok(Generation {
            req,
            sampler,
            matcher,
            pending,
            silent_from,
            prompt_len: tokens.len(),
            tokens,
            text: String::new(),
            sent: 0,
            finish: Finish::Length,
            ended: false,
            logprobs: Vec::new(),
            ends: Vec::new(),
            sent_logprobs: 0,
        })
    }

    /// The prompt, then every token generated so far: what the model
    /// reads (the last one is fed next).
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// Stops here: nobody waits for the rest.
    pub fn abandon(&mut self) {
        if !self.ended {
            self.finish = Finish::Abandoned;
            self.ended = true;
        }
    }

    /// Takes the logits after the last token fed: picks the next token and
    /// releases the text that became final. Returns the token to feed next,
    /// or `None` once the generation has ended (then [`Self::finish`]).
    pub fn advance(
        &mut self,
        logits: &[f32],
        tokenizer: &Tokenizer,
        mut emit: impl FnMut(Released<'_>),
    ) -> Result<Option<u32>, GenerateError> {
        let step = self.generated().len();
        if self.ended || step >= self.req.max_tokens {
            self.ended = true;
            return Ok(None);
        }
        let next = match &mut self.matcher {
            None => self.sampler.sample(logits),
            Some(m) => {
                let next = constrained(m, &mut self.sampler, logits, tokenizer)?;
                if !tokenizer.is_end_of_generation(next) {
                    m.advance(&tokenizer.token_bytes(next));
                }
                next
            }
        };
        if tokenizer.is_end_of_generation(next) {
            self.finish = Finish::Stop;
            self.ended = true;
            return Ok(None);
        }
        self.tokens.push(next);
        let start = self.text.len();
        // Whole characters only: a byte token may end mid-character.
        let decoded = tokenizer.decode(self.generated(), false);
        self.text = decoded.trim_end_matches('\u{fffd}').to_string();
        if let Some(top) = self.req.logprobs {
            let mut lp = token_logprob(logits, next, top);
            lp.text_offset = self.text.get(..start).map_or(0, |t| t.chars().count());
            self.logprobs.push(lp);
            self.ends.push(self.text.len());
        }
        let stops = &self.req.stop;
        if let Some(at) = stops
            .iter()
            .filter_map(|s| self.text.find(s.as_str()))
            .min()
        {
            self.text.truncate(at);
            self.finish = Finish::Stop;
            self.ended = true;
            return Ok(None);
        }
        let mut hold = held_back(&self.text, stops);
        if let Some((g, t)) = &self.pending {
            if let Some(at) = t.find(&self.text, self.sent) {
                // Once, taken or not: the grammar from the trigger on.
                let mut m = Matcher::new(Arc::clone(g));
                if m.advance(&self.text.as_bytes()[at..]) {
                    self.matcher = Some(m);
                    // At the start: the blanks before it were held back
                    // and go unstreamed too.
                    self.silent_from = Some(if t.at_start { self.sent } else { at });
                }
                self.pending = None;
            } else {
                match t.held_back(&self.text) {
                    Some(h) => hold = hold.max(h),
                    None => self.pending = None,
                }
            }
        }
        let ready = match self.silent_from {
            Some(at) => at.max(self.sent),
            None => self.text.len() - hold,
        };
        if ready > self.sent {
            // The tokens whose text is now all out go with it.
            let (sent, from) = (self.sent, self.sent_logprobs);
            let done = from + self.ends[from..].partition_point(|&e| e <= ready);
            emit(Released {
                text: &self.text[sent..ready],
                logprobs: &self.logprobs[from..done],
            });
            self.sent = ready;
            self.sent_logprobs = done;
        }
        if step + 1 < self.req.max_tokens {
            Ok(Some(next))
        } else {
            self.ended = true;
            Ok(None)
        }
    }

    /// The completion, emitting what is left to stream.
    pub fn finish(
        mut self,
        tokenizer: &Tokenizer,
        mut emit: impl FnMut(Released<'_>),
    ) -> Completion {
        if self.finish == Finish::Length {
            self.text = tokenizer.decode(self.generated(), false);
        }
        let (text, sent, from) = (&self.text, self.sent, self.sent_logprobs);
        if self.finish == Finish::Stop {
            // A token that starts inside the stop string is not in the answer.
            let chars = text.chars().count();
            let kept = self.logprobs.partition_point(|lp| lp.text_offset < chars);
            self.logprobs.truncate(kept.max(from));
        }
        // What is left to stream: the rest, or up to where the text went silent.
        let end = self
            .silent_from
            .map_or(text.len(), |at| at.clamp(sent, text.len()));
        let last = match self.silent_from {
            Some(_) => {
                (from + self.ends[from..].partition_point(|&e| e <= end)).min(self.logprobs.len())
            }
            None => self.logprobs.len(),
        };
        if end > sent || last > from {
            emit(Released {
                text: text.get(sent..end).unwrap_or_default(),
                logprobs: &self.logprobs[from..last],
            });
        }
        Completion {
            ids: self.tokens.split_off(self.prompt_len),
            text: self.text,
            finish: self.finish,
            prompt_tokens: self.prompt_len,
            logprobs: self.logprobs,
        }
    }
}

#[cfg(test)]
#[path = "generate_tests.rs"]
mod tests;
