//! What partition replicas say to each other over the peer link (rmp-serde, inside the
//! cluster's peer messages): a follower fetching from its leader, and a returning replica
//! asking where its last leader epoch ended, and delayed records delivered at the leader.

use serde::{Deserialize, Serialize};

use crate::cluster::NodeId;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReplicaRequest {
    /// Records from `offset` on (the follower's log end, which also tells the leader how far
    /// the follower is).
    Fetch {
        topic: String,
        partition: u32,
        /// The leader epoch the follower follows.
        epoch: u64,
        offset: u64,
        replica: NodeId,
        max_bytes: u32,
    },
    /// Where `last_epoch` (the asking replica's latest) ends in the leader's log.
    EpochEnd {
        topic: String,
        partition: u32,
        epoch: u64,
        last_epoch: u64,
    },
    /// Delayed records a node held, for the leader to append (`delivery.rs`); answered once
    /// the in-sync replicas have them.
    Deliver {
        topic: String,
        partition: u32,
        batches: Vec<serde_bytes::ByteBuf>,
    },
}

impl ReplicaRequest {
    /// The partition and leader epoch a follower's request names (none for a delivery).
    pub fn key(&self) -> Option<(&str, u32, u64)> {
        Some(match self {
            ReplicaRequest::Fetch {
                topic,
                partition,
                epoch,
                ..
            }
            | ReplicaRequest::EpochEnd {
                topic,
                partition,
                epoch,
                ..
            } => (topic, *partition, *epoch),
            ReplicaRequest::Deliver { .. } => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReplicaResponse {
    Records {
        /// Whole batches as the leader's log holds them, offsets assigned.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        high_watermark: u64,
        log_end: u64,
        /// The leader's log start: a follower deletes its segments below it too (delivered
        /// delay-log segments, retention run at the leader).
        #[serde(default)]
        log_start: u64,
        /// The leader's epoch entries from the one covering the fetch offset on.
        epochs: Vec<(u64, u64)>,
    },
    EpochEnd {
        /// The largest epoch at or below the one asked for (the asked one, if the leader has
        /// it), and where it ends.
        epoch: u64,
        end: u64,
    },
    /// The node does not lead the partition (in the asked epoch, or at all).
    NotLeader,
    /// A forwarded delivery is appended and replicated.
    Delivered,
    /// The leader is in a later epoch than the request: the asker is behind on metadata.
    FencedEpoch {
        current: u64,
    },
    /// The request names a later epoch than the leader knows: it is behind on metadata.
    UnknownEpoch,
    /// The offset is below the leader's log start (retention removed it): start there.
    OutOfRange {
        log_start: u64,
    },
    Failed(String),
}

pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Plain data (strings, numbers, byte buffers) always encodes.
    rmp_serde::to_vec_named(message).unwrap_or_default()
}

pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    rmp_serde::from_slice(bytes).map_err(|e| format!("cannot read a replica message: {e}"))
}
