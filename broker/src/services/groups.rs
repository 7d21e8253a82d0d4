//! The consumer-group service: the coordinator protocol (heartbeat/join, leave, commit, fetch
//! offsets, list, describe, reset), one function per request kind. Values a peer sends are
//! bounded here before they reach the coordinator or the metadata store. Group state lives in
//! `groups/`.

use std::sync::Arc;
use std::time::Duration;

use quiver_proto::groups::{
    CommittedOffset, GroupRequest, GroupResponse, PartitionOffset, ResetTo, TopicPartition,
};

use crate::error::BrokerError;
use crate::groups::{validate_group, Groups, Heartbeat};
use crate::storage::TopicStore;

/// Most topics a member may consume, and partitions it may report or commit in one request.
const MAX_TOPICS: usize = 1_000;
const MAX_PARTITIONS: usize = 100_000;

#[derive(Debug)]
pub struct GroupService {
    groups: Arc<Groups>,
    topics: Arc<TopicStore>,
}

impl GroupService {
    pub fn new(groups: Arc<Groups>, topics: Arc<TopicStore>) -> GroupService {
        GroupService { groups, topics }
    }

    pub fn state(&self) -> &Groups {
        &self.groups
    }

    /// Answers one group request (blocking: commits flush the metadata store).
    pub fn handle(&self, req: GroupRequest) -> Result<GroupResponse, BrokerError> {
        match req {
            GroupRequest::Heartbeat {
                group,
                member_id,
                client_id,
                topics,
                session_timeout_ms,
                owned,
            } => self.heartbeat(Heartbeat {
                group,
                member_id,
                client_id,
                topics,
                session_timeout: Duration::from_millis(session_timeout_ms as u64),
                owned,
            }),
            GroupRequest::Leave { group, member_id } => self.leave(&group, &member_id),
            GroupRequest::Commit {
                group,
                member_id,
                offsets,
            } => self.commit(&group, member_id.as_deref(), &offsets),
            GroupRequest::FetchOffsets { group, partitions } => {
                self.fetch_offsets(&group, partitions)
            }
            GroupRequest::List => Ok(GroupResponse::Groups {
                groups: self.groups.list()?,
            }),
            GroupRequest::Describe { group } => {
                validate_group(&group)?;
                let d = self.groups.describe(&group, &self.topics)?;
                Ok(GroupResponse::Group(d))
            }
            GroupRequest::Reset { group, topic, to } => self.reset(&group, &topic, to),
        }
    }

    fn heartbeat(&self, hb: Heartbeat) -> Result<GroupResponse, BrokerError> {
        validate_group(&hb.group)?;
        BrokerError::too_many("topics", hb.topics.len(), MAX_TOPICS)?;
        BrokerError::too_many("owned partitions", hb.owned.len(), MAX_PARTITIONS)?;
        if hb.member_id.is_none() {
            // A join names its topics: an unknown one is a mistake to report, not to wait on.
            for t in &hb.topics {
                self.topics.get(t)?;
            }
        }
        let count = |t: &str| self.topics.get(t).ok().map(|t| t.partitions().len() as u32);
        let a = self.groups.coordinator.heartbeat(hb, &count)?;
        Ok(GroupResponse::Assignment {
            member_id: a.member_id,
            epoch: a.epoch,
            assigned: a.assigned,
            heartbeat_interval_ms: a.heartbeat_interval_ms,
        })
    }

    fn leave(&self, group: &str, member_id: &str) -> Result<GroupResponse, BrokerError> {
        self.groups.coordinator.leave(group, member_id)?;
        tracing::info!(%group, member = %member_id, "member left");
        Ok(GroupResponse::Left)
    }

    fn commit(
        &self,
        group: &str,
        member_id: Option<&str>,
        offsets: &[PartitionOffset],
    ) -> Result<GroupResponse, BrokerError> {
        self.check_commit(group, member_id, offsets, true)?;
        self.groups.offsets.commit(group, offsets)?;
        Ok(GroupResponse::Committed {
            count: offsets.len() as u32,
        })
    }

    /// Whether `member` may commit `offsets`: it owns the partitions, which exist, and (when
    /// `bounded`: this node holds the partitions' logs, a single broker) each offset is within
    /// its log.
    pub fn check_commit(
        &self,
        group: &str,
        member_id: Option<&str>,
        offsets: &[PartitionOffset],
        bounded: bool,
    ) -> Result<(), BrokerError> {
        validate_group(group)?;
        BrokerError::too_many("offsets", offsets.len(), MAX_PARTITIONS)?;
        for o in offsets {
            // Only offsets inside a partition that exists: no garbage in the metadata store.
            let end = self
                .topics
                .partition(&o.topic, o.partition)?
                .stats()
                .log_end;
            if bounded && o.offset > end {
                return Err(BrokerError::InvalidRequest(format!(
                    "offset {} of {}/{} is past the log end {end}",
                    o.offset, o.topic, o.partition
                )));
            }
        }
        Ok(self
            .groups
            .coordinator
            .check_commit(group, member_id, offsets)?)
    }

    fn fetch_offsets(
        &self,
        group: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<GroupResponse, BrokerError> {
        validate_group(group)?;
        BrokerError::too_many("partitions", partitions.len(), MAX_PARTITIONS)?;
        let offsets = partitions
            .into_iter()
            .map(|tp| {
                Ok(CommittedOffset {
                    offset: self.groups.offsets.get(group, &tp)?,
                    topic: tp.topic,
                    partition: tp.partition,
                })
            })
            .collect::<Result<Vec<_>, crate::meta::MetaError>>()?;
        Ok(GroupResponse::Offsets { offsets })
    }

    fn reset(&self, group: &str, topic: &str, to: ResetTo) -> Result<GroupResponse, BrokerError> {
        let offsets = self.plan_reset(group, topic, to)?;
        self.groups.offsets.commit(group, &offsets)?;
        tracing::info!(%group, %topic, ?to, "group offsets reset");
        Ok(GroupResponse::Reset { offsets })
    }

    /// The offsets a reset of `group` on `topic` commits (refused while members consume it).
    pub fn plan_reset(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<PartitionOffset>, BrokerError> {
        Ok(self.groups.reset_offsets(group, topic, to, &self.topics)?)
    }

    /// Expires members whose session ran out (the supervisor calls this periodically).
    pub fn expire_sessions(&self) {
        let expired = self.groups.coordinator.expire();
        if expired > 0 {
            tracing::info!(
                members = expired,
                "group members expired (no heartbeat within their session)"
            );
        }
    }
}
