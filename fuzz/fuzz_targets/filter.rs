//! Fuzz target: native filter expressions (broker/src/filter.rs), which arrive from the network in
//! every fetch: `Filter::parse`, then `Filter::matches` on every record of a batch.
//!
//! Input: up to the first 0xff byte, the expression (lossily UTF-8); the rest builds the batch.
//! Beyond not panicking: the broker's zero-copy evaluation agrees with a plain one over the owned
//! record (`Record`, as a client sees it), and the tree is no deeper than the parser's nesting
//! limit allows.

#![no_main]

use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use quiver_broker::filter::Filter;
use quiver_proto::Record;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (expr, rest) = data.split_at(split);
    let expr = String::from_utf8_lossy(expr);
    let Ok(filter) = Filter::parse(&expr) else {
        return;
    };
    // Nesting is capped at parse time (64 levels of `!` or parentheses; a parenthesis adds an
    // `or` and an `and` node): the evaluator recurses over the same tree.
    assert!(
        depth(&filter) <= 3 * 64 + 3,
        "filter nested {} deep",
        depth(&filter)
    );
    let mut u = Unstructured::new(rest.get(1..).unwrap_or(&[]));
    let Ok(Some(batch)) = quiver_fuzz::batch(&mut u) else {
        return;
    };
    for r in batch.records() {
        let owned = r.to_record(batch.bytes());
        assert_eq!(
            filter.matches(&r),
            reference(&filter, &owned),
            "{filter:?} on {owned:?}"
        );
    }
});

/// The filter language's meaning (docs/filters.md) over an owned record.
fn reference(f: &Filter, r: &Record) -> bool {
    let has = |t: &String| r.tags.contains(t);
    match f {
        Filter::Tag(t) => has(t),
        Filter::AnyTag(set) => set.iter().any(has),
        Filter::AllTags(set) => set.iter().all(has),
        // The first header of that name decides.
        Filter::Header(name, value) => r.header(name).is_some_and(|v| v[..] == value[..]),
        Filter::Key(k) => r.key.as_deref() == Some(&k[..]),
        Filter::Not(inner) => !reference(inner, r),
        Filter::And(fs) => fs.iter().all(|f| reference(f, r)),
        Filter::Or(fs) => fs.iter().any(|f| reference(f, r)),
    }
}

fn depth(f: &Filter) -> usize {
    match f {
        Filter::Not(inner) => 1 + depth(inner),
        Filter::And(fs) | Filter::Or(fs) => 1 + fs.iter().map(depth).max().unwrap_or(0),
        _ => 1,
    }
}
