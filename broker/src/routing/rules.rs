//! Exchange matching rules (AMQP semantics): which bindings of an exchange a record matches, by
//! kind — `direct` (binding key equals the routing key), `fanout` (every binding), `topic` (binding
//! key is a pattern over the routing key's `.`-separated words: `*` one word, `#` zero or more) and
//! `headers` (the binding's header values must all / any equal the record's).
//!
//! Words are what `split('.')` gives, so empty words count: `""` is one empty word and `a..b` has
//! three words. `TopicPattern` (tests only) is the reference definition of topic matching (a word DP, one
//! pattern at a time); routing uses the trie in `index.rs`, and the tests hold both to this table.

pub use quiver_proto::routing::{ExchangeKind, HeaderMatch};

#[cfg(test)]
/// One word of a topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    /// `*`: exactly one word.
    One,
    /// `#`: zero or more words.
    Any,
}

#[cfg(test)]
/// A parsed topic pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    tokens: Vec<Token>,
}

#[cfg(test)]
impl TopicPattern {
    pub fn parse(pattern: &str) -> TopicPattern {
        let mut tokens: Vec<Token> = Vec::new();
        for w in pattern.split('.') {
            let t = match w {
                "*" => Token::One,
                "#" => Token::Any,
                w => Token::Word(w.to_owned()),
            };
            // `#.#` matches what `#` matches: keep one, so matching stays linear in practice.
            if t == Token::Any && tokens.last() == Some(&Token::Any) {
                continue;
            }
            tokens.push(t);
        }
        TopicPattern { tokens }
    }

    /// Whether the routing key's words match. `scratch` is reused between calls (no allocation
    /// per record once it has grown).
    pub fn matches(&self, key: &str, scratch: &mut Vec<bool>) -> bool {
        let words: usize = key.split('.').count();
        // reach[j]: the tokens so far can consume exactly the first j words.
        scratch.clear();
        scratch.resize(words + 1, false);
        scratch[0] = true;
        for t in &self.tokens {
            match t {
                Token::Any => {
                    let mut any = false;
                    for r in scratch.iter_mut() {
                        any |= *r;
                        *r = any;
                    }
                }
                Token::One => shift(scratch, |_| true, key),
                Token::Word(w) => shift(scratch, |word| word == w, key),
            }
            if !scratch.iter().any(|r| *r) {
                return false;
            }
        }
        scratch[words]
    }
}

#[cfg(test)]
/// Advances every reachable position by one word that satisfies `ok`.
fn shift(reach: &mut [bool], ok: impl Fn(&str) -> bool, key: &str) {
    let mut prev = false;
    for (j, word) in std::iter::once("").chain(key.split('.')).enumerate() {
        let here = reach[j];
        reach[j] = j > 0 && prev && ok(word);
        prev = here;
    }
}

/// Whether a record's headers satisfy a `headers` binding.
pub fn headers_match<'a>(
    wanted: &[(String, String)],
    how: HeaderMatch,
    mut record: impl FnMut(&str) -> Option<&'a [u8]>,
) -> bool {
    let mut hit = wanted
        .iter()
        .map(|(k, v)| record(k).is_some_and(|got| got == v.as_bytes()));
    match how {
        HeaderMatch::All => hit.all(|h| h),
        HeaderMatch::Any => hit.any(|h| h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns_table() {
        // (pattern, routing key, matches)
        let table: &[(&str, &str, bool)] = &[
            ("a.b.c", "a.b.c", true),
            ("a.b.c", "a.b", false),
            ("a.b", "a.b.c", false),
            ("*", "a", true),
            ("*", "", true),
            ("*", "a.b", false),
            ("a.*", "a", false),
            ("a.*", "a.b", true),
            ("a.*", "a.", true),
            ("a.*.c", "a..c", true),
            ("a.*.c", "a.c", false),
            ("#", "", true),
            ("#", "a", true),
            ("#", "a.b.c", true),
            ("#.a", "a", true),
            ("#.a", "x.y.a", true),
            ("#.a", "a.x", false),
            ("a.#", "a", true),
            ("a.#", "a.b.c", true),
            ("a.#", "b.a", false),
            ("#.a.#", "a", true),
            ("#.a.#", "x.a.y.z", true),
            ("#.a.#", "x.b.y", false),
            ("#.#", "", true),
            ("#.#", "a.b", true),
            ("a.#.z", "a.z", true),
            ("a.#.z", "a.b.c.z", true),
            ("a.#.z", "a.b.c", false),
            ("*.#", "", true),
            ("*.*", "a", false),
            ("#.*", "a.b", true),
            ("orders.*.eu", "orders.created.eu", true),
            ("orders.*.eu", "orders.created.us", false),
            ("", "", true),
            ("", "a", false),
            ("a..b", "a..b", true),
            ("a.*.b", "a..b", true),
        ];
        let mut scratch = Vec::new();
        for (pattern, key, want) in table {
            let got = TopicPattern::parse(pattern).matches(key, &mut scratch);
            assert_eq!(got, *want, "pattern {pattern:?} on key {key:?}");
            // The trie routing uses gives the same answer.
            let mut trie = super::super::index::TopicTrie::default();
            trie.insert(pattern, 0);
            let mut hits = Vec::new();
            trie.matches(key, &mut Default::default(), &mut hits);
            assert_eq!(
                !hits.is_empty(),
                *want,
                "trie: pattern {pattern:?} on key {key:?}"
            );
        }
    }

    #[test]
    fn header_matching_all_and_any() {
        let wanted = vec![
            ("region".to_string(), "eu".to_string()),
            ("kind".to_string(), "order".to_string()),
        ];
        let rec = |k: &str| -> Option<&'static [u8]> {
            match k {
                "region" => Some(b"eu"),
                "kind" => Some(b"refund"),
                _ => None,
            }
        };
        assert!(!headers_match(&wanted, HeaderMatch::All, rec));
        assert!(headers_match(&wanted, HeaderMatch::Any, rec));
        assert!(headers_match(&[], HeaderMatch::All, rec));
        assert!(!headers_match(&[], HeaderMatch::Any, rec));
    }

    #[test]
    fn kinds_parse() {
        assert_eq!("topic".parse::<ExchangeKind>(), Ok(ExchangeKind::Topic));
        assert!("nope"
            .parse::<ExchangeKind>()
            .unwrap_err()
            .contains("direct"));
    }
}
