//! Preferred leaders taking their partitions back (Kafka's automatic leader rebalance): after a
//! restart or a failover the leaders of many partitions sit on the nodes that stayed up. Every
//! `leader_rebalance_ms`, a node leading a partition whose first replica (its preferred
//! leader) is in sync and fetching hands it over the way a graceful stop does: appends are
//! refused, the in-sync followers get a moment to copy everything, then the partition is
//! elected to its preferred leader. If the election does not happen (the state moved on), the
//! node takes appends again.

use std::sync::Arc;

use futures_util::future::join_all;

use super::handover::quiesce;
use super::leader::Leader;
use super::{Replication, Role};
use crate::cluster::{Cluster, MetaCommand};
use crate::storage::PartitionLog;

/// A partition to hand to its preferred leader.
struct Move {
    topic: String,
    partition: u32,
    leader: Arc<Leader>,
    log: Arc<PartitionLog>,
    command: MetaCommand,
}

impl Replication {
    /// Hands the partitions this node leads to their preferred leaders where those are in sync
    /// and fetching.
    pub(super) async fn rebalance(&self, cluster: &Cluster) {
        let moves = self.rebalance_plan();
        if moves.is_empty() {
            return;
        }
        let led: Vec<_> = moves
            .iter()
            .map(|m| (m.leader.clone(), m.log.clone()))
            .collect();
        quiesce(&led).await;
        join_all(moves.iter().map(|m| cluster.write(m.command.clone()))).await;
        for m in moves {
            // Still leading in the same epoch: the election was refused (an ISR change came
            // first, say); take appends again.
            let same = self
                .led_epoch(&m.topic, m.partition)
                .is_some_and(|e| e == m.leader.epoch);
            if same {
                m.log.set_follower(false);
            } else {
                tracing::info!(topic = %m.topic, partition = m.partition, "partition handed to its preferred leader");
            }
        }
    }

    fn rebalance_plan(&self) -> Vec<Move> {
        let Some(s) = &self.settings else {
            return Vec::new();
        };
        let map = self.partitions.read();
        let mut moves = Vec::new();
        for (topic, replicas) in map.iter() {
            for (p, r) in replicas.iter().enumerate() {
                let Role::Leader(l) = &r.role else { continue };
                let st = &r.state;
                let Some(&preferred) = st.replicas.first() else {
                    continue;
                };
                if preferred == s.node
                    || !st.isr.contains(&preferred)
                    || !l.fetched_within(preferred, s.node_timeout)
                {
                    continue;
                }
                moves.push(Move {
                    topic: topic.clone(),
                    partition: p as u32,
                    leader: l.clone(),
                    log: r.log.clone(),
                    command: MetaCommand::Elect {
                        topic: topic.clone(),
                        partition: p as u32,
                        version: st.version,
                        leader: Some(preferred),
                        isr: st.isr.clone(),
                    },
                });
            }
        }
        moves
    }
}
