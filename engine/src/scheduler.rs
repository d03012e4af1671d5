//! Continuous batching: every running sequence advances in one forward
//! pass per step (a decoding sequence by one token, a prompt by a chunk),
//! requests join the batch at any step and leave it as they finish.
//!
//! - Memory: keys and values live in blocks of a [`BlockPool`] sized by the
//!   K/V budget. A request is admitted when its prompt's blocks can be had;
//!   a decoding sequence takes a block each [`BLOCK_TOKENS`] tokens. When
//!   none is left, the most recently admitted sequence is preempted: its
//!   blocks are freed and it waits, first in line, to recompute them (its
//!   tokens and sampler state are kept, so its answer is unchanged).
//! - Chunked prefill: a step carries at most [`Limits::step_tokens`]
//!   tokens, decoding sequences first, so a long prompt is cut into chunks
//!   between decode steps instead of stalling every stream.
//! - Prefix caching: full blocks are registered under the hash of their
//!   whole prefix; a new sequence starting with the same tokens (a shared
//!   system prompt) takes those blocks instead of computing them.
//!
//! Every row of a pass is computed on its own ([`super::transformer`]), so
//! none of this changes a single bit of any request's logits: each answer
//! is exactly the answer it gets alone.

use super::generate::{Completion, GenerateError, Generation, Released, Request};
use super::kv_cache::{BLOCK_TOKENS, BlockId, BlockPool, PrefixHash, prefix_hash};
use super::model::{Model, ModelError};
use super::tokenizer::Tokenizer;
use super::transformer::Feed;
use std::collections::VecDeque;

/// What runs a batched pass (the model; a script in tests).
pub trait Batched {
    /// The logits after the last token of each feed that asks for them.
    fn step(&mut self, feeds: &[Feed<'_>]) -> Result<Vec<Vec<f32>>, ModelError>;
}

impl Batched for Model {
    fn step(&mut self, feeds: &[Feed<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        Model::step(self, feeds)
    }
}

/// Where a request's results go.
pub trait Sink {
    /// Whether anyone still waits for the answer (asked before each step).
    fn wanted(&self) -> bool;
    /// Text that became final.
    fn text(&mut self, released: Released<'_>);
    /// The end: the completion, or why it failed.
    fn done(&mut self, result: Result<Completion, GenerateError>);
}

/// The scheduler's bounds.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sequences running at once.
    pub max_batch: usize,
    /// Tokens one pass carries (decodes and prompt chunks together); at
    /// least `max_batch + BLOCK_TOKENS`, so prompts always progress.
    pub step_tokens: usize,
    /// Blocks of K/V cache (the budget).
    pub kv_blocks: usize,
    /// The longest sequence.
    pub context: usize,
    /// Keep full prefix blocks for reuse.
    pub prefix_cache: bool,
}

/// Why limits were refused.
#[derive(Debug, thiserror::Error)]
#[error("batching limits: {0}")]
pub struct LimitsError(String);

impl Limits {
    /// Sequences in one batch by default.
    pub const MAX_BATCH: usize = 32;
    /// Tokens in one pass by default: enough for a batch of decodes and a
    /// prompt chunk, small enough that a pass (the time between two tokens
    /// of every stream) stays short on a few cores.
    pub const STEP_TOKENS: usize = 256;

    /// The defaults for a context of `context` in `kv_blocks` blocks.
    pub fn serving(context: usize, kv_blocks: usize) -> Self {
        Limits {
            max_batch: Self::MAX_BATCH,
            step_tokens: Self::STEP_TOKENS,
            kv_blocks,
            context,
            prefix_cache: true,
        }
    }

    /// Whether a batch of `max_batch` and passes of `step_tokens` can run
    /// (the part of [`Self::check`] that needs no model: callers check it
    /// before loading one).
    pub fn check_pass(max_batch: usize, step_tokens: usize) -> Result<(), LimitsError> {
        if max_batch == 0 {
            return Err(LimitsError(
                "the batch must hold at least one sequence".into(),
            ));
        }
        let least = max_batch.saturating_add(BLOCK_TOKENS);
        if step_tokens < least {
            return Err(LimitsError(format!(
                "a pass of {step_tokens} tokens leaves no room for prompts beside {max_batch} decoding sequences (at least {least})"
            )));
        }
        Ok(())
    }

    pub fn check(&self) -> Result<(), LimitsError> {
        Self::check_pass(self.max_batch, self.step_tokens)?;
        if self.kv_blocks.saturating_mul(BLOCK_TOKENS) < self.context || self.context == 0 {
            return Err(LimitsError(format!(
                "{} K/V blocks do not hold a context of {}",
                self.kv_blocks, self.context
            )));
        }
        Ok(())
    }
}

/// A snapshot for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub running: usize,
    pub waiting: usize,
    pub blocks_held: usize,
    pub blocks_cached: usize,
    pub kv_blocks: usize,
    /// Since the start: prompt tokens whose keys came from the cache, and
    /// sequences preempted for memory.
    pub prefix_hits: u64,
    pub preemptions: u64,
}

struct Sequence<S> {
    /// Its tokens (`generation.tokens()`: the prompt, then every token
    /// generated; the last one is fed next), sampler and text.
    generation: Generation,
    sink: S,
    /// `tokens[..computed]` have their keys and values in `blocks`.
    computed: usize,
    blocks: Vec<BlockId>,
    /// The prefix hashes of the full blocks so far.
    hashes: Vec<PrefixHash>,
}

/// The batch and the requests waiting for it.
pub struct Scheduler<S> {
    limits: Limits,
    pool: BlockPool,
    /// In admission order: the last is preempted first.
    running: Vec<Sequence<S>>,
    /// Submitted or preempted, first come first served.
    waiting: VecDeque<Sequence<S>>,
    prefix_hits: u64,
    preemptions: u64,
}

impl<S: Sink> std::fmt::Debug for Scheduler<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<S: Sink> Scheduler<S> {
    pub fn new(limits: Limits) -> Result<Self, LimitsError> {
        limits.check()?;
        Ok(Scheduler {
            pool: BlockPool::new(limits.kv_blocks, limits.prefix_cache),
            limits,
            running: Vec::new(),
            waiting: VecDeque::new(),
            prefix_hits: 0,
            preemptions: 0,
        })
    }

    pub fn stats(&self) -> Stats {
        Stats {
            running: self.running.len(),
            waiting: self.waiting.len(),
            blocks_held: self.pool.held(),
            blocks_cached: self.pool.cached_unheld(),
            kv_blocks: self.pool.capacity(),
            prefix_hits: self.prefix_hits,
            preemptions: self.preemptions,
        }
    }

    /// Nothing to run.
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.waiting.is_empty()
    }

    /// Whether to take another request now: while the batch and those
    /// already waiting for it (for memory, or for the next step) are fewer
    /// than `max_batch`. Callers keep the rest in their own bounded queue,
    /// so that everything arriving at once joins at the next step.
    pub fn has_room(&self) -> bool {
        self.running.len() + self.waiting.len() < self.limits.max_batch
    }

    /// Queues `request`; one that cannot run is answered at once.
    pub fn submit(&mut self, request: Request, mut sink: S) {
        if request.prompt.len() > self.limits.context {
            sink.done(Err(ModelError::ContextFull(self.limits.context).into()));
            return;
        }
        match Generation::new(request) {
            Ok(generation) => self.waiting.push_back(Sequence {
                generation,
                sink,
                computed: 0,
                blocks: Vec::new(),
                hashes: Vec::new(),
            }),
            Err(e) => sink.done(Err(e)),
        }
    }

    /// Runs one step: drops what nobody waits for, admits what fits, runs
    /// one pass and hands each sequence its logits. Returns whether a pass
    /// ran. A model error fails the sequences of that pass.
    pub fn step(&mut self, model: &mut impl Batched, tokenizer: &Tokenizer) -> bool {
        self.drop_abandoned(tokenizer);
        self.admit();
        self.grow();
        if self.running.is_empty() {
            return false;
        }
        // Decoding sequences first, then prompt chunks in admission order.
        let mut budget = self.limits.step_tokens;
        let mut plan: Vec<(usize, usize)> = Vec::new();
        for (i, s) in self.running.iter().enumerate() {
            if s.generation.tokens().len() - s.computed == 1 {
                plan.push((i, 1));
                budget -= 1;
            }
        }
        for (i, s) in self.running.iter().enumerate() {
            let left = s.generation.tokens().len() - s.computed;
            if left > 1 && budget > 0 {
                let n = left.min(budget);
                plan.push((i, n));
                budget -= n;
            }
        }
        let feeds: Vec<Feed<'_>> = plan
            .iter()
            .map(|&(i, n)| {
                let (s, tokens) = (&self.running[i], self.running[i].generation.tokens());
                Feed {
                    blocks: &s.blocks,
                    pos: s.computed,
                    tokens: &tokens[s.computed..s.computed + n],
                    logits: s.computed + n == tokens.len(),
                }
            })
            .collect();
        let result = model.step(&feeds);
        drop(feeds);
        let mut logits = match result {
            Ok(l) => l.into_iter(),
            Err(e) => {
                let failed: Vec<usize> = plan.iter().map(|&(i, _)| i).collect();
                self.fail(&failed, &e.to_string());
                return true;
            }
        };
        let mut finished = Vec::new();
        for &(i, n) in &plan {
            let s = &mut self.running[i];
            s.computed += n;
            if self.limits.prefix_cache {
                register_full_blocks(&mut self.pool, s);
            }
            if s.computed < s.generation.tokens().len() {
                continue;
            }
            let Some(l) = logits.next() else {
                finished.push((i, Some(GenerateError::Model(missing_logits()))));
                continue;
            };
            let sink = &mut s.sink;
            match s.generation.advance(&l, tokenizer, |r| sink.text(r)) {
                // (The token is now the generation's last, fed next.)
                Ok(Some(_)) if s.generation.tokens().len() <= self.limits.context => {}
                Ok(Some(_)) => {
                    finished.push((i, Some(ModelError::ContextFull(self.limits.context).into())))
                }
                Ok(None) => finished.push((i, None)),
                Err(e) => finished.push((i, Some(e))),
            }
        }
        // Highest index first, so that the others stay where they are.
        finished.sort_by_key(|&(i, _)| std::cmp::Reverse(i));
        for (i, error) in finished {
            let mut s = self.running.remove(i);
            self.release(&mut s);
            match error {
                None => {
                    let sink = &mut s.sink;
                    let done = s.generation.finish(tokenizer, |r| sink.text(r));
                    s.sink.done(Ok(done));
                }
                Some(e) => s.sink.done(Err(e)),
            }
        }
        true
    }

    /// Answers every sequence with `error` (the engine stopped).
    pub fn fail_all(&mut self, error: &str) {
        let all: Vec<usize> = (0..self.running.len()).collect();
        self.fail(&all, error);
        for mut s in std::mem::take(&mut self.waiting) {
            s.sink
                .done(Err(GenerateError::Model(ModelError::Forward(error.into()))));
        }
    }

    fn fail(&mut self, which: &[usize], error: &str) {
        let mut which = which.to_vec();
        which.sort_unstable_by(|a, b| b.cmp(a));
        which.dedup();
        for i in which {
            let mut s = self.running.remove(i);
            self.release(&mut s);
            s.sink
                .done(Err(GenerateError::Model(ModelError::Forward(error.into()))));
        }
    }

    fn drop_abandoned(&mut self, tokenizer: &Tokenizer) {
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].sink.wanted() {
                i += 1;
                continue;
            }
            let mut s = self.running.remove(i);
            self.release(&mut s);
            abandon(s, tokenizer);
        }
        for s in std::mem::take(&mut self.waiting) {
            if s.sink.wanted() {
                self.waiting.push_back(s);
            } else {
                abandon(s, tokenizer);
            }
        }
    }

    /// Moves waiting sequences into the batch while their blocks can be had.
    fn admit(&mut self) {
        while self.running.len() < self.limits.max_batch {
            let Some(mut s) = self.waiting.pop_front() else {
                return;
            };
            // The cached full blocks of the prefix (at least one token is
            // left to compute: its logits are what the sequence needs).
            let mut hits = Vec::new();
            let mut hashes = Vec::new();
            let tokens = s.generation.tokens();
            // (No hashing at all without the cache.)
            let prefix = match self.limits.prefix_cache {
                true => &tokens[..tokens.len() - 1],
                false => &[],
            };
            for chunk in prefix.chunks_exact(BLOCK_TOKENS) {
                let h = prefix_hash(hashes.last(), chunk);
                let Some(b) = self.pool.lookup(&h) else { break };
                hits.push(b);
                hashes.push(h);
            }
            let needed = tokens.len().div_ceil(BLOCK_TOKENS) - hits.len();
            // One block to spare, so that admitting does not at once
            // preempt a decoding sequence.
            let spare = usize::from(!self.running.is_empty());
            if self.pool.available() < needed + spare {
                for b in hits {
                    self.pool.release(b);
                }
                self.waiting.push_front(s);
                return;
            }
            s.computed = hits.len() * BLOCK_TOKENS;
            self.prefix_hits += s.computed as u64;
            s.blocks = hits;
            s.hashes = hashes;
            while s.blocks.len() < s.generation.tokens().len().div_ceil(BLOCK_TOKENS) {
                match self.pool.allocate() {
                    Some(b) => s.blocks.push(b),
                    None => break,
                }
            }
            self.running.push(s);
        }
    }

    /// Gives each sequence the block its next token needs, preempting the
    /// most recently admitted sequences when none is left.
    fn grow(&mut self) {
        let mut i = 0;
        while i < self.running.len() {
            let s = &self.running[i];
            if s.blocks.len() * BLOCK_TOKENS >= s.generation.tokens().len() {
                i += 1;
                continue;
            }
            if let Some(b) = self.pool.allocate() {
                self.running[i].blocks.push(b);
                continue;
            }
            let Some(mut newest) = self.running.pop() else {
                return;
            };
            self.release(&mut newest);
            newest.computed = 0;
            self.preemptions += 1;
            self.waiting.push_front(newest);
            // (`i` may have been the newest: the loop then ends.)
        }
    }

    fn release(&mut self, s: &mut Sequence<S>) {
        for b in s.blocks.drain(..) {
            self.pool.release(b);
        }
        s.hashes.clear();
    }
}

fn abandon<S: Sink>(mut s: Sequence<S>, tokenizer: &Tokenizer) {
    s.generation.abandon();
    let sink = &mut s.sink;
    let done = s.generation.finish(tokenizer, |r| sink.text(r));
    s.sink.done(Ok(done));
}

fn missing_logits() -> ModelError {
    ModelError::Forward("the pass returned fewer logits than asked for".into())
}

/// Registers each block that became full of computed positions.
fn register_full_blocks<S>(pool: &mut BlockPool, s: &mut Sequence<S>) {
    while (s.hashes.len() + 1) * BLOCK_TOKENS <= s.computed {
        let at = s.hashes.len() * BLOCK_TOKENS;
        let h = prefix_hash(
            s.hashes.last(),
            &s.generation.tokens()[at..at + BLOCK_TOKENS],
        );
        if let Some(&b) = s.blocks.get(s.hashes.len()) {
            pool.register(b, h);
        }
        s.hashes.push(h);
    }
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
