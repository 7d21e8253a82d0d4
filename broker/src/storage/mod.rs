//! The storage engine: partitions as append-only segment logs with sparse indexes, topics as sets of
//! partitions, durability per append, recovery on open and retention. See docs/storage.md.

mod clean;
pub mod config;
pub mod error;
pub mod index;
pub mod partition;
pub mod segment;
mod sync;
pub mod topics;

pub use config::LogConfig;
pub use error::StorageError;
pub use partition::{
    AppendInfo, Clock, PartitionLog, PartitionStats, ReadResult, RetentionOutcome, Traffic,
};
pub use topics::{validate_name, Topic, TopicConfig, TopicStore};

/// How durable an append must be before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Fire and forget: the producer gets no acknowledgement (written like `Leader`).
    None,
    /// Written to the log (the OS page cache), not fsync'd.
    Leader,
    /// fsync'd before the acknowledgement; concurrent appenders share fsyncs.
    All,
}

impl std::str::FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Durability::None),
            "leader" => Ok(Durability::Leader),
            "all" => Ok(Durability::All),
            other => Err(format!(
                "unknown acks {other:?}: expected none, leader or all"
            )),
        }
    }
}
