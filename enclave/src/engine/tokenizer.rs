//! The model's tokenizer, built from GGUF metadata, tokenizing exactly as
//! llama.cpp does for GPT-2-style byte-level BPE vocabularies (SmolLM2's
//! `smollm` pre-tokenizer: digits split one by one, then the GPT-2 split):
//!
//! 1. special (control) tokens are cut out of the text first;
//! 2. each remaining fragment is pre-tokenized by the regexes in order,
//!    keeping both matches and the text between them as pieces;
//! 3. each piece's bytes are mapped to GPT-2's printable byte alphabet and
//!    merged by BPE rank.

use super::gguf::{Metadata, Value};
use fancy_regex::Regex;
use std::collections::HashMap;

/// Why a tokenizer could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    #[error("tokenizer: GGUF key `{0}` is missing or has the wrong type")]
    Missing(&'static str),
    #[error("tokenizer: model {0:?} is not supported (gpt2-style BPE only)")]
    Model(String),
    #[error("tokenizer: pre-tokenizer {0:?} is not supported")]
    Pre(String),
    #[error("tokenizer: merge {index} {merge:?} is not two symbols")]
    Merge { index: usize, merge: String },
    #[error("tokenizer: {0}")]
    Regex(String),
}

/// llama.cpp's token type for control tokens (BOS, EOS, chat markers).
const TOKEN_TYPE_CONTROL: u64 = 3;
const TOKEN_TYPE_USER_DEFINED: u64 = 4;

/// A byte-level BPE tokenizer.
pub struct Tokenizer {
    tokens: Vec<String>,
    ids: HashMap<String, u32>,
    ranks: HashMap<(String, String), u32>,
    /// Special tokens, longest first (so the longest match wins).
    specials: Vec<(String, u32)>,
    special_ids: Vec<bool>,
    pre: Vec<Regex>,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.tokens.len())
            .field("merges", &self.ranks.len())
            .finish_non_exhaustive()
    }
}

/// GPT-2's reversible byte → printable character map.
fn byte_alphabet() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable =
            (b'!'..=b'~').contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        map[usize::from(b)] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{fffd}');
            next += 1;
            c
        };
    }
    map
}

fn strings(meta: &Metadata, key: &'static str) -> Result<Vec<String>, TokenizerError> {
    meta.get(key)
        .and_then(Value::as_array)
        .ok_or(TokenizerError::Missing(key))?
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or(TokenizerError::Missing(key))
        })
        .collect()
}

impl Tokenizer {
    /// Builds the tokenizer from a model's metadata.
    pub fn from_gguf(meta: &Metadata) -> Result<Self, TokenizerError> {
        let model = meta
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .ok_or(TokenizerError::Missing("tokenizer.ggml.model"))?;
        if model != "gpt2" {
            return Err(TokenizerError::Model(model.into()));
        }
        let pre_name = meta
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let gpt2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
        let patterns: Vec<&str> = match pre_name {
            "smollm" => vec![r"\p{N}", gpt2],
            "gpt-2" | "default" => vec![gpt2],
            other => return Err(TokenizerError::Pre(other.into())),
        };
        let pre = patterns
            .iter()
            .map(|p| Regex::new(p).map_err(|e| TokenizerError::Regex(e.to_string())))
            .collect::<Result<_, _>>()?;
        let tokens = strings(meta, "tokenizer.ggml.tokens")?;
        let types: Vec<u64> = meta
            .get("tokenizer.ggml.token_type")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
            .unwrap_or_default();
        let merges = strings(meta, "tokenizer.ggml.merges")?;
        let mut ranks = HashMap::with_capacity(merges.len());
        for (i, m) in merges.iter().enumerate() {
            let (a, b) = m.split_once(' ').ok_or_else(|| TokenizerError::Merge {
                index: i,
                merge: m.clone(),
            })?;
            ranks
                .entry((a.to_string(), b.to_string()))
                .or_insert(i as u32);
        }
        let ids: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut specials: Vec<(String, u32)> = Vec::new();
        let mut special_ids = vec![false; tokens.len()];
        for (i, t) in types.iter().enumerate() {
            if (*t == TOKEN_TYPE_CONTROL || *t == TOKEN_TYPE_USER_DEFINED) && i < tokens.len() {
                special_ids[i] = true;
                if !tokens[i].is_empty() {
                    specials.push((tokens[i].clone(), i as u32));
                }
            }
        }
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.1.cmp(&b.1)));
        let byte_to_char = byte_alphabet();
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, c)| (*c, b as u8))
            .collect();
        let id = |k: &str| {
            meta.get(k)
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        Ok(Tokenizer {
            tokens,
            ids,
            ranks,
            specials,
            special_ids,
            pre,
            byte_to_char,
            char_to_byte,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Token ids for `text`; with `parse_special`, special-token text
    /// (e.g. `<|im_start|>`) becomes those tokens. No BOS is added.
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let next = if parse_special {
                self.next_special(rest)
            } else {
                None
            };
            match next {
                Some((at, len, id)) => {
                    self.encode_fragment(&rest[..at], &mut out);
                    out.push(id);
                    rest = &rest[at + len..];
                }
                None => {
                    self.encode_fragment(rest, &mut out);
                    break;
                }
            }
        }
        out
    }

    /// The earliest special token in `s` (longest at that position).
    fn next_special(&self, s: &str) -> Option<(usize, usize, u32)> {
        let mut best: Option<(usize, usize, u32)> = None;
        for (text, id) in &self.specials {
            if let Some(at) = s.find(text.as_str()) {
                let better = match best {
                    None => true,
                    Some((b_at, b_len, _)) => at < b_at || (at == b_at && text.len() > b_len),
                };
                if better {
                    best = Some((at, text.len(), *id));
                }
            }
        }
        best
    }

    /// Pre-tokenizes like llama.cpp: each regex splits every piece into its
    /// matches and the text between them.
    fn pre_tokenize<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut pieces = vec![text];
        for re in &self.pre {
            let mut next = Vec::with_capacity(pieces.len());
            for p in pieces {
                let mut last = 0;
                for m in re.find_iter(p).flatten() {
                    if m.start() > last {
                        next.push(&p[last..m.start()]);
                    }
                    if m.end() > m.start() {
                        next.push(m.as_str());
                    }
                    last = m.end();
                }
                if last < p.len() {
                    next.push(&p[last..]);
                }
            }
            pieces = next;
        }
        pieces
    }

    fn encode_fragment(&self, text: &str, out: &mut Vec<u32>) {
        for piece in self.pre_tokenize(text) {
            let mapped: String = piece
                .bytes()
                .map(|b| self.byte_to_char[usize::from(b)])
                .collect();
            // A piece that is a whole (ordinary) token needs no merging.
            if let Some(&id) = self.ids.get(&mapped)
                && !self.special_ids.get(id as usize).copied().unwrap_or(false)
            {
                out.push(id);
                continue;
            }
            self.bpe(&mapped, out);
        }
    }

    /// Merges the lowest-ranked adjacent pair until none applies.
    fn bpe(&self, word: &str, out: &mut Vec<u32>) {
        let mut symbols: Vec<String> = word.chars().map(String::from).collect();
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| {
                    self.ranks
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|r| (*r, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let merged = format!("{}{}", symbols[i], symbols[i + 1]);
            symbols.splice(i..i + 2, [merged]);
        }
        for s in symbols {
            match self.ids.get(&s) {
                Some(&id) => out.push(id),
                // Not in the vocabulary: fall back to one token per byte character.
                None => out.extend(
                    s.chars()
                        .filter_map(|c| self.ids.get(&c.to_string()).copied()),
                ),
            }
        }
    }

    /// The text of `ids`. Special tokens are rendered as their text only
    /// with `render_special` (llama.cpp omits them otherwise).
    pub fn decode(&self, ids: &[u32], render_special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(t) = self.tokens.get(id as usize) else {
                continue;
            };
            if self.special_ids.get(id as usize).copied().unwrap_or(false) {
                if render_special {
                    bytes.extend_from_slice(t.as_bytes());
                }
            } else {
                bytes.extend(
                    t.chars()
                        .map(|c| self.char_to_byte.get(&c).copied().unwrap_or(b'?')),
                );
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}
