//! The vocabulary as a byte trie: a walk of it with a grammar's state tries
//! every token at once, sharing the work of common prefixes and cutting
//! every token under a prefix the grammar rejects.

use crate::tokenizer::Tokenizer;

#[derive(Debug, Default)]
struct Node {
    /// (byte, child), sorted by byte.
    children: Vec<(u8, u32)>,
    /// Tokens whose bytes end here.
    tokens: Vec<u32>,
}

/// The tokens a constrained generation may choose from, by their bytes:
/// ordinary, byte and user-defined tokens (control tokens write no text;
/// the end of generation is allowed separately, when the grammar is done).
#[derive(Debug)]
pub struct TokenTrie {
    nodes: Vec<Node>,
}

impl TokenTrie {
    pub fn new(tokenizer: &Tokenizer) -> Self {
        let mut nodes = vec![Node::default()];
        for id in 0..tokenizer.vocab_size() as u32 {
            if !tokenizer.writes_text(id) {
                continue;
            }
            let bytes = tokenizer.token_bytes(id);
            if bytes.is_empty() {
                continue;
            }
            let mut at = 0usize;
            for b in bytes {
                at = match nodes[at].children.binary_search_by_key(&b, |c| c.0) {
                    Ok(i) => nodes[at].children[i].1 as usize,
                    Err(i) => {
                        let child = nodes.len();
                        nodes.push(Node::default());
                        nodes[at].children.insert(i, (b, child as u32));
                        child
                    }
                };
            }
            nodes[at].tokens.push(id);
        }
        TokenTrie { nodes }
    }

    /// Depth-first from the root with `state`: `step(state, byte)` is the
    /// state after `byte`, `None` where the byte is refused; every token
    /// reached is pushed onto `out`.
    pub(super) fn walk<S>(
        &self,
        state: S,
        step: &mut impl FnMut(&S, u8) -> Option<S>,
        out: &mut Vec<u32>,
    ) {
        // An explicit stack: a token may be long, and recursion would put
        // its depth on the thread's stack.
        let mut todo = vec![(0usize, state)];
        while let Some((node, state)) = todo.pop() {
            let Some(n) = self.nodes.get(node) else {
                continue;
            };
            for &(byte, child) in &n.children {
                if let Some(next) = step(&state, byte) {
                    if let Some(c) = self.nodes.get(child as usize) {
                        out.extend_from_slice(&c.tokens);
                    }
                    todo.push((child as usize, next));
                }
            }
        }
    }
}
