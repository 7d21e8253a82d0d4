//! `queue` (Quiver only): fill a topic of P partitions with N records, a batch per partition in
//! turn (one producer, not timed), then C queue consumers of one share group, each on its own
//! connection, lease and acknowledge them: each loops poll (up to B records) → ack those records,
//! one request at a time. Throughput is records acknowledged (as the broker counts them settled)
//! over the time from the consumers' start until the last ack; every record must be acknowledged
//! exactly once, within a bounded time. The time each consumer spent waiting on polls and on acks
//! is reported beside the row. The target, ≥ 100,000 acked records/s, is recorded next to
//! the table, not asserted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use quiver::{QueueConfig, QueueConsumer};
use tokio::task::JoinSet;

use super::consume::prefill;
use super::measured::Measured;
use crate::drivers::quiver::QuiverDriver;
use crate::drivers::TOPIC;
use crate::shapes::QueueShape;

/// The longest the consumers may take before the run fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the broker holds an empty poll: consumers notice the end this soon.
const POLL_WAIT: Duration = Duration::from_millis(100);
const GROUP: &str = "bench-queue";
/// The target in acknowledged records per second (recorded, not asserted).
pub const QUEUE_TARGET: f64 = 100_000.0;

pub async fn run(driver: &QuiverDriver, s: QueueShape, live: Arc<AtomicU64>) -> Result<Measured> {
    driver.create_topic_with(s.partitions).await?;
    let producer = driver.partitioned_producer(s.partitions).await?;
    prefill(producer, s.records, s.size, s.batch).await?;
    let config = QueueConfig {
        max_records: s.batch as u32,
        max_wait: POLL_WAIT,
        ..QueueConfig::default()
    };
    let mut consumers = Vec::with_capacity(s.consumers);
    for _ in 0..s.consumers {
        let client = driver.connect().await?;
        consumers.push(QueueConsumer::new(client, GROUP, TOPIC, config.clone()));
    }
    let tally = Arc::new(Tally::new(s.records, live));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for q in consumers {
        tasks.spawn(consume(q, tally.clone(), start + RUN_TIMEOUT));
    }
    let mut spent = Spent::default();
    while let Some(r) = tasks.join_next().await {
        spent.add(r??);
    }
    tally.result(start, s, &spent)
}

/// One consumer: poll, ack what came, until every record is acknowledged; returns its time spent.
async fn consume(q: QueueConsumer, tally: Arc<Tally>, deadline: Instant) -> Result<Spent> {
    let mut spent = Spent::default();
    while !tally.is_done() {
        if Instant::now() > deadline {
            bail!(
                "only {} records acknowledged within {RUN_TIMEOUT:?}",
                tally.acked()
            );
        }
        let t = Instant::now();
        let records = q.poll().await?;
        spent.poll += t.elapsed();
        spent.polls += 1;
        if records.is_empty() {
            continue;
        }
        let t = Instant::now();
        let settled = q.ack(&records).await?;
        spent.ack += t.elapsed();
        spent.leased += records.len() as u64;
        tally.add(settled.settled, settled.stale);
    }
    Ok(spent)
}

/// Time a consumer spent waiting for polls and for acks, and what its polls returned.
#[derive(Debug, Default, Clone, Copy)]
struct Spent {
    poll: Duration,
    ack: Duration,
    polls: u64,
    leased: u64,
}

impl Spent {
    fn add(&mut self, o: Spent) {
        self.poll += o.poll;
        self.ack += o.ack;
        self.polls += o.polls;
        self.leased += o.leased;
    }

    /// "poll 61% / ack 39% of the consumers' time; 812 records per poll".
    fn describe(&self) -> String {
        let total = (self.poll + self.ack).as_secs_f64().max(1e-9);
        format!(
            "poll {:.0}% / ack {:.0}% of the consumers' time (mean poll {:.2} ms, ack {:.2} ms); \
             {:.0} records per poll",
            100.0 * self.poll.as_secs_f64() / total,
            100.0 * self.ack.as_secs_f64() / total,
            mean_ms(self.poll, self.polls),
            mean_ms(self.ack, self.polls),
            self.leased as f64 / self.polls.max(1) as f64
        )
    }
}

fn mean_ms(d: Duration, n: u64) -> f64 {
    d.as_secs_f64() * 1000.0 / n.max(1) as f64
}

/// Records acknowledged so far by all consumers, and when the last one was.
struct Tally {
    records: u64,
    acked: AtomicU64,
    stale: AtomicU64,
    finished: OnceLock<Instant>,
    live: Arc<AtomicU64>,
}

impl Tally {
    fn new(records: u64, live: Arc<AtomicU64>) -> Tally {
        Tally {
            records,
            acked: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            finished: OnceLock::new(),
            live,
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    fn is_done(&self) -> bool {
        self.finished.get().is_some()
    }

    fn add(&self, settled: u64, stale: u64) {
        let acked = self.acked.fetch_add(settled, Ordering::Relaxed) + settled;
        self.stale.fetch_add(stale, Ordering::Relaxed);
        self.live.store(acked, Ordering::Relaxed);
        if acked >= self.records {
            self.finished.get_or_init(Instant::now);
        }
    }

    fn result(&self, start: Instant, s: QueueShape, spent: &Spent) -> Result<Measured> {
        let (acked, stale) = (self.acked(), self.stale.load(Ordering::Relaxed));
        if acked != s.records || stale != 0 {
            bail!(
                "{acked} of {} records acknowledged, {stale} acks stale (leases ran out?)",
                s.records
            );
        }
        let end = self.finished.get().copied().unwrap_or_else(Instant::now);
        Ok(Measured {
            records: acked,
            bytes: acked * s.size as u64,
            secs: (end - start).as_secs_f64(),
            detail: Some(spent.describe()),
            ..Measured::default()
        })
    }
}
