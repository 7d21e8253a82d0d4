//! Request-path measurements for `/metrics`: produce and fetch latency histograms and the open
//! connection and stream gauges. The transport updates them once per request, connection or
//! stream (never per record); the metrics collector reads them at each scrape. Everything the
//! broker can count by itself (offsets, traffic, plugin stages, groups) is read from its owner
//! instead, so this holds only what exists nowhere else.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use quiver_proto::messages::Acks;

/// Buckets of the request latency histograms, in seconds: 50 µs to ~13 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_05, 2.0, 19)
}

/// What the transport measures.
#[derive(Debug)]
pub struct Telemetry {
    /// Produce requests from arrival to answer, by acks level (`none`, `leader`, `all`).
    produce: [Histogram; 3],
    /// Fetch requests from arrival to answer: answers with records, and empty ones (a long poll
    /// that ran out; their duration is mostly the client's `max_wait`).
    fetch_data: Histogram,
    fetch_empty: Histogram,
    connections: Arc<AtomicI64>,
    streams: Arc<AtomicI64>,
    connections_accepted: AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry {
            produce: std::array::from_fn(|_| Histogram::new(latency_buckets())),
            fetch_data: Histogram::new(latency_buckets()),
            fetch_empty: Histogram::new(latency_buckets()),
            connections: Arc::default(),
            streams: Arc::default(),
            connections_accepted: AtomicU64::new(0),
        }
    }
}

/// The acks levels, in the order of [`Telemetry::produce`], with their label values.
pub const ACKS: [(Acks, &str); 3] = [
    (Acks::None, "none"),
    (Acks::Leader, "leader"),
    (Acks::All, "all"),
];

fn acks_index(acks: Acks) -> usize {
    match acks {
        Acks::None => 0,
        Acks::Leader => 1,
        Acks::All => 2,
    }
}

impl Telemetry {
    pub fn observe_produce(&self, acks: Acks, took: Duration) {
        self.produce[acks_index(acks)].observe(took.as_secs_f64());
    }

    pub fn observe_fetch(&self, records: u32, took: Duration) {
        let h = match records {
            0 => &self.fetch_empty,
            _ => &self.fetch_data,
        };
        h.observe(took.as_secs_f64());
    }

    pub fn produce_latency(&self, acks: Acks) -> &Histogram {
        &self.produce[acks_index(acks)]
    }

    /// The fetch latency histograms: (with records, empty).
    pub fn fetch_latency(&self) -> (&Histogram, &Histogram) {
        (&self.fetch_data, &self.fetch_empty)
    }

    /// Counts an open connection until the guard is dropped.
    pub fn connection(&self) -> Open {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        Open::new(&self.connections)
    }

    /// Counts an open stream until the guard is dropped.
    pub fn stream(&self) -> Open {
        Open::new(&self.streams)
    }

    /// (open connections, open streams, connections accepted since start).
    pub fn open(&self) -> (i64, i64, u64) {
        (
            self.connections.load(Ordering::Relaxed),
            self.streams.load(Ordering::Relaxed),
            self.connections_accepted.load(Ordering::Relaxed),
        )
    }
}

/// One open connection or stream; dropping it (however the task ends) counts it closed.
#[derive(Debug)]
pub struct Open(Arc<AtomicI64>);

impl Open {
    fn new(gauge: &Arc<AtomicI64>) -> Open {
        gauge.fetch_add(1, Ordering::Relaxed);
        Open(gauge.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_what_is_open() {
        let t = Telemetry::default();
        let c = t.connection();
        let s1 = t.stream();
        let s2 = t.stream();
        assert_eq!(t.open(), (1, 2, 1));
        drop(s1);
        drop(c);
        assert_eq!(t.open(), (0, 1, 1));
        drop(s2);
        let _again = t.connection();
        assert_eq!(t.open(), (1, 0, 2));
    }
}
