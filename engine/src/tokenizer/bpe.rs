//! GPT-2-style byte-level BPE (`tokenizer.ggml.model = "gpt2"`), as
//! llama.cpp runs it: the text is pre-tokenized by the model's regexes in
//! order (each splits every piece into its matches and the text between
//! them), each piece's bytes are mapped to GPT-2's printable byte alphabet
//! and merged by rank, lowest first, leftmost on ties.

use super::{TokenKind, TokenizerError, Vocab, merge, strings};
use crate::gguf::{Metadata, Value};
use fancy_regex::{Regex, RegexBuilder};
use std::cmp::Reverse;
use std::collections::HashMap;

const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A pre-tokenizer: its regexes, whether a piece that is a whole token is
/// taken as is (`ignore_merges`), and whether BOS is added by default.
struct Pre {
    patterns: &'static [&'static str],
    ignore_merges: bool,
    add_bos: bool,
}

/// The pre-tokenizers of the families ciel serves, by their GGUF name
/// (`tokenizer.ggml.pre`), as llama.cpp defines them.
fn pre_tokenizer(name: &str) -> Option<Pre> {
    let pre = |patterns, ignore_merges, add_bos| Pre {
        patterns,
        ignore_merges,
        add_bos,
    };
    Some(match name {
        "default" => pre(
            &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
            false,
            false,
        ),
        "gpt-2" | "phi-2" => pre(&[GPT2], false, false),
        "smollm" | "starcoder" | "refact" | "command-r" => pre(&[r"\p{N}", GPT2], false, false),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" => pre(&[LLAMA3], true, true),
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" => pre(&[QWEN2], false, false),
        _ => return None,
    })
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

pub(super) struct Bpe {
    /// Every symbol a merge names, numbered, so that a pair is looked up
    /// without building its strings.
    symbols: HashMap<String, u32>,
    /// (left, right) symbol numbers → the merge's rank.
    ranks: HashMap<(u32, u32), u32>,
    pre: Vec<Regex>,
    ignore_merges: bool,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
}

impl Bpe {
    /// The BPE tables, and whether the pre-tokenizer adds BOS by default.
    pub(super) fn from_gguf(
        meta: &Metadata,
        _vocab: &Vocab,
    ) -> Result<(Self, bool), TokenizerError> {
        // llama.cpp treats a missing pre-tokenizer as "default".
        let name = meta
            .get("tokenizer.ggml.pre")
            .and_then(Value::as_str)
            .unwrap_or("default");
        let pre = pre_tokenizer(name).ok_or_else(|| TokenizerError::Pre(name.into()))?;
        let regexes = pre
            .patterns
            .iter()
            .map(|p| {
                // fancy-regex stops a match after a million backtracking
                // steps by default, and a one-word prompt of a megabyte
                // takes one per character: the limit would turn it into a
                // different split (or, skipped, a quadratic rescan). The
                // patterns here backtrack at most a few steps per byte, so
                // no limit is needed.
                RegexBuilder::new(p)
                    .backtrack_limit(usize::MAX)
                    .build()
                    .map_err(|e| TokenizerError::Regex(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let merges = strings(meta, "tokenizer.ggml.merges")?;
        let mut symbols = HashMap::with_capacity(merges.len());
        let mut ranks = HashMap::with_capacity(merges.len());
        for (i, m) in merges.iter().enumerate() {
            let (a, b) = m.split_once(' ').ok_or_else(|| TokenizerError::Merge {
                index: i,
                merge: m.clone(),
            })?;
            let mut number = |s: &str| {
                let next = symbols.len() as u32;
                *symbols.entry(s.to_string()).or_insert(next)
            };
            let pair = (number(a), number(b));
            ranks.entry(pair).or_insert(i as u32);
        }
        let byte_to_char = byte_alphabet();
        let char_to_byte = byte_to_char
            .iter()
            .enumerate()
            .map(|(b, c)| (*c, b as u8))
            .collect();
        Ok((
            Bpe {
                symbols,
                ranks,
                pre: regexes,
                ignore_merges: pre.ignore_merges,
                byte_to_char,
                char_to_byte,
            },
            pre.add_bos,
        ))
    }

    /// Pre-tokenizes like llama.cpp: each regex splits every piece into its
    /// matches and the text between them.
    fn pre_tokenize<'a>(&self, text: &'a str) -> Vec<&'a str> {
        let mut pieces = vec![text];
        for re in &self.pre {
            let mut next = Vec::with_capacity(pieces.len());
            for p in pieces {
                let mut last = 0;
                // Without a backtracking limit a search cannot fail; were
                // it to, the rest of the piece stays one piece (never a
                // skipped error and a rescan).
                for m in re.find_iter(p).map_while(Result::ok) {
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

    pub(super) fn encode(&self, vocab: &Vocab, text: &str, out: &mut Vec<u32>) {
        for piece in self.pre_tokenize(text) {
            let mapped: String = piece
                .bytes()
                .map(|b| self.byte_to_char[usize::from(b)])
                .collect();
            if self.ignore_merges
                && let Some(id) = vocab.id(&mapped)
            {
                out.push(id);
                continue;
            }
            self.merge(vocab, &mapped, out);
        }
    }

    /// Merges the lowest-ranked adjacent pair (leftmost on ties) until none
    /// applies.
    fn merge(&self, vocab: &Vocab, word: &str, out: &mut Vec<u32>) {
        let rank = |merged: &str, split: usize| {
            let left = self.symbols.get(&merged[..split])?;
            let right = self.symbols.get(&merged[split..])?;
            self.ranks.get(&(*left, *right)).map(|r| Reverse(*r))
        };
        for range in merge::merge(word, rank) {
            let s = &word[range];
            match vocab.id(s) {
                Some(id) => out.push(id),
                // Not in the vocabulary: one token per byte character.
                None => out.extend(s.chars().filter_map(|c| {
                    let mut b = [0u8; 4];
                    vocab.id(c.encode_utf8(&mut b))
                })),
            }
        }
    }

    /// The bytes of an ordinary or byte token.
    pub(super) fn decode_token(&self, text: &str, kind: TokenKind, bytes: &mut Vec<u8>) {
        if kind == TokenKind::Byte
            && let Some(b) = super::spm::byte_of(text)
        {
            bytes.push(b);
            return;
        }
        bytes.extend(
            text.chars()
                .map(|c| self.char_to_byte.get(&c).copied().unwrap_or(b'?')),
        );
    }
}
