//! Where a router sends records: [`Destinations`] collects the topics the author names for each
//! record, interning every name once per batch, and becomes the flat [`Routes`] lists that the
//! `router` world's `route` export returns.

use std::collections::BTreeMap;

/// The destinations of one batch, in the shape of the WIT `types.routes` record: `topics` names
/// each destination once; record i goes to the `counts[i]` topics whose indexes into `topics` come
/// next in `targets` (after those of records 0..i). A count of 0 drops the record.
///
/// A plain Rust struct so native tests can inspect it; the wasm glue converts it to the
/// wit-bindgen type at the component boundary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    pub topics: Vec<String>,
    pub counts: Vec<u32>,
    pub targets: Vec<u32>,
}

impl Routes {
    /// Every record's topics, in batch order (an empty list for a dropped record): the readable
    /// form for tests. `None` when the three lists do not fit together (a target past the end of
    /// `topics`, or `targets` shorter or longer than the counts say), which never happens for
    /// routes built by [`Destinations`].
    pub fn per_record(&self) -> Option<Vec<Vec<&str>>> {
        let mut records = Vec::with_capacity(self.counts.len());
        let mut start = 0usize;
        for &count in &self.counts {
            let end = start.checked_add(usize::try_from(count).ok()?)?;
            let topics = self
                .targets
                .get(start..end)?
                .iter()
                .map(|&t| {
                    self.topics
                        .get(usize::try_from(t).ok()?)
                        .map(String::as_str)
                })
                .collect::<Option<Vec<&str>>>()?;
            records.push(topics);
            start = end;
        }
        (start == self.targets.len()).then_some(records)
    }
}

/// The topics the current record goes to, handed to a router function as `&mut Destinations`.
///
/// Call [`to`](Destinations::to) once per topic; a record routed nowhere is dropped. The same
/// `Destinations` serves the whole batch (the SDK moves it to the next record between calls), so a
/// topic named by many records is stored once and costs one map lookup per use.
#[derive(Debug, Default)]
pub struct Destinations {
    routes: Routes,
    /// Topic name → index into `routes.topics`. A `BTreeMap` rather than a `HashMap`: no random
    /// seed to fetch in wasm, and a handful of topics per batch is the common case.
    index: BTreeMap<String, u32>,
    /// Where the current record's entries begin in `routes.targets`.
    start: usize,
}

impl Destinations {
    /// An empty set of destinations, for calling a router function directly in a test.
    pub fn new() -> Destinations {
        Destinations::default()
    }

    /// Sends the current record to `topic` too. Naming a topic twice for the same record sends it
    /// there once. The broker checks the name (and whether the topic exists) when it appends.
    pub fn to(&mut self, topic: &str) {
        let index = match self.index.get(topic) {
            Some(&index) => index,
            None => {
                // Cannot truncate: 2^32 distinct names would not fit in a wasm32 memory.
                let index = self.routes.topics.len() as u32;
                self.routes.topics.push(topic.to_owned());
                self.index.insert(topic.to_owned(), index);
                index
            }
        };
        // A linear scan: a record rarely has more than a few destinations.
        if !self.routes.targets[self.start..].contains(&index) {
            self.routes.targets.push(index);
        }
    }

    /// How many topics the current record goes to so far.
    pub fn len(&self) -> usize {
        self.routes.targets.len() - self.start
    }

    /// Whether the current record goes nowhere so far (it is dropped if it stays so).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The topics the current record goes to so far, in the order they were added.
    pub fn topics(&self) -> impl Iterator<Item = &str> + '_ {
        self.routes.targets[self.start..]
            .iter()
            .map(|&t| self.routes.topics[t as usize].as_str())
    }

    /// Reserves room for `records` more records' counts.
    pub(crate) fn reserve(&mut self, records: usize) {
        self.routes.counts.reserve(records);
        self.routes.targets.reserve(records);
    }

    /// Closes the current record (its count is the number of topics added since the last call).
    pub(crate) fn end_record(&mut self) {
        // Cannot truncate: the targets of one record are distinct indexes into `topics`.
        self.routes.counts.push(self.len() as u32);
        self.start = self.routes.targets.len();
    }

    /// The routes of the batch, once its last record is closed.
    pub(crate) fn finish(self) -> Routes {
        self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_interned_and_deduplicated_per_record() {
        let mut d = Destinations::new();
        d.to("a");
        d.to("b");
        d.to("a");
        assert_eq!(d.len(), 2);
        assert_eq!(d.topics().collect::<Vec<_>>(), ["a", "b"]);
        d.end_record();
        assert!(d.is_empty());
        d.end_record();
        d.to("b");
        d.to("c");
        d.end_record();
        let routes = d.finish();
        assert_eq!(
            routes,
            Routes {
                topics: vec!["a".into(), "b".into(), "c".into()],
                counts: vec![2, 0, 2],
                targets: vec![0, 1, 1, 2],
            }
        );
        assert_eq!(
            routes.per_record().unwrap(),
            vec![vec!["a", "b"], vec![], vec!["b", "c"]]
        );
    }

    #[test]
    fn inconsistent_routes_are_reported_not_panicked_on() {
        let routes = |counts: Vec<u32>, targets: Vec<u32>| Routes {
            topics: vec!["a".into()],
            counts,
            targets,
        };
        assert!(routes(vec![1], vec![0]).per_record().is_some());
        assert!(routes(vec![2], vec![0]).per_record().is_none());
        assert!(routes(vec![1], vec![0, 0]).per_record().is_none());
        assert!(routes(vec![1], vec![1]).per_record().is_none());
        assert!(routes(vec![u32::MAX, u32::MAX], vec![0])
            .per_record()
            .is_none());
        assert_eq!(Routes::default().per_record(), Some(vec![]));
    }
}
