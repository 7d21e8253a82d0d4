//! A graceful stop's hand-over (Kafka's controlled shutdown): before a node stops on SIGTERM,
//! each partition it leads goes to another live in-sync replica and it leaves the in-sync
//! replicas of those it follows. Clients move at once (NotLeader) instead of waiting for the
//! controller to notice a silent node, and `acks=all` does not wait a lag time for a follower
//! that is gone.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::leader::Leader;
use super::{Replication, Role};
use crate::cluster::{MetaCommand, NodeId};
use crate::storage::PartitionLog;

/// How long a leader gives its in-sync followers to copy its last appends before it hands
/// the partition over (appends are refused meanwhile).
const CATCH_UP: Duration = Duration::from_secs(1);

/// What the hand-over does: the metadata changes, and the led partitions to quiet first.
#[derive(Default)]
struct Plan {
    commands: Vec<MetaCommand>,
    led: Vec<(Arc<Leader>, Arc<PartitionLog>)>,
}

impl Replication {
    /// Hands this node's partitions over, waiting at most `wait` for the metadata changes;
    /// from now on this node follows nothing. A partition with no other live in-sync replica
    /// stays led here (it goes offline with the node, as it would in a crash).
    pub async fn hand_over(&self, wait: Duration) {
        let Some(cluster) = self.cluster.get().cloned() else {
            return;
        };
        if !self.active.load(Ordering::Acquire) {
            return;
        }
        self.leaving.store(true, Ordering::Release);
        let plan = self.plan_hand_over();
        quiesce(&plan.led).await;
        let count = plan.commands.len();
        let writes = join_all(plan.commands.into_iter().map(|c| cluster.write(c)));
        match tokio::time::timeout(wait, writes).await {
            Ok(results) => {
                let failed = results.iter().filter(|r| r.is_err()).count();
                tracing::info!(changes = count, failed, "partitions handed over");
            }
            Err(_) => tracing::warn!(
                changes = count,
                ?wait,
                "the hand-over did not finish in time"
            ),
        }
    }

    /// Stops every follower task (a follower that fetches no more cannot be taken back into an
    /// ISR), and decides: each led partition to its first in-sync replica still fetching, each
    /// followed one's ISR without this node.
    fn plan_hand_over(&self) -> Plan {
        let Some(s) = &self.settings else {
            return Plan::default();
        };
        let mut plan = Plan::default();
        let map = self.partitions.read();
        for (topic, replicas) in map.iter() {
            for (p, r) in replicas.iter().enumerate() {
                let st = &r.state;
                let isr: Vec<NodeId> = st.isr.iter().copied().filter(|&n| n != s.node).collect();
                let in_isr = isr.len() < st.isr.len() && !isr.is_empty();
                let (topic, partition, version) = (topic.clone(), p as u32, st.version);
                match &r.role {
                    Role::Follower { stop, .. } => {
                        stop.cancel();
                        if in_isr {
                            plan.commands.push(MetaCommand::SetIsr {
                                topic,
                                partition,
                                version,
                                isr,
                            });
                        }
                    }
                    Role::Leader(l) if in_isr => {
                        // The first in-sync replica still fetching here; else (a partition
                        // just made, its followers not fetching yet) the first in-sync one:
                        // should it be gone too, the controller elects another.
                        let alive = |n: &&NodeId| l.fetched_within(**n, s.node_timeout);
                        let mut candidates = st.replicas.iter().filter(|n| isr.contains(n));
                        let Some(&next) = candidates.clone().find(alive).or(candidates.next())
                        else {
                            continue;
                        };
                        tracing::info!(topic, partition, to = next, "handing the partition over");
                        plan.led.push((l.clone(), r.log.clone()));
                        plan.commands.push(MetaCommand::Elect {
                            topic,
                            partition,
                            version,
                            leader: Some(next),
                            isr,
                        });
                    }
                    _ => {}
                }
            }
        }
        plan
    }
}

/// Refuses appends to the partitions about to be handed over and gives their in-sync
/// followers a moment to copy everything, so `acks=leader` records are not cut when this node
/// returns.
pub(super) async fn quiesce(led: &[(Arc<Leader>, Arc<PartitionLog>)]) {
    for (_, log) in led {
        log.set_follower(true);
    }
    let deadline = Instant::now() + CATCH_UP;
    for (leader, log) in led {
        let end = log.stats().log_end;
        while leader.high_watermark() < end && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
