//! Queue mode over the logs: the share partitions of every (group, topic, partition), reading the
//! leased records' bytes from the log, writing records out of deliveries to `<topic>.dlq`, and
//! keeping each share partition's settled point in the metadata store so a restart does not
//! redeliver what was acknowledged (records in flight at a crash are delivered again).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use quiver_proto::groups::{LeasedRecord, OffsetRange, QueuePartitionState};
use quiver_proto::{Batch, Batches};

use super::share::{Dead, SharePartition};
use super::GroupError;
use crate::meta::{MetaStore, Namespace};
use crate::storage::{PartitionLog, Topic};

/// Bytes asked of the log per read when collecting leased records.
const READ_CHUNK: usize = 1 << 20;

type Key = (String, String, u32);

/// Told each new settled point of a share partition (a cluster replicates them).
pub type SettledHook = Box<dyn Fn(&str, &str, u32, u64) + Send + Sync>;

/// Which partitions of a topic this node serves queue consumers from (on a cluster, those it
/// leads).
pub type Serves<'a> = &'a dyn Fn(u32) -> bool;

/// What the node around the share partitions provides: where dead letters go, and which
/// partitions it serves.
#[derive(Clone, Copy)]
pub struct Host<'a> {
    pub sink: DeadLetterSink<'a>,
    pub serves: Serves<'a>,
}

/// A record leased by a poll: (offset, delivery count).
type Lease = (u64, u32);

/// A poll's parameters.
#[derive(Debug, Clone)]
pub struct PollParams {
    pub group: String,
    pub topic: String,
    pub consumer: Arc<str>,
    pub max_records: usize,
    pub visibility: Duration,
    pub max_deliveries: u32,
    /// Payload budget: records past it are given back (uncounted) for a later poll.
    pub max_bytes: usize,
}

/// The leased records of one partition and the batches that hold them.
#[derive(Debug, Clone)]
pub struct LeasedBatch {
    pub partition: u32,
    pub bytes: Bytes,
    pub records: Vec<LeasedRecord>,
}

/// The result of one pass over a topic's partitions.
#[derive(Debug, Default)]
pub struct Polled {
    pub parts: Vec<LeasedBatch>,
    /// The earliest time a waiting record becomes ready or a lease runs out.
    pub next_event: Option<Instant>,
}

/// How records are settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ack,
    Nack { delay: Duration },
    Release,
}

/// Appends a dead-letter batch for `topic` (the sink creates `<topic>.dlq` as needed).
pub type DeadLetterSink<'a> = &'a dyn Fn(&str, Bytes) -> Result<(), GroupError>;

pub struct Queues {
    parts: Mutex<HashMap<Key, Arc<Mutex<SharePartition>>>>,
    meta: MetaStore,
    rotation: AtomicUsize,
    /// Signalled when records are given back (nack, release, a failed dead letter put back), so
    /// parked polls look again instead of waiting for their timer.
    given_back: tokio::sync::Notify,
    on_settled: std::sync::OnceLock<SettledHook>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("parts", &self.parts.lock().len())
            .finish_non_exhaustive()
    }
}

fn meta_key(k: &Key) -> String {
    format!("{}/{}/{}", k.0, k.1, k.2)
}

impl Queues {
    pub fn new(meta: MetaStore) -> Queues {
        Queues {
            parts: Mutex::default(),
            meta,
            rotation: AtomicUsize::new(0),
            given_back: tokio::sync::Notify::new(),
            on_settled: std::sync::OnceLock::new(),
        }
    }

    /// Sets what is told each new settled point (once).
    pub fn on_settled(&self, hook: SettledHook) {
        let _ = self.on_settled.set(hook);
    }

    /// Forgets the in-memory state of a partition's share partitions (every group): the next
    /// use loads the saved settled point (a node taking the lead of the partition resumes from
    /// what its previous leader replicated). Leases and delivery counts start over.
    pub fn forget_partition(&self, topic: &str, partition: u32) {
        self.parts
            .lock()
            .retain(|k, _| !(k.1 == topic && k.2 == partition));
    }

    /// Saves a settled point a partition's leader replicated (the last one replicated wins,
    /// as after a topic was deleted and created again; a deposed leader's late point only
    /// means records delivered again after a failover).
    pub fn save_replicated(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        start: u64,
    ) -> Result<(), GroupError> {
        let key = meta_key(&(group.to_owned(), topic.to_owned(), partition));
        Ok(self.meta.put(Namespace::QueueOffsets, &key, &start)?)
    }

    /// The share partition, loaded from its saved settled point (or the log start) on first use.
    fn part(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        log: &PartitionLog,
    ) -> Result<Arc<Mutex<SharePartition>>, GroupError> {
        let key = (group.to_owned(), topic.to_owned(), partition);
        if let Some(p) = self.parts.lock().get(&key) {
            return Ok(p.clone());
        }
        let saved: Option<u64> = self.meta.get(Namespace::QueueOffsets, &meta_key(&key))?;
        let stats = log.stats();
        let start = saved
            .unwrap_or(stats.log_start)
            .clamp(stats.log_start, stats.log_end);
        let fresh = Arc::new(Mutex::new(SharePartition::new(start)));
        Ok(self.parts.lock().entry(key).or_insert(fresh).clone())
    }

    fn save_start(&self, key: &Key, start: u64) -> Result<(), GroupError> {
        self.meta
            .put(Namespace::QueueOffsets, &meta_key(key), &start)?;
        if let Some(hook) = self.on_settled.get() {
            hook(&key.0, &key.1, key.2, start);
        }
        Ok(())
    }

    /// One pass over the topic's partitions (starting at a rotating one, so consumers spread):
    /// expire leases, then lease up to `max_records` records within the poll's byte budget.
    pub fn poll_once(
        &self,
        p: &PollParams,
        topic: &Topic,
        host: Host<'_>,
    ) -> Result<Polled, GroupError> {
        let logs = topic.partitions();
        let n = logs.len().max(1);
        let first = self.rotation.fetch_add(1, Ordering::Relaxed) % n;
        let now = Instant::now();
        let mut out = Polled::default();
        let mut remaining = p.max_records;
        let mut budget = p.max_bytes.max(1);
        for k in 0..logs.len() {
            let partition = ((first + k) % n) as u32;
            if !(host.serves)(partition) {
                continue;
            }
            let log = &logs[partition as usize];
            let sp = self.part(&p.group, &p.topic, partition, log)?;
            let (leased, event) =
                self.lease_from(p, partition, log, &sp, now, remaining, host.sink)?;
            out.next_event = match (out.next_event, event) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if leased.is_empty() {
                continue;
            }
            let batch = collect(p, partition, log, &sp, &leased, now, &mut budget)?;
            remaining -= batch.records.len();
            if !batch.records.is_empty() {
                out.parts.push(batch);
            }
            if budget == 0 {
                break;
            }
        }
        Ok(out)
    }

    /// Expires the partition's leases (burying records out of deliveries) and leases up to
    /// `remaining` records to the poller; returns them with the partition's next event.
    #[allow(clippy::too_many_arguments)]
    fn lease_from(
        &self,
        p: &PollParams,
        partition: u32,
        log: &PartitionLog,
        sp: &Mutex<SharePartition>,
        now: Instant,
        remaining: usize,
        sink: DeadLetterSink<'_>,
    ) -> Result<(Vec<Lease>, Option<Instant>), GroupError> {
        let mut sp = sp.lock();
        sp.max_deliveries = p.max_deliveries.max(1);
        let stats = log.stats();
        let before = sp.start();
        sp.skip_to(stats.log_start);
        let dead = sp.expire(now);
        self.bury(&p.group, &p.topic, partition, log, &mut sp, dead, sink);
        let deadline = now + p.visibility;
        let leased = sp.lease(&p.consumer, now, deadline, remaining, stats.log_end);
        if sp.start() != before {
            self.save_start(&(p.group.clone(), p.topic.clone(), partition), sp.start())?;
        }
        Ok((leased, sp.next_event()))
    }

    /// Resolves when records are given back for delivery now (see `given_back`).
    pub fn given_back(&self) -> tokio::sync::futures::Notified<'_> {
        self.given_back.notified()
    }

    /// Acks, nacks or releases ranges of records leased to `consumer`; returns (settled, stale).
    pub fn settle(
        &self,
        group: &str,
        topic: &Topic,
        consumer: &str,
        how: Settle,
        ranges: &[OffsetRange],
        host: Host<'_>,
    ) -> Result<(u64, u64), GroupError> {
        let (mut settled, mut stale) = (0, 0);
        let now = Instant::now();
        for r in ranges {
            // A partition led elsewhere now: its leases went with the leadership.
            let log = topic
                .partition(r.partition)
                .ok()
                .filter(|_| (host.serves)(r.partition));
            let Some(log) = log else {
                stale += r.len().min(super::share::WINDOW);
                continue;
            };
            let sp = self.part(group, &topic.name, r.partition, log)?;
            let mut sp = sp.lock();
            let before = sp.start();
            let s = match how {
                Settle::Ack => sp.ack(consumer, r.first, r.last),
                Settle::Nack { delay } => {
                    sp.give_back(consumer, r.first, r.last, now + delay, true)
                }
                Settle::Release => sp.give_back(consumer, r.first, r.last, now, false),
            };
            settled += s.settled;
            stale += s.stale;
            self.bury(
                group,
                &topic.name,
                r.partition,
                log,
                &mut sp,
                s.dead,
                host.sink,
            );
            if sp.start() != before {
                let key = (group.to_owned(), topic.name.clone(), r.partition);
                self.save_start(&key, sp.start())?;
            }
        }
        // Parked polls look again: records are ready now, or at a time they did not know of.
        if settled > 0 && how != Settle::Ack {
            self.given_back.notify_waiters();
        }
        Ok((settled, stale))
    }

    /// Writes dead records to `<topic>.dlq`; one that cannot be written goes back in line.
    #[allow(clippy::too_many_arguments)]
    fn bury(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        log: &PartitionLog,
        sp: &mut SharePartition,
        dead: Vec<Dead>,
        sink: DeadLetterSink<'_>,
    ) {
        for d in dead {
            let written = dead_letter_batch(group, topic, partition, log, &d)
                .and_then(|batch| sink(topic, batch));
            match written {
                Ok(()) => {
                    sp.dead_lettered += 1;
                    tracing::info!(%group, %topic, partition, offset = d.offset, deliveries = d.deliveries, reason = %d.reason, "record dead-lettered");
                }
                Err(e) => {
                    tracing::warn!(%group, %topic, partition, offset = d.offset, error = %e, "dead-lettering failed; the record stays in the queue");
                    sp.restore(&d, Instant::now());
                    self.given_back.notify_waiters();
                }
            }
        }
    }

    /// Queue-mode state of every partition `group` consumes in queue mode.
    pub fn describe(
        &self,
        group: &str,
        log_end: &dyn Fn(&str, u32) -> u64,
    ) -> Vec<QueuePartitionState> {
        let parts: Vec<(Key, Arc<Mutex<SharePartition>>)> = self
            .parts
            .lock()
            .iter()
            .filter(|(k, _)| k.0 == group)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut out: Vec<QueuePartitionState> = parts
            .into_iter()
            .map(|(k, sp)| {
                let sp = sp.lock();
                QueuePartitionState {
                    log_end: log_end(&k.1, k.2),
                    topic: k.1,
                    partition: k.2,
                    start: sp.start(),
                    next: sp.next(),
                    leased: sp.leased(),
                    available: sp.waiting(),
                    dead_lettered: sp.dead_lettered,
                    redelivered: sp.redelivered,
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// Group names with queue-mode state, each with its topics.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut seen: Vec<(String, String)> = self
            .parts
            .lock()
            .keys()
            .map(|k| (k.0.clone(), k.1.clone()))
            .collect();
        let saved: Vec<(String, u64)> = self
            .meta
            .scan(Namespace::QueueOffsets, "")
            .unwrap_or_default();
        for (k, _) in saved {
            let mut it = k.splitn(3, '/');
            if let (Some(g), Some(t)) = (it.next(), it.next()) {
                seen.push((g.to_owned(), t.to_owned()));
            }
        }
        seen.sort();
        seen.dedup();
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for (g, t) in seen {
            match out.last_mut() {
                Some((last, topics)) if *last == g => topics.push(t),
                _ => out.push((g, vec![t])),
            }
        }
        out
    }

    /// Forgets the queue state of a deleted topic.
    pub fn remove_topic(&self, topic: &str) {
        self.parts.lock().retain(|k, _| k.1 != topic);
    }
}

/// The record at `d.offset`, re-encoded with headers saying why it died and where it came from.
fn dead_letter_batch(
    group: &str,
    topic: &str,
    partition: u32,
    log: &PartitionLog,
    d: &Dead,
) -> Result<Bytes, GroupError> {
    let res = log.read(d.offset, 1)?;
    let count = d.deliveries.to_string();
    let (p, o) = (partition.to_string(), d.offset.to_string());
    let headers: [(&str, &[u8]); 6] = [
        ("quiver-error", d.reason.as_bytes()),
        ("quiver-delivery-count", count.as_bytes()),
        ("quiver-group", group.as_bytes()),
        ("quiver-source-topic", topic.as_bytes()),
        ("quiver-source-partition", p.as_bytes()),
        ("quiver-source-offset", o.as_bytes()),
    ];
    for b in Batches::new(res.bytes) {
        let b: Batch = b?;
        if let Some(out) = quiver_proto::batch::rebuild(&b, &headers, |_, r| r.offset == d.offset)?
        {
            return Ok(out);
        }
    }
    Err(GroupError::Internal(format!(
        "record {topic}/{partition}@{} is not in the log",
        d.offset
    )))
}

/// The batches holding `offsets` (sorted), trimmed to those records, until about `budget` bytes
/// (at least one batch); returns them and how many of `offsets` they cover.
fn read_records(
    log: &PartitionLog,
    offsets: &[u64],
    budget: usize,
) -> Result<(Bytes, usize), GroupError> {
    let mut out = BytesMut::new();
    let mut i = 0;
    while i < offsets.len() && (out.is_empty() || out.len() < budget) {
        let res = log.read(offsets[i], READ_CHUNK.min(budget))?;
        let before = i;
        for b in Batches::new(res.bytes) {
            let b = b?;
            let end = b.header().next_offset();
            let lo = i;
            while i < offsets.len() && offsets[i] < end {
                i += 1;
            }
            let wanted = &offsets[lo..i];
            if wanted.is_empty() {
                continue;
            }
            let keep = |r: &quiver_proto::RecordRef<'_>| wanted.binary_search(&r.offset).is_ok();
            if let Some(sel) = quiver_proto::batch::select(&b, keep) {
                out.extend_from_slice(&sel);
            }
            if i == offsets.len() || out.len() >= budget {
                break;
            }
        }
        if i == before {
            // The log no longer holds these offsets (retention raced the lease): their leases
            // simply run out.
            break;
        }
    }
    Ok((out.freeze(), i))
}

/// Reads the leased records' batches within the byte budget; records past it are given back
/// (uncounted) for a later poll.
fn collect(
    p: &PollParams,
    partition: u32,
    log: &PartitionLog,
    sp: &Mutex<SharePartition>,
    leased: &[Lease],
    now: Instant,
    budget: &mut usize,
) -> Result<LeasedBatch, GroupError> {
    let offsets: Vec<u64> = leased.iter().map(|(o, _)| *o).collect();
    let (bytes, included) = read_records(log, &offsets, *budget)?;
    *budget = budget.saturating_sub(bytes.len());
    if included < leased.len() {
        let mut sp = sp.lock();
        for (o, _) in &leased[included..] {
            sp.give_back(&p.consumer, *o, *o, now, false);
        }
    }
    let records = leased[..included]
        .iter()
        .map(|&(offset, delivery_count)| LeasedRecord {
            offset,
            delivery_count,
        })
        .collect();
    Ok(LeasedBatch {
        partition,
        bytes,
        records,
    })
}
