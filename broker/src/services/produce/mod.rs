//! The produce service: one batch into a topic's partition, through its ingest pipeline of plugins
//! (if any), with idempotent-producer deduplication, delayed records held by the delay store, and
//! router stages fanning out to other topics (`fanout.rs`). Appends happen in the caller's order;
//! `acks=all` waits for the partition's group commit separately, so one stream's batches share
//! fsyncs.

mod fanout;
pub mod idempotence;
mod plan;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use quiver_proto::auth::{Operation, ResourceKind};
use quiver_proto::messages::{Acks, ProduceRequest, ProduceResponse};
use quiver_proto::Batch;

use super::dead_letter::DeadLetters;
use crate::auth::{Auth, Principal};
use crate::delay::Delays;
use crate::error::BrokerError;
use crate::offload;
use crate::plugins::Pipelines;
use crate::replication::Replication;
use crate::routing::Exchanges;
use crate::storage::{AppendInfo, Durability, PartitionLog, StorageError, TopicStore};
use idempotence::{Producers, Verdict};

/// How much of a partition's log a new leader reads for producer sequences (Kafka keeps
/// producer state snapshots; the last few batches of each producer are what a retry needs).
const PRODUCER_SCAN: u64 = 16 << 20;

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
    /// On a cluster: the leader epoch the records were appended in (`acks=all` waits for the
    /// in-sync replicas of that epoch).
    pub leader_epoch: Option<u64>,
}

impl Produced {
    fn appended(partition: u32, info: AppendInfo, transformed: bool) -> Produced {
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
            leader_epoch: None,
        }
    }

    /// A produce that appended nothing (offsets unknown, so marked transformed).
    fn nothing(partition: u32, end: u64) -> Produced {
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
            leader_epoch: None,
        }
    }

    fn response(self, request_id: u64) -> ProduceResponse {
        ProduceResponse {
            request_id,
            partition: self.partition,
            base_offset: self.base_offset,
            last_offset: self.last_offset,
            log_end: self.log_end,
            appended: self.appended,
            transformed: self.transformed,
            duplicate: self.duplicate,
            delayed: self.delayed,
            delay_first_id: self.delay_first_id,
            throttle_ms: 0,
        }
    }
}

/// What became of one produce request, in the order requests arrived.
pub enum Accepted {
    /// `acks=none`: nothing is answered (a failure is only logged).
    NoReply,
    Done(Result<ProduceResponse, BrokerError>),
    /// Appended in order; the answer waits for the fsync that covers it (`acks=all`).
    Syncing(tokio::task::JoinHandle<Result<ProduceResponse, BrokerError>>),
}

pub struct ProduceService {
    topics: Arc<TopicStore>,
    pipelines: Arc<Pipelines>,
    delays: Arc<Delays>,
    exchanges: Arc<Exchanges>,
    producers: Producers,
    dead_letters: DeadLetters,
    replication: Arc<Replication>,
    round_robin: AtomicU32,
}

impl std::fmt::Debug for ProduceService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProduceService").finish_non_exhaustive()
    }
}

/// Whose records a produce writes: every topic its plan appends to must allow them `produce`, so
/// a router, a binding or an alternate topic writes only where the producer may (no confused
/// deputy). Dead letters are the broker's own writes, checked when their policy was set up.
/// Without a writer (the broker's own callers: benches, tests) nothing is checked.
#[derive(Debug, Clone)]
pub struct Writer {
    pub auth: Arc<Auth>,
    pub principal: Arc<Principal>,
}

impl Writer {
    fn check(writer: Option<&Writer>, plan: &plan::Plan) -> Result<(), BrokerError> {
        let Some(w) = writer.filter(|w| w.auth.enabled()) else {
            return Ok(());
        };
        let mut topics: Vec<&str> = plan.appends.iter().map(|a| a.topic.as_str()).collect();
        topics.sort_unstable();
        topics.dedup();
        for topic in topics {
            w.auth
                .check(&w.principal, ResourceKind::Topic, topic, Operation::Produce)?;
        }
        Ok(())
    }
}

pub fn durability(acks: Acks) -> Durability {
    match acks {
        Acks::None => Durability::None,
        Acks::Leader => Durability::Leader,
        Acks::All => Durability::All,
    }
}

impl ProduceService {
    pub fn new(
        topics: Arc<TopicStore>,
        pipelines: Arc<Pipelines>,
        delays: Arc<Delays>,
        exchanges: Arc<Exchanges>,
        dead_letters: DeadLetters,
        replication: Arc<Replication>,
    ) -> ProduceService {
        ProduceService {
            replication,
            topics,
            pipelines,
            delays,
            exchanges,
            producers: Producers::default(),
            dead_letters,
            round_robin: AtomicU32::new(0),
        }
    }

    /// Takes one produce request: appends it now (on the blocking pool when it runs plugins or
    /// holds delayed records, see [`offload`]) and says how it will be answered.
    pub async fn accept(
        self: &Arc<Self>,
        req: ProduceRequest,
        payload: Bytes,
        writer: Option<Writer>,
    ) -> Accepted {
        let acks = durability(req.acks);
        let id = req.request_id;
        let appended = self.append_request(&req, payload, acks, writer).await;
        match (acks, appended) {
            (Durability::None, Err(e)) => {
                tracing::debug!(error = %e, "acks=none produce failed");
                Accepted::NoReply
            }
            (Durability::None, Ok(_)) => Accepted::NoReply,
            // An exchange produce waited for its fsyncs inside.
            (Durability::All, Ok(p)) if !req.exchange && !self.replication.enabled() => {
                let this = self.clone();
                Accepted::Syncing(offload::start_blocking(move || {
                    this.sync(&req.topic, p.partition, p.log_end)
                        .map(|()| p.response(id))
                }))
            }
            (Durability::All, Ok(p)) if !req.exchange => {
                let this = self.clone();
                Accepted::Syncing(tokio::spawn(async move {
                    let (topic, end) = (req.topic, p.log_end);
                    let t = topic.clone();
                    let synced = this.clone();
                    offload::blocking(move || synced.sync(&t, p.partition, end)).await?;
                    // Then every in-sync replica.
                    this.replication
                        .replicated(&topic, p.partition, end, p.leader_epoch)
                        .await?;
                    Ok(p.response(id))
                }))
            }
            (_, result) => Accepted::Done(result.map(|p| p.response(id))),
        }
    }

    async fn append_request(
        self: &Arc<Self>,
        req: &ProduceRequest,
        payload: Bytes,
        acks: Durability,
        writer: Option<Writer>,
    ) -> Result<Produced, BrokerError> {
        if req.exchange && req.partition.is_some() {
            return Err(BrokerError::InvalidRequest(
                "a produce to an exchange names no partition".into(),
            ));
        }
        let blocks = offload::produce_blocks(
            req.exchange,
            self.pipelines.has_pipeline(&req.topic),
            holds_records(&payload),
        );
        if !blocks {
            return self.append_without_plugins(&req.topic, req.partition, payload, acks);
        }
        let (this, topic, partition, exchange) =
            (self.clone(), req.topic.clone(), req.partition, req.exchange);
        offload::blocking(move || match exchange {
            true => this.produce_to_exchange_as(&topic, payload, acks, writer.as_ref()),
            false => this.append_with(&topic, partition, payload, acks, true, writer.as_ref()),
        })
        .await
    }

    /// Validates one batch, runs it through the topic's ingest pipeline (plugins run here: call
    /// it off the async workers) and appends the result in the caller's order, without waiting
    /// for an fsync (see [`ProduceService::sync`] for `acks=all`). `partition: None` spreads
    /// batches round-robin.
    pub fn append(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
        acks: Durability,
    ) -> Result<Produced, BrokerError> {
        self.append_with(topic, partition, batch, acks, true, None)
    }

    /// [`ProduceService::append`] for a caller on an async worker that found no pipeline on the
    /// topic a moment before: it never runs plugins, so a pipeline attached in between cannot
    /// run on the worker (the batch is ordered before that attach).
    pub fn append_without_plugins(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
        acks: Durability,
    ) -> Result<Produced, BrokerError> {
        self.append_with(topic, partition, batch, acks, false, None)
    }

    fn append_with(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
        acks: Durability,
        run_plugins: bool,
        writer: Option<&Writer>,
    ) -> Result<Produced, BrokerError> {
        let t = self.topics.get(topic)?;
        let count = t.partitions().len() as u32;
        let p = partition
            .unwrap_or_else(|| self.round_robin.fetch_add(1, Ordering::Relaxed) % count.max(1));
        let log = t.partition(p)?;
        let epoch = self
            .replication
            .check_produce(topic, p, acks == Durability::All)?;
        let batch = Batch::parse(batch)?;
        crate::headers::check(&batch)?;
        let how = (acks, run_plugins);
        let produced = if batch.header().producer_id == 0 {
            self.append_batch(topic, p, log, batch, how, writer)
        } else if partition.is_none() {
            Err(BrokerError::InvalidRequest(
                "a batch with a producer id (idempotent produce) must name its partition".into(),
            ))
        } else {
            self.append_idempotent(topic, p, log, batch, how, writer)
        };
        produced.map(|p| Produced {
            leader_epoch: epoch,
            ..p
        })
    }

    /// Appends a batch of an idempotent producer unless it is a resend of one already appended.
    fn append_idempotent(
        &self,
        topic: &str,
        p: u32,
        log: &PartitionLog,
        batch: Batch,
        how: (Durability, bool),
        writer: Option<&Writer>,
    ) -> Result<Produced, BrokerError> {
        let producer = batch.header().producer_id;
        let (base, count) = (batch.header().base_sequence, batch.record_count());
        let state = self.producers.state(producer, topic, p);
        let mut seq = state.lock();
        if seq.fenced || self.producers.is_fenced(producer) {
            return Err(BrokerError::ProducerFenced { producer });
        }
        match seq.check(base, count) {
            Verdict::Append => match self.append_batch(topic, p, log, batch, how, writer) {
                Ok(produced) => {
                    seq.appended(base, count, produced);
                    Ok(produced)
                }
                Err(e) => {
                    seq.failed(base);
                    Err(e)
                }
            },
            Verdict::Duplicate(Some(first)) => Ok(Produced {
                duplicate: true,
                ..first
            }),
            Verdict::Duplicate(None) => Ok(Produced {
                duplicate: true,
                ..Produced::nothing(p, log.stats().log_end)
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
    /// delayed records. With a pipeline, the whole produce is planned first (`plan.rs`): records
    /// a router stage sends elsewhere are appended (and, for `acks=all`, synced) before this
    /// returns, and a produce refused anywhere appends nothing.
    fn append_batch(
        &self,
        topic: &str,
        p: u32,
        log: &PartitionLog,
        batch: Batch,
        (acks, run_plugins): (Durability, bool),
        writer: Option<&Writer>,
    ) -> Result<Produced, BrokerError> {
        if !run_plugins || !self.pipelines.has_pipeline(topic) {
            return self.append_or_hold(topic, p, log, batch, acks, false);
        }
        let mut plan = plan::Plan::default();
        let own = self.plan_batch(topic, p, batch, true, 0, &mut plan)?;
        Writer::check(writer, &plan)?;
        let done = self.execute(plan, acks, own)?;
        match own.and_then(|i| done.get(i)) {
            Some(produced) => Ok(*produced),
            None => Ok(Produced::nothing(p, log.stats().log_end)),
        }
    }

    /// Appends a batch (its records that carry a due time go to the delay store instead).
    fn append_or_hold(
        &self,
        topic: &str,
        p: u32,
        log: &PartitionLog,
        batch: Batch,
        acks: Durability,
        transformed: bool,
    ) -> Result<Produced, BrokerError> {
        // `acks=all` waits for the fsync separately (group commit).
        let durability = match acks {
            Durability::All => Durability::Leader,
            other => other,
        };
        if batch.header().flags & quiver_proto::batch::FLAG_DELAYED == 0 {
            let info = log.append(&batch, durability)?;
            return Ok(Produced::appended(p, info, transformed));
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
            Some(b) => Produced::appended(p, log.append(&b, durability)?, transformed),
            None => Produced {
                transformed,
                ..Produced::nothing(p, log.stats().log_end)
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

    /// Blocks until everything below `end` in the partition is fsync'd (group commit).
    pub fn sync(&self, topic: &str, partition: u32, end: u64) -> Result<(), BrokerError> {
        Ok(self.topics.partition(topic, partition)?.sync_through(end)?)
    }

    /// Blocks (on the blocking pool) until the in-sync replicas have what `p` appended: the
    /// `acks=all` of a write a router or an exchange sent to another partition.
    fn wait_replicated(&self, topic: &str, p: &Produced) -> Result<(), BrokerError> {
        if p.leader_epoch.is_none() {
            return Ok(());
        }
        let wait = self
            .replication
            .replicated(topic, p.partition, p.log_end, p.leader_epoch);
        Ok(tokio::runtime::Handle::current().block_on(wait)?)
    }

    /// Makes `id` the producer of fencing key `key`, refusing the id it had before (see
    /// [`idempotence`] and [`Producers::fence`]); false if `current` no longer holds it.
    /// `wait`: see [`Producers::fence`].
    pub fn fence(
        &self,
        key: idempotence::FencingKey,
        id: u64,
        current: Option<u64>,
        wait: bool,
    ) -> bool {
        self.producers.fence(key, id, current, wait)
    }

    /// Learns the producer sequences in the last [`PRODUCER_SCAN`] bytes of a partition this
    /// node now leads (see [`Producers::rebuild`]).
    pub fn take_lead(
        &self,
        topic: &str,
        partition: u32,
        log: &PartitionLog,
    ) -> Result<(), BrokerError> {
        let mut at = log.offset_near_end(PRODUCER_SCAN)?;
        let end = log.stats().log_end;
        let mut headers = Vec::new();
        while at < end {
            let read = log.read_raw(at, 1 << 20)?;
            let before = headers.len();
            for batch in quiver_proto::batch::Batches::new(read.bytes) {
                let h = *batch?.header();
                at = h.next_offset();
                headers.push(h);
            }
            if headers.len() == before {
                break;
            }
        }
        let producers = headers.iter().filter(|h| h.producer_id != 0).count();
        tracing::debug!(
            topic,
            partition,
            batches = producers,
            "learned producer sequences from the log"
        );
        self.producers.rebuild(topic, partition, &headers);
        Ok(())
    }

    /// Forgets the producer sequences of a deleted topic.
    pub fn forget_topic(&self, topic: &str) {
        self.producers.remove_topic(topic);
    }
}

/// Whether a produced batch asks for delayed delivery (its header has the delayed flag).
fn holds_records(payload: &Bytes) -> bool {
    quiver_proto::BatchHeader::parse(payload)
        .is_ok_and(|h| h.flags & quiver_proto::batch::FLAG_DELAYED != 0)
}
