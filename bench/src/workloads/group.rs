//! `group` (Quiver only): fill a topic of P partitions with N records, a batch per partition in turn
//! (one producer, not timed), then read all N from the start twice on that same broker: first one
//! `Consumer` assigned every partition (the baseline, as in `consume` but over P partitions), then a
//! consumer group of M `GroupConsumer`s, each on its own connection, joining together and
//! auto-committing. Each read is timed from the creation of its consumers (the connections are made
//! before) until every partition was read to its end, so the group's time includes the joins and
//! the cooperative rebalance as the members arrive. A second group row times only what follows the
//! moment every member first owned its share of the partitions (records read by then are left
//! out). Records delivered more than once (a partition read by two members at the same time) are
//! counted and shown beside the row. The target, group ≥ 80% of the one consumer's
//! records/s, is recorded next to the table, not asserted.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use parking_lot::Mutex;
use quiver::{ConsumedRecord, Consumer, ConsumerConfig, GroupConfig, GroupConsumer, SeekTo};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::consume::prefill;
use super::measured::Measured;
use crate::drivers::quiver::QuiverDriver;
use crate::drivers::TOPIC;
use crate::shapes::GroupShape;

/// The longest one read may take before the run fails.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one poll waits: members look at the shared progress between polls.
const POLL_WAIT: Duration = Duration::from_millis(50);
/// The consumer group's name.
const GROUP: &str = "bench-group";
/// The target for group ÷ one consumer, records/s (recorded, not asserted).
pub const GROUP_TARGET: f64 = 0.80;

/// Row labels.
pub const SINGLE: &str = "1 consumer";
pub const GROUP_ROW: &str = "group";
pub const STABLE_ROW: &str = "group, once balanced";

pub async fn run(
    driver: &QuiverDriver,
    s: GroupShape,
    live: Arc<AtomicU64>,
) -> Result<Vec<Measured>> {
    driver.create_topic_with(s.partitions).await?;
    let producer = driver.partitioned_producer(s.partitions).await?;
    prefill(producer, s.records, s.size, s.batch).await?;
    let ends = driver.partition_ends().await?;
    let mut out = vec![read_single(driver, &ends, s.size, &live).await?];
    out.extend(read_group(driver, &ends, s, &live).await?);
    Ok(out)
}

/// One consumer assigned every partition reads them all from the start.
async fn read_single(
    driver: &QuiverDriver,
    ends: &[u64],
    size: usize,
    live: &AtomicU64,
) -> Result<Measured> {
    let total: u64 = ends.iter().sum();
    let client = driver.connect().await?;
    let start = Instant::now();
    let mut consumer = Consumer::new(client, TOPIC, ConsumerConfig::default());
    let partitions: Vec<u32> = (0..ends.len() as u32).collect();
    consumer.assign(&partitions, SeekTo::Earliest);
    let mut got = 0u64;
    while got < total {
        if start.elapsed() > READ_TIMEOUT {
            bail!("one consumer read only {got} of {total} records within {READ_TIMEOUT:?}");
        }
        got += consumer.poll(POLL_WAIT).await?.len() as u64;
        live.store(got, Ordering::Relaxed);
    }
    Ok(measured(SINGLE, total, size, start.elapsed(), None))
}

fn measured(
    variant: &'static str,
    records: u64,
    size: usize,
    took: Duration,
    detail: Option<String>,
) -> Measured {
    Measured {
        records,
        bytes: records * size as u64,
        secs: took.as_secs_f64(),
        variant: Some(variant),
        detail,
        ..Measured::default()
    }
}

/// The group reads every partition from the start; returns the row from the joins and, if the
/// group was balanced before the end, the row from then on.
async fn read_group(
    driver: &QuiverDriver,
    ends: &[u64],
    s: GroupShape,
    live: &Arc<AtomicU64>,
) -> Result<Vec<Measured>> {
    let board = Arc::new(Board::new(ends.to_vec(), s.members, live.clone()));
    let mut clients = Vec::with_capacity(s.members);
    for _ in 0..s.members {
        clients.push(driver.connect().await?);
    }
    let start = Instant::now();
    let mut members = JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        members.spawn(member(i, client, board.clone()));
    }
    wait_done(&board, &mut members).await?;
    while let Some(r) = members.join_next().await {
        r??;
    }
    Ok(board.rows(start, s.size))
}

/// Waits until the group has read everything; a member's failure ends the wait at once.
async fn wait_done(board: &Board, members: &mut JoinSet<Result<()>>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    while !board.is_done() {
        tokio::select! {
            _ = board.done.notified() => {}
            Some(r) = members.join_next() => r??,
            _ = tokio::time::sleep_until(deadline) => {
                board.finish();
                bail!("the group read only {} of {} records within {READ_TIMEOUT:?}",
                      board.distinct(), board.total());
            }
        }
    }
    Ok(())
}

/// One member: join (default group settings: auto-commit every second, 500 ms heartbeats), poll
/// until the group is done, then leave (commit and close; not timed). A failed close does not fail
/// the run (the records were all read); it is noted beside the row.
async fn member(index: usize, client: quiver::Client, board: Arc<Board>) -> Result<()> {
    let config = GroupConfig::new(GROUP, [TOPIC]);
    let mut group = GroupConsumer::join(client, config).await?;
    while !board.is_done() {
        let records = group.poll(POLL_WAIT).await?;
        board.record(&records);
        board.owned(index, group.assignment().len());
    }
    if let Err(e) = group.close().await {
        board
            .close_errors
            .lock()
            .push(format!("member {index}: {e}"));
    }
    Ok(())
}

/// What the members share: how far each partition was read, who owns how many partitions, and the
/// moments the group became balanced and finished.
struct Board {
    ends: Vec<u64>,
    /// Per partition, the highest offset delivered + 1.
    reached: Vec<AtomicU64>,
    /// Records delivered, duplicates included.
    delivered: AtomicU64,
    /// Per member, the partitions it owned after its last poll.
    owns: Vec<AtomicUsize>,
    /// When every member first owned its share, and the distinct records read by then.
    balanced: OnceLock<(Instant, u64)>,
    finished: OnceLock<Instant>,
    /// Members whose close failed, and why.
    close_errors: Mutex<Vec<String>>,
    done: Notify,
    live: Arc<AtomicU64>,
}

impl Board {
    fn new(ends: Vec<u64>, members: usize, live: Arc<AtomicU64>) -> Board {
        Board {
            reached: ends.iter().map(|_| AtomicU64::new(0)).collect(),
            ends,
            delivered: AtomicU64::new(0),
            owns: (0..members).map(|_| AtomicUsize::new(0)).collect(),
            balanced: OnceLock::new(),
            finished: OnceLock::new(),
            close_errors: Mutex::new(Vec::new()),
            done: Notify::new(),
            live,
        }
    }

    fn total(&self) -> u64 {
        self.ends.iter().sum()
    }

    /// Distinct records read: every partition starts at offset 0 in a fresh topic.
    fn distinct(&self) -> u64 {
        self.reached.iter().map(|r| r.load(Ordering::Relaxed)).sum()
    }

    fn is_done(&self) -> bool {
        self.finished.get().is_some()
    }

    fn finish(&self) {
        self.finished.get_or_init(Instant::now);
        self.done.notify_one();
    }

    /// Notes a poll's records (one atomic update per run of a partition), and the end if reached.
    fn record(&self, records: &[ConsumedRecord]) {
        self.delivered
            .fetch_add(records.len() as u64, Ordering::Relaxed);
        for (i, r) in records.iter().enumerate() {
            let run_ends = records
                .get(i + 1)
                .is_none_or(|next| next.partition != r.partition);
            if run_ends {
                self.reached[r.partition as usize]
                    .fetch_max(r.record.offset + 1, Ordering::Relaxed);
            }
        }
        self.live.store(self.distinct(), Ordering::Relaxed);
        let all_read = self
            .reached
            .iter()
            .zip(&self.ends)
            .all(|(r, end)| r.load(Ordering::Relaxed) >= *end);
        if all_read {
            self.finish();
        }
    }

    /// Notes how many partitions member `index` owns, and the first balanced moment.
    fn owned(&self, index: usize, partitions: usize) {
        self.owns[index].store(partitions, Ordering::Relaxed);
        let owns: Vec<usize> = self
            .owns
            .iter()
            .map(|o| o.load(Ordering::Relaxed))
            .collect();
        if balanced(&owns, self.ends.len()) && !self.is_done() {
            self.balanced
                .get_or_init(|| (Instant::now(), self.distinct()));
        }
    }

    /// The row from the joins, and the row from the balanced moment (if it came before the end).
    fn rows(&self, start: Instant, size: usize) -> Vec<Measured> {
        let end = self.finished.get().copied().unwrap_or_else(Instant::now);
        let total = self.total();
        let extra = self.delivered.load(Ordering::Relaxed).saturating_sub(total);
        let mut detail = format!("{extra} records delivered more than once");
        for e in self.close_errors.lock().iter() {
            let _ = write!(detail, "; close failed, {e}");
        }
        let detail = Some(detail);
        let mut rows = vec![measured(GROUP_ROW, total, size, end - start, detail)];
        if let Some(&(at, read)) = self.balanced.get() {
            let detail = Some(format!(
                "balanced {:.0} ms after the first join, {read} records read by then",
                (at - start).as_secs_f64() * 1000.0
            ));
            rows.push(measured(STABLE_ROW, total - read, size, end - at, detail));
        }
        rows
    }
}

/// Every member owns a share (at most one apart) and together they own every partition.
pub fn balanced(owns: &[usize], partitions: usize) -> bool {
    let (lo, hi) = (owns.iter().min(), owns.iter().max());
    let sum: usize = owns.iter().sum();
    matches!((lo, hi), (Some(&lo), Some(&hi)) if lo > 0 && hi - lo <= 1 && sum == partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_means_every_partition_owned_in_even_shares() {
        assert!(balanced(&[2, 2, 2], 6));
        assert!(balanced(&[3, 2, 2], 7));
        assert!(!balanced(&[6, 0, 0], 6), "one member owns everything");
        assert!(!balanced(&[3, 1, 2], 6), "shares more than one apart");
        assert!(!balanced(&[2, 2, 1], 6), "a partition is between owners");
    }
}
