//! `rebalance` (Quiver only): M group consumers, each on its own connection, share a topic of P
//! partitions (empty: ownership is what is measured, not reading) with session timeout S, and poll
//! every 10 ms. Once every member owns its share, and 1.5–2 s later, one member goes: **killed**
//! (dropped without `close`, so it stops heartbeating and the coordinator must wait out its
//! session) or **left** (`close`: commit and leave, so its partitions are free at once and move on
//! the others' next heartbeat). The time is from the moment it goes until the remaining members'
//! assignments cover every partition, as the members see them after a poll. A new member then
//! joins and the group is balanced again before the next trial. The bound, S + 1 s, is
//! recorded beside each row, not asserted.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use parking_lot::Mutex;
use quiver::{Client, GroupConfig, GroupConsumer};
use tokio::sync::oneshot::{self, error::TryRecvError};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use super::measured::Measured;
use crate::drivers::quiver::QuiverDriver;
use crate::drivers::TOPIC;
use crate::shapes::RebalanceShape;

/// How often members poll (and so report what they own).
const POLL_WAIT: Duration = Duration::from_millis(10);
/// The longest the group may take to balance after a join.
const BALANCE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a balanced group runs at least before a member goes: the members are back on their
/// stable heartbeat pace (the coordinator asks for 100 ms heartbeats while partitions move), so a
/// departure does not ride on the previous rebalance's quicker heartbeats. Trial k of n waits
/// (k + ½) / n of a heartbeat interval more, so that the trials meet the heartbeats at different
/// phases rather than all at the same one.
const SETTLE: Duration = Duration::from_millis(1500);
/// How long past the session timeout a departure may take before the run fails.
const DEPART_SLACK: Duration = Duration::from_secs(10);
/// What the issue allows beyond the session timeout.
pub const TARGET_SLACK: Duration = Duration::from_secs(1);
const GROUP: &str = "bench-rebalance";

/// Row labels.
pub const KILLED: &str = "killed";
pub const LEFT: &str = "left";

/// How a member goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// Dropped without `close`: no more heartbeats, no leave.
    Kill,
    /// `close`: commit, then leave the group.
    Leave,
}

impl Exit {
    fn label(self) -> &'static str {
        match self {
            Exit::Kill => KILLED,
            Exit::Leave => LEFT,
        }
    }
}

pub async fn run(
    driver: &QuiverDriver,
    s: RebalanceShape,
    live: Arc<AtomicU64>,
) -> Result<Vec<Measured>> {
    driver.create_topic_with(s.partitions).await?;
    let mut group = Group::new(driver, s).await?;
    let mut times: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for trial in 0..s.trials {
        for (i, exit) in [Exit::Kill, Exit::Leave].into_iter().enumerate() {
            tokio::time::sleep(settle(trial, s.trials)).await;
            let took = group.depart(exit).await?;
            times[i].push(took.as_secs_f64() * 1000.0);
            live.fetch_add(1, Ordering::Relaxed);
            group.replace(driver).await?;
        }
    }
    group.close().await?;
    let target = s.session() + TARGET_SLACK;
    Ok([Exit::Kill, Exit::Leave]
        .into_iter()
        .zip(times)
        .map(|(exit, ms)| row(exit, ms, target))
        .collect())
}

/// How long trial `k` of `n` lets the balanced group run before a member goes.
fn settle(k: usize, n: usize) -> Duration {
    let heartbeat = GroupConfig::default().heartbeat_interval;
    SETTLE + heartbeat.mul_f64((k as f64 + 0.5) / n.max(1) as f64)
}

fn row(exit: Exit, ms: Vec<f64>, target: Duration) -> Measured {
    Measured {
        secs: crate::numbers::median(&ms) / 1000.0,
        variant: Some(exit.label()),
        target_ms: Some(target.as_secs_f64() * 1000.0),
        samples_ms: Some(ms),
        ..Measured::default()
    }
}

/// The members, each in its own task, and what they report.
struct Group {
    shape: RebalanceShape,
    board: Arc<Board>,
    /// Per member: the channel that tells it to go, and its task (aborted if the run is dropped).
    slots: Vec<(oneshot::Sender<Exit>, JoinSet<Result<()>>)>,
}

impl Group {
    async fn new(driver: &QuiverDriver, shape: RebalanceShape) -> Result<Group> {
        let mut group = Group {
            shape,
            board: Arc::new(Board::new(shape.members)),
            slots: Vec::with_capacity(shape.members),
        };
        for _ in 0..shape.members {
            group.spawn(driver.connect().await?);
        }
        group.wait_balanced().await?;
        Ok(group)
    }

    /// Starts a member in the next free slot.
    fn spawn(&mut self, client: Client) {
        let index = self.slots.len();
        let (tx, rx) = oneshot::channel();
        let config = GroupConfig {
            session_timeout: self.shape.session(),
            ..GroupConfig::new(GROUP, [TOPIC])
        };
        let mut task = JoinSet::new();
        task.spawn(member(index, client, config, self.board.clone(), rx));
        self.slots.push((tx, task));
    }

    /// The last member goes; returns the time until the others own every partition.
    async fn depart(&mut self, exit: Exit) -> Result<Duration> {
        let (tx, mut task) = self.slots.pop().ok_or_else(|| anyhow!("no member"))?;
        let victim = self.slots.len();
        self.board.departed.lock().take();
        tx.send(exit)
            .map_err(|_| anyhow!("member {victim} ended early"))?;
        let limit = self.shape.session() + DEPART_SLACK;
        let took = self.wait_covered(victim, limit).await?;
        if let Some(r) = task.join_next().await {
            r??;
        }
        self.board.forget(victim);
        Ok(took)
    }

    /// Waits until the member `victim` has gone and the others own every partition; returns the
    /// time since it went.
    async fn wait_covered(&self, victim: usize, limit: Duration) -> Result<Duration> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let gone = *self.board.departed.lock();
            if let Some(at) = gone.filter(|_| self.board.covered(victim, self.shape.partitions)) {
                return Ok(at.elapsed());
            }
            let notified = self.board.changed.notified();
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!(
                    "the other members did not own every partition within {limit:?} of member \
                     {victim} going"
                );
            }
        }
    }

    /// A new member takes the free slot; returns once the group is balanced again.
    async fn replace(&mut self, driver: &QuiverDriver) -> Result<()> {
        self.spawn(driver.connect().await?);
        self.wait_balanced().await
    }

    async fn wait_balanced(&mut self) -> Result<()> {
        let deadline = tokio::time::Instant::now() + BALANCE_TIMEOUT;
        while !self.board.balanced(self.shape.partitions) {
            let notified = self.board.changed.notified();
            tokio::select! {
                _ = notified => {}
                Some(r) = first_ended(&mut self.slots) => r??,
                _ = tokio::time::sleep_until(deadline) => {
                    bail!("the group was not balanced within {BALANCE_TIMEOUT:?}");
                }
            }
        }
        Ok(())
    }

    /// Every member leaves (not timed).
    async fn close(self) -> Result<()> {
        for (tx, mut task) in self.slots {
            let _ = tx.send(Exit::Leave);
            if let Some(r) = task.join_next().await {
                r??;
            }
        }
        Ok(())
    }
}

/// The result of the first member task to end (members end only when told to, or on an error).
async fn first_ended(
    slots: &mut [(oneshot::Sender<Exit>, JoinSet<Result<()>>)],
) -> Option<Result<Result<()>, tokio::task::JoinError>> {
    let ends = slots.iter_mut().map(|(_, t)| Box::pin(t.join_next()));
    futures_util::future::select_all(ends).await.0
}

/// One member: join, then poll and report what it owns until told to go.
async fn member(
    index: usize,
    client: Client,
    config: GroupConfig,
    board: Arc<Board>,
    mut exit: oneshot::Receiver<Exit>,
) -> Result<()> {
    let mut group = GroupConsumer::join(client, config).await?;
    loop {
        match exit.try_recv() {
            Ok(how) => return go(index, group, how, &board).await,
            Err(TryRecvError::Closed) => return Ok(()),
            Err(TryRecvError::Empty) => {}
        }
        group.poll(POLL_WAIT).await?;
        let owned = group.assignment().into_iter().map(|tp| tp.partition);
        board.set(index, owned.collect());
    }
}

/// Notes when the member went, then drops it (killed) or closes it (left).
async fn go(index: usize, group: GroupConsumer, how: Exit, board: &Board) -> Result<()> {
    *board.departed.lock() = Some(Instant::now());
    board.forget(index);
    match how {
        Exit::Kill => drop(group),
        Exit::Leave => group.close().await?,
    }
    Ok(())
}

/// What the members own, as each last reported it, and when the last one to go went.
struct Board {
    owned: Mutex<Vec<BTreeSet<u32>>>,
    departed: Mutex<Option<Instant>>,
    changed: Notify,
}

impl Board {
    fn new(members: usize) -> Board {
        Board {
            owned: Mutex::new(vec![BTreeSet::new(); members]),
            departed: Mutex::new(None),
            changed: Notify::new(),
        }
    }

    fn set(&self, index: usize, owned: BTreeSet<u32>) {
        let mut all = self.owned.lock();
        if all[index] != owned {
            all[index] = owned;
            self.changed.notify_one();
        }
    }

    fn forget(&self, index: usize) {
        self.set(index, BTreeSet::new());
    }

    /// Whether the members other than `victim` own every partition.
    fn covered(&self, victim: usize, partitions: u32) -> bool {
        let all = self.owned.lock();
        let union: BTreeSet<u32> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .flat_map(|(_, o)| o.iter().copied())
            .collect();
        union.len() == partitions as usize
    }

    fn balanced(&self, partitions: u32) -> bool {
        let counts: Vec<usize> = self.owned.lock().iter().map(BTreeSet::len).collect();
        super::group::balanced(&counts, partitions as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_leaves_out_the_member_that_went() {
        let board = Board::new(3);
        board.set(0, [0, 1].into());
        board.set(1, [2, 3].into());
        board.set(2, [4, 5].into());
        assert!(board.balanced(6));
        assert!(!board.covered(2, 6));
        board.set(0, [0, 1, 4].into());
        board.set(1, [2, 3, 5].into());
        assert!(board.covered(2, 6));
    }
}
