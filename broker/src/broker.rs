//! The broker core, independent of the transport: produce into a topic's partitions (through its
//! ingest pipeline of plugins, if any) and fetch from them with long-poll and filters. The QUIC
//! server (and the tests) call into this.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quiver_proto::{Batch, ErrorCode};

use crate::config::BrokerConfig;
use crate::delay::{DelayError, DelayStore};
use crate::filter::Filter;
use crate::groups::{validate_group, GroupError, Groups, PollParams, Polled, Settle};
use crate::meta::{MetaError, MetaStore};
use crate::plugins::pipeline::ExchangeRouting;
use crate::plugins::{
    EngineLimits, Pipelines, PluginEngine, PluginError, PluginRegistry, ReadFilter,
};
use crate::producers::{Producers, Verdict};
use crate::routing::{Exchanges, RoutingError};
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
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("invalid batch: {0}")]
    InvalidBatch(#[from] quiver_proto::BatchError),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error(transparent)]
    Delay(#[from] DelayError),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("producer {producer} skipped sequence numbers on {topic}/{partition}: expected {expected}, got {got}")]
    OutOfOrderSequence {
        producer: u64,
        topic: String,
        partition: u32,
        expected: u32,
        got: u32,
    },
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
            BrokerError::Plugin(e) => e.code(),
            BrokerError::InvalidBatch(_) => ErrorCode::InvalidBatch,
            BrokerError::Group(e) => e.code(),
            BrokerError::Routing(e) => e.code(),
            BrokerError::Delay(e) => delay_code(e),
            BrokerError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            BrokerError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            BrokerError::Internal(_) => ErrorCode::Internal,
            BrokerError::ShuttingDown => ErrorCode::ShuttingDown,
            BrokerError::Wire(code, _) => *code,
        }
    }
}

fn delay_code(e: &DelayError) -> ErrorCode {
    match e {
        DelayError::Storage(e) => storage_code(e),
        DelayError::Batch(_) | DelayError::BadHeader { .. } | DelayError::TooFar { .. } => {
            ErrorCode::InvalidBatch
        }
        DelayError::UnknownId(_) => ErrorCode::UnknownDelayed,
        DelayError::Corrupt(_) | DelayError::Encode(_) => ErrorCode::StorageError,
        DelayError::Internal(_) => ErrorCode::Internal,
    }
}

pub(crate) fn storage_code(e: &StorageError) -> ErrorCode {
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
    /// A filter plugin applied after `filter`, with the same position rule.
    pub plugin: Option<Arc<ReadFilter>>,
}

/// Where a produced batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    pub partition: u32,
    pub base_offset: u64,
    pub last_offset: u64,
    pub log_end: u64,
    /// Records appended (0 when the ingest pipeline dropped or diverted them all).
    pub appended: u32,
    /// The ingest pipeline changed the batch.
    pub transformed: bool,
    /// An idempotent producer's resend: nothing was appended now; the offsets are the first
    /// append's (unknown, with `transformed` set, when it is too old to be remembered).
    pub duplicate: bool,
    /// Records held for delayed delivery, with ids `delay_first_id..delay_first_id + delayed`.
    pub delayed: u32,
    pub delay_first_id: u64,
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
    registry: Arc<PluginRegistry>,
    pipelines: Pipelines,
    groups: Groups,
    producers: Producers,
    exchanges: Exchanges,
    delays: DelayStore,
    meta: MetaStore,
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
        let limits = EngineLimits {
            max_memory_bytes: (config.plugins.max_memory_mb as usize) << 20,
            max_instances: config.plugins.max_instances,
        };
        let engine = PluginEngine::new(&config.data_dir.join("plugins").join("compiled"), limits)?;
        let registry = Arc::new(PluginRegistry::new(meta.clone(), Arc::new(engine)));
        let max_output = config.log.max_batch_bytes as usize;
        let pipelines =
            Pipelines::open(meta.clone(), registry.clone(), config.plugins, max_output)?;
        let groups = Groups::new(meta.clone());
        let topics = TopicStore::open(&config.data_dir, meta.clone())?;
        let delays = DelayStore::open(&config.data_dir.join("delay"), &topics)?;
        let broker = Arc::new(Broker {
            topics,
            config,
            round_robin: AtomicU32::new(0),
            registry,
            pipelines,
            groups,
            producers: Producers::default(),
            exchanges: Exchanges::open(meta.clone())?,
            delays,
            meta,
        });
        broker
            .delays
            .start(Arc::downgrade(&broker))
            .map_err(|e| BrokerError::Internal(format!("cannot start delayed delivery: {e}")))?;
        Ok(broker)
    }

    pub fn delays(&self) -> &DelayStore {
        &self.delays
    }

    pub fn registry(&self) -> &PluginRegistry {
        &self.registry
    }

    pub fn pipelines(&self) -> &Pipelines {
        &self.pipelines
    }

    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    pub fn exchanges(&self) -> &Exchanges {
        &self.exchanges
    }

    /// Routes one batch through an exchange (its router plugin, or else its bindings) and appends
    /// each destination's records (split by key hash over the topic's partitions, so a key keeps
    /// its order); answers once every append is done (and, for `acks=all`, fsync'd). Runs plugins:
    /// off the async workers.
    pub fn produce_to_exchange(
        &self,
        exchange: &str,
        batch: Bytes,
        acks: Durability,
    ) -> Result<Produced, BrokerError> {
        let batch = Batch::parse(batch)?;
        let ex = self.exchanges.get(exchange)?;
        let exists = |t: &str| self.topics.get(t).is_ok();
        let plan = match self.pipelines.route_exchange(exchange, &batch, &exists) {
            None => ex.route(&batch)?.into_iter().collect(),
            Some(Ok(ExchangeRouting::Plan(plan))) => plan,
            Some(Ok(ExchangeRouting::Failed(settled))) => {
                for dead in settled.dead_letters {
                    self.dead_letter(exchange, dead, acks)?;
                }
                return Ok(nothing_appended(0, 0));
            }
            Some(Err(e)) => return Err(e.into()),
        };
        let mut out = Routed::default();
        let forwarded = Cell::new(0);
        for (topic, indexes) in plan {
            self.append_routed(
                &topic,
                &batch,
                &indexes,
                acks,
                Hops::new(&forwarded),
                &mut out,
            )?;
        }
        let (appended, delayed) = (out.appended, out.delayed);
        out.sync(self, acks)?;
        Ok(Produced {
            appended,
            delayed,
            transformed: delayed > 0,
            ..nothing_appended(0, 0)
        })
    }

    /// Appends records `indexes` of `batch` to `topic`, split over its partitions by key hash,
    /// through each partition's ingest pipeline (`hops`: how far routers already sent them).
    fn append_routed(
        &self,
        topic: &str,
        batch: &Batch,
        indexes: &[usize],
        acks: Durability,
        hops: Hops<'_>,
        out: &mut Routed,
    ) -> Result<(), BrokerError> {
        let t = self.topics.get(topic)?;
        let n = t.partitions().len().max(1) as u64;
        for (partition, idx) in split_by_key(batch, indexes, n, &self.round_robin) {
            let Some(part) = crate::plugins::pipeline::select(batch, &idx)? else {
                continue;
            };
            let log = t.partition(partition)?;
            // Appended without waiting for the fsync: all destinations are synced together.
            let p = self.append_batch(topic, partition, log, part, acks, true, hops)?;
            out.appended += p.appended;
            out.delayed += p.delayed;
            out.synced.push((topic.to_owned(), p.partition, p.log_end));
        }
        Ok(())
    }

    /// A fresh producer id for idempotent produce (unique across restarts).
    pub fn init_producer(&self) -> Result<u64, BrokerError> {
        Ok(self.meta.generate_id()?)
    }

    /// Deletes a topic and forgets its ingest pipeline, producer sequences, queue state and the
    /// records held for it.
    pub fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        self.topics.delete_topic(name)?;
        self.delays.purge_topic(name)?;
        self.pipelines.remove_topic(name)?;
        self.producers.remove_topic(name);
        self.groups.queues.remove_topic(name);
        Ok(())
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
        let topic = self.topics.create_topic(name, config)?;
        // A pipeline left by a deleted topic of the same name (an attach racing the delete) must
        // not apply to the new one.
        self.pipelines.remove_topic(name)?;
        Ok(topic)
    }

    /// Validates one batch, runs it through the topic's ingest pipeline (plugins run here, so a
    /// topic with a pipeline must be produced to off the async workers) and appends the result in
    /// the caller's order, without waiting for an fsync (see [`Broker::sync`] for `acks=all`).
    /// `partition: None` spreads batches round-robin.
    pub fn append(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
        acks: Durability,
    ) -> Result<Produced, BrokerError> {
        self.append_with(topic, partition, batch, acks, true)
    }

    /// [`Broker::append`] for a caller on an async worker that found no pipeline on the topic a
    /// moment before: it never runs plugins, so a pipeline attached in between cannot run on the
    /// worker (the batch is ordered before that attach).
    pub fn append_without_plugins(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
        acks: Durability,
    ) -> Result<Produced, BrokerError> {
        self.append_with(topic, partition, batch, acks, false)
    }

    fn append_with(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
        acks: Durability,
        run_plugins: bool,
    ) -> Result<Produced, BrokerError> {
        let t = self.topics.get(topic)?;
        let count = t.partitions().len() as u32;
        let p = partition
            .unwrap_or_else(|| self.round_robin.fetch_add(1, Ordering::Relaxed) % count.max(1));
        let log = t.partition(p)?;
        let batch = Batch::parse(batch)?;
        let producer = batch.header().producer_id;
        let forwarded = Cell::new(0);
        let hops = Hops::new(&forwarded);
        if producer == 0 {
            return self.append_batch(topic, p, log, batch, acks, run_plugins, hops);
        }
        if partition.is_none() {
            return Err(BrokerError::InvalidRequest(
                "a batch with a producer id (idempotent produce) must name its partition".into(),
            ));
        }
        let (base, count) = (batch.header().base_sequence, batch.record_count());
        let state = self.producers.state(producer, topic, p);
        let mut seq = state.lock();
        match seq.check(base, count) {
            Verdict::Append => {
                match self.append_batch(topic, p, log, batch, acks, run_plugins, hops) {
                    Ok(produced) => {
                        seq.appended(base, count, produced);
                        Ok(produced)
                    }
                    Err(e) => {
                        seq.failed(base);
                        Err(e)
                    }
                }
            }
            Verdict::Duplicate(Some(first)) => Ok(Produced {
                duplicate: true,
                ..first
            }),
            Verdict::Duplicate(None) => Ok(Produced {
                duplicate: true,
                ..nothing_appended(p, log.stats().log_end)
            }),
            Verdict::OutOfOrder { expected } => Err(BrokerError::OutOfOrderSequence {
                producer,
                topic: topic.to_owned(),
                partition: p,
                expected,
                got: base,
            }),
        }
    }

    /// Runs the pipeline (when asked and attached), appends one validated batch and holds its
    /// delayed records. Records a router stage sends elsewhere are appended (and, for `acks=all`,
    /// synced) before this returns.
    #[allow(clippy::too_many_arguments)]
    fn append_batch(
        &self,
        topic: &str,
        p: u32,
        log: &crate::storage::PartitionLog,
        batch: Batch,
        acks: Durability,
        run_plugins: bool,
        hops: Hops<'_>,
    ) -> Result<Produced, BrokerError> {
        if !run_plugins || !self.pipelines.has_pipeline(topic) {
            return self.append_or_hold(topic, p, log, batch, acks, false);
        }
        let exists = |t: &str| self.topics.get(t).is_ok();
        let ingested = self.pipelines.run(topic, batch, &exists)?;
        for dead in ingested.dead_letters {
            self.dead_letter(topic, dead, acks)?;
        }
        if !ingested.routed.is_empty() {
            self.forward(topic, ingested.routed, acks, hops)?;
        }
        match ingested.batch {
            Some(b) => self.append_or_hold(topic, p, log, b, acks, ingested.transformed),
            None => Ok(nothing_appended(p, log.stats().log_end)),
        }
    }

    /// Appends what a router stage of `topic` sent to other topics.
    fn forward(
        &self,
        topic: &str,
        routed: Vec<(String, Batch)>,
        acks: Durability,
        hops: Hops<'_>,
    ) -> Result<(), BrokerError> {
        if hops.depth >= MAX_ROUTER_HOPS {
            return Err(BrokerError::InvalidRequest(format!(
                "routing loop: records routed from {topic} passed {MAX_ROUTER_HOPS} router stages"
            )));
        }
        let total = hops.forwarded.get().saturating_add(routed.len() as u32);
        if total > MAX_FORWARDED {
            return Err(BrokerError::InvalidRequest(format!(
                "router stages sent one produce to more than {MAX_FORWARDED} topics"
            )));
        }
        hops.forwarded.set(total);
        let next = Hops {
            depth: hops.depth + 1,
            ..hops
        };
        let mut out = Routed::default();
        for (dest, b) in routed {
            let all: Vec<usize> = (0..b.record_count() as usize).collect();
            self.append_routed(&dest, &b, &all, acks, next, &mut out)?;
        }
        out.sync(self, acks)
    }

    /// Appends a batch (its records that carry a due time go to the delay store instead).
    fn append_or_hold(
        &self,
        topic: &str,
        p: u32,
        log: &crate::storage::PartitionLog,
        batch: Batch,
        acks: Durability,
        transformed: bool,
    ) -> Result<Produced, BrokerError> {
        let durability = if acks == Durability::All {
            Durability::Leader
        } else {
            acks
        };
        if batch.header().flags & quiver_proto::batch::FLAG_DELAYED == 0 {
            return Ok(produced(p, log.append(&batch, durability)?, transformed));
        }
        // Checked now: delivered later, the records must fit the topic's batches.
        let max = log.config().max_batch_bytes as usize;
        if batch.bytes().len() > max {
            let len = batch.bytes().len();
            return Err(StorageError::BatchTooLarge { len, max }.into());
        }
        let held = self.delays.hold(topic, p, batch, acks)?;
        let mut out = match held.immediate {
            // The records not held, in their order: the offsets count only them.
            Some(b) => produced(p, log.append(&b, durability)?, transformed),
            None => Produced {
                transformed,
                ..nothing_appended(p, log.stats().log_end)
            },
        };
        out.delayed = held.count;
        out.delay_first_id = held.first_id;
        Ok(out)
    }

    /// Whether producing to `topic` runs plugins (and so must not run on an async worker).
    pub fn has_pipeline(&self, topic: &str) -> bool {
        self.pipelines.has_pipeline(topic)
    }

    /// Appends records a plugin failed on to `<topic>.dlq` (created with one partition on first
    /// use), as durable as the produce asked for.
    fn dead_letter(&self, topic: &str, batch: Bytes, acks: Durability) -> Result<(), BrokerError> {
        let dlq = format!("{topic}.dlq");
        let t = match self.topics.get(&dlq) {
            Ok(t) => t,
            Err(StorageError::UnknownTopic(_)) => {
                match self.create_topic(&dlq, Some(1), LogOverrides::default()) {
                    Ok(t) => t,
                    Err(BrokerError::Storage(StorageError::TopicExists(_))) => {
                        self.topics.get(&dlq)?
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e.into()),
        };
        let log = t.partition(0)?;
        let info = log.append(&Batch::parse(batch)?, Durability::Leader)?;
        if acks == Durability::All {
            log.sync_through(info.log_end)?;
        }
        Ok(())
    }

    /// Leases records of a topic to a queue-mode consumer, waiting up to `max_wait` for some
    /// (new records, redeliveries coming due, or leases running out wake the wait).
    pub async fn queue_poll(
        self: &Arc<Self>,
        params: PollParams,
        max_wait: Duration,
    ) -> Result<Polled, BrokerError> {
        validate_group(&params.group)?;
        let topic = self.topics.get(&params.topic)?;
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut ends: Vec<_> = topic
            .partitions()
            .iter()
            .map(|l| l.subscribe_end())
            .collect();
        let params = Arc::new(params);
        loop {
            for rx in &mut ends {
                rx.borrow_and_update();
            }
            // Registered before looking, so a give-back during the look is not missed.
            let given_back = self.groups.queues.given_back();
            tokio::pin!(given_back);
            given_back.as_mut().enable();
            let (b, t, p) = (self.clone(), topic.clone(), params.clone());
            let polled = tokio::task::spawn_blocking(move || {
                b.groups
                    .queues
                    .poll_once(&p, &t, &|topic, batch| b.bury(topic, batch))
            })
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))??;
            let now = tokio::time::Instant::now();
            if !polled.parts.is_empty() || now >= deadline {
                return Ok(polled);
            }
            // New records, records given back and due times wake the poll; this is a safety net.
            let mut wake = deadline.min(now + QUEUE_RECHECK);
            if let Some(e) = polled.next_event {
                wake = wake.min(tokio::time::Instant::from_std(e).max(now));
            }
            let changed =
                futures_util::future::select_all(ends.iter_mut().map(|rx| Box::pin(rx.changed())));
            tokio::select! {
                (r, _, _) = changed => if r.is_err() {
                    return Err(StorageError::UnknownTopic(params.topic.clone()).into());
                },
                _ = given_back => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Acks, nacks or releases records leased to `consumer` (blocking: may write dead letters).
    pub fn queue_settle(
        &self,
        group: &str,
        topic: &str,
        consumer: &str,
        how: Settle,
        ranges: &[quiver_proto::groups::OffsetRange],
    ) -> Result<(u64, u64), BrokerError> {
        validate_group(group)?;
        let t = self.topics.get(topic)?;
        let sink = |topic: &str, batch: Bytes| self.bury(topic, batch);
        Ok(self
            .groups
            .queues
            .settle(group, &t, consumer, how, ranges, &sink)?)
    }

    /// The dead-letter sink of queue mode: a record out of deliveries goes to `<topic>.dlq`.
    fn bury(&self, topic: &str, batch: Bytes) -> Result<(), GroupError> {
        self.dead_letter(topic, batch, Durability::Leader)
            .map_err(|e| GroupError::Internal(e.to_string()))
    }

    /// A read filter for one fetch session: the plugin `reference` initialised with `config`.
    pub fn read_filter(
        &self,
        reference: &str,
        config: Vec<(String, String)>,
    ) -> Result<ReadFilter, BrokerError> {
        Ok(self.pipelines.read_filter(reference, config)?)
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
    ) -> Result<Produced, BrokerError> {
        let (b, t) = (self.clone(), topic.to_owned());
        let produced = if self.has_pipeline(topic) {
            tokio::task::spawn_blocking(move || b.append(&t, partition, batch, acks))
                .await
                .map_err(|e| BrokerError::Internal(e.to_string()))??
        } else {
            self.append_without_plugins(topic, partition, batch, acks)?
        };
        if acks == Durability::All {
            let (b, t) = (self.clone(), topic.to_owned());
            tokio::task::spawn_blocking(move || b.sync(&t, produced.partition, produced.log_end))
                .await
                .map_err(|e| BrokerError::Internal(e.to_string()))??;
        }
        Ok(produced)
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
                return shape_off_worker(res, offset, &params).await;
            }
            match tokio::time::timeout_at(deadline, end_rx.changed()).await {
                // New data, or the wait timed out and the next pass returns what there is.
                Ok(Ok(())) | Err(_) => continue,
                // The partition was closed under us: its topic was deleted.
                Ok(Err(_)) => return Err(StorageError::UnknownTopic(topic.to_owned()).into()),
            }
        }
    }

    /// Stops delayed delivery and fsyncs every partition, the delay log and the metadata store
    /// (graceful shutdown: nothing is delivered after it).
    pub fn flush(&self) -> Result<(), BrokerError> {
        self.delays.close()?;
        Ok(self.topics.flush_all()?)
    }
}

fn produced(partition: u32, info: AppendInfo, transformed: bool) -> Produced {
    Produced {
        partition,
        base_offset: info.base_offset,
        last_offset: info.last_offset,
        log_end: info.log_end,
        appended: (info.log_end - info.base_offset) as u32,
        transformed,
        duplicate: false,
        delayed: 0,
        delay_first_id: 0,
    }
}

/// Groups record indexes (ascending) by partition: by key hash, keyless records together on the
/// next round-robin partition.
fn split_by_key(
    batch: &Batch,
    indexes: &[usize],
    partitions: u64,
    round_robin: &AtomicU32,
) -> std::collections::BTreeMap<u32, Vec<usize>> {
    let keyless = (round_robin.fetch_add(1, Ordering::Relaxed) as u64 % partitions) as u32;
    let mut out: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    if partitions <= 1 {
        // One partition: no key needs hashing.
        out.insert(0, indexes.to_vec());
        return out;
    }
    let mut want = indexes.iter().peekable();
    for (i, r) in batch.records().enumerate() {
        if want.next_if(|&&j| j == i).is_none() {
            continue;
        }
        let p = match r.key {
            Some(k) => quiver_proto::routing::partition_for_key(k, partitions as u32),
            None => keyless,
        };
        out.entry(p).or_default().push(i);
    }
    out
}

/// A produce that appended nothing (offsets unknown, so marked transformed).
fn nothing_appended(partition: u32, end: u64) -> Produced {
    Produced {
        partition,
        base_offset: end,
        last_offset: end,
        log_end: end,
        appended: 0,
        transformed: true,
        duplicate: false,
        delayed: 0,
        delay_first_id: 0,
    }
}

/// How many router stages records may pass on their way (a router sending records to a topic
/// whose router sends them back would otherwise loop).
const MAX_ROUTER_HOPS: u8 = 8;

/// Most batches router stages may send on, over all hops, for one produce (fan-out at every hop
/// would otherwise grow geometrically).
const MAX_FORWARDED: u32 = 10_000;

/// How far routed records have travelled within one produce.
#[derive(Clone, Copy)]
struct Hops<'a> {
    /// Router stages passed.
    depth: u8,
    /// Batches forwarded so far by every router stage of this produce.
    forwarded: &'a Cell<u32>,
}

impl<'a> Hops<'a> {
    fn new(forwarded: &'a Cell<u32>) -> Hops<'a> {
        Hops {
            depth: 0,
            forwarded,
        }
    }
}

/// What appending routed records did, over all destinations.
#[derive(Debug, Default)]
struct Routed {
    appended: u32,
    delayed: u32,
    /// (topic, partition, log end) of every append, for `acks=all`.
    synced: Vec<(String, u32, u64)>,
}

impl Routed {
    fn sync(self, broker: &Broker, acks: Durability) -> Result<(), BrokerError> {
        if acks == Durability::All {
            for (topic, partition, end) in self.synced {
                broker.sync(&topic, partition, end)?;
            }
        }
        Ok(())
    }
}

/// Longest a waiting queue poll goes without looking at its share partitions again (appends,
/// give-backs and due times wake it earlier).
const QUEUE_RECHECK: Duration = Duration::from_secs(1);

/// Longest a fetch spends running a read-filter plugin over its batches (at least one batch runs).
const READ_FILTER_BUDGET: Duration = Duration::from_millis(500);

/// Shapes a read; with a plugin filter that runs on the blocking pool (plugins may use their whole
/// time limit, which must not stall an async worker).
async fn shape_off_worker(
    res: crate::storage::ReadResult,
    offset: u64,
    params: &FetchParams,
) -> Result<Fetched, BrokerError> {
    let (filter, plugin) = (params.filter.clone(), params.plugin.clone());
    if plugin.is_none() {
        return shape(res, offset, filter.as_deref(), None);
    }
    tokio::task::spawn_blocking(move || shape(res, offset, filter.as_deref(), plugin.as_deref()))
        .await
        .map_err(|e| BrokerError::Internal(e.to_string()))?
}

/// Turns a log read into a fetch result: where the next fetch continues (past every record read,
/// matching or not), and with filters only the matching records at or after `offset`.
fn shape(
    res: crate::storage::ReadResult,
    offset: u64,
    filter: Option<&Filter>,
    plugin: Option<&ReadFilter>,
) -> Result<Fetched, BrokerError> {
    let batches: Vec<Batch> = quiver_proto::Batches::new(res.bytes.clone())
        .filter_map(Result::ok)
        .collect();
    let mut next_offset = batches.last().map_or(offset, |b| b.header().next_offset());
    let (bytes, records) = if filter.is_none() && plugin.is_none() {
        (res.bytes, next_offset.saturating_sub(offset) as u32)
    } else {
        let started = std::time::Instant::now();
        let mut out = bytes::BytesMut::new();
        let mut records = 0u32;
        for (i, b) in batches.iter().enumerate() {
            // A plugin may use its whole time limit per batch: bound the fetch as a whole, and
            // let the next fetch continue after the last batch filtered.
            if plugin.is_some() && i > 0 && started.elapsed() > READ_FILTER_BUDGET {
                next_offset = batches[i - 1].header().next_offset();
                break;
            }
            let Some(sel) = filter_batch(b, offset, filter, plugin)? else {
                continue;
            };
            records += sel.record_count();
            out.extend_from_slice(sel.bytes());
        }
        (out.freeze(), records)
    };
    Ok(Fetched {
        bytes,
        offset,
        next_offset,
        records,
        log_start: res.log_start,
        log_end: res.log_end,
    })
}

/// The records of one batch at or after `offset` that pass the native filter, then the plugin.
fn filter_batch(
    b: &Batch,
    offset: u64,
    filter: Option<&Filter>,
    plugin: Option<&ReadFilter>,
) -> Result<Option<Batch>, BrokerError> {
    let native = match filter {
        None => Some(b.clone()),
        Some(f) => {
            let keep = |r: &quiver_proto::RecordRef<'_>| r.offset >= offset && f.matches(r);
            quiver_proto::batch::select(b, keep)
                .map(Batch::parse)
                .transpose()?
        }
    };
    match (native, plugin) {
        (None, _) => Ok(None),
        (Some(n), None) => Ok(Some(n)),
        (Some(n), Some(p)) => Ok(p.apply(&n, offset)?.map(Batch::parse).transpose()?),
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
