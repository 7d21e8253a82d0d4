//! `produce`: P producers, each on its own connection, send batches of B records of S bytes as fast
//! as acknowledgements allow, for the run's duration (or until the payload cap). Throughput counts
//! records acknowledged at the durability class, over the time until the last flush returned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use bytes::Bytes;
use tokio::task::JoinSet;

use super::measured::Measured;
use super::values::values;
use crate::drivers::{Driver, ProducerHandle};
use crate::plan::Plan;

pub async fn run<D: Driver>(
    driver: &D,
    producers: usize,
    size: usize,
    batch: usize,
    plan: &Plan,
    live: Arc<AtomicU64>,
) -> Result<Measured> {
    driver.create_topic().await?;
    let mut handles = Vec::with_capacity(producers);
    for _ in 0..producers {
        handles.push(driver.producer().await?);
    }
    let values = Arc::new(values(size, batch));
    let fsyncs_before = driver.fsyncs().await;
    let cap = plan.max_bytes / (size as u64 * producers as u64);
    let start = Instant::now();
    let deadline = start + plan.duration;
    // A JoinSet so that a run cut off by its timeout leaves no producer task behind.
    let mut tasks = JoinSet::new();
    for p in handles {
        tasks.spawn(produce_loop(p, values.clone(), deadline, cap, live.clone()));
    }
    let mut records = 0;
    while let Some(done) = tasks.join_next().await {
        records += done??;
    }
    let secs = start.elapsed().as_secs_f64();
    let fsyncs = match (fsyncs_before, driver.fsyncs().await) {
        (Some(before), Some(after)) if after > before => Some(after - before),
        _ => None,
    };
    let detail = fsyncs.map(|n| {
        format!(
            "{:.0} fsyncs/s, {:.0} records per fsync",
            n as f64 / secs,
            records as f64 / n as f64
        )
    });
    Ok(Measured {
        records,
        bytes: records * size as u64,
        secs,
        detail,
        latency: None,
        send_delay: None,
        lost: None,
        ..Measured::default()
    })
}

async fn produce_loop<P: ProducerHandle>(
    mut producer: P,
    values: Arc<Vec<Bytes>>,
    deadline: Instant,
    cap: u64,
    live: Arc<AtomicU64>,
) -> Result<u64> {
    let mut sent = 0u64;
    while Instant::now() < deadline && sent < cap {
        producer.send(&values).await?;
        sent += values.len() as u64;
        live.fetch_add(values.len() as u64, Ordering::Relaxed);
    }
    producer.flush().await?;
    Ok(sent)
}
