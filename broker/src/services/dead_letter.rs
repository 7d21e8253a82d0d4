//! Dead-lettering: records a plugin failed on, or that ran out of queue deliveries, are appended
//! to `<topic>.dlq` (created with one partition on first use), as durable as the request asked.

use bytes::Bytes;
use quiver_proto::Batch;

use super::catalog::Catalog;
use crate::error::BrokerError;
use crate::groups::GroupError;
use crate::storage::Durability;

#[derive(Debug, Clone)]
pub struct DeadLetters {
    catalog: Catalog,
}

impl DeadLetters {
    pub fn new(catalog: Catalog) -> DeadLetters {
        DeadLetters { catalog }
    }

    /// Appends `batch` to `<topic>.dlq`; fsync'd before returning for `acks=all`.
    pub fn bury(&self, topic: &str, batch: Bytes, acks: Durability) -> Result<(), BrokerError> {
        let t = self.catalog.get_or_create(&format!("{topic}.dlq"))?;
        let log = t.partition(0)?;
        let info = log.append(&Batch::parse(batch)?, Durability::Leader)?;
        if acks == Durability::All {
            log.sync_through(info.log_end)?;
        }
        Ok(())
    }

    /// The dead-letter sink of queue mode: a record out of deliveries goes to `<topic>.dlq`.
    pub fn bury_for_queue(&self, topic: &str, batch: Bytes) -> Result<(), GroupError> {
        self.bury(topic, batch, Durability::Leader)
            .map_err(|e| GroupError::Internal(e.to_string()))
    }
}
