//! The producer: records are encoded straight into per-partition batches (no per-record allocation
//! beyond the caller's own buffers), which are sent when full or when `linger` has passed. One
//! pipelined stream carries the batches; the broker answers in order, and retriable errors are retried
//! with backoff. `send` returns a [`Delivery`] that resolves when the batch holding the record is acked.
//!
//! Idempotence (on by default): the producer takes a producer id from the broker before its first
//! record, and each batch is stamped when sealed with that id and its partition's next sequence
//! number (sequences count records). A batch keeps its stamp across retries, so a batch the broker
//! appended but whose reply was lost is acknowledged as a duplicate instead of appended twice.
//! The broker refuses a batch that skips sequences (`OutOfOrderSequence`, retriable), so retries go
//! out in the order the batches were sealed, before any newer batch. A batch that fails for good
//! leaves a gap in its partition's sequence; the producer then takes a new id for later batches.
//!
//! Delayed delivery: a record with a delivery-time header ([`ProducerRecord::deliver_at`],
//! [`ProducerRecord::delay`]) is held by the broker and appended when due. Such records go into
//! batches of their own (per partition, next to the batch of records appended at once), so that
//! every record's [`RecordMetadata`] says where it went: an offset, or the delay id under which
//! it is held.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use quiver_proto::batch::{is_delay_header, DELAY_MS_HEADER, DELIVER_AT_HEADER};
use quiver_proto::frame::FrameKind;
use quiver_proto::messages::{Acks, ProduceRequest, ProduceResponse};
use quiver_proto::{BatchBuilder, ErrorCode, RecordData};
use tokio::sync::{mpsc, Notify, Semaphore};

use crate::client::Client;
use crate::error::ClientError;
use crate::routes::Routes;
use crate::wire::{decode_frame, write_frame, FrameReader, WireError};

/// How records without an explicit partition are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioner {
    /// Records with a key go to `hash(key) % partitions` (same key, same partition); records without a
    /// key fill one partition's batch, then move to the next.
    #[default]
    KeyHash,
    /// Every batch goes to the next partition, keys ignored.
    RoundRobin,
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub acks: Acks,
    /// How long a non-full batch waits for more records. Zero sends a record's batch with the
    /// record while fewer than [`LINGER_ZERO_OUTSTANDING`] batches are queued or unacknowledged;
    /// beyond that, as Kafka's `linger.ms=0`, records fill the open batch until a reply comes back
    /// or a later send finds the pipeline shorter (at the latest the next 1-ms tick), so a fast
    /// producer still batches and a slow one does not wait for the timer.
    pub linger: Duration,
    /// A batch is sent once it reaches this many bytes.
    pub batch_bytes: usize,
    /// Attempts after the first for retriable errors.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// Batches sent but not yet acknowledged.
    pub max_in_flight: usize,
    pub partitioner: Partitioner,
    /// Stamp batches with a producer id and sequence numbers so that retries are appended once.
    pub idempotent: bool,
    /// Fences earlier producers of the same principal with this key (as Kafka's
    /// `transactional.id` fences zombies): when this producer takes its id ([`Producer::init`] or
    /// its first send), the broker refuses their batches from then on, and their appends in
    /// progress have finished. A producer fenced so fails every send with `ProducerFenced`.
    /// For a session that replaces another and must know that nothing of the old one lands
    /// after it looked at the log. Needs `idempotent`.
    pub fencing_key: Option<String>,
    /// On a cluster, how long a batch may keep failing over to its partition's new leader
    /// (NotLeader, a node gone) before it fails (Kafka's `delivery.timeout.ms`).
    pub delivery_timeout: Duration,
}

/// With linger 0, the batches queued or awaiting their acknowledgement beyond which records wait in
/// the open batch instead of each going out alone. A few round trips' worth: at 10 k records/s and
/// ~0.3 ms per round trip about 3 are outstanding, so records go at once; at 100 k/s one batch per
/// record would cost more than the records (one request each), and the pipeline stays full.
pub const LINGER_ZERO_OUTSTANDING: usize = 8;

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::Leader,
            linger: Duration::from_millis(5),
            batch_bytes: 256 << 10,
            retries: 5,
            retry_backoff: Duration::from_millis(100),
            max_in_flight: 64,
            partitioner: Partitioner::KeyHash,
            idempotent: true,
            fencing_key: None,
            delivery_timeout: Duration::from_secs(120),
        }
    }
}

/// A record to send.
#[derive(Debug, Clone, Default)]
pub struct ProducerRecord {
    pub topic: String,
    pub partition: Option<u32>,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    pub tags: Vec<String>,
    /// Milliseconds since the epoch; now when unset.
    pub timestamp: Option<i64>,
    /// `topic` names an exchange, which routes the record (by its key as the routing key, or its
    /// headers) to the topics bound to it.
    pub exchange: bool,
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: value.into(),
            ..Default::default()
        }
    }

    /// A record for the exchange `exchange`; its key is the routing key.
    pub fn to_exchange(exchange: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: exchange.into(),
            value: value.into(),
            exchange: true,
            ..Default::default()
        }
    }

    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn partition(mut self, p: u32) -> Self {
        self.partition = Some(p);
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Delayed delivery: the broker holds the record and appends it at `ms_since_epoch` (at once,
    /// but still through the hold, when that time has passed). Replaces an earlier
    /// [`ProducerRecord::deliver_at`] or [`ProducerRecord::delay`].
    pub fn deliver_at(self, ms_since_epoch: i64) -> Self {
        self.delay_header(DELIVER_AT_HEADER, ms_since_epoch.to_string())
    }

    /// Delayed delivery: the broker holds the record and appends it `delay` (whole ms) after it
    /// received it. Replaces an earlier [`ProducerRecord::deliver_at`] or
    /// [`ProducerRecord::delay`].
    pub fn delay(self, delay: Duration) -> Self {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_header(DELAY_MS_HEADER, ms.to_string())
    }

    fn delay_header(mut self, name: &str, value: String) -> Self {
        self.headers.retain(|(n, _)| !is_delay_header(n));
        self.headers.push((name.to_owned(), Bytes::from(value)));
        self
    }
}

/// Where an acknowledged record landed. `offset` is `None` with `acks=none`, when the topic's
/// ingest pipeline filtered or rewrote the batch (records then no longer map one to one onto
/// offsets), and for a record held for delayed delivery (it is appended later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: Option<u64>,
    /// The id under which the broker holds the record for delayed delivery (it carries a
    /// delivery-time header: [`ProducerRecord::deliver_at`], [`ProducerRecord::delay`]); what
    /// [`Admin::cancel_delayed`](crate::Admin::cancel_delayed) takes. `None` for records appended
    /// at once, with `acks=none`, when the topic's ingest pipeline transformed the batch, and for
    /// records sent to an exchange (one record may be held once per destination).
    pub delay_id: Option<u64>,
}

/// The partition of batches bound for an exchange (`ProducerRecord::topic` names the exchange).
const EXCHANGE: u32 = u32::MAX;

/// What the broker said about one batch.
#[derive(Debug, Clone, Copy)]
struct BatchAck {
    partition: u32,
    /// The offset of the first record appended now; `None` with `acks=none` and when the batch
    /// was transformed.
    base_offset: Option<u64>,
    /// Held records and the id of the first; their ids map onto the records with a delay header
    /// only when the batch was not transformed (`delay_first_id: None` otherwise).
    delayed: u32,
    delay_first_id: Option<u64>,
}

/// A batch's acknowledgement, or why it failed.
type BatchOutcome = Result<BatchAck, Arc<ClientError>>;

/// The outcome of one batch, shared by the deliveries of its records.
#[derive(Default)]
struct Slot {
    result: OnceLock<BatchOutcome>,
    done: Notify,
}

impl Slot {
    fn complete(&self, r: BatchOutcome) {
        let _ = self.result.set(r);
        self.done.notify_waiters();
    }

    async fn wait(&self) -> &BatchOutcome {
        loop {
            let notified = self.done.notified();
            if let Some(r) = self.result.get() {
                return r;
            }
            notified.await;
        }
    }
}

/// Where a record sits in its batch: among the records appended at once, or among those with a
/// delay header (held by the broker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    Immediate(u32),
    Held(u32),
}

/// Resolves when the record's batch is acknowledged (or fails for good).
pub struct Delivery {
    slot: Arc<Slot>,
    position: Position,
}

impl Delivery {
    pub async fn wait(self) -> Result<RecordMetadata, Arc<ClientError>> {
        match self.slot.wait().await {
            Ok(ack) => Ok(ack.metadata(self.position)),
            Err(e) => Err(e.clone()),
        }
    }
}

impl BatchAck {
    fn metadata(&self, position: Position) -> RecordMetadata {
        let (offset, delay_id) = match position {
            Position::Immediate(i) => (self.base_offset.map(|b| b + i as u64), None),
            Position::Held(i) => (
                None,
                self.delay_first_id
                    .filter(|_| i < self.delayed)
                    .map(|first| first + i as u64),
            ),
        };
        RecordMetadata {
            partition: self.partition,
            offset,
            delay_id,
        }
    }
}

/// An open batch's topic, partition, and whether its records carry a delay header: delayed records
/// get batches of their own, so the broker holds whole batches and each record's metadata is one
/// offset or one delay id (a mixed batch would work too, at the cost of splitting it broker-side).
type BatchKey = (String, u32, bool);

/// A [`BatchKey`] borrowing its topic: a record's batch is found without allocating. It hashes
/// as the owned key does (a `String` hashes as its `str`, a tuple field by field).
#[derive(Hash)]
struct KeyRef<'a>(&'a str, u32, bool);

impl hashbrown::Equivalent<BatchKey> for KeyRef<'_> {
    fn equivalent(&self, key: &BatchKey) -> bool {
        self.0 == key.0 && self.1 == key.1 && self.2 == key.2
    }
}

impl From<&KeyRef<'_>> for BatchKey {
    fn from(k: &KeyRef<'_>) -> BatchKey {
        (k.0.to_owned(), k.1, k.2)
    }
}

fn batch_key<'a>(topic: &'a str, partition: u32, data: &RecordData<'_>) -> KeyRef<'a> {
    let delayed = data.headers.iter().any(|(name, _)| is_delay_header(name));
    KeyRef(topic, partition, delayed)
}

struct Open {
    builder: BatchBuilder,
    slot: Arc<Slot>,
    started: Instant,
    /// Records pushed so far with a delay header.
    held: u32,
}

/// A sealed batch on its way to the broker.
struct Ready {
    topic: String,
    partition: u32,
    bytes: Bytes,
    slot: Arc<Slot>,
    attempts: u32,
    /// When it was sealed, among all batches: retries go out in this order.
    order: u64,
    /// The producer id it is stamped with (0: none).
    producer_id: u64,
    /// When it was sealed: a batch failing over between cluster nodes gives up after
    /// [`ProducerConfig::delivery_timeout`].
    born: Instant,
    /// Times it was sent again to a partition's new leader.
    reroutes: u32,
    /// A node's sender has taken it (and given its room back).
    taken: bool,
}

/// The smallest `unacked` worth pruning.
const PRUNE_MIN: usize = 1024;

#[derive(Default)]
struct State {
    open: hashbrown::HashMap<BatchKey, Open>,
    sticky: HashMap<String, u32>,
    /// Batches sealed since the last prune, acknowledged or not (what `flush` waits for).
    unacked: Vec<Arc<Slot>>,
    /// `unacked` is pruned of acknowledged batches when it reaches this length, so a producer
    /// that never flushes does not grow it without bound (amortised: twice what is left).
    prune_at: usize,
    /// The id batches are stamped with; `None` until the first send, and for a producer that is
    /// not idempotent.
    producer_id: Option<u64>,
    /// A batch stamped with `producer_id` failed for good: the next send takes a new id.
    stale_id: bool,
    /// A newer producer of the fencing key replaced this one: every send fails with this.
    fenced: Option<Arc<ClientError>>,
    /// Ids this producer replaced itself (after a batch failed for good): their batches'
    /// `ProducerFenced` answers say nothing about a newer producer.
    retired: Vec<u64>,
    /// The next base sequence per partition, under `producer_id`.
    sequences: HashMap<(String, u32), u32>,
    /// Batches sealed so far.
    sealed: u64,
}

struct Shared {
    client: Client,
    /// Where each partition's batches go (its leader, on a cluster).
    routes: Routes,
    config: ProducerConfig,
    state: Mutex<State>,
    partitions: Mutex<HashMap<String, u32>>,
    /// Held while asking the broker for a producer id, so that concurrent sends ask once.
    init: tokio::sync::Mutex<()>,
    /// Sealed batches on their way to the sender. Written only under the `state` lock, in the
    /// order they were sealed, so batches of a partition reach the broker in sequence order.
    tx: mpsc::UnboundedSender<Ready>,
    /// Room for batches between seal and send (`max_in_flight` permits): whoever enqueued a batch
    /// takes one after the lock is released, the sender gives it back when it takes the batch, so
    /// producers wait while the sender is that far behind.
    room: Semaphore,
    /// Batches the sender holds (in flight or waiting to be retried), as it last published.
    held: AtomicUsize,
}

impl Shared {
    /// Whether a linger-0 record should seal its batch now: the pipeline is short.
    fn pipeline_is_short(&self) -> bool {
        let room = self.config.max_in_flight.max(1);
        let queued = room.saturating_sub(self.room.available_permits());
        queued + self.held.load(Ordering::Relaxed) < LINGER_ZERO_OUTSTANDING.min(room)
    }

    /// With linger 0, seals the batches records joined while the pipeline was long as soon as it
    /// is short again, that is when a reply comes back (the pipeline clocks the batching, as
    /// Nagle's algorithm releases data on an ACK), instead of leaving them to the 1-ms tick.
    /// A sender calls this, so it cannot wait for room: it seals only when room is free at once.
    fn seal_lingering(&self) {
        if !self.config.linger.is_zero() || !self.pipeline_is_short() {
            return;
        }
        let mut st = self.state.lock();
        // As many as there is room for at once (a producer of many partitions may have more
        // open batches than room), those that waited longest first.
        let n = self.room.available_permits().min(st.open.len());
        if n == 0 {
            return;
        }
        let Ok(permit) = self
            .room
            .try_acquire_many(u32::try_from(n).unwrap_or(u32::MAX))
        else {
            return;
        };
        permit.forget();
        let sealed = seal_oldest(&mut st, n);
        // A batch that failed to seal (only one over 4 GiB can) takes no room.
        self.room.add_permits(n.saturating_sub(sealed.len()));
        if let Err(e) = self.enqueue(sealed) {
            tracing::debug!(error = %e, "producer closed while sealing");
        }
    }

    /// Hands sealed batches to the sender; call with the `state` lock held (hence not async).
    fn enqueue(&self, sealed: Vec<Ready>) -> Result<usize, ClientError> {
        let n = sealed.len();
        for r in sealed {
            self.tx.send(r).map_err(|_| ClientError::Closed)?;
        }
        Ok(n)
    }

    /// Waits for room for `n` batches just enqueued (after the lock is released).
    async fn wait_for_room(&self, n: usize) -> Result<(), ClientError> {
        if n > 0 {
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            self.room
                .acquire_many(n)
                .await
                .map_err(|_| ClientError::Closed)?
                .forget();
        }
        Ok(())
    }
}

/// Sends records to the broker in batches. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
    /// Shared by every clone of this handle: `linger` sees it gone when the last one is.
    _handle: Arc<()>,
}

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Semaphore::new(config.max_in_flight.max(1));
        let shared = Arc::new(Shared {
            routes: Routes::new(client.clone()),
            client,
            config,
            state: Mutex::default(),
            partitions: Mutex::default(),
            init: tokio::sync::Mutex::new(()),
            tx,
            room,
            held: AtomicUsize::new(0),
        });
        tokio::spawn(dispatch(shared.clone(), rx));
        let handle = Arc::new(());
        // With linger 0 too: it seals what records left in open batches while the pipeline was long.
        tokio::spawn(linger(Arc::downgrade(&shared), Arc::downgrade(&handle)));
        Producer {
            shared,
            _handle: handle,
        }
    }

    /// Adds a record to its partition's batch. Errors here are about the record itself (too large,
    /// unknown topic); delivery errors come from [`Delivery::wait`].
    pub async fn send(&self, rec: ProducerRecord) -> Result<Delivery, ClientError> {
        self.send_inner(rec, false).await
    }

    /// Like [`Producer::send`], then sends the record's batch at once instead of after `linger`
    /// (for latency-sensitive records such as requests and replies).
    pub async fn send_now(&self, rec: ProducerRecord) -> Result<Delivery, ClientError> {
        self.send_inner(rec, true).await
    }

    async fn send_inner(&self, rec: ProducerRecord, now: bool) -> Result<Delivery, ClientError> {
        // Linger 0 means "do not wait": the batch goes out with this record, not on the next
        // tick of a timer (which cannot tick faster than the runtime's 1-ms timer wheel), unless
        // the pipeline is long, when waiting costs nothing and batching saves requests.
        let now = now || (self.shared.config.linger.is_zero() && self.shared.pipeline_is_short());
        self.ensure_producer_id().await?;
        let partition = if rec.exchange {
            if rec.partition.is_some() {
                return Err(ClientError::InvalidArgument(
                    "a record sent to an exchange names no partition (the exchange routes it)"
                        .into(),
                ));
            }
            EXCHANGE
        } else {
            self.choose_partition(&rec).await?
        };
        let headers: Vec<(&str, &[u8])> = rec
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), &v[..]))
            .collect();
        let tags: Vec<&str> = rec.tags.iter().map(String::as_str).collect();
        let data = RecordData {
            timestamp: rec.timestamp.unwrap_or_else(now_ms),
            key: rec.key.as_deref(),
            value: &rec.value,
            headers: &headers,
            tags: &tags,
        };
        let (delivery, enqueued) = {
            let mut st = self.shared.state.lock();
            let cfg = &self.shared.config;
            let (delivery, mut sealed) = append(&mut st, cfg, &rec.topic, partition, &data)?;
            if now {
                sealed.extend(seal(&mut st, &batch_key(&rec.topic, partition, &data))?);
            }
            (delivery, self.shared.enqueue(sealed)?)
        };
        self.shared.wait_for_room(enqueued).await?;
        Ok(delivery)
    }

    /// Takes the producer id now instead of at the first send: with a
    /// [`ProducerConfig::fencing_key`], the moment earlier producers of the key are fenced.
    pub async fn init(&self) -> Result<(), ClientError> {
        self.ensure_producer_id().await
    }

    /// Takes a producer id from the broker unless there is a usable one (idempotent producers).
    async fn ensure_producer_id(&self) -> Result<(), ClientError> {
        let cfg = &self.shared.config;
        if !cfg.idempotent {
            return match cfg.fencing_key {
                Some(_) => Err(ClientError::InvalidArgument(
                    "a fencing key needs an idempotent producer".into(),
                )),
                None => Ok(()),
            };
        }
        if self.shared.state.lock().has_usable_id()? {
            return Ok(());
        }
        let _one_at_a_time = self.shared.init.lock().await;
        let current = {
            let mut st = self.shared.state.lock();
            if st.has_usable_id()? {
                return Ok(()); // another send took one meanwhile
            }
            let current = st.producer_id;
            st.retired.extend(current);
            current
        };
        let admin = self.shared.routes.any_node().await.admin();
        let id = match &cfg.fencing_key {
            Some(key) => admin.init_fenced_producer(key, current).await,
            None => admin.init_producer().await,
        };
        let id = match id {
            Ok(id) => id,
            // A newer producer took the key while this one had a batch fail: it is the zombie.
            Err(e) if e.code() == Some(ErrorCode::ProducerFenced) => {
                let e = Arc::new(e);
                self.shared
                    .state
                    .lock()
                    .fenced
                    .get_or_insert_with(|| e.clone());
                return Err(ClientError::Delivery(e));
            }
            Err(e) => return Err(e),
        };
        let mut st = self.shared.state.lock();
        st.producer_id = Some(id);
        st.stale_id = false;
        // Sequences restart with every id; batches still open are stamped with the new one.
        st.sequences.clear();
        Ok(())
    }

    async fn choose_partition(&self, rec: &ProducerRecord) -> Result<u32, ClientError> {
        if let Some(p) = rec.partition {
            return Ok(p);
        }
        let count = self.partition_count(&rec.topic).await?;
        let st = self.shared.state.lock();
        let sticky = st.sticky.get(&rec.topic).copied().unwrap_or(0) % count;
        Ok(match (&rec.key, self.shared.config.partitioner) {
            (Some(k), Partitioner::KeyHash) => quiver_proto::routing::partition_for_key(k, count),
            _ => sticky,
        })
    }

    async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        if let Some(n) = self.shared.partitions.lock().get(topic) {
            return Ok(*n);
        }
        let n = (self
            .shared
            .client
            .admin()
            .describe_topic(topic)
            .await?
            .partitions
            .len() as u32)
            .max(1);
        self.shared.partitions.lock().insert(topic.to_owned(), n);
        Ok(n)
    }

    /// Sends every open batch and waits until everything sent so far is acknowledged. Returns the
    /// first delivery error, if any, after waiting for every batch (none is left unsent).
    pub async fn flush(&self) -> Result<(), Arc<ClientError>> {
        let (enqueued, waiting, seal_error) = {
            let mut st = self.shared.state.lock();
            let (sealed, seal_error) = seal_all(&mut st, |_| true);
            let enqueued = self.shared.enqueue(sealed).map_err(Arc::new)?;
            st.unacked.retain(|s| s.result.get().is_none());
            (enqueued, st.unacked.clone(), seal_error)
        };
        self.shared
            .wait_for_room(enqueued)
            .await
            .map_err(Arc::new)?;
        let mut first = seal_error.map_or(Ok(()), |e| Err(Arc::new(e)));
        for s in waiting {
            if let Err(e) = s.wait().await {
                first = first.and(Err(e.clone()));
            }
        }
        first
    }
}

/// Seals the open batches `due` picks, in no particular order across partitions (each partition
/// has one open batch per key, so per-partition order is kept); returns them and the first error.
fn seal_all(st: &mut State, due: impl Fn(&Open) -> bool) -> (Vec<Ready>, Option<ClientError>) {
    let keys: Vec<BatchKey> = st
        .open
        .iter()
        .filter(|(_, o)| due(o))
        .map(|(k, _)| k.clone())
        .collect();
    let mut sealed = Vec::new();
    let mut error = None;
    for k in keys {
        match seal(st, &KeyRef(&k.0, k.1, k.2)) {
            Ok(r) => sealed.extend(r),
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    (sealed, error)
}

/// Seals the `n` open batches that have waited longest (errors as in [`seal_all`], dropped).
fn seal_oldest(st: &mut State, n: usize) -> Vec<Ready> {
    let mut keys: Vec<(Instant, BatchKey)> = st
        .open
        .iter()
        .map(|(k, o)| (o.started, k.clone()))
        .collect();
    if n == 0 {
        return Vec::new();
    }
    if keys.len() > n {
        keys.select_nth_unstable_by_key(n - 1, |(started, _)| *started);
        keys.truncate(n);
    }
    keys.into_iter()
        .filter_map(|(_, k)| seal(st, &KeyRef(&k.0, k.1, k.2)).ok().flatten())
        .collect()
}

impl State {
    /// Whether batches can be stamped with the current id; an error once fenced.
    fn has_usable_id(&self) -> Result<bool, ClientError> {
        if let Some(e) = &self.fenced {
            return Err(ClientError::Delivery(e.clone()));
        }
        Ok(self.producer_id.is_some() && !self.stale_id)
    }
}

/// Adds a record to its partition's open batch; returns the batches this sealed (the full one
/// before it, or its own when it reached `batch_bytes`).
fn append(
    st: &mut State,
    cfg: &ProducerConfig,
    topic: &str,
    partition: u32,
    data: &RecordData<'_>,
) -> Result<(Delivery, Vec<Ready>), ClientError> {
    let mut sealed = Vec::new();
    let key = batch_key(topic, partition, data);
    let rec_len = BatchBuilder::record_encoded_len(data);
    if st
        .open
        .get(&key)
        .is_some_and(|o| o.builder.encoded_len() + rec_len > cfg.batch_bytes)
    {
        sealed.extend(seal(st, &key)?);
    }
    let open = st.open.entry_ref(&key).or_insert_with(|| Open {
        builder: BatchBuilder::with_capacity(cfg.batch_bytes.min(1 << 20)),
        slot: Arc::default(),
        started: Instant::now(),
        held: 0,
    });
    let delayed = key.2;
    let position = if delayed {
        Position::Held(open.held)
    } else {
        Position::Immediate(open.builder.len() as u32 - open.held)
    };
    open.builder.push(data)?;
    if delayed {
        open.held += 1;
    }
    let delivery = Delivery {
        slot: open.slot.clone(),
        position,
    };
    if open.builder.encoded_len() >= cfg.batch_bytes {
        sealed.extend(seal(st, &key)?);
    }
    Ok((delivery, sealed))
}

/// Takes the open batch for `key` out for sending, stamped with the producer id and the
/// partition's next sequence when there is an id.
fn seal(st: &mut State, key: &KeyRef<'_>) -> Result<Option<Ready>, ClientError> {
    let Some((key, open)) = st.open.remove_entry(key) else {
        return Ok(None);
    };
    if open.builder.is_empty() {
        return Ok(None);
    }
    let records = open.builder.len() as u32;
    // Exchange batches carry no sequence: the broker splits them over several partitions.
    let stamp = st.producer_id.filter(|_| key.1 != EXCHANGE);
    let producer_id = stamp.unwrap_or(0);
    let partition_key = (key.0.clone(), key.1);
    let sequence = st.sequences.get(&partition_key).copied().unwrap_or(0);
    let builder = match stamp {
        Some(id) => open.builder.producer(id, sequence),
        None => open.builder,
    };
    let bytes = builder.finish()?;
    if stamp.is_some() {
        // Wraps after 2^32 records of one partition under one id, like Kafka's sequences.
        st.sequences
            .insert(partition_key, sequence.wrapping_add(records));
    }
    *st.sticky.entry(key.0.clone()).or_default() += 1;
    st.unacked.push(open.slot.clone());
    if st.unacked.len() >= st.prune_at.max(PRUNE_MIN) {
        st.unacked.retain(|s| s.result.get().is_none());
        st.prune_at = st.unacked.len() * 2;
    }
    st.sealed += 1;
    Ok(Some(Ready {
        topic: key.0,
        partition: key.1,
        bytes,
        slot: open.slot,
        attempts: 0,
        order: st.sealed,
        producer_id,
        born: Instant::now(),
        reroutes: 0,
        taken: false,
    }))
}

/// Seals batches that waited longer than `linger` (with linger 0: what records left open while
/// the pipeline was long); ends when the last `Producer` handle is dropped, after a final seal.
async fn linger(shared: std::sync::Weak<Shared>, handles: std::sync::Weak<()>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        // Every `Producer` handle is gone: nothing can be added to an open batch any more.
        let last = handles.strong_count() == 0;
        let period = (s.config.linger / 2).max(Duration::from_millis(1));
        let enqueued = {
            let mut st = s.state.lock();
            let (due, _) = seal_all(&mut st, |o| last || o.started.elapsed() >= s.config.linger);
            match s.enqueue(due) {
                Ok(n) => n,
                Err(_) => return,
            }
        };
        if s.wait_for_room(enqueued).await.is_err() || last {
            return;
        }
        drop(s);
        tokio::time::sleep(period).await;
    }
}

type Stream = Option<(quinn::SendStream, FrameReader<quinn::RecvStream>)>;

/// Batches waiting to be sent again, in the order they were sealed, each with when it may go.
type RetryQueue = VecDeque<(Instant, Ready)>;

/// A batch sent back to the dispatcher to go to its partition's new leader, with why.
type Rerouted = (Ready, ClientError);

/// Routes sealed batches, in seal order, to the sender of their partition's leader (one per
/// node; a single broker has one), and sends again, after fresh metadata and a backoff, the
/// batches a node refused with NotLeader or lost with its connection. While such batches wait,
/// no new batch is routed, so batches of a partition reach its leader in seal order.
async fn dispatch(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Ready>) {
    let (back_tx, mut back_rx) = mpsc::unbounded_channel::<Rerouted>();
    let mut lanes: HashMap<String, mpsc::UnboundedSender<Ready>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut waiting = RetryQueue::new();
    let mut open = true;
    shared.routes.ready().await;
    loop {
        if !open && waiting.is_empty() {
            // Each node's sender finishes what it holds and stops.
            lanes.clear();
            if tasks.is_empty() && back_rx.is_empty() {
                return;
            }
        }
        let next = waiting.front().map(|(t, _)| *t);
        tokio::select! {
            r = rx.recv(), if open && waiting.is_empty() => match r {
                Some(r) => route(&shared, &mut lanes, &mut tasks, &back_tx, r),
                None => open = false,
            },
            Some((r, e)) = back_rx.recv() => reroute(&shared, &mut waiting, r, e),
            _ = sleep_until(next), if next.is_some() => {
                shared.routes.refresh().await;
                while waiting.front().is_some_and(|(t, _)| *t <= Instant::now()) {
                    if let Some((_, r)) = waiting.pop_front() {
                        route(&shared, &mut lanes, &mut tasks, &back_tx, r);
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Hands `r` to the sender of its partition's leader, starting one if needed.
fn route(
    shared: &Arc<Shared>,
    lanes: &mut HashMap<String, mpsc::UnboundedSender<Ready>>,
    tasks: &mut tokio::task::JoinSet<()>,
    back: &mpsc::UnboundedSender<Rerouted>,
    r: Ready,
) {
    let addr = match r.partition {
        EXCHANGE => shared.client.server().to_owned(),
        p => shared.routes.address(&r.topic, p),
    };
    let mut r = r;
    for _ in 0..2 {
        let lane = lanes.entry(addr.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let lane = Lane {
                addr: addr.clone(),
                back: back.clone(),
                down_until: Mutex::new(None),
            };
            tasks.spawn(sender(shared.clone(), lane, rx));
            tx
        });
        match lane.send(r) {
            Ok(()) => return,
            // That sender stopped (its producer is closing): start another.
            Err(mpsc::error::SendError(again)) => {
                lanes.remove(&addr);
                r = again;
            }
        }
    }
    fail(shared, r, ClientError::Closed);
}

/// Queues a batch for its partition's new leader, with a backoff, unless it is out of time.
fn reroute(shared: &Shared, waiting: &mut RetryQueue, mut r: Ready, e: ClientError) {
    if r.born.elapsed() >= shared.config.delivery_timeout {
        return fail(shared, r, e);
    }
    r.reroutes += 1;
    let backoff = shared.config.retry_backoff * 2u32.saturating_pow(r.reroutes.min(5) - 1);
    tracing::debug!(error = %e, topic = %r.topic, partition = r.partition, "sending a batch to its partition's new leader");
    queue_retry(waiting, Instant::now() + backoff.min(MAX_BACKOFF), r);
}

/// The longest wait between two attempts of a batch.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The node a sender writes to, and the way back to the dispatcher.
struct Lane {
    addr: String,
    back: mpsc::UnboundedSender<Rerouted>,
    /// After a failed connection: until when batches go back to the dispatcher at once
    /// instead of each waiting for a connection attempt to a node that may be gone.
    down_until: Mutex<Option<Instant>>,
}

/// How long a node that could not be reached is passed over.
const DOWN_FOR: Duration = Duration::from_secs(1);

impl Lane {
    fn is_down(&self) -> bool {
        self.down_until.lock().is_some_and(|t| Instant::now() < t)
    }

    fn mark_down(&self) {
        *self.down_until.lock() = Some(Instant::now() + DOWN_FOR);
    }

    /// Sends `r` back to the dispatcher when `e` means its partition is led elsewhere now (or
    /// its node is gone, on a cluster); gives `r` back otherwise.
    fn divert(&self, shared: &Shared, r: Ready, e: ClientError) -> Option<Rerouted> {
        // A batch lost with its stream carries the stream's failure, whatever it was.
        let lost = shared.routes.is_cluster() && e.code().is_none();
        // Batches of a partition may reach its new leader out of seal order in a failover
        // (those rerouted wait their own backoffs, those left with the dead node's sender
        // come later): the leader refuses a later one, unappended, until the earlier one is
        // in; it goes round again (as Kafka's producer retries OUT_OF_ORDER_SEQUENCE while
        // earlier batches are in flight), within the delivery timeout.
        let overtaken =
            shared.routes.is_cluster() && e.code() == Some(ErrorCode::OutOfOrderSequence);
        if !shared.routes.moved(&e) && !lost && !overtaken {
            return Some((r, e));
        }
        self.back
            .send((r, e))
            .err()
            .map(|mpsc::error::SendError(back)| back)
    }
}

/// Owns one node's produce stream: writes batches, reads the in-order replies, retries
/// retriable failures. While retries are pending no new batch is sent, so batches reach the
/// broker in seal order.
async fn sender(shared: Arc<Shared>, lane: Lane, mut rx: mpsc::UnboundedReceiver<Ready>) {
    let mut retry = RetryQueue::new();
    let mut stream: Stream = None;
    let mut in_flight: VecDeque<Ready> = VecDeque::new();
    let mut closing = false;
    let mut published = 0usize;
    // A reply came back since the last pass: the pipeline may be short again.
    let mut replied = false;
    loop {
        let held = in_flight.len() + retry.len();
        if held >= published {
            shared.held.fetch_add(held - published, Ordering::Relaxed);
        } else {
            shared.held.fetch_sub(published - held, Ordering::Relaxed);
        }
        published = held;
        if replied {
            shared.seal_lingering();
            replied = false;
        }
        if closing && in_flight.is_empty() && retry.is_empty() {
            return;
        }
        let next_retry = retry.front().map(|(t, _)| *t);
        let can_send = in_flight.len() < shared.config.max_in_flight;
        let mut q = Queues {
            stream: &mut stream,
            in_flight: &mut in_flight,
            retry: &mut retry,
        };
        tokio::select! {
            r = rx.recv(), if can_send && q.retry.is_empty() && !closing => match r {
                Some(mut r) => {
                    // Room comes back when a node's sender takes the batch (once per batch).
                    if !r.taken {
                        r.taken = true;
                        shared.room.add_permits(1);
                    }
                    send_one(&shared, &lane, &mut q, r).await
                }
                None => closing = true,
            },
            _ = sleep_until(next_retry), if next_retry.is_some() && can_send => {
                if let Some((_, r)) = q.retry.pop_front() {
                    send_one(&shared, &lane, &mut q, r).await;
                }
            }
            frame = next_reply(q.stream), if !q.in_flight.is_empty() => {
                on_reply(&shared, &lane, frame, &mut q);
                replied = true;
            }
            _ = tokio::time::sleep(STALL_CHECK), if !q.in_flight.is_empty() && shared.routes.is_cluster() => {
                check_stalled(&shared, &lane, &mut q).await;
            }
        }
    }
}

/// How long a cluster sender waits for a reply before it asks whether its batches' partitions
/// are still led by its node.
const STALL_CHECK: Duration = Duration::from_millis(500);

/// No reply for a while: a node that crashed says nothing (QUIC over UDP) and its connection
/// lives until its idle timeout. If fresh metadata names another leader for a batch in flight,
/// the stream is given up and its batches go to the new leaders (an idempotent producer's
/// resend is not appended twice).
async fn check_stalled(shared: &Shared, lane: &Lane, q: &mut Queues<'_>) {
    shared.routes.refresh().await;
    let moved = q.in_flight.iter().any(|r| {
        r.partition != EXCHANGE && shared.routes.address(&r.topic, r.partition) != lane.addr
    });
    if !moved {
        return;
    }
    if let Some(r) = q.in_flight.pop_front() {
        let e = ClientError::Connect {
            addr: lane.addr.clone(),
            reason: "no reply, and the partition has another leader now".into(),
        };
        broken(shared, lane, r, e, q);
    }
}

/// A sender's stream, the batches awaiting its replies, and those to send again.
struct Queues<'a> {
    stream: &'a mut Stream,
    in_flight: &'a mut VecDeque<Ready>,
    retry: &'a mut RetryQueue,
}

async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t.into()).await;
    }
}

async fn next_reply(stream: &mut Stream) -> Result<quiver_proto::frame::Frame, ClientError> {
    match stream {
        Some((_, reader)) => reader
            .next()
            .await?
            .ok_or(ClientError::Protocol("produce stream ended".into())),
        None => std::future::pending().await,
    }
}

async fn send_one(shared: &Shared, lane: &Lane, q: &mut Queues<'_>, r: Ready) {
    if q.stream.is_none() {
        if shared.routes.is_cluster() && lane.is_down() {
            let e = ClientError::Connect {
                addr: lane.addr.clone(),
                reason: "the node did not answer a moment ago".into(),
            };
            return fail_or_retry(shared, lane, r, e, q.retry);
        }
        let opened = match shared.routes.client(&lane.addr).await {
            Ok(c) => c.open().await,
            Err(e) => Err(e),
        };
        match opened {
            Ok(s) => *q.stream = Some(s),
            Err(e) => {
                lane.mark_down();
                return fail_or_retry(shared, lane, r, e, q.retry);
            }
        }
    }
    let Some((send, _)) = q.stream.as_mut() else {
        return;
    };
    let req = ProduceRequest {
        request_id: shared.client.next_request_id(),
        topic: r.topic.clone(),
        partition: (r.partition != EXCHANGE).then_some(r.partition),
        acks: shared.config.acks,
        exchange: r.partition == EXCHANGE,
    };
    if let Err(e) = write_frame(send, FrameKind::Produce, &req, r.bytes.clone()).await {
        return broken(shared, lane, r, e.into(), q);
    }
    if shared.config.acks == Acks::None {
        r.slot.complete(Ok(BatchAck {
            partition: r.partition,
            base_offset: None,
            delayed: 0,
            delay_first_id: None,
        }));
    } else {
        q.in_flight.push_back(r);
    }
}

fn on_reply(
    shared: &Shared,
    lane: &Lane,
    frame: Result<quiver_proto::frame::Frame, ClientError>,
    q: &mut Queues<'_>,
) {
    let Some(r) = q.in_flight.pop_front() else {
        return;
    };
    let frame = match frame {
        Ok(f) => f,
        Err(e) => return broken(shared, lane, r, e, q),
    };
    match decode_frame::<ProduceResponse>(frame, FrameKind::ProduceOk) {
        Ok((resp, _)) => {
            if resp.duplicate {
                // Appended by an earlier attempt whose reply was lost: a success.
                tracing::debug!(topic = %r.topic, partition = r.partition, "duplicate batch acknowledged");
            }
            r.slot.complete(Ok(BatchAck {
                partition: resp.partition,
                base_offset: (!resp.transformed).then_some(resp.base_offset),
                delayed: resp.delayed,
                delay_first_id: (!resp.transformed && resp.delayed > 0)
                    .then_some(resp.delay_first_id),
            }))
        }
        // The broker refused this request; the stream stays usable.
        Err(e @ WireError::Remote { .. }) => fail_or_retry(shared, lane, r, e.into(), q.retry),
        Err(e) => broken(shared, lane, r, e.into(), q),
    }
}

/// The stream failed under `r` (or said something it should not): everything in flight on it is
/// sent again on a new stream, in order, whatever the error (the broker may or may not have
/// appended it; with idempotence a second append is recognised). On a cluster they go to their
/// partitions' leaders as fresh metadata names them (the node may be gone).
fn broken(shared: &Shared, lane: &Lane, r: Ready, e: ClientError, q: &mut Queues<'_>) {
    *q.stream = None;
    let reason = e.to_string();
    tracing::debug!(error = %reason, in_flight = q.in_flight.len() + 1, "produce stream failed; resending");
    let lost = |r| {
        (
            r,
            ClientError::Protocol(format!("produce stream failed: {reason}")),
        )
    };
    for (r, e) in std::iter::once((r, e)).chain(q.in_flight.drain(..).map(lost)) {
        if let Some((r, e)) = lane.divert(shared, r, e) {
            retry_or_fail(shared, r, e, q.retry);
        }
    }
}

fn fail_or_retry(shared: &Shared, lane: &Lane, r: Ready, e: ClientError, retry: &mut RetryQueue) {
    let Some((r, e)) = lane.divert(shared, r, e) else {
        return;
    };
    if e.is_retriable() {
        retry_or_fail(shared, r, e, retry);
    } else {
        fail(shared, r, e);
    }
}

/// Queues `r` for another attempt with backoff, unless it has had all its attempts.
fn retry_or_fail(shared: &Shared, mut r: Ready, e: ClientError, retry: &mut RetryQueue) {
    if r.attempts >= shared.config.retries {
        return fail(shared, r, e);
    }
    r.attempts += 1;
    let backoff = shared.config.retry_backoff * 2u32.saturating_pow(r.attempts - 1);
    tracing::debug!(error = %e, attempt = r.attempts, "retrying a produce");
    queue_retry(retry, Instant::now() + backoff.min(MAX_BACKOFF), r);
}

/// Inserts `r` among the pending retries by seal order.
fn queue_retry(retry: &mut RetryQueue, at: Instant, r: Ready) {
    let pos = retry.partition_point(|(_, q)| q.order < r.order);
    retry.insert(pos, (at, r));
}

fn fail(shared: &Shared, r: Ready, e: ClientError) {
    let e = Arc::new(e);
    if r.producer_id != 0 {
        // The batch's sequences will never be appended: later batches under this id would all be
        // out of order, so the next send takes a new id, unless a newer producer fenced this one
        // (a new id would fence it back).
        let mut st = shared.state.lock();
        if st.producer_id == Some(r.producer_id) {
            st.stale_id = true;
        }
        let fenced = e.code() == Some(ErrorCode::ProducerFenced);
        if fenced && !st.retired.contains(&r.producer_id) {
            st.fenced.get_or_insert_with(|| e.clone());
        }
    }
    r.slot.complete(Err(e));
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::Batch;

    fn push(st: &mut State, cfg: &ProducerConfig, partition: u32, n: usize) -> Vec<Ready> {
        let mut sealed = Vec::new();
        for _ in 0..n {
            let data = RecordData {
                timestamp: 1,
                value: b"value",
                ..Default::default()
            };
            sealed.extend(append(st, cfg, "t", partition, &data).unwrap().1);
        }
        sealed
    }

    fn stamp(r: &Ready) -> (u32, u64, u32, u32) {
        let h = *Batch::parse(r.bytes.clone()).unwrap().header();
        (r.partition, h.producer_id, h.base_sequence, h.record_count)
    }

    fn sealed(st: &mut State, partition: u32) -> Ready {
        seal(st, &KeyRef("t", partition, false)).unwrap().unwrap()
    }

    #[test]
    fn seal_oldest_takes_the_longest_waiting_batches_and_no_more() {
        let cfg = ProducerConfig::default();
        let mut st = State::default();
        for p in 0..5 {
            push(&mut st, &cfg, p, 1);
        }
        // Partition 3's batch opened first, partition 1's second.
        let now = Instant::now();
        for (p, age) in [(3u32, 50u64), (1, 40), (0, 30), (4, 20), (2, 10)] {
            let key = BatchKey::from(&KeyRef("t", p, false));
            st.open.get_mut(&key).unwrap().started = now - Duration::from_millis(age);
        }
        assert!(seal_oldest(&mut st, 0).is_empty());
        let mut got: Vec<u32> = seal_oldest(&mut st, 2)
            .iter()
            .map(|r| r.partition)
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![1, 3]);
        assert_eq!(st.open.len(), 3);
        assert_eq!(seal_oldest(&mut st, 10).len(), 3);
        assert!(st.open.is_empty());
    }

    #[test]
    fn batches_are_stamped_with_per_partition_sequences_when_sealed() {
        let cfg = ProducerConfig::default();
        let mut st = State {
            producer_id: Some(7),
            ..Default::default()
        };
        push(&mut st, &cfg, 0, 3);
        push(&mut st, &cfg, 1, 2);
        let a = sealed(&mut st, 0);
        push(&mut st, &cfg, 0, 4);
        let b = sealed(&mut st, 0);
        let c = sealed(&mut st, 1);
        assert_eq!(stamp(&a), (0, 7, 0, 3));
        assert_eq!(stamp(&b), (0, 7, 3, 4));
        assert_eq!(stamp(&c), (1, 7, 0, 2));
        assert!(a.order < b.order && b.order < c.order);
        assert_eq!((a.producer_id, c.producer_id), (7, 7));
    }

    #[test]
    fn batches_sealed_because_full_are_stamped_too() {
        let one = BatchBuilder::record_encoded_len(&RecordData {
            timestamp: 1,
            value: b"value",
            ..Default::default()
        });
        let cfg = ProducerConfig {
            batch_bytes: quiver_proto::batch::HEADER_LEN + 2 * one,
            ..Default::default()
        };
        let mut st = State {
            producer_id: Some(9),
            ..Default::default()
        };
        let full = push(&mut st, &cfg, 0, 5);
        let stamps: Vec<_> = full.iter().map(stamp).collect();
        assert_eq!(stamps, vec![(0, 9, 0, 2), (0, 9, 2, 2)]);
        assert_eq!(stamp(&sealed(&mut st, 0)), (0, 9, 4, 1));
    }

    #[test]
    fn acknowledged_batches_are_forgotten_without_a_flush() {
        let cfg = ProducerConfig::default();
        let mut st = State::default();
        for _ in 0..10 * PRUNE_MIN {
            push(&mut st, &cfg, 0, 1);
            let ready = sealed(&mut st, 0);
            ready.slot.complete(Err(Arc::new(ClientError::Closed)));
        }
        // One batch in flight stays however many were pruned around it.
        push(&mut st, &cfg, 0, 1);
        let pending = sealed(&mut st, 0);
        for _ in 0..PRUNE_MIN {
            push(&mut st, &cfg, 0, 1);
            sealed(&mut st, 0)
                .slot
                .complete(Err(Arc::new(ClientError::Closed)));
        }
        assert!(st.unacked.len() <= PRUNE_MIN, "{}", st.unacked.len());
        assert!(st.unacked.iter().any(|s| Arc::ptr_eq(s, &pending.slot)));
    }

    #[test]
    fn without_an_id_batches_are_not_stamped() {
        let cfg = ProducerConfig::default();
        let mut st = State::default();
        push(&mut st, &cfg, 0, 2);
        let a = sealed(&mut st, 0);
        assert_eq!(stamp(&a), (0, 0, 0, 2));
        assert!(st.sequences.is_empty());
    }

    #[test]
    fn a_new_id_restarts_the_sequences() {
        let cfg = ProducerConfig::default();
        let mut st = State {
            producer_id: Some(1),
            ..Default::default()
        };
        push(&mut st, &cfg, 0, 2);
        sealed(&mut st, 0);
        st.stale_id = true;
        assert!(!st.has_usable_id().unwrap());
        // What `ensure_producer_id` does with the broker's answer.
        st.producer_id = Some(2);
        st.stale_id = false;
        st.sequences.clear();
        push(&mut st, &cfg, 0, 1);
        assert_eq!(stamp(&sealed(&mut st, 0)), (0, 2, 0, 1));
    }

    #[test]
    fn delay_headers_replace_each_other() {
        let rec = ProducerRecord::new("t", "v")
            .header("a", "1")
            .delay(Duration::from_millis(1500))
            .deliver_at(1_700_000_000_000);
        let names: Vec<&str> = rec.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["a", DELIVER_AT_HEADER]);
        assert_eq!(&rec.headers[1].1[..], b"1700000000000");
        let rec = rec.delay(Duration::from_secs(2));
        assert_eq!(rec.headers.len(), 2);
        assert_eq!(
            rec.headers[1],
            (DELAY_MS_HEADER.to_owned(), Bytes::from("2000"))
        );
    }

    #[test]
    fn delayed_records_get_batches_of_their_own_and_ids_in_order() {
        let cfg = ProducerConfig::default();
        let mut st = State {
            producer_id: Some(7),
            ..Default::default()
        };
        let delay = [(DELAY_MS_HEADER, &b"10"[..])];
        let at = [(DELIVER_AT_HEADER, &b"1"[..])];
        let other = [("x", &b"y"[..])];
        let kinds: [&[(&str, &[u8])]; 5] = [&[], &delay, &other, &at, &[]];
        let deliveries: Vec<Delivery> = kinds
            .iter()
            .map(|headers| {
                let data = RecordData {
                    timestamp: 1,
                    value: b"v",
                    headers,
                    ..Default::default()
                };
                append(&mut st, &cfg, "t", 0, &data).unwrap().0
            })
            .collect();
        let positions: Vec<Position> = deliveries.iter().map(|d| d.position).collect();
        use Position::{Held, Immediate};
        assert_eq!(
            positions,
            vec![Immediate(0), Held(0), Immediate(1), Held(1), Immediate(2)]
        );
        // Two batches of one partition: one sequence range after the other, in seal order.
        let held = seal(&mut st, &KeyRef("t", 0, true)).unwrap().unwrap();
        let now = sealed(&mut st, 0);
        assert_eq!((stamp(&held), stamp(&now)), ((0, 7, 0, 2), (0, 7, 2, 3)));
        let flags = |r: &Ready| Batch::parse(r.bytes.clone()).unwrap().header().flags;
        assert_ne!(flags(&held) & quiver_proto::batch::FLAG_DELAYED, 0);
        assert_eq!(flags(&now) & quiver_proto::batch::FLAG_DELAYED, 0);
        assert!(Arc::ptr_eq(&deliveries[1].slot, &deliveries[3].slot));
        assert!(!Arc::ptr_eq(&deliveries[0].slot, &deliveries[1].slot));

        let held_ack = BatchAck {
            partition: 0,
            base_offset: Some(40),
            delayed: 2,
            delay_first_id: Some(7),
        };
        let now_ack = BatchAck {
            delayed: 0,
            delay_first_id: None,
            ..held_ack
        };
        let got: Vec<(Option<u64>, Option<u64>)> = positions
            .iter()
            .map(|&p| {
                let ack = if matches!(p, Held(_)) {
                    held_ack
                } else {
                    now_ack
                };
                let m = ack.metadata(p);
                (m.offset, m.delay_id)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (Some(40), None),
                (None, Some(7)),
                (Some(41), None),
                (None, Some(8)),
                (Some(42), None)
            ]
        );
        // A transformed batch (or a broker that held nothing): no ids.
        let transformed = BatchAck {
            base_offset: None,
            delay_first_id: None,
            ..held_ack
        };
        assert_eq!(transformed.metadata(Held(0)).delay_id, None);
        let none_held = BatchAck {
            delayed: 0,
            ..held_ack
        };
        assert_eq!(none_held.metadata(Held(1)).delay_id, None);
    }

    #[test]
    fn retries_are_queued_in_seal_order() {
        let cfg = ProducerConfig::default();
        let mut st = State {
            producer_id: Some(7),
            ..Default::default()
        };
        let mut batches: Vec<Ready> = (0..4)
            .map(|p| {
                push(&mut st, &cfg, p, 1);
                sealed(&mut st, p)
            })
            .collect();
        let mut retry = RetryQueue::new();
        let now = Instant::now();
        // A newer batch failed first; the older ones in flight behind it come back later.
        let third = batches.remove(2);
        queue_retry(&mut retry, now + Duration::from_secs(1), third);
        for r in batches {
            queue_retry(&mut retry, now, r);
        }
        let order: Vec<u32> = retry.iter().map(|(_, r)| r.partition).collect();
        assert_eq!(order, vec![0, 1, 2, 3]);
    }
}
