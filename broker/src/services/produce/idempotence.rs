//! Idempotent produce: per (producer id, topic, partition), the last sequence number appended and
//! the last few batches' outcomes, so a batch sent again (a retry after a lost connection or a
//! timeout) is acknowledged with its first outcome instead of being appended twice.
//!
//! The state lives in memory: a retry that crosses a broker restart is appended again (documented
//! in docs/groups.md). Idle producers are forgotten after [`IDLE`].
//!
//! Fencing (as Kafka's `transactional.id` fences zombies): a producer that takes its id under a
//! fencing key makes every earlier id of that key refused from then on. A session that replaces
//! another (a mirror reconnecting, a restarted edge) so knows that nothing the old one still had
//! on its way, in a dead connection's buffers, lands after it looked at the log. The fence waits
//! for appends of the old ids in progress, so the log it then reads holds everything they wrote.
//! The state is in memory like the rest: a broker restart ends the old connections with it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Produced as Outcome;

/// Batches remembered per producer and partition (a client has at most this many retried at once
/// without a gap; Kafka keeps five as well).
const REMEMBERED: usize = 5;
/// A producer silent for this long is forgotten.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// How many states to create between sweeps for idle ones.
const SWEEP_EVERY: usize = 4096;

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Next in sequence (or the first seen from this producer): append it.
    Append,
    /// Sent before; answer with the first outcome (`None`: older than what is remembered).
    Duplicate(Option<Outcome>),
    /// Sequence numbers were skipped: the batch `expected` has not arrived yet.
    OutOfOrder { expected: u32 },
}

#[derive(Debug, Default)]
pub struct SequenceState {
    /// The last sequence number appended (base + count - 1).
    last: Option<u32>,
    recent: VecDeque<(u32, u32, Outcome)>,
    seen: Option<Instant>,
    /// A newer producer of this one's fencing key took over: every batch is refused.
    pub fenced: bool,
}

impl SequenceState {
    /// Classifies a batch of `count` records starting at `base`.
    pub fn check(&mut self, base: u32, count: u32) -> Verdict {
        self.seen = Some(Instant::now());
        let Some(last) = self.last else {
            return Verdict::Append;
        };
        let expected = last.wrapping_add(1);
        if base == expected {
            return Verdict::Append;
        }
        if let Some((_, _, o)) = self
            .recent
            .iter()
            .find(|(b, c, _)| *b == base && *c == count)
        {
            return Verdict::Duplicate(Some(*o));
        }
        // Behind the last appended (in wrapping order): a resend of an old batch.
        if expected.wrapping_sub(base) <= u32::MAX / 2 {
            Verdict::Duplicate(None)
        } else {
            Verdict::OutOfOrder { expected }
        }
    }

    /// A batch [`SequenceState::check`] let through failed to append (a retriable error, most
    /// likely). A producer seen for the first time then expects that batch next, so a later
    /// batch pipelined behind it is refused as out of order instead of being appended before it.
    pub fn failed(&mut self, base: u32) {
        if self.last.is_none() {
            self.last = Some(base.wrapping_sub(1));
        }
    }

    /// Records a batch appended after [`SequenceState::check`] said `Append`.
    pub fn appended(&mut self, base: u32, count: u32, outcome: Outcome) {
        self.last = Some(base.wrapping_add(count.max(1) - 1));
        if self.recent.len() == REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back((base, count, outcome));
    }
}

type Key = (u64, String, u32);

/// A fencing key: the principal that took it, and the key it named (one principal cannot fence
/// another's producers).
pub type FencingKey = (String, String);

/// The producer that holds a fencing key, and when it took it.
#[derive(Debug, Default)]
struct Holder {
    id: Option<u64>,
    at: Option<Instant>,
}

/// The sequence state of every producer and partition.
#[derive(Debug, Default)]
pub struct Producers {
    states: Mutex<HashMap<Key, Arc<Mutex<SequenceState>>>>,
    created: Mutex<usize>,
    /// Each fencing key's holder; its lock is held through a whole fence, so fences of one key
    /// happen one after the other (a fence that waits for an old id's append holds up the next).
    keys: Mutex<HashMap<FencingKey, Arc<Mutex<Holder>>>>,
    /// Ids fenced by a newer one of their key, and when (forgotten after [`IDLE`], long after
    /// any connection that could still carry their batches has timed out).
    fenced: Mutex<HashMap<u64, Instant>>,
}

impl Producers {
    /// The state to lock while checking and appending one batch (held across the append so a
    /// resend racing the original waits and then sees it as a duplicate).
    pub fn state(&self, producer: u64, topic: &str, partition: u32) -> Arc<Mutex<SequenceState>> {
        let key = (producer, topic.to_owned(), partition);
        let mut states = self.states.lock();
        if let Some(s) = states.get(&key) {
            return s.clone();
        }
        let mut created = self.created.lock();
        *created += 1;
        if *created % SWEEP_EVERY == 0 {
            // A state someone holds (the map's own reference aside) is in use, whatever its age.
            states.retain(|_, s| {
                Arc::strong_count(s) > 1 || s.lock().seen.is_some_and(|t| t.elapsed() < IDLE)
            });
        }
        // A fenced id's new state starts fenced: `fence_id` marks it before it looks here.
        let fenced = self.fenced.lock().contains_key(&producer);
        let state = SequenceState {
            fenced,
            ..SequenceState::default()
        };
        states
            .entry(key)
            .or_insert_with(|| Arc::new(Mutex::new(state)))
            .clone()
    }

    /// Makes `id` the producer of `key` and fences the one before: its batches are refused from
    /// now on ([`SequenceState::fenced`], checked under a partition's state lock), and this
    /// returns only once each of its appends in progress has finished. `current`: the id the
    /// caller holds under the key (a producer taking a new id after a batch failed for good);
    /// if another took the key meanwhile, the caller is the one fenced and this answers false.
    /// `wait: false` (a cluster applying a fence, which must not wait on appends): the old id
    /// is marked fenced without waiting for its appends in progress; its next batch is refused
    /// ([`Producers::is_fenced`]).
    pub fn fence(&self, key: FencingKey, id: u64, current: Option<u64>, wait: bool) -> bool {
        let holder = {
            let mut keys = self.keys.lock();
            if keys.len() % SWEEP_EVERY == SWEEP_EVERY - 1 {
                self.forget_idle_keys(&mut keys);
            }
            keys.entry(key).or_default().clone()
        };
        let mut holder = holder.lock();
        // The same fence again (a write proposed twice, an entry applied again after a crash).
        if holder.id == Some(id) {
            return true;
        }
        // `None` held: the key is new to this broker (or it restarted, ending old connections).
        if current.is_some() && holder.id.is_some() && holder.id != current {
            return false;
        }
        let old = holder.id.replace(id);
        holder.at = Some(Instant::now());
        if let Some(old) = old {
            self.fence_id(old, wait);
        }
        true
    }

    /// Whether `producer` was fenced (checked with its partition state's flag, which a fence
    /// that did not wait may not have set).
    pub fn is_fenced(&self, producer: u64) -> bool {
        self.fenced.lock().contains_key(&producer)
    }

    /// Marks every partition state of `old` fenced. `wait`: for each append in progress (it
    /// holds its state until its batch is in the log); else a state held by one is left to
    /// [`Producers::is_fenced`].
    fn fence_id(&self, old: u64, wait: bool) {
        {
            let mut fenced = self.fenced.lock();
            fenced.retain(|_, at| at.elapsed() < IDLE);
            fenced.insert(old, Instant::now());
        }
        let held: Vec<_> = (self.states.lock().iter())
            .filter(|(k, _)| k.0 == old)
            .map(|(_, s)| s.clone())
            .collect();
        for state in held {
            let locked = match wait {
                true => Some(state.lock()),
                false => state.try_lock(),
            };
            if let Some(mut s) = locked {
                s.fenced = true;
            }
        }
    }

    /// Forgets keys taken long ago whose producer left no state (it is idle, see [`IDLE`]); a
    /// key in use, or whose producer still writes, stays, or a newer one could not fence it.
    fn forget_idle_keys(&self, keys: &mut HashMap<FencingKey, Arc<Mutex<Holder>>>) {
        let states = self.states.lock();
        let live: std::collections::HashSet<u64> = states.keys().map(|k| k.0).collect();
        keys.retain(|_, h| {
            let recent = |h: &Holder| h.at.is_some_and(|t| t.elapsed() < IDLE);
            Arc::strong_count(h) > 1
                || h.try_lock()
                    .is_none_or(|h| recent(&h) || h.id.is_some_and(|id| live.contains(&id)))
        });
    }

    /// Replaces a partition's producer states with what `batches` (the tail of its log, in
    /// order) say: a node that takes the lead of a partition learns the sequences its previous
    /// leader appended, so a producer's retry after the failover is a duplicate, not a second
    /// append. Fenced ids stay fenced.
    pub fn rebuild(&self, topic: &str, partition: u32, batches: &[quiver_proto::BatchHeader]) {
        let fenced = self.fenced.lock().clone();
        let mut states = self.states.lock();
        states.retain(|k, _| !(k.1 == topic && k.2 == partition));
        for h in batches.iter().filter(|h| h.producer_id != 0) {
            let key = (h.producer_id, topic.to_owned(), partition);
            let state = states.entry(key).or_insert_with(|| {
                Arc::new(Mutex::new(SequenceState {
                    fenced: fenced.contains_key(&h.producer_id),
                    ..SequenceState::default()
                }))
            });
            let outcome = Outcome {
                partition,
                base_offset: h.base_offset,
                last_offset: h.last_offset(),
                log_end: h.next_offset(),
                appended: h.record_count,
                transformed: false,
                duplicate: false,
                delayed: 0,
                delay_first_id: 0,
                leader_epoch: None,
            };
            let mut s = state.lock();
            s.appended(h.base_sequence, h.record_count, outcome);
            s.seen = Some(Instant::now());
        }
    }

    /// Forgets every producer's state on a deleted topic.
    pub fn remove_topic(&self, topic: &str) {
        self.states.lock().retain(|k, _| k.1 != topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(base: u64) -> Outcome {
        Outcome {
            partition: 0,
            base_offset: base,
            last_offset: base + 2,
            log_end: base + 3,
            appended: 3,
            transformed: false,
            duplicate: false,
            delayed: 0,
            delay_first_id: 0,
            leader_epoch: None,
        }
    }

    #[test]
    fn a_rebuilt_partition_knows_the_batches_its_log_holds() {
        let producers = Producers::default();
        let header = |producer_id, base_sequence, base_offset| quiver_proto::BatchHeader {
            version: 1,
            flags: 0,
            length: 56,
            base_offset,
            crc: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            record_count: 3,
            producer_id,
            base_sequence,
        };
        // A stale state from an earlier leadership is replaced.
        producers.state(7, "t", 0).lock().appended(0, 3, outcome(0));
        producers.rebuild(
            "t",
            0,
            &[header(7, 0, 10), header(0, 0, 13), header(7, 3, 16)],
        );
        let s = producers.state(7, "t", 0);
        let mut s = s.lock();
        assert_eq!(
            s.check(3, 3),
            Verdict::Duplicate(Some(Outcome {
                base_offset: 16,
                last_offset: 18,
                log_end: 19,
                ..outcome(16)
            }))
        );
        assert_eq!(s.check(6, 3), Verdict::Append);
    }

    #[test]
    fn resends_are_duplicates_and_gaps_are_out_of_order() {
        let mut s = SequenceState::default();
        assert_eq!(s.check(0, 3), Verdict::Append);
        s.appended(0, 3, outcome(10));
        assert_eq!(s.check(0, 3), Verdict::Duplicate(Some(outcome(10))));
        assert_eq!(s.check(6, 3), Verdict::OutOfOrder { expected: 3 });
        assert_eq!(s.check(3, 3), Verdict::Append);
        s.appended(3, 3, outcome(13));
        for i in 2..8u32 {
            s.appended(i * 3, 3, outcome(10 + 3 * i as u64));
        }
        // Forgotten but behind: still a duplicate, with no offsets.
        assert_eq!(s.check(0, 3), Verdict::Duplicate(None));
    }

    #[test]
    fn a_first_batch_that_failed_holds_back_the_ones_behind_it() {
        let mut s = SequenceState::default();
        assert_eq!(s.check(0, 10), Verdict::Append);
        s.failed(0);
        assert_eq!(s.check(10, 10), Verdict::OutOfOrder { expected: 0 });
        assert_eq!(s.check(0, 10), Verdict::Append);
        // A producer first seen mid-sequence (the broker restarted) is taken as it comes.
        let mut t = SequenceState::default();
        assert_eq!(t.check(500, 10), Verdict::Append);
    }

    #[test]
    fn sequences_wrap() {
        let mut s = SequenceState::default();
        s.appended(u32::MAX - 1, 2, outcome(0));
        assert_eq!(s.check(0, 5), Verdict::Append);
        assert_eq!(
            s.check(u32::MAX - 1, 2),
            Verdict::Duplicate(Some(outcome(0)))
        );
    }

    #[test]
    fn states_are_per_producer_and_partition() {
        let p = Producers::default();
        let a = p.state(1, "t", 0);
        let b = p.state(1, "t", 1);
        a.lock().appended(0, 1, outcome(0));
        assert_eq!(b.lock().check(5, 1), Verdict::Append);
        assert!(Arc::ptr_eq(&a, &p.state(1, "t", 0)));
        p.remove_topic("t");
        assert!(!Arc::ptr_eq(&a, &p.state(1, "t", 0)));
    }

    #[test]
    fn a_fence_refuses_older_ids_of_its_key_only_after_their_appends_in_progress() {
        let p = Arc::new(Producers::default());
        let key = |principal: &str| (principal.to_owned(), "k".to_owned());
        let fenced = |id: u64| p.state(id, "t", 0).lock().fenced;
        assert!(p.fence(key("alice"), 1, None, true));
        assert!(p.fence(key("bob"), 2, None, true));
        assert!(!fenced(1));
        // An append of producer 1 is in progress (it holds its partition state).
        let state = p.state(1, "t", 0);
        let held = state.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let fencer = {
            let p = p.clone();
            std::thread::spawn(move || {
                tx.send(p.fence(("alice".into(), "k".into()), 3, None, true))
                    .ok();
            })
        };
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "the fence waited"
        );
        drop(held);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        fencer.join().ok();
        // Fenced on every partition, including ones it had not written to yet.
        assert!(fenced(1) && p.state(1, "other", 7).lock().fenced);
        assert!(!fenced(2) && !fenced(3));
        // A producer taking a new id after a failure replaces only itself; a zombie is refused.
        assert!(p.fence(key("alice"), 4, Some(3), true));
        assert!(fenced(3) && !fenced(4));
        assert!(!p.fence(key("alice"), 5, Some(3), true));
        assert!(!fenced(4));
    }

    /// A cluster's fence (applied on every node) does not wait for an append in progress, yet
    /// that producer's next batch is refused; the same fence applied again changes nothing.
    #[test]
    fn a_fence_that_does_not_wait_still_refuses_the_old_id_and_can_be_applied_again() {
        let p = Producers::default();
        let key = || ("alice".to_owned(), "k".to_owned());
        assert!(p.fence(key(), 1, None, false));
        let state = p.state(1, "t", 0);
        let held = state.lock();
        assert!(
            p.fence(key(), 2, None, false),
            "did not wait for the append"
        );
        drop(held);
        assert!(p.is_fenced(1) && !p.is_fenced(2));
        assert!(p.fence(key(), 2, None, false), "applied again");
        assert!(
            p.fence(key(), 2, Some(1), false),
            "applied again, with the id it replaced"
        );
        assert!(!p.is_fenced(2));
    }
}
