//! The workloads, generic over the driver so every system runs the same loops: `produce`, `consume`
//! and `e2e`; `filter`, `group`, `rebalance` and `queue` run on Quiver alone (server-side read
//! filters, Quiver's consumer groups and queue mode; the peers are not set up comparably).

pub mod consume;
pub mod e2e;
pub mod filter;
pub mod group;
pub mod produce;
pub mod queue;
pub mod rebalance;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::drivers::Driver;
use crate::plan::{Case, Plan};

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

/// Runs `case` against a started driver; `live` counts records as they go, for the progress bar.
pub async fn run<D: Driver>(
    driver: &D,
    case: &Case,
    plan: &Plan,
    live: Arc<AtomicU64>,
) -> Result<Vec<Measured>> {
    let one = match *case {
        Case::Produce {
            producers,
            size,
            batch,
            ..
        } => produce::run(driver, producers, size, batch, plan, live).await,
        Case::Consume {
            records,
            size,
            batch,
        } => consume::run(driver, records, size, batch, live).await,
        Case::E2e { rate, size, .. } => e2e::run(driver, rate, size, plan, live).await,
        Case::Filter {
            records,
            size,
            batch,
            ref wasm,
        } => {
            let quiver = quiver(driver)?;
            return filter::run(quiver, records, size, batch, wasm, live).await;
        }
        Case::Group(shape) => return group::run(quiver(driver)?, shape, live).await,
        Case::Rebalance(shape) => return rebalance::run(quiver(driver)?, shape, live).await,
        Case::Queue(shape) => queue::run(quiver(driver)?, shape, live).await,
    };
    one.map(|m| vec![m])
}

fn quiver<D: Driver>(driver: &D) -> Result<&crate::drivers::quiver::QuiverDriver> {
    driver.quiver().context("this workload runs on Quiver only")
}

/// `batch` record values of `size` bytes (shared buffers: cloning one is a reference count).
pub fn values(size: usize, batch: usize) -> Vec<Bytes> {
    let pattern: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let value = Bytes::from(pattern);
    vec![value; batch]
}
