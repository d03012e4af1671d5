//! `inference`: the bare engine in this process against the full path —
//! client → host shim → guest over attested TLS, the guest a separate
//! process on the simulated platform (`ciel demo --serve`) — same model,
//! prompt, greedy decoding, machine and threads, runs interleaved; at 1
//! client and at 8 concurrent clients. The answers must be identical. With
//! `llama-cpp-python` installed, llama.cpp on the same GGUF too, its runs
//! interleaved with ours (this machine's speed drifts by a fifth within
//! minutes), the median of each side's runs compared.

use super::Report;
use anyhow::Result;
use ciel_engine::chat::{ChatTemplate, user_prompt};
use ciel_engine::generate::{Request, generate};
use ciel_engine::gguf::read_metadata;
use ciel_engine::model::Model;
use ciel_engine::sampling::SamplingParams;
use ciel_engine::tokenizer::Tokenizer;
use std::io::{BufRead, BufReader, Lines, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const PROMPT: &str = "Write a long story about a dragon who learns to bake bread.";

#[derive(Debug, Clone, Copy)]
struct Run {
    ttft: Duration,
    total: Duration,
}

/// Runs `f`, which streams text into the callback it gets: the time to the
/// first text and in all.
fn timed(out: &mut String, f: impl FnOnce(&mut dyn FnMut(&str)) -> Result<()>) -> Result<Run> {
    out.clear();
    let start = Instant::now();
    let mut first = None;
    f(&mut |t: &str| {
        first.get_or_insert_with(|| start.elapsed());
        out.push_str(t);
    })?;
    let total = start.elapsed();
    Ok(Run {
        ttft: first.unwrap_or(total),
        total,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub fn run(r: &mut Report) -> Result<()> {
    let (path, bytes) = r.read_model()?;
    let meta = read_metadata(&mut std::io::Cursor::new(&bytes))?;
    let tokenizer = Tokenizer::from_gguf(&meta)?;
    // A chat model is asked the question; a base model (no chat template)
    // continues it, through /v1/completions.
    let template = ChatTemplate::from_gguf(&meta)?;
    let mut model = Model::load(&mut std::io::Cursor::new(&bytes))?;
    drop(bytes);
    let new_tokens = if r.quick { 32 } else { 128 };
    let runs = if r.quick { 2 } else { 5 };
    let (_, prompt) = user_prompt(template.as_ref(), &tokenizer, PROMPT)?;
    let req = Request {
        prompt,
        max_tokens: new_tokens,
        sampling: SamplingParams::default(),
        stop: vec![],
        logprobs: None,
        ..Request::default()
    };
    let generated = std::cell::Cell::new(0usize);
    let mut bare = |out: &mut String| {
        timed(out, |emit| {
            let done = generate(&mut model, &tokenizer, &req, |r| emit(r.text))?;
            generated.set(done.ids.len());
            Ok(())
        })
    };

    let system = super::system::System::start(&path)?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = system.client(&rt)?;
    let chat = template.is_some();
    let body = if chat {
        serde_json::json!({
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": new_tokens,
        })
    } else {
        serde_json::json!({"prompt": PROMPT, "max_tokens": new_tokens})
    };
    let full = |out: &mut String| {
        timed(out, |emit| {
            if chat {
                rt.block_on(client.chat_stream(&body, emit))?;
            } else {
                rt.block_on(client.completions_stream(&body, emit))?;
            }
            Ok(())
        })
    };

    // Warm both; the answers must be the same.
    let (mut a, mut b) = (String::new(), String::new());
    bare(&mut a)?;
    full(&mut b)?;
    anyhow::ensure!(
        a == b,
        "the full path answered differently from the bare engine"
    );
    // llama.cpp started and warmed beside ours, its runs between ours.
    let mut llama = LlamaCpp::start(&path, &req.prompt, new_tokens).and_then(|mut l| {
        l.run()?;
        Ok(l)
    });
    let (mut bare_runs, mut full_runs, mut llama_runs) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        bare_runs.push(bare(&mut a)?);
        full_runs.push(full(&mut b)?);
        anyhow::ensure!(
            a == b,
            "the full path answered differently from the bare engine"
        );
        if let Ok(l) = &mut llama {
            match l.run() {
                Ok(figures) => llama_runs.push(figures),
                Err(why) => llama = Err(why),
            }
            // ggml's threads poll for work a while after a run: ours
            // start when they have gone quiet.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let tokens = generated.get();
    let stats = |v: &[Run]| {
        let total = median(v.iter().map(|x| x.total).collect());
        let ttft = median(v.iter().map(|x| x.ttft).collect());
        let decode = (tokens as f64 - 1.0) / (total - ttft).as_secs_f64().max(1e-9);
        (
            ttft.as_secs_f64() * 1e3,
            decode,
            tokens as f64 / total.as_secs_f64(),
        )
    };
    let (bt, bd, bo) = stats(&bare_runs);
    let (ft, fd, fo) = stats(&full_runs);
    let prompt = req.prompt.len() as f64;
    r.add(
        "inference",
        format!("bare engine: time to first token ({prompt} prompt tokens)"),
        bt,
        "ms",
    );
    r.compare(
        "inference",
        "full path: time to first token",
        ft,
        "ms",
        bt / ft,
        "bare engine (latency ratio)",
    );
    r.add(
        "inference",
        "bare engine: prompt tokens/s (to first token)",
        prompt / (bt / 1e3),
        "tok/s",
    );
    r.compare(
        "inference",
        "full path: prompt tokens/s (to first token)",
        prompt / (ft / 1e3),
        "tok/s",
        bt / ft,
        "bare engine",
    );
    r.add(
        "inference",
        format!("bare engine: generation tokens/s ({tokens} tokens)"),
        bd,
        "tok/s",
    );
    r.compare(
        "inference",
        "full path: generation tokens/s",
        fd,
        "tok/s",
        fd / bd,
        "bare engine",
    );
    r.compare(
        "inference",
        "full path: tokens/s overall (incl. first token)",
        fo,
        "tok/s",
        fo / bo,
        "bare engine",
    );

    // 8 clients at once (batched in the guest) against 8 requests back to
    // back in the bare engine.
    let clients = 8;
    let start = Instant::now();
    for _ in 0..clients {
        bare(&mut a)?;
    }
    let bare8 = (clients * tokens) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let answers: Vec<String> = rt.block_on(async {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (c, body) = (client.clone(), body.clone());
                tokio::spawn(async move {
                    let mut s = String::new();
                    if chat {
                        c.chat_stream(&body, |t| s.push_str(t)).await.map(|_| s)
                    } else {
                        c.completions_stream(&body, |t| s.push_str(t))
                            .await
                            .map(|_| s)
                    }
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await??);
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    let full8 = (clients * tokens) as f64 / start.elapsed().as_secs_f64();
    anyhow::ensure!(
        answers.iter().all(|x| *x == a),
        "a concurrent client got another answer"
    );
    r.add(
        "inference",
        "bare engine: 8 requests back to back, tokens/s",
        bare8,
        "tok/s",
    );
    r.compare(
        "inference",
        "full path: 8 concurrent clients, tokens/s",
        full8,
        "tok/s",
        full8 / bare8,
        "bare engine",
    );

    let ours = Ours {
        prompt_tps: prompt / (bt / 1e3),
        generation_tps: bd,
        overall_tps: bo,
    };
    match llama {
        Ok(l) => compare_llama_cpp(r, &l, &llama_runs, &ours),
        Err(why) if !r.is_json() => println!(
            "inference   llama.cpp comparison skipped: llama-cpp-python did not run ({why}); scripts/llamacpp-env.sh installs it, then set CIEL_LLAMA_CPP_PYTHON"
        ),
        Err(_) => {}
    }
    Ok(())
}

/// This engine's single-stream figures, beside which llama.cpp's stand.
struct Ours {
    prompt_tps: f64,
    generation_tps: f64,
    overall_tps: f64,
}

/// The Python that runs llama.cpp: `$CIEL_LLAMA_CPP_PYTHON` (what
/// `scripts/llamacpp-env.sh` prints), else `python3`.
fn llama_cpp_python() -> std::ffi::OsString {
    std::env::var_os("CIEL_LLAMA_CPP_PYTHON").unwrap_or_else(|| "python3".into())
}

/// llama.cpp (through `llama-cpp-python`) on the same GGUF, the same prompt
/// token ids, the same number of new tokens, greedy, the same threads, with
/// an f32 K/V cache as ours, in a child process that loads the model once
/// and answers one run per line on its stdin: prompt and generation tokens/s
/// by llama.cpp's own clock (`llama_perf_context`), and tokens/s overall.
struct LlamaCpp {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Its standard error (a file, not a pipe nobody drains while it
    /// runs), read for the reason when it fails.
    errors: std::fs::File,
    threads: usize,
    version: String,
}

const LLAMA_CPP_RUNNER: &str = r#"
import json, sys, time
import llama_cpp
from llama_cpp import Llama
ids = json.loads(sys.argv[2])
n = int(sys.argv[4])
m = Llama(model_path=sys.argv[1], n_threads=int(sys.argv[3]), n_threads_batch=int(sys.argv[3]),
          n_ctx=max(2048, len(ids) + n + 8), n_batch=max(512, len(ids)),
          type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, verbose=False)
print(json.dumps({"version": llama_cpp.__version__}), flush=True)
for _ in sys.stdin:
    m.reset()
    llama_cpp.llama_perf_context_reset(m.ctx)
    t = time.time()
    out = m.create_completion(ids, max_tokens=n, temperature=0.0, top_k=1)
    total = time.time() - t
    p = llama_cpp.llama_perf_context(m.ctx)
    print(json.dumps([p.n_p_eval / (p.t_p_eval_ms / 1e3), p.n_eval / (p.t_eval_ms / 1e3),
                      out["usage"]["completion_tokens"] / total]), flush=True)
"#;

impl LlamaCpp {
    /// Starts it; why not, when `llama-cpp-python` does not run.
    fn start(model: &std::path::Path, prompt: &[u32], n: usize) -> Result<Self, String> {
        let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
        let errors = tempfile::tempfile().map_err(|e| e.to_string())?;
        let stderr = errors.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new(llama_cpp_python())
            .args(["-c", LLAMA_CPP_RUNNER])
            .arg(model)
            .arg(serde_json::to_string(prompt).unwrap_or_default())
            .arg(threads.to_string())
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| e.to_string())?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err("no pipes to llama-cpp-python".into());
        };
        let mut l = LlamaCpp {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            errors,
            threads,
            version: String::new(),
        };
        let hello: serde_json::Value = l.line()?;
        l.version = hello["version"].as_str().unwrap_or("?").to_string();
        Ok(l)
    }

    /// The next line of its output, as JSON; its last error line if it
    /// ended instead.
    fn line<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, String> {
        match self.lines.next() {
            Some(Ok(line)) => serde_json::from_str(&line).map_err(|e| format!("{e}: {line}")),
            _ => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let mut err = String::new();
                let _ = std::io::Seek::rewind(&mut self.errors);
                let _ = std::io::Read::read_to_string(&mut self.errors, &mut err);
                Err(err.lines().last().unwrap_or("it ended").to_string())
            }
        }
    }

    /// One run: prompt, generation and overall tokens/s.
    fn run(&mut self) -> Result<[f64; 3], String> {
        writeln!(self.stdin, "run").map_err(|e| e.to_string())?;
        self.stdin.flush().map_err(|e| e.to_string())?;
        self.line()
    }
}

impl Drop for LlamaCpp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// llama.cpp's figures (the median of its runs, each between two of ours)
/// and ours against them.
fn compare_llama_cpp(r: &mut Report, llama: &LlamaCpp, runs: &[[f64; 3]], ours: &Ours) {
    let (threads, version) = (llama.threads, &llama.version);
    let median = |i: usize| {
        let mut v: Vec<f64> = runs.iter().map(|run| run[i]).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    for (i, (what, ours)) in [
        ("prompt tokens/s", ours.prompt_tps),
        ("generation tokens/s", ours.generation_tps),
        ("tokens/s overall", ours.overall_tps),
    ]
    .into_iter()
    .enumerate()
    {
        let theirs = median(i);
        r.add(
            "inference",
            format!("llama.cpp (llama-cpp-python {version}, {threads} threads): {what}"),
            theirs,
            "tok/s",
        );
        r.compare(
            "inference",
            format!("bare engine vs llama.cpp: {what}"),
            ours,
            "tok/s",
            ours / theirs,
            "llama.cpp",
        );
    }
}
