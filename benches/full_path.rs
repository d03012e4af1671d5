//! Generation through the full path — client → host shim → guest, over
//! attested TLS, the guest a separate process on the simulated platform
//! (`ciel demo --serve`) — against the bare engine in this process: same
//! model, same prompt, same greedy decoding, same machine and thread count,
//! runs interleaved. Prints tokens/s and time to first token for both and
//! their ratio. The answers must be identical, or the bench fails.
//! Needs the demo model (`scripts/fetch-model.sh`; or `CIEL_MODEL`).
//! Run: `cargo bench --bench full_path` (`FULL_PATH_RUNS`, default 5).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::arithmetic_side_effects
)]

use ciel_enclave::engine::chat::{ChatTemplate, Message};
use ciel_enclave::engine::generate::{Request, generate};
use ciel_enclave::engine::gguf::parse_metadata;
use ciel_enclave::engine::model::Model;
use ciel_enclave::engine::sampling::SamplingParams;
use ciel_enclave::engine::tokenizer::Tokenizer;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PROMPT: &str = "Write a long story about a dragon who learns to bake bread.";
const NEW_TOKENS: usize = 96;

#[derive(Debug, Clone, Copy)]
struct Run {
    ttft: Duration,
    total: Duration,
}

/// Runs `f`, which streams text into the callback it gets: the time to
/// the first text and in all.
fn timed(out: &mut String, f: impl FnOnce(&mut dyn FnMut(&str))) -> Run {
    out.clear();
    let start = Instant::now();
    let mut first = None;
    f(&mut |t: &str| {
        first.get_or_insert_with(|| start.elapsed());
        out.push_str(t);
    });
    let total = start.elapsed();
    Run {
        ttft: first.unwrap_or(total),
        total,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::var("FULL_PATH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let path = ciel_enclave::engine::demo_model_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "demo model {} missing ({e}): run scripts/fetch-model.sh",
            path.display()
        )
    });
    let meta = parse_metadata(&bytes[..(8 << 20).min(bytes.len())]).unwrap();
    let tokenizer = Tokenizer::from_gguf(&meta).unwrap();
    let template = ChatTemplate::from_gguf(&meta).unwrap();
    let mut model = Model::load(&mut std::io::Cursor::new(&bytes)).unwrap();
    drop(bytes);
    let text = template
        .render(
            &[Message {
                role: "user".into(),
                content: PROMPT.into(),
            }],
            true,
        )
        .unwrap();
    let req = Request {
        prompt: tokenizer.encode(&text, true),
        max_tokens: NEW_TOKENS,
        sampling: SamplingParams::default(),
        stop: vec![],
    };
    let mut bare = |out: &mut String| -> (Run, usize) {
        let mut tokens = 0;
        let run = timed(out, |emit| {
            tokens = generate(&mut model, &tokenizer, &req, emit)
                .unwrap()
                .ids
                .len();
        });
        (run, tokens)
    };

    // The full system, as separate processes.
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_ciel"))
        .args(["demo", "--serve", "--workdir"])
        .arg(dir.path().join("w"))
        .arg("--model")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = BufReader::new(demo.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with('{'))
        .expect("ciel demo --serve did not become ready");
    let info: serde_json::Value = serde_json::from_str(&ready).unwrap();
    let policy = ciel_attestation::Policy::from_toml(
        &std::fs::read_to_string(info["policy"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = rt
        .block_on(ciel_client::Client::connect(
            info["url"].as_str().unwrap(),
            policy,
        ))
        .unwrap();
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": NEW_TOKENS,
    });
    let full = |out: &mut String| -> Run {
        timed(out, |emit| {
            rt.block_on(client.chat_stream(&body, emit)).unwrap();
        })
    };

    // Warm both, and require the same answer.
    let (mut a, mut b) = (String::new(), String::new());
    let (_, tokens) = bare(&mut a);
    full(&mut b);
    assert_eq!(
        a, b,
        "the full path answered differently from the bare engine"
    );
    let (mut bare_runs, mut full_runs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        bare_runs.push(bare(&mut a).0);
        full_runs.push(full(&mut b));
        assert_eq!(a, b);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &demo.id().to_string()])
        .status();
    let _ = demo.wait();

    let report = |name: &str, r: &[Run]| {
        let total = median(r.iter().map(|x| x.total).collect());
        let ttft = median(r.iter().map(|x| x.ttft).collect());
        // Decode speed: tokens after the first, over the time after it.
        let decode = (tokens as f64 - 1.0) / (total - ttft).as_secs_f64();
        let overall = tokens as f64 / total.as_secs_f64();
        println!(
            "{name:<28} ttft {:>7.1} ms   total {:>7.1} ms   {overall:>6.1} tok/s overall   {decode:>6.1} tok/s decode",
            ttft.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3
        );
        (overall, decode, ttft)
    };
    println!(
        "{tokens} generated tokens, prompt of {} tokens, median of {runs} interleaved runs:",
        req.prompt.len()
    );
    let (bo, bd, bt) = report("bare engine (in-process)", &bare_runs);
    let (fo, fd, ft) = report("client -> host -> guest", &full_runs);
    println!(
        "ratio full/bare: {:.3}x tokens/s overall, {:.3}x decode; ttft +{:.1} ms",
        fo / bo,
        fd / bd,
        (ft.as_secs_f64() - bt.as_secs_f64()) * 1e3
    );
}
