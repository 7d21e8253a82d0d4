//! Quiver's sans-IO protocol core: the record batch encoding shared by the wire, the segment files and
//! plugins, and the framing, typed messages and error codes of the wire protocol. Nothing here does
//! I/O, so the same code serves the broker, the client and guest plugins.

pub mod auth;
pub mod batch;
mod bytes_le;
pub mod codes;
pub mod frame;
pub mod groups;
pub mod headers;
pub mod messages;
pub mod mirror;
pub mod plugins;
pub mod routing;

pub use batch::{
    Batch, BatchBuilder, BatchError, BatchHeader, Batches, HeaderIter, Record, RecordData,
    RecordIter, RecordRef, TagIter,
};
pub use codes::ErrorCode;
pub use frame::{Frame, FrameError, FrameKind, DEFAULT_MAX_FRAME, MAX_HEADER};
pub use messages::{
    Acks, AdminRequest, AdminResponse, ErrorBody, FetchRequest, FetchResponse, Hello, HelloOk,
    Message, OffsetSpec, PartitionDescription, ProduceRequest, ProduceResponse, TopicDescription,
    TopicSummary, ALPN, PROTOCOL_VERSION,
};
