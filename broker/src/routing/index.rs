//! Binding indexes, so routing a record costs about its number of words, not the number of
//! bindings: a hash map for `direct` keys and a word trie for `topic` patterns (as RabbitMQ does),
//! where `*` and `#` are edges of their own. The trie gives the same answers as
//! [`TopicPattern::matches`](super::rules::TopicPattern::matches), which the tests check.

use std::collections::HashMap;

/// A trie over pattern words; each node lists the bindings whose pattern ends there.
#[derive(Debug, Default)]
pub struct TopicTrie {
    words: HashMap<String, TopicTrie>,
    one: Option<Box<TopicTrie>>,
    any: Option<Box<TopicTrie>>,
    bindings: Vec<usize>,
}

impl TopicTrie {
    /// Adds binding `id` with pattern `pattern`.
    pub fn insert(&mut self, pattern: &str, id: usize) {
        let mut node = self;
        let mut last_any = false;
        for w in pattern.split('.') {
            // `#.#` matches what `#` matches.
            if w == "#" && last_any {
                continue;
            }
            last_any = w == "#";
            node = match w {
                "*" => node.one.get_or_insert_with(Box::default),
                "#" => node.any.get_or_insert_with(Box::default),
                w => node.words.entry(w.to_owned()).or_default(),
            };
        }
        node.bindings.push(id);
    }

    /// Appends to `out` every binding whose pattern matches the routing key (possibly more than
    /// once; the caller deduplicates). `words` is scratch space reused between records.
    pub fn matches(&self, key: &str, words: &mut Vec<(usize, usize)>, out: &mut Vec<usize>) {
        words.clear();
        let mut start = 0;
        for w in key.split('.') {
            words.push((start, start + w.len()));
            start += w.len() + 1;
        }
        self.walk(key, words, out);
    }

    /// `words` are the byte ranges of the key's words not consumed yet.
    fn walk(&self, key: &str, words: &[(usize, usize)], out: &mut Vec<usize>) {
        if let Some(any) = &self.any {
            // `#` takes zero or more of the remaining words.
            for k in 0..=words.len() {
                any.walk(key, &words[k..], out);
            }
        }
        let Some((&(a, b), rest)) = words.split_first() else {
            out.extend_from_slice(&self.bindings);
            return;
        };
        if let Some(n) = self.words.get(&key[a..b]) {
            n.walk(key, rest, out);
        }
        if let Some(n) = &self.one {
            n.walk(key, rest, out);
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
            trie.matches(&key, &mut Vec::new(), &mut got);
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
