//! The architectures the engine runs, read from GGUF metadata into one
//! description of a decoder-only transformer ([`Config`]): what differs
//! between llama and Gemma 3 is data here, not a second forward pass.
//!
//! Every key is read under the architecture's prefix (`llama.`, `gemma3.`)
//! with llama.cpp's defaults where llama.cpp has one; a missing key without
//! a default, or an unknown architecture, is refused by name.

use super::model::ModelError;
use candle_core::quantized::gguf_file::Value;
use std::collections::HashMap;

/// The architectures served, by their `general.architecture` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2 and 3.x, TinyLlama, SmolLM, Mistral.
    Llama,
    /// Gemma 2: norms after attention and MLP, GELU, scaled embeddings,
    /// every other layer a sliding-window one, attention scores and logits
    /// soft-capped.
    Gemma2,
    /// Gemma 3: q/k norms, norms after attention and MLP, GELU, scaled
    /// embeddings, sliding-window layers with their own rotary base.
    Gemma3,
    /// Qwen2 and Qwen2.5: biases on q, k and v; rotary halves.
    Qwen2,
    /// Qwen3: q/k norms; rotary halves.
    Qwen3,
    /// Phi-3 and Phi-3.5 (mini, medium): q, k and v in one matrix, gate and
    /// up in one, rotary halves, LongRoPE factors for the long-context
    /// models.
    Phi3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Phi3 => "phi3",
        }
    }
}

/// How the rotary embedding pairs a head's dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (llama.cpp's "norm" type; GGUF llama weights are
    /// permuted for it).
    Interleaved,
    /// First half with second half (llama.cpp's "neox" type).
    Halves,
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU, tanh approximation (ggml's `gelu`).
    GeluTanh,
}

/// One decoder-only transformer, as the forward pass needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f32,
    /// The context the model was trained for.
    pub context: usize,
    pub rope_style: RopeStyle,
    pub rope_dim: usize,
    pub rope_base: f32,
    /// Positions are multiplied by this (linear RoPE scaling: 1 / factor).
    pub rope_scale: f32,
    /// Sliding-window layers: their window, rotary base and which layers.
    pub sliding: Option<Sliding>,
    /// Embeddings are multiplied by √hidden (Gemma).
    pub scale_embeddings: bool,
    /// Per-head RMS norms of q and k before the rotary embedding.
    pub qk_norm: bool,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// RMS norms of the attention and MLP outputs before their residuals.
    pub post_norms: bool,
    pub activation: Activation,
    /// Attention scores are divided by the square root of this: the head
    /// size, but Gemma 3 27B's hidden/heads.
    pub attention_scale_dim: usize,
    /// Logits are soft-capped: `cap × tanh(logits / cap)`.
    pub final_softcap: Option<f32>,
    /// Attention scores are soft-capped likewise, after scaling and before
    /// the mask (Gemma 2).
    pub attention_softcap: Option<f32>,
    /// LongRoPE (Phi-3 128k): the context the short factors are for (the
    /// long ones apply when more is served), and the factor the rotary
    /// cos and sin are multiplied by (`rope.scaling.attn_factor`).
    pub rope_original_context: usize,
    pub rope_attn_factor: f32,
}

/// Gemma's local-attention layers.
#[derive(Debug, Clone, PartialEq)]
pub struct Sliding {
    /// A key is seen by queries fewer than `window` positions after it.
    pub window: usize,
    pub rope_base: f32,
    /// Layer `i` is a sliding-window layer when `i % pattern < pattern - 1`.
    pub pattern: usize,
}

impl Sliding {
    pub fn applies_to(&self, layer: usize) -> bool {
        self.pattern == 0 || layer % self.pattern < self.pattern - 1
    }
}

struct Keys<'a> {
    md: &'a HashMap<String, Value>,
    prefix: &'static str,
}

impl Keys<'_> {
    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.prefix)
    }
    fn get(&self, name: &str) -> Option<&Value> {
        self.md.get(&self.key(name))
    }
    fn usize(&self, name: &str) -> Result<usize, ModelError> {
        self.opt_usize(name)?
            .ok_or_else(|| ModelError::MissingKey(self.key(name)))
    }
    fn opt_usize(&self, name: &str) -> Result<Option<usize>, ModelError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_u32()
                .map(|v| Some(v as usize))
                .or_else(|_| v.to_u64().map(|v| usize::try_from(v).ok()))
                .map_err(|_| ModelError::MissingKey(self.key(name))),
        }
    }
    fn opt_f32(&self, name: &str) -> Result<Option<f32>, ModelError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .to_f32()
                .map(Some)
                .map_err(|_| ModelError::MissingKey(self.key(name))),
        }
    }
    fn f32(&self, name: &str) -> Result<f32, ModelError> {
        self.opt_f32(name)?
            .ok_or_else(|| ModelError::MissingKey(self.key(name)))
    }
}

impl Config {
    pub fn from_gguf(md: &HashMap<String, Value>) -> Result<Self, ModelError> {
        let arch_name = md
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .ok_or_else(|| ModelError::MissingKey("general.architecture".into()))?;
        let arch = match arch_name.as_str() {
            "llama" => Arch::Llama,
            "gemma2" => Arch::Gemma2,
            "gemma3" => Arch::Gemma3,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "phi3" => Arch::Phi3,
            other => return Err(ModelError::Architecture(other.into())),
        };
        let k = Keys {
            md,
            prefix: arch.name(),
        };
        if k.get("expert_count").is_some() {
            return Err(ModelError::Unsupported(format!(
                "{}: mixture-of-experts models are not supported",
                k.key("expert_count")
            )));
        }
        let heads = k.usize("attention.head_count")?;
        let kv_heads = k.opt_usize("attention.head_count_kv")?.unwrap_or(heads);
        let hidden = k.usize("embedding_length")?;
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(ModelError::Unsupported(format!(
                "{heads} attention heads cannot share {kv_heads} key/value heads"
            )));
        }
        let head_dim = match k.opt_usize("attention.key_length")? {
            Some(d) => d,
            None => hidden / heads,
        };
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(ModelError::Unsupported(format!(
                "head dimension {head_dim} (must be even and non-zero)"
            )));
        }
        if let Some(v) = k.opt_usize("attention.value_length")?
            && v != head_dim
        {
            return Err(ModelError::Unsupported(format!(
                "{}: value heads of {v} beside key heads of {head_dim}",
                k.key("attention.value_length")
            )));
        }
        let rope_scale = match k.get("rope.scaling.type").and_then(|v| v.to_string().ok()) {
            None => 1.0,
            Some(t) if t == "none" => 1.0,
            Some(t) if t == "linear" => 1.0 / k.opt_f32("rope.scaling.factor")?.unwrap_or(1.0),
            Some(t) => {
                return Err(ModelError::Unsupported(format!(
                    "{} = {t:?} (linear only)",
                    k.key("rope.scaling.type")
                )));
            }
        };
        let context = k.usize("context_length")?;
        let common = Config {
            arch,
            layers: k.usize("block_count")?,
            hidden,
            heads,
            kv_heads,
            head_dim,
            eps: k.f32("attention.layer_norm_rms_epsilon")?,
            context,
            rope_style: RopeStyle::Interleaved,
            rope_dim: k.opt_usize("rope.dimension_count")?.unwrap_or(head_dim),
            rope_base: k.opt_f32("rope.freq_base")?.unwrap_or(10_000.0),
            rope_scale,
            sliding: None,
            scale_embeddings: false,
            qk_norm: false,
            qkv_bias: false,
            post_norms: false,
            activation: Activation::Silu,
            attention_scale_dim: head_dim,
            final_softcap: None,
            attention_softcap: None,
            rope_original_context: k
                .opt_usize("rope.scaling.original_context_length")?
                .unwrap_or(context),
            rope_attn_factor: k.opt_f32("rope.scaling.attn_factor")?.unwrap_or(1.0),
        };
        let config = match arch {
            Arch::Llama => common,
            Arch::Qwen2 => Config {
                rope_style: RopeStyle::Halves,
                qkv_bias: true,
                ..common
            },
            Arch::Qwen3 => Config {
                rope_style: RopeStyle::Halves,
                qk_norm: true,
                ..common
            },
            // `phi3.attention.sliding_window` is read by llama.cpp and then
            // switched off (its converters do not write it right, llama.cpp
            // #13676): every layer attends to the whole context, as there.
            Arch::Phi3 => Config {
                rope_style: RopeStyle::Halves,
                ..common
            },
            // llama.cpp's gemma2 graph: layers 0, 2, 4, … attend within the
            // window, with the one rotary base; scores and logits capped.
            Arch::Gemma2 => Config {
                rope_style: RopeStyle::Halves,
                sliding: match k.opt_usize("attention.sliding_window")? {
                    Some(w) if w > 0 => Some(Sliding {
                        window: w,
                        rope_base: common.rope_base,
                        pattern: 2,
                    }),
                    _ => None,
                },
                scale_embeddings: true,
                post_norms: true,
                activation: Activation::GeluTanh,
                final_softcap: k.opt_f32("final_logit_softcapping")?.filter(|c| *c > 0.0),
                attention_softcap: k.opt_f32("attn_logit_softcapping")?.filter(|c| *c > 0.0),
                // 27B (46 layers) scales by hidden/heads, the others by the
                // head size (llama.cpp's f_attention_scale).
                attention_scale_dim: if common.layers == 46 {
                    hidden / heads
                } else {
                    head_dim
                },
                ..common
            },
            Arch::Gemma3 => Config {
                rope_style: RopeStyle::Halves,
                sliding: match k.opt_usize("attention.sliding_window")? {
                    Some(w) if w > 0 => Some(Sliding {
                        window: w,
                        rope_base: k.opt_f32("rope.freq_base_swa")?.unwrap_or(10_000.0),
                        pattern: k
                            .opt_usize("attention.sliding_window_pattern")?
                            .unwrap_or(6),
                    }),
                    _ => None,
                },
                scale_embeddings: true,
                qk_norm: true,
                post_norms: true,
                activation: Activation::GeluTanh,
                final_softcap: k.opt_f32("final_logit_softcapping")?.filter(|c| *c > 0.0),
                // gemma_pytorch's query_pre_attn_scalar: 27B (62 layers)
                // scales by hidden/heads, the others by the head size.
                attention_scale_dim: if common.layers == 62 {
                    hidden / heads
                } else {
                    head_dim
                },
                ..common
            },
        };
        // Partial rotary embeddings (rope_dim < head_dim) are not built.
        if config.rope_dim != config.head_dim {
            return Err(ModelError::Unsupported(format!(
                "{} = {} for heads of {} (whole-head rotary embeddings only)",
                k.key("rope.dimension_count"),
                config.rope_dim,
                config.head_dim
            )));
        }
        Ok(config)
    }
}
