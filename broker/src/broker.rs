//! The broker core, independent of the transport: produce into a topic's partitions and fetch from them
//! with long-poll. The QUIC server (and the tests) call into this.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quiver_proto::{Batch, ErrorCode};

use crate::config::BrokerConfig;
use crate::filter::Filter;
use crate::meta::{MetaError, MetaStore};
use crate::storage::{
    AppendInfo, Durability, LogConfig, StorageError, Topic, TopicConfig, TopicStore,
};

/// A request that failed, with the protocol code the client sees.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] quiver_proto::BatchError),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the broker is shutting down")]
    ShuttingDown,
    /// The request's bytes could not be read (framing or header errors), with the code to report.
    #[error("{1}")]
    Wire(ErrorCode, String),
}

impl BrokerError {
    /// The stable error code sent to clients.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::Storage(e) => storage_code(e),
            BrokerError::Meta(_) => ErrorCode::StorageError,
            BrokerError::InvalidBatch(_) => ErrorCode::InvalidBatch,
            BrokerError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            BrokerError::Internal(_) => ErrorCode::Internal,
            BrokerError::ShuttingDown => ErrorCode::ShuttingDown,
            BrokerError::Wire(code, _) => *code,
        }
    }
}

fn storage_code(e: &StorageError) -> ErrorCode {
    match e {
        StorageError::UnknownTopic(_) => ErrorCode::UnknownTopic,
        StorageError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
        StorageError::TopicExists(_) => ErrorCode::TopicExists,
        StorageError::InvalidTopicName { .. } => ErrorCode::InvalidTopicName,
        StorageError::InvalidConfig(_) => ErrorCode::InvalidConfig,
        StorageError::TopicUnavailable { .. } => ErrorCode::TopicUnavailable,
        StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        StorageError::BatchTooLarge { .. } => ErrorCode::RecordTooLarge,
        StorageError::InvalidBatch(_) => ErrorCode::InvalidBatch,
        e if e.is_disk_full() => ErrorCode::DiskFull,
        StorageError::Io { .. } | StorageError::Failed { .. } | StorageError::Meta(_) => {
            ErrorCode::StorageError
        }
    }
}

/// Where a fetch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(u64),
    Timestamp(i64),
}

/// A fetch: long-polls until `min_bytes` are available or `max_wait` passes.
#[derive(Debug, Clone)]
pub struct FetchParams {
    pub start: StartAt,
    pub max_bytes: usize,
    pub min_bytes: usize,
    pub max_wait: Duration,
    /// Only records matching this are returned; the position still moves past the others.
    pub filter: Option<Arc<Filter>>,
}

#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// Whole batches; the first may begin before `offset`.
    pub bytes: Bytes,
    /// The offset the fetch resolved to.
    pub offset: u64,
    /// Where the next fetch continues.
    pub next_offset: u64,
    /// Records in `bytes` at or after `offset`.
    pub records: u32,
    pub log_start: u64,
    pub log_end: u64,
}

pub struct Broker {
    topics: TopicStore,
    config: BrokerConfig,
    round_robin: AtomicU32,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("data_dir", &self.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens the data directory (creating it on first start) with its metadata store and topics.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StorageError::io(&config.data_dir, e))?;
        let meta = MetaStore::open(&config.data_dir.join("meta"))?;
        let topics = TopicStore::open(&config.data_dir, meta)?;
        Ok(Arc::new(Broker {
            topics,
            config,
            round_robin: AtomicU32::new(0),
        }))
    }

    pub fn topics(&self) -> &TopicStore {
        &self.topics
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Creates a topic with the broker's default log settings, overridden where given.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: Option<u32>,
        log: LogOverrides,
    ) -> Result<Arc<Topic>, BrokerError> {
        let mut config = TopicConfig {
            partitions: partitions.unwrap_or(self.config.default_partitions),
            ..Default::default()
        };
        config.log = log.apply(self.config.log);
        Ok(self.topics.create_topic(name, config)?)
    }

    /// Validates and appends one batch in the caller's order, without waiting for an fsync (see
    /// [`Broker::sync`] for `acks=all`). `partition: None` spreads batches round-robin.
    pub fn append(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
        acks: Durability,
    ) -> Result<(u32, AppendInfo), BrokerError> {
        let t = self.topics.get(topic)?;
        let count = t.partitions().len() as u32;
        let p = partition
            .unwrap_or_else(|| self.round_robin.fetch_add(1, Ordering::Relaxed) % count.max(1));
        let log = t.partition(p)?;
        let batch = Batch::parse(batch)?;
        let durability = if acks == Durability::All {
            Durability::Leader
        } else {
            acks
        };
        Ok((p, log.append(&batch, durability)?))
    }

    /// Blocks until everything below `end` in the partition is fsync'd (group commit).
    pub fn sync(&self, topic: &str, partition: u32, end: u64) -> Result<(), BrokerError> {
        Ok(self.topics.partition(topic, partition)?.sync_through(end)?)
    }

    /// Appends and, for `acks=all`, waits for the fsync off the async workers.
    pub async fn produce(
        self: &Arc<Self>,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
        acks: Durability,
    ) -> Result<(u32, AppendInfo), BrokerError> {
        let (p, info) = self.append(topic, partition, batch, acks)?;
        if acks == Durability::All {
            let (b, t) = (self.clone(), topic.to_owned());
            tokio::task::spawn_blocking(move || b.sync(&t, p, info.log_end))
                .await
                .map_err(|e| BrokerError::Internal(e.to_string()))??;
        }
        Ok((p, info))
    }

    /// Reads from a partition, waiting up to `max_wait` for at least `min_bytes`.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        params: FetchParams,
    ) -> Result<Fetched, BrokerError> {
        let log = self.topics.partition(topic, partition)?;
        let offset = match params.start {
            StartAt::Earliest => log.stats().log_start,
            StartAt::Latest => log.stats().log_end,
            StartAt::Offset(o) => o,
            StartAt::Timestamp(ts) => log.offset_for_timestamp(ts)?,
        };
        let deadline = tokio::time::Instant::now() + params.max_wait;
        let mut end_rx = log.subscribe_end();
        loop {
            // Mark the current end as seen before reading, so an append after the read wakes us.
            end_rx.borrow_and_update();
            let res = log.read(offset, params.max_bytes)?;
            let enough = res.bytes.len() >= params.min_bytes.max(1);
            if enough || tokio::time::Instant::now() >= deadline {
                return Ok(shape(res, offset, params.filter.as_deref()));
            }
            match tokio::time::timeout_at(deadline, end_rx.changed()).await {
                // New data, or the wait timed out and the next pass returns what there is.
                Ok(Ok(())) | Err(_) => continue,
                // The partition was closed under us: its topic was deleted.
                Ok(Err(_)) => return Err(StorageError::UnknownTopic(topic.to_owned()).into()),
            }
        }
    }

    /// Fsyncs every partition and the metadata store (graceful shutdown).
    pub fn flush(&self) -> Result<(), BrokerError> {
        Ok(self.topics.flush_all()?)
    }
}

/// Turns a log read into a fetch result: where the next fetch continues (past every record read,
/// matching or not), and with a filter only the matching records at or after `offset`.
fn shape(res: crate::storage::ReadResult, offset: u64, filter: Option<&Filter>) -> Fetched {
    let batches: Vec<Batch> = quiver_proto::Batches::new(res.bytes.clone())
        .filter_map(Result::ok)
        .collect();
    let next_offset = batches.last().map_or(offset, |b| b.header().next_offset());
    let (bytes, records) = match filter {
        None => (res.bytes, next_offset.saturating_sub(offset) as u32),
        Some(f) => {
            let mut out = bytes::BytesMut::new();
            let mut records = 0u32;
            for b in &batches {
                let keep = |r: &quiver_proto::RecordRef<'_>| r.offset >= offset && f.matches(r);
                if let Some(sel) = quiver_proto::batch::select(b, keep) {
                    records += Batch::parse(sel.clone()).map_or(0, |s| s.record_count());
                    out.extend_from_slice(&sel);
                }
            }
            (out.freeze(), records)
        }
    };
    Fetched {
        bytes,
        offset,
        next_offset,
        records,
        log_start: res.log_start,
        log_end: res.log_end,
    }
}

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
