//! Sentence embeddings: a BERT-family encoder (all-MiniLM-L6-v2 and its
//! kin) run as sentence-transformers runs it — Hugging Face's tokenizer,
//! the encoder, mean (or CLS) pooling over the real tokens, and L2
//! normalisation where the model has it.
//!
//! A model is one file, so that it is sealed, fetched, digested and
//! attested like a GGUF: its `model.safetensors` with the files that
//! describe it carried in the safetensors header's `__metadata__` (see
//! [`pack`]). The encoder is candle's BERT; the tokenizer is the
//! `tokenizers` crate reading the model's own `tokenizer.json`, so token ids
//! are the model's by construction. Inputs longer than the model's
//! sequence limit are refused, never cut short in silence.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde_json::Value;
use std::collections::HashMap;

/// The `__metadata__` key that marks a ciel embedding bundle, and its value.
pub const FORMAT_KEY: &str = "ciel.format";
pub const FORMAT: &str = "sentence-embedding/1";

/// The files of a sentence-transformers model folder a bundle carries, by
/// their `__metadata__` keys (the folder's relative paths).
pub const BUNDLED_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "sentence_bert_config.json",
    "modules.json",
    "1_Pooling/config.json",
];

/// Why an embedding model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddingError {
    #[error("embedding model: {0}")]
    Bundle(String),
    #[error("embedding model tokenizer: {0}")]
    Tokenizer(String),
    #[error("embedding model forward pass: {0}")]
    Forward(String),
    #[error("input {index} is {tokens} tokens; this model takes at most {limit}")]
    TooLong {
        index: usize,
        tokens: usize,
        limit: usize,
    },
    #[error("input {0} is empty")]
    Empty(usize),
}

/// How token vectors become one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// The mean over the input's tokens ([CLS] and [SEP] included).
    Mean,
    /// The first token's vector.
    Cls,
}

/// A loaded sentence-embedding model.
pub struct EmbeddingModel {
    bert: BertModel,
    tokenizer: tokenizers::Tokenizer,
    pooling: Pooling,
    normalize: bool,
    max_tokens: usize,
    dimensions: usize,
}

impl std::fmt::Debug for EmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddingModel")
            .field("pooling", &self.pooling)
            .field("normalize", &self.normalize)
            .field("max_tokens", &self.max_tokens)
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

fn bundle_error(e: impl std::fmt::Display) -> EmbeddingError {
    EmbeddingError::Bundle(e.to_string())
}

/// One bundled JSON file from the header's metadata.
fn bundled(meta: &HashMap<String, String>, name: &str) -> Result<Value, EmbeddingError> {
    let text = meta
        .get(name)
        .ok_or_else(|| bundle_error(format!("the bundle carries no {name}")))?;
    serde_json::from_str(text).map_err(|e| bundle_error(format!("{name}: {e}")))
}

impl EmbeddingModel {
    /// Loads a bundle made by [`pack`] (the weights are copied out of
    /// `bytes`).
    pub fn from_bundle(bytes: &[u8]) -> Result<Self, EmbeddingError> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(bundle_error)?;
        let meta = header
            .metadata()
            .clone()
            .ok_or_else(|| bundle_error("not a ciel embedding bundle (no __metadata__)"))?;
        if meta.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT) {
            return Err(bundle_error(format!(
                "not a ciel embedding bundle ({FORMAT_KEY} is not {FORMAT:?}; `ciel embeddings pack` makes one)"
            )));
        }
        let config: Config = serde_json::from_value(bundled(&meta, "config.json")?)
            .map_err(|e| bundle_error(format!("config.json: {e}")))?;
        if config.model_type.as_deref().is_some_and(|t| t != "bert") {
            return Err(bundle_error(format!(
                "config.json: model_type {:?} (BERT only)",
                config.model_type
            )));
        }
        let st = bundled(&meta, "sentence_bert_config.json")?;
        let max_tokens = st["max_seq_length"]
            .as_u64()
            .map(|n| n as usize)
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        let pool = bundled(&meta, "1_Pooling/config.json")?;
        let on = |k: &str| pool[k].as_bool() == Some(true);
        let pooling = match (on("pooling_mode_mean_tokens"), on("pooling_mode_cls_token")) {
            (true, false) => Pooling::Mean,
            (false, true) => Pooling::Cls,
            _ => {
                return Err(bundle_error(
                    "1_Pooling/config.json: one of mean or CLS pooling (alone) is supported",
                ));
            }
        };
        for k in [
            "pooling_mode_max_tokens",
            "pooling_mode_mean_sqrt_len_tokens",
            "pooling_mode_weightedmean_tokens",
            "pooling_mode_lasttoken",
        ] {
            if on(k) {
                return Err(bundle_error(format!(
                    "1_Pooling/config.json: {k} is not supported"
                )));
            }
        }
        let modules = bundled(&meta, "modules.json")?;
        let kinds: Vec<&str> = modules
            .as_array()
            .map(|m| m.iter().filter_map(|x| x["type"].as_str()).collect())
            .unwrap_or_default();
        let known = [
            "sentence_transformers.models.Transformer",
            "sentence_transformers.models.Pooling",
            "sentence_transformers.models.Normalize",
        ];
        if let Some(k) = kinds.iter().find(|k| !known.contains(k)) {
            return Err(bundle_error(format!(
                "modules.json: module {k} is not supported (Transformer, Pooling, Normalize are)"
            )));
        }
        let normalize = kinds.contains(&"sentence_transformers.models.Normalize");
        let mut tokenizer = tokenizers::Tokenizer::from_bytes(
            meta.get("tokenizer.json")
                .ok_or_else(|| bundle_error("the bundle carries no tokenizer.json"))?
                .as_bytes(),
        )
        .map_err(|e| EmbeddingError::Tokenizer(e.to_string()))?;
        // One input at a time, whole: no padding, and no truncation (a
        // longer input is refused by count below, not cut).
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| EmbeddingError::Tokenizer(e.to_string()))?;
        let dimensions = config.hidden_size;
        let vb = VarBuilder::from_slice_safetensors(bytes, DType::F32, &Device::Cpu)
            .map_err(bundle_error)?;
        let bert = BertModel::load(vb, &config).map_err(bundle_error)?;
        Ok(EmbeddingModel {
            bert,
            tokenizer,
            pooling,
            normalize,
            max_tokens,
            dimensions,
        })
    }

    /// The length of every vector.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// The most tokens one input may be ([CLS] and [SEP] included).
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The token ids of `text`, as the model reads it.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, EmbeddingError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbeddingError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The token ids of each input, each checked against the limit.
    pub fn tokenize_all(&self, inputs: &[String]) -> Result<Vec<Vec<u32>>, EmbeddingError> {
        inputs
            .iter()
            .enumerate()
            .map(|(index, text)| {
                if text.is_empty() {
                    return Err(EmbeddingError::Empty(index));
                }
                let ids = self.tokenize(text)?;
                if ids.len() > self.max_tokens {
                    return Err(EmbeddingError::TooLong {
                        index,
                        tokens: ids.len(),
                        limit: self.max_tokens,
                    });
                }
                Ok(ids)
            })
            .collect()
    }

    /// The sentence vector of one tokenized input.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Vec<f32>, EmbeddingError> {
        let fail = |e: candle_core::Error| EmbeddingError::Forward(e.to_string());
        let device = Device::Cpu;
        let input = Tensor::new(ids, &device)
            .and_then(|t| t.unsqueeze(0))
            .map_err(fail)?;
        let types = input.zeros_like().map_err(fail)?;
        let mask = input.ones_like().map_err(fail)?;
        let hidden = self
            .bert
            .forward(&input, &types, Some(&mask))
            .map_err(fail)?;
        // hidden: 1 × tokens × dimensions; every token is real (no padding).
        let pooled = match self.pooling {
            Pooling::Mean => hidden.mean(1),
            Pooling::Cls => hidden.narrow(1, 0, 1).and_then(|t| t.squeeze(1)),
        }
        .and_then(|t| t.squeeze(0))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(fail)?;
        if !self.normalize {
            return Ok(pooled);
        }
        // sentence-transformers' Normalize: x / max(‖x‖, 1e-12).
        let norm = pooled
            .iter()
            .map(|x| f64::from(*x) * f64::from(*x))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        Ok(pooled
            .iter()
            .map(|x| (f64::from(*x) / norm) as f32)
            .collect())
    }
}

/// The bundle of the sentence-transformers model folder `dir`: its
/// `model.safetensors` and the files of [`BUNDLED_FILES`], packed.
pub fn read_folder(dir: &std::path::Path) -> Result<Vec<u8>, EmbeddingError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| bundle_error(format!("{}: {e}", path.display())))
    };
    let weights = read("model.safetensors")?;
    let mut files = HashMap::new();
    for name in BUNDLED_FILES {
        let text = String::from_utf8(read(name)?)
            .map_err(|_| bundle_error(format!("{}: not UTF-8", dir.join(name).display())))?;
        files.insert((*name).to_string(), text);
    }
    pack(&weights, &files)
}

/// A bundle from a sentence-transformers model folder's files: the
/// weights of `model.safetensors`, byte for byte, under a header that adds
/// every file of [`BUNDLED_FILES`] (`files`: name → contents; all of them
/// required) to its `__metadata__`. Written here rather than by the
/// safetensors crate, whose metadata map has no fixed order: the same
/// folder must always pack to the same bytes (the digest clients pin).
pub fn pack(
    safetensors_bytes: &[u8],
    files: &HashMap<String, String>,
) -> Result<Vec<u8>, EmbeddingError> {
    // Checked whole by the crate first (offsets, sizes, dtypes).
    let (header_len, _) =
        safetensors::SafeTensors::read_metadata(safetensors_bytes).map_err(bundle_error)?;
    safetensors::SafeTensors::deserialize(safetensors_bytes).map_err(bundle_error)?;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&safetensors_bytes[8..8 + header_len]).map_err(bundle_error)?;
    let mut meta = std::collections::BTreeMap::new();
    meta.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
    for name in BUNDLED_FILES {
        let text = files
            .get(*name)
            .ok_or_else(|| bundle_error(format!("{name} is missing from the model folder")))?;
        serde_json::from_str::<Value>(text).map_err(|e| bundle_error(format!("{name}: {e}")))?;
        meta.insert((*name).to_string(), text.clone());
    }
    let mut tensors: Vec<(&String, &Value)> = header
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    let mut out = serde_json::Map::new();
    out.insert(
        "__metadata__".into(),
        Value::Object(
            meta.into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        ),
    );
    for (name, info) in tensors {
        out.insert(name.clone(), info.clone());
    }
    let mut text = serde_json::to_vec(&Value::Object(out)).map_err(bundle_error)?;
    // The data that follows starts 8-byte aligned, as the format asks.
    while (8 + text.len()) % 8 != 0 {
        text.push(b' ');
    }
    let mut bundle = Vec::with_capacity(8 + text.len() + safetensors_bytes.len());
    bundle.extend_from_slice(&(text.len() as u64).to_le_bytes());
    bundle.extend_from_slice(&text);
    bundle.extend_from_slice(&safetensors_bytes[8 + header_len..]);
    safetensors::SafeTensors::deserialize(&bundle).map_err(bundle_error)?;
    Ok(bundle)
}
