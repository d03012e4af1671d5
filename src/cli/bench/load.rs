//! `load`: 1, 8 and 32 clients through the whole attested path (client →
//! host shim → guest, over attested TLS), each streaming its own question
//! again and again for a bounded time. Per level: answers per second and
//! aggregate generated tokens per second (the 8- and 32-client figures as
//! ratios to one client), time to first token p50/p99, inter-token latency
//! p99, 429s (the documented refusal when the queue is full); then the
//! guest's peak memory against the model plus its K/V budget. Every
//! answer must be exactly the one its question gets alone.

use super::{Report, percentile_ms};
use anyhow::Result;
use ciel_client::{Client, ClientError};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const LEVELS: [usize; 3] = [1, 8, 32];
/// Tokens each answer may take: long enough that generation, not the
/// prompt, is most of the work.
const MAX_TOKENS: u64 = 32;
/// The guest's K/V budget in `ciel demo --serve` (`--kv-memory`'s default).
const KV_BUDGET_MIB: f64 = 2048.0;

fn question(i: usize) -> Value {
    json!({
        "messages": [{"role": "user", "content": format!("Count from {i} to {}, in words.", i + 9)}],
        "max_tokens": MAX_TOKENS,
    })
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
                        match ask(&c, &question(q)).await {
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
    // Each question alone, one at a time: the answers every later one
    // must equal.
    let alone: Vec<String> = (0..32)
        .map(|i| rt.block_on(ask(&client, &question(i))).map(|a| a.0))
        .collect::<Result<_, _>>()?;
    let mut single = None;
    for clients in LEVELS {
        let (m, elapsed) = level(&rt, &client, &alone, clients, secs)?;
        anyhow::ensure!(
            m.wrong == 0,
            "{clients} clients: {} answers differ from the same question asked alone",
            m.wrong
        );
        anyhow::ensure!(m.answers > 0, "{clients} clients: no answer in {secs} s");
        let answers = m.answers as f64 / elapsed;
        let tokens = m.tokens as f64 / elapsed;
        let what = |s: &str| {
            format!(
                "{clients} client{}: {s}",
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
    if let Some(mib) = system.guest_peak_mib() {
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
