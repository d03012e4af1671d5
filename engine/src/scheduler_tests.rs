//! The scheduler on a scripted model: who runs in which pass, memory, the
//! prefix cache, preemption, clients that leave.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;
use crate::testing::{Script, tokenizer};
use std::cell::RefCell;
use std::rc::Rc;

/// What one request received.
#[derive(Debug, Default)]
struct Got {
    streamed: String,
    done: Option<Result<Completion, String>>,
    gone: bool,
}

#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Got>>);

impl Sink for Shared {
    fn wanted(&self) -> bool {
        !self.0.borrow().gone
    }
    fn text(&mut self, r: Released<'_>) {
        self.0.borrow_mut().streamed.push_str(r.text);
    }
    fn done(&mut self, result: Result<Completion, GenerateError>) {
        self.0.borrow_mut().done = Some(result.map_err(|e| e.to_string()));
    }
}

/// The script, recording each pass's feeds as (pos, tokens, logits).
struct Recorded {
    script: Script,
    passes: Vec<Vec<(usize, usize, bool)>>,
}

impl Batched for Recorded {
    fn step(&mut self, feeds: &[Feed<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.passes.push(
            feeds
                .iter()
                .map(|f| (f.pos, f.tokens.len(), f.logits))
                .collect(),
        );
        self.script.step(feeds)
    }
}

fn model() -> Recorded {
    Recorded {
        script: Script {
            tokens: [1, 2, 3].repeat(100),
            at: 0,
            vocab: 7,
        },
        passes: Vec::new(),
    }
}

fn limits() -> Limits {
    Limits {
        max_batch: 8,
        step_tokens: 64,
        kv_blocks: 64,
        context: 256,
        prefix_cache: true,
    }
}

fn request(prompt: Vec<u32>, max_tokens: usize) -> Request {
    Request {
        prompt,
        max_tokens,
        ..Request::default()
    }
}

fn run(s: &mut Scheduler<Shared>, m: &mut Recorded) {
    let mut steps = 0;
    while !s.is_idle() {
        assert!(s.step(m, &tokenizer()) || s.is_idle(), "no progress");
        steps += 1;
        assert!(steps < 10_000);
    }
}

fn text(g: &Shared) -> String {
    let got = g.0.borrow();
    let done = got.done.as_ref().unwrap().as_ref().unwrap();
    assert_eq!(got.streamed, done.text);
    done.text.clone()
}

#[test]
fn decoding_sequences_share_each_pass_and_leave_as_they_finish() {
    let (mut s, mut m) = (Scheduler::new(limits()).unwrap(), model());
    let sinks: Vec<Shared> = (0..3).map(|_| Shared::default()).collect();
    for (i, sink) in sinks.iter().enumerate() {
        s.submit(request(vec![1; 1 + i], 3 + i), sink.clone());
    }
    run(&mut s, &mut m);
    // By position: a prompt of n tokens is answered from script[n - 1] on.
    assert_eq!(text(&sinks[0]), "abc");
    assert_eq!(text(&sinks[1]), "bcab");
    assert_eq!(text(&sinks[2]), "cabca");
    // One pass with the three prompts, then one per token of the longest
    // answer (each pass carrying every sequence still running).
    assert_eq!(m.passes.len(), 5);
    assert_eq!(m.passes[0], vec![(0, 1, true), (0, 2, true), (0, 3, true)]);
    assert_eq!(m.passes[1], vec![(1, 1, true), (2, 1, true), (3, 1, true)]);
    assert_eq!(m.passes[3], vec![(4, 1, true), (5, 1, true)]);
    assert_eq!(s.stats().blocks_held, 0);
}

#[test]
fn a_long_prompt_is_cut_into_chunks_between_decode_steps() {
    let (mut s, mut m) = (Scheduler::new(limits()).unwrap(), model());
    let (short, long) = (Shared::default(), Shared::default());
    s.submit(request(vec![1], 6), short.clone());
    s.step(&mut m, &tokenizer());
    s.submit(request(vec![2; 150], 2), long.clone());
    run(&mut s, &mut m);
    // The decoding sequence gets its token in every pass; the prompt fills
    // the rest of the 64 tokens.
    assert_eq!(m.passes[1], vec![(1, 1, true), (0, 63, false)]);
    assert_eq!(m.passes[2], vec![(2, 1, true), (63, 63, false)]);
    assert_eq!(m.passes[3], vec![(3, 1, true), (126, 24, true)]);
    assert!(
        m.passes
            .iter()
            .all(|p| p.iter().map(|f| f.1).sum::<usize>() <= 64)
    );
    assert_eq!(text(&short), "abcabc");
    assert_eq!(text(&long), text_of_script(150, 2));
}

/// The script's answer to a prompt of `n` tokens, `len` tokens long.
fn text_of_script(n: usize, len: usize) -> String {
    (n - 1..n - 1 + len)
        .map(|p| ["a", "b", "c"][p % 3])
        .collect()
}

#[test]
fn a_shared_prefix_is_computed_once() {
    let (mut s, mut m) = (Scheduler::new(limits()).unwrap(), model());
    let system: Vec<u32> = vec![3; 40];
    let first = Shared::default();
    s.submit(
        request([system.clone(), vec![1, 2]].concat(), 2),
        first.clone(),
    );
    run(&mut s, &mut m);
    let before = m.passes.len();
    let second = Shared::default();
    s.submit(request([system, vec![2, 1, 1]].concat(), 2), second.clone());
    run(&mut s, &mut m);
    // Two full blocks (32 tokens) came from the cache: the prompt pass
    // starts at 32.
    assert_eq!(m.passes[before][0], (32, 11, true));
    assert_eq!(s.stats().prefix_hits, 32);
    assert_eq!(text(&first), text_of_script(42, 2));
    assert_eq!(text(&second), text_of_script(43, 2));
    // Nothing is held once both are done; the prefix stays cached.
    assert_eq!(s.stats().blocks_held, 0);
    assert!(s.stats().blocks_cached >= 2);
}

#[test]
fn without_the_prefix_cache_every_prompt_is_computed_whole() {
    let l = Limits {
        prefix_cache: false,
        ..limits()
    };
    let (mut s, mut m) = (Scheduler::new(l).unwrap(), model());
    let system: Vec<u32> = vec![3; 40];
    for tail in [vec![1, 2], vec![2, 1, 1]] {
        let sink = Shared::default();
        let before = m.passes.len();
        s.submit(request([system.clone(), tail].concat(), 2), sink.clone());
        run(&mut s, &mut m);
        assert_eq!(m.passes[before][0].0, 0, "a prompt pass started past 0");
        assert!(sink.0.borrow().done.is_some());
    }
    assert_eq!((s.stats().prefix_hits, s.stats().blocks_cached), (0, 0));
}

#[test]
fn when_memory_runs_out_the_newest_sequence_waits_and_recomputes() {
    // 6 blocks (96 positions): two sequences of 20-token prompts growing to
    // 70 tokens cannot both hold theirs.
    let l = Limits {
        kv_blocks: 6,
        context: 96,
        prefix_cache: false,
        ..limits()
    };
    let (mut s, mut m) = (Scheduler::new(l).unwrap(), model());
    let sinks: Vec<Shared> = (0..2).map(|_| Shared::default()).collect();
    s.submit(request(vec![1; 20], 50), sinks[0].clone());
    s.submit(request(vec![2; 21], 50), sinks[1].clone());
    run(&mut s, &mut m);
    assert!(s.stats().preemptions >= 1);
    assert_eq!(text(&sinks[0]), text_of_script(20, 50));
    assert_eq!(text(&sinks[1]), text_of_script(21, 50));
    assert!(m.passes.iter().all(|p| p.len() <= 2));
    assert_eq!(s.stats().blocks_held, 0);
}

#[test]
fn a_client_that_leaves_frees_its_blocks_at_the_next_step() {
    let (mut s, mut m) = (Scheduler::new(limits()).unwrap(), model());
    let (stays, leaves) = (Shared::default(), Shared::default());
    s.submit(request(vec![1; 40], 100), leaves.clone());
    s.submit(request(vec![1], 3), stays.clone());
    s.step(&mut m, &tokenizer());
    assert_eq!(s.stats().blocks_held, 4);
    leaves.0.borrow_mut().gone = true;
    s.step(&mut m, &tokenizer());
    assert_eq!(s.stats().blocks_held, 1);
    run(&mut s, &mut m);
    let done = leaves
        .0
        .borrow()
        .done
        .as_ref()
        .unwrap()
        .as_ref()
        .unwrap()
        .clone();
    assert_eq!(done.finish, crate::generate::Finish::Abandoned);
    assert_eq!(text(&stays), "abc");
}

#[test]
fn requests_beyond_the_batch_wait_and_impossible_ones_are_answered_at_once() {
    let l = Limits {
        max_batch: 2,
        step_tokens: 18,
        ..limits()
    };
    let (mut s, mut m) = (Scheduler::new(l).unwrap(), model());
    let sinks: Vec<Shared> = (0..3).map(|_| Shared::default()).collect();
    for sink in &sinks {
        s.submit(request(vec![1], 2), sink.clone());
    }
    assert!(!s.has_room());
    s.step(&mut m, &tokenizer());
    assert_eq!((s.stats().running, s.stats().waiting), (2, 1));
    run(&mut s, &mut m);
    for sink in &sinks {
        assert_eq!(text(sink), "ab");
    }
    let too_long = Shared::default();
    s.submit(request(vec![1; 257], 1), too_long.clone());
    let err = too_long.0.borrow().done.clone().unwrap().unwrap_err();
    assert!(err.contains("context is full"), "{err}");
    let empty = Shared::default();
    s.submit(request(vec![], 1), empty.clone());
    assert!(empty.0.borrow().done.clone().unwrap().is_err());
    assert!(s.is_idle());
    // Limits that could never run are refused.
    assert!(
        Scheduler::<Shared>::new(Limits {
            step_tokens: 10,
            ..limits()
        })
        .is_err()
    );
    assert!(
        Scheduler::<Shared>::new(Limits {
            kv_blocks: 15,
            ..limits()
        })
        .is_err()
    );
}
