//! The pairwise merge both vocabularies run: the text's characters are
//! symbols, and the adjacent pair the vocabulary ranks highest (leftmost on
//! ties) becomes one symbol, until no pair ranks. A priority queue of
//! candidate pairs and a linked list of symbols make it O(n log n): a naive
//! rescan of every pair after each merge is quadratic, which a one-word
//! prompt of a megabyte turns into minutes of a core (a denial of service).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::ops::Range;

/// A candidate merge of two adjacent symbols.
struct Candidate<K> {
    priority: K,
    left: usize,
    right: usize,
    /// Bytes of the merged text: a candidate whose symbols have grown since
    /// it was queued is stale.
    len: usize,
}

impl<K: Ord> Candidate<K> {
    /// The queue's top: the highest priority, then the leftmost.
    fn key(&self) -> (&K, Reverse<usize>) {
        (&self.priority, Reverse(self.left))
    }
}
impl<K: Ord> PartialEq for Candidate<K> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl<K: Ord> Eq for Candidate<K> {}
impl<K: Ord> PartialOrd for Candidate<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord> Ord for Candidate<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// A symbol: a byte range of the text, linked to its neighbours
/// (`len == 0` once merged into its left neighbour).
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Merges `text`'s symbols (at first its characters) while some adjacent
/// pair has a priority; `priority(merged, split)` ranks the pair whose
/// merged text is `merged`, the left symbol being `merged[..split]`.
/// Returns the final symbols' byte ranges, in order.
pub(super) fn merge<K: Ord>(
    text: &str,
    priority: impl Fn(&str, usize) -> Option<K>,
) -> Vec<Range<usize>> {
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
    let candidate = |symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
        let (l, r) = (left?, right?);
        let (a, b) = (symbols[l], symbols[r]);
        let merged = text.get(a.start..b.start + b.len)?;
        Some(Candidate {
            priority: priority(merged, a.len)?,
            left: l,
            right: r,
            len: merged.len(),
        })
    };
    let mut queue = BinaryHeap::with_capacity(symbols.len());
    for i in 1..symbols.len() {
        queue.extend(candidate(&symbols, Some(i - 1), Some(i)));
    }
    while let Some(c) = queue.pop() {
        let (l, r) = (symbols[c.left], symbols[c.right]);
        if l.len == 0 || r.len == 0 || l.next != Some(c.right) || l.len + r.len != c.len {
            continue;
        }
        symbols[c.left].len += r.len;
        symbols[c.right].len = 0;
        symbols[c.left].next = r.next;
        if let Some(n) = r.next {
            symbols[n].prev = Some(c.left);
        }
        queue.extend(candidate(&symbols, symbols[c.left].prev, Some(c.left)));
        queue.extend(candidate(&symbols, Some(c.left), symbols[c.left].next));
    }
    let mut ranges = Vec::new();
    let mut at = if symbols.is_empty() { None } else { Some(0) };
    while let Some(i) = at {
        let s = symbols[i];
        ranges.push(s.start..s.start + s.len);
        at = s.next;
    }
    ranges
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::merge;
    use std::cmp::Reverse;
    use std::ops::Range;

    fn pieces<'a>(text: &'a str, ranges: &[std::ops::Range<usize>]) -> Vec<&'a str> {
        ranges.iter().map(|r| &text[r.clone()]).collect()
    }

    #[test]
    fn highest_priority_first_and_leftmost_on_ties() {
        // "ab" outranks "bc"; "aa" pairs tie, so the leftmost merges first.
        let rank = |merged: &str, _split: usize| match merged {
            "ab" => Some(Reverse(0)),
            "bc" => Some(Reverse(1)),
            "aa" => Some(Reverse(2)),
            _ => None,
        };
        let text = "abc";
        assert_eq!(pieces(text, &merge(text, rank)), ["ab", "c"]);
        let text = "aaa";
        assert_eq!(pieces(text, &merge(text, rank)), ["aa", "a"]);
        let text = "xbc";
        assert_eq!(pieces(text, &merge(text, rank)), ["x", "bc"]);
    }

    #[test]
    fn merged_symbols_merge_again_and_the_split_is_given() {
        let rank = |merged: &str, split: usize| match (&merged[..split], &merged[split..]) {
            ("a", "b") => Some(Reverse(0)),
            ("ab", "ab") => Some(Reverse(1)),
            ("abab", "é") => Some(Reverse(2)),
            _ => None,
        };
        let text = "ababé!";
        assert_eq!(pieces(text, &merge(text, rank)), ["ababé", "!"]);
        assert!(merge("", rank).is_empty());
    }

    /// The definition, quadratically: rescan every pair after each merge.
    fn naive<K: Ord>(text: &str, priority: impl Fn(&str, usize) -> Option<K>) -> Vec<Range<usize>> {
        let mut symbols: Vec<Range<usize>> = text
            .char_indices()
            .map(|(i, c)| i..i + c.len_utf8())
            .collect();
        loop {
            let mut best: Option<(K, usize)> = None;
            for i in 1..symbols.len() {
                let (a, b) = (&symbols[i - 1], &symbols[i]);
                if let Some(p) = priority(&text[a.start..b.end], a.len())
                    && best.as_ref().is_none_or(|(q, _)| p > *q)
                {
                    best = Some((p, i));
                }
            }
            let Some((_, i)) = best else { break };
            symbols[i - 1].end = symbols[i].end;
            symbols.remove(i);
        }
        symbols
    }

    #[test]
    fn equals_the_quadratic_definition_on_random_words_and_ranks() {
        // A small alphabet so that pairs repeat and merges chain; priorities
        // from a hash of the pair, with ties, some pairs unranked.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for case in 0..300 {
            let salt = next();
            let len = (next() % 40) as usize;
            let text: String = (0..len)
                .map(|_| ['a', 'b', 'c', 'é'][(next() % 4) as usize])
                .collect();
            let rank = |merged: &str, split: usize| {
                let h = merged.bytes().chain([split as u8]).fold(salt, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
                });
                (h % 5 != 0 && merged.len() <= 12).then_some(h % 7)
            };
            assert_eq!(
                merge(&text, rank),
                naive(&text, rank),
                "case {case}: {text:?}"
            );
        }
    }

    #[test]
    fn a_megabyte_word_merges_into_its_pieces() {
        // The size a request may carry (its speed is benched, not tested:
        // `cargo bench -p ciel-engine --bench tokenizer`).
        let text = "a".repeat(1 << 20);
        let rank =
            |merged: &str, _split: usize| (merged.len() <= 8).then_some(Reverse(merged.len()));
        let ranges = merge(&text, rank);
        assert_eq!(ranges.len(), (1 << 20) / 8);
        assert!(ranges.iter().all(|r| r.len() == 8));
    }
}
