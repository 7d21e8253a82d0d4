//! The state of one partition consumed in queue mode by one share group: which records are leased
//! to whom until when, which wait for (re)delivery, and how often each was delivered. Pure state,
//! no I/O: the caller reads the log and writes dead letters.
//!
//! Offsets below `start` are settled (acked or dead-lettered); `start..next` holds the records in
//! flight, each either ready (from a time on) or leased; `next..` has never been handed out. Only
//! records in flight have entries, and at most [`WINDOW`] of them, so memory is bounded however
//! far behind the group is (settled records inside `start..next` have no entry).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

/// Most records of one partition in flight at once (leased or waiting for redelivery).
pub const WINDOW: u64 = 20_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for (re)delivery from this time on.
    Ready(Instant),
    Leased {
        consumer: Arc<str>,
        deadline: Instant,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    deliveries: u32,
    state: State,
}

/// A record that has used up its deliveries and must go to the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    pub offset: u64,
    pub deliveries: u32,
    pub reason: String,
}

/// What an ack, nack or release did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    pub settled: u64,
    pub stale: u64,
    pub dead: Vec<Dead>,
}

#[derive(Debug)]
pub struct SharePartition {
    start: u64,
    next: u64,
    entries: BTreeMap<u64, Entry>,
    /// Ready entries by the time they become deliverable.
    ready: BTreeSet<(Instant, u64)>,
    /// Leased entries by lease deadline.
    leases: BTreeSet<(Instant, u64)>,
    pub max_deliveries: u32,
    pub dead_lettered: u64,
    /// Leases of a record delivered before (after a nack or an expired lease), since start.
    pub redelivered: u64,
}

impl SharePartition {
    pub fn new(start: u64) -> SharePartition {
        SharePartition {
            start,
            next: start,
            entries: BTreeMap::new(),
            ready: BTreeSet::new(),
            leases: BTreeSet::new(),
            max_deliveries: 5,
            dead_lettered: 0,
            redelivered: 0,
        }
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    pub fn next(&self) -> u64 {
        self.next
    }

    pub fn leased(&self) -> u64 {
        self.leases.len() as u64
    }

    pub fn waiting(&self) -> u64 {
        self.ready.len() as u64
    }

    /// Records below `log_start` are gone from the log (retention): forget them.
    pub fn skip_to(&mut self, log_start: u64) {
        if self.start >= log_start {
            return;
        }
        let keep = self.entries.split_off(&log_start);
        for (o, e) in std::mem::replace(&mut self.entries, keep) {
            self.unindex(o, &e.state);
        }
        self.next = self.next.max(log_start);
        self.advance();
    }

    /// Leases that ran out: the record is ready again, or dead when out of deliveries.
    pub fn expire(&mut self, now: Instant) -> Vec<Dead> {
        let mut dead = Vec::new();
        while let Some(&(deadline, offset)) = self.leases.first() {
            if deadline > now {
                break;
            }
            self.leases.pop_first();
            let Some(e) = self.entries.get_mut(&offset) else {
                continue;
            };
            if e.deliveries >= self.max_deliveries {
                let deliveries = e.deliveries;
                self.entries.remove(&offset);
                dead.push(Dead {
                    offset,
                    deliveries,
                    reason: format!(
                        "visibility timeout expired; {deliveries} deliveries without an ack"
                    ),
                });
            } else {
                e.state = State::Ready(now);
                self.ready.insert((now, offset));
            }
        }
        self.advance();
        dead
    }

    /// When the next waiting record becomes ready or the next lease runs out, if any.
    pub fn next_event(&self) -> Option<Instant> {
        let r = self.ready.first().map(|(t, _)| *t);
        let l = self.leases.first().map(|(t, _)| *t);
        match (r, l) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Leases up to `max` records: first those waiting for redelivery (oldest first), then new
    /// ones below `log_end` within the window. Returns `(offset, delivery count)` in offset order.
    pub fn lease(
        &mut self,
        consumer: &Arc<str>,
        now: Instant,
        deadline: Instant,
        max: usize,
        log_end: u64,
    ) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(&(at, offset)) = self.ready.first() else {
                break;
            };
            if at > now {
                break;
            }
            self.ready.pop_first();
            out.push((offset, self.take(offset, consumer, deadline)));
        }
        // The window counts records in flight, not the distance from `start`: one record held
        // back (a long nack delay, a dead consumer's long lease) must not stop the others.
        while out.len() < max && self.next < log_end && (self.entries.len() as u64) < WINDOW {
            let offset = self.next;
            self.next += 1;
            self.entries.insert(
                offset,
                Entry {
                    deliveries: 0,
                    state: State::Ready(now),
                },
            );
            out.push((offset, self.take(offset, consumer, deadline)));
        }
        out.sort_unstable();
        out
    }

    fn take(&mut self, offset: u64, consumer: &Arc<str>, deadline: Instant) -> u32 {
        let Some(e) = self.entries.get_mut(&offset) else {
            return 0;
        };
        e.deliveries += 1;
        if e.deliveries > 1 {
            self.redelivered += 1;
        }
        e.state = State::Leased {
            consumer: consumer.clone(),
            deadline,
        };
        self.leases.insert((deadline, offset));
        e.deliveries
    }

    /// Settles records leased to `consumer` in `first..=last`.
    pub fn ack(&mut self, consumer: &str, first: u64, last: u64) -> Settled {
        let mut out = Settled::default();
        for offset in self.leased_to(consumer, first, last, &mut out.stale) {
            if let Some(e) = self.entries.remove(&offset) {
                self.unindex(offset, &e.state);
                out.settled += 1;
            }
        }
        self.advance();
        out
    }

    /// Gives records back for redelivery from `ready_at`; `counts` says whether this delivery
    /// counts (nack) or not (release). A nacked record out of deliveries is dead.
    pub fn give_back(
        &mut self,
        consumer: &str,
        first: u64,
        last: u64,
        ready_at: Instant,
        counts: bool,
    ) -> Settled {
        let mut out = Settled::default();
        for offset in self.leased_to(consumer, first, last, &mut out.stale) {
            let Some(mut e) = self.entries.remove(&offset) else {
                continue;
            };
            self.unindex(offset, &e.state);
            out.settled += 1;
            if !counts {
                e.deliveries = e.deliveries.saturating_sub(1);
            } else if e.deliveries >= self.max_deliveries {
                out.dead.push(Dead {
                    offset,
                    deliveries: e.deliveries,
                    reason: format!("rejected (nack) by a consumer; {} deliveries", e.deliveries),
                });
                continue;
            }
            e.state = State::Ready(ready_at);
            self.ready.insert((ready_at, offset));
            self.entries.insert(offset, e);
        }
        self.advance();
        out
    }

    /// Puts a record whose dead-lettering failed back in line, so it is not lost.
    pub fn restore(&mut self, d: &Dead, now: Instant) {
        // The dead entry was removed and `start` may have moved past it already.
        if d.offset >= self.next || self.entries.contains_key(&d.offset) {
            return;
        }
        self.start = self.start.min(d.offset);
        self.entries.insert(
            d.offset,
            Entry {
                deliveries: d.deliveries.saturating_sub(1),
                state: State::Ready(now),
            },
        );
        self.ready.insert((now, d.offset));
    }

    /// Offsets in `first..=last` leased to `consumer`; counts the others that were named but are
    /// not (settled already, expired and re-leased, or never handed out) as stale.
    fn leased_to(&self, consumer: &str, first: u64, last: u64, stale: &mut u64) -> Vec<u64> {
        if first > last {
            return Vec::new();
        }
        let mut mine = Vec::new();
        for (o, e) in self.entries.range(first..=last) {
            match &e.state {
                State::Leased { consumer: c, .. } if &**c == consumer => mine.push(*o),
                _ => {}
            }
        }
        // Bounded by what was in flight, so a hostile range cannot make this loop long.
        let named = last.min(self.next.saturating_sub(1)).saturating_sub(first) + 1;
        let named = if first >= self.next { 0 } else { named };
        *stale += named.saturating_sub(mine.len() as u64);
        mine
    }

    fn unindex(&mut self, offset: u64, state: &State) {
        match state {
            State::Ready(at) => self.ready.remove(&(*at, offset)),
            State::Leased { deadline, .. } => self.leases.remove(&(*deadline, offset)),
        };
    }

    /// Moves `start` up to the first record still in flight.
    fn advance(&mut self) {
        self.start = self.entries.keys().next().copied().unwrap_or(self.next);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn c(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn leases_are_exclusive_and_acks_advance_the_start() {
        let mut sp = SharePartition::new(0);
        let now = Instant::now();
        let later = now + Duration::from_secs(30);
        let a = sp.lease(&c("a"), now, later, 3, 10);
        assert_eq!(a, vec![(0, 1), (1, 1), (2, 1)]);
        let b = sp.lease(&c("b"), now, later, 3, 10);
        assert_eq!(b, vec![(3, 1), (4, 1), (5, 1)]);
        // b cannot ack a's records.
        let s = sp.ack("b", 0, 5);
        assert_eq!((s.settled, s.stale), (3, 3));
        assert_eq!(sp.start(), 0);
        let s = sp.ack("a", 0, 2);
        assert_eq!((s.settled, s.stale), (3, 0));
        assert_eq!(sp.start(), 6);
        // A hostile range costs nothing and settles nothing.
        let s = sp.ack("a", 0, u64::MAX);
        assert_eq!(s.settled, 0);
    }

    #[test]
    fn nack_redelivers_and_a_poison_record_dies_without_blocking_others() {
        let mut sp = SharePartition::new(0);
        sp.max_deliveries = 2;
        let now = Instant::now();
        let later = now + Duration::from_secs(30);
        sp.lease(&c("a"), now, later, 2, 2);
        let s = sp.give_back("a", 0, 0, now, true);
        assert_eq!(s.settled, 1);
        assert!(s.dead.is_empty());
        // Record 0 comes back with its count; record 1 is still leased to a.
        assert_eq!(sp.redelivered, 0);
        assert_eq!(sp.lease(&c("b"), now, later, 5, 2), vec![(0, 2)]);
        assert_eq!(sp.redelivered, 1, "the second lease of offset 0");
        let s = sp.give_back("b", 0, 0, now, true);
        assert_eq!(s.dead.len(), 1);
        assert_eq!(s.dead[0].deliveries, 2);
        assert!(s.dead[0].reason.contains("nack"), "{}", s.dead[0].reason);
        sp.ack("a", 1, 1);
        assert_eq!(sp.start(), 2);
    }

    #[test]
    fn expired_leases_return_and_release_does_not_count() {
        let mut sp = SharePartition::new(5);
        sp.max_deliveries = 2;
        let now = Instant::now();
        let soon = now + Duration::from_millis(10);
        sp.lease(&c("a"), now, soon, 2, 100);
        assert_eq!(sp.next_event(), Some(soon));
        assert!(sp.expire(now).is_empty());
        assert!(sp.expire(soon).is_empty());
        // Both back, delivered once each; a release does not use up a delivery.
        let got = sp.lease(&c("b"), soon, soon + Duration::from_secs(9), 2, 100);
        assert_eq!(got, vec![(5, 2), (6, 2)]);
        sp.give_back("b", 5, 5, soon, false);
        assert_eq!(sp.lease(&c("b"), soon, soon, 1, 100), vec![(5, 2)]);
        // Out of deliveries on expiry: dead.
        let dead = sp.expire(soon + Duration::from_secs(10));
        assert_eq!(
            dead.iter().map(|d| d.offset).collect::<Vec<_>>(),
            vec![5, 6]
        );
        assert_eq!(sp.start(), 7);
    }

    #[test]
    fn a_record_whose_dead_letter_failed_is_restored_even_below_start() {
        let mut sp = SharePartition::new(0);
        sp.max_deliveries = 1;
        let now = Instant::now();
        sp.lease(&c("a"), now, now, 2, 2);
        let s = sp.give_back("a", 0, 0, now, true);
        assert_eq!(s.dead.len(), 1);
        sp.ack("a", 1, 1);
        assert_eq!(sp.start(), 2, "both settled as far as the state knows");
        sp.restore(&s.dead[0], now);
        assert_eq!(sp.start(), 0);
        assert_eq!(sp.lease(&c("b"), now, now, 5, 2), vec![(0, 1)]);
    }

    #[test]
    fn one_held_back_record_does_not_stop_the_window() {
        let mut sp = SharePartition::new(0);
        let now = Instant::now();
        let far = now + Duration::from_secs(3600);
        sp.lease(&c("a"), now, far, 1, u64::MAX);
        // Record 0 stays leased; many more are leased and acked past the window.
        for _ in 0..3 {
            let got = sp.lease(&c("b"), now, far, WINDOW as usize, u64::MAX);
            assert!(!got.is_empty());
            sp.ack("b", got[0].0, got.last().unwrap().0);
        }
        assert_eq!(sp.start(), 0);
        assert!(sp.next() > 2 * WINDOW);
    }

    #[test]
    fn window_bounds_what_is_in_flight_and_retention_skips() {
        let mut sp = SharePartition::new(0);
        let now = Instant::now();
        let got = sp.lease(&c("a"), now, now, usize::MAX, u64::MAX);
        assert_eq!(got.len() as u64, WINDOW);
        sp.skip_to(WINDOW / 2);
        assert_eq!(sp.start(), WINDOW / 2);
        assert_eq!(sp.leased(), WINDOW / 2);
    }
}
