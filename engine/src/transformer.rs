//! The decoder-only transformer forward pass, one for every architecture
//! in [`super::arch`], with our own Q4_1 kernel in its linear layers.
//!
//! For llama it is candle's `quantized_llama` computation — the same candle
//! operations in the same order for norms, rotary embeddings, attention and
//! the MLP — with each Q4_1 weight in a [`Q4_1Matrix`] and every other
//! weight type left to candle's quantized matmul; its logits equal candle's
//! to the bit (tested), so the engine's outputs do not depend on which path
//! runs. Gemma 3 adds what llama.cpp's graph for it adds: scaled embeddings,
//! q/k norms, norms after attention and MLP, GELU, and sliding-window
//! layers with their own rotary base. Rotary angles are computed for the
//! positions in each pass, so the context is the model's trained one.

use super::arch::{Activation, Arch, Config, RopeStyle};
use super::q4_1::Q4_1Matrix;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use std::io::{Read, Seek};

/// A weight matrix: ours when it is Q4_1, candle's otherwise.
enum Linear {
    Q4_1(Q4_1Matrix),
    Candle(QMatMul),
}

impl Linear {
    fn new(t: QTensor) -> Result<Self> {
        if t.dtype() == GgmlDType::Q4_1
            && let &[n, k] = t.shape().dims()
        {
            let m = Q4_1Matrix::from_blocks(n, k, &t.data()?)
                .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
            return Ok(Linear::Q4_1(m));
        }
        Ok(Linear::Candle(QMatMul::from_qtensor(t)?))
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Candle(q) => q.forward(x),
            Linear::Q4_1(w) => {
                let mut dims = x.dims().to_vec();
                if dims.last() != Some(&w.cols()) {
                    return Err(candle_core::Error::Msg(format!(
                        "input of shape {dims:?} for a {} × {} weight",
                        w.rows(),
                        w.cols()
                    )));
                }
                let data = x.flatten_all()?.to_vec1::<f32>()?;
                let out = w.matmul(&data);
                if let Some(last) = dims.last_mut() {
                    *last = w.rows();
                }
                Tensor::from_vec(out, dims, x.device())
            }
        }
    }
}

/// The q, k and v projections: three matrices, or one whose rows are q's,
/// then k's, then v's (Phi-3).
enum Qkv {
    Separate([Linear; 3]),
    Fused(Linear),
}

struct Layer {
    qkv: Qkv,
    wo: Linear,
    attn_norm: Tensor,
    ffn_norm: Tensor,
    /// q and k norms (Gemma 3, Qwen3).
    qk_norms: Option<(Tensor, Tensor)>,
    /// q, k and v biases (Qwen2).
    qkv_biases: Option<[Tensor; 3]>,
    /// Norms of the attention and MLP outputs (Gemma 3).
    post_norms: Option<(Tensor, Tensor)>,
    /// `None`: `up` computes gate and up, in its first and second halves
    /// (Phi-3).
    gate: Option<Linear>,
    down: Linear,
    up: Linear,
    /// A sliding-window layer (Gemma's local attention).
    sliding: bool,
    /// Which rotary base (0 global, 1 local).
    rope: usize,
    cache: Option<(Tensor, Tensor)>,
}

/// θ_i = base^(-2i/dim) of one rotary base, as a `1 × dim/2` row.
struct Rope {
    theta: Tensor,
}

impl Rope {
    /// With `factors` (Llama 3.1's `rope_freqs.weight`), θ_i is divided by
    /// factor i, as llama.cpp's rotary embedding does.
    fn new(dim: usize, base: f32, factors: Option<&[f32]>, device: &Device) -> Result<Self> {
        if let Some(f) = factors
            && f.len() != dim / 2
        {
            return Err(candle_core::Error::Msg(format!(
                "rope_freqs.weight has {} factors for {} rotary pairs",
                f.len(),
                dim / 2
            )));
        }
        let theta: Vec<f32> = (0..dim)
            .step_by(2)
            .map(|i| {
                let t = 1f32 / base.powf(i as f32 / dim as f32);
                match factors {
                    Some(f) => t / f[i / 2],
                    None => t,
                }
            })
            .collect();
        let count = theta.len();
        Ok(Rope {
            theta: Tensor::from_vec(theta, (1, count), device)?,
        })
    }

    /// cos and sin of `position × scale × θ_i` for `seq` positions from
    /// `pos` (the products candle's precomputed tables hold, bit for bit),
    /// each multiplied by `mscale` (LongRoPE's attention factor).
    fn tables(&self, pos: usize, seq: usize, scale: f32, mscale: f32) -> Result<(Tensor, Tensor)> {
        let device = self.theta.device();
        let mut positions = Tensor::arange(pos as u32, (pos + seq) as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((seq, 1))?;
        if scale != 1.0 {
            positions = (positions * f64::from(scale))?;
        }
        let angles = positions.matmul(&self.theta)?;
        if mscale != 1.0 {
            let m = f64::from(mscale);
            return Ok(((angles.cos()? * m)?, (angles.sin()? * m)?));
        }
        Ok((angles.cos()?, angles.sin()?))
    }
}

/// A decoder-only transformer.
pub struct Transformer {
    config: Config,
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    ropes: Vec<Rope>,
    /// LongRoPE's short and long factors (Phi-3 128k): which apply depends
    /// on the context served ([`Self::serve_context`]).
    long_rope: Option<[Vec<f32>; 2]>,
    neg_inf: Tensor,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("arch", &self.config.arch)
            .field("layers", &self.layers.len())
            .field("hidden", &self.config.hidden)
            .field("heads", &self.config.heads)
            .field("kv_heads", &self.config.kv_heads)
            .finish_non_exhaustive()
    }
}

impl Transformer {
    pub fn from_gguf<R: Read + Seek>(
        config: Config,
        content: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self> {
        // Every tensor read is recorded: one the pass does not read would be
        // a part of the model silently left out, so it is refused below.
        let mut read = std::collections::HashSet::new();
        let mut tensor = |name: &str| {
            read.insert(name.to_string());
            content.tensor(reader, name, device)
        };
        // Llama 3.1+ scales its rotary frequencies by a tensor, not a key.
        let factors = match content.tensor_infos.contains_key("rope_freqs.weight") {
            true => Some(
                tensor("rope_freqs.weight")?
                    .dequantize(device)?
                    .to_vec1::<f32>()?,
            ),
            false => None,
        };
        // Phi-3 128k's LongRoPE: short factors up to the original context,
        // long ones beyond (llama.cpp's choice, by the context served).
        let long_rope = match (
            content
                .tensor_infos
                .contains_key("rope_factors_short.weight"),
            content
                .tensor_infos
                .contains_key("rope_factors_long.weight"),
        ) {
            (false, false) => None,
            (true, true) => {
                let mut read = |name: &str| tensor(name)?.dequantize(device)?.to_vec1::<f32>();
                Some([
                    read("rope_factors_short.weight")?,
                    read("rope_factors_long.weight")?,
                ])
            }
            _ => {
                return Err(candle_core::Error::Msg(
                    "rope_factors_short.weight and rope_factors_long.weight come together".into(),
                ));
            }
        };
        if factors.is_some() && long_rope.is_some() {
            return Err(candle_core::Error::Msg(
                "rope_freqs.weight beside LongRoPE factors".into(),
            ));
        }
        // With LongRoPE, the global table is set by `serve_context` below.
        let mut ropes = vec![Rope::new(
            config.rope_dim,
            config.rope_base,
            factors.as_deref(),
            device,
        )?];
        if let Some(s) = &config.sliding {
            ropes.push(Rope::new(config.rope_dim, s.rope_base, None, device)?);
        }
        let embeddings_q = tensor("token_embd.weight")?;
        let embeddings = embeddings_q.dequantize(device)?;
        let norm = tensor("output_norm.weight")?.dequantize(device)?;
        let output = match tensor("output.weight") {
            Ok(t) => Linear::new(t)?,
            Err(_) => Linear::new(embeddings_q)?,
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let mut t = |what: &str| tensor(&format!("blk.{i}.{what}"));
            let vector = |q: QTensor| q.dequantize(device);
            let qk_norms = if config.qk_norm {
                Some((
                    vector(t("attn_q_norm.weight")?)?,
                    vector(t("attn_k_norm.weight")?)?,
                ))
            } else {
                None
            };
            let qkv_biases = if config.qkv_bias {
                Some([
                    vector(t("attn_q.bias")?)?,
                    vector(t("attn_k.bias")?)?,
                    vector(t("attn_v.bias")?)?,
                ])
            } else {
                None
            };
            let post_norms = if config.post_norms {
                Some((
                    vector(t("post_attention_norm.weight")?)?,
                    vector(t("post_ffw_norm.weight")?)?,
                ))
            } else {
                None
            };
            let attn_norm = vector(t("attn_norm.weight")?)?;
            let ffn_norm = vector(t("ffn_norm.weight")?)?;
            let sliding = config.sliding.as_ref().filter(|s| s.applies_to(i));
            let qkv = if content
                .tensor_infos
                .contains_key(&format!("blk.{i}.attn_qkv.weight"))
            {
                Qkv::Fused(Linear::new(t("attn_qkv.weight")?)?)
            } else {
                Qkv::Separate([
                    Linear::new(t("attn_q.weight")?)?,
                    Linear::new(t("attn_k.weight")?)?,
                    Linear::new(t("attn_v.weight")?)?,
                ])
            };
            // Phi-3 computes gate and up in one matrix, and has no gate.
            let gate = match config.arch {
                Arch::Phi3 => None,
                _ => Some(Linear::new(t("ffn_gate.weight")?)?),
            };
            layers.push(Layer {
                qkv,
                wo: Linear::new(t("attn_output.weight")?)?,
                attn_norm,
                ffn_norm,
                qk_norms,
                qkv_biases,
                post_norms,
                gate,
                down: Linear::new(t("ffn_down.weight")?)?,
                up: Linear::new(t("ffn_up.weight")?)?,
                sliding: sliding.is_some(),
                rope: usize::from(sliding.is_some()),
                cache: None,
            });
        }
        let mut unused: Vec<&String> = content
            .tensor_infos
            .keys()
            .filter(|n| !read.contains(n.as_str()))
            .collect();
        if !unused.is_empty() {
            unused.sort();
            return Err(candle_core::Error::Msg(format!(
                "{} tensor(s) this {} forward pass does not use, e.g. {:?}: refusing rather than leaving part of the model out",
                unused.len(),
                config.arch.name(),
                unused.iter().take(3).collect::<Vec<_>>()
            )));
        }
        let context = config.context;
        let mut transformer = Transformer {
            config,
            embeddings,
            layers,
            norm,
            output,
            ropes,
            long_rope,
            neg_inf: Tensor::new(f32::NEG_INFINITY, device)?,
        };
        transformer.serve_context(context)?;
        Ok(transformer)
    }

    /// Serves at most `context` tokens: with LongRoPE, the factors that
    /// apply to that context (short ones within the original context).
    pub fn serve_context(&mut self, context: usize) -> Result<()> {
        if let Some([short, long]) = &self.long_rope {
            let c = &self.config;
            let factors = if context > c.rope_original_context {
                long
            } else {
                short
            };
            let device = self.embeddings.device().clone();
            self.ropes[0] = Rope::new(c.rope_dim, c.rope_base, Some(factors), &device)?;
        }
        Ok(())
    }

    /// Logits after the last of `ids` (shape `1 × seq`), the sequence
    /// continuing at `pos` (0 starts a new one).
    pub fn forward(&mut self, ids: &Tensor, pos: usize) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let device = ids.device().clone();
        let eps = self.config.eps;
        let mut tables = Vec::with_capacity(self.ropes.len());
        for r in &self.ropes {
            tables.push(r.tables(
                pos,
                seq,
                self.config.rope_scale,
                self.config.rope_attn_factor,
            )?);
        }
        let causal = if seq == 1 {
            None
        } else {
            Some(mask(seq, pos, None, &device)?)
        };
        let windowed = match &self.config.sliding {
            Some(s) if seq > 1 || pos + seq > s.window => {
                Some(mask(seq, pos, Some(s.window), &device)?)
            }
            _ => None,
        };
        let mut x = self
            .embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((batch, seq, self.config.hidden))?;
        if self.config.scale_embeddings {
            x = (x * (self.config.hidden as f64).sqrt())?;
        }
        for i in 0..self.layers.len() {
            let layer = &self.layers[i];
            let mask = if layer.sliding {
                windowed.as_ref()
            } else {
                causal.as_ref()
            };
            let (cos, sin) = &tables[layer.rope];
            let normed = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let mut attn = self.attention(i, &normed, mask, cos, sin, pos)?;
            let layer = &self.layers[i];
            if let Some((after_attn, _)) = &layer.post_norms {
                attn = candle_nn::ops::rms_norm(&attn, after_attn, eps)?;
            }
            let x1 = (attn + &x)?;
            let normed = candle_nn::ops::rms_norm(&x1, &layer.ffn_norm, eps)?;
            let (gate, up) = match &layer.gate {
                Some(g) => (g.forward(&normed)?, layer.up.forward(&normed)?),
                None => {
                    let both = layer.up.forward(&normed)?;
                    let half = both.dim(2)? / 2;
                    (both.narrow(2, 0, half)?, both.narrow(2, half, half)?)
                }
            };
            let gate = match self.config.activation {
                Activation::Silu => candle_nn::ops::silu(&gate)?,
                Activation::GeluTanh => gate.gelu()?,
            };
            let mut mlp = layer.down.forward(&(gate * up)?)?;
            if let Some((_, after_mlp)) = &layer.post_norms {
                mlp = candle_nn::ops::rms_norm(&mlp, after_mlp, eps)?;
            }
            x = (mlp + &x1)?;
        }
        let x = candle_nn::ops::rms_norm(&x, &self.norm, eps)?;
        let last = x.i((.., seq - 1, ..))?;
        let logits = self.output.forward(&last)?;
        match self.config.final_softcap {
            None => Ok(logits),
            Some(cap) => (logits / f64::from(cap))?.tanh()? * f64::from(cap),
        }
    }

    fn attention(
        &mut self,
        i: usize,
        x: &Tensor,
        mask: Option<&Tensor>,
        cos: &Tensor,
        sin: &Tensor,
        pos: usize,
    ) -> Result<Tensor> {
        let (batch, seq, _) = x.dims3()?;
        let c = &self.config;
        let (heads, kv_heads, head_dim) = (c.heads, c.kv_heads, c.head_dim);
        let layer = &self.layers[i];
        let projected = match &layer.qkv {
            Qkv::Separate([wq, wk, wv]) => [wq.forward(x)?, wk.forward(x)?, wv.forward(x)?],
            Qkv::Fused(w) => {
                let all = w.forward(x)?;
                let (nq, nkv) = (heads * head_dim, kv_heads * head_dim);
                [
                    all.narrow(2, 0, nq)?,
                    all.narrow(2, nq, nkv)?,
                    all.narrow(2, nq + nkv, nkv)?,
                ]
            }
        };
        let [q, k, v] = match &layer.qkv_biases {
            Some(b) => [
                projected[0].broadcast_add(&b[0])?,
                projected[1].broadcast_add(&b[1])?,
                projected[2].broadcast_add(&b[2])?,
            ],
            None => projected,
        };
        let mut q = q.reshape((batch, seq, heads, head_dim))?;
        let mut k = k.reshape((batch, seq, kv_heads, head_dim))?;
        if let Some((qn, kn)) = &layer.qk_norms {
            q = candle_nn::ops::rms_norm(&q, qn, c.eps)?;
            k = candle_nn::ops::rms_norm(&k, kn, c.eps)?;
        }
        let q = q.transpose(1, 2)?;
        let k = k.transpose(1, 2)?;
        let v = v
            .reshape((batch, seq, kv_heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let rotate = |t: &Tensor| match c.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&t.contiguous()?, cos, sin),
            RopeStyle::Halves => candle_nn::rotary_emb::rope(&t.contiguous()?, cos, sin),
        };
        let q = rotate(&q)?;
        let k = rotate(&k)?;
        let scale_dim = c.attention_scale_dim;
        let hidden_out = heads * head_dim;
        let layer = &mut self.layers[i];
        let (k, v) = match (&layer.cache, pos) {
            (Some((kc, vc)), p) if p > 0 => {
                (Tensor::cat(&[kc, &k], 2)?, Tensor::cat(&[vc, &v], 2)?)
            }
            _ => (k, v),
        };
        layer.cache = Some((k.clone(), v.clone()));
        let repeat = heads / kv_heads;
        let k = repeat_kv(k, repeat)?;
        let v = repeat_kv(v, repeat)?;
        // Divided as candle's llama does (bit-equal logits there).
        let mut att = (q.matmul(&k.t()?)? / (scale_dim as f64).sqrt())?;
        if let Some(cap) = c.attention_softcap {
            att = ((att / f64::from(cap))?.tanh()? * f64::from(cap))?;
        }
        let att = match mask {
            None => att,
            Some(mask) => {
                let mask = mask.broadcast_as(att.shape())?;
                mask.where_cond(&self.neg_inf.broadcast_as(att.shape().dims())?, &att)?
            }
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v.contiguous()?)?;
        let y = y.transpose(1, 2)?.reshape(&[batch, seq, hidden_out])?;
        self.layers[i].wo.forward(&y)
    }
}

/// Key/value heads repeated to match the query heads (grouped attention).
fn repeat_kv(x: Tensor, times: usize) -> Result<Tensor> {
    if times == 1 {
        return Ok(x);
    }
    let (batch, kv_heads, seq, head_dim) = x.dims4()?;
    Tensor::cat(&vec![&x; times], 2)?.reshape((batch, kv_heads * times, seq, head_dim))
}

/// 1 where query `i` (at `pos + i`) may not see key `j`: a later key, or
/// with a window, a key `window` or more positions before it.
fn mask(seq: usize, pos: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let kv = pos + seq;
    let hidden = |i: usize, j: usize| j > pos + i || window.is_some_and(|w| pos + i >= j + w);
    let mask: Vec<u8> = (0..seq)
        .flat_map(|i| (0..kv).map(move |j| u8::from(hidden(i, j))))
        .collect();
    Tensor::from_slice(&mask, (seq, kv), device)
}
