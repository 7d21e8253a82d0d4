//! A partition this node leads: it answers its followers' fetches (long-polling at the log
//! end), keeps how far each follower is, and moves the high watermark to what every in-sync
//! replica has. `acks=all` produces wait on that watermark; consumers read below it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::epochs::EpochCache;
use super::messages::ReplicaResponse;
use crate::cluster::NodeId;
use crate::storage::PartitionLog;

/// How long a follower's fetch at the log end waits for new records.
const FETCH_WAIT: Duration = Duration::from_millis(500);

/// How far one follower is.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Its log end, as its last fetch said.
    log_end: u64,
    /// The leader's log end when it last answered this follower.
    answered_end: u64,
    /// When the follower last fetched from at least where the previous answer ended (Kafka's
    /// rule: under steady load a follower is never at the very end, yet it keeps up).
    caught_up: Instant,
    /// When it last fetched.
    seen: Instant,
}

pub struct Leader {
    pub node: NodeId,
    pub epoch: u64,
    pub min_insync: u32,
    pub log: Arc<PartitionLog>,
    epochs: Arc<Mutex<EpochCache>>,
    /// When this node took the lead, and its log end then (a follower must reach it to rejoin).
    since: Instant,
    start_offset: u64,
    state: Mutex<LeaderState>,
    hw: watch::Sender<u64>,
    /// Cancelled when the node stops leading this epoch.
    pub stop: CancellationToken,
}

struct LeaderState {
    isr: Vec<NodeId>,
    /// Followers this leader asked to add to the ISR, counted in the high watermark from the
    /// moment it asked (the change may commit at any time; Kafka's "maximal ISR").
    adding: Vec<NodeId>,
    followers: HashMap<NodeId, Progress>,
}

impl std::fmt::Debug for Leader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leader")
            .field("epoch", &self.epoch)
            .field("hw", &*self.hw.borrow())
            .finish_non_exhaustive()
    }
}

impl Leader {
    /// Takes the lead of `log` in `epoch`: records where the epoch starts and keeps the high
    /// watermark this node knew as a follower (it only grows from there).
    pub fn start(
        node: NodeId,
        epoch: u64,
        (isr, min_insync): (Vec<NodeId>, u32),
        log: Arc<PartitionLog>,
        epochs: Arc<Mutex<EpochCache>>,
    ) -> std::io::Result<Arc<Leader>> {
        let start_offset = log.stats().log_end;
        epochs.lock().assign(epoch, start_offset)?;
        let hw = log.high_watermark().unwrap_or(0).min(start_offset);
        log.set_high_watermark(Some(hw));
        let leader = Arc::new(Leader {
            node,
            epoch,
            min_insync,
            log,
            epochs,
            since: Instant::now(),
            start_offset,
            state: Mutex::new(LeaderState {
                isr,
                adding: Vec::new(),
                followers: HashMap::new(),
            }),
            hw: watch::Sender::new(hw),
            stop: CancellationToken::new(),
        });
        leader.advance();
        tokio::spawn(leader.clone().track_appends());
        Ok(leader)
    }

    /// Moves the high watermark after every local append (a partition whose only in-sync
    /// replica is the leader commits at once).
    async fn track_appends(self: Arc<Self>) {
        let mut ends = self.log.subscribe_log_end();
        loop {
            tokio::select! {
                () = self.stop.cancelled() => return,
                changed = ends.changed() => if changed.is_err() { return },
            }
            self.advance();
        }
    }

    pub fn high_watermark(&self) -> u64 {
        *self.hw.borrow()
    }

    pub fn isr(&self) -> Vec<NodeId> {
        self.state.lock().isr.clone()
    }

    /// The in-sync replicas as the metadata group committed them (this leader's proposals
    /// are applied one at a time, so any pending addition is now decided). A follower taken
    /// out comes back only after a fetch made since (one leaving on a graceful stop fetches no
    /// more, whatever it had caught up to before).
    pub fn set_isr(&self, isr: Vec<NodeId>) {
        {
            let mut st = self.state.lock();
            let removed: Vec<NodeId> = st
                .isr
                .iter()
                .copied()
                .filter(|n| !isr.contains(n))
                .collect();
            for n in removed {
                st.followers.remove(&n);
            }
            st.isr = isr;
            st.adding.clear();
        }
        self.advance();
    }

    /// Raises the high watermark to the smallest log end among the in-sync replicas and those
    /// being added.
    fn advance(&self) {
        let log_end = self.log.stats().log_end;
        let hw = {
            let st = self.state.lock();
            st.isr
                .iter()
                .chain(&st.adding)
                .filter(|&&n| n != self.node)
                .map(|n| st.followers.get(n).map_or(0, |p| p.log_end))
                .fold(log_end, u64::min)
        };
        // The log's limit moves inside the watch's lock: two advances cannot cross.
        self.hw.send_if_modified(|cur| {
            if hw <= *cur {
                return false;
            }
            *cur = hw;
            self.log.set_high_watermark(Some(hw));
            true
        });
    }

    /// Waits until every in-sync replica has the records below `end`, and then at least
    /// min-insync of them are in sync. Fails if this node stopped leading first, or `wait`
    /// passed.
    pub async fn replicated(&self, end: u64, wait: Duration) -> Result<(), Stopped> {
        let mut rx = self.hw.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if *rx.borrow_and_update() >= end {
                let isr = self.isr().len();
                return match isr >= self.min_insync as usize {
                    true => Ok(()),
                    false => Err(Stopped::TooFew(isr)),
                };
            }
            tokio::select! {
                () = self.stop.cancelled() => return Err(Stopped::Deposed),
                () = tokio::time::sleep_until(deadline) => return Err(Stopped::TimedOut),
                changed = rx.changed() => if changed.is_err() { return Err(Stopped::Deposed) },
            }
        }
    }

    /// Answers a follower's fetch from `offset` (its log end): waits a little at the log end,
    /// then sends what follows, the high watermark and the epochs from the one at `offset`.
    pub async fn fetch(&self, replica: NodeId, offset: u64, max_bytes: usize) -> ReplicaResponse {
        let stats = self.log.stats();
        if offset < stats.log_start {
            return ReplicaResponse::OutOfRange {
                log_start: stats.log_start,
            };
        }
        if offset > stats.log_end {
            return ReplicaResponse::Failed(format!(
                "offset {offset} is past the leader's log end {}: truncate first",
                stats.log_end
            ));
        }
        self.progress(replica, offset);
        if offset == stats.log_end {
            let mut ends = self.log.subscribe_log_end();
            ends.borrow_and_update();
            if self.log.stats().log_end == offset {
                tokio::select! {
                    () = self.stop.cancelled() => {}
                    () = tokio::time::sleep(FETCH_WAIT) => {}
                    _ = ends.changed() => {}
                }
            }
        }
        let read = match self.log.read_raw(offset, max_bytes) {
            Ok(r) => r,
            Err(e) => return ReplicaResponse::Failed(e.to_string()),
        };
        if let Some(p) = self.state.lock().followers.get_mut(&replica) {
            p.answered_end = read.log_end;
        }
        let epochs = self.epochs.lock();
        let from = epochs
            .entries()
            .partition_point(|&(_, s)| s <= offset)
            .saturating_sub(1);
        ReplicaResponse::Records {
            bytes: read.bytes.to_vec(),
            high_watermark: self.high_watermark(),
            log_end: read.log_end,
            log_start: read.log_start,
            epochs: epochs.entries()[from..].to_vec(),
        }
    }

    /// Where `epoch` ends in this log (a returning replica cuts its log there).
    pub fn epoch_end(&self, epoch: u64) -> ReplicaResponse {
        let stats = self.log.stats();
        let epochs = self.epochs.lock();
        let (epoch, end) = epochs.end_of(epoch, stats.log_end).unwrap_or_else(|| {
            let first = epochs.entries().first().map_or(stats.log_start, |e| e.1);
            (0, first)
        });
        ReplicaResponse::EpochEnd { epoch, end }
    }

    fn progress(&self, replica: NodeId, offset: u64) {
        let now = Instant::now();
        {
            let mut st = self.state.lock();
            let p = st.followers.entry(replica).or_insert(Progress {
                log_end: offset,
                answered_end: 0,
                caught_up: now,
                seen: now,
            });
            p.log_end = offset;
            p.seen = now;
            if offset >= p.answered_end {
                p.caught_up = now;
            }
        }
        self.advance();
    }

    /// Whether `replica` fetched from this leader within `within` (it is alive).
    /// Whether `replica` fetched within `within` from at least the high watermark (it has
    /// every committed record and keeps fetching): ready to take the lead.
    pub fn follows_closely(&self, replica: NodeId, within: Duration) -> bool {
        let hw = self.high_watermark();
        let st = self.state.lock();
        st.followers
            .get(&replica)
            .is_some_and(|p| p.seen.elapsed() < within && p.log_end >= hw)
    }

    pub fn fetched_within(&self, replica: NodeId, within: Duration) -> bool {
        let st = self.state.lock();
        st.followers
            .get(&replica)
            .is_some_and(|p| p.seen.elapsed() < within)
    }

    /// The in-sync replicas this leader wants now, if they differ from the committed ones: a
    /// follower that has not caught up for `lag` leaves; one out of sync that reached the
    /// high watermark (and this epoch's start) comes back.
    pub fn wanted_isr(&self, replicas: &[NodeId], lag: Duration) -> Option<Vec<NodeId>> {
        let hw = self.high_watermark();
        let mut st = self.state.lock();
        let mut wanted = vec![self.node];
        for &r in replicas.iter().filter(|&&r| r != self.node) {
            let p = st.followers.get(&r).copied();
            let in_sync = if st.isr.contains(&r) {
                p.map_or(self.since, |p| p.caught_up).elapsed() < lag
            } else {
                p.is_some_and(|p| {
                    p.log_end >= hw && p.log_end >= self.start_offset && p.caught_up.elapsed() < lag
                })
            };
            if in_sync {
                wanted.push(r);
            }
        }
        let mut current = st.isr.clone();
        current.sort_unstable();
        let mut sorted = wanted.clone();
        sorted.sort_unstable();
        if sorted == current {
            return None;
        }
        for &n in &wanted {
            if !st.isr.contains(&n) && !st.adding.contains(&n) {
                st.adding.push(n);
            }
        }
        Some(wanted)
    }
}

/// Why an `acks=all` wait ended without its records replicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    Deposed,
    TimedOut,
    /// Replicated, but the ISR shrank below min-insync meanwhile (Kafka's
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    TooFew(usize),
}
