//! Preferred leaders taking their partitions back (Kafka's automatic leader rebalance): after a
//! restart or a failover the leaders of many partitions sit on the nodes that stayed up. Every
//! `leader_rebalance_ms`, a node leading a partition whose first replica (its preferred
//! leader) is in sync and fetching hands it over the way a graceful stop does: appends are
//! refused, the in-sync followers get a moment to copy everything, then the partition is
//! elected to its preferred leader. If the election does not happen (the state moved on), the
//! node takes appends again.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use super::handover::quiesce;
use super::leader::Leader;
use super::{Replication, Role};
use crate::cluster::{Cluster, MetaCommand};
use crate::storage::PartitionLog;

/// How recently a preferred leader must have fetched (a follower at the log end long-polls
/// for half a second): one that stopped fetching is not handed anything.
const RECENT_FETCH: Duration = Duration::from_millis(1500);

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
        // Only partitions whose in-sync followers copied everything: else this node's
        // acks=leader tail would be cut when it follows. The others take appends again below.
        let ready: Vec<&Move> = moves
            .iter()
            .filter(|m| m.leader.high_watermark() >= m.log.stats().log_end)
            .collect();
        let writes = join_all(ready.iter().map(|m| cluster.write(m.command.clone())));
        // A write that hangs (no Raft leader) must not keep the partitions refusing appends; one
        // applied later still moves them, safely (the election is version-checked).
        let wait = self
            .settings
            .as_ref()
            .map_or(RECENT_FETCH, |s| s.node_timeout);
        let _ = tokio::time::timeout(wait, writes).await;
        for m in moves {
            // Still leading in the same epoch: the election was refused (an ISR change came
            // first, say); take appends again.
            let same = self
                .led_epoch(&m.topic, m.partition)
                .is_some_and(|e| e == m.leader.epoch);
            // (Not while a graceful stop hands everything over: its quiesce stays.)
            if same && !self.leaving.load(std::sync::atomic::Ordering::Acquire) {
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
                    || !l.follows_closely(preferred, RECENT_FETCH)
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
