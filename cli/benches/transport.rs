//! Transport benchmarks over real QUIC + TLS on loopback: one producer's throughput at 100 B and 1 KB
//! (acks=leader), fetch throughput of a consumer reading it back, and produce → consume latency at a
//! fixed 10,000 records/s (p50 / p99, printed). Results live in BENCHMARKS.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestBroker;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver::{
    Acks, Client, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
    SeekTo,
};

const PER_ITER: u64 = 100_000;

/// True under `cargo bench` (criterion gets `--bench`); false when `cargo test` smoke-runs benches.
fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}

struct Setup {
    rt: tokio::runtime::Runtime,
    broker: Option<TestBroker>,
    client: Client,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir_in(".").unwrap();
    let (broker, client) = rt.block_on(async {
        let broker = TestBroker::start_with(dir.path(), |c| {
            c.log.retention_bytes = Some(256 << 20);
            c.log.segment_bytes = 64 << 20;
            c.retention_check_ms = 500;
        })
        .await;
        let client = broker.client().await;
        (broker, client)
    });
    Setup {
        rt,
        broker: Some(broker),
        client,
        _dir: dir,
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        if let Some(b) = self.broker.take() {
            self.rt.block_on(b.stop());
        }
    }
}

async fn produce(producer: &Producer, topic: &str, value: &Bytes, n: u64) {
    for _ in 0..n {
        let mut rec = ProducerRecord::new(topic, value.clone());
        rec.partition = Some(0);
        // Deliveries are awaited through flush: one await per batch, not per record.
        drop(producer.send(rec).await.unwrap());
    }
    producer.flush().await.unwrap();
}

fn produce_throughput(c: &mut Criterion) {
    let s = setup();
    let mut group = c.benchmark_group("quic-produce");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for size in [100usize, 1024] {
        let topic = format!("produce-{size}");
        s.rt.block_on(s.client.admin().create_topic(NewTopic::new(&topic, 1)))
            .unwrap();
        let producer = s.rt.block_on(async {
            Producer::new(
                s.client.clone(),
                ProducerConfig {
                    acks: Acks::Leader,
                    ..Default::default()
                },
            )
        });
        let value = Bytes::from(vec![b'x'; size]);
        group.throughput(Throughput::Elements(PER_ITER));
        group.bench_function(BenchmarkId::new("acks-leader", format!("{size}B")), |b| {
            b.to_async(&s.rt)
                .iter(|| produce(&producer, &topic, &value, PER_ITER))
        });
    }
    group.finish();
}

fn fetch_throughput(c: &mut Criterion) {
    let s = setup();
    let total = if measuring() { 1_000_000u64 } else { 10_000 };
    s.rt.block_on(async {
        s.client
            .admin()
            .create_topic(NewTopic::new("fetch", 1))
            .await
            .unwrap();
        let producer = Producer::new(s.client.clone(), ProducerConfig::default());
        produce(&producer, "fetch", &Bytes::from(vec![b'x'; 100]), total).await;
    });
    let mut group = c.benchmark_group("quic-fetch");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Elements(total));
    group.bench_function("100B/1-consumer", |b| {
        b.to_async(&s.rt).iter(|| async {
            let mut consumer = Consumer::new(s.client.clone(), "fetch", ConsumerConfig::default());
            consumer.assign(&[0], SeekTo::Earliest);
            let mut n = 0u64;
            while n < total {
                n += consumer.poll(Duration::from_secs(5)).await.unwrap().len() as u64;
            }
        })
    });
    group.finish();
}

/// Not a criterion measurement: offers 10,000 records/s for 5 s and prints latency percentiles.
fn e2e_latency(_c: &mut Criterion) {
    let s = setup();
    let (p50, p99, max, n) = s.rt.block_on(async {
        s.client
            .admin()
            .create_topic(NewTopic::new("latency", 1))
            .await
            .unwrap();
        let mut consumer = Consumer::new(
            s.client.clone(),
            "latency",
            ConsumerConfig {
                max_wait: Duration::from_secs(1),
                ..Default::default()
            },
        );
        consumer.assign(&[0], SeekTo::Latest);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let producer = Producer::new(
            s.client.clone(),
            ProducerConfig {
                linger: Duration::from_millis(1),
                ..Default::default()
            },
        );
        let origin = Instant::now();
        let rate = 10_000u64;
        let total = if measuring() { rate * 5 } else { rate / 10 };
        let sender = tokio::spawn(async move {
            for i in 0..total {
                let due = origin + Duration::from_nanos(i * 1_000_000_000 / rate);
                tokio::time::sleep_until(due.into()).await;
                let sent = origin.elapsed().as_nanos() as u64;
                drop(
                    producer
                        .send(
                            ProducerRecord::new(
                                "latency",
                                Bytes::copy_from_slice(&sent.to_le_bytes()),
                            )
                            .partition(0),
                        )
                        .await
                        .unwrap(),
                );
            }
            producer.flush().await.unwrap();
        });
        let mut lat = Vec::with_capacity(total as usize);
        while (lat.len() as u64) < total {
            for r in consumer.poll(Duration::from_secs(5)).await.unwrap() {
                let sent = u64::from_le_bytes(r.record.value[..8].try_into().unwrap());
                lat.push(origin.elapsed().as_nanos() as u64 - sent);
            }
        }
        sender.await.unwrap();
        lat.sort_unstable();
        let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)] as f64 / 1e6;
        (
            pct(0.50),
            pct(0.99),
            *lat.last().unwrap() as f64 / 1e6,
            lat.len(),
        )
    });
    println!("e2e latency at 10000 rec/s ({n} records): p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms");
}

criterion_group!(benches, produce_throughput, fetch_throughput, e2e_latency);
criterion_main!(benches);
