//! Constrained decoding: a context-free grammar over bytes, and a matcher
//! that says which tokens may come next, so that what the model writes
//! always belongs to the language (a JSON value, one matching a schema).
//!
//! The matcher follows llama.cpp's grammar sampler in its idea, not its
//! code: its state is the set of parser stacks alive after the bytes so far
//! (each stack: grammar positions still to match, innermost last), so an
//! ambiguous grammar (`anyOf`, a number that may go on) needs no
//! backtracking. A token is allowed when all of its bytes advance some
//! stack; the end of generation when some stack is empty. Tokens are tried
//! through a byte trie of the vocabulary, so tokens sharing a prefix share
//! its work and a rejected prefix rejects every token under it.

pub mod calls;
pub mod json;
mod trie;

pub use trie::TokenTrie;

use std::collections::{HashMap, HashSet};

/// A set of bytes, as a 256-bit map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    pub fn range(lo: u8, hi: u8) -> Self {
        let mut s = ByteSet([0; 4]);
        for b in lo..=hi {
            s.0[usize::from(b >> 6)] |= 1 << (b & 63);
        }
        s
    }
    pub fn byte(b: u8) -> Self {
        Self::range(b, b)
    }
    /// The bytes of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut s = ByteSet([0; 4]);
        for &b in bytes {
            s.union(&Self::byte(b));
        }
        s
    }
    /// The union of `ranges`.
    pub fn ranges(ranges: &[(u8, u8)]) -> Self {
        let mut s = ByteSet([0; 4]);
        for &(lo, hi) in ranges {
            s.union(&Self::range(lo, hi));
        }
        s
    }
    pub fn contains(&self, b: u8) -> bool {
        self.0[usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }
    fn union(&mut self, other: &ByteSet) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
    }
}

/// One element of a sequence: a byte from a set, or a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    Bytes(ByteSet),
    Rule(RuleId),
}

/// A rule's number in its grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(u32);

/// A grammar: rules, each a list of alternatives, each a sequence of
/// elements (an empty sequence matches nothing: the rule is optional).
#[derive(Debug, Clone, Default)]
pub struct Grammar {
    rules: Vec<Vec<Vec<Elem>>>,
    root: Option<RuleId>,
}

/// The deepest a parse may nest (stack positions): bounds the matcher's
/// memory and work whatever the model writes, and stops a grammar whose
/// rules refer to themselves before any byte.
pub const MAX_DEPTH: usize = 256;

/// Where a stack is in the grammar: the next element to match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Pos {
    rule: u32,
    alt: u32,
    at: u32,
}

type Stack = Vec<Pos>;

impl Grammar {
    /// A new rule with no alternatives yet (to refer to before it is
    /// defined: recursive values).
    pub fn declare(&mut self) -> RuleId {
        self.rules.push(Vec::new());
        RuleId(self.rules.len() as u32 - 1)
    }
    /// Sets `rule`'s alternatives.
    pub fn define(&mut self, rule: RuleId, alternatives: Vec<Vec<Elem>>) {
        if let Some(r) = self.rules.get_mut(rule.0 as usize) {
            *r = alternatives;
        }
    }
    /// A new rule with these alternatives.
    pub fn rule(&mut self, alternatives: Vec<Vec<Elem>>) -> RuleId {
        let id = self.declare();
        self.define(id, alternatives);
        id
    }
    /// A rule matching exactly `text`.
    pub fn literal(&mut self, text: &[u8]) -> RuleId {
        let seq = text
            .iter()
            .map(|&b| Elem::Bytes(ByteSet::byte(b)))
            .collect();
        self.rule(vec![seq])
    }
    pub fn set_root(&mut self, root: RuleId) {
        self.root = Some(root);
    }

    /// Drops every alternative that can never finish (it needs a rule that
    /// derives no text, as a definition that is only itself), so that the
    /// matcher never walks into a dead end; false when the root itself
    /// derives nothing.
    pub fn prune(&mut self) -> bool {
        let mut productive = vec![false; self.rules.len()];
        let finishes = |seq: &[Elem], productive: &[bool]| {
            seq.iter().all(|e| match e {
                Elem::Bytes(_) => true,
                Elem::Rule(r) => productive.get(r.0 as usize).copied().unwrap_or(false),
            })
        };
        loop {
            let mut changed = false;
            for (i, alts) in self.rules.iter().enumerate() {
                if !productive[i] && alts.iter().any(|a| finishes(a, &productive)) {
                    productive[i] = true;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        for alts in &mut self.rules {
            alts.retain(|a| finishes(a, &productive));
        }
        self.root
            .is_some_and(|r| productive.get(r.0 as usize).copied().unwrap_or(false))
    }

    fn elem(&self, p: Pos) -> Option<Elem> {
        self.rules
            .get(p.rule as usize)?
            .get(p.alt as usize)?
            .get(p.at as usize)
            .copied()
    }

    /// Pushes onto `out` every stack `stack` becomes once its top is a byte
    /// set (or it is empty: complete), expanding rules into alternatives.
    /// A stack met twice is expanded once (a rule that starts with itself
    /// loops back to a stack already seen), and each expansion spends one
    /// of `budget`, so no grammar makes this run away.
    fn expand(&self, stack: Stack, out: &mut HashSet<Stack>, budget: &mut usize) {
        let mut todo = vec![stack];
        let mut seen = HashSet::new();
        while let Some(mut stack) = todo.pop() {
            if *budget == 0 {
                return;
            }
            *budget -= 1;
            let Some(&top) = stack.last() else {
                out.insert(stack);
                continue;
            };
            match self.elem(top) {
                Some(Elem::Bytes(_)) => {
                    out.insert(stack);
                }
                // Past the end of its sequence: the rule is done.
                None => {
                    stack.pop();
                    todo.push(stack);
                }
                Some(Elem::Rule(r)) => {
                    if stack.len() >= MAX_DEPTH || !seen.insert(stack.clone()) {
                        continue;
                    }
                    stack.pop();
                    // What follows the rule, unless nothing does (so that
                    // a rule ending in itself, `chars ::= char chars`, runs
                    // in constant depth).
                    let next = Pos {
                        at: top.at + 1,
                        ..top
                    };
                    if self.elem(next).is_some() {
                        stack.push(next);
                    }
                    let alts = self.rules.get(r.0 as usize).map_or(0, Vec::len);
                    for alt in 0..alts {
                        let mut s = stack.clone();
                        s.push(Pos {
                            rule: r.0,
                            alt: alt as u32,
                            at: 0,
                        });
                        todo.push(s);
                    }
                }
            }
        }
    }
}

/// Parses followed at once: an `anyOf` of many alternatives that all match
/// the same bytes is followed along its first ones only.
const MAX_STACKS: usize = 256;

/// Expansions one byte may cost (see [`Grammar::expand`]).
const EXPANSION_BUDGET: usize = 1 << 16;

/// Where a generation is in its grammar.
#[derive(Debug, Clone)]
pub struct Matcher {
    grammar: std::sync::Arc<Grammar>,
    stacks: Vec<Stack>,
}

impl Matcher {
    /// At the start of the grammar's root.
    pub fn new(grammar: std::sync::Arc<Grammar>) -> Self {
        let mut out = HashSet::new();
        if let Some(root) = grammar.root {
            for alt in 0..grammar.rules.get(root.0 as usize).map_or(0, Vec::len) {
                let start = Pos {
                    rule: root.0,
                    alt: alt as u32,
                    at: 0,
                };
                grammar.expand(vec![start], &mut out, &mut EXPANSION_BUDGET.clone());
            }
        }
        Matcher {
            grammar,
            stacks: out.into_iter().collect(),
        }
    }

    /// The bytes that may come next (every stack's top is a byte set).
    pub fn next_bytes(&self) -> ByteSet {
        self.next_bytes_of(&self.stacks)
    }

    fn next_bytes_of(&self, stacks: &[Stack]) -> ByteSet {
        let mut set = ByteSet([0; 4]);
        for s in stacks {
            if let Some(Elem::Bytes(b)) = s.last().and_then(|&p| self.grammar.elem(p)) {
                set.union(&b);
            }
        }
        set
    }

    /// The stacks alive after `byte`, from `stacks`.
    fn step(&self, stacks: &[Stack], byte: u8) -> Vec<Stack> {
        let mut out = HashSet::new();
        let mut budget = EXPANSION_BUDGET;
        for s in stacks {
            let Some(&top) = s.last() else { continue };
            if let Some(Elem::Bytes(set)) = self.grammar.elem(top)
                && set.contains(byte)
            {
                let mut next = s.clone();
                next.pop();
                next.push(Pos {
                    at: top.at + 1,
                    ..top
                });
                self.grammar.expand(next, &mut out, &mut budget);
            }
        }
        let mut stacks: Vec<Stack> = out.into_iter().collect();
        if stacks.len() > MAX_STACKS {
            // A grammar this ambiguous keeps its first parses (in a fixed
            // order, so that answers stay reproducible): each is still a
            // valid way on, and the work per byte stays bounded.
            stacks.sort_unstable();
            stacks.truncate(MAX_STACKS);
        }
        stacks
    }

    /// Whether the text so far is a whole sentence of the grammar (the
    /// generation may end here).
    pub fn is_complete(&self) -> bool {
        self.stacks.iter().any(Vec::is_empty)
    }

    /// The stacks alive after `bytes`; `None` where the grammar refuses
    /// them.
    fn after(&self, bytes: &[u8]) -> Option<Vec<Stack>> {
        let mut stacks: Option<Vec<Stack>> = None;
        for &b in bytes {
            let next = self.step(stacks.as_deref().unwrap_or(&self.stacks), b);
            if next.is_empty() {
                return None;
            }
            stacks = Some(next);
        }
        Some(stacks.unwrap_or_else(|| self.stacks.clone()))
    }

    /// Whether `bytes` (at least one) may come next.
    pub fn accepts(&self, bytes: &[u8]) -> bool {
        !bytes.is_empty() && self.after(bytes).is_some()
    }

    /// Takes `bytes` (a token the caller chose among the allowed ones);
    /// false, and no change, if the grammar does not allow them.
    pub fn advance(&mut self, bytes: &[u8]) -> bool {
        match self.after(bytes) {
            Some(stacks) => {
                self.stacks = stacks;
                true
            }
            None => false,
        }
    }

    /// Every token of `trie` that may come next. The walk's states are
    /// numbered as they are met and each (state, byte) step is worked out
    /// once: inside a string almost every byte leads back to the same few
    /// states, so a vocabulary of 262,144 tokens costs a few thousand steps
    /// and a table lookup per trie node, not a step per node.
    pub fn allowed(&self, trie: &TokenTrie) -> Vec<u32> {
        let mut walk = Walk {
            states: Vec::new(),
            numbers: HashMap::new(),
            steps: HashMap::new(),
        };
        let start = walk.number(self, self.stacks.clone());
        let mut allowed = Vec::new();
        trie.walk(
            start,
            &mut |&state: &u32, byte| walk.step(self, state, byte),
            &mut allowed,
        );
        allowed.sort_unstable();
        allowed
    }
}

/// The states of one walk of the trie, numbered, and the steps between
/// them already worked out.
struct Walk {
    /// Each state's parser stacks (sorted) and the bytes it may take.
    states: Vec<(Vec<Stack>, ByteSet)>,
    numbers: HashMap<Vec<Stack>, u32>,
    steps: HashMap<(u32, u8), Option<u32>>,
}

impl Walk {
    fn number(&mut self, m: &Matcher, mut stacks: Vec<Stack>) -> u32 {
        stacks.sort_unstable();
        if let Some(&n) = self.numbers.get(&stacks) {
            return n;
        }
        let n = self.states.len() as u32;
        let next_bytes = m.next_bytes_of(&stacks);
        self.numbers.insert(stacks.clone(), n);
        self.states.push((stacks, next_bytes));
        n
    }

    fn step(&mut self, m: &Matcher, state: u32, byte: u8) -> Option<u32> {
        let (stacks, next_bytes) = self.states.get(state as usize)?;
        if !next_bytes.contains(byte) {
            return None;
        }
        if let Some(&known) = self.steps.get(&(state, byte)) {
            return known;
        }
        let next = m.step(stacks, byte);
        let result = (!next.is_empty()).then(|| self.number(m, next));
        self.steps.insert((state, byte), result);
        result
    }
}

#[cfg(test)]
mod tests;
