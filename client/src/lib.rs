//! The Quiver client library: connect to a broker over QUIC (TLS 1.3, verified against a CA), manage
//! topics with [`Admin`], send records with a batching [`Producer`] and read them with a [`Consumer`].

pub mod admin;
pub mod client;
pub mod consumer;
pub mod error;
pub mod producer;
pub mod tls;
pub mod wire;

pub use admin::{Admin, Attach, Deployed, NewTopic};
pub use client::{Client, ClientOptions};
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, SeekTo};
pub use error::ClientError;
pub use producer::{
    Delivery, Partitioner, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
};
pub use quiver_proto::messages::{
    Acks, AttachmentInfo, ErrorPolicy, PartitionDescription, PluginRef, PluginVersionInfo,
    TopicDescription, TopicSummary,
};
pub use quiver_proto::{Batch, BatchBuilder, Record, RecordData, RecordRef};
