//! What a workload measured in one run ([`Measured`], with its [`Latency`] percentiles): the runner
//! turns it into a results row.

use serde::{Deserialize, Serialize};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// What one run measured (a `filter` run measures one of these per way of reading).
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub records: u64,
    pub bytes: u64,
    pub secs: f64,
    pub latency: Option<Latency>,
    /// Latency runs: how late records were handed to the producer against the schedule.
    pub send_delay: Option<Latency>,
    /// Latency runs: records offered but not received before the drain deadline.
    pub lost: Option<u64>,
    /// Filter runs: the read filter (`none`, `native`, `wasm`); `records` counts records scanned.
    pub filter: Option<&'static str>,
    /// Filter runs: records the filter kept (delivered to the consumer).
    pub matched: Option<u64>,
    /// The server's peak RSS during this measurement alone, when the workload could isolate it.
    pub peak_rss_kib: Option<u64>,
    /// Group and rebalance runs: what this row measured.
    pub variant: Option<&'static str>,
    /// Rebalance runs: each trial's time in ms.
    pub samples_ms: Option<Vec<f64>>,
    /// Rebalance runs: the bound for each trial, in ms.
    pub target_ms: Option<f64>,
    /// A remark shown under the row (where the time went, records delivered twice).
    pub detail: Option<String>,
}
