//! The periodic checks that change replica metadata: on the Raft leader (the controller), new
//! leaders for partitions whose leader's node stopped answering; on every partition leader,
//! followers leaving or rejoining the in-sync replicas, and now and then partitions handed
//! back to their preferred leaders (`rebalance.rs`). Each change is a metadata command,
//! applied by every node only if the partition's state is still the one it was decided on.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::{Replication, Role};
use crate::cluster::{Cluster, MetaCommand, MetaResult, NodeId};

/// How often the checks run.
const TICK: Duration = Duration::from_millis(250);

/// Runs the checks until `stop`.
pub async fn run(r: Arc<Replication>, stop: CancellationToken) {
    let pending: Arc<Mutex<HashSet<(String, u32)>>> = Arc::default();
    let mut leading_since: Option<Instant> = None;
    let mut rebalanced = Instant::now();
    let rebalancing = Arc::new(AtomicBool::new(false));
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(cluster) = r.cluster.get().cloned() else {
            continue;
        };
        if !r.active.load(Ordering::Acquire) {
            continue;
        }
        let mut commands = r.isr_changes();
        if cluster.is_leader() {
            let since = *leading_since.get_or_insert_with(Instant::now);
            commands.extend(r.elections(&cluster, since));
        } else {
            leading_since = None;
        }
        for (key, command) in commands {
            propose(&cluster, &pending, key, command);
        }
        let every = r.settings.as_ref().and_then(|s| s.rebalance);
        if every.is_some_and(|e| rebalanced.elapsed() >= e)
            && !r.leaving.load(Ordering::Acquire)
            && !rebalancing.swap(true, Ordering::AcqRel)
        {
            rebalanced = Instant::now();
            let (r, done) = (r.clone(), rebalancing.clone());
            tokio::spawn(async move {
                r.rebalance(&cluster).await;
                done.store(false, Ordering::Release);
            });
        }
    }
}

/// Proposes a change unless one for the same partition is still on its way.
fn propose(
    cluster: &Arc<Cluster>,
    pending: &Arc<Mutex<HashSet<(String, u32)>>>,
    key: (String, u32),
    command: MetaCommand,
) {
    if !pending.lock().insert(key.clone()) {
        return;
    }
    let (cluster, pending) = (cluster.clone(), pending.clone());
    tokio::spawn(async move {
        match cluster.write(command).await {
            Ok(MetaResult::Err { message, .. }) => {
                tracing::debug!(topic = %key.0, partition = key.1, %message, "a replica change was not applied");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(topic = %key.0, partition = key.1, error = %e, "a replica change was not committed; will retry");
            }
        }
        pending.lock().remove(&key);
    });
}

type Change = ((String, u32), MetaCommand);

impl Replication {
    /// The ISR changes the partitions this node leads want.
    fn isr_changes(&self) -> Vec<Change> {
        let Some(s) = &self.settings else {
            return Vec::new();
        };
        let map = self.partitions.read();
        let mut out = Vec::new();
        for (topic, replicas) in map.iter() {
            for (p, r) in replicas.iter().enumerate() {
                let Role::Leader(l) = &r.role else { continue };
                let Some(isr) = l.wanted_isr(&r.state.replicas, s.lag) else {
                    continue;
                };
                tracing::info!(topic, partition = p, from = ?r.state.isr, to = ?isr, "changing the in-sync replicas");
                let command = MetaCommand::SetIsr {
                    topic: topic.clone(),
                    partition: p as u32,
                    version: r.state.version,
                    isr,
                };
                out.push(((topic.clone(), p as u32), command));
            }
        }
        out
    }

    /// New leaders for partitions whose leader's node is dead (or that have none), chosen
    /// among their live in-sync replicas in replica order; none when no in-sync replica is
    /// alive (unclean election is off: an out-of-sync replica may lack acknowledged records).
    /// `since`: when this node became the controller (every node counts as alive for one
    /// timeout after that: it has not heard from them yet).
    fn elections(&self, cluster: &Cluster, since: Instant) -> Vec<Change> {
        let Some(s) = &self.settings else {
            return Vec::new();
        };
        let alive = |n: NodeId| {
            n == s.node
                || since.elapsed() < s.node_timeout
                || cluster
                    .last_answer(n)
                    .is_some_and(|t| t.elapsed() < s.node_timeout)
        };
        let map = self.partitions.read();
        let mut out = Vec::new();
        for (topic, replicas) in map.iter() {
            for (p, r) in replicas.iter().enumerate() {
                let st = &r.state;
                if st.leader.is_some_and(alive) {
                    continue;
                }
                let candidate = st
                    .replicas
                    .iter()
                    .copied()
                    .find(|&n| st.isr.contains(&n) && alive(n));
                let isr: Vec<NodeId> = match (st.leader, candidate) {
                    (Some(dead), Some(_)) => {
                        st.isr.iter().copied().filter(|&n| n != dead).collect()
                    }
                    _ => st.isr.clone(),
                };
                if candidate == st.leader && isr == st.isr {
                    continue;
                }
                tracing::warn!(topic, partition = p, dead = ?st.leader, new = ?candidate, "electing a partition leader");
                let command = MetaCommand::Elect {
                    topic: topic.clone(),
                    partition: p as u32,
                    version: st.version,
                    leader: candidate,
                    isr,
                };
                out.push(((topic.clone(), p as u32), command));
            }
        }
        out
    }
}
