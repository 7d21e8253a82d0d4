//! Consumer-group and queue-mode (share group) messages: the `Group` / `GroupOk` frames carry the
//! coordinator protocol (join by heartbeat, leave, commit, offsets, list, describe, reset) and the
//! `Queue` / `QueueOk` frames carry per-record leasing (poll, ack, nack, release). One request per
//! stream, like admin calls; MessagePack maps so fields can be added with `#[serde(default)]`.
//!
//! Assignment follows incremental cooperative rebalancing (KIP-848 style): a heartbeat reports the
//! partitions the member still owns and gets back the partitions it may own now. A partition that
//! moves is first removed from its old owner's answer; only after the old owner reports it released
//! (or its session expires) does it appear in the new owner's answer. Partitions that do not move
//! stay in their owner's answer throughout, so they never pause.

use serde::{Deserialize, Serialize};

use crate::frame::FrameKind;
use crate::messages::Message;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// An offset to commit: the next record the group will read from the partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

/// Where `group reset` moves a group's committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetTo {
    Earliest,
    Latest,
    Offset(u64),
}

/// Header of a `Group` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum GroupRequest {
    /// Joins the group (`member_id: None`; the reply carries the new id) or heartbeats. `owned` is
    /// every partition the member still reads (it has released the others).
    Heartbeat {
        group: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member_id: Option<String>,
        client_id: String,
        /// The topics this member consumes; the group's assignment covers the union.
        topics: Vec<String>,
        /// No heartbeat for this long and the member is removed (clamped by the broker).
        session_timeout_ms: u32,
        #[serde(default)]
        owned: Vec<TopicPartition>,
    },
    /// Leaves at once: the member's partitions move without waiting for its session to expire.
    Leave {
        group: String,
        member_id: String,
    },
    /// Stores offsets. With a `member_id`, only partitions that member owns may be committed (a
    /// member whose partitions moved cannot overwrite the new owner's progress).
    Commit {
        group: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        member_id: Option<String>,
        offsets: Vec<PartitionOffset>,
    },
    /// The committed offsets of these partitions.
    FetchOffsets {
        group: String,
        partitions: Vec<TopicPartition>,
    },
    List,
    Describe {
        group: String,
    },
    /// Moves the committed offsets of every partition of `topic`; refused while members consume it.
    Reset {
        group: String,
        topic: String,
        to: ResetTo,
    },
}

/// A partition's committed offset, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// One line of `group list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSummary {
    pub name: String,
    /// Live consumer-group members.
    pub members: u32,
    /// Partitions with a committed offset.
    pub committed_partitions: u32,
    /// Topics consumed in queue mode under this name.
    #[serde(default)]
    pub queue_topics: Vec<String>,
}

/// A live member and what it owns now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDescription {
    pub member_id: String,
    pub client_id: String,
    pub topics: Vec<String>,
    /// Partitions the coordinator gives this member now.
    pub assigned: Vec<TopicPartition>,
    /// Partitions the member reported owning in its last heartbeat.
    pub owned: Vec<TopicPartition>,
    pub session_timeout_ms: u32,
    pub last_heartbeat_ms_ago: u64,
}

/// A partition's progress in a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<u64>,
    pub log_start: u64,
    pub log_end: u64,
    /// `log_end - committed` (from the log start when nothing is committed).
    pub lag: u64,
}

/// Queue-mode state of one partition under a share group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePartitionState {
    pub topic: String,
    pub partition: u32,
    /// Every record below this offset is acknowledged or dead-lettered.
    pub start: u64,
    /// The next offset not yet handed out for the first time.
    pub next: u64,
    pub log_end: u64,
    /// Records leased to a consumer now.
    pub leased: u64,
    /// Records waiting for (re)delivery below `next`.
    pub available: u64,
    /// Records sent to `<topic>.dlq` since the broker started.
    pub dead_lettered: u64,
    /// Records leased again after an earlier delivery (nacked or lease expired), since the
    /// broker started.
    #[serde(default)]
    pub redelivered: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDescription {
    pub name: String,
    /// Bumped on every membership change.
    pub epoch: u64,
    pub members: Vec<MemberDescription>,
    pub partitions: Vec<PartitionLag>,
    #[serde(default)]
    pub queues: Vec<QueuePartitionState>,
}

/// Header of a `GroupOk` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum GroupResponse {
    /// The answer to a heartbeat: what the member may own now.
    Assignment {
        member_id: String,
        epoch: u64,
        assigned: Vec<TopicPartition>,
        /// How soon the member should heartbeat again (shorter while partitions are moving).
        heartbeat_interval_ms: u32,
    },
    Left,
    Committed {
        count: u32,
    },
    Offsets {
        offsets: Vec<CommittedOffset>,
    },
    Groups {
        groups: Vec<GroupSummary>,
    },
    Group(GroupDescription),
    /// The offsets a reset stored.
    Reset {
        offsets: Vec<PartitionOffset>,
    },
}

/// A run of offsets `first..=last` in one partition (acks are sent as ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OffsetRange {
    pub partition: u32,
    pub first: u64,
    pub last: u64,
}

impl OffsetRange {
    /// Coalesces `(partition, offset)` pairs into ranges (in any input order).
    pub fn coalesce(mut offsets: Vec<(u32, u64)>) -> Vec<OffsetRange> {
        offsets.sort_unstable();
        offsets.dedup();
        let mut out: Vec<OffsetRange> = Vec::new();
        for (partition, offset) in offsets {
            match out.last_mut() {
                Some(r) if r.partition == partition && r.last.checked_add(1) == Some(offset) => {
                    r.last = offset
                }
                _ => out.push(OffsetRange {
                    partition,
                    first: offset,
                    last: offset,
                }),
            }
        }
        out
    }

    /// Records in the range (0 for an inverted one).
    pub fn len(&self) -> u64 {
        (self.last.saturating_add(1)).saturating_sub(self.first)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Header of a `Queue` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum QueueRequest {
    /// Leases up to `max_records` records of `topic` (any partition) to `consumer_id`, waiting up
    /// to `max_wait_ms` for some. Each lease lasts `visibility_timeout_ms`; a record delivered
    /// `max_deliveries` times without an ack goes to `<topic>.dlq`.
    Poll {
        group: String,
        topic: String,
        consumer_id: String,
        max_records: u32,
        max_wait_ms: u32,
        visibility_timeout_ms: u32,
        max_deliveries: u32,
    },
    /// Done with these records: they are never delivered again.
    Ack {
        group: String,
        topic: String,
        consumer_id: String,
        records: Vec<OffsetRange>,
    },
    /// Failed: redeliver after `delay_ms` (0: at once). Counts as a delivery.
    Nack {
        group: String,
        topic: String,
        consumer_id: String,
        records: Vec<OffsetRange>,
        #[serde(default)]
        delay_ms: u32,
    },
    /// Not processed: give them back at once without counting the delivery.
    Release {
        group: String,
        topic: String,
        consumer_id: String,
        records: Vec<OffsetRange>,
    },
}

/// A leased record's place and how often it has been delivered (1 the first time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedRecord {
    pub offset: u64,
    pub delivery_count: u32,
}

/// The leased records of one partition; their batches are the next `bytes` bytes of the payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeasedPart {
    pub partition: u32,
    pub bytes: u32,
    pub records: Vec<LeasedRecord>,
}

/// Header of a `QueueOk` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum QueueResponse {
    /// Leased records; the payload is the parts' batches, one part after the other. Batches may
    /// hold records that are not leased (the part's `records` list is authoritative).
    Leased {
        parts: Vec<LeasedPart>,
        /// When the leases end, in ms since the epoch.
        lease_deadline_ms: i64,
        /// Over its fetch quota, the principal's next poll is held back this long (Kafka's
        /// `throttle_time_ms`); the leases are answered at once so their time is not spent.
        #[serde(default)]
        throttle_ms: u32,
    },
    /// How many records of an ack, nack or release took effect; `stale` were not leased to this
    /// consumer any more (their lease ran out and they were handed out again, or already settled).
    Settled { settled: u64, stale: u64 },
}

impl Message for GroupRequest {
    const KIND: FrameKind = FrameKind::Group;
}
impl Message for GroupResponse {
    const KIND: FrameKind = FrameKind::GroupOk;
}
impl Message for QueueRequest {
    const KIND: FrameKind = FrameKind::Queue;
}
impl Message for QueueResponse {
    const KIND: FrameKind = FrameKind::QueueOk;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Frame;
    use bytes::Bytes;

    #[test]
    fn ranges_coalesce_per_partition() {
        let r = OffsetRange::coalesce(vec![(1, 5), (0, 3), (0, 1), (0, 2), (1, 7), (1, 6), (0, 2)]);
        assert_eq!(
            r,
            vec![
                OffsetRange {
                    partition: 0,
                    first: 1,
                    last: 3
                },
                OffsetRange {
                    partition: 1,
                    first: 5,
                    last: 7
                },
            ]
        );
        assert_eq!(r[0].len(), 3);
        assert!(OffsetRange {
            partition: 0,
            first: 4,
            last: 3
        }
        .is_empty());
    }

    #[test]
    fn group_and_queue_messages_round_trip() {
        let hb = GroupRequest::Heartbeat {
            group: "g".into(),
            member_id: None,
            client_id: "c".into(),
            topics: vec!["t".into()],
            session_timeout_ms: 3000,
            owned: vec![TopicPartition::new("t", 2)],
        };
        let f = Frame::message(&hb, Bytes::new()).unwrap();
        assert_eq!(f.kind, FrameKind::Group);
        assert_eq!(f.decode::<GroupRequest>().unwrap(), hb);
        let poll = QueueRequest::Poll {
            group: "g".into(),
            topic: "t".into(),
            consumer_id: "c".into(),
            max_records: 10,
            max_wait_ms: 100,
            visibility_timeout_ms: 30_000,
            max_deliveries: 5,
        };
        let f = Frame::message(&poll, Bytes::new()).unwrap();
        assert_eq!(f.decode::<QueueRequest>().unwrap(), poll);
        let reset = GroupRequest::Reset {
            group: "g".into(),
            topic: "t".into(),
            to: ResetTo::Offset(7),
        };
        let f = Frame::message(&reset, Bytes::new()).unwrap();
        assert_eq!(f.decode::<GroupRequest>().unwrap(), reset);
    }
}
