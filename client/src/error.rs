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
    #[error("the producer is closed")]
    Closed,
}

impl ClientError {
    /// The broker's error code, if the broker refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Wire(w) => w.remote_code(),
            _ => None,
        }
    }

    /// Whether retrying the same request may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Wire(WireError::Remote { code, .. }) => code.is_retriable(),
            ClientError::Connection(_) | ClientError::Timeout(_) => true,
            _ => false,
        }
    }
}

impl From<quinn::ConnectionError> for WireError {
    fn from(e: quinn::ConnectionError) -> Self {
        WireError::Read(std::io::Error::other(e))
    }
}
