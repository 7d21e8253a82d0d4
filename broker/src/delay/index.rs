//! The in-memory index of the delay store: pending held runs by due time and by id, cancelled
//! ids, and pending counts per topic. About 70 bytes per held run here (a run is the records of
//! one produce that share a due time); with the delay log's sparse index and allocator slack, a
//! million pending single-record runs measured +139 MB of RSS (BENCHMARKS.md).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// A pending held run: `count` records with ids `base..base + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub due: i64,
    pub count: u32,
    topic: u32,
    pub partition: u32,
    /// Size of the run in the delay log (a round's byte budget).
    pub bytes: u32,
}

/// A run taken for delivery, with what is needed to put it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub base: u64,
    pub run: Run,
    pub topic: Arc<str>,
    /// Ids of the run that were cancelled (not to be delivered).
    pub cancelled: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct Index {
    by_due: BTreeSet<(i64, u64)>,
    runs: BTreeMap<u64, Run>,
    cancelled: HashSet<u64>,
    topics: Vec<Arc<str>>,
    topic_ids: HashMap<Arc<str>, u32>,
    /// Pending (not cancelled) records per topic id.
    pending: HashMap<u32, u64>,
}

impl Index {
    fn topic_id(&mut self, topic: &str) -> u32 {
        if let Some(&id) = self.topic_ids.get(topic) {
            return id;
        }
        let name: Arc<str> = topic.into();
        let id = self.topics.len() as u32;
        self.topics.push(name.clone());
        self.topic_ids.insert(name, id);
        id
    }

    /// Adds a pending run (ignored if that base is already pending).
    pub fn insert(&mut self, base: u64, topic: &str, at: (u32, i64), count: u32, bytes: u32) {
        let (partition, due) = at;
        if self.runs.contains_key(&base) || count == 0 {
            return;
        }
        let topic = self.topic_id(topic);
        self.runs.insert(
            base,
            Run {
                due,
                count,
                topic,
                partition,
                bytes,
            },
        );
        self.by_due.insert((due, base));
        *self.pending.entry(topic).or_default() += count as u64;
    }

    /// The run holding `id`, if pending.
    fn run_of(&self, id: u64) -> Option<(u64, Run)> {
        let (&base, &run) = self.runs.range(..=id).next_back()?;
        (id < base + run.count as u64).then_some((base, run))
    }

    /// Whether `id` is a pending, uncancelled record; its topic if so.
    pub fn pending_topic(&self, id: u64) -> Option<Arc<str>> {
        let (_, run) = self.run_of(id)?;
        (!self.cancelled.contains(&id)).then(|| self.topics[run.topic as usize].clone())
    }

    /// Marks `id` cancelled; a run with every record cancelled is dropped. False if `id` is not
    /// pending.
    pub fn cancel(&mut self, id: u64) -> bool {
        let Some((base, run)) = self.run_of(id) else {
            return false;
        };
        if !self.cancelled.insert(id) {
            return false;
        }
        self.decrement(run.topic, 1);
        let ids = base..base + run.count as u64;
        if ids.clone().all(|i| self.cancelled.contains(&i)) {
            self.runs.remove(&base);
            self.by_due.remove(&(run.due, base));
            for i in ids {
                self.cancelled.remove(&i);
            }
        }
        true
    }

    fn decrement(&mut self, topic: u32, n: u64) {
        if let Some(p) = self.pending.get_mut(&topic) {
            *p = p.saturating_sub(n);
            if *p == 0 {
                self.pending.remove(&topic);
            }
        }
    }

    /// Removes a run (delivered), whatever its state.
    pub fn remove(&mut self, base: u64) -> Option<Taken> {
        let run = self.runs.remove(&base)?;
        self.by_due.remove(&(run.due, base));
        let cancelled: Vec<u64> = (base..base + run.count as u64)
            .filter(|i| self.cancelled.remove(i))
            .collect();
        self.decrement(run.topic, run.count as u64 - cancelled.len() as u64);
        Some(Taken {
            base,
            run,
            topic: self.topics[run.topic as usize].clone(),
            cancelled,
        })
    }

    /// Puts a taken run back (its delivery failed).
    pub fn restore(&mut self, t: Taken) {
        let Taken {
            base,
            run,
            topic,
            cancelled,
        } = t;
        self.insert(base, &topic, (run.partition, run.due), run.count, run.bytes);
        for id in cancelled {
            self.cancel(id);
        }
    }

    /// Removes every run bound for `topic` (deleted); returns how many records were pending.
    pub fn remove_topic(&mut self, topic: &str) -> u64 {
        let Some(&id) = self.topic_ids.get(topic) else {
            return 0;
        };
        let bases: Vec<u64> = self
            .runs
            .iter()
            .filter(|(_, r)| r.topic == id)
            .map(|(&b, _)| b)
            .collect();
        let before = self.pending_for(topic);
        for b in bases {
            self.remove(b);
        }
        before
    }

    /// The earliest due time pending.
    pub fn next_due(&self) -> Option<i64> {
        self.by_due.first().map(|&(due, _)| due)
    }

    /// Takes runs due at or before `now`, earliest first, while `budget(run)` allows.
    pub fn take_due(&mut self, now: i64, mut budget: impl FnMut(&Run) -> bool) -> Vec<Taken> {
        let mut out = Vec::new();
        while let Some(&(due, base)) = self.by_due.first() {
            let Some(run) = self.runs.get(&base) else {
                self.by_due.pop_first();
                continue;
            };
            if due > now || !budget(run) {
                break;
            }
            if let Some(t) = self.remove(base) {
                out.push(t);
            }
        }
        out
    }

    /// The lowest pending id (everything below it is delivered or cancelled).
    pub fn lowest(&self) -> Option<u64> {
        self.runs.first_key_value().map(|(&b, _)| b)
    }

    pub fn pending_for(&self, topic: &str) -> u64 {
        self.topic_ids
            .get(topic)
            .and_then(|id| self.pending.get(id))
            .copied()
            .unwrap_or(0)
    }

    pub fn pending_total(&self) -> u64 {
        self.pending.values().sum()
    }

    pub fn runs(&self) -> usize {
        self.runs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_come_out_in_due_order_then_id() {
        let mut ix = Index::default();
        ix.insert(10, "a", (0, 300), 2, 100);
        ix.insert(0, "a", (0, 200), 1, 100);
        ix.insert(5, "b", (1, 200), 3, 100);
        assert_eq!(ix.pending_for("a"), 3);
        assert_eq!(ix.next_due(), Some(200));
        let got: Vec<u64> = ix.take_due(250, |_| true).iter().map(|t| t.base).collect();
        assert_eq!(got, vec![0, 5]);
        assert_eq!(ix.pending_for("b"), 0);
        assert_eq!(ix.lowest(), Some(10));
        assert!(ix.take_due(299, |_| true).is_empty());
        assert_eq!(ix.take_due(300, |_| true).len(), 1);
        assert_eq!(ix.pending_total(), 0);
    }

    #[test]
    fn cancel_marks_records_and_drops_fully_cancelled_runs() {
        let mut ix = Index::default();
        ix.insert(100, "t", (0, 5), 3, 100);
        assert!(ix.cancel(101));
        assert!(!ix.cancel(101), "twice");
        assert!(!ix.cancel(103), "past the run");
        assert!(!ix.cancel(99), "before the run");
        assert_eq!(ix.pending_for("t"), 2);
        assert_eq!(ix.pending_topic(101), None);
        assert_eq!(ix.pending_topic(100).as_deref(), Some("t"));
        let taken = ix.take_due(5, |_| true);
        assert_eq!(taken[0].cancelled, vec![101]);
        ix.restore(taken[0].clone());
        assert_eq!(ix.pending_for("t"), 2);
        assert!(ix.cancel(100));
        assert!(ix.cancel(102));
        assert_eq!(ix.runs(), 0, "all three cancelled");
        assert_eq!(ix.pending_total(), 0);
    }

    #[test]
    fn a_deleted_topic_takes_its_runs_along() {
        let mut ix = Index::default();
        ix.insert(0, "gone", (0, 1), 2, 100);
        ix.insert(2, "kept", (0, 1), 1, 100);
        ix.insert(3, "gone", (1, 5), 1, 100);
        ix.cancel(1);
        assert_eq!(ix.remove_topic("gone"), 2);
        assert_eq!(ix.runs(), 1);
        assert_eq!(ix.pending_total(), 1);
        assert_eq!(ix.remove_topic("never"), 0);
    }

    #[test]
    fn the_budget_bounds_a_round() {
        let mut ix = Index::default();
        for i in 0..10 {
            ix.insert(i, "t", (0, 1), 1, 100);
        }
        let mut n = 0;
        assert_eq!(
            ix.take_due(1, |_| {
                n += 1;
                n <= 4
            })
            .len(),
            4
        );
        assert_eq!(ix.runs(), 6);
    }
}
