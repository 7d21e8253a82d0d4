//! Dead-lettering: records a plugin failed on, or that ran out of queue deliveries, are appended
//! to `<topic>.dlq` (created with one partition on first use; on a cluster through the metadata
//! group, replicated like any topic), as durable as the request asked.
//! A dead-letter copy carries error headers its original did not, so it may outgrow the log's
//! batch limit: it is split into as many batches as it takes, so burying never fails for size.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_proto::batch::HEADER_LEN;
use quiver_proto::messages::AdminRequest;
use quiver_proto::{Batch, ErrorCode};

use super::catalog::Catalog;
use crate::cluster::{MetaCommand, MetaResult};
use crate::error::BrokerError;
use crate::groups::GroupError;
use crate::replication::{Replication, ReplicationError};
use crate::storage::{Durability, StorageError};

/// How long burying on a cluster waits for `<topic>.dlq` to be created and led (a Raft write,
/// then the leader taking up its role), retrying a delivery refused meanwhile.
const CLUSTER_WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct DeadLetters {
    catalog: Catalog,
    replication: Arc<Replication>,
}

impl DeadLetters {
    pub fn new(catalog: Catalog, replication: Arc<Replication>) -> DeadLetters {
        DeadLetters {
            catalog,
            replication,
        }
    }

    /// Appends `batch` to `<topic>.dlq`, in several batches if it is larger than the log takes;
    /// fsync'd before returning for `acks=all`. On a cluster, see [`DeadLetters::bury_replicated`].
    pub fn bury(&self, topic: &str, batch: Bytes, acks: Durability) -> Result<(), BrokerError> {
        let dlq = format!("{topic}.dlq");
        if self.replication.cluster().is_some() && !self.local_only(&dlq) {
            return self.bury_replicated(&dlq, batch);
        }
        let t = self.catalog.get_or_create(&dlq)?;
        let log = t.partition(0)?;
        let batch = Batch::parse(batch)?;
        let max = log.config().max_batch_bytes as usize;
        let mut end = 0;
        for part in split_to_fit(&batch, max)? {
            end = log.append(&part, Durability::Leader)?.log_end;
        }
        if acks == Durability::All {
            log.sync_through(end)?;
        }
        Ok(())
    }

    /// Whether `dlq` is a topic of this node only that takes appends (a cluster node created
    /// it on its own before dead letters were replicated).
    fn local_only(&self, dlq: &str) -> bool {
        !self.replication.is_replicated(dlq)
            && self
                .catalog
                .topics()
                .partition(dlq, 0)
                .is_ok_and(|log| !log.is_follower())
    }

    /// On a cluster: `dlq` is created through the metadata group when missing (one partition,
    /// the cluster's default replication factor, like any topic), and the dead letters are
    /// appended at its leader, here or over the peer link, counted once its in-sync replicas
    /// have them. Blocking.
    fn bury_replicated(&self, dlq: &str, batch: Bytes) -> Result<(), BrokerError> {
        let deadline = Instant::now() + CLUSTER_WAIT;
        if !self.replication.is_replicated(dlq) {
            self.create_replicated(dlq)?;
        }
        while !self.replication.is_replicated(dlq) {
            if Instant::now() >= deadline {
                return Err(BrokerError::Wire(
                    ErrorCode::Timeout,
                    format!("{dlq} was created but has not reached this node yet"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let max = self
            .catalog
            .topics()
            .partition(dlq, 0)?
            .config()
            .max_batch_bytes as usize;
        let parts = split_to_fit(&Batch::parse(batch)?, max)?;
        loop {
            match self.replication.deliver_blocking(dlq, 0, &parts) {
                Ok(_) => return Ok(()),
                // Just created: its leader may not have taken up its role yet.
                Err(ReplicationError::NotLeader { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Creates `dlq` through the metadata group (a topic that exists by now is fine).
    fn create_replicated(&self, dlq: &str) -> Result<(), BrokerError> {
        let (Some(cluster), Some(handle)) =
            (self.replication.cluster(), self.replication.runtime())
        else {
            return Err(BrokerError::Internal("the cluster has not started".into()));
        };
        let create = AdminRequest::CreateTopic {
            name: dlq.to_owned(),
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
            replication_factor: None,
            min_insync: None,
        };
        let command = MetaCommand::admin("quiver-dead-letters", create, Bytes::new());
        match handle.block_on(cluster.write(command))? {
            MetaResult::Err { code, .. } if ErrorCode::from(code) == ErrorCode::TopicExists => {
                Ok(())
            }
            MetaResult::Err { code, message } => {
                Err(BrokerError::Wire(ErrorCode::from(code), message))
            }
            MetaResult::Ok(_) | MetaResult::None => {
                tracing::info!(topic = dlq, "dead-letter topic created on the cluster");
                Ok(())
            }
        }
    }

    /// The dead-letter sink of queue mode: a record out of deliveries goes to `<topic>.dlq`.
    pub fn bury_for_queue(&self, topic: &str, batch: Bytes) -> Result<(), GroupError> {
        self.bury(topic, batch, Durability::Leader)
            .map_err(|e| GroupError::Internal(e.to_string()))
    }
}

/// `batch` as consecutive batches of at most `max` bytes each, in record order (the batch itself
/// when it fits). Fails only for a single record larger than `max` on its own.
fn split_to_fit(batch: &Batch, max: usize) -> Result<Vec<Batch>, BrokerError> {
    if batch.bytes().len() <= max {
        return Ok(vec![batch.clone()]);
    }
    let mut parts = Vec::new();
    let mut chunk: Vec<usize> = Vec::new();
    let mut size = HEADER_LEN;
    for (i, record) in batch.records().enumerate() {
        let len = record.raw().len();
        if HEADER_LEN + len > max {
            let len = HEADER_LEN + len;
            return Err(StorageError::BatchTooLarge { len, max }.into());
        }
        if size + len > max {
            parts.push(select(batch, &std::mem::take(&mut chunk))?);
            size = HEADER_LEN;
        }
        chunk.push(i);
        size += len;
    }
    if !chunk.is_empty() {
        parts.push(select(batch, &chunk)?);
    }
    Ok(parts)
}

/// Records `indexes` of `batch` as a batch of their own (the shared selection of router fan-out).
fn select(batch: &Batch, indexes: &[usize]) -> Result<Batch, BrokerError> {
    crate::plugins::pipeline::select(batch, indexes)?
        .ok_or_else(|| BrokerError::Internal("a dead-letter split selected no record".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::{BatchBuilder, RecordData};

    fn batch(records: usize, value_len: usize) -> Batch {
        let value = vec![b'v'; value_len];
        let mut b = BatchBuilder::new();
        for i in 0..records {
            let key = i.to_string();
            b.push(&RecordData {
                timestamp: i as i64,
                key: Some(key.as_bytes()),
                value: &value,
                headers: &[("quiver-error", b"boom")],
                tags: &[],
            })
            .unwrap();
        }
        Batch::parse(b.finish().unwrap()).unwrap()
    }

    #[test]
    fn a_batch_that_fits_is_kept_whole() {
        let b = batch(10, 10);
        let parts = split_to_fit(&b, b.bytes().len()).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].bytes(), b.bytes());
    }

    #[test]
    fn a_large_batch_splits_in_order_under_the_limit() {
        let b = batch(1000, 100);
        let max = 16 << 10;
        let parts = split_to_fit(&b, max).unwrap();
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.bytes().len() <= max));
        let keys: Vec<_> = parts
            .iter()
            .flat_map(|p| p.to_records().collect::<Vec<_>>())
            .map(|r| (r.key.clone().unwrap(), r.header("quiver-error").cloned()))
            .collect();
        assert_eq!(keys.len(), 1000);
        for (i, (key, error)) in keys.iter().enumerate() {
            assert_eq!(&key[..], i.to_string().as_bytes());
            assert_eq!(error.as_deref(), Some(&b"boom"[..]));
        }
    }

    #[test]
    fn a_record_larger_than_the_limit_is_an_error_not_a_panic() {
        let b = batch(3, 4096);
        assert!(split_to_fit(&b, 1024).is_err());
    }
}
