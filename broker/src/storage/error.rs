//! Errors of the storage engine. Every I/O error names the file or directory it happened on.

use std::io;
use std::path::{Path, PathBuf};

use quiver_proto::{BatchError, ErrorCode};

use crate::meta::MetaError;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("offset {offset} is out of range: the log holds offsets {log_start}..{log_end}")]
    OffsetOutOfRange {
        offset: u64,
        log_start: u64,
        log_end: u64,
    },
    #[error("batch of {len} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge { len: usize, max: usize },
    #[error("partition {} refuses writes until restarted: {reason}", dir.display())]
    Failed { dir: PathBuf, reason: String },
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has no partition {partition} (it has {count})")]
    UnknownPartition {
        topic: String,
        partition: u32,
        count: u32,
    },
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: &'static str },
    #[error("topic {topic:?} is unavailable: {reason}")]
    TopicUnavailable { topic: String, reason: String },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] BatchError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("this node does not lead the partition at {} (another node of the cluster does, or none is elected yet): refresh metadata and retry", dir.display())]
    NotLeader { dir: PathBuf },
}

impl StorageError {
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> StorageError {
        StorageError::Io {
            path: path.as_ref().to_owned(),
            source,
        }
    }

    /// The stable error code a client sees for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            StorageError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            StorageError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
            StorageError::TopicExists(_) => ErrorCode::TopicExists,
            StorageError::InvalidTopicName { .. } => ErrorCode::InvalidTopicName,
            StorageError::InvalidConfig(_) => ErrorCode::InvalidConfig,
            StorageError::TopicUnavailable { .. } => ErrorCode::TopicUnavailable,
            StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            StorageError::BatchTooLarge { .. } => ErrorCode::RecordTooLarge,
            StorageError::InvalidBatch(_) => ErrorCode::InvalidBatch,
            StorageError::NotLeader { .. } => ErrorCode::NotLeader,
            e if e.is_disk_full() => ErrorCode::DiskFull,
            StorageError::Io { .. } | StorageError::Failed { .. } | StorageError::Meta(_) => {
                ErrorCode::StorageError
            }
        }
    }

    /// True when the disk (or quota) is full: the write failed but nothing was lost.
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::Io { source, .. } if source.raw_os_error() == Some(libc_enospc()))
    }
}

const fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux and the BSDs
}
