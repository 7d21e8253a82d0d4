//! Runs one case on one system: start the system's server on a fresh data dir, run the workload
//! under a time budget, read the server's peak RSS, stop the server (always, also after a failure)
//! and turn it all into [`RunResult`]s (one, or one per variant: way of reading for `filter`,
//! reader for `group`, departure for `rebalance`).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::case::Case;
use crate::drivers::nats::NatsDriver;
use crate::drivers::noop::NoopDriver;
use crate::drivers::quiver::QuiverDriver;
use crate::drivers::redis::RedisDriver;
use crate::drivers::{Driver, DriverConfig, IdleConnection};
use crate::durability::Durability;
use crate::plan::Plan;
use crate::system::System;
use crate::workloads;
use crate::workloads::measured::{Latency, Measured};

/// A server must be up within this long.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One row of a results table (and of the JSON file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub title: String,
    pub workload: String,
    pub system: String,
    /// `ok`, `skipped` (no comparable setting) or `failed`.
    pub status: String,
    pub note: Option<String>,
    pub records: u64,
    pub secs: f64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub latency_us: Option<Latency>,
    /// Latency runs: how late the sender was against the offered schedule (backpressure shows here).
    pub send_delay_us: Option<Latency>,
    pub lost: Option<u64>,
    pub peak_rss_kib: Option<u64>,
    /// Filter runs: the read filter of this row (`none`, `native`, `wasm`); `records` counts the
    /// records scanned.
    #[serde(default)]
    pub filter: Option<String>,
    /// Filter runs: records the filter kept, and per second.
    #[serde(default)]
    pub matched: Option<u64>,
    #[serde(default)]
    pub matched_per_s: Option<f64>,
    /// Group and rebalance runs: what this row measured (`1 consumer`, `group`, `killed`, ...).
    #[serde(default)]
    pub variant: Option<String>,
    /// Rebalance runs: each trial's time in ms (`secs` is their median).
    #[serde(default)]
    pub samples_ms: Option<Vec<f64>>,
    /// Rebalance runs: the bound for each trial, in ms.
    #[serde(default)]
    pub target_ms: Option<f64>,
    /// File descriptors the server had open at the end of the workload.
    #[serde(default)]
    pub open_files: Option<usize>,
}

impl RunResult {
    fn new(case: &Case, system: System, status: &str, note: Option<String>) -> RunResult {
        RunResult {
            title: case.title(),
            workload: case.workload().to_owned(),
            system: system.name().to_owned(),
            status: status.to_owned(),
            note,
            records: 0,
            secs: 0.0,
            records_per_s: 0.0,
            mb_per_s: 0.0,
            latency_us: None,
            send_delay_us: None,
            lost: None,
            peak_rss_kib: None,
            filter: None,
            matched: None,
            matched_per_s: None,
            variant: None,
            samples_ms: None,
            target_ms: None,
            open_files: None,
        }
    }

    fn measured(case: &Case, system: System, m: Measured, rss: Option<u64>) -> RunResult {
        let secs = m.secs.max(1e-9);
        RunResult {
            records: m.records,
            secs: m.secs,
            records_per_s: m.records as f64 / secs,
            mb_per_s: m.bytes as f64 / secs / 1e6,
            latency_us: m.latency,
            send_delay_us: m.send_delay,
            lost: m.lost,
            peak_rss_kib: m.peak_rss_kib.or(rss),
            filter: m.filter.map(str::to_owned),
            matched: m.matched,
            matched_per_s: m.matched.map(|n| n as f64 / secs),
            variant: m.variant.map(str::to_owned),
            samples_ms: m.samples_ms,
            target_ms: m.target_ms,
            ..RunResult::new(case, system, "ok", m.detail)
        }
    }

    pub fn ok(&self) -> bool {
        self.status == "ok"
    }
}

pub fn describe(system: System, durability: Durability) -> String {
    match system {
        System::Quiver => QuiverDriver::describe(durability),
        System::Nats => NatsDriver::describe(durability),
        System::Redis => RedisDriver::describe(durability),
        System::Noop => NoopDriver::describe(durability),
    }
}

pub fn version(system: System) -> String {
    match system {
        System::Quiver => QuiverDriver::version(),
        System::Nats => NatsDriver::version(),
        System::Redis => RedisDriver::version(),
        System::Noop => NoopDriver::version(),
    }
}

pub async fn run_case(
    system: System,
    case: &Case,
    plan: &Plan,
    live: Arc<AtomicU64>,
) -> Vec<RunResult> {
    match system {
        System::Quiver => run_on::<QuiverDriver>(system, case, plan, live).await,
        System::Nats => run_on::<NatsDriver>(system, case, plan, live).await,
        System::Redis => run_on::<RedisDriver>(system, case, plan, live).await,
        System::Noop => run_on::<NoopDriver>(system, case, plan, live).await,
    }
}

async fn run_on<D: Driver>(
    system: System,
    case: &Case,
    plan: &Plan,
    live: Arc<AtomicU64>,
) -> Vec<RunResult> {
    if let Some(reason) = D::unsupported(case) {
        let note = Some(reason.to_owned());
        return vec![RunResult::new(case, system, "skipped", note)];
    }
    let cfg = DriverConfig {
        durability: case.durability(),
        batch: case.batch(),
        size: case.size(),
        partitions: case.partitions(),
        window: plan.window,
        low_latency: matches!(case, Case::E2e { .. }),
        work_dir: plan.work_dir.clone(),
        idempotent: plan.idempotent,
        auth: plan.auth,
        metrics: plan.metrics,
    };
    let driver = match tokio::time::timeout(START_TIMEOUT, D::start(cfg)).await {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => return failed(case, system, e),
        Err(_) => {
            return failed(
                case,
                system,
                anyhow!("server not up within {START_TIMEOUT:?}"),
            )
        }
    };
    let budget = plan.duration + plan.slack;
    let work = async {
        let idle = open_idle(&driver, case.idle()).await?;
        let measured = workloads::run(&driver, case, plan, live).await;
        // Read while the idle connections are still open (the workload's clients are closed).
        let fds = driver.open_files();
        drop(idle);
        measured.map(|ms| (ms, fds))
    };
    let outcome = tokio::time::timeout(budget, work).await;
    let rss = driver.peak_rss_kib();
    let stopped = driver.stop().await;
    let measured: Result<(Vec<Measured>, Option<usize>)> = match outcome {
        Ok(r) => r,
        Err(_) => Err(anyhow!("did not finish within {budget:?}")),
    };
    match (measured, stopped) {
        (Ok((ms, fds)), Ok(())) => ms
            .into_iter()
            .map(|m| RunResult {
                open_files: fds,
                ..RunResult::measured(case, system, m, rss)
            })
            .collect(),
        (Err(e), _) | (Ok(_), Err(e)) => failed(case, system, e),
    }
}

/// Opens `n` idle connections, a few at a time (a burst of a thousand handshakes at once would
/// measure the server's accept queue, not what idle connections cost it).
async fn open_idle<D: Driver>(driver: &D, n: usize) -> Result<Vec<IdleConnection>> {
    let mut idle = Vec::with_capacity(n);
    while idle.len() < n {
        let wave = (n - idle.len()).min(16);
        let opened =
            futures_util::future::try_join_all((0..wave).map(|_| driver.idle_connection()));
        idle.extend(opened.await.context("opening idle connections")?);
    }
    Ok(idle)
}

fn failed(case: &Case, system: System, e: anyhow::Error) -> Vec<RunResult> {
    vec![RunResult::new(
        case,
        system,
        "failed",
        Some(format!("{e:#}")),
    )]
}
