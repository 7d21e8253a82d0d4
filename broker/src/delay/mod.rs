//! The delay store: records produced with a due time (a `quiver-deliver-at` / `quiver-delay-ms`
//! header, or a scheduler plugin) are held in an internal log (`<data>/delay/`, the same segment
//! format as topics, so held records survive kill -9 like any appended record) and indexed in
//! memory by due time; a delivery thread appends them to their destination partition when due, in
//! due order.
//!
//! Exactly once across crashes: before a delivery round appends anything, it writes an intent
//! (destinations, their log ends, the runs) to the delay log. On restart every intent but the last
//! is known complete; the last one is checked against the destination partitions (delivered
//! records carry their id in `quiver-delay-id`), and runs not found there are pending again.

mod delays;
mod deliver;
mod index;
pub mod records;
mod shards;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use quiver_proto::batch::{self, Batch, Batches};

use crate::storage::{Durability, LogConfig, PartitionLog, StorageError, TopicStore};
use index::Index;
use records::{Control, Entry, RunInfo};

pub use delays::Delays;
pub use records::ID_HEADER;
pub use shards::Shards;

#[derive(Debug, thiserror::Error)]
pub enum DelayError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("invalid batch: {0}")]
    Batch(#[from] quiver_proto::BatchError),
    #[error("header {name} must be a non-negative number of milliseconds, got {value:?}")]
    BadHeader { name: String, value: String },
    #[error("header {name} asks for delivery at {due} ms, more than a year away")]
    TooFar { name: String, due: i64 },
    #[error("no delayed record {0} is pending (never held, already delivered or cancelled)")]
    UnknownId(u64),
    #[error("the delay log holds a record without a valid {0} header")]
    Corrupt(&'static str),
    #[error("cannot encode a delay-log control record: {0}")]
    Encode(String),
    #[error("delay store: {0}")]
    Internal(&'static str),
    /// A cluster's delivery did not reach the partition's in-sync replicas (retried).
    #[error("delivery: {0}")]
    Delivery(String),
    /// A cluster's delay shard could not take the request here or at its leader (it moved,
    /// too few replicas, no answer), with the code the client sees.
    #[error("{message}")]
    Shard {
        code: quiver_proto::ErrorCode,
        message: String,
    },
}

impl DelayError {
    /// The stable error code a client sees for this failure.
    pub fn code(&self) -> quiver_proto::ErrorCode {
        use quiver_proto::ErrorCode;
        match self {
            DelayError::Storage(e) => e.code(),
            DelayError::Batch(_) | DelayError::BadHeader { .. } | DelayError::TooFar { .. } => {
                ErrorCode::InvalidBatch
            }
            DelayError::UnknownId(_) => ErrorCode::UnknownDelayed,
            DelayError::Corrupt(_) | DelayError::Encode(_) => ErrorCode::StorageError,
            DelayError::Internal(_) => ErrorCode::Internal,
            DelayError::Delivery(_) => ErrorCode::Timeout,
            DelayError::Shard { code, .. } => *code,
        }
    }
}

/// The last intent of the delay log when its round has no `done`, with the ids cancelled in its
/// runs.
type Unsettled = (Vec<records::Destination>, Vec<u64>);

/// What holding a batch's delayed records did.
#[derive(Debug)]
pub struct Held {
    /// The records that were not delayed, to append now (`None`: there were none).
    pub immediate: Option<Batch>,
    /// How many records were held, and the first id (ids are consecutive, in batch order).
    pub count: u32,
    pub first_id: u64,
    /// The delay log's end after the held runs.
    pub end: u64,
}

pub struct DelayStore {
    log: Arc<PartitionLog>,
    /// Whether `close` closes the log (a delay shard's log belongs to the broker).
    owns_log: bool,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// How late delayed records reach their topic (one observation per run, see `lateness`).
    lateness: Histogram,
    /// On a cluster: appends a destination's batches where its partition is led and waits for
    /// its in-sync replicas (else they are appended to this node's copy).
    deliver: std::sync::OnceLock<DeliverHook>,
    /// Added to log offsets to make the ids clients see (0 but in a delay shard).
    id_base: u64,
    /// A delay shard's store: whether this node still leads the shard in the epoch the store
    /// was opened for (its delivery stops as soon as it does not).
    leads: Option<LeadsHook>,
}

/// Whether a delay shard's store may still deliver.
pub type LeadsHook = Box<dyn Fn() -> bool + Send + Sync>;

/// How long after their due time records bound for a partition this node does not know are
/// kept trying on a cluster (its metadata may lag the node that took them), before they are
/// dropped as bound for a deleted topic.
const UNKNOWN_DESTINATION_GRACE_MS: i64 = 60_000;

/// Delivers a destination partition's batches; answers this node's log end after them, if
/// they went to this node's copy.
pub type DeliverHook =
    Box<dyn Fn(&str, u32, &[quiver_proto::Batch]) -> Result<Option<u64>, String> + Send + Sync>;

/// Buckets of the lateness histogram, in seconds: 1 ms to ~65 s.
fn lateness_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 17)
}

/// What the delivery thread shares with the store without keeping the broker alive.
#[derive(Debug, Default)]
struct Shared {
    index: Mutex<Index>,
    /// Woken when a new run is due earlier than everything before it, and on shutdown.
    wake: Condvar,
    stop: AtomicBool,
}

impl std::fmt::Debug for DelayStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayStore")
            .field("log", &self.log)
            .finish_non_exhaustive()
    }
}

/// The delay log's settings: small segments, so delivered prefixes are freed soon, and a dense
/// index, because delivery reads single runs at arbitrary offsets.
pub fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 << 20,
        retention_ms: None,
        retention_bytes: None,
        index_interval_bytes: 1024,
        max_batch_bytes: 256 << 20,
        ..LogConfig::default()
    }
}

impl DelayStore {
    /// Sets how deliveries reach a cluster's partitions (once).
    pub fn on_deliver(&self, hook: DeliverHook) {
        let _ = self.deliver.set(hook);
    }

    /// Opens the delay log in `dir`, rebuilds the index from it and settles the last delivery
    /// round against `topics`.
    pub fn open(dir: &Path, topics: &TopicStore) -> Result<DelayStore, DelayError> {
        let log = PartitionLog::open(dir, log_config(), crate::storage::partition::system_clock())?;
        let lateness = Histogram::new(lateness_buckets());
        DelayStore::build(Arc::new(log), true, lateness, Some(topics), None)
    }

    /// A store over a delay shard's log, which this node has just come to lead: a round its
    /// last leader left unfinished is delivered again (at least once: the destination may be
    /// led elsewhere, so it is not searched). `lateness` is shared by every store of the node;
    /// ids are offsets plus `id_base`; `leads` says whether the node still leads the shard.
    pub fn over(
        log: Arc<PartitionLog>,
        lateness: Histogram,
        (id_base, leads): (u64, LeadsHook),
    ) -> Result<DelayStore, DelayError> {
        DelayStore::build(log, false, lateness, None, Some((id_base, leads)))
    }

    /// A new histogram of lateness (seconds), to share between stores.
    pub fn lateness_histogram() -> Histogram {
        Histogram::new(lateness_buckets())
    }

    fn build(
        log: Arc<PartitionLog>,
        owns_log: bool,
        lateness: Histogram,
        settle_in: Option<&TopicStore>,
        shard: Option<(u64, LeadsHook)>,
    ) -> Result<DelayStore, DelayError> {
        let (id_base, leads) = match shard {
            Some((base, leads)) => (base, Some(leads)),
            None => (0, None),
        };
        let store = DelayStore {
            log,
            owns_log,
            shared: Arc::default(),
            thread: Mutex::new(None),
            lateness,
            deliver: std::sync::OnceLock::new(),
            id_base,
            leads,
        };
        let unsettled = store.replay()?;
        deliver::settle(&store, unsettled, settle_in)?;
        let ix = store.shared.index.lock();
        if ix.runs() > 0 {
            tracing::info!(
                pending = ix.pending_total(),
                runs = ix.runs(),
                "delayed records pending"
            );
        }
        drop(ix);
        Ok(store)
    }

    /// Rebuilds the index from the whole delay log; returns the last intent if its round did not
    /// finish, with the ids cancelled in its runs.
    fn replay(&self) -> Result<Option<Unsettled>, DelayError> {
        let mut ix = self.shared.index.lock();
        let mut last = None;
        let mut at = self.log.stats().log_start;
        let end = self.log.stats().log_end;
        while at < end {
            let read = self.log.read_raw(at, 1 << 20)?;
            if read.bytes.is_empty() {
                break;
            }
            for b in Batches::new(read.bytes) {
                let b = b?;
                at = b.header().next_offset();
                match records::entry(&b)? {
                    Entry::Held(info) => ix.insert(
                        b.base_offset(),
                        &info.topic,
                        (info.partition, info.due),
                        b.record_count(),
                        b.bytes().len() as u32,
                    ),
                    Entry::Control(Control::Cancel(id)) => {
                        ix.cancel(id);
                    }
                    Entry::Control(Control::Purge(topic)) => {
                        ix.remove_topic(&topic);
                    }
                    Entry::Control(Control::Intent(dests)) => {
                        let mut cancelled = Vec::new();
                        for d in &dests {
                            for base in &d.runs {
                                if let Some(t) = ix.remove(*base) {
                                    cancelled.extend(t.cancelled);
                                }
                            }
                        }
                        last = Some((dests, cancelled));
                    }
                    Entry::Control(Control::Undo { runs, cancelled }) => {
                        for base in runs {
                            self.reinsert(&mut ix, base)?;
                        }
                        for id in cancelled {
                            ix.cancel(id);
                        }
                        last = None;
                    }
                    Entry::Control(Control::Done) => last = None,
                }
            }
        }
        Ok(last)
    }

    /// Puts the run at `base` back in the index, reading it from the log. A run below the log
    /// start was delivered and its segment deleted since (an undo or intent naming it is older):
    /// nothing to put back.
    fn reinsert(&self, ix: &mut Index, base: u64) -> Result<(), DelayError> {
        let Some(run) = self.read_run_if_kept(base)? else {
            return Ok(());
        };
        if let Entry::Held(info) = records::entry(&run)? {
            ix.insert(
                base,
                &info.topic,
                (info.partition, info.due),
                run.record_count(),
                run.bytes().len() as u32,
            );
        }
        Ok(())
    }

    /// [`DelayStore::read_run`], or `None` when the run's segment has been deleted.
    fn read_run_if_kept(&self, base: u64) -> Result<Option<Batch>, DelayError> {
        if base < self.log.stats().log_start {
            return Ok(None);
        }
        self.read_run(base).map(Some)
    }

    /// Appends a control record, under the index lock: holds append their runs under it too, so
    /// the ids of one produce stay consecutive.
    fn append_control(&self, c: &Control) -> Result<(), DelayError> {
        let rec = records::control(c, crate::util::now_ms())?;
        let _ix = self.shared.index.lock();
        self.log.append(&rec, Durability::Leader)?;
        Ok(())
    }

    /// The held run starting at `base`.
    fn read_run(&self, base: u64) -> Result<Batch, DelayError> {
        // Raw: a shard's leader delivers what it holds before its followers have it.
        let read = self.log.read_raw(base, 1)?;
        match Batches::new(read.bytes).next() {
            Some(b) => {
                let b = b?;
                if b.base_offset() != base {
                    return Err(DelayError::Internal("a held run is not where its id says"));
                }
                Ok(b)
            }
            None => Err(DelayError::Internal(
                "a held run is missing from the delay log",
            )),
        }
    }

    /// Holds the records of `batch` that carry a due time (when it has the delayed flag), bound for
    /// `topic`/`partition`; returns the others for appending now. Records due at the same time in
    /// a row share one run (one batch of the delay log); all of them get consecutive ids.
    pub fn hold(
        &self,
        topic: &str,
        partition: u32,
        batch: Batch,
        acks: Durability,
    ) -> Result<Held, DelayError> {
        if batch.header().flags & batch::FLAG_DELAYED == 0 {
            return Ok(Held {
                immediate: Some(batch),
                count: 0,
                first_id: 0,
                end: self.log.stats().log_end,
            });
        }
        let now = crate::util::now_ms();
        let dues = records::due_times(&batch, now)?;
        let runs = runs_of(&dues);
        let mut encoded = Vec::with_capacity(runs.len());
        for (due, indexes) in &runs {
            let info = RunInfo {
                topic: topic.to_owned(),
                partition,
                due: *due,
            };
            encoded.push((records::held_run(&batch, indexes, &info)?, *due));
        }
        let (count, first, end) = self.append_runs(topic, partition, &encoded)?;
        if acks == Durability::All && count > 0 {
            self.log.sync_through(end)?;
        }
        let first_id = if count > 0 { first + self.id_base } else { 0 };
        let immediate = immediate_part(&batch, &dues)?;
        Ok(Held {
            immediate,
            count,
            first_id,
            end,
        })
    }

    /// The records of `batch` without a due time, as [`DelayStore::hold`] leaves them (for a
    /// batch whose delayed records another node holds).
    pub fn immediate_of(batch: &Batch) -> Result<Option<Batch>, DelayError> {
        if batch.header().flags & batch::FLAG_DELAYED == 0 {
            return Ok(Some(batch.clone()));
        }
        let dues = records::due_times(batch, crate::util::now_ms())?;
        immediate_part(batch, &dues)
    }

    /// Appends held runs and indexes them, under the index lock so their ids are consecutive.
    fn append_runs(
        &self,
        topic: &str,
        partition: u32,
        runs: &[(Batch, i64)],
    ) -> Result<(u32, u64, u64), DelayError> {
        let mut ix = self.shared.index.lock();
        let before = ix.next_due();
        let (mut count, mut first, mut end) = (0u32, None, 0);
        for (run, due) in runs {
            let info = self.log.append(run, Durability::Leader)?;
            let bytes = run.bytes().len() as u32;
            ix.insert(
                info.base_offset,
                topic,
                (partition, *due),
                run.record_count(),
                bytes,
            );
            first.get_or_insert(info.base_offset);
            count += run.record_count();
            end = info.log_end;
        }
        if ix.next_due() != before {
            self.shared.wake.notify_all();
        }
        Ok((count, first.unwrap_or(0), end))
    }

    /// The destination topic of the pending record `id` (for the ACL check of a cancel).
    pub fn pending_topic(&self, id: u64) -> Option<String> {
        let local = id.checked_sub(self.id_base)?;
        self.shared
            .index
            .lock()
            .pending_topic(local)
            .map(|t| t.to_string())
    }

    /// Cancels the pending record `id`; returns its destination topic.
    pub fn cancel(&self, id: u64) -> Result<String, DelayError> {
        self.cancel_with_end(id).map(|(topic, _)| topic)
    }

    /// [`DelayStore::cancel`], also answering the delay log's end after the cancel record.
    pub fn cancel_with_end(&self, id: u64) -> Result<(String, u64), DelayError> {
        let local = id
            .checked_sub(self.id_base)
            .ok_or(DelayError::UnknownId(id))?;
        let mut ix = self.shared.index.lock();
        let topic = ix.pending_topic(local).ok_or(DelayError::UnknownId(id))?;
        let rec = records::control(&Control::Cancel(local), crate::util::now_ms())?;
        let info = self.log.append(&rec, Durability::Leader)?;
        ix.cancel(local);
        drop(ix);
        // A cancel is as durable as the produce that held the record could have asked for.
        self.log.sync_through(info.log_end)?;
        Ok((topic.to_string(), info.log_end))
    }

    /// Drops the records held for a deleted topic (durably: a purge record), so they neither
    /// linger in the count nor reach a topic created again under the same name.
    pub fn purge_topic(&self, topic: &str) -> Result<u64, DelayError> {
        let mut ix = self.shared.index.lock();
        if ix.pending_for(topic) == 0 {
            return Ok(0);
        }
        let rec = records::control(&Control::Purge(topic.to_owned()), crate::util::now_ms())?;
        let info = self.log.append(&rec, Durability::Leader)?;
        let dropped = ix.remove_topic(topic);
        drop(ix);
        self.log.sync_through(info.log_end)?;
        tracing::info!(%topic, records = dropped, "delayed records of a deleted topic dropped");
        Ok(dropped)
    }

    /// Seconds between a run's due time and its append to the destination, one observation per
    /// run (records held together with one due time; a run is delivered whole).
    pub fn lateness(&self) -> &Histogram {
        &self.lateness
    }

    /// Records held for `topic`.
    pub fn pending_for(&self, topic: &str) -> u64 {
        self.shared.index.lock().pending_for(topic)
    }

    /// Records held for every topic.
    pub fn pending_total(&self) -> u64 {
        self.shared.index.lock().pending_total()
    }

    /// Starts the delivery thread, appending due records to `topics`. It holds neither the store
    /// nor the topics between rounds, so dropping the broker ends it; the supervisor stops it
    /// with [`DelayStore::stop`] at shutdown.
    pub fn start(self: &Arc<Self>, topics: Weak<TopicStore>) -> std::io::Result<()> {
        let (shared, store) = (self.shared.clone(), Arc::downgrade(self));
        let handle = std::thread::Builder::new()
            .name("quiver-delay".into())
            .spawn(move || deliver::run(&shared, &store, &topics))?;
        *self.thread.lock() = Some(handle);
        Ok(())
    }

    /// Tells the delivery thread to stop after its round, without waiting for it.
    pub fn halt(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _guard = self.shared.index.lock();
        self.shared.wake.notify_all();
    }

    /// Whether this store may deliver: always, but for a delay shard this node no longer leads.
    fn still_leads(&self) -> bool {
        self.leads.as_ref().is_none_or(|leads| leads())
    }

    /// Stops the delivery thread, waiting at most `wait` for its round to end; false if it
    /// did not in time (it stops after the round, on its own).
    pub fn stop_within(&self, wait: std::time::Duration) -> bool {
        self.halt();
        let deadline = std::time::Instant::now() + wait;
        loop {
            let finished = self.thread.lock().as_ref().is_none_or(|h| h.is_finished());
            if finished {
                self.stop();
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Stops the delivery thread and waits for its round to end (unless called from it: the
    /// broker may be dropped there).
    pub fn stop(&self) {
        self.halt();
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    /// Stops delivery and fsyncs the delay log (clean shutdown: nothing is appended after).
    pub fn close(&self) -> Result<(), DelayError> {
        self.stop();
        if self.owns_log {
            self.log.close()?;
        }
        Ok(())
    }
}

impl Drop for DelayStore {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Groups the delayed records into runs: consecutive records with the same due time.
fn runs_of(dues: &[Option<i64>]) -> Vec<(i64, Vec<usize>)> {
    let mut runs: Vec<(i64, Vec<usize>)> = Vec::new();
    let mut last = None;
    for (i, due) in dues.iter().enumerate() {
        match (due, runs.last_mut()) {
            (Some(d), Some((rd, idx))) if *rd == *d && last == Some(i.wrapping_sub(1)) => {
                idx.push(i)
            }
            (Some(d), _) => runs.push((*d, vec![i])),
            (None, _) => continue,
        }
        last = Some(i);
    }
    runs
}

/// The records without a due time, as a batch of their own (the whole batch when none is delayed).
fn immediate_part(batch: &Batch, dues: &[Option<i64>]) -> Result<Option<Batch>, DelayError> {
    if dues.iter().all(Option::is_some) {
        return Ok(None);
    }
    if dues.iter().all(Option::is_none) {
        return Ok(Some(batch.clone()));
    }
    let bytes = batch::rebuild(batch, &[], |i, _| dues.get(i) == Some(&None))?;
    Ok(match bytes {
        Some(b) => Some(Batch::parse_trusted(b)?),
        None => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_where_the_due_time_changes_or_a_record_is_not_delayed() {
        let dues = [Some(5), Some(5), None, Some(5), Some(7), Some(7)];
        assert_eq!(
            runs_of(&dues),
            vec![(5, vec![0, 1]), (5, vec![3]), (7, vec![4, 5])]
        );
        assert!(runs_of(&[None, None]).is_empty());
    }
}
