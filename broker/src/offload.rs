//! The one place that decides what runs on tokio's blocking pool instead of an async worker.
//!
//! An async worker must never wait on something that can take long: a plugin (it may use its
//! whole time limit), an fsync (`acks=all`, the delay log, sled flushes), compiling a component, or
//! a scan of a partition's files. Every such call in the broker goes through [`blocking`], and the
//! produce path asks [`produce_blocks`] whether a batch may be appended in place. The rules:
//!
//! | work | where it runs |
//! |---|---|
//! | append to a topic without pipeline, not delayed | in place (page-cache write) |
//! | append through an ingest pipeline, to an exchange, or holding delayed records | blocking pool |
//! | waiting for the fsync of `acks=all` | blocking pool (group commit) |
//! | admin calls (create/delete/describe, plugin deploy/compile, attach) | blocking pool |
//! | group requests (commits flush sled) and queue settles (may write dead letters) | blocking pool |
//! | a queue poll's look at its share partitions, a read filter's creation and runs | blocking pool |
//! | retention, delay delivery | background work of the [`crate::supervisor::Supervisor`] |

use crate::error::BrokerError;

/// Runs `f` on the blocking pool and waits for it; a panic in `f` becomes an internal error.
pub async fn blocking<T, F>(f: F) -> Result<T, BrokerError>
where
    F: FnOnce() -> Result<T, BrokerError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(BrokerError::Internal(e.to_string())))
}

/// Starts `f` on the blocking pool without waiting (the caller awaits the handle later, e.g. an
/// `acks=all` answer that must wait for its fsync while the stream reads on).
pub fn start_blocking<T, F>(f: F) -> tokio::task::JoinHandle<Result<T, BrokerError>>
where
    F: FnOnce() -> Result<T, BrokerError> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
}

/// Whether a produce must leave the async worker: it runs plugins (an ingest pipeline or an
/// exchange, whose router and destination pipelines may run) or holds delayed records (which may
/// fsync the delay log).
pub fn produce_blocks(exchange: bool, has_pipeline: bool, delayed: bool) -> bool {
    exchange || has_pipeline || delayed
}
