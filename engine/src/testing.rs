//! Test doubles for the engine: a scripted model and a tiny tokenizer.
#![allow(clippy::indexing_slicing)]

use crate::generate::Logits;
use crate::gguf::{Metadata, Value};
use crate::model::ModelError;
use crate::tokenizer::Tokenizer;

/// A model that always predicts the next token of a script.
#[derive(Debug)]
pub struct Script {
    pub tokens: Vec<u32>,
    pub at: usize,
    pub vocab: usize,
}

impl Logits for Script {
    fn reset(&mut self) {
        self.at = 0;
    }
    fn forward(&mut self, _ids: &[u32]) -> Result<Vec<f32>, ModelError> {
        let mut l = vec![0.0; self.vocab];
        if let Some(&t) = self.tokens.get(self.at) {
            l[t as usize] = 10.0;
        }
        self.at += 1;
        Ok(l)
    }
}

/// In a batched pass, the script is read by position: after a token at
/// position `p`, the script's token `p` is predicted (with a one-token
/// prompt, the same answer as [`Logits`] gives), whatever else shares the
/// pass.
impl crate::scheduler::Batched for Script {
    fn step(
        &mut self,
        feeds: &[crate::transformer::Feed<'_>],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut out = Vec::new();
        for f in feeds {
            let covered = f.blocks.len() * crate::kv_cache::BLOCK_TOKENS;
            if f.tokens.is_empty() || f.pos + f.tokens.len() > covered {
                return Err(ModelError::Forward(format!(
                    "a feed of {} at {} with {} blocks",
                    f.tokens.len(),
                    f.pos,
                    f.blocks.len()
                )));
            }
            if f.logits {
                let mut l = vec![0.0; self.vocab];
                if let Some(&t) = self.tokens.get(f.pos + f.tokens.len() - 1) {
                    l[t as usize] = 10.0;
                }
                out.push(l);
            }
        }
        Ok(out)
    }
}

/// A vocabulary of single characters: "a", "b", "c", " ", "\u{e9}" split in two bytes, and EOS.
pub fn tokenizer() -> Tokenizer {
    let toks = ["<eos>", "a", "b", "c", "\u{120}", "\u{c3}", "\u{a9}"];
    let mut kv = std::collections::BTreeMap::new();
    kv.insert(
        "tokenizer.ggml.model".to_string(),
        Value::Str("gpt2".into()),
    );
    kv.insert(
        "tokenizer.ggml.tokens".to_string(),
        Value::Array(toks.iter().map(|t| Value::Str((*t).into())).collect()),
    );
    kv.insert(
        "tokenizer.ggml.token_type".to_string(),
        Value::Array(vec![
            Value::U64(3),
            Value::U64(1),
            Value::U64(1),
            Value::U64(1),
            Value::U64(1),
            Value::U64(1),
            Value::U64(1),
        ]),
    );
    kv.insert("tokenizer.ggml.merges".to_string(), Value::Array(vec![]));
    kv.insert("tokenizer.ggml.eos_token_id".to_string(), Value::U64(0));
    Tokenizer::from_gguf(&Metadata {
        version: 3,
        tensor_count: 0,
        kv,
        end: 0,
    })
    .unwrap_or_else(|e| panic!("{e}"))
}
