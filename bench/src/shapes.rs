//! The parameters of the Quiver-only cases that take more than a few numbers: `group`, `rebalance`
//! and `queue` (each case's title comes from its shape).

use std::time::Duration;

use serde::Serialize;

/// The parameters of a `group` case.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GroupShape {
    pub records: u64,
    pub size: usize,
    pub batch: usize,
    pub partitions: u32,
    pub members: usize,
}

impl GroupShape {
    /// The case's title (also the key `summarize` groups runs by).
    pub fn title(&self) -> String {
        format!(
            "group {} × {} B over {} partitions from the start: 1 consumer vs a group of {}",
            self.records, self.size, self.partitions, self.members
        )
    }
}

/// The parameters of a `rebalance` case.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RebalanceShape {
    pub partitions: u32,
    pub members: usize,
    pub session_ms: u64,
    pub trials: usize,
}

impl RebalanceShape {
    /// The case's title (also the key `summarize` groups runs by).
    pub fn title(&self) -> String {
        format!(
            "rebalance {} members, {} partitions, session {} ms: one killed / one leaving, {} \
             trial(s) each",
            self.members, self.partitions, self.session_ms, self.trials
        )
    }

    /// The members' session timeout.
    pub fn session(&self) -> Duration {
        Duration::from_millis(self.session_ms)
    }
}

/// The parameters of a `queue` case.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueueShape {
    pub records: u64,
    pub size: usize,
    pub batch: usize,
    pub partitions: u32,
    pub consumers: usize,
}

impl QueueShape {
    /// The case's title (also the key `summarize` groups runs by).
    pub fn title(&self) -> String {
        format!(
            "queue {} × {} B, {} partition(s), {} consumers, poll + ack {}",
            self.records, self.size, self.partitions, self.consumers, self.batch
        )
    }
}
