//! SentencePiece (`tokenizer.ggml.model = "llama"`: Llama 2, Mistral,
//! Gemma), as llama.cpp runs it: spaces become `▁`, a space is prefixed to
//! text at the start or after a special token where the model says
//! (`add_space_prefix`), the characters are merged pairwise by the highest
//! score of the merged token (leftmost on ties), and what is not in the
//! vocabulary falls back to its bytes (`<0xAB>` tokens).

use super::{TokenKind, TokenizerError, Vocab};
use crate::gguf::{Metadata, Value};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

pub(super) struct Spm {
    scores: Vec<f32>,
    add_space_prefix: bool,
}

/// A candidate merge of two adjacent symbols.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    /// Bytes of the merged text, to tell a stale candidate.
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Bigram {
    /// The heap's top is the highest score, then the leftmost.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

/// A symbol of the text being merged: a byte range, linked to its
/// neighbours (`len == 0` once merged into its left neighbour).
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
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
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (start, c) in text.char_indices() {
            let i = symbols.len();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if let Some(p) = i.checked_sub(1) {
                symbols[p].next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        let candidate = |symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
            let (l, r) = (left?, right?);
            let (a, b) = (symbols[l], symbols[r]);
            let merged = text.get(a.start..b.start + b.len)?;
            let id = vocab.id(merged)?;
            Some(Bigram {
                score: *self.scores.get(id as usize)?,
                left: l,
                right: r,
                len: merged.len(),
            })
        };
        for i in 1..symbols.len() {
            queue.extend(candidate(&symbols, Some(i - 1), Some(i)));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(b.left);
            }
            queue.extend(candidate(&symbols, symbols[b.left].prev, Some(b.left)));
            queue.extend(candidate(&symbols, Some(b.left), symbols[b.left].next));
        }
        let mut at = if symbols.is_empty() { None } else { Some(0) };
        while let Some(i) = at {
            let s = symbols[i];
            let piece = &text[s.start..s.start + s.len];
            match vocab.id(piece) {
                Some(id) => out.push(id),
                None => {
                    for byte in piece.bytes() {
                        out.extend(byte_token(vocab, byte));
                    }
                }
            }
            at = s.next;
        }
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
