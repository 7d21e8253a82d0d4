//! `e2e`: one producer offers a fixed rate, one consumer (started first, from the end of the topic)
//! receives. The sender wakes every millisecond and sends the records that have fallen due, each
//! stamped with the time it was handed to the producer (nanoseconds since the run's origin); latency
//! = receive time − that stamp, in an HDR histogram (1 µs … 60 s, 3 significant digits). As in
//! OpenMessaging Benchmark, how late the sender was against the schedule (because a send blocked on
//! backpressure, or the timer was late) is kept in a second histogram, the *send delay*, so a system
//! that holds the producer back cannot hide it: it shows there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use super::measured::{Latency, Measured};
use crate::case::E2E_MAX_BATCH;
use crate::drivers::{ConsumerHandle, Driver, ProducerHandle, StartAt};
use crate::plan::Plan;

/// How long records may keep arriving after the last one was due.
const DRAIN: Duration = Duration::from_secs(10);
/// Time for the consumer's first read to be in place before records flow.
const SETTLE: Duration = Duration::from_millis(300);

pub async fn run<D: Driver>(
    driver: &D,
    rate: u64,
    size: usize,
    plan: &Plan,
    live: Arc<AtomicU64>,
) -> Result<Measured> {
    driver.create_topic().await?;
    let mut consumer = driver.consumer(StartAt::Latest).await?;
    let producer = driver.producer().await?;
    tokio::time::sleep(SETTLE).await;
    let total = ((rate as f64 * plan.duration.as_secs_f64()) as u64).max(1);
    let origin = Instant::now();
    let mut sender = JoinSet::new();
    sender.spawn(send_at_rate(producer, origin, rate, total, size.max(8)));
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut got = 0u64;
    let deadline = origin + plan.duration + DRAIN;
    while got < total && Instant::now() < deadline {
        let mut sink = |v: &[u8]| record_latency(&mut hist, origin, v);
        got += consumer.poll(Duration::from_millis(100), &mut sink).await? as u64;
        live.store(got, Ordering::Relaxed);
    }
    let (sent, delay) = sender
        .join_next()
        .await
        .context("sender task missing")???;
    Ok(Measured {
        records: got,
        bytes: got * size as u64,
        secs: plan.duration.as_secs_f64(),
        latency: Some(percentiles(&hist)),
        send_delay: Some(percentiles(&delay)),
        lost: Some(sent.saturating_sub(got)),
        ..Measured::default()
    })
}

/// Sends, every millisecond, the records due by then; returns how many were sent and the send
/// delays (µs between when each record was due and when it was handed to the producer).
async fn send_at_rate<P: ProducerHandle>(
    mut producer: P,
    origin: Instant,
    rate: u64,
    total: u64,
    size: usize,
) -> Result<(u64, Histogram<u64>)> {
    let mut delay = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let due = ((origin.elapsed().as_nanos() * rate as u128 / 1_000_000_000) as u64).min(total);
        // A producer that fell behind catches up in batches of at most E2E_MAX_BATCH.
        while due > sent {
            let end = due.min(sent + E2E_MAX_BATCH);
            let now = origin.elapsed().as_nanos() as u64;
            for i in sent..end {
                delay.saturating_record((now.saturating_sub(due_ns(i, rate)) / 1000).max(1));
            }
            let batch: Vec<Bytes> = (sent..end).map(|_| stamped(now, size)).collect();
            producer.send(&batch).await?;
            sent = end;
        }
    }
    producer.flush().await?;
    Ok((sent, delay))
}

/// When record `i` is due, in nanoseconds since the origin.
fn due_ns(i: u64, rate: u64) -> u64 {
    (i as u128 * 1_000_000_000 / rate as u128) as u64
}

fn stamped(due: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size);
    b.put_u64_le(due);
    b.put_bytes(b'x', size - 8);
    b.freeze()
}

fn record_latency(hist: &mut Histogram<u64>, origin: Instant, value: &[u8]) {
    let Some(stamp) = value.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
        return;
    };
    let now = origin.elapsed().as_nanos() as u64;
    let micros = now.saturating_sub(u64::from_le_bytes(stamp)) / 1000;
    hist.saturating_record(micros.max(1));
}

fn percentiles(hist: &Histogram<u64>) -> Latency {
    Latency {
        count: hist.len(),
        p50: hist.value_at_quantile(0.50),
        p99: hist.value_at_quantile(0.99),
        p999: hist.value_at_quantile(0.999),
        max: hist.max(),
    }
}
