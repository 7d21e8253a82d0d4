//! Typed frame headers: the control messages of the protocol, encoded as MessagePack maps
//! (`rmp_serde::to_vec_named`) so fields can be added without breaking older peers.
//!
//! Invariants: unknown fields are ignored when decoding (no `deny_unknown_fields`), and every field
//! added after version 1 must carry `#[serde(default)]`, so old and new peers read each other.
//! Record data never goes through serde: it travels as raw batches in the frame payload.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::{AclRule, AclSpec, PrincipalQuota, Quota, UserInfo};
use crate::codes::ErrorCode;
use crate::frame::{Frame, FrameError, FrameKind};
use crate::mirror::{MirrorInfo, MirrorSpec};
use crate::routing::{Binding, ExchangeInfo, ExchangeKind};
// Declared in `plugins` (which `routing` uses too); re-exported so `messages::…` paths keep working.
pub use crate::plugins::{
    AttachOptions, AttachmentInfo, ErrorPolicy, PluginDescription, PluginLogLine, PluginMemory,
    PluginRef, PluginVersionInfo,
};

/// The protocol version this build speaks (sent in `Hello`, echoed in `HelloOk`).
pub const PROTOCOL_VERSION: u16 = 1;
/// The TLS ALPN protocol id of this protocol version.
pub const ALPN: &[u8] = b"quiver/1";

/// Encodes a header as a MessagePack map with field names as keys.
pub fn encode_header<T: Serialize>(header: &T) -> Result<Bytes, FrameError> {
    rmp_serde::to_vec_named(header)
        .map(Bytes::from)
        .map_err(|e| FrameError::Header(e.to_string()))
}

/// Decodes a header sent by a peer; any mismatch is an error, never a panic.
pub fn decode_header<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FrameError> {
    rmp_serde::from_slice(bytes).map_err(|e| FrameError::Header(e.to_string()))
}

/// A header type and the frame kind that carries it, so encoding and decoding cannot mix them up.
pub trait Message: Serialize + DeserializeOwned {
    const KIND: FrameKind;
}

impl Frame {
    /// A frame of `kind` with `header` encoded as its header.
    pub fn new<T: Serialize>(
        kind: FrameKind,
        header: &T,
        payload: Bytes,
    ) -> Result<Frame, FrameError> {
        Frame::from_parts(kind, encode_header(header)?, payload)
    }

    /// A frame carrying `msg`, of the kind that belongs to it.
    pub fn message<M: Message>(msg: &M, payload: Bytes) -> Result<Frame, FrameError> {
        Frame::new(M::KIND, msg, payload)
    }

    /// An `Error` frame.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Result<Frame, FrameError> {
        Frame::message(&ErrorBody::new(code, message), Bytes::new())
    }

    /// Decodes the header as `M`, after checking that the frame is of `M`'s kind.
    pub fn decode<M: Message>(&self) -> Result<M, FrameError> {
        if self.kind != M::KIND {
            return Err(FrameError::UnexpectedKind {
                expected: M::KIND,
                got: self.kind,
            });
        }
        decode_header(&self.header)
    }

    /// Decodes a reply that is either `M` or an `Error` frame: the outer error means the frame itself
    /// is bad, the inner one that the peer refused the request.
    pub fn decode_reply<M: Message>(&self) -> Result<Result<M, ErrorBody>, FrameError> {
        match self.kind {
            FrameKind::Error => self.decode::<ErrorBody>().map(Err),
            _ => self.decode::<M>().map(Ok),
        }
    }
}

/// Header of an `Error` frame, sent in place of the reply to a failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// An [`ErrorCode`] number; unknown numbers read as `Unknown`.
    pub code: u16,
    pub message: String,
    /// The failed request's id, when it had one (produce and fetch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<u64>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code: code.as_u16(),
            message: message.into(),
            request_id: None,
        }
    }

    /// Ties the error to a pipelined request.
    pub fn for_request(mut self, request_id: u64) -> ErrorBody {
        self.request_id = Some(request_id);
        self
    }

    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::from(self.code)
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_code(), self.message)
    }
}

impl std::error::Error for ErrorBody {}

/// First frame of a connection, from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol_version: u16,
    pub client_id: String,
    /// Bearer token for token auth; absent with mTLS or no auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The broker's answer to `Hello`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloOk {
    pub protocol_version: u16,
    pub server_version: String,
    /// The broker's limit on the length field of frames it receives.
    pub max_frame: u32,
    pub broker_id: String,
}

/// How durable a produce must be before the broker answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acks {
    /// No reply at all; errors are only logged and counted by the broker.
    None,
    /// Reply once appended (in the page cache).
    Leader,
    /// Reply once fsync'd.
    All,
}

/// Header of a `Produce` frame; the payload is exactly one record batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceRequest {
    pub request_id: u64,
    pub topic: String,
    /// `None`: the broker picks a partition round-robin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    pub acks: Acks,
    /// `topic` names an exchange: each record goes to the bound topics it matches (by its key as
    /// the routing key, or its headers); `partition` must be absent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exchange: bool,
}

/// Header of a `ProduceOk` frame (no payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceResponse {
    pub request_id: u64,
    pub partition: u32,
    pub base_offset: u64,
    pub last_offset: u64,
    /// Offset the partition's next record will get.
    pub log_end: u64,
    /// Records appended (`last_offset - base_offset + 1`, or 0 when the topic's ingest pipeline
    /// dropped them all).
    #[serde(default)]
    pub appended: u32,
    /// The topic's ingest pipeline filtered or rewrote the batch, so the appended records no longer
    /// map one to one onto the records sent: per-record offsets are unknown.
    #[serde(default)]
    pub transformed: bool,
    /// An idempotent producer sent this batch before and it was appended then: nothing was
    /// appended now, and the offsets are those of the first append (when still known).
    #[serde(default)]
    pub duplicate: bool,
    /// Records held for delayed delivery (not appended yet): their ids are
    /// `delay_first_id .. delay_first_id + delayed`, in the order they were sent. The offsets
    /// above then count only the records appended now (those without a delay), in their order.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delayed: u32,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub delay_first_id: u64,
    /// Milliseconds this answer was held back because the principal is over its produce quota.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttle_ms: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// Where a fetch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetSpec {
    /// The partition's log start.
    Earliest,
    /// The partition's log end: only records produced from now on.
    Latest,
    /// An exact offset.
    At(u64),
    /// The first record whose timestamp (ms since the epoch) is at or after this one.
    Timestamp(i64),
}

/// Header of a `Fetch` frame (no payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    pub request_id: u64,
    pub topic: String,
    pub partition: u32,
    pub offset: OffsetSpec,
    /// Soft limit on the payload: the first batch is sent whole even when larger.
    pub max_bytes: u32,
    /// Longest time the broker may hold the request waiting for `min_bytes`.
    pub max_wait_ms: u32,
    /// Answer as soon as this many bytes are available (0: answer at once).
    pub min_bytes: u32,
    /// Native filter expression applied by the broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// A deployed filter plugin run by the broker on the records before they are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
}

/// Header of a `FetchOk` frame; the payload is zero or more whole record batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResponse {
    pub request_id: u64,
    pub partition: u32,
    pub log_start: u64,
    pub log_end: u64,
    /// Where the next fetch should start.
    pub next_offset: u64,
    /// Records in the payload at or after `offset` (records before it are not counted).
    pub records: u32,
    /// The offset this fetch started at: the request's `OffsetSpec` resolved (earliest, latest and
    /// timestamps become offsets). Records below it in the first batch are to be skipped.
    #[serde(default)]
    pub offset: u64,
    /// Milliseconds this answer was held back because the principal is over its fetch quota.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub throttle_ms: u32,
}

/// Header of an `Admin` frame: one operation per stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum AdminRequest {
    CreateTopic {
        name: String,
        partitions: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retention_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retention_bytes: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        segment_bytes: Option<u64>,
        /// Copies of each partition, on different nodes (a cluster's default when absent; 1 on
        /// a single broker, which refuses more).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replication_factor: Option<u32>,
        /// In-sync replicas an `acks=all` produce needs (1 when absent).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_insync: Option<u32>,
    },
    DeleteTopic {
        name: String,
    },
    ListTopics,
    DescribeTopic {
        name: String,
    },
    AddPartitions {
        name: String,
        /// Partitions to add (not the new total).
        count: u32,
    },
    Metadata,
    /// The cluster as this node sees it: members, the Raft leader and term (an error on a broker
    /// that is not a cluster node).
    ClusterStatus,
    /// Deploys the component carried in the frame payload.
    DeployPlugin {
        name: String,
        /// `None`: one more than the highest numeric version deployed under `name` (1 at first).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
    },
    ListPlugins,
    /// `name` is `NAME` (every version) or `NAME@VERSION`.
    DescribePlugin {
        name: String,
    },
    /// The log lines of plugin `name` after the cursor `after` (every line still buffered when
    /// `None`), of one `version` or all. A long-poll: with nothing to answer, the broker holds the
    /// request up to `max_wait_ms` (at most 30 s) and answers as soon as a line is logged.
    ListPluginLogs {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
        #[serde(default)]
        max_wait_ms: u32,
    },
    /// `name` is `NAME` (every version) or `NAME@VERSION`; refused while attached.
    RemovePlugin {
        name: String,
    },
    /// Adds a stage to the topic's ingest pipeline, or replaces (hot-swaps) the stage of the same
    /// plugin name in place.
    AttachPlugin {
        topic: String,
        /// Flattened: its fields sit beside `topic` in the map, as they did before it was a type.
        #[serde(flatten)]
        options: AttachOptions,
    },
    DetachPlugin {
        topic: String,
        /// The plugin name (any version).
        plugin: String,
    },
    /// A fresh producer id for idempotent produce: batches carrying it and per-partition
    /// sequence numbers are appended once however often they are sent. With a fencing key, the
    /// id the same principal took before under that key is fenced: the broker refuses its
    /// batches from then on, and any append of one in progress has finished when this answers.
    InitProducer {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fencing_key: Option<String>,
        /// The id the caller holds under the key (it takes a new one after a batch failed for
        /// good): answered `ProducerFenced` if a newer producer took the key since.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        current_id: Option<u64>,
    },
    CreateExchange {
        name: String,
        kind: ExchangeKind,
        /// An existing topic for records that match no binding.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        alternate: Option<String>,
    },
    /// Binds `binding.topic` (an existing topic) to the exchange.
    BindExchange {
        exchange: String,
        binding: Binding,
    },
    ListExchanges,
    DeleteExchange {
        name: String,
    },
    /// Attaches a router plugin to an exchange (replacing any router it had): the plugin, not the
    /// bindings, then decides each record's destination topics.
    AttachExchangeRouter {
        exchange: String,
        /// Flattened like `AttachPlugin`'s.
        #[serde(flatten)]
        options: AttachOptions,
    },
    DetachExchangeRouter {
        exchange: String,
    },
    /// Cancels a record held for delayed delivery (its id from the produce answer).
    CancelDelayed {
        id: u64,
    },
    /// Creates a token user; the answer carries its token, the only time it is shown.
    CreateUser {
        name: String,
    },
    /// Deletes a token user: its token stops working and its open connections are closed.
    DeleteUser {
        name: String,
    },
    ListUsers,
    AddAcl {
        rule: AclSpec,
    },
    ListAcls,
    RemoveAcl {
        id: u64,
    },
    /// The principal this connection acts as, and whether the broker checks ACLs.
    WhoAmI,
    /// Sets (replaces) the quota of `principal` (`*`: the default), over the config file's.
    SetQuota {
        principal: String,
        quota: Quota,
    },
    /// Every quota in force: the config file's and those set at runtime (these win).
    ListQuotas,
    /// Removes a quota set at runtime; the config file's (or the default) applies again.
    RemoveQuota {
        principal: String,
    },
    /// Adds (or replaces) a mirror forwarding this broker's topics to a core broker.
    AddMirror {
        spec: MirrorSpec,
    },
    ListMirrors,
    DescribeMirror {
        name: String,
    },
    /// Stops a mirror and forgets its positions (a mirror added again starts afresh).
    RemoveMirror {
        name: String,
    },
}

/// A cluster node's view of its cluster (`quiver cluster status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The node that answered.
    pub node_id: u64,
    /// The Raft leader this node knows of (none during an election).
    pub leader: Option<u64>,
    /// The Raft term this node is in.
    pub term: u64,
    /// The last metadata log index applied on this node (equal on every caught-up node).
    pub applied: u64,
    /// Members of the metadata group, by id.
    pub nodes: Vec<ClusterNodeStatus>,
    /// Every replicated partition: its replicas, leader, leader epoch and in-sync replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<PartitionReplicas>,
}

/// Where a partition's copies live in a cluster and which one leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionReplicas {
    pub topic: String,
    pub partition: u32,
    /// The nodes holding a copy, the preferred leader first.
    pub replicas: Vec<u64>,
    /// The node that takes produce and fetch requests (none while no in-sync replica is alive).
    pub leader: Option<u64>,
    /// The leader's client address, for requests sent to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_addr: Option<String>,
    /// Grows with every change of leader; requests and replicas of an older epoch are fenced.
    pub epoch: u64,
    /// The replicas that have everything the leader acknowledged (the leader included).
    pub isr: Vec<u64>,
    /// In-sync replicas an `acks=all` produce needs.
    pub min_insync: u32,
    /// As the answering node knows it: the offset below which every in-sync replica has the
    /// records (what consumers may read). Only the leader knows it exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_watermark: Option<u64>,
}

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNodeStatus {
    pub id: u64,
    /// Its peer (Raft) address.
    pub addr: String,
    /// A voter of the metadata group (otherwise a learner).
    pub voter: bool,
    /// Where the node takes client connections, as it registered (none until it has started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_addr: Option<String>,
    /// As the leader sees it: the last metadata log index the node has (leader only; `None`
    /// when this node is not the leader).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<u64>,
}

/// Header of an `AdminOk` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum AdminResponse {
    /// The topic as created (the same description a topic list carries).
    TopicCreated(TopicSummary),
    TopicDeleted {
        name: String,
    },
    Topics {
        topics: Vec<TopicSummary>,
    },
    Topic(TopicDescription),
    Metadata {
        broker_id: String,
        version: String,
        listen: String,
        topics: Vec<TopicSummary>,
        /// On a cluster node: each replicated partition's leader and its client address, so
        /// clients send a partition's requests to its leader.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        leaders: Vec<PartitionReplicas>,
    },
    ClusterStatus(ClusterStatus),
    PluginDeployed {
        plugin: PluginVersionInfo,
        /// Milliseconds spent compiling (0 on a compile-cache hit).
        compile_ms: u64,
        /// The compiled artifact came from the on-disk cache.
        cached: bool,
    },
    Plugins {
        plugins: Vec<PluginVersionInfo>,
    },
    Plugin {
        versions: Vec<PluginVersionInfo>,
        attachments: Vec<AttachmentInfo>,
        /// The last log lines of the plugin's instances since the broker started, oldest first.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        logs: Vec<String>,
        /// All plugins' memory against the broker-wide budget (absent from older brokers).
        #[serde(default)]
        memory: PluginMemory,
    },
    PluginRemoved {
        name: String,
        versions: Vec<String>,
    },
    /// The answer to `ListPluginLogs`: lines oldest first.
    PluginLogs {
        name: String,
        lines: Vec<PluginLogLine>,
        /// The cursor to pass as `after` next time (the last line looked at, also when the
        /// version filter left it out; 0 before the first line).
        next: u64,
        /// Lines after the request's `after` that the bounded buffer no longer holds.
        #[serde(default, skip_serializing_if = "is_zero_u64")]
        dropped: u64,
    },
    /// The topic's pipeline after an attach or detach.
    Pipeline {
        topic: String,
        stages: Vec<AttachmentInfo>,
    },
    Producer {
        producer_id: u64,
    },
    Exchange(ExchangeInfo),
    Exchanges {
        exchanges: Vec<ExchangeInfo>,
    },
    ExchangeDeleted {
        name: String,
    },
    DelayCancelled {
        id: u64,
        /// The topic the record would have gone to.
        topic: String,
    },
    UserCreated {
        name: String,
        /// The secret to pass as `--token`: shown once, stored only as a hash.
        token: String,
    },
    UserDeleted {
        name: String,
        /// Connections of the user that were closed.
        closed_connections: u64,
    },
    Users {
        users: Vec<UserInfo>,
    },
    AclAdded(AclRule),
    Acls {
        rules: Vec<AclRule>,
    },
    AclRemoved {
        id: u64,
    },
    Identity {
        principal: String,
        /// Authentication and ACL checks are on.
        auth: bool,
    },
    Quotas {
        quotas: Vec<PrincipalQuota>,
    },
    /// The answer to `AddMirror` and `DescribeMirror`.
    Mirror(MirrorInfo),
    Mirrors {
        mirrors: Vec<MirrorInfo>,
    },
    MirrorRemoved {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicDescription {
    pub name: String,
    pub partitions: Vec<PartitionDescription>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// The ingest pipeline, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipeline: Vec<AttachmentInfo>,
    /// Records held for delayed delivery to this topic.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub pending_delayed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionDescription {
    pub partition: u32,
    pub log_start: u64,
    pub log_end: u64,
    pub size_bytes: u64,
    pub segments: u32,
}

impl Message for Hello {
    const KIND: FrameKind = FrameKind::Hello;
}
impl Message for HelloOk {
    const KIND: FrameKind = FrameKind::HelloOk;
}
impl Message for ProduceRequest {
    const KIND: FrameKind = FrameKind::Produce;
}
impl Message for ProduceResponse {
    const KIND: FrameKind = FrameKind::ProduceOk;
}
impl Message for FetchRequest {
    const KIND: FrameKind = FrameKind::Fetch;
}
impl Message for FetchResponse {
    const KIND: FrameKind = FrameKind::FetchOk;
}
impl Message for AdminRequest {
    const KIND: FrameKind = FrameKind::Admin;
}
impl Message for AdminResponse {
    const KIND: FrameKind = FrameKind::AdminOk;
}
impl Message for ErrorBody {
    const KIND: FrameKind = FrameKind::Error;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::DEFAULT_MAX_FRAME;
    use bytes::BytesMut;
    use proptest::option::of;
    use proptest::prelude::*;

    /// Frame encode → check → parse → decode, with the payload carried through untouched.
    fn round_trip<M: Message + Clone + PartialEq + std::fmt::Debug>(
        msg: &M,
        payload: &[u8],
    ) -> Result<(), TestCaseError> {
        let frame = Frame::message(msg, Bytes::copy_from_slice(payload)).map_err(fail)?;
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        let total = buf.len();
        prop_assert_eq!(Frame::check(&buf, DEFAULT_MAX_FRAME), Ok(Some(total)));
        let parsed = Frame::parse(&mut buf, DEFAULT_MAX_FRAME).map_err(fail)?;
        let parsed = parsed.ok_or_else(|| TestCaseError::fail("incomplete"))?;
        prop_assert!(buf.is_empty());
        prop_assert_eq!(parsed.kind, M::KIND);
        prop_assert_eq!(&parsed.payload[..], payload);
        prop_assert_eq!(&parsed.decode::<M>().map_err(fail)?, msg);
        // An Error frame is the refusal branch of any reply, so only replies of other kinds are `Ok`.
        let reply = parsed.decode_reply::<M>().map_err(fail)?;
        prop_assert_eq!(reply.is_ok(), M::KIND != FrameKind::Error);
        Ok(())
    }

    fn fail(e: FrameError) -> TestCaseError {
        TestCaseError::fail(e.to_string())
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9._\u{e9}-]{0,16}"
    }

    fn acks() -> impl Strategy<Value = Acks> {
        prop_oneof![Just(Acks::None), Just(Acks::Leader), Just(Acks::All)]
    }

    fn offset_spec() -> impl Strategy<Value = OffsetSpec> {
        prop_oneof![
            Just(OffsetSpec::Earliest),
            Just(OffsetSpec::Latest),
            any::<u64>().prop_map(OffsetSpec::At),
            any::<i64>().prop_map(OffsetSpec::Timestamp),
        ]
    }

    fn summary() -> impl Strategy<Value = TopicSummary> {
        (name(), any::<u32>()).prop_map(|(name, partitions)| TopicSummary { name, partitions })
    }

    fn partition_description() -> impl Strategy<Value = PartitionDescription> {
        (
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
        )
            .prop_map(|(partition, log_start, log_end, size_bytes, segments)| {
                PartitionDescription {
                    partition,
                    log_start,
                    log_end,
                    size_bytes,
                    segments,
                }
            })
    }

    fn topic_description() -> impl Strategy<Value = TopicDescription> {
        let parts = proptest::collection::vec(partition_description(), 0..4);
        (
            name(),
            parts,
            of(any::<u64>()),
            of(any::<u64>()),
            any::<u64>(),
            any::<i64>(),
        )
            .prop_map(
                |(name, partitions, retention_ms, retention_bytes, segment_bytes, created_ms)| {
                    TopicDescription {
                        name,
                        partitions,
                        retention_ms,
                        retention_bytes,
                        segment_bytes,
                        created_ms,
                        pipeline: Vec::new(),
                        pending_delayed: segment_bytes / 3,
                    }
                },
            )
    }

    fn config() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::vec((name(), name()), 0..3)
    }

    fn policy() -> impl Strategy<Value = ErrorPolicy> {
        prop_oneof![
            Just(ErrorPolicy::DeadLetter),
            Just(ErrorPolicy::Skip),
            Just(ErrorPolicy::Reject)
        ]
    }

    fn attach_options() -> impl Strategy<Value = AttachOptions> {
        (
            (name(), config(), policy()),
            (of(any::<u32>()), of(any::<u32>())),
        )
            .prop_map(|((plugin, config, on_error), (timeout_ms, memory_mb))| {
                AttachOptions {
                    plugin,
                    config,
                    on_error,
                    timeout_ms,
                    memory_mb,
                }
            })
    }

    fn plugin_requests() -> impl Strategy<Value = AdminRequest> {
        let attach = (name(), attach_options())
            .prop_map(|(topic, options)| AdminRequest::AttachPlugin { topic, options });
        prop_oneof![
            (name(), of(name()))
                .prop_map(|(name, version)| AdminRequest::DeployPlugin { name, version }),
            Just(AdminRequest::ListPlugins),
            name().prop_map(|name| AdminRequest::DescribePlugin { name }),
            name().prop_map(|name| AdminRequest::RemovePlugin { name }),
            (name(), of(name()), of(any::<u64>()), any::<u32>()).prop_map(
                |(name, version, after, max_wait_ms)| AdminRequest::ListPluginLogs {
                    name,
                    version,
                    after,
                    max_wait_ms,
                }
            ),
            attach,
            (name(), name())
                .prop_map(|(topic, plugin)| AdminRequest::DetachPlugin { topic, plugin }),
            (name(), attach_options()).prop_map(|(exchange, options)| {
                AdminRequest::AttachExchangeRouter { exchange, options }
            }),
        ]
    }

    /// The two attach requests exactly as they were declared before [`AttachOptions`] existed:
    /// the wire format the flattened declarations must keep, byte for byte.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "op", rename_all = "kebab-case")]
    enum OldAttach {
        AttachPlugin {
            topic: String,
            plugin: String,
            #[serde(default)]
            config: Vec<(String, String)>,
            #[serde(default)]
            on_error: ErrorPolicy,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            timeout_ms: Option<u32>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            memory_mb: Option<u32>,
        },
        AttachExchangeRouter {
            exchange: String,
            plugin: String,
            #[serde(default)]
            config: Vec<(String, String)>,
            #[serde(default)]
            on_error: ErrorPolicy,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            timeout_ms: Option<u32>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            memory_mb: Option<u32>,
        },
    }

    /// The old-shape twin of an attach request.
    fn old_attach(req: &AdminRequest) -> OldAttach {
        match req.clone() {
            AdminRequest::AttachPlugin { topic, options: o } => OldAttach::AttachPlugin {
                topic,
                plugin: o.plugin,
                config: o.config,
                on_error: o.on_error,
                timeout_ms: o.timeout_ms,
                memory_mb: o.memory_mb,
            },
            AdminRequest::AttachExchangeRouter {
                exchange,
                options: o,
            } => OldAttach::AttachExchangeRouter {
                exchange,
                plugin: o.plugin,
                config: o.config,
                on_error: o.on_error,
                timeout_ms: o.timeout_ms,
                memory_mb: o.memory_mb,
            },
            other => panic!("not an attach request: {other:?}"),
        }
    }

    fn version_info() -> impl Strategy<Value = PluginVersionInfo> {
        (name(), name(), name(), any::<u64>(), any::<i64>()).prop_map(
            |(name, version, sha256, size_bytes, deployed_ms)| PluginVersionInfo {
                name,
                version,
                world: "filter".into(),
                sha256,
                size_bytes,
                deployed_ms,
            },
        )
    }

    fn attachment() -> impl Strategy<Value = AttachmentInfo> {
        (
            (name(), name(), name(), config(), policy()),
            any::<(u32, u32, bool, u64, u64)>(),
            of(name()),
        )
            .prop_map(
                |((topic, plugin, version, config, on_error), nums, last_error)| {
                    let (timeout_ms, memory_mb, healthy, calls, failures) = nums;
                    AttachmentInfo {
                        topic,
                        plugin,
                        version,
                        world: "transform".into(),
                        config,
                        on_error,
                        timeout_ms,
                        memory_mb,
                        healthy,
                        calls,
                        failures,
                        last_error,
                        exchange: healthy,
                        memory_in_use_bytes: calls / 3,
                    }
                },
            )
    }

    fn log_line() -> impl Strategy<Value = PluginLogLine> {
        (any::<(u64, i64)>(), name(), name(), of(name()), name()).prop_map(
            |((seq, timestamp_ms), version, level, source, text)| PluginLogLine {
                seq,
                timestamp_ms,
                version,
                level,
                source,
                text,
            },
        )
    }

    fn plugin_responses() -> impl Strategy<Value = AdminResponse> {
        let infos = || proptest::collection::vec(version_info(), 0..3);
        let stages = || proptest::collection::vec(attachment(), 0..3);
        prop_oneof![
            (version_info(), any::<u64>(), any::<bool>()).prop_map(
                |(plugin, compile_ms, cached)| {
                    AdminResponse::PluginDeployed {
                        plugin,
                        compile_ms,
                        cached,
                    }
                }
            ),
            infos().prop_map(|plugins| AdminResponse::Plugins { plugins }),
            (
                infos(),
                stages(),
                proptest::collection::vec(name(), 0..2),
                any::<(u64, u64)>()
            )
                .prop_map(|(versions, attachments, logs, (used, budget))| {
                    AdminResponse::Plugin {
                        versions,
                        attachments,
                        logs,
                        memory: PluginMemory {
                            in_use_bytes: used,
                            budget_bytes: budget,
                        },
                    }
                }),
            (name(), proptest::collection::vec(name(), 0..3))
                .prop_map(|(name, versions)| AdminResponse::PluginRemoved { name, versions }),
            (
                name(),
                proptest::collection::vec(log_line(), 0..3),
                any::<(u64, u64)>()
            )
                .prop_map(|(name, lines, (next, dropped))| AdminResponse::PluginLogs {
                    name,
                    lines,
                    next,
                    dropped,
                }),
            (name(), stages())
                .prop_map(|(topic, stages)| AdminResponse::Pipeline { topic, stages }),
        ]
    }

    fn admin_request() -> impl Strategy<Value = AdminRequest> {
        let create = (
            name(),
            any::<u32>(),
            of(any::<u64>()),
            of(any::<u64>()),
            of(any::<u64>()),
        )
            .prop_map(
                |(name, partitions, retention_ms, retention_bytes, segment_bytes)| {
                    AdminRequest::CreateTopic {
                        name,
                        partitions,
                        retention_ms,
                        retention_bytes,
                        segment_bytes,
                        replication_factor: None,
                        min_insync: None,
                    }
                },
            );
        prop_oneof![
            create,
            name().prop_map(|name| AdminRequest::DeleteTopic { name }),
            Just(AdminRequest::ListTopics),
            name().prop_map(|name| AdminRequest::DescribeTopic { name }),
            (name(), any::<u32>())
                .prop_map(|(name, count)| AdminRequest::AddPartitions { name, count }),
            Just(AdminRequest::Metadata),
            plugin_requests(),
        ]
    }

    fn admin_response() -> impl Strategy<Value = AdminResponse> {
        let topics = || proptest::collection::vec(summary(), 0..4);
        prop_oneof![
            (name(), any::<u32>()).prop_map(|(name, partitions)| AdminResponse::TopicCreated(
                TopicSummary { name, partitions }
            )),
            name().prop_map(|name| AdminResponse::TopicDeleted { name }),
            topics().prop_map(|topics| AdminResponse::Topics { topics }),
            topic_description().prop_map(AdminResponse::Topic),
            (name(), name(), name(), topics()).prop_map(|(broker_id, version, listen, topics)| {
                AdminResponse::Metadata {
                    broker_id,
                    version,
                    listen,
                    topics,
                    leaders: Vec::new(),
                }
            }),
            plugin_responses(),
        ]
    }

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..128)
    }

    proptest! {
        #[test]
        fn hello_round_trip(v in any::<u16>(), client_id in name(), token in of(name())) {
            round_trip(&Hello { protocol_version: v, client_id, token }, &[])?;
        }

        #[test]
        fn hello_ok_round_trip(v in any::<u16>(), server_version in name(), max_frame in any::<u32>(), broker_id in name()) {
            round_trip(&HelloOk { protocol_version: v, server_version, max_frame, broker_id }, &[])?;
        }

        #[test]
        fn produce_round_trip(request_id in any::<u64>(), topic in name(), partition in of(any::<u32>()), acks in acks(), payload in payload()) {
            round_trip(&ProduceRequest { request_id, topic, partition, acks, exchange: false }, &payload)?;
        }

        #[test]
        fn produce_ok_round_trip(request_id in any::<u64>(), partition in any::<u32>(), base in any::<u64>(), last in any::<u64>(), end in any::<u64>()) {
            let msg = ProduceResponse { request_id, partition, base_offset: base, last_offset: last, log_end: end, appended: 3, transformed: true, duplicate: false, delayed: partition % 3, delay_first_id: end, throttle_ms: 0 };
            round_trip(&msg, &[])?;
        }

        #[test]
        fn fetch_round_trip(
            request_id in any::<u64>(), topic in name(), partition in any::<u32>(), offset in offset_spec(),
            limits in any::<(u32, u32, u32)>(), filter in of("[ -~]{0,24}"),
            plugin in of((name(), config()).prop_map(|(name, config)| PluginRef { name, config })),
        ) {
            let (max_bytes, max_wait_ms, min_bytes) = limits;
            let msg = FetchRequest { request_id, topic, partition, offset, max_bytes, max_wait_ms, min_bytes, filter, plugin };
            round_trip(&msg, &[])?;
        }

        #[test]
        fn fetch_ok_round_trip(ids in any::<(u64, u32, u64, u64, u64, u32)>(), payload in payload()) {
            let (request_id, partition, log_start, log_end, next_offset, records) = ids;
            round_trip(&FetchResponse { request_id, partition, log_start, log_end, next_offset, records, offset: log_start, throttle_ms: records }, &payload)?;
        }

        #[test]
        fn admin_round_trip(req in admin_request(), resp in admin_response()) {
            round_trip(&req, &[])?;
            round_trip(&resp, &[])?;
        }

        #[test]
        fn attach_requests_encode_as_before(target in name(), options in attach_options(), router in any::<bool>()) {
            let req = if router {
                AdminRequest::AttachExchangeRouter { exchange: target, options }
            } else {
                AdminRequest::AttachPlugin { topic: target, options }
            };
            let old = old_attach(&req);
            let new_bytes = encode_header(&req).map_err(fail)?;
            let old_bytes = encode_header(&old).map_err(fail)?;
            prop_assert_eq!(&new_bytes[..], &old_bytes[..]);
            // Either side reads what the other wrote.
            prop_assert_eq!(decode_header::<AdminRequest>(&old_bytes).map_err(fail)?, req);
            prop_assert_eq!(decode_header::<OldAttach>(&new_bytes).map_err(fail)?, old);
        }

        #[test]
        fn error_round_trip(code in any::<u16>(), message in "\\PC{0,40}", request_id in of(any::<u64>())) {
            round_trip(&ErrorBody { code, message, request_id }, &[])?;
        }

        #[test]
        fn arbitrary_headers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_header::<Hello>(&data);
            let _ = decode_header::<FetchRequest>(&data);
            let _ = decode_header::<AdminRequest>(&data);
            let _ = decode_header::<AdminResponse>(&data);
            let _ = decode_header::<ErrorBody>(&data);
        }
    }

    #[test]
    fn topic_created_encodes_as_before() {
        /// The answer's shape before it carried a `TopicSummary`.
        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "kebab-case")]
        enum Old {
            TopicCreated { name: String, partitions: u32 },
        }
        let now = AdminResponse::TopicCreated(TopicSummary {
            name: "orders".into(),
            partitions: 3,
        });
        let old = Old::TopicCreated {
            name: "orders".into(),
            partitions: 3,
        };
        let bytes = encode_header(&now).unwrap();
        assert_eq!(bytes, encode_header(&old).unwrap());
        assert_eq!(decode_header::<AdminResponse>(&bytes).unwrap(), now);
    }

    #[test]
    fn headers_are_maps_with_named_fields() {
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            client_id: "c".into(),
            token: None,
        };
        let bytes = encode_header(&hello).unwrap();
        // fixmap of 2 entries: the absent token is left out, not sent as nil.
        assert_eq!(bytes[0], 0x82);
        assert!(bytes.windows(9).any(|w| w == b"client_id"));
    }

    #[test]
    fn hello_frame_matches_the_documented_bytes() {
        let hello = Hello {
            protocol_version: 1,
            client_id: "c".into(),
            token: None,
        };
        let mut buf = BytesMut::new();
        Frame::message(&hello, Bytes::new())
            .unwrap()
            .encode(&mut buf);
        let want: Vec<u8> = [
            &[0x24, 0, 0, 0, 0x01, 0x1f, 0, 0, 0, 0x82, 0xb0][..],
            b"protocol_version",
            &[0x01, 0xa9],
            b"client_id",
            &[0xa1, b'c'],
        ]
        .concat();
        assert_eq!(&buf[..], &want[..]);
    }

    #[test]
    fn enum_encodings_are_documented_ones() {
        // docs/protocol.md promises these exact shapes to non-Rust clients.
        let earliest: Vec<u8> = [&[0xa8][..], b"earliest"].concat();
        assert_eq!(
            encode_header(&OffsetSpec::Earliest).unwrap()[..],
            earliest[..]
        );
        let at: Vec<u8> = [&[0x81, 0xa2][..], b"at", &[0x05]].concat();
        assert_eq!(encode_header(&OffsetSpec::At(5)).unwrap()[..], at[..]);
        let acks: Vec<u8> = [&[0xa3][..], b"all"].concat();
        assert_eq!(encode_header(&Acks::All).unwrap()[..], acks[..]);
        let list: Vec<u8> = [&[0x81, 0xa2][..], b"op", &[0xab], b"list-topics"].concat();
        assert_eq!(
            encode_header(&AdminRequest::ListTopics).unwrap()[..],
            list[..]
        );
    }

    #[test]
    fn attach_plugin_matches_the_documented_bytes() {
        // docs/protocol.md's `attach-plugin` row: the options sit beside `topic` in one map, an
        // absent limit is left out.
        let req = AdminRequest::AttachPlugin {
            topic: "t".into(),
            options: AttachOptions::new("mask@2")
                .config("fields", "card")
                .on_error(ErrorPolicy::Skip)
                .timeout_ms(250),
        };
        let want: Vec<u8> = [
            &[0x86, 0xa2][..],
            b"op",
            &[0xad],
            b"attach-plugin",
            &[0xa5],
            b"topic",
            &[0xa1, b't', 0xa6],
            b"plugin",
            &[0xa6],
            b"mask@2",
            &[0xa6],
            b"config",
            &[0x91, 0x92, 0xa6],
            b"fields",
            &[0xa4],
            b"card",
            &[0xa8],
            b"on_error",
            &[0xa4],
            b"skip",
            &[0xaa],
            b"timeout_ms",
            &[0xcc, 250],
        ]
        .concat();
        assert_eq!(encode_header(&req).unwrap()[..], want[..]);
    }

    #[test]
    fn attach_options_default_when_an_old_peer_leaves_them_out() {
        #[derive(Serialize)]
        struct Minimal<'a> {
            op: &'a str,
            exchange: &'a str,
            plugin: &'a str,
        }
        let bytes = encode_header(&Minimal {
            op: "attach-exchange-router",
            exchange: "e",
            plugin: "r",
        })
        .unwrap();
        assert_eq!(
            decode_header::<AdminRequest>(&bytes).unwrap(),
            AdminRequest::AttachExchangeRouter {
                exchange: "e".into(),
                options: AttachOptions::new("r"),
            }
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_new_fields_default() {
        #[derive(Serialize)]
        struct NewerHello<'a> {
            protocol_version: u16,
            client_id: &'a str,
            some_future_field: Vec<u32>,
        }
        let newer = NewerHello {
            protocol_version: 2,
            client_id: "x",
            some_future_field: vec![1, 2],
        };
        let hello: Hello = decode_header(&encode_header(&newer).unwrap()).unwrap();
        assert_eq!(
            hello,
            Hello {
                protocol_version: 2,
                client_id: "x".into(),
                token: None
            }
        );
    }

    #[test]
    fn kind_mismatch_and_error_replies() {
        let frame = Frame::error(ErrorCode::UnknownTopic, "no topic t").unwrap();
        let err = frame.decode::<ProduceResponse>().unwrap_err();
        assert!(matches!(
            err,
            FrameError::UnexpectedKind {
                expected: FrameKind::ProduceOk,
                got: FrameKind::Error
            }
        ));
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        let reply = frame
            .decode_reply::<ProduceResponse>()
            .unwrap()
            .unwrap_err();
        assert_eq!(reply.error_code(), ErrorCode::UnknownTopic);
        assert_eq!(reply.to_string(), "unknown topic (10): no topic t");
        let body = ErrorBody {
            code: 4242,
            message: String::new(),
            request_id: None,
        };
        assert_eq!(body.error_code(), ErrorCode::Unknown);
        assert!(matches!(
            decode_header::<Hello>(b"\xc1"),
            Err(FrameError::Header(_))
        ));
    }
}
