//! `device`: the model on `--device` (candle's kernels on `cuda:N`, the GPU
//! path; on `cpu` ours, whose load the `unseal` suite measures too) against
//! ours on the CPU, in the same run: the sealed load onto the device
//! (decrypt in guest memory, then upload) against a plaintext load onto it;
//! and candle's pass (what a GPU runs) decoding greedily token by token
//! against ours (the same tokens, up to genuine near-ties), and its tokens
//! per second.

use super::Report;
use anyhow::Result;
use ciel_engine::chat::{ChatTemplate, user_prompt};
use ciel_engine::device::ComputeDevice;
use ciel_engine::gguf::read_metadata;
use ciel_engine::model::{Kernels, Model, argmax};
use ciel_engine::tokenizer::Tokenizer;
use std::time::Instant;

const PROMPT: &str = "Explain in a few sentences why the sky is blue.";

/// A margin under which two kernels may honestly choose differently: the
/// top two logits that close are a near-tie at f32 (llama.cpp's oracle
/// tests use the same bound).
const NEAR_TIE: f32 = 0.05;

pub fn run(r: &mut Report, device: ComputeDevice) -> Result<()> {
    let (_, bytes) = r.read_model()?;
    let meta = read_metadata(&mut std::io::Cursor::new(&bytes))?;
    let tokenizer = Tokenizer::from_gguf(&meta)?;
    let template = ChatTemplate::from_gguf(&meta)?;
    let (_, prompt) = user_prompt(template.as_ref(), &tokenizer, PROMPT)?;
    let runs = if r.quick { 2 } else { 5 };

    // Loading onto the device: plaintext bytes, then the guest's path.
    let (p, s) = super::unseal::load_times(&bytes, runs, device)?;
    r.add(
        "device",
        format!("plaintext model load onto {device}"),
        p,
        "ms",
    );
    r.compare(
        "device",
        format!("sealed model load onto {device} (unseal in memory, load, digest)"),
        s,
        "ms",
        p / s,
        "plaintext load onto the same device (1.0 = free)",
    );

    // Greedy, token by token, each side fed its own choice.
    let new_tokens = if r.quick { 16 } else { 64 };
    let mut ours = Model::load(&mut std::io::Cursor::new(&bytes))?;
    let mut theirs = Model::load_on(&mut std::io::Cursor::new(&bytes), Kernels::Candle, device)?;
    drop(bytes);
    let (mut a, mut b) = (ours.forward(&prompt)?, theirs.forward(&prompt)?);
    let mut same = 0usize;
    let mut divergence = None;
    for step in 0..new_tokens {
        let ((x, margin), (y, _)) = (argmax(&a), argmax(&b));
        if x != y {
            divergence = Some((step, margin));
            break;
        }
        same += 1;
        if step + 1 < new_tokens {
            a = ours.forward(&[x])?;
            b = theirs.forward(&[y])?;
        }
    }
    r.add(
        "device",
        format!("greedy tokens equal to ours on the CPU (of {new_tokens})"),
        same as f64,
        "tokens",
    );
    if let Some((step, margin)) = divergence {
        r.add(
            "device",
            format!("our top-2 logit margin where the choices first differ (step {step})"),
            f64::from(margin),
            "logit",
        );
        anyhow::ensure!(
            margin < NEAR_TIE,
            "on {device} greedy decoding chose another token at step {step}, where ours was {margin:.3} logits ahead: not a near-tie (< {NEAR_TIE})"
        );
    }

    // Decoding speed: the same tokens through both.
    let decode = |model: &mut Model| -> Result<f64> {
        model.reset();
        let mut logits = model.forward(&prompt)?;
        let start = Instant::now();
        for _ in 0..new_tokens {
            let (next, _) = argmax(&logits);
            logits = model.forward(&[next])?;
        }
        Ok(new_tokens as f64 / start.elapsed().as_secs_f64())
    };
    let (mut ours_tps, mut theirs_tps) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ours_tps.push(decode(&mut ours)?);
        theirs_tps.push(decode(&mut theirs)?);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let (o, t) = (median(ours_tps), median(theirs_tps));
    r.add("device", "decode, ours on the CPU", o, "tok/s");
    r.compare(
        "device",
        format!("decode with candle's kernels on {device}"),
        t,
        "tok/s",
        t / o,
        "ours on the CPU, same run",
    );
    Ok(())
}
