//! `consume`: fill the topic with N records (one producer, not timed), then C consumers (one by
//! default), each on its own connection, read them all back from the start at the same time
//! (fan-out). Throughput is C × N over the time from the first consumer's creation to the last
//! record of the slowest; every read must return every record, within a bounded time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::task::JoinSet;

use super::measured::Measured;
use super::values::values;
use crate::drivers::{ConsumerHandle, Driver, ProducerHandle, StartAt};

/// The longest a read-back may take before the run fails.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run<D: Driver>(
    driver: &D,
    records: u64,
    size: usize,
    batch: usize,
    consumers: usize,
    live: Arc<AtomicU64>,
) -> Result<Measured> {
    driver.create_topic().await?;
    prefill(driver.producer().await?, records, size, batch).await?;
    let start = Instant::now();
    // A JoinSet so that a run cut off by its timeout leaves no reader behind.
    let mut readers = JoinSet::new();
    for _ in 0..consumers.max(1) {
        let consumer = driver.consumer(StartAt::Earliest).await?;
        readers.spawn(read_all(consumer, records, start, live.clone()));
    }
    let (mut got, mut bytes) = (0u64, 0u64);
    while let Some(done) = readers.join_next().await {
        let (n, b) = done??;
        got += n;
        bytes += b;
    }
    Ok(Measured {
        records: got,
        bytes,
        secs: start.elapsed().as_secs_f64(),
        latency: None,
        send_delay: None,
        lost: None,
        ..Measured::default()
    })
}

/// Reads until `records` records came; answers them and their bytes.
async fn read_all<C: ConsumerHandle>(
    mut consumer: C,
    records: u64,
    start: Instant,
    live: Arc<AtomicU64>,
) -> Result<(u64, u64)> {
    let (mut got, mut bytes) = (0u64, 0u64);
    while got < records {
        if start.elapsed() > READ_TIMEOUT {
            bail!("only {got} of {records} records read back within {READ_TIMEOUT:?}");
        }
        let wait = Duration::from_millis(500);
        let n = consumer
            .poll(wait, &mut |v| bytes += v.len() as u64)
            .await? as u64;
        got += n;
        live.fetch_add(n, Ordering::Relaxed);
    }
    Ok((got, bytes))
}

/// Sends `records` values of `size` bytes in batches of `batch` and waits for every acknowledgement.
pub async fn prefill<P: ProducerHandle>(
    mut producer: P,
    records: u64,
    size: usize,
    batch: usize,
) -> Result<()> {
    let full = values(size, batch);
    let mut left = records;
    while left > 0 {
        let n = left.min(batch as u64) as usize;
        producer.send(&full[..n]).await?;
        left -= n as u64;
    }
    producer.flush().await
}
