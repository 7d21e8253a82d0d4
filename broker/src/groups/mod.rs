//! Consumer groups and queue mode: the coordinator (membership, cooperative assignment, session
//! expiry), committed offsets in sled, and share groups that lease single records with ack, nack,
//! release, visibility timeouts and dead-lettering. See docs/groups.md.

pub mod assign;
pub mod coordinator;
pub mod offsets;
pub mod queues;
pub mod share;

use std::collections::{BTreeMap, BTreeSet};

use quiver_proto::groups::{
    GroupDescription, GroupSummary, PartitionLag, PartitionOffset, ResetTo, TopicPartition,
};
use quiver_proto::ErrorCode;

use crate::meta::{MetaError, MetaStore};
use crate::storage::{StorageError, TopicStore};
pub use coordinator::{Assignment, Coordinator, Heartbeat};
pub use offsets::OffsetStore;
pub use queues::{PollParams, Polled, Queues, Settle};

/// Why a group operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(
        "member {member:?} is not in group {group:?} (its session expired or it left): join again"
    )]
    UnknownMember { group: String, member: String },
    #[error("partition {partition} is not owned by this member of group {group:?} (it moved)")]
    NotPartitionOwner {
        group: String,
        partition: TopicPartition,
    },
    #[error("group {group:?} has live members consuming {topic:?}: stop them before a reset")]
    GroupActive { group: String, topic: String },
    #[error("group {group:?} has {max} members already")]
    Full { group: String, max: usize },
    #[error("invalid group name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("invalid batch in the log: {0}")]
    Batch(#[from] quiver_proto::BatchError),
    #[error("{0}")]
    Internal(String),
}

impl GroupError {
    pub fn code(&self) -> ErrorCode {
        match self {
            GroupError::UnknownMember { .. } => ErrorCode::UnknownMember,
            GroupError::NotPartitionOwner { .. } => ErrorCode::NotPartitionOwner,
            GroupError::GroupActive { .. } => ErrorCode::GroupActive,
            GroupError::InvalidName { .. } => ErrorCode::InvalidRequest,
            GroupError::Full { .. } => ErrorCode::ServerBusy,
            GroupError::Storage(e) => e.code(),
            GroupError::Meta(e) => e.code(),
            GroupError::Batch(_) | GroupError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Group names follow the topic name rules (they are parts of metadata keys).
pub fn validate_group(name: &str) -> Result<(), GroupError> {
    crate::storage::validate_name(name).map_err(|e| GroupError::InvalidName {
        name: name.to_owned(),
        reason: match e {
            StorageError::InvalidTopicName { reason, .. } => reason.to_string(),
            other => other.to_string(),
        },
    })
}

fn summary<'a>(out: &'a mut BTreeMap<String, GroupSummary>, name: &str) -> &'a mut GroupSummary {
    out.entry(name.to_owned()).or_insert_with(|| GroupSummary {
        name: name.to_owned(),
        members: 0,
        committed_partitions: 0,
        queue_topics: Vec::new(),
    })
}

/// Everything about groups the broker keeps.
#[derive(Debug)]
pub struct Groups {
    pub coordinator: Coordinator,
    pub offsets: OffsetStore,
    pub queues: Queues,
}

impl Groups {
    pub fn new(meta: MetaStore) -> Groups {
        Groups {
            coordinator: Coordinator::default(),
            offsets: OffsetStore::new(meta.clone()),
            queues: Queues::new(meta),
        }
    }

    /// Live consumer groups, groups with committed offsets, and queue-mode groups.
    pub fn list(&self) -> Result<Vec<GroupSummary>, GroupError> {
        let mut out: BTreeMap<String, GroupSummary> = BTreeMap::new();
        for (name, n) in self.coordinator.live_groups() {
            summary(&mut out, &name).members = n;
        }
        for (name, n) in self.offsets.groups()? {
            summary(&mut out, &name).committed_partitions = n;
        }
        for (name, topics) in self.queues.groups() {
            summary(&mut out, &name).queue_topics = topics;
        }
        Ok(out.into_values().collect())
    }

    /// Members, per-partition committed offsets and lag, and queue-mode state.
    pub fn describe(
        &self,
        group: &str,
        topics: &TopicStore,
    ) -> Result<GroupDescription, GroupError> {
        let (epoch, members) = self.coordinator.snapshot(group).unwrap_or_default();
        let committed = self.offsets.all(group)?;
        let mut names: BTreeSet<String> = committed.iter().map(|o| o.topic.clone()).collect();
        names.extend(members.iter().flat_map(|m| m.topics.iter().cloned()));
        let mut partitions = Vec::new();
        for name in names {
            let Ok(t) = topics.get(&name) else { continue };
            for (p, log) in t.partitions().iter().enumerate() {
                let tp = TopicPartition::new(name.clone(), p as u32);
                let stats = log.stats();
                let offset = committed
                    .iter()
                    .find(|o| o.topic == name && o.partition == p as u32)
                    .map(|o| o.offset);
                let owner = members
                    .iter()
                    .find(|m| m.owned.contains(&tp) || m.assigned.contains(&tp))
                    .map(|m| m.member_id.clone());
                partitions.push(PartitionLag {
                    topic: name.clone(),
                    partition: p as u32,
                    owner,
                    committed: offset,
                    log_start: stats.log_start,
                    log_end: stats.log_end,
                    lag: stats
                        .log_end
                        .saturating_sub(offset.unwrap_or(stats.log_start).max(stats.log_start)),
                });
            }
        }
        let log_end = |t: &str, p: u32| {
            topics
                .partition(t, p)
                .map(|l| l.stats().log_end)
                .unwrap_or(0)
        };
        Ok(GroupDescription {
            name: group.to_owned(),
            epoch,
            members,
            partitions,
            queues: self.queues.describe(group, &log_end),
        })
    }

    /// Where a reset moves the group's committed offsets on every partition of `topic` (the
    /// caller commits them).
    pub fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
        topics: &TopicStore,
    ) -> Result<Vec<PartitionOffset>, GroupError> {
        validate_group(group)?;
        if self.coordinator.consumes(group, topic) {
            return Err(GroupError::GroupActive {
                group: group.to_owned(),
                topic: topic.to_owned(),
            });
        }
        let t = topics.get(topic)?;
        let offsets: Vec<PartitionOffset> = t
            .partitions()
            .iter()
            .enumerate()
            .map(|(p, log)| {
                let s = log.stats();
                let offset = match to {
                    ResetTo::Earliest => s.log_start,
                    ResetTo::Latest => s.log_end,
                    ResetTo::Offset(o) => o.clamp(s.log_start, s.log_end),
                };
                PartitionOffset {
                    topic: topic.to_owned(),
                    partition: p as u32,
                    offset,
                }
            })
            .collect();
        Ok(offsets)
    }
}
