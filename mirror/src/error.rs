//! Why a mirror session ended: each ends the session, and the link starts a new one after a
//! back-off (a definition error is reported the same way and retried, in case the core changes).

use quiver::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("core topic {topic}: {reason}")]
    Target { topic: String, reason: String },
    #[error("local log: {0}")]
    Local(String),
    #[error("cannot commit the mirror position: {0}")]
    Commit(#[from] quiver_broker::mirrors::MirrorError),
}

impl From<std::sync::Arc<ClientError>> for LinkError {
    fn from(e: std::sync::Arc<ClientError>) -> Self {
        LinkError::Client(ClientError::Delivery(e))
    }
}
