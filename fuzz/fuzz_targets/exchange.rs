//! Fuzz target: exchange patterns and routing (broker/src/routing/): topic patterns in the word
//! trie (`TopicTrie`, `*` one word, `#` zero or more), binding checks (`check_binding`, what
//! `exchange bind` accepts), and an exchange of each kind routing a batch, then the per-topic
//! record selection the produce path appends.
//!
//! The trie and the exchange are checked against a direct reading of the AMQP rules
//! (docs/routing.md): a word-by-word matcher, key equality, header conditions. Patterns and keys
//! are sometimes long (up to the 255-byte binding key limit, keys of up to 200 words), because a
//! pattern with many `#` must not make routing a record cost more than polynomial time.

#![no_main]

use std::collections::{BTreeMap, HashMap};

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use quiver_broker::fuzzing;
use quiver_broker::plugins::pipeline::select;
use quiver_broker::routing::index::{TopicTrie, TrieScratch};
use quiver_broker::routing::{Binding, ExchangeKind, HeaderMatch, RoutingError};
use quiver_fuzz::{word, HEADER_NAMES, WORDS};

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

fn run(u: &mut Unstructured<'_>) -> Result<()> {
    // Patterns and keys alone, against the reference matcher.
    let patterns: Vec<String> = (0..u.int_in_range(1..=4)?)
        .map(|_| pattern(u))
        .collect::<Result<_>>()?;
    let key = routing_key(u)?;
    let mut trie = TopicTrie::default();
    for (i, p) in patterns.iter().enumerate() {
        trie.insert(p, i);
    }
    let mut hits = Vec::new();
    trie.matches(&key, &mut TrieScratch::default(), &mut hits);
    hits.sort_unstable();
    hits.dedup();
    let want: Vec<usize> = (0..patterns.len())
        .filter(|&i| topic_matches(&patterns[i], &key))
        .collect();
    assert_eq!(hits, want, "patterns {patterns:?} on key {key:?}");

    // A whole exchange routing a batch.
    let kind = *u.choose(&[
        ExchangeKind::Direct,
        ExchangeKind::Fanout,
        ExchangeKind::Topic,
        ExchangeKind::Headers,
    ])?;
    let mut bindings = Vec::new();
    for _ in 0..u.int_in_range(0..=5)? {
        bindings.push(binding(u)?);
    }
    let alternate = if u.arbitrary()? {
        Some("alt".to_owned())
    } else {
        None
    };
    let (ex, _refused) = fuzzing::exchange(kind, alternate.clone(), bindings);
    let Some(batch) = quiver_fuzz::batch(u)? else {
        return Ok(());
    };
    let bindings = &ex.def.bindings;
    // What the rules say: each record's destination topics.
    let mut want: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut unroutable = 0;
    for (i, r) in batch.records().enumerate() {
        let key = r.key.map(String::from_utf8_lossy).unwrap_or_default();
        let mut any = false;
        for b in bindings {
            let hit = match kind {
                ExchangeKind::Direct => b.key == key,
                ExchangeKind::Fanout => true,
                ExchangeKind::Topic => topic_matches(&b.key, &key),
                ExchangeKind::Headers => {
                    let ok = |(k, v): &(String, String)| r.header(k) == Some(v.as_bytes());
                    match b.header_match {
                        HeaderMatch::All => b.headers.iter().all(ok),
                        HeaderMatch::Any => b.headers.iter().any(ok),
                    }
                }
            };
            if hit {
                any = true;
                let v = want.entry(b.topic.clone()).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
        }
        if !any {
            match &alternate {
                Some(alt) => want.entry(alt.clone()).or_default().push(i),
                None => unroutable += 1,
            }
        }
    }
    match ex.route(&batch) {
        Ok(plan) => {
            assert_eq!(unroutable, 0, "unroutable records were routed");
            assert_eq!(plan, want);
            // What the produce path appends for each topic.
            for indexes in plan.values() {
                let part = select(&batch, indexes).expect("a selection of a valid batch");
                let part = part.expect("a topic with records gets a batch");
                assert_eq!(part.record_count() as usize, indexes.len());
            }
        }
        Err(RoutingError::Unroutable { count, .. }) => assert_eq!(count, unroutable),
        Err(e) => panic!("routing failed: {e}"),
    }
    Ok(())
}

/// A topic pattern: usually a few words, sometimes up to 120 (many `#` and `*`).
fn pattern(u: &mut Unstructured<'_>) -> Result<String> {
    let n = if u.ratio(1, 4)? {
        u.int_in_range(1..=120)?
    } else {
        u.int_in_range(1..=6)?
    };
    let words: Vec<String> = (0..n).map(|_| word(u, WORDS)).collect::<Result<_>>()?;
    Ok(words.join("."))
}

/// A routing key: usually a few words, sometimes up to 200.
fn routing_key(u: &mut Unstructured<'_>) -> Result<String> {
    let n = if u.ratio(1, 4)? {
        u.int_in_range(1..=200)?
    } else {
        u.int_in_range(1..=6)?
    };
    let words: Vec<String> = (0..n).map(|_| word(u, WORDS)).collect::<Result<_>>()?;
    Ok(words.join("."))
}

fn binding(u: &mut Unstructured<'_>) -> Result<Binding> {
    let topic = u.choose(&["t1", "t2", "t3", "alt"])?.to_string();
    let key = if u.ratio(1, 4)? {
        String::new()
    } else {
        pattern(u)?
    };
    let mut headers = Vec::new();
    if u.arbitrary()? {
        for _ in 0..u.int_in_range(0..=3)? {
            headers.push((word(u, HEADER_NAMES)?, word(u, WORDS)?));
        }
    }
    let header_match = if u.arbitrary()? {
        HeaderMatch::All
    } else {
        HeaderMatch::Any
    };
    Ok(Binding {
        topic,
        key,
        headers,
        header_match,
    })
}

/// AMQP topic matching, word by word (memoised: `#` makes the naive recursion exponential).
fn topic_matches(pattern: &str, key: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    fn go(
        p: &[&str],
        k: &[&str],
        i: usize,
        j: usize,
        memo: &mut HashMap<(usize, usize), bool>,
    ) -> bool {
        if let Some(&m) = memo.get(&(i, j)) {
            return m;
        }
        let m = match p.get(i) {
            None => j == k.len(),
            Some(&"#") => (j..=k.len()).any(|jj| go(p, k, i + 1, jj, memo)),
            Some(&"*") => j < k.len() && go(p, k, i + 1, j + 1, memo),
            Some(w) => k.get(j) == Some(w) && go(p, k, i + 1, j + 1, memo),
        };
        memo.insert((i, j), m);
        m
    }
    go(&p, &k, 0, 0, &mut HashMap::new())
}
