//! The consumer: reads assigned partitions of one topic. Each partition has a fetch task that
//! long-polls the broker on its own stream (so a quiet partition never delays a busy one) and hands
//! decoded records to the consumer through a bounded channel, which is the prefetch buffer.
//! Batches are CRC-checked on arrival; records before the requested offset are skipped.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use quiver_proto::frame::FrameKind;
use quiver_proto::messages::{FetchRequest, FetchResponse, OffsetSpec, PluginRef};
use quiver_proto::{Batches, ErrorCode, Record};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::ClientError;
use crate::wire::write_frame;

/// Where to start reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    Earliest,
    Latest,
    Offset(u64),
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl SeekTo {
    fn spec(self) -> OffsetSpec {
        match self {
            SeekTo::Earliest => OffsetSpec::Earliest,
            SeekTo::Latest => OffsetSpec::Latest,
            SeekTo::Offset(o) => OffsetSpec::At(o),
            SeekTo::Timestamp(t) => OffsetSpec::Timestamp(t),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Soft limit of one fetch response.
    pub max_bytes: u32,
    /// How long the broker holds a fetch waiting for data.
    pub max_wait: Duration,
    pub min_bytes: u32,
    /// Fetch responses buffered ahead of the application, over all partitions.
    pub prefetch: usize,
    /// Native filter expression applied by the broker.
    pub filter: Option<String>,
    /// A deployed filter plugin (`NAME` or `NAME@VERSION`, with its config) run by the broker on
    /// each fetch, after `filter`.
    pub plugin: Option<PluginRef>,
    /// Where to continue when the position is no longer in the log (retention deleted it, or a seek
    /// went past the end), like Kafka's `auto.offset.reset`; `None` surfaces the error instead.
    pub reset: Option<SeekTo>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_bytes: 1 << 20,
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            prefetch: 16,
            filter: None,
            plugin: None,
            reset: Some(SeekTo::Earliest),
        }
    }
}

/// A record and the partition it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub partition: u32,
    pub record: Record,
}

struct Chunk {
    partition: u32,
    epoch: u64,
    result: Result<Vec<ConsumedRecord>, ClientError>,
    /// Where the fetch that produced this chunk ended (past records a filter skipped).
    next_offset: u64,
}

pub struct Consumer {
    client: Client,
    topic: String,
    config: ConsumerConfig,
    tx: mpsc::Sender<Chunk>,
    rx: mpsc::Receiver<Chunk>,
    fetchers: HashMap<u32, (u64, JoinHandle<()>)>,
    positions: HashMap<u32, u64>,
    /// Per partition, where the latest fetch ended.
    fetched_to: HashMap<u32, u64>,
    ready: VecDeque<ConsumedRecord>,
    epoch: u64,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for (_, (_, h)) in self.fetchers.drain() {
            h.abort();
        }
    }
}

impl Consumer {
    pub fn new(client: Client, topic: impl Into<String>, config: ConsumerConfig) -> Consumer {
        let (tx, rx) = mpsc::channel(config.prefetch.max(1));
        Consumer {
            client,
            topic: topic.into(),
            config,
            tx,
            rx,
            fetchers: HashMap::new(),
            positions: HashMap::new(),
            fetched_to: HashMap::new(),
            ready: VecDeque::new(),
            epoch: 0,
        }
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Starts reading `partitions` from `from`.
    pub fn assign(&mut self, partitions: &[u32], from: SeekTo) {
        for &p in partitions {
            self.seek(p, from);
        }
    }

    /// Assigns every partition of the topic; returns them.
    pub async fn assign_all(&mut self, from: SeekTo) -> Result<Vec<u32>, ClientError> {
        let desc = self.client.admin().describe_topic(&self.topic).await?;
        let parts: Vec<u32> = desc.partitions.iter().map(|p| p.partition).collect();
        self.assign(&parts, from);
        Ok(parts)
    }

    /// Stops reading a partition.
    pub fn unassign(&mut self, partition: u32) {
        if let Some((_, h)) = self.fetchers.remove(&partition) {
            h.abort();
        }
        self.positions.remove(&partition);
        self.fetched_to.remove(&partition);
        self.ready.retain(|r| r.partition != partition);
    }

    pub fn assignment(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.fetchers.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Restarts a partition's reading at `to`, dropping anything buffered for it.
    pub fn seek(&mut self, partition: u32, to: SeekTo) {
        self.unassign(partition);
        self.epoch += 1;
        if let SeekTo::Offset(o) = to {
            self.positions.insert(partition, o);
        }
        let task = FetchTask {
            client: self.client.clone(),
            topic: self.topic.clone(),
            partition,
            epoch: self.epoch,
            config: self.config.clone(),
            tx: self.tx.clone(),
        };
        self.fetchers
            .insert(partition, (self.epoch, tokio::spawn(task.run(to.spec()))));
    }

    /// The offset the application has consumed `partition` up to: the next record it will get, or,
    /// with nothing buffered, where the last fetch ended (past records a filter skipped).
    pub fn position(&self, partition: u32) -> Option<u64> {
        if let Some(r) = self.ready.iter().find(|r| r.partition == partition) {
            return Some(r.record.offset);
        }
        let delivered = self.positions.get(&partition).copied();
        let fetched = self.fetched_to.get(&partition).copied();
        delivered.max(fetched)
    }

    /// The next record, waiting as long as it takes.
    pub async fn next(&mut self) -> Result<ConsumedRecord, ClientError> {
        loop {
            if let Some(r) = self.take_ready() {
                return Ok(r);
            }
            let chunk = self.rx.recv().await.ok_or(ClientError::Closed)?;
            self.accept(chunk)?;
        }
    }

    /// Records available within `timeout` (possibly none).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumedRecord>, ClientError> {
        // Chunks a filter emptied only move positions: keep waiting for records until the timeout.
        let deadline = tokio::time::Instant::now() + timeout;
        while self.ready.is_empty() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(chunk)) => self.accept(chunk)?,
                _ => break,
            }
        }
        while let Ok(chunk) = self.rx.try_recv() {
            self.accept(chunk)?;
        }
        let out: Vec<ConsumedRecord> = self.ready.drain(..).collect();
        for r in &out {
            self.positions.insert(r.partition, r.record.offset + 1);
        }
        Ok(out)
    }

    fn take_ready(&mut self) -> Option<ConsumedRecord> {
        let r = self.ready.pop_front()?;
        self.positions.insert(r.partition, r.record.offset + 1);
        Some(r)
    }

    fn accept(&mut self, chunk: Chunk) -> Result<(), ClientError> {
        let current = self.fetchers.get(&chunk.partition).map(|(e, _)| *e);
        if current != Some(chunk.epoch) {
            return Ok(()); // from before a seek
        }
        let records = chunk.result?;
        self.fetched_to.insert(chunk.partition, chunk.next_offset);
        self.ready.extend(records);
        Ok(())
    }

    /// The records as a `Stream`.
    pub fn into_stream(self) -> impl Stream<Item = Result<ConsumedRecord, ClientError>> {
        futures_util::stream::unfold(self, |mut c| async move {
            let item = c.next().await;
            Some((item, c))
        })
    }
}

struct FetchTask {
    client: Client,
    topic: String,
    partition: u32,
    epoch: u64,
    config: ConsumerConfig,
    tx: mpsc::Sender<Chunk>,
}

impl FetchTask {
    async fn run(self, start: OffsetSpec) {
        if let Err(e) = self.fetch_loop(start).await {
            let _ = self
                .tx
                .send(Chunk {
                    partition: self.partition,
                    epoch: self.epoch,
                    result: Err(e),
                    next_offset: 0,
                })
                .await;
        }
    }

    async fn fetch_loop(&self, mut offset: OffsetSpec) -> Result<(), ClientError> {
        let (mut send, mut reader) = self.client.open().await?;
        loop {
            let req = FetchRequest {
                request_id: self.client.next_request_id(),
                topic: self.topic.clone(),
                partition: self.partition,
                offset,
                max_bytes: self.config.max_bytes,
                max_wait_ms: self.config.max_wait.as_millis().min(u32::MAX as u128) as u32,
                min_bytes: self.config.min_bytes,
                filter: self.config.filter.clone(),
                plugin: self.config.plugin.clone(),
            };
            write_frame(&mut send, FrameKind::Fetch, &req, Bytes::new()).await?;
            let (resp, payload): (FetchResponse, Bytes) = match reader
                .expect(FrameKind::FetchOk)
                .await
            {
                Err(e)
                    if e.remote_code() == Some(ErrorCode::OffsetOutOfRange)
                        && self.config.reset.is_some() =>
                {
                    let to = self.config.reset.unwrap_or(SeekTo::Earliest);
                    tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, ?to, "position out of range; resetting");
                    offset = to.spec();
                    continue;
                }
                other => other?,
            };
            let records = decode(self.partition, payload, resp.offset)?;
            let advanced = offset != OffsetSpec::At(resp.next_offset);
            offset = OffsetSpec::At(resp.next_offset);
            // Empty chunks matter too when a filter skipped records: they move the position.
            if !records.is_empty() || advanced {
                let chunk = Chunk {
                    partition: self.partition,
                    epoch: self.epoch,
                    result: Ok(records),
                    next_offset: resp.next_offset,
                };
                if self.tx.send(chunk).await.is_err() {
                    return Ok(()); // the consumer is gone
                }
            }
        }
    }
}

/// Records at or after `first` in a fetch payload, CRC-checked.
pub(crate) fn decode(
    partition: u32,
    payload: Bytes,
    first: u64,
) -> Result<Vec<ConsumedRecord>, ClientError> {
    let mut out = Vec::new();
    for batch in Batches::new(payload) {
        let batch = batch?;
        out.extend(
            batch
                .to_records()
                .filter(|r| r.offset >= first)
                .map(|record| ConsumedRecord { partition, record }),
        );
    }
    Ok(out)
}
