//! The delivery thread of the delay store: waits for the earliest due time, takes the runs due,
//! writes an intent, appends them to their destination partitions (runs bound for one partition
//! go out as one batch, in due order), then marks the round done. And `settle`, which on start
//! finds out how far an unfinished round got.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use quiver_proto::batch::{Batch, BatchBuilder, Batches};

use super::index::Taken;
use super::records::{self, Control, Destination};
use super::{DelayError, DelayStore, Shared};
use crate::storage::{Durability, PartitionLog, StorageError, TopicStore};

/// Records one round delivers at most (a bound on its latency, not on throughput: the next round
/// starts at once).
const ROUND_RECORDS: u64 = 20_000;
/// Bytes of held runs one round reads at most (a bound on its memory).
const ROUND_BYTES: u64 = 16 << 20;
/// Longest the thread sleeps without looking again (stop, clock jumps).
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// Pause after a failed round (a full disk), so it does not spin.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often delivered segments of the delay log are deleted.
const CLEANUP_EVERY: Duration = Duration::from_secs(1);

pub(super) fn run(shared: &Shared, store: &Weak<DelayStore>, topics: &Weak<TopicStore>) {
    let mut last_cleanup = Instant::now();
    // Destination partitions appended to since the last cleanup: fsync'd before the delay-log
    // segments holding what was delivered to them are deleted.
    let mut touched: Vec<(Arc<str>, u32, u64)> = Vec::new();
    while let Some(taken) = wait_for_due(shared) {
        let failed = {
            // Held only for the round: a dropped broker is not kept alive by a sleeping thread.
            let (Some(store), Some(topics)) = (store.upgrade(), topics.upgrade()) else {
                return;
            };
            if !store.still_leads() {
                // A delay shard that moved: its new leader delivers what it held.
                return;
            }
            let failed = !taken.is_empty()
                && deliver_round(&topics, &store, taken, &mut touched)
                    .inspect_err(
                        |e| tracing::error!(error = %e, "delayed delivery failed; retrying"),
                    )
                    .is_err();
            if last_cleanup.elapsed() >= CLEANUP_EVERY {
                last_cleanup = Instant::now();
                if let Err(e) = cleanup(&topics, &store, &mut touched) {
                    tracing::warn!(error = %e, "cannot delete delivered delay-log segments");
                }
            }
            failed
        };
        if failed {
            std::thread::sleep(RETRY_AFTER);
        }
    }
}

/// Sleeps until runs are due and takes them (up to a round's worth); `None` on stop.
fn wait_for_due(shared: &Shared) -> Option<Vec<Taken>> {
    let mut ix = shared.index.lock();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return None;
        }
        let now = crate::util::now_ms();
        match ix.next_due() {
            Some(due) if due <= now => {
                let (mut records, mut bytes) = (0u64, 0u64);
                return Some(ix.take_due(now, |run| {
                    let first = records == 0;
                    records += run.count as u64;
                    bytes += run.bytes as u64;
                    first || (records <= ROUND_RECORDS && bytes <= ROUND_BYTES)
                }));
            }
            next => {
                let wait = next.map_or(MAX_SLEEP, |due| {
                    Duration::from_millis((due - now).max(1) as u64).min(MAX_SLEEP)
                });
                if shared.wake.wait_for(&mut ix, wait).timed_out() {
                    // Periodic wake-up: also lets the caller run its cleanup.
                    return Some(Vec::new());
                }
            }
        }
    }
}

/// One destination partition of a round.
struct Out {
    topic: Arc<str>,
    partition: u32,
    runs: Vec<Taken>,
    /// The delivered records, in batches the destination accepts (a run is never split).
    batches: Vec<Batch>,
}

fn deliver_round(
    topics: &TopicStore,
    store: &DelayStore,
    taken: Vec<Taken>,
    touched: &mut Vec<(Arc<str>, u32, u64)>,
) -> Result<(), DelayError> {
    let outs = match write_intent(topics, store, group(taken)) {
        Ok(outs) => outs,
        Err((e, outs)) => {
            // Nothing was appended anywhere: the runs are simply pending again.
            let mut ix = store.shared.index.lock();
            for t in outs.into_iter().flat_map(|o| o.runs) {
                ix.restore(t);
            }
            return Err(e);
        }
    };
    let mut failed: Vec<Taken> = Vec::new();
    for o in outs {
        if !store.still_leads() {
            // The shard's new leader has (or will have) the intent: it delivers the rest.
            return Err(DelayError::Internal(
                "the delay shard moved in the middle of a round",
            ));
        }
        match append_out(topics, store, &o) {
            Ok(Some(end)) => {
                observe_lateness(store, &o.runs);
                touched.push((o.topic.clone(), o.partition, end))
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(topic = %o.topic, partition = o.partition, error = %e, "cannot deliver delayed records");
                failed.extend(o.runs);
            }
        }
    }
    if failed.is_empty() {
        return store.append_control(&Control::Done);
    }
    undo(store, failed)
}

/// How late each run reached its topic (early is not possible: a run is taken once due).
fn observe_lateness(store: &DelayStore, runs: &[Taken]) {
    let now = crate::util::now_ms();
    for t in runs {
        store
            .lateness()
            .observe((now - t.run.due).max(0) as f64 / 1000.0);
    }
}

/// Appends one destination's batches; its log end after them (`None`: nothing appended to
/// this node's copy).
fn append_out(topics: &TopicStore, store: &DelayStore, o: &Out) -> Result<Option<u64>, DelayError> {
    if let Some(deliver) = store.deliver.get() {
        return deliver(&o.topic, o.partition, &o.batches).map_err(DelayError::Delivery);
    }
    let mut end = None;
    for batch in &o.batches {
        let log = topics.partition(&o.topic, o.partition)?;
        end = Some(log.append(batch, Durability::Leader)?.log_end);
    }
    Ok(end)
}

/// Groups a round's runs by destination partition, keeping due order within each.
fn group(taken: Vec<Taken>) -> Vec<Out> {
    let mut outs: Vec<Out> = Vec::new();
    for t in taken {
        let partition = t.run.partition;
        match outs
            .iter_mut()
            .find(|o| o.topic == t.topic && o.partition == partition)
        {
            Some(o) => o.runs.push(t),
            None => outs.push(Out {
                topic: t.topic.clone(),
                partition,
                runs: vec![t],
                batches: Vec::new(),
            }),
        }
    }
    outs
}

/// Builds each destination's batches and writes the round's intent; on failure the runs come
/// back with the error, nothing having been appended.
fn write_intent(
    topics: &TopicStore,
    store: &DelayStore,
    mut outs: Vec<Out>,
) -> Result<Vec<Out>, (DelayError, Vec<Out>)> {
    let mut dests = Vec::with_capacity(outs.len());
    let mut later = Vec::new();
    for (i, o) in outs.iter_mut().enumerate() {
        match prepare(topics, store, o) {
            Ok(Some(d)) => dests.push(d),
            Ok(None) => later.push(i),
            Err(e) => return Err((e, outs)),
        }
    }
    // Destinations not known here yet wait for a later round.
    let mut unknown = None;
    for i in later.into_iter().rev() {
        let o = outs.remove(i);
        unknown = Some(format!("{}/{}", o.topic, o.partition));
        let mut ix = store.shared.index.lock();
        for t in o.runs {
            ix.restore(t);
        }
    }
    if let (true, Some(dest)) = (outs.is_empty(), unknown) {
        let why = format!("bound for {dest}, which this node does not know yet");
        return Err((DelayError::Delivery(why), outs));
    }
    match store.append_control(&Control::Intent(dests)) {
        Ok(()) => Ok(outs),
        Err(e) => Err((e, outs)),
    }
}

/// Builds the batches of one destination and its intent entry. A run whose topic is gone is
/// dropped (no batch, logged); its intent entry, with end `u64::MAX`, marks it so. On a
/// cluster a destination this node does not know is first taken for one its metadata has not
/// reached yet: `None` (try later) until a grace time past the runs' due time.
fn prepare(
    topics: &TopicStore,
    store: &DelayStore,
    o: &mut Out,
) -> Result<Option<Destination>, DelayError> {
    let mut dest = Destination {
        topic: o.topic.to_string(),
        partition: o.partition,
        end: u64::MAX,
        runs: o.runs.iter().map(|t| t.base).collect(),
    };
    let log = match topics.partition(&o.topic, o.partition) {
        Ok(log) => log,
        Err(StorageError::UnknownTopic(_) | StorageError::UnknownPartition { .. }) => {
            let due = o.runs.iter().map(|t| t.run.due).min().unwrap_or(0);
            let waited = crate::util::now_ms() - due;
            if store.leads.is_some() && waited < super::UNKNOWN_DESTINATION_GRACE_MS {
                return Ok(None);
            }
            let records: u32 = o.runs.iter().map(|t| t.run.count).sum();
            tracing::warn!(topic = %o.topic, partition = o.partition, records, "delayed records dropped: their destination no longer exists");
            return Ok(Some(dest));
        }
        Err(e) => return Err(e.into()),
    };
    let max = log.config().max_batch_bytes as usize;
    let mut out = BatchBuilder::new();
    for t in &o.runs {
        let run = store.read_run(t.base)?;
        // Runs fit the topic's limit when held; a batch of several is cut before it would not.
        if !out.is_empty() && out.encoded_len() + run.bytes().len() > max {
            let full = std::mem::take(&mut out);
            o.batches.push(Batch::parse_trusted(full.finish()?)?);
        }
        records::deliver_into(&mut out, &run, &t.cancelled, store.id_base)?;
    }
    dest.end = log.stats().log_end;
    if !out.is_empty() {
        o.batches.push(Batch::parse_trusted(out.finish()?)?);
    }
    Ok(Some(dest))
}

/// Puts the runs of a failed round back, durably first (an undo record), then in the index. If the
/// undo cannot be written they are put back all the same: on restart the intent without a `done`
/// is settled against the destinations, which finds them missing.
fn undo(store: &DelayStore, failed: Vec<Taken>) -> Result<(), DelayError> {
    let control = Control::Undo {
        runs: failed.iter().map(|t| t.base).collect(),
        cancelled: failed.iter().flat_map(|t| t.cancelled.clone()).collect(),
    };
    let written = store.append_control(&control);
    let mut ix = store.shared.index.lock();
    for t in failed {
        ix.restore(t);
    }
    written?;
    Err(DelayError::Internal(
        "some destinations refused delayed records",
    ))
}

/// Makes what was delivered durable in its destinations, then deletes delay-log segments below
/// the lowest pending run.
fn cleanup(
    topics: &TopicStore,
    store: &DelayStore,
    touched: &mut Vec<(Arc<str>, u32, u64)>,
) -> Result<(), DelayError> {
    let end = store.log.stats().log_end;
    let lowest = store.shared.index.lock().lowest().unwrap_or(end);
    for (topic, partition, end) in touched.drain(..) {
        match topics.partition(&topic, partition) {
            Ok(log) => log.sync_through(end)?,
            // Deleted since: nothing left to make durable.
            Err(StorageError::UnknownTopic(_) | StorageError::UnknownPartition { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    store.log.delete_before(lowest)?;
    Ok(())
}

/// On start: finds out which runs of an unfinished round reached their destination (their ids
/// are in the partition at or after the end the intent noted) and makes the others pending again.
/// Without `topics` (a delay shard's new leader) every run of the round is pending again.
pub(super) fn settle(
    store: &DelayStore,
    unsettled: Option<super::Unsettled>,
    topics: Option<&TopicStore>,
) -> Result<(), DelayError> {
    let Some((dests, cancelled)) = unsettled else {
        return Ok(());
    };
    let mut ix = store.shared.index.lock();
    let mut again = Vec::new();
    for d in dests {
        // Dropped: its topic was gone.
        if d.end == u64::MAX {
            continue;
        }
        let seen = match topics.map(|t| t.partition(&d.topic, d.partition)) {
            Some(Ok(log)) => delivered_ids(log.as_ref(), d.end)?,
            // Its topic is gone now: nothing to deliver.
            Some(Err(_)) => continue,
            None => HashSet::new(),
        };
        for base in d.runs {
            let Some(run) = store.read_run_if_kept(base)? else {
                continue;
            };
            let first = base + store.id_base;
            let ids = first..first + run.record_count() as u64;
            if !ids.clone().any(|id| seen.contains(&id)) {
                store.reinsert(&mut ix, base)?;
                again.push(base);
            }
        }
    }
    for id in &cancelled {
        ix.cancel(*id);
    }
    drop(ix);
    // Written down, so the next start does not take the intent's word for these runs.
    let settled = if again.is_empty() {
        Control::Done
    } else {
        tracing::info!(
            runs = again.len(),
            "delayed records of an interrupted delivery are pending again"
        );
        Control::Undo {
            runs: again,
            cancelled,
        }
    };
    store.append_control(&settled)
}

/// The delay ids of delivered records in `log` from offset `from` on.
fn delivered_ids(log: &PartitionLog, from: u64) -> Result<HashSet<u64>, DelayError> {
    let mut seen = HashSet::new();
    let stats = log.stats();
    let mut at = from.max(stats.log_start);
    while at < stats.log_end {
        let read = log.read(at, 1 << 20)?;
        if read.bytes.is_empty() {
            break;
        }
        for b in Batches::new(read.bytes) {
            let b = b?;
            at = b.header().next_offset();
            if records::delivered_id(&b).is_none() {
                continue;
            }
            seen.extend(b.records().filter_map(|r| {
                std::str::from_utf8(r.header(records::ID_HEADER)?)
                    .ok()?
                    .parse::<u64>()
                    .ok()
            }));
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::MetaStore;
    use crate::storage::TopicConfig;
    use quiver_proto::batch::{RecordData, DELAY_MS_HEADER};

    fn open(dir: &std::path::Path) -> (TopicStore, DelayStore) {
        let meta = MetaStore::open(&dir.join("meta")).unwrap();
        let topics = TopicStore::open(dir, meta).unwrap();
        let store = DelayStore::open(&dir.join("delay"), &topics).unwrap();
        (topics, store)
    }

    fn hold_three(store: &DelayStore) {
        let mut b = BatchBuilder::new();
        for v in ["a", "b", "c"] {
            b.push(&RecordData {
                timestamp: 1,
                key: None,
                value: v.as_bytes(),
                headers: &[(DELAY_MS_HEADER, b"0")],
                tags: &[],
            })
            .unwrap();
        }
        let batch = Batch::parse(b.finish().unwrap()).unwrap();
        let held = store.hold("t", 0, batch, Durability::Leader).unwrap();
        assert_eq!(held.count, 3);
    }

    #[test]
    fn a_purge_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (_topics, store) = open(dir.path());
            hold_three(&store);
            assert_eq!(store.purge_topic("t").unwrap(), 3);
            assert_eq!(store.purge_topic("t").unwrap(), 0);
        }
        let (_topics, store) = open(dir.path());
        assert_eq!(store.pending_total(), 0);
        assert!(store.cancel(0).is_err());
    }

    /// A delay shard's store on a cluster node whose metadata lags: records bound for a
    /// partition it does not know yet stay pending (not dropped), and are delivered, with the
    /// ids their producer was given, once the topic is there.
    #[test]
    fn a_shard_waits_for_a_destination_it_does_not_know_yet() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(&dir.path().join("meta")).unwrap();
        let topics = TopicStore::open(dir.path(), meta).unwrap();
        let clock = crate::storage::partition::system_clock();
        let log = PartitionLog::open(&dir.path().join("shard"), super::super::log_config(), clock);
        let base = 7 << 48;
        let leads: super::super::LeadsHook = Box::new(|| true);
        let lateness = DelayStore::lateness_histogram();
        let store = DelayStore::over(Arc::new(log.unwrap()), lateness, (base, leads)).unwrap();
        hold_three(&store);
        let round = |store: &DelayStore| {
            let taken = store.shared.index.lock().take_due(i64::MAX, |_| true);
            deliver_round(&topics, store, taken, &mut Vec::new())
        };
        assert!(round(&store).is_err(), "not known yet");
        assert_eq!(store.pending_total(), 3);
        topics.create_topic("t", TopicConfig::default()).unwrap();
        round(&store).unwrap();
        assert_eq!(store.pending_total(), 0);
        let log = topics.partition("t", 0).unwrap();
        let ids = delivered_ids(&log, 0).unwrap();
        assert_eq!(ids, (base..base + 3).collect());
    }

    /// A round cut short after its intent, with the destination append done or not: a restart
    /// delivers what is missing and nothing twice.
    #[test]
    fn an_interrupted_round_is_settled_against_the_destination() {
        for appended in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            {
                let (topics, store) = open(dir.path());
                topics.create_topic("t", TopicConfig::default()).unwrap();
                hold_three(&store);
                store.cancel(1).unwrap();
                let taken = store.shared.index.lock().take_due(i64::MAX, |_| true);
                let outs = write_intent(&topics, &store, group(taken))
                    .map_err(|(e, _)| e)
                    .unwrap();
                if appended {
                    append_out(&topics, &store, &outs[0]).unwrap();
                }
                // Dropped here without a `Done`: as if killed.
            }
            let (topics, store) = open(dir.path());
            let log_end = topics.partition("t", 0).unwrap().stats().log_end;
            if appended {
                assert_eq!(store.pending_total(), 0, "delivered before the crash");
                assert_eq!(log_end, 2);
            } else {
                assert_eq!(store.pending_total(), 2, "pending again, the cancel kept");
                assert_eq!(log_end, 0);
                assert!(store.cancel(1).is_err());
            }
            drop((topics, store));
            // A second restart finds the round settled (a `Done` was written).
            let (_, store) = open(dir.path());
            assert_eq!(store.pending_total(), if appended { 0 } else { 2 });
        }
    }
}
