//! `load`: 32 clients through the host shim for a bounded time, each
//! asking its own question again and again, against the same questions
//! asked one at a time: answers per second, latency percentiles, 429s (the
//! documented refusal when the queue is full), and the guest's peak memory.
//! Every answer must be the one its question gets alone.

use super::{Report, percentile_ms};
use anyhow::Result;
use ciel_client::ClientError;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const CLIENTS: usize = 32;

fn answer(v: &Value) -> String {
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub fn run(r: &mut Report) -> Result<()> {
    let system = super::system::System::start(&r.model_path())?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = system.client(&rt)?;
    let secs = if r.quick { 10 } else { 30 };
    let reqs: Vec<Value> = (0..CLIENTS)
        .map(|i| {
            json!({
                "messages": [{"role": "user", "content": format!("Count from {i} to {}.", i + 3)}],
                "max_tokens": 12,
            })
        })
        .collect();
    // One at a time: the reference answers and the baseline rate.
    let start = Instant::now();
    let alone: Vec<String> = reqs
        .iter()
        .map(|q| rt.block_on(client.chat(q)).map(|v| answer(&v)))
        .collect::<Result<_, _>>()?;
    let sequential = CLIENTS as f64 / start.elapsed().as_secs_f64();

    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let results = rt.block_on(async {
        let tasks: Vec<_> = reqs
            .into_iter()
            .zip(alone)
            .map(|(q, want)| {
                let c = client.clone();
                tokio::spawn(async move {
                    let (mut lat, mut busy, mut wrong) = (Vec::new(), 0usize, 0usize);
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        match c.chat(&q).await {
                            Ok(v) => {
                                wrong += usize::from(answer(&v) != want);
                                lat.push(t.elapsed());
                            }
                            Err(ClientError::Api { status: 429, .. }) => busy += 1,
                            Err(e) => return Err(e),
                        }
                    }
                    Ok((lat, busy, wrong))
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
    let lat: Vec<Duration> = results.iter().flat_map(|(l, _, _)| l.clone()).collect();
    let busy: usize = results.iter().map(|(_, b, _)| b).sum();
    let wrong: usize = results.iter().map(|(_, _, w)| w).sum();
    anyhow::ensure!(wrong == 0, "{wrong} answers went to the wrong client");
    let rate = lat.len() as f64 / elapsed;
    r.add("load", "answers, 1 client at a time", sequential, "ans/s");
    r.compare(
        "load",
        "answers, 32 concurrent clients",
        rate,
        "ans/s",
        rate / sequential,
        "1 client at a time",
    );
    r.add(
        "load",
        "32 clients: latency p50",
        percentile_ms(&lat, 50.0),
        "ms",
    );
    r.add(
        "load",
        "32 clients: latency p99",
        percentile_ms(&lat, 99.0),
        "ms",
    );
    r.add(
        "load",
        "32 clients: 429 answers (queue full)",
        busy as f64,
        "count",
    );
    r.add(
        "load",
        "32 clients: answers not the client's own",
        wrong as f64,
        "count",
    );
    if let Some(mib) = system.guest_peak_mib() {
        r.add("load", "guest peak memory (VmHWM)", mib, "MiB");
    }
    Ok(())
}
