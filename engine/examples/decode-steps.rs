//! Batched decode steps on the demo model, for profiling (`perf record`)
//! and a quick look at how a pass scales with its rows:
//! `cargo run --release -p ciel-engine --example decode-steps -- [BATCH] [STEPS] [GGUF]`
//! (GGUF: another model than the demo's). STEPS 0 times prompt passes
//! instead: the BATCH prompts' pass again and again (`PROMPT_TOKENS`,
//! default 40, tokens each).
//! Each of BATCH sequences has a prompt of PROMPT_TOKENS; then STEPS passes of one
//! token per sequence are timed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ciel_engine::kv_cache::BLOCK_TOKENS;
use ciel_engine::model::{Model, argmax};
use ciel_engine::transformer::Feed;

fn main() {
    let mut args = std::env::args().skip(1);
    let batch: usize = args.next().map_or(8, |a| a.parse().expect("BATCH"));
    let steps: usize = args.next().map_or(64, |a| a.parse().expect("STEPS"));
    let path = args
        .next()
        .map_or_else(ciel_engine::demo_model_path, std::path::PathBuf::from);
    let bytes = std::fs::read(&path).expect("the demo model (scripts/fetch-model.sh)");
    let mut model = Model::load(&mut std::io::Cursor::new(&bytes)).unwrap();
    let prompt_len: usize =
        std::env::var("PROMPT_TOKENS").map_or(40, |v| v.parse().expect("PROMPT_TOKENS"));
    let per_seq = (prompt_len + steps + 1).div_ceil(BLOCK_TOKENS);
    model
        .bound_kv_memory((batch * per_seq * model.kv_block_bytes()) as u64)
        .unwrap();
    let tables: Vec<Vec<u32>> = (0..batch)
        .map(|s| ((s * per_seq) as u32..((s + 1) * per_seq) as u32).collect())
        .collect();
    let prompts: Vec<Vec<u32>> = (0..batch)
        .map(|s| {
            (0..prompt_len)
                .map(|i| (100 + s * 7 + i * 13) as u32 % 49000) // in every vocabulary
                .collect()
        })
        .collect();
    let feeds: Vec<Feed<'_>> = (0..batch)
        .map(|s| Feed {
            blocks: &tables[s],
            pos: 0,
            tokens: &prompts[s],
            logits: true,
        })
        .collect();
    if steps == 0 {
        let t = std::time::Instant::now();
        let passes = 30;
        for _ in 0..passes {
            model.step(&feeds).unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{passes} prompt passes of {batch} × {prompt_len} tokens: {:.1} ms a pass, {:.1} tok/s",
            secs * 1000.0 / passes as f64,
            (passes * batch * prompt_len) as f64 / secs
        );
        return;
    }
    let t = std::time::Instant::now();
    let mut logits = model.step(&feeds).unwrap();
    eprintln!(
        "prompts: {} tokens in {:?}",
        batch * prompt_len,
        t.elapsed()
    );
    let t = std::time::Instant::now();
    for step in 0..steps {
        let next: Vec<[u32; 1]> = logits.iter().map(|l| [argmax(l).0]).collect();
        let feeds: Vec<Feed<'_>> = (0..batch)
            .map(|s| Feed {
                blocks: &tables[s],
                pos: prompt_len + step,
                tokens: &next[s],
                logits: true,
            })
            .collect();
        logits = model.step(&feeds).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    // The last logits' bits, hashed: equal across builds exactly when a
    // change left the arithmetic as it was.
    let mut h = std::hash::DefaultHasher::new();
    for l in &logits {
        for v in l {
            std::hash::Hash::hash(&v.to_bits(), &mut h);
        }
    }
    eprintln!("logits fingerprint: {:016x}", std::hash::Hasher::finish(&h));
    println!(
        "batch {batch}: {steps} steps in {secs:.2} s: {:.1} ms a step, {:.1} tok/s",
        secs * 1000.0 / steps as f64,
        (batch * steps) as f64 / secs
    );
}
