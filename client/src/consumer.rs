//! The consumer: reads assigned partitions of one topic, or of several (the `_tp` methods, which the
//! group consumer uses; a partition is keyed by topic and number throughout). Each partition has a
//! fetch task that long-polls the broker on its own stream (so a quiet partition never delays a busy
//! one) and hands decoded records to the consumer through a bounded channel, which is the prefetch
//! buffer. Batches are CRC-checked on arrival; records before the requested offset are skipped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use quiver_proto::batch::{split_crc_checked, CheckedRecords};
use quiver_proto::frame::FrameKind;
use quiver_proto::groups::TopicPartition;
use quiver_proto::messages::{FetchRequest, FetchResponse, OffsetSpec, PluginRef};
use quiver_proto::{ErrorCode, Record};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::client::Client;
use crate::error::ClientError;
use crate::routes::Routes;
use crate::wire::{write_frame, FrameReader, WireError};

type Reader = FrameReader<quinn::RecvStream>;

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

/// A record and the topic partition it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    /// Shared by every record of the topic, so tagging records with it costs no allocation.
    pub topic: Arc<str>,
    pub partition: u32,
    pub record: Record,
}

impl ConsumedRecord {
    fn key(&self) -> Key {
        (self.topic.clone(), self.partition)
    }

    /// The topic partition the record came from.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(&*self.topic, self.partition)
    }
}

/// A partition's key inside the consumer: the shared topic name avoids allocating per record.
type Key = (Arc<str>, u32);

fn key(tp: &TopicPartition) -> Key {
    (Arc::from(tp.topic.as_str()), tp.partition)
}

struct Chunk {
    topic: Arc<str>,
    partition: u32,
    epoch: u64,
    result: Result<Vec<ConsumedRecord>, ClientError>,
    /// Where the fetch that produced this chunk ended (past records a filter skipped).
    next_offset: u64,
}

/// Reads partitions of one topic (the single-topic methods) or of any topics (the `_tp` methods).
pub struct Consumer {
    client: Client,
    /// Each partition is read from its leader (on a cluster).
    routes: Arc<Routes>,
    /// The topic of the single-topic methods (`assign`, `seek`, `position`, ...); empty for
    /// [`Consumer::multi`].
    topic: Arc<str>,
    config: ConsumerConfig,
    tx: mpsc::Sender<Chunk>,
    rx: mpsc::Receiver<Chunk>,
    fetchers: HashMap<Key, (u64, JoinHandle<()>)>,
    positions: HashMap<Key, u64>,
    /// Per partition, where the latest fetch ended.
    fetched_to: HashMap<Key, u64>,
    /// One shared name per topic, handed to every record of it.
    names: HashMap<String, Arc<str>>,
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
    /// A consumer of `topic`'s partitions.
    pub fn new(client: Client, topic: impl Into<String>, config: ConsumerConfig) -> Consumer {
        let (tx, rx) = mpsc::channel(config.prefetch.max(1));
        Consumer {
            routes: Arc::new(Routes::new(client.clone())),
            client,
            topic: Arc::from(topic.into()),
            config,
            tx,
            rx,
            fetchers: HashMap::new(),
            positions: HashMap::new(),
            fetched_to: HashMap::new(),
            names: HashMap::new(),
            ready: VecDeque::new(),
            epoch: 0,
        }
    }

    /// A consumer of partitions of any topics, assigned with [`Consumer::assign_tp`]; it has no
    /// topic for the single-topic methods.
    pub fn multi(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer::new(client, String::new(), config)
    }

    /// Shares `routes` (a group consumer's, which reaches its coordinator through them).
    pub(crate) fn routed(mut self, routes: Arc<Routes>) -> Consumer {
        self.routes = routes;
        self
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    fn tp(&self, partition: u32) -> TopicPartition {
        TopicPartition::new(&*self.topic, partition)
    }

    /// Starts reading `partitions` from `from`.
    pub fn assign(&mut self, partitions: &[u32], from: SeekTo) {
        for &p in partitions {
            self.seek(p, from);
        }
    }

    /// Starts reading one partition of any topic from `from` (restarting it if already assigned).
    pub fn assign_tp(&mut self, tp: &TopicPartition, from: SeekTo) {
        self.seek_tp(tp, from);
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
        self.unassign_tp(&self.tp(partition));
    }

    /// Stops reading a partition of any topic, dropping what is buffered for it.
    pub fn unassign_tp(&mut self, tp: &TopicPartition) {
        let k = key(tp);
        if let Some((_, h)) = self.fetchers.remove(&k) {
            h.abort();
        }
        self.positions.remove(&k);
        self.fetched_to.remove(&k);
        self.ready.retain(|r| r.partition != k.1 || r.topic != k.0);
    }

    /// The assigned partitions of the consumer's topic.
    pub fn assignment(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .fetchers
            .keys()
            .filter(|(topic, _)| *topic == self.topic)
            .map(|(_, p)| *p)
            .collect();
        v.sort_unstable();
        v
    }

    /// Every assigned partition, of any topic, sorted.
    pub fn assignment_tp(&self) -> Vec<TopicPartition> {
        let mut v: Vec<TopicPartition> = self
            .fetchers
            .keys()
            .map(|(t, p)| TopicPartition::new(&**t, *p))
            .collect();
        v.sort_unstable();
        v
    }

    /// Restarts a partition's reading at `to`, dropping anything buffered for it.
    pub fn seek(&mut self, partition: u32, to: SeekTo) {
        self.seek_tp(&self.tp(partition), to);
    }

    /// Restarts reading a partition of any topic at `to`, dropping anything buffered for it.
    pub fn seek_tp(&mut self, tp: &TopicPartition, to: SeekTo) {
        self.unassign_tp(tp);
        self.epoch += 1;
        let k = (self.name(&tp.topic), tp.partition);
        if let SeekTo::Offset(o) = to {
            self.positions.insert(k.clone(), o);
        }
        let task = FetchTask {
            routes: self.routes.clone(),
            topic: k.0.clone(),
            partition: tp.partition,
            epoch: self.epoch,
            config: self.config.clone(),
            tx: self.tx.clone(),
        };
        let handle = tokio::spawn(task.run(to.spec()));
        self.fetchers.insert(k, (self.epoch, handle));
    }

    fn name(&mut self, topic: &str) -> Arc<str> {
        if let Some(n) = self.names.get(topic) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(topic);
        self.names.insert(topic.to_owned(), n.clone());
        n
    }

    /// The offset the application has consumed `partition` up to: the next record it will get, or,
    /// with nothing buffered, where the last fetch ended (past records a filter skipped).
    pub fn position(&self, partition: u32) -> Option<u64> {
        self.position_tp(&self.tp(partition))
    }

    /// [`Consumer::position`] of a partition of any topic: the offset to commit for it.
    pub fn position_tp(&self, tp: &TopicPartition) -> Option<u64> {
        let k = key(tp);
        if let Some(r) = self
            .ready
            .iter()
            .find(|r| r.partition == k.1 && r.topic == k.0)
        {
            return Some(r.record.offset);
        }
        let delivered = self.positions.get(&k).copied();
        let fetched = self.fetched_to.get(&k).copied();
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
        // Hands the buffer over whole: no copy when it came from one chunk (see `accept`).
        let out = Vec::from(std::mem::take(&mut self.ready));
        // A chunk's records are consecutive: one position update per run of a partition.
        for (i, r) in out.iter().enumerate() {
            let run_ends = out.get(i + 1).is_none_or(|next| {
                next.partition != r.partition || !Arc::ptr_eq(&next.topic, &r.topic)
            });
            if run_ends {
                self.delivered(r);
            }
        }
        Ok(out)
    }

    fn take_ready(&mut self) -> Option<ConsumedRecord> {
        let r = self.ready.pop_front()?;
        self.delivered(&r);
        Some(r)
    }

    fn delivered(&mut self, r: &ConsumedRecord) {
        self.positions.insert(r.key(), r.record.offset + 1);
    }

    fn accept(&mut self, chunk: Chunk) -> Result<(), ClientError> {
        let k = (chunk.topic, chunk.partition);
        let current = self.fetchers.get(&k).map(|(e, _)| *e);
        if current != Some(chunk.epoch) {
            return Ok(()); // from before a seek
        }
        let records = chunk.result?;
        self.fetched_to.insert(k, chunk.next_offset);
        if self.ready.is_empty() {
            // Takes the chunk's buffer as it is (no copy of the records).
            self.ready = VecDeque::from(records);
        } else {
            self.ready.extend(records);
        }
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
    routes: Arc<Routes>,
    topic: Arc<str>,
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
                    topic: self.topic.clone(),
                    partition: self.partition,
                    epoch: self.epoch,
                    result: Err(e),
                    next_offset: 0,
                })
                .await;
        }
    }

    /// Fetches from the partition's leader until the consumer goes. On a cluster a refusal
    /// with NotLeader, or a lost node, sends the next fetch (from the same offset: replicas
    /// number records alike) to the leader fresh metadata names, as long as it takes.
    async fn fetch_loop(&self, mut offset: OffsetSpec) -> Result<(), ClientError> {
        let mut stream = None;
        let mut failovers = 0u32;
        // The fetch for `offset` was already written on `stream` (sent ahead, see below).
        let mut asked = false;
        self.routes.ready().await;
        loop {
            let (send, reader) = match &mut stream {
                Some(s) => s,
                None => match self.open().await {
                    Ok(s) => {
                        asked = false;
                        stream.insert(s)
                    }
                    Err(e) => {
                        self.fail_over(e, &mut failovers).await?;
                        continue;
                    }
                },
            };
            let fetched = self.fetch_within(send, reader, offset, asked).await;
            asked = false;
            let (resp, payload) = match fetched {
                Ok(r) => r,
                Err(e)
                    if e.code() == Some(ErrorCode::OffsetOutOfRange)
                        && self.config.reset.is_some() =>
                {
                    let to = self.config.reset.unwrap_or(SeekTo::Earliest);
                    tracing::warn!(topic = %self.topic, partition = self.partition, error = %e, ?to, "position out of range; resetting");
                    offset = to.spec();
                    continue;
                }
                Err(e) => {
                    stream = None;
                    self.fail_over(e, &mut failovers).await?;
                    continue;
                }
            };
            failovers = 0;
            let advanced = offset != OffsetSpec::At(resp.next_offset);
            offset = OffsetSpec::At(resp.next_offset);
            // Room for this answer in the prefetch buffer first: an answer asked for ahead must
            // be read soon, since unread answers hold the connection's receive window, which
            // every other stream of the connection (group heartbeats, produce replies) shares.
            let Ok(room) = self.tx.reserve().await else {
                return Ok(()); // the consumer is gone
            };
            // Then ask for what follows before decoding this answer, so that the broker reads
            // and sends the next one meanwhile (one fetch ahead per partition, as Kafka's
            // consumer does). If the write fails, the next pass finds out on a fresh stream.
            if let Some((send, _)) = &mut stream {
                asked = self.ask(send, offset).await.is_ok();
                if !asked {
                    stream = None;
                }
            }
            let records = decode(
                &self.topic,
                self.partition,
                payload,
                resp.offset,
                resp.records,
            )?;
            // Empty chunks matter too when a filter skipped records: they move the position.
            if !records.is_empty() || advanced {
                let chunk = Chunk {
                    topic: self.topic.clone(),
                    partition: self.partition,
                    epoch: self.epoch,
                    result: Ok(records),
                    next_offset: resp.next_offset,
                };
                room.send(chunk);
            }
        }
    }

    /// A fetch stream to the partition's leader.
    async fn open(&self) -> Result<(quinn::SendStream, Reader), ClientError> {
        let addr = self.routes.address(&self.topic, self.partition);
        self.routes.client(&addr).await?.open().await
    }

    /// One fetch. On a cluster, when no answer comes a while after the long-poll should have
    /// ended, fresh metadata is asked for: a crashed node says nothing, and its connection
    /// lives until its idle timeout. If another node leads the partition now, the fetch is
    /// given up (its stream with it) and sent there; else the answer is waited for (a filter
    /// plugin may take its time).
    async fn fetch_within(
        &self,
        send: &mut quinn::SendStream,
        reader: &mut Reader,
        offset: OffsetSpec,
        asked: bool,
    ) -> Result<(FetchResponse, Bytes), ClientError> {
        let fetch = self.fetch_once(send, reader, offset, asked);
        if !self.routes.is_cluster() {
            return Ok(fetch.await?);
        }
        tokio::pin!(fetch);
        let asked = self.routes.address(&self.topic, self.partition);
        let limit = self.config.max_wait + ANSWER_GRACE;
        loop {
            tokio::select! {
                r = &mut fetch => return Ok(r?),
                () = tokio::time::sleep(limit) => {
                    self.routes.refresh().await;
                    if self.routes.address(&self.topic, self.partition) != asked {
                        return Err(ClientError::Timeout(limit));
                    }
                }
            }
        }
    }

    /// One fetch: writes the request (unless `asked`: it is on the stream already) and reads
    /// the answer.
    async fn fetch_once(
        &self,
        send: &mut quinn::SendStream,
        reader: &mut Reader,
        offset: OffsetSpec,
        asked: bool,
    ) -> Result<(FetchResponse, Bytes), WireError> {
        if !asked {
            self.ask(send, offset).await?;
        }
        reader.expect(FrameKind::FetchOk).await
    }

    /// Writes a fetch request for `offset`.
    async fn ask(&self, send: &mut quinn::SendStream, offset: OffsetSpec) -> Result<(), WireError> {
        let req = FetchRequest {
            request_id: self.routes.request_id(),
            topic: self.topic.to_string(),
            partition: self.partition,
            offset,
            max_bytes: self.config.max_bytes,
            max_wait_ms: self.config.max_wait.as_millis().min(u32::MAX as u128) as u32,
            min_bytes: self.config.min_bytes,
            filter: self.config.filter.clone(),
            plugin: self.config.plugin.clone(),
        };
        write_frame(send, FrameKind::Fetch, &req, Bytes::new()).await
    }

    /// Waits a backoff and refreshes the partition leaders when `e` means the partition is
    /// led elsewhere now; gives `e` back otherwise (against a single broker, a lost connection
    /// ends the consumer's reading as it always did).
    async fn fail_over(&self, e: ClientError, failovers: &mut u32) -> Result<(), ClientError> {
        if !self.routes.moved(&e) {
            return Err(e);
        }
        *failovers += 1;
        let backoff = (FAILOVER_BACKOFF * 2u32.pow((*failovers).min(5) - 1)).min(MAX_BACKOFF);
        tracing::debug!(topic = %self.topic, partition = self.partition, error = %e, ?backoff, "reading the partition from its new leader");
        tokio::time::sleep(backoff).await;
        self.routes.refresh().await;
        Ok(())
    }
}

/// How long past its long-poll a fetch's answer may take on a cluster.
const ANSWER_GRACE: Duration = Duration::from_secs(1);

/// The first wait before a fetch goes to a partition's new leader, and the longest.
const FAILOVER_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Records at or after `first` in a fetch payload: each batch CRC-checked, then its records
/// checked as they are read (one pass over them, not a check and then a read). `expected` is the
/// count the broker announced, used only to size the result (never beyond what the payload holds).
pub(crate) fn decode(
    topic: &Arc<str>,
    partition: u32,
    mut payload: Bytes,
    first: u64,
    expected: u32,
) -> Result<Vec<ConsumedRecord>, ClientError> {
    let most = (payload.len() / MIN_RECORD_LEN).min(MAX_RESERVED);
    let mut out = Vec::with_capacity((expected as usize).min(most));
    while !payload.is_empty() {
        let batch = split_crc_checked(&mut payload)?;
        for r in CheckedRecords::new(&batch)? {
            let r = r?;
            if r.offset >= first {
                out.push(ConsumedRecord {
                    topic: topic.clone(),
                    partition,
                    record: r.to_record(&batch),
                });
            }
        }
    }
    Ok(out)
}

/// No encoded record is shorter (its fixed part and the smallest tag count, key, value and header
/// count, as `BatchHeader::parse` checks; the batch header comes on top).
const MIN_RECORD_LEN: usize = quiver_proto::batch::RECORD_FIXED_LEN + 11;

/// The most records `decode` reserves room for before reading any (beyond it the vector grows as
/// usual): an announced count is the peer's word, and the room is reserved before any CRC check.
const MAX_RESERVED: usize = 1 << 16;
