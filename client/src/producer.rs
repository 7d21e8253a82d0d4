//! The producer: records are encoded straight into per-partition batches (no per-record allocation
//! beyond the caller's own buffers), which are sent when full or when `linger` has passed. One
//! pipelined stream carries the batches; the broker answers in order, and retriable errors are retried
//! with backoff. `send` returns a [`Delivery`] that resolves when the batch holding the record is acked.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use quiver_proto::frame::FrameKind;
use quiver_proto::messages::{Acks, ProduceRequest, ProduceResponse};
use quiver_proto::{BatchBuilder, RecordData};
use tokio::sync::{mpsc, Notify};

use crate::client::Client;
use crate::error::ClientError;
use crate::wire::{decode_frame, write_frame, FrameReader};

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
    /// How long a non-full batch waits for more records.
    pub linger: Duration,
    /// A batch is sent once it reaches this many bytes.
    pub batch_bytes: usize,
    /// Attempts after the first for retriable errors.
    pub retries: u32,
    pub retry_backoff: Duration,
    /// Batches sent but not yet acknowledged.
    pub max_in_flight: usize,
    pub partitioner: Partitioner,
}

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
}

impl ProducerRecord {
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            value: value.into(),
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
}

/// Where an acknowledged record landed. `offset` is `None` with `acks=none`, and when the topic's
/// ingest pipeline filtered or rewrote the batch (records then no longer map one to one onto
/// offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    pub offset: Option<u64>,
}

/// A batch's partition and base offset (`None` with `acks=none`), or why it failed.
type BatchOutcome = Result<(u32, Option<u64>), Arc<ClientError>>;

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

/// Resolves when the record's batch is acknowledged (or fails for good).
pub struct Delivery {
    slot: Arc<Slot>,
    index: u32,
}

impl Delivery {
    pub async fn wait(self) -> Result<RecordMetadata, Arc<ClientError>> {
        match self.slot.wait().await {
            Ok((partition, base)) => Ok(RecordMetadata {
                partition: *partition,
                offset: base.map(|b| b + self.index as u64),
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

struct Open {
    builder: BatchBuilder,
    slot: Arc<Slot>,
    started: Instant,
}

/// A sealed batch on its way to the broker.
struct Ready {
    topic: String,
    partition: u32,
    bytes: Bytes,
    slot: Arc<Slot>,
    attempts: u32,
}

#[derive(Default)]
struct State {
    open: HashMap<(String, u32), Open>,
    sticky: HashMap<String, u32>,
    unacked: Vec<Arc<Slot>>,
}

struct Shared {
    client: Client,
    config: ProducerConfig,
    state: Mutex<State>,
    partitions: Mutex<HashMap<String, u32>>,
    tx: mpsc::Sender<Ready>,
}

/// Sends records to the broker in batches. Cheap to clone.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

impl Producer {
    pub fn new(client: Client, config: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::channel(config.max_in_flight.max(1));
        let shared = Arc::new(Shared {
            client,
            config,
            state: Mutex::default(),
            partitions: Mutex::default(),
            tx,
        });
        tokio::spawn(sender(shared.clone(), rx));
        tokio::spawn(linger(Arc::downgrade(&shared)));
        Producer { shared }
    }

    /// Adds a record to its partition's batch. Errors here are about the record itself (too large,
    /// unknown topic); delivery errors come from [`Delivery::wait`].
    pub async fn send(&self, rec: ProducerRecord) -> Result<Delivery, ClientError> {
        let partition = self.choose_partition(&rec).await?;
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
        let (delivery, sealed) = self.append(&rec.topic, partition, &data)?;
        for r in sealed {
            self.shared
                .tx
                .send(r)
                .await
                .map_err(|_| ClientError::Closed)?;
        }
        Ok(delivery)
    }

    fn append(
        &self,
        topic: &str,
        partition: u32,
        data: &RecordData<'_>,
    ) -> Result<(Delivery, Vec<Ready>), ClientError> {
        let cfg = &self.shared.config;
        let mut st = self.shared.state.lock();
        let mut sealed = Vec::new();
        let key = (topic.to_owned(), partition);
        let rec_len = BatchBuilder::record_encoded_len(data);
        if st
            .open
            .get(&key)
            .is_some_and(|o| o.builder.encoded_len() + rec_len > cfg.batch_bytes)
        {
            sealed.extend(seal(&mut st, &key)?);
        }
        let open = st.open.entry(key.clone()).or_insert_with(|| Open {
            builder: BatchBuilder::with_capacity(cfg.batch_bytes.min(1 << 20)),
            slot: Arc::default(),
            started: Instant::now(),
        });
        let index = open.builder.len() as u32;
        open.builder.push(data)?;
        let delivery = Delivery {
            slot: open.slot.clone(),
            index,
        };
        if open.builder.encoded_len() >= cfg.batch_bytes {
            sealed.extend(seal(&mut st, &key)?);
        }
        Ok((delivery, sealed))
    }

    async fn choose_partition(&self, rec: &ProducerRecord) -> Result<u32, ClientError> {
        if let Some(p) = rec.partition {
            return Ok(p);
        }
        let count = self.partition_count(&rec.topic).await?;
        let st = self.shared.state.lock();
        let sticky = st.sticky.get(&rec.topic).copied().unwrap_or(0) % count;
        Ok(match (&rec.key, self.shared.config.partitioner) {
            (Some(k), Partitioner::KeyHash) => (fnv1a(k) % count as u64) as u32,
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
    /// first delivery error, if any.
    pub async fn flush(&self) -> Result<(), Arc<ClientError>> {
        let (sealed, waiting) = {
            let mut st = self.shared.state.lock();
            let keys: Vec<_> = st.open.keys().cloned().collect();
            let mut sealed = Vec::new();
            for k in keys {
                sealed.extend(seal(&mut st, &k).map_err(Arc::new)?);
            }
            st.unacked.retain(|s| s.result.get().is_none());
            (sealed, st.unacked.clone())
        };
        for r in sealed {
            let slot = r.slot.clone();
            if self.shared.tx.send(r).await.is_err() {
                return Err(Arc::new(ClientError::Closed));
            }
            slot.wait().await.clone()?;
        }
        for s in waiting {
            s.wait().await.clone()?;
        }
        Ok(())
    }
}

/// Takes the open batch for `key` out for sending.
fn seal(st: &mut State, key: &(String, u32)) -> Result<Option<Ready>, ClientError> {
    let Some(open) = st.open.remove(key) else {
        return Ok(None);
    };
    if open.builder.is_empty() {
        return Ok(None);
    }
    *st.sticky.entry(key.0.clone()).or_default() += 1;
    st.unacked.push(open.slot.clone());
    let bytes = open.builder.finish()?;
    Ok(Some(Ready {
        topic: key.0.clone(),
        partition: key.1,
        bytes,
        slot: open.slot,
        attempts: 0,
    }))
}

/// Seals batches that waited longer than `linger`; ends when the producer is dropped.
async fn linger(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let period = (s.config.linger / 2).max(Duration::from_millis(1));
        let due: Vec<Ready> = {
            let mut st = s.state.lock();
            let keys: Vec<_> = st
                .open
                .iter()
                .filter(|(_, o)| o.started.elapsed() >= s.config.linger)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter()
                .filter_map(|k| seal(&mut st, k).ok().flatten())
                .collect()
        };
        for r in due {
            if s.tx.send(r).await.is_err() {
                return;
            }
        }
        drop(s);
        tokio::time::sleep(period).await;
    }
}

/// Owns the produce stream: writes batches, reads the in-order replies, retries retriable failures.
async fn sender(shared: Arc<Shared>, mut rx: mpsc::Receiver<Ready>) {
    let mut retry: VecDeque<(Instant, Ready)> = VecDeque::new();
    let mut stream: Option<(quinn::SendStream, FrameReader<quinn::RecvStream>)> = None;
    let mut in_flight: VecDeque<Ready> = VecDeque::new();
    let mut closing = false;
    loop {
        if closing && in_flight.is_empty() && retry.is_empty() {
            return;
        }
        let next_retry = retry.front().map(|(t, _)| *t);
        let can_send = in_flight.len() < shared.config.max_in_flight;
        tokio::select! {
            r = rx.recv(), if can_send && !closing => match r {
                Some(r) => send_one(&shared, &mut stream, &mut in_flight, &mut retry, r).await,
                None => closing = true,
            },
            _ = sleep_until(next_retry), if next_retry.is_some() && can_send => {
                if let Some((_, r)) = retry.pop_front() {
                    send_one(&shared, &mut stream, &mut in_flight, &mut retry, r).await;
                }
            }
            frame = next_reply(&mut stream), if !in_flight.is_empty() => {
                on_reply(&shared, frame, &mut stream, &mut in_flight, &mut retry);
            }
        }
    }
}

async fn sleep_until(t: Option<Instant>) {
    if let Some(t) = t {
        tokio::time::sleep_until(t.into()).await;
    }
}

async fn next_reply(
    stream: &mut Option<(quinn::SendStream, FrameReader<quinn::RecvStream>)>,
) -> Result<quiver_proto::frame::Frame, ClientError> {
    match stream {
        Some((_, reader)) => reader
            .next()
            .await?
            .ok_or(ClientError::Protocol("produce stream ended".into())),
        None => std::future::pending().await,
    }
}

async fn send_one(
    shared: &Shared,
    stream: &mut Option<(quinn::SendStream, FrameReader<quinn::RecvStream>)>,
    in_flight: &mut VecDeque<Ready>,
    retry: &mut VecDeque<(Instant, Ready)>,
    r: Ready,
) {
    if stream.is_none() {
        match shared.client.open().await {
            Ok(s) => *stream = Some(s),
            Err(e) => return fail_or_retry(shared, r, e, retry),
        }
    }
    let Some((send, _)) = stream.as_mut() else {
        return;
    };
    let req = ProduceRequest {
        request_id: shared.client.next_request_id(),
        topic: r.topic.clone(),
        partition: Some(r.partition),
        acks: shared.config.acks,
    };
    if let Err(e) = write_frame(send, FrameKind::Produce, &req, r.bytes.clone()).await {
        *stream = None;
        // Everything in flight on the broken stream is retried on a new one.
        for r in in_flight.drain(..) {
            retry.push_back((Instant::now(), r));
        }
        return fail_or_retry(shared, r, e.into(), retry);
    }
    if shared.config.acks == Acks::None {
        r.slot.complete(Ok((r.partition, None)));
    } else {
        in_flight.push_back(r);
    }
}

fn on_reply(
    shared: &Shared,
    frame: Result<quiver_proto::frame::Frame, ClientError>,
    stream: &mut Option<(quinn::SendStream, FrameReader<quinn::RecvStream>)>,
    in_flight: &mut VecDeque<Ready>,
    retry: &mut VecDeque<(Instant, Ready)>,
) {
    let Some(r) = in_flight.pop_front() else {
        return;
    };
    let result = frame.and_then(|f| Ok(decode_frame::<ProduceResponse>(f, FrameKind::ProduceOk)?));
    match result {
        Ok((resp, _)) => r.slot.complete(Ok((
            resp.partition,
            (!resp.transformed).then_some(resp.base_offset),
        ))),
        Err(e) => {
            if matches!(e, ClientError::Protocol(_) | ClientError::Connection(_)) {
                *stream = None;
            }
            fail_or_retry(shared, r, e, retry);
        }
    }
}

fn fail_or_retry(
    shared: &Shared,
    mut r: Ready,
    e: ClientError,
    retry: &mut VecDeque<(Instant, Ready)>,
) {
    if e.is_retriable() && r.attempts < shared.config.retries {
        r.attempts += 1;
        let backoff = shared.config.retry_backoff * 2u32.saturating_pow(r.attempts - 1);
        tracing::debug!(error = %e, attempt = r.attempts, "retrying a produce");
        retry.push_back((Instant::now() + backoff, r));
    } else {
        r.slot.complete(Err(Arc::new(e)));
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
