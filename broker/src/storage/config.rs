//! Per-topic log settings: segment rolling, retention and indexing. Stored with the topic in the
//! metadata store, so fields only ever get added with serde defaults.

use serde::{Deserialize, Serialize};

use super::error::StorageError;

pub const DAY_MS: u64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// Roll the active segment before it would grow past this many bytes.
    pub segment_bytes: u64,
    /// Roll the active segment once its first append is this old.
    pub segment_ms: u64,
    /// Delete the oldest sealed segments while the rest still hold at least this many bytes.
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    /// Bytes of log between two sparse index entries.
    pub index_interval_bytes: u64,
    /// Largest batch accepted by an append.
    pub max_batch_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
            segment_ms: 7 * DAY_MS,
            retention_bytes: None,
            retention_ms: Some(7 * DAY_MS),
            index_interval_bytes: 4096,
            max_batch_bytes: 8 << 20,
        }
    }
}

impl LogConfig {
    pub fn validate(&self) -> Result<(), StorageError> {
        let bad = |m: &str| Err(StorageError::InvalidConfig(m.to_owned()));
        if self.segment_bytes < 1024 || self.segment_bytes > 2 << 30 {
            return bad("segment_bytes must be between 1 KiB and 2 GiB");
        }
        // A batch larger than a segment gets a segment of its own; the cap keeps every position in
        // a segment (at most segment_bytes + one batch) within the u32 the index stores.
        if self.max_batch_bytes < 1024 || self.max_batch_bytes > 256 << 20 {
            return bad("max_batch_bytes must be between 1 KiB and 256 MiB");
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be positive");
        }
        if self.segment_ms == 0 {
            return bad("segment_ms must be positive");
        }
        Ok(())
    }
}
