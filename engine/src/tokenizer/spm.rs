//! SentencePiece (`tokenizer.ggml.model = "llama"`: Llama 2, Mistral,
//! Gemma), as llama.cpp runs it: spaces become `▁`, a space is prefixed to
//! text at the start or after a special token where the model says
//! (`add_space_prefix`), the characters are merged pairwise by the highest
//! score of the merged token (leftmost on ties), and what is not in the
//! vocabulary falls back to its bytes (`<0xAB>` tokens).

use super::{TokenKind, TokenizerError, Vocab, merge};
use crate::gguf::{Metadata, Value};
use std::cmp::Ordering;

pub(super) struct Spm {
    scores: Vec<f32>,
    add_space_prefix: bool,
}

impl Spm {
    pub(super) fn from_gguf(meta: &Metadata, vocab: &Vocab) -> Result<Self, TokenizerError> {
        let key = "tokenizer.ggml.scores";
        let scores: Vec<f32> = meta
            .get(key)
            .and_then(Value::as_array)
            .ok_or(TokenizerError::Missing(key))?
            .iter()
            .map(|v| match v {
                Value::F64(f) => Some(*f as f32),
                _ => None,
            })
            .collect::<Option<_>>()
            .ok_or(TokenizerError::Missing(key))?;
        if scores.len() != vocab.tokens.len() {
            return Err(TokenizerError::Length {
                key,
                got: scores.len(),
                tokens: vocab.tokens.len(),
            });
        }
        let add_space_prefix = match meta.get("tokenizer.ggml.add_space_prefix") {
            Some(Value::Bool(b)) => *b,
            _ => true,
        };
        Ok(Spm {
            scores,
            add_space_prefix,
        })
    }

    /// Appends the ids of one text fragment; `after_special` when it starts
    /// the prompt or follows a special token.
    pub(super) fn encode(
        &self,
        vocab: &Vocab,
        text: &str,
        after_special: bool,
        out: &mut Vec<u32>,
    ) {
        let mut escaped = String::with_capacity(text.len() + 3);
        if self.add_space_prefix && after_special {
            escaped.push('▁');
        }
        for c in text.chars() {
            escaped.push(if c == ' ' { '▁' } else { c });
        }
        self.merge(vocab, &escaped, out);
    }

    fn merge(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        // The pair whose merged text is the best-scored token merges first.
        let score = |merged: &str, _split: usize| {
            let id = vocab.id(merged)?;
            self.scores.get(id as usize).copied().map(Score)
        };
        for range in merge::merge(text, score) {
            let piece = &text[range];
            match vocab.id(piece) {
                Some(id) => out.push(id),
                None => {
                    for byte in piece.bytes() {
                        out.extend(byte_token(vocab, byte));
                    }
                }
            }
        }
    }
}

/// A token's score, ordered totally (scores are finite in practice; a NaN
/// from a file must not make the order undefined).
struct Score(f32);
impl PartialEq for Score {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Score {}
impl PartialOrd for Score {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Score {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The token of one byte: `<0xAB>`, else the byte itself as text.
fn byte_token(vocab: &Vocab, byte: u8) -> Option<u32> {
    vocab.id(&format!("<0x{byte:02X}>")).or_else(|| {
        let c = [byte];
        std::str::from_utf8(&c).ok().and_then(|s| vocab.id(s))
    })
}

/// The byte a `<0xAB>` token stands for.
pub(super) fn byte_of(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The bytes of an ordinary or byte token (`▁` back to a space).
pub(super) fn decode_token(text: &str, kind: TokenKind, bytes: &mut Vec<u8>) {
    if kind == TokenKind::Byte {
        bytes.extend(byte_of(text));
        return;
    }
    bytes.extend_from_slice(text.replace('▁', " ").as_bytes());
}
