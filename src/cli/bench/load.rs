//! `load`: 1, 8 and 32 clients through the whole attested path (client →
//! host shim → guest, over attested TLS), each streaming questions of a
//! mix again and again for a bounded time, for two mixes (short answers:
//! mostly prompt work; long answers: mostly decoding). Per level: answers
//! per second and aggregate generated tokens per second (the 8- and
//! 32-client figures as ratios to one client), time to first token
//! p50/p99, inter-token latency p99, 429s (the documented refusal when the
//! queue is full); then the guest's peak memory against the model plus
//! its K/V budget; last, the bare engine in this process, each mix one
//! question at a time and all in one batch. Every answer must be exactly
//! the one its question gets alone.

use super::{Report, percentile_ms};
use anyhow::{Context, Result};
use ciel_client::{Client, ClientError};
use ciel_engine::generate::{Completion, GenerateError, Released, Request, generate};
use ciel_engine::scheduler::{Limits, Scheduler, Sink};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const LEVELS: [usize; 3] = [1, 8, 32];
/// The guest's K/V budget in `ciel demo --serve` (`--kv-memory`'s default).
const KV_BUDGET_MIB: f64 = 2048.0;

/// A workload: 32 questions, and how long their answers may be.
struct Mix {
    name: &'static str,
    question: fn(usize) -> String,
    max_tokens: u64,
}

/// Short answers (~15 tokens after ~35 of prompt: most of the work is
/// prompts, which are batched already one by one), and long ones (the
/// answer runs to its 64 tokens: most of the work is decoding, which only
/// batching across requests shares).
const MIXES: [Mix; 2] = [
    Mix {
        name: "short answers",
        question: |i| format!("Count from {i} to {}, in words.", i + 9),
        max_tokens: 32,
    },
    Mix {
        name: "long answers",
        question: |i| format!("Write a long story about a town called Number {i}."),
        max_tokens: 64,
    },
];

impl Mix {
    fn request(&self, i: usize) -> Value {
        json!({
            "messages": [{"role": "user", "content": (self.question)(i)}],
            "max_tokens": self.max_tokens,
        })
    }
}

/// What one client measured.
#[derive(Default)]
struct Measured {
    answers: usize,
    tokens: u64,
    first_token: Vec<Duration>,
    between_tokens: Vec<Duration>,
    busy: usize,
    wrong: usize,
}

/// One streamed answer: its text, completion tokens, time to the first
/// piece and the gaps between pieces.
async fn ask(c: &Client, q: &Value) -> Result<(String, u64, Duration, Vec<Duration>), ClientError> {
    let start = Instant::now();
    let (mut first, mut last, mut gaps) = (None, start, Vec::new());
    let mut text = String::new();
    let (_, usage) = c
        .chat_stream_usage(q, |t| {
            let now = Instant::now();
            match first {
                None => first = Some(now - start),
                Some(_) => gaps.push(now - last),
            }
            last = now;
            text.push_str(t);
        })
        .await?;
    let tokens = usage["completion_tokens"].as_u64().unwrap_or_default();
    Ok((text, tokens, first.unwrap_or(start.elapsed()), gaps))
}

/// `clients` clients for `secs` seconds; client `i` asks questions `i`,
/// `i + clients`, … of the 32 in turn, so that every level asks the same
/// mix.
fn level(
    mix: &'static Mix,
    rt: &tokio::runtime::Runtime,
    client: &Client,
    alone: &[String],
    clients: usize,
    secs: u64,
) -> Result<(Measured, f64)> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let results = rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|i| {
                let (c, alone) = (client.clone(), alone.to_vec());
                tokio::spawn(async move {
                    let mut m = Measured::default();
                    let mut next = i;
                    while Instant::now() < deadline {
                        let q = next % alone.len();
                        next += clients;
                        match ask(&c, &mix.request(q)).await {
                            Ok((text, tokens, first, gaps)) => {
                                m.wrong += usize::from(text != alone[q]);
                                m.answers += 1;
                                m.tokens += tokens;
                                m.first_token.push(first);
                                m.between_tokens.extend(gaps);
                            }
                            Err(ClientError::Api { status: 429, .. }) => m.busy += 1,
                            Err(e) => return Err(e),
                        }
                    }
                    Ok(m)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.map_err(|e| anyhow::anyhow!("client task: {e}"))??);
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let mut all = Measured::default();
    for m in results {
        all.answers += m.answers;
        all.tokens += m.tokens;
        all.first_token.extend(m.first_token);
        all.between_tokens.extend(m.between_tokens);
        all.busy += m.busy;
        all.wrong += m.wrong;
    }
    Ok((all, elapsed))
}

pub fn run(r: &mut Report) -> Result<()> {
    let model_mib = std::fs::metadata(r.model_path())?.len() as f64 / (1024.0 * 1024.0);
    let system = super::system::System::start(&r.model_path())?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = system.client(&rt)?;
    let secs = if r.quick { 10 } else { 30 };
    for mix in &MIXES {
        // Each question alone, one at a time: the answers every later one
        // must equal.
        let alone: Vec<String> = (0..32)
            .map(|i| rt.block_on(ask(&client, &mix.request(i))).map(|a| a.0))
            .collect::<Result<_, _>>()?;
        let mut single = None;
        for clients in LEVELS {
            let (m, elapsed) = level(mix, &rt, &client, &alone, clients, secs)?;
            anyhow::ensure!(
                m.wrong == 0,
                "{}, {clients} clients: {} answers differ from the same question asked alone",
                mix.name,
                m.wrong
            );
            anyhow::ensure!(
                m.answers > 0,
                "{}, {clients} clients: no answer in {secs} s",
                mix.name
            );
            let answers = m.answers as f64 / elapsed;
            let tokens = m.tokens as f64 / elapsed;
            let what = |s: &str| {
                format!(
                    "{}, {clients} client{}: {s}",
                    mix.name,
                    if clients == 1 { "" } else { "s" }
                )
            };
            match single {
                None => {
                    r.add("load", what("answers"), answers, "ans/s");
                    r.add("load", what("generated tokens"), tokens, "tok/s");
                    single = Some((answers, tokens));
                }
                Some((a1, t1)) => {
                    r.compare(
                        "load",
                        what("answers"),
                        answers,
                        "ans/s",
                        answers / a1,
                        "1 client",
                    );
                    r.compare(
                        "load",
                        what("generated tokens"),
                        tokens,
                        "tok/s",
                        tokens / t1,
                        "1 client",
                    );
                }
            }
            r.add(
                "load",
                what("time to first token p50"),
                percentile_ms(&m.first_token, 50.0),
                "ms",
            );
            r.add(
                "load",
                what("time to first token p99"),
                percentile_ms(&m.first_token, 99.0),
                "ms",
            );
            r.add(
                "load",
                what("inter-token latency p99"),
                percentile_ms(&m.between_tokens, 99.0),
                "ms",
            );
            r.add(
                "load",
                what("429 answers (queue full)"),
                m.busy as f64,
                "count",
            );
        }
    }
    let peak = system.guest_peak_mib();
    // The system stopped, the engine alone in this process: how far the
    // batch scales without clients, shim and TLS on the same cores.
    drop(system);
    for mix in &MIXES {
        bare_engine(r, mix)?;
    }
    if let Some(mib) = peak {
        r.compare(
            "load",
            "guest peak memory (VmHWM)",
            mib,
            "MiB",
            (model_mib + KV_BUDGET_MIB) / mib,
            format!("model {model_mib:.0} MiB + K/V budget {KV_BUDGET_MIB:.0} MiB"),
        );
    }
    Ok(())
}

/// Counts a batched request's tokens.
struct Count(std::rc::Rc<std::cell::Cell<usize>>);

impl Sink for Count {
    fn wanted(&self) -> bool {
        true
    }
    fn text(&mut self, _: Released<'_>) {}
    fn done(&mut self, result: Result<Completion, GenerateError>) {
        if let Ok(c) = result {
            self.0.set(self.0.get() + c.ids.len());
        }
    }
}

/// The 32 questions through the bare engine: one at a time, then all in
/// one batch (the scheduler the guest runs, its default limits).
fn bare_engine(r: &mut Report, mix: &Mix) -> Result<()> {
    let path = r.model_path();
    let bytes = std::fs::read(&path).with_context(|| format!("model {}", path.display()))?;
    let meta = ciel_engine::gguf::read_metadata(&mut std::io::Cursor::new(&bytes))?;
    let tokenizer = ciel_engine::tokenizer::Tokenizer::from_gguf(&meta)?;
    let template = ciel_engine::chat::ChatTemplate::from_gguf(&meta)?;
    let mut model = ciel_engine::model::Model::load(&mut std::io::Cursor::new(&bytes))?;
    drop(bytes);
    let requests: Vec<Request> = (0..32)
        .map(|i| {
            let (_, prompt) =
                ciel_engine::chat::user_prompt(template.as_ref(), &tokenizer, &(mix.question)(i))?;
            Ok(Request {
                prompt,
                max_tokens: mix.max_tokens as usize,
                ..Request::default()
            })
        })
        .collect::<Result<_>>()?;
    let start = Instant::now();
    let mut alone = 0;
    for q in &requests {
        alone += generate(&mut model, &tokenizer, q, |_| {})?.ids.len();
    }
    let alone = alone as f64 / start.elapsed().as_secs_f64();
    let limits = Limits::serving(model.context(), model.kv_blocks());
    let mut s = Scheduler::new(limits)?;
    let tokens = std::rc::Rc::new(std::cell::Cell::new(0));
    let start = Instant::now();
    for q in requests {
        s.submit(q, Count(tokens.clone()));
    }
    while !s.is_idle() {
        s.step(&mut model, &tokenizer);
    }
    let batched = tokens.get() as f64 / start.elapsed().as_secs_f64();
    r.add(
        "load",
        format!("{}, bare engine: the 32 questions one at a time", mix.name),
        alone,
        "tok/s",
    );
    r.compare(
        "load",
        format!("{}, bare engine: the 32 questions in one batch", mix.name),
        batched,
        "tok/s",
        batched / alone,
        "one at a time",
    );
    Ok(())
}
