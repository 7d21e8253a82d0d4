//! Creating topics: the broker's default settings with a request's overrides, and the rule that a
//! new topic never inherits the ingest pipeline of a deleted topic of the same name. Used by the
//! admin service and by dead-lettering (which creates `<topic>.dlq` on first use).

use std::sync::Arc;

use crate::error::BrokerError;
use crate::plugins::Pipelines;
use crate::storage::{LogConfig, StorageError, Topic, TopicConfig, TopicStore};

/// Per-topic settings a create request may override.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOverrides {
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: Option<u64>,
}

impl LogOverrides {
    fn apply(self, mut log: LogConfig) -> LogConfig {
        if self.retention_ms.is_some() {
            log.retention_ms = self.retention_ms;
        }
        if self.retention_bytes.is_some() {
            log.retention_bytes = self.retention_bytes;
        }
        if let Some(s) = self.segment_bytes {
            log.segment_bytes = s;
        }
        log
    }
}

/// The topic store with the broker's defaults for new topics.
#[derive(Debug, Clone)]
pub struct Catalog {
    topics: Arc<TopicStore>,
    pipelines: Arc<Pipelines>,
    default_partitions: u32,
    default_log: LogConfig,
}

impl Catalog {
    pub fn new(
        topics: Arc<TopicStore>,
        pipelines: Arc<Pipelines>,
        default_partitions: u32,
        default_log: LogConfig,
    ) -> Catalog {
        Catalog {
            topics,
            pipelines,
            default_partitions,
            default_log,
        }
    }

    pub fn topics(&self) -> &Arc<TopicStore> {
        &self.topics
    }

    /// Creates a topic with the broker's default log settings, overridden where given.
    pub fn create(
        &self,
        name: &str,
        partitions: Option<u32>,
        log: LogOverrides,
    ) -> Result<Arc<Topic>, BrokerError> {
        let config = TopicConfig {
            partitions: partitions.unwrap_or(self.default_partitions),
            log: log.apply(self.default_log),
            ..Default::default()
        };
        let topic = self.topics.create_topic(name, config)?;
        // A pipeline left by a deleted topic of the same name (an attach racing the delete) must
        // not apply to the new one.
        self.pipelines.remove_topic(name)?;
        Ok(topic)
    }

    /// The topic, created with one partition and default settings if it does not exist (a
    /// concurrent creation is fine).
    pub fn get_or_create(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        match self.topics.get(name) {
            Ok(t) => Ok(t),
            Err(StorageError::UnknownTopic(_)) => {
                match self.create(name, Some(1), LogOverrides::default()) {
                    Ok(t) => {
                        // Created here, not through a cluster's metadata group: a topic of this
                        // node only, which takes its writes even on a cluster node.
                        for log in t.partitions() {
                            log.set_follower(false);
                        }
                        Ok(t)
                    }
                    Err(BrokerError::Storage(StorageError::TopicExists(_))) => {
                        Ok(self.topics.get(name)?)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e.into()),
        }
    }
}
