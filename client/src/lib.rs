//! `quiver`, the Quiver client library and the package applications add (it does not build the
//! broker): connect to a broker over QUIC (TLS 1.3, verified against a CA), manage topics and groups
//! with [`Admin`], send records with a batching, idempotent [`Producer`], read them with a
//! [`Consumer`] (partitions you pick), a [`GroupConsumer`] (partitions shared by a consumer group,
//! committed offsets) or a [`QueueConsumer`] (per-record leases and acks), and make request/reply
//! calls over topics with [`Requester`] and [`Responder`].

pub mod admin;
pub mod client;
pub mod consumer;
pub mod error;
pub mod group;
mod ids;
pub mod producer;
pub mod queue;
mod queue_fanout;
mod routes;
pub mod rpc;
pub mod tls;

pub use admin::{Admin, Deployed, NewTopic, PluginLogs};
// What `Admin::attach_plugin` and `Admin::attach_exchange_router` take: the wire type itself.
pub use client::{Client, ClientOptions};
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, SeekTo};
pub use error::ClientError;
pub use group::{CommitMode, GroupConfig, GroupConsumer};
pub use producer::{
    Delivery, Partitioner, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use queue::{QueueConfig, QueueConsumer, QueuedRecord, Settled};
/// The sans-IO protocol: batch format, frames, messages, error codes.
pub use quiver_proto as proto;
pub use quiver_proto::auth::{
    AclRule, AclSpec, Operation, PrincipalQuota, Quota, ResourceKind, UserInfo,
};
pub use quiver_proto::batch::{DELAY_MS_HEADER, DELIVER_AT_HEADER};
pub use quiver_proto::groups::{
    CommittedOffset, GroupDescription, GroupSummary, MemberDescription, OffsetRange, PartitionLag,
    PartitionOffset, QueuePartitionState, ResetTo, TopicPartition,
};
pub use quiver_proto::messages::{
    Acks, AttachmentInfo, ClusterStatus, ErrorPolicy, PartitionDescription, PartitionReplicas,
    PluginRef, PluginVersionInfo, TopicDescription, TopicSummary,
};
pub use quiver_proto::mirror::{
    MirrorDirection, MirrorInfo, MirrorPartition, MirrorSpec, MirrorStart, MirrorState,
};
pub use quiver_proto::plugins::{AttachOptions, PluginLogLine};
pub use quiver_proto::routing::{Binding, ExchangeInfo, ExchangeKind, HeaderMatch};
pub use quiver_proto::{Batch, BatchBuilder, ErrorCode, Record, RecordData, RecordRef};
/// The frame I/O the client speaks (its errors appear in [`ClientError::Wire`]).
pub use quiver_wire as wire;
pub use rpc::{
    reply_to, serve, Requester, RequesterConfig, Responder, CORRELATION_ID_HEADER, REPLY_TO_HEADER,
};
