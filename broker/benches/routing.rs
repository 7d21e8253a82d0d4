//! Exchange routing against producing straight to a topic, in process (no network): batches of
//! 1000 records of 100 B through a topic exchange with 100 bindings (`region.rN.*`), every record
//! matching one binding, versus the same batches appended to one topic. Two shapes: all records of
//! a batch to one topic (the batch is appended as it is), and records spread over 10 topics (each
//! destination gets a re-encoded batch). Results live in BENCHMARKS.md.

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quiver_broker::routing::{Binding, ExchangeKind, HeaderMatch};
use quiver_broker::services::catalog::LogOverrides;
use quiver_broker::storage::Durability;
use quiver_broker::{Broker, BrokerConfig};
use quiver_proto::{BatchBuilder, RecordData};

const RECORDS: usize = 1000;
const BINDINGS: usize = 100;

/// A batch whose record `i` has the routing key `region.r<key(i)>.e<i>` (no two keys alike, so
/// nothing could be cached per key).
fn batch(key: impl Fn(usize) -> usize) -> Bytes {
    let value = [b'v'; 100];
    let mut b = BatchBuilder::with_capacity(RECORDS * 150);
    for i in 0..RECORDS {
        let k = format!("region.r{}.e{i}", key(i));
        b.push(&RecordData {
            timestamp: 1_700_000_000_000,
            key: Some(k.as_bytes()),
            value: &value,
            ..Default::default()
        })
        .unwrap();
    }
    b.finish().unwrap()
}

fn routing(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = BrokerConfig {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    };
    let broker = Broker::open(config).unwrap();
    broker
        .catalog()
        .create("direct", Some(1), LogOverrides::default())
        .unwrap();
    broker
        .exchanges()
        .create("regions", ExchangeKind::Topic, None)
        .unwrap();
    for i in 0..BINDINGS {
        let topic = format!("r{i}");
        broker
            .catalog()
            .create(&topic, Some(1), LogOverrides::default())
            .unwrap();
        let binding = Binding {
            topic,
            key: format!("region.r{i}.*"),
            headers: Vec::new(),
            header_match: HeaderMatch::All,
        };
        broker.exchanges().bind("regions", binding).unwrap();
    }
    // The last binding matches, so every record is tested against all 100 patterns.
    let one_topic = batch(|_| BINDINGS - 1);
    let ten_topics = batch(|i| BINDINGS - 1 - i % 10);

    let mut g = c.benchmark_group("routing");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("direct to a topic", |b| {
        b.iter(|| {
            broker
                .produce()
                .append("direct", Some(0), one_topic.clone(), Durability::Leader)
                .unwrap()
        })
    });
    g.bench_function("topic exchange, 100 bindings, 1 destination", |b| {
        b.iter(|| {
            broker
                .produce()
                .produce_to_exchange("regions", one_topic.clone(), Durability::Leader)
                .unwrap()
        })
    });
    g.bench_function("topic exchange, 100 bindings, 10 destinations", |b| {
        b.iter(|| {
            broker
                .produce()
                .produce_to_exchange("regions", ten_topics.clone(), Durability::Leader)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
