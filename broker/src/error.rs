//! The broker's request error: every failure a service reports, each mapped to the stable wire code
//! its source error type chooses for itself (this file adds no mapping of its own beyond the
//! request-level variants).

use quiver_proto::ErrorCode;

use crate::auth::AuthError;
use crate::delay::DelayError;
use crate::groups::GroupError;
use crate::headers::ReservedHeader;
use crate::meta::MetaError;
use crate::plugins::PluginError;
use crate::routing::RoutingError;
use crate::storage::StorageError;

/// A request that failed, with the protocol code the client sees.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] quiver_proto::BatchError),
    #[error("invalid batch: {0}")]
    ReservedHeader(#[from] ReservedHeader),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error(transparent)]
    Delay(#[from] DelayError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Mirror(#[from] crate::mirrors::MirrorError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Replication(#[from] crate::replication::ReplicationError),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("producer {producer} skipped sequence numbers on {topic}/{partition}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        producer: u64,
        topic: String,
        partition: u32,
        expected: u32,
        got: u32,
    },
    #[error("producer {producer} was fenced: a newer producer took an id under its fencing key")]
    ProducerFenced { producer: u64 },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// The request's bytes could not be read (framing or header errors), with the code to report.
    #[error("{1}")]
    Wire(ErrorCode, String),
}

impl BrokerError {
    /// The stable error code sent to clients.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::Storage(e) => e.code(),
            BrokerError::Meta(e) => e.code(),
            BrokerError::Plugin(e) => e.code(),
            BrokerError::InvalidBatch(_) | BrokerError::ReservedHeader(_) => {
                ErrorCode::InvalidBatch
            }
            BrokerError::Group(e) => e.code(),
            BrokerError::Routing(e) => e.code(),
            BrokerError::Delay(e) => e.code(),
            BrokerError::Auth(e) => e.code(),
            BrokerError::Mirror(e) => e.code(),
            BrokerError::Cluster(e) => e.code(),
            BrokerError::Replication(e) => e.code(),
            BrokerError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            BrokerError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            BrokerError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
            BrokerError::Internal(_) => ErrorCode::Internal,
            BrokerError::ShuttingDown => ErrorCode::ShuttingDown,
            BrokerError::Wire(code, _) => *code,
        }
    }

    /// A request carrying more items than the broker takes in one go.
    pub fn too_many(what: &str, n: usize, max: usize) -> Result<(), BrokerError> {
        if n > max {
            return Err(BrokerError::InvalidRequest(format!(
                "{n} {what} in one request; at most {max}"
            )));
        }
        Ok(())
    }
}
