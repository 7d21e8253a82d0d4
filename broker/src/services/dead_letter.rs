//! Dead-lettering: records a plugin failed on, or that ran out of queue deliveries, are appended
//! to `<topic>.dlq` (created with one partition on first use), as durable as the request asked.
//! A dead-letter copy carries error headers its original did not, so it may outgrow the log's
//! batch limit: it is split into as many batches as it takes, so burying never fails for size.

use bytes::Bytes;
use quiver_proto::batch::HEADER_LEN;
use quiver_proto::Batch;

use super::catalog::Catalog;
use crate::error::BrokerError;
use crate::groups::GroupError;
use crate::storage::{Durability, StorageError};

#[derive(Debug, Clone)]
pub struct DeadLetters {
    catalog: Catalog,
}

impl DeadLetters {
    pub fn new(catalog: Catalog) -> DeadLetters {
        DeadLetters { catalog }
    }

    /// Appends `batch` to `<topic>.dlq`, in several batches if it is larger than the log takes;
    /// fsync'd before returning for `acks=all`.
    pub fn bury(&self, topic: &str, batch: Bytes, acks: Durability) -> Result<(), BrokerError> {
        let t = self.catalog.get_or_create(&format!("{topic}.dlq"))?;
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
