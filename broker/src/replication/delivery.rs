//! Delayed records reaching their partition on a cluster (docs/replication.md "Delayed
//! delivery"): the node holding them appends them where the partition is led (here, or at
//! the leader over the peer link) and counts them delivered only once the partition's in-sync
//! replicas have them, so a failover right after a delivery does not cut delivered records.
//! A node that no longer leads the partition (after a hand-over or a failover) so still
//! delivers what it holds.

use std::time::Duration;

use bytes::Bytes;
use quiver_proto::Batch;

use super::leader::Stopped;
use super::messages::{decode, encode, ReplicaRequest, ReplicaResponse};
use super::{Replication, ReplicationError};
use crate::storage::Durability;

/// How long a leader waits for its in-sync replicas between two warnings (it waits as long as
/// it leads: followers that stall leave the ISR after the lag time).
const REPLICA_WAIT: Duration = Duration::from_secs(10);
/// How long a node waits for the leader's answer to a forwarded delivery; past it the records
/// are taken back and delivered again later (perhaps twice).
const FORWARD_WAIT: Duration = Duration::from_secs(300);

impl Replication {
    /// Delivers `batches` to `topic`/`p` (blocking: the delay thread calls it). Answers the
    /// local log end after them when they went to this node's copy.
    pub fn deliver_blocking(
        &self,
        topic: &str,
        p: u32,
        batches: &[Batch],
    ) -> Result<Option<u64>, ReplicationError> {
        let handle = self
            .runtime
            .get()
            .ok_or_else(|| ReplicationError::Invalid("the cluster has not started".into()))?;
        let bytes: Vec<Bytes> = batches.iter().map(|b| b.bytes().clone()).collect();
        let delivery = async {
            match self.leader_of(topic, p) {
                // Not replicated (a dead-letter topic created here): this node's copy.
                Ok(None) => self.append(topic, p, bytes).await.map(Some),
                Ok(Some(_)) => self.append_replicated(topic, p, bytes).await.map(Some),
                Err(_) => self.deliver_at_leader(topic, p, bytes).await.map(|()| None),
            }
        };
        handle.block_on(async {
            tokio::select! {
                r = delivery => r,
                () = self.stop.cancelled() => Err(ReplicationError::Invalid("the node is stopping".into())),
            }
        })
    }

    /// Appends at this node, the partition's leader, and waits for its in-sync replicas, as
    /// long as it leads. Refused before appending while fewer than min-insync replicas are in
    /// sync (as an `acks=all` produce): appended, the records would be delivered again with
    /// every retry.
    pub(super) async fn append_replicated(
        &self,
        topic: &str,
        p: u32,
        batches: Vec<Bytes>,
    ) -> Result<u64, ReplicationError> {
        let leader = self
            .leader_of(topic, p)?
            .ok_or_else(|| self.not_leader(topic, p))?;
        self.check_produce(topic, p, true)?;
        let end = self.append(topic, p, batches).await?;
        loop {
            match leader.replicated(end, REPLICA_WAIT).await {
                // Replicated (a shrink below min-insync since does not undo that).
                Ok(()) | Err(Stopped::TooFew(_)) => return Ok(end),
                // Another leader now: the records may or may not be in its log. Delivered
                // again, they may be there twice (at least once).
                Err(Stopped::Deposed) => return Err(self.not_leader(topic, p)),
                Err(Stopped::TimedOut) => {
                    tracing::warn!(
                        topic,
                        partition = p,
                        end,
                        "delayed records still waiting for the in-sync replicas"
                    );
                }
            }
        }
    }

    /// Appends to this node's copy (on the blocking pool); its log end after them.
    async fn append(
        &self,
        topic: &str,
        p: u32,
        batches: Vec<Bytes>,
    ) -> Result<u64, ReplicationError> {
        let io = |e: &dyn std::fmt::Display| ReplicationError::Io(e.to_string());
        let log = self.topics.partition(topic, p).map_err(|e| io(&e))?;
        let appended = crate::offload::blocking(move || {
            let mut end = log.stats().log_end;
            for bytes in batches {
                let batch = Batch::parse(bytes)?;
                end = log.append(&batch, Durability::Leader)?.log_end;
            }
            Ok(end)
        })
        .await;
        match appended {
            Ok(end) => Ok(end),
            Err(e) if e.code() == quiver_proto::ErrorCode::NotLeader => {
                Err(self.not_leader(topic, p))
            }
            Err(e) => Err(io(&e)),
        }
    }

    /// Hands the records to the partition's leader, which appends them and waits for its
    /// in-sync replicas before it answers.
    async fn deliver_at_leader(
        &self,
        topic: &str,
        p: u32,
        batches: Vec<Bytes>,
    ) -> Result<(), ReplicationError> {
        let (Some(cluster), Some(leader)) = (
            self.cluster.get(),
            self.state(topic, p).and_then(|s| s.leader),
        ) else {
            return Err(self.not_leader(topic, p));
        };
        let request = ReplicaRequest::Deliver {
            topic: topic.to_owned(),
            partition: p,
            batches: batches.into_iter().map(|b| b.to_vec().into()).collect(),
        };
        let answer = cluster
            .call_replica(leader, encode(&request), FORWARD_WAIT)
            .await
            .map_err(|e| ReplicationError::Io(e.to_string()))?;
        match decode::<ReplicaResponse>(&answer) {
            Ok(ReplicaResponse::Delivered) => Ok(()),
            Ok(ReplicaResponse::NotLeader) => Err(self.not_leader(topic, p)),
            Ok(other) => Err(ReplicationError::Io(format!(
                "node {leader} answered {other:?}"
            ))),
            Err(e) => Err(ReplicationError::Io(e)),
        }
    }

    /// A delivery another node forwarded here.
    pub(super) async fn accept_delivery(
        &self,
        topic: &str,
        p: u32,
        batches: Vec<Bytes>,
    ) -> ReplicaResponse {
        match self.append_replicated(topic, p, batches).await {
            Ok(_) => ReplicaResponse::Delivered,
            Err(ReplicationError::NotLeader { .. }) => ReplicaResponse::NotLeader,
            Err(e) => ReplicaResponse::Failed(e.to_string()),
        }
    }
}
