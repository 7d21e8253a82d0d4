//! Storage benchmarks: append throughput (100 B / 1 KB records, batches of 100 / 1000, acks leader /
//! all), sequential read throughput, and the time to open a partition holding 1 GB in sealed segments.
//! Results and the raw-disk comparison live in BENCHMARKS.md.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver_broker::storage::{Durability, LogConfig, PartitionLog};
use quiver_proto::{Batch, BatchBuilder, RecordData};

fn make_batch(records: usize, size: usize) -> Batch {
    let value = vec![b'v'; size];
    let mut b = BatchBuilder::with_capacity(records * (size + 32));
    for _ in 0..records {
        b.push(&RecordData {
            timestamp: 1_700_000_000_000,
            value: &value,
            ..Default::default()
        })
        .unwrap();
    }
    Batch::parse(b.finish().unwrap()).unwrap()
}

fn bench_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 20,
        retention_bytes: Some(1 << 30),
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// True under `cargo bench` (criterion gets `--bench`); false when `cargo test` smoke-runs benches.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Starts every group from a clean writeback state, so one group's dirty pages do not slow the next.
fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
}

fn open(dir: &Path) -> PartitionLog {
    PartitionLog::open(dir, bench_config(), Arc::new(quiver_broker::util::now_ms)).unwrap()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    for (acks, durability) in [("leader", Durability::Leader), ("all", Durability::All)] {
        for size in [100usize, 1024] {
            for records in [100usize, 1000] {
                let batch = make_batch(records, size);
                settle_disk();
                let dir = tempfile::tempdir_in(".").unwrap();
                let log = open(dir.path());
                group.throughput(Throughput::Elements(records as u64));
                let id = BenchmarkId::new(format!("{acks}/{size}B"), format!("batch{records}"));
                let mut n = 0u64;
                group.bench_function(id, |b| {
                    b.iter(|| {
                        log.append(&batch, durability).unwrap();
                        n += 1;
                        // Keep the disk footprint bounded on long runs.
                        if n % 64 == 0 {
                            log.enforce_retention().unwrap();
                        }
                    })
                });
            }
        }
    }
    group.finish();
}

/// `acks=all` with 4 concurrent appenders: the group commit lets them share fsyncs.
fn concurrent_all(c: &mut Criterion) {
    let batch = make_batch(1000, 1024);
    settle_disk();
    let dir = tempfile::tempdir_in(".").unwrap();
    let log = open(dir.path());
    let mut group = c.benchmark_group("append-concurrent");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(4 * 1000));
    group.bench_function("all/1024B/batch1000/4-appenders", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for _ in 0..4 {
                    s.spawn(|| log.append(&batch, Durability::All).unwrap());
                }
            });
            log.enforce_retention().unwrap();
        })
    });
    group.finish();
}

fn sequential_read(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".").unwrap();
    let log = open(dir.path());
    let batch = make_batch(1000, 1024);
    for _ in 0..200 {
        log.append(&batch, Durability::Leader).unwrap();
    }
    let end = log.stats().log_end;
    settle_disk();
    let mut group = c.benchmark_group("read");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Bytes(log.stats().size_bytes));
    group.bench_function("sequential/1KB/1MiB-fetches", |b| {
        b.iter(|| {
            let mut at = 0;
            while at < end {
                let res = log.read(at, 1 << 20).unwrap();
                let last = quiver_proto::Batches::new(res.bytes)
                    .last()
                    .unwrap()
                    .unwrap();
                at = last.header().next_offset();
            }
        })
    });
    group.finish();
}

fn open_with_sealed_data(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(".").unwrap();
    let config = LogConfig {
        segment_bytes: 64 << 20,
        retention_ms: None,
        ..LogConfig::default()
    };
    {
        let log =
            PartitionLog::open(dir.path(), config, Arc::new(quiver_broker::util::now_ms)).unwrap();
        let batch = make_batch(1000, 1024);
        let started = Instant::now();
        // `cargo test` runs benches once as a smoke test: fill less there.
        let target = if measuring() { 1u64 << 30 } else { 16 << 20 };
        while log.stats().size_bytes < target {
            log.append(&batch, Durability::Leader).unwrap();
        }
        log.flush().unwrap();
        eprintln!("filled 1 GiB in {:?}", started.elapsed());
    }
    settle_disk();
    let mut group = c.benchmark_group("open");
    group.sample_size(20);
    group.bench_function("partition-with-1GiB-sealed", |b| {
        b.iter(|| {
            PartitionLog::open(dir.path(), config, Arc::new(quiver_broker::util::now_ms)).unwrap()
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    append,
    concurrent_all,
    sequential_read,
    open_with_sealed_data
);
criterion_main!(benches);
