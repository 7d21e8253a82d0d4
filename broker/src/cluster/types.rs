//! The types the metadata Raft group replicates: a command is an admin write as a client sent it
//! (plus what must be decided once, by the node that proposes it, so every node applies the same
//! thing), and its result is the answer the proposing client gets.

use std::io::Cursor;

use bytes::Bytes;
use openraft::BasicNode;
use quiver_proto::groups::PartitionOffset;
use quiver_proto::messages::{AdminRequest, AdminResponse};
use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// Where a member listens for its peers.
pub type Node = BasicNode;

/// What every node's certificate name starts with.
pub const NODE_NAME_PREFIX: &str = "quiver-node-";

/// The name a node's certificate carries and its peers check: `quiver-node-<id>`.
pub fn node_name(node_id: NodeId) -> String {
    format!("{NODE_NAME_PREFIX}{node_id}")
}

/// One replicated metadata change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaCommand {
    /// An admin write (topics, exchanges, plugins and their attachments, ACLs, quotas, mirrors,
    /// deleting users), applied on every node through the same services a single broker uses.
    /// `payload` carries a deployed component's bytes, so every node holds the component.
    Admin {
        /// Who asked (for the log; the request was authorized by the node it reached).
        principal: String,
        request: AdminRequest,
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// A token user. The token is drawn once, by the proposing node, and only its id and hash
    /// are replicated: the secret never enters the Raft log.
    CreateUser {
        principal: String,
        name: String,
        token_id: String,
        #[serde(with = "serde_bytes")]
        token_hash: Vec<u8>,
    },
    /// A producer id `principal` took under its fencing key `key`: every node fences the id
    /// the key held before (its batches are refused wherever its partitions are led), unless
    /// `current` (the id the caller held) is no longer the key's holder, which refuses this one.
    FenceProducer {
        principal: String,
        key: String,
        id: u64,
        current: Option<u64>,
    },
    /// A node says where it takes client connections (on every start), so metadata answers can
    /// send clients to a partition's leader.
    RegisterNode {
        node: NodeId,
        client_addr: String,
        /// Drawn by the node at each start: its own registration tells it that it has applied
        /// everything committed before (and may take up partition leadership).
        incarnation: u64,
    },
    /// A partition's leader shrinks or grows its in-sync replicas. Applied only while the
    /// partition's state is still at `version` (nothing changed it since the leader looked).
    SetIsr {
        topic: String,
        partition: u32,
        version: u64,
        isr: Vec<NodeId>,
    },
    /// The controller (the Raft leader) gives a partition a new leader, or none while no
    /// in-sync replica is alive. Applied only while the partition's state is still at
    /// `version` (an ISR change in between voids it); the leader epoch then grows by one.
    Elect {
        topic: String,
        partition: u32,
        version: u64,
        leader: Option<NodeId>,
        isr: Vec<NodeId>,
    },
    /// A consumer group's committed offsets (its coordinator checked the member owns the
    /// partitions): every node holds them, so a new coordinator resumes from them.
    CommitOffsets {
        group: String,
        offsets: Vec<PartitionOffset>,
    },
    /// Share partitions' settled points (queue mode), as their partitions' leaders moved them:
    /// a node taking the lead resumes from them.
    QueueSettled { points: Vec<SettledPoint> },
}

/// Where a share group's partition is settled up to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettledPoint {
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub start: u64,
}

/// A replicated partition's placement and leadership, as the metadata group holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The nodes holding a copy, the preferred leader first.
    pub replicas: Vec<NodeId>,
    /// The node taking writes and reads (none while no in-sync replica is alive).
    pub leader: Option<NodeId>,
    /// Grows with every election.
    pub epoch: u64,
    /// The replicas that have every acknowledged record, the leader included.
    pub isr: Vec<NodeId>,
    /// In-sync replicas an `acks=all` produce needs.
    pub min_insync: u32,
    /// Grows with every change (ISR or leader): a change decided on an older version of the
    /// state is not applied.
    #[serde(default)]
    pub version: u64,
}

impl MetaCommand {
    /// Whether a request changes replicated metadata (and so goes through Raft). Reads are
    /// answered by any node; producer ids and delayed records belong to partitions, not to the
    /// metadata group (a producer id taken under a fencing key goes through Raft as a
    /// [`MetaCommand::FenceProducer`]).
    pub fn replicates(request: &AdminRequest) -> bool {
        use AdminRequest as A;
        match request {
            A::CreateTopic { .. }
            | A::DeleteTopic { .. }
            | A::AddPartitions { .. }
            | A::DeployPlugin { .. }
            | A::RemovePlugin { .. }
            | A::AttachPlugin { .. }
            | A::DetachPlugin { .. }
            | A::AddMirror { .. }
            | A::RemoveMirror { .. }
            | A::CreateExchange { .. }
            | A::BindExchange { .. }
            | A::DeleteExchange { .. }
            | A::AttachExchangeRouter { .. }
            | A::DetachExchangeRouter { .. }
            | A::CreateUser { .. }
            | A::DeleteUser { .. }
            | A::AddAcl { .. }
            | A::RemoveAcl { .. }
            | A::SetQuota { .. }
            | A::RemoveQuota { .. } => true,
            A::ListTopics
            | A::DescribeTopic { .. }
            | A::Metadata
            | A::ClusterStatus
            | A::ListPlugins
            | A::DescribePlugin { .. }
            | A::ListPluginLogs { .. }
            | A::ListMirrors
            | A::DescribeMirror { .. }
            | A::ListExchanges
            | A::ListUsers
            | A::ListAcls
            | A::ListQuotas
            | A::WhoAmI
            | A::CancelDelayed { .. }
            | A::InitProducer { .. } => false,
        }
    }

    /// The values a command sets outright, each replacing what an earlier command set (a
    /// group's committed offset, a share partition's settled point), for commands made only of
    /// such: a later command setting all of them makes this one needless in a snapshot.
    pub fn replaces(&self) -> Option<Vec<String>> {
        match self {
            MetaCommand::CommitOffsets { group, offsets } => Some(
                offsets
                    .iter()
                    .map(|o| format!("offset/{group}/{}/{}", o.topic, o.partition))
                    .collect(),
            ),
            MetaCommand::QueueSettled { points } => Some(
                points
                    .iter()
                    .map(|p| format!("settled/{}/{}/{}", p.group, p.topic, p.partition))
                    .collect(),
            ),
            _ => None,
        }
    }

    pub fn admin(principal: &str, request: AdminRequest, payload: Bytes) -> MetaCommand {
        MetaCommand::Admin {
            principal: principal.to_owned(),
            request,
            payload: payload.to_vec(),
        }
    }
}

/// What applying a command answered: the admin answer, or the error's code and message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum MetaResult {
    Ok(AdminResponse),
    Err {
        code: u16,
        message: String,
    },
    /// Membership changes and blank entries answer nothing.
    None,
}

openraft::declare_raft_types!(
    /// The metadata group's type configuration.
    pub TypeConfig:
        D = MetaCommand,
        R = MetaResult,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, BasicNode>;
pub type Snapshot = openraft::storage::Snapshot<TypeConfig>;

/// A storage failure as openraft wants it (it stops the Raft node: the disk cannot be trusted).
pub fn io_error(what: impl std::fmt::Display) -> StorageError {
    openraft::StorageIOError::<NodeId>::write(openraft::AnyError::error(what)).into()
}
