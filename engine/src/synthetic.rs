//! Tiny synthetic GGUF models, one per architecture × weight type, written
//! deterministically (seeded weights, candle's quantizers, candle's GGUF
//! writer), so the same bytes come out on every machine. llama.cpp's logits
//! for them are committed (`tests/reference/synthetic-llamacpp.json`, by
//! `scripts/llamacpp-reference.py --synthetic`); the tests regenerate the
//! files, check their digests against the reference's, and compare.
//!
//! `cargo run -p ciel-engine --features testing --example synthetic-gguf DIR`
//! writes them for the reference script.

use crate::arch::Arch;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file::Value};
use candle_core::{Device, Tensor};

/// The weight types every architecture is checked in.
pub const WEIGHT_TYPES: &[(&str, GgmlDType)] = &[
    ("f32", GgmlDType::F32),
    ("f16", GgmlDType::F16),
    ("bf16", GgmlDType::BF16),
    ("q8_0", GgmlDType::Q8_0),
    ("q4_0", GgmlDType::Q4_0),
    ("q4_1", GgmlDType::Q4_1),
    ("q5_0", GgmlDType::Q5_0),
    ("q5_1", GgmlDType::Q5_1),
    ("q2_k", GgmlDType::Q2K),
    ("q3_k", GgmlDType::Q3K),
    ("q4_k", GgmlDType::Q4K),
    ("q5_k", GgmlDType::Q5K),
    ("q6_k", GgmlDType::Q6K),
];

/// The architectures written.
pub const ARCHS: &[Arch] = &[
    Arch::Llama,
    Arch::Gemma2,
    Arch::Gemma3,
    Arch::Qwen2,
    Arch::Qwen3,
    Arch::Phi3,
];

const HIDDEN: usize = 256;
const FFN: usize = 256;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 64;
const LAYERS: usize = 2;
/// Gemma 3's window, short enough that the test prompt runs past it.
const WINDOW: u32 = 4;

/// The file name of one synthetic model.
pub fn file_name(arch: Arch, weights: &str) -> String {
    format!("synthetic-{}-{weights}.gguf", arch.name())
}

/// Llama 3.1's rotary frequency factors (`rope_freqs.weight`), on the f32
/// llama model: the file name and its bytes.
pub fn llama_with_rope_freqs() -> candle_core::Result<(String, Vec<u8>)> {
    Ok((
        "synthetic-llama-rope-freqs-f32.gguf".into(),
        write(Arch::Llama, GgmlDType::F32, Extra::RopeFreqs)?,
    ))
}

/// Phi-3 128k's LongRoPE (short and long factors, an attention factor) on
/// the f32 phi3 model, its short factors made for `original` tokens: the
/// file name and its bytes. With an original context of 16 the long
/// factors apply (more is served, here and by llama.cpp), with 512 (all
/// of the trained context) the short ones.
pub fn phi3_with_long_rope(original: usize) -> candle_core::Result<(String, Vec<u8>)> {
    Ok((
        format!("synthetic-phi3-longrope{original}-f32.gguf"),
        write(Arch::Phi3, GgmlDType::F32, Extra::LongRope { original })?,
    ))
}

/// Rotary extras beyond an architecture's plain model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Extra {
    None,
    /// Llama 3.1's `rope_freqs.weight`.
    RopeFreqs,
    /// Phi-3's LongRoPE factors, the short ones for `original` tokens.
    LongRope {
        original: usize,
    },
}

/// splitmix64: a fixed, portable stream of weights.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // Uniform in [-1, 1).
        ((z >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }
}

/// A SentencePiece vocabulary of `<unk>`, `<s>`, `</s>` and the 256 byte
/// tokens: enough for llama.cpp to load the model; the tests feed ids.
fn vocabulary() -> Vec<(String, i32)> {
    let mut v = vec![
        ("<unk>".to_string(), 2),
        ("<s>".into(), 3),
        ("</s>".into(), 3),
    ];
    v.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 6)));
    v
}

/// The vocabulary size of every synthetic model.
pub fn vocab_size() -> usize {
    vocabulary().len()
}

/// One synthetic model's GGUF bytes.
pub fn gguf(arch: Arch, dtype: GgmlDType) -> candle_core::Result<Vec<u8>> {
    write(arch, dtype, Extra::None)
}

fn write(arch: Arch, dtype: GgmlDType, extra: Extra) -> candle_core::Result<Vec<u8>> {
    let device = Device::Cpu;
    // Each architecture has its own weights, the same for every type.
    let mut rng = Rng(match arch {
        Arch::Llama => 1,
        Arch::Gemma3 => 2,
        Arch::Qwen2 => 3,
        Arch::Qwen3 => 4,
        Arch::Phi3 => 5,
        Arch::Gemma2 => 6,
    });
    let vocab = vocabulary();
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut matrix = |name: String, rows: usize, cols: usize, scale: f32| {
        let data: Vec<f32> = (0..rows * cols).map(|_| rng.next() * scale).collect();
        let t = Tensor::from_vec(data, (rows, cols), &device)?;
        let q = QTensor::quantize(&t, dtype)?;
        tensors.push((name, q));
        Ok::<_, candle_core::Error>(())
    };
    // Weights scaled so that activations stay of order one.
    let w = 1.0 / (HIDDEN as f32).sqrt() * 1.7;
    // Gemma multiplies embeddings by √hidden: scaled down by as much, so
    // that attention and the MLP weigh in the residual stream as in llama.
    let embedding_scale = match arch {
        Arch::Gemma2 | Arch::Gemma3 => 1.0 / (HIDDEN as f32).sqrt(),
        _ => 1.0,
    };
    matrix(
        "token_embd.weight".into(),
        vocab.len(),
        HIDDEN,
        embedding_scale,
    )?;
    // Gemma ties its output to the embeddings (tested there); the others
    // have their own, or a tied output would mostly echo the last token.
    if !matches!(arch, Arch::Gemma2 | Arch::Gemma3) {
        matrix("output.weight".into(), vocab.len(), HIDDEN, w)?;
    }
    for i in 0..LAYERS {
        let n = |what: &str| format!("blk.{i}.{what}.weight");
        if arch == Arch::Phi3 {
            // q, k, v in one matrix; gate and up in one.
            let qkv = (HEADS + 2 * KV_HEADS) * HEAD_DIM;
            matrix(n("attn_qkv"), qkv, HIDDEN, w)?;
            matrix(n("attn_output"), HIDDEN, HEADS * HEAD_DIM, w)?;
            matrix(n("ffn_up"), 2 * FFN, HIDDEN, w)?;
        } else {
            matrix(n("attn_q"), HEADS * HEAD_DIM, HIDDEN, w)?;
            matrix(n("attn_k"), KV_HEADS * HEAD_DIM, HIDDEN, w)?;
            matrix(n("attn_v"), KV_HEADS * HEAD_DIM, HIDDEN, w)?;
            matrix(n("attn_output"), HIDDEN, HEADS * HEAD_DIM, w)?;
            matrix(n("ffn_gate"), FFN, HIDDEN, w)?;
            matrix(n("ffn_up"), FFN, HIDDEN, w)?;
        }
        matrix(n("ffn_down"), HIDDEN, FFN, w)?;
    }
    // Vectors (always f32): norm weights around one, biases around zero.
    let mut vector = |name: String, len: usize, center: f32| {
        let data: Vec<f32> = (0..len).map(|_| center + 0.2 * rng.next()).collect();
        let t = Tensor::from_vec(data, len, &device)?;
        tensors.push((name, QTensor::quantize(&t, GgmlDType::F32)?));
        Ok::<_, candle_core::Error>(())
    };
    vector("output_norm.weight".into(), HIDDEN, 1.0)?;
    for i in 0..LAYERS {
        let n = |what: &str| format!("blk.{i}.{what}.weight");
        vector(n("attn_norm"), HIDDEN, 1.0)?;
        vector(n("ffn_norm"), HIDDEN, 1.0)?;
        if matches!(arch, Arch::Gemma3 | Arch::Qwen3) {
            vector(n("attn_q_norm"), HEAD_DIM, 1.0)?;
            vector(n("attn_k_norm"), HEAD_DIM, 1.0)?;
        }
        if matches!(arch, Arch::Gemma2 | Arch::Gemma3) {
            vector(n("post_attention_norm"), HIDDEN, 1.0)?;
            vector(n("post_ffw_norm"), HIDDEN, 1.0)?;
        }
        if arch == Arch::Qwen2 {
            for (what, len) in [
                ("attn_q", HEADS * HEAD_DIM),
                ("attn_k", KV_HEADS * HEAD_DIM),
                ("attn_v", KV_HEADS * HEAD_DIM),
            ] {
                vector(format!("blk.{i}.{what}.bias"), len, 0.0)?;
            }
        }
    }
    // Factors from 1 (fast pairs) to `top` (slow ones), as Llama 3.1's and
    // Phi-3 128k's.
    let factors = |top: f32| -> candle_core::Result<QTensor> {
        let f: Vec<f32> = (0..HEAD_DIM / 2)
            .map(|i| 1.0 + (top - 1.0) * i as f32 / (HEAD_DIM / 2 - 1) as f32)
            .collect();
        QTensor::quantize(&Tensor::from_vec(f, HEAD_DIM / 2, &device)?, GgmlDType::F32)
    };
    match extra {
        Extra::None => {}
        Extra::LongRope { .. } => {
            tensors.push(("rope_factors_short.weight".into(), factors(1.5)?));
            tensors.push(("rope_factors_long.weight".into(), factors(6.0)?));
        }
        Extra::RopeFreqs => tensors.push(("rope_freqs.weight".into(), factors(8.0)?)),
    }
    let p = arch.name();
    let u32v = |v: usize| Value::U32(v as u32);
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(p.into())),
        (
            "general.name".into(),
            // llama.cpp gives tokens of models named "phi3" or "phi-3"
            // strip attributes by looking up Phi-3's own special tokens,
            // which this vocabulary has not (it would refuse to load).
            Value::String(match arch {
                Arch::Phi3 => "synthetic phi-three".into(),
                _ => format!("synthetic {p}"),
            }),
        ),
        (format!("{p}.context_length"), u32v(512)),
        (format!("{p}.embedding_length"), u32v(HIDDEN)),
        (format!("{p}.block_count"), u32v(LAYERS)),
        (format!("{p}.feed_forward_length"), u32v(FFN)),
        (format!("{p}.attention.head_count"), u32v(HEADS)),
        (format!("{p}.attention.head_count_kv"), u32v(KV_HEADS)),
        (
            format!("{p}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
        (format!("{p}.rope.freq_base"), Value::F32(10_000.0)),
        (format!("{p}.rope.dimension_count"), u32v(HEAD_DIM)),
    ];
    if let Extra::LongRope { original } = extra {
        md.extend([
            (
                format!("{p}.rope.scaling.original_context_length"),
                u32v(original),
            ),
            (format!("{p}.rope.scaling.attn_factor"), Value::F32(1.19)),
        ]);
    }
    if arch == Arch::Gemma2 {
        // Caps low enough to bite on these weights' scores and logits.
        md.extend([
            (format!("{p}.attention.key_length"), u32v(HEAD_DIM)),
            (format!("{p}.attention.value_length"), u32v(HEAD_DIM)),
            (format!("{p}.attention.sliding_window"), Value::U32(WINDOW)),
            (format!("{p}.attn_logit_softcapping"), Value::F32(2.0)),
            (format!("{p}.final_logit_softcapping"), Value::F32(3.0)),
        ]);
    }
    if arch == Arch::Gemma3 {
        md.extend([
            (format!("{p}.attention.key_length"), u32v(HEAD_DIM)),
            (format!("{p}.attention.value_length"), u32v(HEAD_DIM)),
            (format!("{p}.attention.sliding_window"), Value::U32(WINDOW)),
            // Layer 0 local, layer 1 global.
            (format!("{p}.attention.sliding_window_pattern"), u32v(2)),
            (format!("{p}.rope.freq_base_swa"), Value::F32(100.0)),
        ]);
    }
    md.extend([
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(vocab.iter().map(|t| Value::String(t.0.clone())).collect()),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(vocab.iter().map(|_| Value::F32(0.0)).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(vocab.iter().map(|t| Value::I32(t.1)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
    ]);
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    candle_core::quantized::gguf_file::write(&mut out, &md_refs, &t_refs)?;
    Ok(out.into_inner())
}
