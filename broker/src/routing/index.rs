//! Binding indexes, so routing a record costs about its number of words, not the number of
//! bindings: a hash map for `direct` keys and a word trie for `topic` patterns (as RabbitMQ does),
//! where `*` and `#` are edges of their own. The trie gives the same answers as
//! [`TopicPattern::matches`](super::rules::TopicPattern::matches), which the tests check.
//!
//! Invariant: a match visits each `#` node at most once per number of words left, so it costs at
//! most (trie nodes × key words) steps whatever the patterns. Without that, patterns such as
//! `#.a.#.a.#.a…` (binding keys may have 255 bytes) made the walk try every way of spreading the
//! key's words over the `#`s: exponential in the number of `#`, for one record.

use std::collections::HashMap;

/// A trie over pattern words; each node lists the bindings whose pattern ends there.
#[derive(Debug, Default)]
pub struct TopicTrie {
    words: HashMap<String, TopicTrie>,
    one: Option<Box<TopicTrie>>,
    any: Option<Box<TopicTrie>>,
    bindings: Vec<usize>,
    /// On a `#` node: its number, for [`TrieScratch::seen`]. On the root: how many `#` nodes the
    /// trie has.
    any_id: usize,
}

/// Scratch space of [`TopicTrie::matches`], reused between records.
#[derive(Debug, Default)]
pub struct TrieScratch {
    /// Byte ranges of the key's words.
    words: Vec<(usize, usize)>,
    /// `seen[id * (words + 1) + left]`: `#` node `id` was entered with `left` words to go.
    seen: Vec<bool>,
}

impl TopicTrie {
    /// Adds binding `id` with pattern `pattern`.
    pub fn insert(&mut self, pattern: &str, id: usize) {
        let mut any_nodes = self.any_id;
        let mut node = &mut *self;
        let mut last_any = false;
        for w in pattern.split('.') {
            // `#.#` matches what `#` matches.
            if w == "#" && last_any {
                continue;
            }
            last_any = w == "#";
            node = match w {
                "*" => node.one.get_or_insert_with(Box::default),
                "#" => {
                    if node.any.is_none() {
                        node.any = Some(Box::new(TopicTrie {
                            any_id: any_nodes,
                            ..TopicTrie::default()
                        }));
                        any_nodes += 1;
                    }
                    node.any.get_or_insert_with(Box::default)
                }
                w => node.words.entry(w.to_owned()).or_default(),
            };
        }
        node.bindings.push(id);
        self.any_id = any_nodes;
    }

    /// Appends to `out` every binding whose pattern matches the routing key (possibly more than
    /// once; the caller deduplicates). `scratch` is reused between records.
    pub fn matches(&self, key: &str, scratch: &mut TrieScratch, out: &mut Vec<usize>) {
        let words = &mut scratch.words;
        words.clear();
        let mut start = 0;
        for w in key.split('.') {
            words.push((start, start + w.len()));
            start += w.len() + 1;
        }
        scratch.seen.clear();
        scratch.seen.resize(self.any_id * (words.len() + 1), false);
        let stride = words.len() + 1;
        self.walk(key, &scratch.words, &mut scratch.seen, stride, out);
    }

    /// `words` are the byte ranges of the key's words not consumed yet.
    fn walk(
        &self,
        key: &str,
        words: &[(usize, usize)],
        seen: &mut [bool],
        stride: usize,
        out: &mut Vec<usize>,
    ) {
        if let Some(any) = &self.any {
            // `#` takes zero or more of the remaining words; what follows it from the same point
            // finds the same bindings again, so each starting point is walked once.
            for k in 0..=words.len() {
                let at = any.any_id * stride + (words.len() - k);
                if let Some(s) = seen.get_mut(at) {
                    if *s {
                        continue;
                    }
                    *s = true;
                }
                any.walk(key, &words[k..], seen, stride, out);
            }
        }
        let Some((&(a, b), rest)) = words.split_first() else {
            out.extend_from_slice(&self.bindings);
            return;
        };
        if let Some(n) = self.words.get(&key[a..b]) {
            n.walk(key, rest, seen, stride, out);
        }
        if let Some(n) = &self.one {
            n.walk(key, rest, seen, stride, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::TopicPattern;
    use super::*;
    use proptest::prelude::*;

    fn word() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(String::new())
        ]
    }

    fn pattern_word() -> impl Strategy<Value = String> {
        prop_oneof![word(), Just("*".to_string()), Just("#".to_string())]
    }

    /// Regression (found writing the `exchange` fuzz target): a 159-byte pattern of 40 `#`s made
    /// matching an 81-word key walk C(80, 40) ≈ 10^23 paths; it now takes a few thousand steps.
    #[test]
    fn many_hashes_match_in_polynomial_time() {
        let pattern = vec!["#.a"; 40].join(".");
        assert!(pattern.len() <= 255, "a binding key the broker accepts");
        let mut trie = TopicTrie::default();
        trie.insert(&pattern, 0);
        let mut scratch = TrieScratch::default();
        let mut reference = Vec::new();
        for (key, want) in [
            (vec!["a"; 80].join("."), true),
            (vec!["a"; 80].join(".") + ".b", false),
            (vec!["a"; 39].join("."), false),
        ] {
            let mut hits = Vec::new();
            trie.matches(&key, &mut scratch, &mut hits);
            assert_eq!(!hits.is_empty(), want, "{key}");
            assert!(hits.len() <= 81, "{} duplicate hits", hits.len());
            let parsed = TopicPattern::parse(&pattern);
            assert_eq!(parsed.matches(&key, &mut reference), want);
        }
    }

    proptest! {
        #[test]
        fn the_trie_agrees_with_the_reference_matcher(
            patterns in proptest::collection::vec(proptest::collection::vec(pattern_word(), 1..5), 1..6),
            key in proptest::collection::vec(word(), 1..6),
        ) {
            let patterns: Vec<String> = patterns.iter().map(|p| p.join(".")).collect();
            let key = key.join(".");
            let mut trie = TopicTrie::default();
            for (i, p) in patterns.iter().enumerate() {
                trie.insert(p, i);
            }
            let mut got = Vec::new();
            trie.matches(&key, &mut TrieScratch::default(), &mut got);
            got.sort_unstable();
            got.dedup();
            let mut scratch = Vec::new();
            let want: Vec<usize> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| TopicPattern::parse(p).matches(&key, &mut scratch))
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(got, want, "patterns {:?} key {:?}", patterns, key);
        }
    }
}
