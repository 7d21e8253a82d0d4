//! A graceful stop's hand-over (Kafka's controlled shutdown): before a node stops on SIGTERM,
//! each partition it leads goes to another live in-sync replica and it leaves the in-sync
//! replicas of those it follows. Clients move at once (NotLeader) instead of waiting for the
//! controller to notice a silent node, and `acks=all` does not wait a lag time for a follower
//! that is gone.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::{Replication, Role};
use crate::cluster::{MetaCommand, NodeId};

/// How long a leader gives its in-sync followers to copy its last appends before it hands
/// the partition over (appends are refused meanwhile).
const CATCH_UP: Duration = Duration::from_secs(1);

impl Replication {
    /// Hands this node's partitions over, waiting at most `wait` for the metadata changes;
    /// from now on this node follows nothing. A partition with no other live in-sync replica
    /// stays led here (it goes offline with the node, as it would in a crash).
    pub async fn hand_over(&self, wait: Duration) {
        let (Some(s), Some(cluster)) = (&self.settings, self.cluster.get().cloned()) else {
            return;
        };
        if !self.active.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        self.leaving
            .store(true, std::sync::atomic::Ordering::Release);
        let alive = |n: NodeId| {
            cluster
                .last_answer(n)
                .is_some_and(|t| t.elapsed() < s.node_timeout)
        };
        self.quiesce_leaders().await;
        let mut commands = Vec::new();
        {
            let map = self.partitions.read();
            for (topic, replicas) in map.iter() {
                for (p, r) in replicas.iter().enumerate() {
                    let st = &r.state;
                    let isr: Vec<NodeId> =
                        st.isr.iter().copied().filter(|&n| n != s.node).collect();
                    if isr.len() == st.isr.len() || isr.is_empty() {
                        continue;
                    }
                    let (topic, partition, version) = (topic.clone(), p as u32, st.version);
                    match &r.role {
                        Role::Follower { stop, .. } => {
                            // Fetching no more: the leader cannot take it back into the ISR.
                            stop.cancel();
                            commands.push(MetaCommand::SetIsr {
                                topic,
                                partition,
                                version,
                                isr,
                            });
                        }
                        Role::Leader(_) => {
                            let next = st.replicas.iter().copied();
                            let Some(next) = next.filter(|n| isr.contains(n)).find(|&n| alive(n))
                            else {
                                continue;
                            };
                            tracing::info!(
                                topic,
                                partition,
                                to = next,
                                "handing the partition over"
                            );
                            commands.push(MetaCommand::Elect {
                                topic,
                                partition,
                                version,
                                leader: Some(next),
                                isr,
                            });
                        }
                        Role::Idle => {}
                    }
                }
            }
        }
        let count = commands.len();
        let writes = join_all(commands.into_iter().map(|c| cluster.write(c)));
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

    /// Refuses appends to the partitions this node leads and gives their in-sync followers a
    /// moment to copy everything, so `acks=leader` records are not cut when it returns.
    async fn quiesce_leaders(&self) {
        let leaders: Vec<_> = {
            let map = self.partitions.read();
            let led = map.values().flatten();
            led.filter_map(|r| match &r.role {
                Role::Leader(l) => {
                    r.log.set_follower(true);
                    Some((l.clone(), r.log.clone()))
                }
                _ => None,
            })
            .collect()
        };
        let deadline = Instant::now() + CATCH_UP;
        for (leader, log) in leaders {
            let end = log.stats().log_end;
            while leader.high_watermark() < end && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
