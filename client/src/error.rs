//! Errors of the client library.

use std::path::PathBuf;

use quiver_proto::ErrorCode;

use crate::wire::WireError;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("invalid server address {addr:?}: {reason}")]
    Address { addr: String, reason: String },
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The broker answered the handshake with an error (authentication failed, version
    /// mismatch, busy).
    #[error("{addr} refused the connection: {message}")]
    Refused {
        addr: String,
        code: ErrorCode,
        message: String,
    },
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("invalid record: {0}")]
    Record(#[from] quiver_proto::BatchError),
    #[error("broker returned an unexpected reply: {0}")]
    Protocol(String),
    #[error("cannot read {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("request timed out after {0:?}")]
    Timeout(std::time::Duration),
    #[error("closed: the producer, consumer or reply listener is no longer running")]
    Closed,
    /// A produce failure, shared by the records of one batch.
    #[error(transparent)]
    Delivery(std::sync::Arc<ClientError>),
    /// A request/reply call got no reply in time (the request itself may still be processed).
    #[error("no reply to request {correlation_id} on topic {topic} within {timeout:?}")]
    NoReply {
        topic: String,
        correlation_id: String,
        timeout: std::time::Duration,
    },
    /// The group consumer's membership ended for good (the reason was returned once before).
    #[error("group membership ended: {0}")]
    Membership(String),
    /// The caller passed something the operation cannot take (e.g. acking another topic's records).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl ClientError {
    /// The broker's error code, if the broker refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Wire(w) => w.remote_code(),
            ClientError::Delivery(e) => e.code(),
            ClientError::Refused { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the connection (not the broker) failed: the node may be gone, and on a cluster
    /// the request may go to another one.
    pub fn is_link_lost(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Connection(_)
            | ClientError::Timeout(_)
            | ClientError::Closed => true,
            ClientError::Wire(w) => matches!(
                w,
                WireError::Read(_)
                    | WireError::Write(_)
                    | WireError::Truncated
                    | WireError::Closed(_)
            ),
            ClientError::Delivery(e) => e.is_link_lost(),
            _ => false,
        }
    }

    /// Whether retrying the same request may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Wire(WireError::Remote { code, .. })
            | ClientError::Refused { code, .. } => code.is_retriable(),
            ClientError::Connection(_) | ClientError::Timeout(_) | ClientError::NoReply { .. } => {
                true
            }
            ClientError::Delivery(e) => e.is_retriable(),
            _ => false,
        }
    }
}
