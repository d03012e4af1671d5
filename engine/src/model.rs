//! The language model: a quantized GGUF of one of the architectures in
//! [`super::arch`], run with candle on the CPU through our forward pass
//! ([`super::transformer`]), its keys and values in a paged store
//! ([`super::kv_cache`]). [`Model::step`] runs one pass for many sequences
//! (the batch scheduler's); [`Model::forward`] runs one sequence of its
//! own, the prompt in one pass and then a token at a time.

use super::arch::{Arch, Config};
use super::device::ComputeDevice;
use super::kv_cache::{BLOCK_TOKENS, BlockId, KvStore};
use super::transformer::{Feed, Transformer};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use std::io::{Read, Seek};

/// Why the model could not load or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("model: {0}")]
    Load(String),
    #[error("model forward pass: {0}")]
    Forward(String),
    #[error("model: the context is full ({0} tokens)")]
    ContextFull(usize),
    #[error("model: GGUF metadata key `{0}` is missing or has the wrong type")]
    MissingKey(String),
    #[error(
        "model: architecture {0:?} is not supported (llama, gemma2, gemma3, qwen2, qwen3, phi3 are)"
    )]
    Architecture(String),
    #[error("model: {0}")]
    Unsupported(String),
}

/// Which code runs the weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// Our forward pass and kernels ([`super::transformer`],
    /// [`super::kernels`]).
    Ciel,
    /// candle's `quantized_llama` throughout, for llama models only (the
    /// baseline the benchmarks compare against).
    Candle,
}

enum Weights {
    Ciel(Box<Transformer>, KvStore),
    Candle(Box<ModelWeights>),
}

/// A loaded model, its K/V store, and the position of the sequence of its
/// own ([`Model::forward`]).
pub struct Model {
    weights: Weights,
    device: Device,
    pos: usize,
    context: usize,
    /// Bytes of K/V cache one token of context takes (f32 keys and values
    /// of every layer's KV heads).
    kv_bytes_per_token: usize,
    /// Blocks of the store the budget holds ([`Model::bound_kv_memory`]).
    kv_blocks: usize,
    /// The own sequence's block table: blocks `0..`, in order.
    own_blocks: Vec<BlockId>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("pos", &self.pos)
            .field("context", &self.context)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Loads a GGUF model from a reader (in the guest: decrypted memory).
    pub fn load<R: Read + Seek>(reader: &mut R) -> Result<Self, ModelError> {
        Self::load_with(reader, Kernels::Ciel)
    }

    /// [`Model::load`], choosing the kernels.
    pub fn load_with<R: Read + Seek>(reader: &mut R, kernels: Kernels) -> Result<Self, ModelError> {
        Self::load_on(reader, kernels, ComputeDevice::Cpu)
    }

    /// Loads for `device`: the CPU with either kernels; a GPU with candle's
    /// (ours are CPU code), the weights uploaded once, whole.
    pub fn load_on<R: Read + Seek>(
        reader: &mut R,
        kernels: Kernels,
        device: ComputeDevice,
    ) -> Result<Self, ModelError> {
        if device != ComputeDevice::Cpu && kernels == Kernels::Ciel {
            return Err(ModelError::Unsupported(format!(
                "{device}: ciel's own kernels run on the CPU; GPUs run candle's"
            )));
        }
        let on = device;
        let content =
            gguf_file::Content::read(reader).map_err(|e| ModelError::Load(e.to_string()))?;
        let config = Config::from_gguf(&content.metadata)?;
        let kv_bytes_per_token = config
            .layers
            .saturating_mul(config.kv_heads)
            .saturating_mul(config.head_dim)
            .saturating_mul(2 * std::mem::size_of::<f32>());
        let device = on.open().map_err(ModelError::Unsupported)?;
        let load = |e: candle_core::Error| ModelError::Load(e.to_string());
        let (weights, context) = match kernels {
            Kernels::Candle if config.arch == Arch::Llama => (
                Weights::Candle(Box::new(
                    ModelWeights::from_gguf(content, reader, &device).map_err(load)?,
                )),
                // candle's rotary tables stop at MAX_SEQ_LEN.
                config
                    .context
                    .min(candle_transformers::models::quantized_llama::MAX_SEQ_LEN),
            ),
            Kernels::Candle => {
                return Err(ModelError::Unsupported(format!(
                    "candle's kernels{} run llama models only, not {}",
                    match on {
                        ComputeDevice::Cpu => String::new(),
                        gpu => format!(" (what runs on {gpu})"),
                    },
                    config.arch.name()
                )));
            }
            Kernels::Ciel => {
                let context = config.context;
                let store = KvStore::new(config.layers, config.kv_heads * config.head_dim);
                (
                    Weights::Ciel(
                        Box::new(
                            Transformer::from_gguf(config, &content, reader, &device)
                                .map_err(load)?,
                        ),
                        store,
                    ),
                    context,
                )
            }
        };
        Ok(Model {
            weights,
            device,
            pos: 0,
            context,
            kv_bytes_per_token,
            kv_blocks: context.div_ceil(BLOCK_TOKENS),
            own_blocks: Vec::new(),
        })
    }

    /// Bytes of K/V cache one token of context takes.
    pub fn kv_bytes_per_token(&self) -> usize {
        self.kv_bytes_per_token
    }

    /// Bytes of K/V cache one block of [`BLOCK_TOKENS`] positions takes.
    pub fn kv_block_bytes(&self) -> usize {
        self.kv_bytes_per_token.saturating_mul(BLOCK_TOKENS)
    }

    /// Blocks of K/V cache the budget holds (all sequences together).
    pub fn kv_blocks(&self) -> usize {
        self.kv_blocks
    }

    /// Bounds the K/V cache to `bytes` in whole blocks, and the context to
    /// what they hold; returns the context now taken (0: not one block
    /// fits).
    pub fn bound_kv_memory(&mut self, bytes: u64) -> Result<usize, ModelError> {
        let blocks = bytes / (self.kv_block_bytes().max(1) as u64);
        self.kv_blocks = usize::try_from(blocks).unwrap_or(usize::MAX);
        self.context = self
            .context
            .min(self.kv_blocks.saturating_mul(BLOCK_TOKENS));
        if let Weights::Ciel(w, _) = &mut self.weights {
            w.serve_context(self.context).map_err(|e| {
                ModelError::Load(format!("rotary factors for the served context: {e}"))
            })?;
        }
        Ok(self.context)
    }

    /// The longest sequence (prompt and completion) the model takes.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Starts a new sequence (the cache is overwritten from position 0).
    pub fn reset(&mut self) {
        self.pos = 0;
    }

    /// Feeds `ids` (all at once) and returns the logits after the last one.
    pub fn forward(&mut self, ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        if ids.is_empty() {
            return Err(ModelError::Forward("no tokens".into()));
        }
        if self.pos + ids.len() > self.context {
            return Err(ModelError::ContextFull(self.context));
        }
        let err = |e: candle_core::Error| ModelError::Forward(e.to_string());
        let end = self.pos + ids.len();
        let logits = match &mut self.weights {
            Weights::Ciel(w, store) => {
                // Blocks `0..` in order, grown as the sequence grows.
                while self.own_blocks.len() < end.div_ceil(BLOCK_TOKENS) {
                    self.own_blocks.push(self.own_blocks.len() as BlockId);
                }
                let feed = Feed {
                    blocks: &self.own_blocks,
                    pos: self.pos,
                    tokens: ids,
                    logits: true,
                };
                w.forward_batch(&[feed], store)
                    .map_err(err)?
                    .pop()
                    .ok_or_else(|| ModelError::Forward("no logits".into()))?
            }
            Weights::Candle(w) => {
                let input = Tensor::new(ids, &self.device)
                    .and_then(|t| t.unsqueeze(0))
                    .map_err(err)?;
                w.forward(&input, self.pos)
                    .and_then(|l| l.squeeze(0))
                    .and_then(|t| t.to_dtype(DType::F32))
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(err)?
            }
        };
        self.pos = end;
        Ok(logits)
    }

    /// One pass for many sequences (see [`Transformer::forward_batch`]):
    /// the logits after each feed that asks for them, in order. The feeds'
    /// block tables are the caller's (a [`super::kv_cache::BlockPool`]'s,
    /// within [`Self::kv_blocks`]); [`Self::forward`]'s own sequence uses
    /// the same store, so the two are not mixed on one model.
    pub fn step(&mut self, feeds: &[Feed<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let Weights::Ciel(w, store) = &mut self.weights else {
            return self.step_one(feeds);
        };
        for f in feeds {
            if f.pos + f.tokens.len() > self.context {
                return Err(ModelError::ContextFull(self.context));
            }
            if let Some(b) = f.blocks.iter().find(|&&b| b as usize >= self.kv_blocks) {
                return Err(ModelError::Forward(format!(
                    "block {b} is beyond the {} the K/V budget holds",
                    self.kv_blocks
                )));
            }
        }
        w.forward_batch(feeds, store)
            .map_err(|e| ModelError::Forward(e.to_string()))
    }
}

impl Model {
    /// A pass of candle's kernels (the GPU's): one sequence at a time, its
    /// cache the model's own. A sequence starts at position 0 (which
    /// forgets the previous one) or continues where the last pass ended.
    fn step_one(&mut self, feeds: &[Feed<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let feed = match feeds {
            [] => return Ok(Vec::new()),
            [feed] => feed,
            more => {
                return Err(ModelError::Unsupported(format!(
                    "candle's kernels run one sequence per pass, not {} (serve with --max-batch 1)",
                    more.len()
                )));
            }
        };
        if feed.pos != 0 && feed.pos != self.pos {
            return Err(ModelError::Forward(format!(
                "candle's kernels continue one sequence: a pass from position {} after one ending at {}",
                feed.pos, self.pos
            )));
        }
        self.pos = feed.pos;
        let logits = self.forward(feed.tokens)?;
        Ok(if feed.logits {
            vec![logits]
        } else {
            Vec::new()
        })
    }
}

/// Index of the largest logit (the first one on ties), and its margin over
/// the runner-up.
pub fn argmax(logits: &[f32]) -> (u32, f32) {
    let mut best = (0usize, f32::NEG_INFINITY);
    let mut second = f32::NEG_INFINITY;
    for (i, &l) in logits.iter().enumerate() {
        if l > best.1 {
            second = best.1;
            best = (i, l);
        } else if l > second {
            second = l;
        }
    }
    (best.0 as u32, best.1 - second)
}

/// Greedy decoding: the prompt in one pass, then up to `max_new` tokens,
/// stopping after `eos`.
pub fn generate_greedy(
    model: &mut Model,
    prompt: &[u32],
    max_new: usize,
    eos: Option<u32>,
) -> Result<Vec<u32>, ModelError> {
    model.reset();
    let mut out = Vec::new();
    let mut logits = model.forward(prompt)?;
    for _ in 0..max_new {
        let (next, _) = argmax(&logits);
        out.push(next);
        if Some(next) == eos {
            break;
        }
        logits = model.forward(&[next])?;
    }
    Ok(out)
}
