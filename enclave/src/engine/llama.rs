//! The llama forward pass with our own Q4_1 kernel in its linear layers.
//!
//! candle's `quantized_llama` runs every weight through candle's quantized
//! matmul, whose Q4_1 path is scalar; its model type gives no way to swap
//! the kernel. So this is the same computation — the same candle operations
//! in the same order for norms, rotary embeddings, attention and the MLP —
//! with each Q4_1 weight in a [`Q4_1Matrix`] and every other weight type
//! left to candle. Its logits equal candle's to the bit (tested), so the
//! engine's outputs do not depend on which path runs.

use super::q4_1::Q4_1Matrix;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_transformers::models::quantized_llama::MAX_SEQ_LEN;
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

struct Layer {
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    attn_norm: Tensor,
    ffn_norm: Tensor,
    gate: Linear,
    down: Linear,
    up: Linear,
    cache: Option<(Tensor, Tensor)>,
}

/// A llama-architecture model.
pub struct Llama {
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    hidden: usize,
    eps: f32,
    cos: Tensor,
    sin: Tensor,
    neg_inf: Tensor,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama")
            .field("layers", &self.layers.len())
            .field("hidden", &self.hidden)
            .field("heads", &self.heads)
            .field("kv_heads", &self.kv_heads)
            .finish_non_exhaustive()
    }
}

impl Llama {
    /// Whether this path serves the model: llama's interleaved rotary
    /// embedding (other architectures stay on candle's own model).
    pub fn serves(content: &gguf_file::Content) -> bool {
        content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .is_some_and(|a| a == "llama")
            && !content.metadata.contains_key("llama.expert_count")
    }

    pub fn from_gguf<R: Read + Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
    ) -> Result<Self> {
        let md = |key: &str| {
            content
                .metadata
                .get(key)
                .ok_or_else(|| candle_core::Error::Msg(format!("GGUF metadata lacks {key}")))
        };
        let heads = md("llama.attention.head_count")?.to_u32()? as usize;
        let kv_heads = md("llama.attention.head_count_kv")?.to_u32()? as usize;
        let layers = md("llama.block_count")?.to_u32()? as usize;
        let hidden = md("llama.embedding_length")?.to_u32()? as usize;
        let rope_dim = md("llama.rope.dimension_count")?.to_u32()? as usize;
        let eps = md("llama.attention.layer_norm_rms_epsilon")?.to_f32()?;
        let freq_base = md("llama.rope.freq_base")
            .and_then(|v| v.to_f32())
            .unwrap_or(10000f32);
        if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
            return Err(candle_core::Error::Msg(format!(
                "{heads} attention heads cannot share {kv_heads} key/value heads"
            )));
        }
        let (cos, sin) = rotary_tables(rope_dim, freq_base, device)?;
        let mut tensor = |name: &str| content.tensor(reader, name, device);
        let embeddings_q = tensor("token_embd.weight")?;
        let embeddings = embeddings_q.dequantize(device)?;
        let norm = tensor("output_norm.weight")?.dequantize(device)?;
        let output = match tensor("output.weight") {
            Ok(t) => Linear::new(t)?,
            Err(_) => Linear::new(embeddings_q)?,
        };
        let mut blocks = Vec::with_capacity(layers);
        for i in 0..layers {
            let mut t = |what: &str| tensor(&format!("blk.{i}.{what}.weight"));
            blocks.push(Layer {
                wq: Linear::new(t("attn_q")?)?,
                wk: Linear::new(t("attn_k")?)?,
                wv: Linear::new(t("attn_v")?)?,
                wo: Linear::new(t("attn_output")?)?,
                attn_norm: t("attn_norm")?.dequantize(device)?,
                ffn_norm: t("ffn_norm")?.dequantize(device)?,
                gate: Linear::new(t("ffn_gate")?)?,
                down: Linear::new(t("ffn_down")?)?,
                up: Linear::new(t("ffn_up")?)?,
                cache: None,
            });
        }
        Ok(Llama {
            embeddings,
            layers: blocks,
            norm,
            output,
            heads,
            kv_heads,
            head_dim: hidden / heads,
            hidden,
            eps,
            cos,
            sin,
            neg_inf: Tensor::new(f32::NEG_INFINITY, device)?,
        })
    }

    /// Logits after the last of `ids` (shape `1 × seq`), the sequence
    /// continuing at `pos` (0 starts a new one).
    pub fn forward(&mut self, ids: &Tensor, pos: usize) -> Result<Tensor> {
        let (batch, seq) = ids.dims2()?;
        let mask = if seq == 1 {
            None
        } else {
            Some(causal_mask(seq, pos, ids.device())?)
        };
        let mut x = self
            .embeddings
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((batch, seq, self.hidden))?;
        for i in 0..self.layers.len() {
            let normed = candle_nn::ops::rms_norm(&x, &self.layers[i].attn_norm, self.eps)?;
            let attn = self.attention(i, &normed, mask.as_ref(), pos)?;
            let x1 = (attn + &x)?;
            let layer = &self.layers[i];
            let normed = candle_nn::ops::rms_norm(&x1, &layer.ffn_norm, self.eps)?;
            let gate = layer.gate.forward(&normed)?;
            let up = layer.up.forward(&normed)?;
            let mlp = layer.down.forward(&(candle_nn::ops::silu(&gate)? * up)?)?;
            x = (mlp + &x1)?;
        }
        let x = candle_nn::ops::rms_norm(&x, &self.norm, self.eps)?;
        let last = x.i((.., seq - 1, ..))?;
        self.output.forward(&last)
    }

    fn attention(
        &mut self,
        i: usize,
        x: &Tensor,
        mask: Option<&Tensor>,
        pos: usize,
    ) -> Result<Tensor> {
        let (batch, seq, hidden) = x.dims3()?;
        let (heads, kv_heads, head_dim) = (self.heads, self.kv_heads, self.head_dim);
        let layer = &self.layers[i];
        let q = layer
            .wq
            .forward(x)?
            .reshape((batch, seq, heads, head_dim))?
            .transpose(1, 2)?;
        let k = layer
            .wk
            .forward(x)?
            .reshape((batch, seq, kv_heads, head_dim))?
            .transpose(1, 2)?;
        let v = layer
            .wv
            .forward(x)?
            .reshape((batch, seq, kv_heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = self.rotate(&q, pos)?;
        let k = self.rotate(&k, pos)?;
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
        let att = (q.matmul(&k.t()?)? / (head_dim as f64).sqrt())?;
        let att = match mask {
            None => att,
            Some(mask) => {
                let mask = mask.broadcast_as(att.shape())?;
                mask.where_cond(&self.neg_inf.broadcast_as(att.shape().dims())?, &att)?
            }
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v.contiguous()?)?;
        let y = y.transpose(1, 2)?.reshape(&[batch, seq, hidden])?;
        self.layers[i].wo.forward(&y)
    }

    /// llama's rotary embedding (interleaved pairs).
    fn rotate(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        let (_, _, seq, _) = x.dims4()?;
        let cos = self.cos.narrow(0, pos, seq)?;
        let sin = self.sin.narrow(0, pos, seq)?;
        candle_nn::rotary_emb::rope_i(&x.contiguous()?, &cos, &sin)
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

/// 1 where query `i` (at `pos + i`) may not see key `j`.
fn causal_mask(seq: usize, pos: usize, device: &Device) -> Result<Tensor> {
    let kv = pos + seq;
    let mask: Vec<u8> = (0..seq)
        .flat_map(|i| (0..kv).map(move |j| u8::from(j > pos + i)))
        .collect();
    Tensor::from_slice(&mask, (seq, kv), device)
}

/// cos and sin of `position × θ_i`, `θ_i = base^(-2i/dim)`, for every
/// position up to candle's `MAX_SEQ_LEN`.
fn rotary_tables(dim: usize, base: f32, device: &Device) -> Result<(Tensor, Tensor)> {
    let theta: Vec<f32> = (0..dim)
        .step_by(2)
        .map(|i| 1f32 / base.powf(i as f32 / dim as f32))
        .collect();
    let count = theta.len();
    let theta = Tensor::new(theta.as_slice(), device)?;
    let angles = Tensor::arange(0, MAX_SEQ_LEN as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((MAX_SEQ_LEN, 1))?
        .matmul(&theta.reshape((1, count))?)?;
    Ok((angles.cos()?, angles.sin()?))
}
