//! A mirror's live status: what its forwarding tasks report (link state, sessions, per-partition
//! progress and counters since the broker started) for `mirror describe` and `/metrics`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use quiver_proto::mirror::MirrorState;

/// One edge partition's forwarding, as its task last reported it.
#[derive(Debug, Default)]
pub struct LivePartition {
    pub target_topic: Mutex<String>,
    /// The next offset to forward, acknowledged up to here (ahead of the committed position
    /// between commits).
    pub next: AtomicU64,
    pub forwarded_records: AtomicU64,
    pub forwarded_bytes: AtomicU64,
    /// A pulling mirror's view of the core partition's end (this broker cannot read it itself).
    pub source_end: AtomicU64,
    /// Why the partition is waiting to be retried, while the rest of the mirror goes on.
    pub error: Mutex<Option<String>>,
    /// Held by a pulling mirror's local append from before it starts until it is on disk,
    /// whether or not its session is still there to see it end: a new session takes it before
    /// it scans the local partition, so an append of the last session cannot land behind it.
    pub appending: Arc<tokio::sync::Mutex<()>>,
}

impl LivePartition {
    /// Counts records the core acknowledged, up to edge offset `next`.
    pub fn acknowledged(&self, next: u64, records: u64, bytes: u64) {
        if records > 0 && self.error.lock().is_some() {
            *self.error.lock() = None;
        }
        self.next.store(next, Ordering::Relaxed);
        self.forwarded_records.fetch_add(records, Ordering::Relaxed);
        self.forwarded_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct MirrorStatus {
    state: Mutex<MirrorState>,
    sessions: AtomicU64,
    /// Records per second over the last few seconds, as f64 bits.
    rate: AtomicU64,
    partitions: Mutex<HashMap<(String, u32), Arc<LivePartition>>>,
}

impl Default for MirrorStatus {
    fn default() -> Self {
        MirrorStatus {
            state: Mutex::new(MirrorState::Starting),
            sessions: AtomicU64::new(0),
            rate: AtomicU64::new(0),
            partitions: Mutex::default(),
        }
    }
}

impl MirrorStatus {
    pub fn state(&self) -> MirrorState {
        self.state.lock().clone()
    }

    pub fn set_state(&self, state: MirrorState) {
        if matches!(state, MirrorState::Connected { .. }) {
            self.sessions.fetch_add(1, Ordering::Relaxed);
        }
        *self.state.lock() = state;
    }

    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    pub fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    pub fn set_rate(&self, per_sec: f64) {
        self.rate.store(per_sec.to_bits(), Ordering::Relaxed);
    }

    /// The partition's live counters (created on first use).
    pub fn partition(&self, topic: &str, partition: u32) -> Arc<LivePartition> {
        self.partitions
            .lock()
            .entry((topic.to_owned(), partition))
            .or_default()
            .clone()
    }

    /// The partition's live counters if its task reported any.
    pub fn get(&self, topic: &str, partition: u32) -> Option<Arc<LivePartition>> {
        self.partitions
            .lock()
            .get(&(topic.to_owned(), partition))
            .cloned()
    }

    /// Records forwarded by every partition since the broker started.
    pub fn forwarded_records(&self) -> u64 {
        self.partitions
            .lock()
            .values()
            .map(|p| p.forwarded_records.load(Ordering::Relaxed))
            .sum()
    }

    pub fn forget_topic(&self, topic: &str) {
        self.partitions.lock().retain(|(t, _), _| t != topic);
    }
}
