//! The delay store, in process (no network). Three measurements, results in BENCHMARKS.md:
//!
//! - `delay/hold`: the cost of holding a batch of 100 records, each with its own due time (100
//!   runs, the worst case), with 10k, 100k and 1M records already pending (due a day later):
//!   scheduling must not get dearer as more is pending. The measured records are due at once, so
//!   the delivery thread takes them out again and the pending count stays at its level (the
//!   measurement includes a store busy delivering). And the common case: 100 records sharing one
//!   due time (one run).
//! - memory: the process RSS before and after each pending level is filled (printed).
//! - lateness: records due at 10,000 per second for 5 s, produced while earlier ones come due,
//!   read back with long-polling fetches; lateness = fetch time − due time (p50/p99/max printed).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use quiver_broker::services::catalog::LogOverrides;
use quiver_broker::services::fetch::{FetchParams, StartAt};
use quiver_broker::storage::Durability;
use quiver_broker::util::now_ms;
use quiver_broker::{Broker, BrokerConfig, Supervisor};
use quiver_proto::batch::{Batches, DELIVER_AT_HEADER};
use quiver_proto::{BatchBuilder, RecordData};

/// A batch of `n` 100-byte records due at `due(i)`.
fn batch(n: usize, due: impl Fn(usize) -> i64) -> Bytes {
    let value = [b'v'; 100];
    let mut b = BatchBuilder::with_capacity(n * 180);
    for i in 0..n {
        let at = due(i).to_string();
        b.push(&RecordData {
            timestamp: now_ms(),
            key: None,
            value: &value,
            headers: &[(DELIVER_AT_HEADER, at.as_bytes())],
            tags: &[],
        })
        .unwrap();
    }
    b.finish().unwrap()
}

/// A broker with its background work (delayed delivery) running on a runtime of its own.
struct Running {
    broker: Arc<Broker>,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn open() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    let broker = Broker::open(config).unwrap();
    broker
        .catalog()
        .create("later", Some(1), LogOverrides::default())
        .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let supervisor = Supervisor::new();
    runtime
        .block_on(async { broker.start(&supervisor) })
        .unwrap();
    Running {
        broker,
        _runtime: runtime,
        _dir: dir,
    }
}

/// True under `cargo bench` (criterion gets `--bench`); false when `cargo test` smoke-runs benches
/// (debug build): then everything runs small.
fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Holds records until `pending` are pending, each due at its own time a day from now.
fn fill(broker: &Broker, from: usize, pending: usize) {
    let far = now_ms() + 86_400_000;
    let mut done = from;
    while done < pending {
        let n = (pending - done).min(1000);
        let b = batch(n, |i| far + (done + i) as i64);
        broker
            .produce()
            .append("later", Some(0), b, Durability::Leader)
            .unwrap();
        done += n;
    }
}

/// Waits until the delivery thread has taken out what the measurement held (it may lag behind a
/// hold loop), so the next level starts from its own count.
fn drain(broker: &Broker, level: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while broker.delays().pending_total() > level && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "delay: after the run {} pending",
        broker.delays().pending_total()
    );
}

fn hold_cost(c: &mut Criterion) {
    let running = open();
    let broker = &running.broker;
    let mut g = c.benchmark_group("delay/hold");
    g.throughput(Throughput::Elements(100));
    g.sample_size(30);
    g.measurement_time(Duration::from_secs(5));
    let base = rss_mb();
    let mut filled = 0;
    let levels: &[usize] = if full_run() {
        &[10_000, 100_000, 1_000_000]
    } else {
        &[1_000, 5_000]
    };
    for &pending in levels {
        fill(broker, filled, pending);
        filled = pending;
        let held = broker.delays().pending_total();
        assert_eq!(held, pending as u64);
        eprintln!(
            "delay: {held} pending, RSS {:.0} MB (+{:.0} MB over the empty store)",
            rss_mb(),
            rss_mb() - base
        );
        // Due already (distinct times, so 100 runs): delivered right away, which keeps the
        // pending count at the level being measured.
        let past = now_ms() - 1000;
        let hundred = batch(100, |i| past + i as i64);
        let one_due = batch(100, |_| past);
        g.bench_with_input(
            BenchmarkId::new("100 records, 100 due times", pending),
            &pending,
            |b, _| {
                b.iter(|| {
                    broker
                        .produce()
                        .append("later", Some(0), hundred.clone(), Durability::Leader)
                        .unwrap()
                })
            },
        );
        g.bench_with_input(
            BenchmarkId::new("100 records, 1 due time", pending),
            &pending,
            |b, _| {
                b.iter(|| {
                    broker
                        .produce()
                        .append("later", Some(0), one_due.clone(), Durability::Leader)
                        .unwrap()
                })
            },
        );
        drain(broker, pending as u64);
    }
    g.finish();
}

/// Due times of the records in a fetch result, paired with when they were read.
fn dues(bytes: Bytes, out: &mut Vec<i64>) -> u64 {
    let now = now_ms();
    let mut next = 0;
    for b in Batches::new(bytes).flatten() {
        next = b.header().next_offset();
        for r in b.records() {
            // Delivered records carry their due time here (the request header is dropped).
            let due: i64 = r
                .header(quiver_broker::delay::records::DUE_HEADER)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(now);
            out.push(now - due);
        }
    }
    next
}

fn lateness() {
    let (rate, seconds) = if full_run() { (10_000, 5) } else { (1_000, 1) };
    lateness_at(rate, seconds);
}

fn lateness_at(rate: usize, seconds: usize) {
    let running = open();
    let broker = &running.broker;
    let start = now_ms() + 2000;
    let producer = {
        let broker = broker.clone();
        std::thread::spawn(move || {
            // Batches of 100 every 10 ms; record i is due at start + i/10 ms.
            let t0 = Instant::now();
            for k in 0..rate * seconds / 100 {
                let b = batch(100, |i| start + ((k * 100 + i) / (rate / 1000)) as i64);
                broker
                    .produce()
                    .append("later", Some(0), b, Durability::Leader)
                    .unwrap();
                let next = Duration::from_millis(10 * (k as u64 + 1));
                if let Some(wait) = next.checked_sub(t0.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut late = Vec::with_capacity(rate * seconds);
    rt.block_on(async {
        let mut offset = 0;
        let deadline = Instant::now() + Duration::from_secs(seconds as u64 + 30);
        while late.len() < rate * seconds && Instant::now() < deadline {
            let params = FetchParams {
                start: StartAt::Offset(offset),
                max_bytes: 1 << 20,
                min_bytes: 1,
                max_wait: Duration::from_millis(100),
                filter: None,
                plugin: None,
            };
            let got = broker.fetch().fetch("later", 0, params).await.unwrap();
            if !got.bytes.is_empty() {
                offset = dues(got.bytes, &mut late);
            }
        }
    });
    producer.join().unwrap();
    late.sort_unstable();
    let pct = |p: f64| late[((late.len() - 1) as f64 * p) as usize];
    eprintln!(
        "delay lateness at {rate}/s for {seconds} s: {} records, p50 {} ms, p99 {} ms, max {} ms",
        late.len(),
        pct(0.5),
        pct(0.99),
        late.last().copied().unwrap_or(0)
    );
}

fn main() {
    lateness();
    let mut c = Criterion::default().configure_from_args();
    hold_cost(&mut c);
    c.final_summary();
}
