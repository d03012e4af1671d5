//! The model's tokenizer, built from GGUF metadata, tokenizing exactly as
//! llama.cpp does:
//!
//! 1. special tokens are cut out of the text first, each in turn, longest
//!    first (control tokens only when special text is parsed; user-defined
//!    tokens always, as llama.cpp and Hugging Face's tokenizers do);
//! 2. each remaining fragment goes to the vocabulary's algorithm: GPT-2-style
//!    byte-level BPE ([`bpe`], `tokenizer.ggml.model = "gpt2"`, with the
//!    pre-tokenizer the model names) or SentencePiece ([`spm`],
//!    `tokenizer.ggml.model = "llama"`: scores, byte fallback, `▁` spaces);
//! 3. BOS and EOS are added where the model says (`add_bos_token`,
//!    `add_eos_token`, else the vocabulary's default), on every route.

mod bpe;
mod merge;
mod spm;
#[cfg(test)]
mod tests;

use crate::gguf::{Metadata, Value};
use aho_corasick::AhoCorasick;
use std::collections::HashMap;

/// Why a tokenizer could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizerError {
    #[error("tokenizer: GGUF key `{0}` is missing or has the wrong type")]
    Missing(&'static str),
    #[error(
        "tokenizer: model {0:?} is not supported (\"gpt2\" byte-level BPE and \"llama\" SentencePiece are)"
    )]
    Model(String),
    #[error("tokenizer: pre-tokenizer {0:?} is not supported")]
    Pre(String),
    #[error("tokenizer: merge {index} {merge:?} is not two symbols")]
    Merge { index: usize, merge: String },
    #[error("tokenizer: `{key}` has {got} entries for {tokens} tokens")]
    Length {
        key: &'static str,
        got: usize,
        tokens: usize,
    },
    #[error("tokenizer: `{key}` = {id} is not a token id ({tokens} tokens)")]
    BadId {
        key: &'static str,
        id: u64,
        tokens: usize,
    },
    #[error("tokenizer: the model adds {0} to every prompt but names no {0} token")]
    NoSpecial(&'static str),
    #[error("tokenizer: {0}")]
    Regex(String),
    #[error("tokenizer: the special tokens' texts cannot be searched for: {0}")]
    Specials(String),
}

/// What a token is, from `tokenizer.ggml.token_type` (llama.cpp's types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Normal,
    Unknown,
    /// BOS, EOS, chat markers: text only when special text is parsed.
    Control,
    /// Added tokens that are always cut out of the text as themselves.
    UserDefined,
    Unused,
    /// `<0xAB>`: one raw byte (SentencePiece byte fallback).
    Byte,
    Undefined,
}

impl TokenKind {
    fn from_gguf(t: u64) -> Self {
        match t {
            1 => TokenKind::Normal,
            2 => TokenKind::Unknown,
            3 => TokenKind::Control,
            4 => TokenKind::UserDefined,
            5 => TokenKind::Unused,
            6 => TokenKind::Byte,
            _ => TokenKind::Undefined,
        }
    }
}

/// The vocabulary shared by both algorithms.
pub(crate) struct Vocab {
    pub(crate) tokens: Vec<String>,
    pub(crate) kinds: Vec<TokenKind>,
    pub(crate) ids: HashMap<String, u32>,
}

impl Vocab {
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }
    fn kind(&self, id: u32) -> TokenKind {
        self.kinds
            .get(id as usize)
            .copied()
            .unwrap_or(TokenKind::Undefined)
    }
}

enum Algorithm {
    Bpe(Box<bpe::Bpe>),
    Spm(spm::Spm),
}

/// A piece of the text after the special tokens are cut out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// The model's tokenizer.
pub struct Tokenizer {
    vocab: Vocab,
    algorithm: Algorithm,
    /// Control, user-defined and unknown tokens, longest first (llama.cpp's
    /// partition order; equal lengths by id).
    specials: Vec<u32>,
    /// Finds every occurrence of every special's text (pattern `i` is
    /// `specials[i]`).
    special_finder: AhoCorasick,
    /// Tokens that end generation (EOS, end-of-turn markers).
    eog: Vec<u32>,
    /// The vocabulary as a byte trie, built the first time a generation is
    /// constrained by a grammar.
    trie: std::sync::OnceLock<crate::grammar::TokenTrie>,
    add_bos: bool,
    add_eos: bool,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.vocab.tokens.len())
            .field(
                "algorithm",
                &match self.algorithm {
                    Algorithm::Bpe(_) => "bpe",
                    Algorithm::Spm(_) => "spm",
                },
            )
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish_non_exhaustive()
    }
}

pub(crate) fn strings(meta: &Metadata, key: &'static str) -> Result<Vec<String>, TokenizerError> {
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

fn flag(meta: &Metadata, key: &str) -> Option<bool> {
    match meta.get(key) {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    }
}

/// Token texts that end generation whatever the model's EOS (llama.cpp's
/// list for the families ciel serves).
const END_OF_GENERATION: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<|end_of_text|>",
];

impl Tokenizer {
    /// Builds the tokenizer from a model's metadata.
    pub fn from_gguf(meta: &Metadata) -> Result<Self, TokenizerError> {
        let model = meta
            .get("tokenizer.ggml.model")
            .and_then(Value::as_str)
            .ok_or(TokenizerError::Missing("tokenizer.ggml.model"))?;
        let tokens = strings(meta, "tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let kinds: Vec<TokenKind> = match meta.get("tokenizer.ggml.token_type") {
            None => vec![TokenKind::Normal; n],
            Some(v) => {
                let a = v
                    .as_array()
                    .ok_or(TokenizerError::Missing("tokenizer.ggml.token_type"))?;
                if a.len() != n {
                    return Err(TokenizerError::Length {
                        key: "tokenizer.ggml.token_type",
                        got: a.len(),
                        tokens: n,
                    });
                }
                a.iter()
                    .map(|v| v.as_u64().map(TokenKind::from_gguf))
                    .collect::<Option<_>>()
                    .ok_or(TokenizerError::Missing("tokenizer.ggml.token_type"))?
            }
        };
        let mut ids = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // The first of duplicate texts wins, as in llama.cpp's map.
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let mut vocab = Vocab { tokens, kinds, ids };
        let (algorithm, default_bos) = match model {
            "gpt2" => {
                let (b, add_bos) = bpe::Bpe::from_gguf(meta, &vocab)?;
                (Algorithm::Bpe(Box::new(b)), add_bos)
            }
            "llama" => (Algorithm::Spm(spm::Spm::from_gguf(meta, &vocab)?), true),
            other => return Err(TokenizerError::Model(other.into())),
        };
        let id = |key: &'static str| -> Result<Option<u32>, TokenizerError> {
            match meta.get(key) {
                None => Ok(None),
                Some(v) => {
                    let id = v.as_u64().ok_or(TokenizerError::Missing(key))?;
                    match u32::try_from(id) {
                        Ok(i) if (i as usize) < n => Ok(Some(i)),
                        _ => Err(TokenizerError::BadId { key, id, tokens: n }),
                    }
                }
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let add_bos = flag(meta, "tokenizer.ggml.add_bos_token").unwrap_or(default_bos);
        let add_eos = flag(meta, "tokenizer.ggml.add_eos_token").unwrap_or(false);
        if add_bos && bos.is_none() {
            return Err(TokenizerError::NoSpecial("BOS"));
        }
        if add_eos && eos.is_none() {
            return Err(TokenizerError::NoSpecial("EOS"));
        }
        // End-of-generation tokens, made control tokens if they were not.
        let mut eog: Vec<u32> = END_OF_GENERATION
            .iter()
            .filter_map(|t| vocab.id(t))
            .collect();
        eog.extend(id("tokenizer.ggml.eot_token_id")?);
        eog.extend(id("tokenizer.ggml.eom_token_id")?);
        eog.extend(eos);
        eog.sort_unstable();
        eog.dedup();
        for &t in &eog {
            if let Some(k) = vocab.kinds.get_mut(t as usize) {
                *k = TokenKind::Control;
            }
        }
        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| {
                matches!(
                    vocab.kind(i),
                    TokenKind::Control | TokenKind::UserDefined | TokenKind::Unknown
                ) && !vocab.tokens[i as usize].is_empty()
            })
            .collect();
        specials.sort_by(|&a, &b| {
            vocab.tokens[b as usize]
                .len()
                .cmp(&vocab.tokens[a as usize].len())
                .then(a.cmp(&b))
        });
        let special_finder = AhoCorasick::new(
            specials
                .iter()
                .map(|&i| vocab.tokens[i as usize].as_bytes()),
        )
        .map_err(|e| TokenizerError::Specials(e.to_string()))?;
        Ok(Tokenizer {
            vocab,
            algorithm,
            specials,
            special_finder,
            eog,
            trie: std::sync::OnceLock::new(),
            add_bos,
            add_eos,
            bos,
            eos,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab.tokens.len()
    }

    /// Whether the model adds BOS to every prompt.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether `id` is text (ordinary, byte or user-defined), not a
    /// control token.
    pub fn writes_text(&self, id: u32) -> bool {
        matches!(
            self.vocab.kind(id),
            TokenKind::Normal | TokenKind::Byte | TokenKind::UserDefined
        )
    }

    /// The vocabulary as a byte trie (built once, on first use).
    pub fn token_trie(&self) -> &crate::grammar::TokenTrie {
        self.trie
            .get_or_init(|| crate::grammar::TokenTrie::new(self))
    }

    /// The tokens that end generation, sorted.
    pub fn end_of_generation_ids(&self) -> &[u32] {
        &self.eog
    }

    /// Whether `id` ends generation (EOS or an end-of-turn marker).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// Token ids for `text`; with `parse_special`, control-token text (e.g.
    /// `<|im_start|>`) becomes those tokens. No BOS or EOS is added
    /// (llama.cpp's `add_special = false`).
    pub fn encode(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_into(text, parse_special, &mut out);
        out
    }

    /// A prompt's ids as the model expects them: BOS first and EOS last
    /// where the model adds them (llama.cpp's `add_special = true`, which
    /// its `/completion` uses).
    pub fn encode_prompt(&self, text: &str, parse_special: bool) -> Vec<u32> {
        let mut out = Vec::new();
        if self.add_bos {
            out.extend(self.bos);
        }
        self.encode_into(text, parse_special, &mut out);
        if self.add_eos {
            out.extend(self.eos);
        }
        out
    }

    /// A rendered chat prompt's ids: special text parsed, and BOS/EOS added
    /// as for any prompt, except where the template already wrote them
    /// (`{{ bos_token }}`): llama.cpp's chat path strips those so that the
    /// model sees one BOS, not two.
    pub fn encode_chat(&self, rendered: &str) -> Vec<u32> {
        let mut out = self.encode(rendered, true);
        if self.add_bos
            && let Some(bos) = self.bos
            && out.first() != Some(&bos)
        {
            out.insert(0, bos);
        }
        if self.add_eos
            && let Some(eos) = self.eos
            && out.last() != Some(&eos)
        {
            out.push(eos);
        }
        out
    }

    fn encode_into(&self, text: &str, parse_special: bool, out: &mut Vec<u32>) {
        let fragments = self.partition(text, parse_special);
        match &self.algorithm {
            Algorithm::Bpe(b) => {
                for f in fragments {
                    match f {
                        Fragment::Text(t) => b.encode(&self.vocab, t, out),
                        Fragment::Token(id) => out.push(id),
                    }
                }
            }
            Algorithm::Spm(s) => {
                // SentencePiece prefixes a space to text that starts the
                // prompt or follows a special token, where the model says so.
                let mut after_special = true;
                for f in fragments {
                    match f {
                        Fragment::Text(t) => {
                            s.encode(&self.vocab, t, after_special, out);
                            after_special = false;
                        }
                        Fragment::Token(id) => {
                            out.push(id);
                            after_special = true;
                        }
                    }
                }
            }
        }
    }

    /// Cuts the special tokens out of `text`: each token in turn, longest
    /// first, splits every text fragment at each of its occurrences
    /// (llama.cpp's order, which a leftmost-longest scan would not keep: a
    /// longer token wins over a shorter one that starts before it). One
    /// pass of the automaton first finds which specials occur at all, so
    /// that only those scan the text: Gemma has 6,414 specials, and one
    /// scan each of a megabyte prompt is seconds of a core.
    fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        let mut fragments = Vec::new();
        if text.is_empty() {
            return fragments;
        }
        fragments.push(Fragment::Text(text));
        let mut present = vec![false; self.specials.len()];
        for m in self.special_finder.find_overlapping_iter(text) {
            present[m.pattern().as_usize()] = true;
        }
        for (&id, _) in self.specials.iter().zip(present).filter(|(_, p)| *p) {
            let kind = self.vocab.kind(id);
            if !parse_special && matches!(kind, TokenKind::Control | TokenKind::Unknown) {
                continue;
            }
            let needle = self.vocab.tokens[id as usize].as_str();
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for f in fragments {
                let Fragment::Text(mut rest) = f else {
                    next.push(f);
                    continue;
                };
                while let Some(at) = rest.find(needle) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }

    /// The text of `ids`. Control tokens are rendered as their text only
    /// with `render_special` (llama.cpp omits them otherwise); user-defined
    /// tokens are always their text.
    pub fn decode(&self, ids: &[u32], render_special: bool) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            self.push_bytes(id, render_special, &mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The bytes of one token, special tokens' text included (how logprobs
    /// name tokens; a byte token is one byte of a character).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.push_bytes(id, true, &mut bytes);
        bytes
    }

    fn push_bytes(&self, id: u32, render_special: bool, bytes: &mut Vec<u8>) {
        let Some(t) = self.vocab.tokens.get(id as usize) else {
            return;
        };
        match self.vocab.kind(id) {
            TokenKind::Control | TokenKind::Unknown => {
                if render_special {
                    bytes.extend_from_slice(t.as_bytes());
                }
            }
            TokenKind::UserDefined => bytes.extend_from_slice(t.as_bytes()),
            TokenKind::Normal | TokenKind::Byte => match &self.algorithm {
                Algorithm::Bpe(b) => b.decode_token(t, self.vocab.kind(id), bytes),
                Algorithm::Spm(_) => spm::decode_token(t, self.vocab.kind(id), bytes),
            },
            TokenKind::Unused | TokenKind::Undefined => {}
        }
    }
}
