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
use crate::Broker;

/// Records one round delivers at most (a bound on its latency and memory, not on throughput:
/// the next round starts at once).
const ROUND_RECORDS: u64 = 20_000;
/// Longest the thread sleeps without looking again (stop, clock jumps).
const MAX_SLEEP: Duration = Duration::from_millis(500);
/// Pause after a failed round (a full disk), so it does not spin.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often delivered segments of the delay log are deleted.
const CLEANUP_EVERY: Duration = Duration::from_secs(1);

pub(super) fn run(shared: &Shared, broker: &Weak<Broker>) {
    let mut last_cleanup = Instant::now();
    loop {
        let taken = match wait_for_due(shared) {
            Some(t) => t,
            None => return,
        };
        let Some(b) = broker.upgrade() else { return };
        let store = b.delays();
        if !taken.is_empty() {
            if let Err(e) = deliver_round(&b, store, taken) {
                tracing::error!(error = %e, "delayed delivery failed; retrying");
                std::thread::sleep(RETRY_AFTER);
            }
        }
        if last_cleanup.elapsed() >= CLEANUP_EVERY {
            last_cleanup = Instant::now();
            if let Err(e) = cleanup(store) {
                tracing::warn!(error = %e, "cannot delete delivered delay-log segments");
            }
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
                let mut records = 0u64;
                return Some(ix.take_due(now, |run| {
                    let first = records == 0;
                    records += run.count as u64;
                    first || records <= ROUND_RECORDS
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
    batch: Option<Batch>,
}

fn deliver_round(b: &Broker, store: &DelayStore, taken: Vec<Taken>) -> Result<(), DelayError> {
    let now = crate::util::now_ms();
    let outs = write_intent(b.topics(), store, group(taken), now)?;
    let mut failed: Vec<Taken> = Vec::new();
    for o in outs {
        let Some(batch) = &o.batch else { continue };
        let appended = b
            .topics()
            .partition(&o.topic, o.partition)
            .and_then(|log| log.append(batch, Durability::Leader));
        if let Err(e) = appended {
            tracing::warn!(topic = %o.topic, partition = o.partition, error = %e, "cannot deliver delayed records");
            failed.extend(o.runs);
        }
    }
    if failed.is_empty() {
        store
            .log
            .append(&records::control(&Control::Done, now)?, Durability::Leader)?;
        return Ok(());
    }
    undo(store, failed, now)
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
                batch: None,
            }),
        }
    }
    outs
}

/// Builds each destination's batch and writes the round's intent; returns the destinations.
fn write_intent(
    topics: &TopicStore,
    store: &DelayStore,
    mut outs: Vec<Out>,
    now: i64,
) -> Result<Vec<Out>, DelayError> {
    let mut dests = Vec::with_capacity(outs.len());
    for o in &mut outs {
        dests.push(prepare(topics, store, o)?);
    }
    store.log.append(
        &records::control(&Control::Intent(dests), now)?,
        Durability::Leader,
    )?;
    Ok(outs)
}

/// Builds the batch of one destination and its intent entry. A run whose topic is gone is dropped
/// (no batch, logged); its intent entry then marks it delivered.
fn prepare(
    topics: &TopicStore,
    store: &DelayStore,
    o: &mut Out,
) -> Result<Destination, DelayError> {
    let mut dest = Destination {
        topic: o.topic.to_string(),
        partition: o.partition,
        end: 0,
        runs: o.runs.iter().map(|t| t.base).collect(),
    };
    let log = match topics.partition(&o.topic, o.partition) {
        Ok(log) => log,
        Err(StorageError::UnknownTopic(_) | StorageError::UnknownPartition { .. }) => {
            let records: u32 = o.runs.iter().map(|t| t.run.count).sum();
            tracing::warn!(topic = %o.topic, partition = o.partition, records, "delayed records dropped: their destination no longer exists");
            return Ok(dest);
        }
        Err(e) => return Err(e.into()),
    };
    let mut out = BatchBuilder::new();
    for t in &o.runs {
        records::deliver_into(&mut out, &store.read_run(t.base)?, &t.cancelled)?;
    }
    dest.end = log.stats().log_end;
    if !out.is_empty() {
        o.batch = Some(Batch::parse_trusted(out.finish()?)?);
    }
    Ok(dest)
}

/// Puts the runs of a failed round back, durably first (an undo record), then in the index.
fn undo(store: &DelayStore, failed: Vec<Taken>, now: i64) -> Result<(), DelayError> {
    let control = Control::Undo {
        runs: failed.iter().map(|t| t.base).collect(),
        cancelled: failed.iter().flat_map(|t| t.cancelled.clone()).collect(),
    };
    store
        .log
        .append(&records::control(&control, now)?, Durability::Leader)?;
    let mut ix = store.shared.index.lock();
    for t in failed {
        ix.restore(t);
    }
    Err(DelayError::Internal(
        "some destinations refused delayed records",
    ))
}

/// Deletes delay-log segments below the lowest pending run.
fn cleanup(store: &DelayStore) -> Result<(), DelayError> {
    let end = store.log.stats().log_end;
    let lowest = store.shared.index.lock().lowest().unwrap_or(end);
    store.log.delete_before(lowest)?;
    Ok(())
}

/// On start: finds out which runs of an unfinished round reached their destination (their ids
/// are in the partition at or after the end the intent noted) and makes the others pending again.
pub(super) fn settle(
    store: &DelayStore,
    unsettled: Option<super::Unsettled>,
    topics: &TopicStore,
) -> Result<(), DelayError> {
    let Some((dests, cancelled)) = unsettled else {
        return Ok(());
    };
    let mut ix = store.shared.index.lock();
    let mut again = Vec::new();
    for d in dests {
        let Ok(log) = topics.partition(&d.topic, d.partition) else {
            continue;
        };
        let seen = delivered_ids(log.as_ref(), d.end)?;
        for base in d.runs {
            let run = store.read_run(base)?;
            let ids = base..base + run.record_count() as u64;
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
    store.log.append(
        &records::control(&settled, crate::util::now_ms())?,
        Durability::Leader,
    )?;
    Ok(())
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
                let outs = write_intent(&topics, &store, group(taken), 0).unwrap();
                if appended {
                    let batch = outs[0].batch.as_ref().unwrap();
                    topics
                        .partition("t", 0)
                        .unwrap()
                        .append(batch, Durability::Leader)
                        .unwrap();
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
