//! Where a session starts in an edge partition: the committed position, moved past the records
//! the core already has from an earlier session whose acknowledgement never arrived (the edge or
//! the core died in between). Those sit after the last acknowledged record on the core partition,
//! so a scan from there to the core's end collects the edge offsets carrying this partition's
//! source header; the position then moves over the longest run of edge records, from itself on,
//! that the core has. A gap stops it (a batch that failed while a later one got through is sent
//! again rather than skipped), and so does an offset the edge never had. The core forgets its
//! idempotence state when it restarts; this scan does that job across restarts of either side.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver::{Consumer, ConsumerConfig, SeekTo};
use quiver_broker::mirrors::Position;
use quiver_broker::storage::{PartitionLog, StorageError, Topic};
use quiver_broker::BrokerError;
use quiver_proto::mirror::SOURCE_HEADER;
use quiver_proto::Batches;

use crate::error::LinkError;
use crate::record::Route;
use crate::session::Session;

/// A fetch of the scan that brings nothing for this long means the core stopped answering.
const SCAN_STALL: Duration = Duration::from_secs(10);
/// Offsets the scan collects at most (a resumed session's unacknowledged records are a window's
/// worth; more can only come from someone else writing this edge's source header).
const SCAN_MAX: usize = 1 << 20;

/// The route and the position a session forwards edge partition `p` of `topic` with.
pub async fn resume(
    session: &Session,
    topic: &Topic,
    p: u32,
    log: &Arc<PartitionLog>,
) -> Result<(Route, Position), LinkError> {
    let (store, def) = (session.broker.mirrors(), &session.def);
    let created = topic.config.created_ms;
    let target_topic = def.target_topic(&topic.name);
    let count = session
        .target(&target_topic, topic.partitions().len() as u32)
        .await?;
    let stats = log.stats();
    let mut position = store
        .position(&def.name, &topic.name, p)?
        .filter(|at| at.belongs(def, created))
        .unwrap_or_else(|| Position::fresh(def, created, stats.log_start));
    let target = match position.target_partition {
        Some(t) if t < count => t,
        Some(t) => {
            tracing::warn!(mirror = %def.name, topic = %target_topic, partition = t, count, "the core topic no longer has the partition this edge partition went to; using another");
            position.scan_from = None;
            p % count
        }
        None => p % count,
    };
    position.target_partition = Some(target);
    let route = Route::new(
        def.source_id.clone(),
        topic.name.clone(),
        p,
        target_topic,
        target,
    );
    if position.next > stats.log_end {
        tracing::warn!(mirror = %def.name, topic = %topic.name, partition = p, next = position.next, log_end = stats.log_end, "the edge log ends before records already forwarded (lost in a power failure?); forwarding goes on from its end");
        position.next = stats.log_end;
    }
    let (core_start, core_end) = session.bounds(&route.target_topic, target).await?;
    match position.scan_from {
        None => {} // nothing of this partition was sent yet
        Some(from) if from > core_end => {
            tracing::warn!(mirror = %def.name, topic = %route.target_topic, partition = target, core_end, checkpoint = from, "the core partition ends before records it acknowledged to this mirror (was its log lost?); forwarding goes on from the edge position");
        }
        Some(from) => {
            let found = scan(
                session,
                &route,
                from.max(core_start),
                core_end,
                position.next,
            )
            .await?;
            skip_retained_away(&mut position, log.stats().log_start, &found);
            let (first, count) = (found.first().copied(), found.len());
            let next = contiguous(log, position.next, found).await?;
            tracing::info!(mirror = %def.name, topic = %route.topic, partition = p, next = position.next, scanned_from = from.max(core_start), core_end, found = count, first_found = ?first, resumes_at = next, "resume scan");
            if next > position.next {
                tracing::info!(mirror = %def.name, topic = %route.topic, partition = p, from = position.next, to = next, "the core already has records whose acknowledgement was lost; skipping them");
                position.next = next;
            }
        }
    }
    // Durable before anything is sent: a later scan must start no later than this session's
    // first record on the core.
    position.scan_from = Some(core_end);
    store.commit(&def.name, &route.topic, p, &position)?;
    flush(session).await?;
    Ok((route, position))
}

/// Makes the mirror's commits durable, off the async workers (an fsync).
pub async fn flush(session: &Session) -> Result<(), LinkError> {
    let broker = session.broker.clone();
    quiver_broker::offload::blocking(move || Ok(broker.mirrors().flush()?))
        .await
        .map_err(|e| LinkError::Local(format!("cannot commit the mirror position: {e}")))
}

/// The edge offsets at or after `next` of this partition's records in core offsets `from..end`.
async fn scan(
    session: &Session,
    route: &Route,
    from: u64,
    end: u64,
    next: u64,
) -> Result<BTreeSet<u64>, LinkError> {
    let mut found = BTreeSet::new();
    if from >= end {
        return Ok(found);
    }
    let config = ConsumerConfig {
        max_wait: Duration::from_millis(200),
        reset: None,
        ..ConsumerConfig::default()
    };
    let tp = route.target_partition;
    let mut consumer = Consumer::new(session.client.clone(), &route.target_topic, config);
    consumer.assign(&[tp], SeekTo::Offset(from));
    let prefix = route.source_prefix().as_bytes();
    let mut stalled = Instant::now();
    while consumer.position(tp).unwrap_or(from) < end && found.len() < SCAN_MAX {
        let records = consumer.poll(Duration::from_secs(1)).await?;
        if !records.is_empty() {
            stalled = Instant::now();
        } else if stalled.elapsed() > SCAN_STALL {
            return Err(LinkError::Target {
                topic: route.target_topic.clone(),
                reason: format!("reading partition {tp} from {from} to {end} stalled"),
            });
        }
        let offsets = records
            .iter()
            .filter(|r| r.record.offset < end)
            .filter_map(|r| {
                let v = r.record.header(SOURCE_HEADER)?.strip_prefix(prefix)?;
                std::str::from_utf8(v).ok()?.parse::<u64>().ok()
            });
        found.extend(offsets.filter(|o| *o >= next));
    }
    Ok(found)
}

/// Retention removed records after the position: the ones the core has were delivered, the rest
/// are counted as dropped, and the position moves to the log start (where `contiguous` can read).
fn skip_retained_away(position: &mut Position, log_start: u64, found: &BTreeSet<u64>) {
    if position.next >= log_start {
        return;
    }
    let delivered = found.range(position.next..log_start).count() as u64;
    position.dropped += (log_start - position.next).saturating_sub(delivered);
    position.next = log_start;
}

/// `next` moved over the edge records, in log order, whose offsets are in `found`.
async fn contiguous(
    log: &Arc<PartitionLog>,
    mut next: u64,
    mut found: BTreeSet<u64>,
) -> Result<u64, LinkError> {
    while !found.is_empty() {
        let (l, at) = (log.clone(), next);
        let read = match quiver_broker::offload::blocking(move || Ok(l.read(at, 1 << 20)?)).await {
            Ok(read) => read,
            // Retention ran meanwhile: the reader counts what it removed.
            Err(BrokerError::Storage(StorageError::OffsetOutOfRange { .. })) => return Ok(next),
            Err(e) => return Err(LinkError::Local(e.to_string())),
        };
        if read.bytes.is_empty() {
            break;
        }
        let before = next;
        for batch in Batches::new(read.bytes) {
            let batch = batch.map_err(|e| LinkError::Local(format!("corrupt batch: {e}")))?;
            let start = next;
            for r in batch.records().filter(|r| r.offset >= start) {
                if !found.remove(&r.offset) {
                    return Ok(next);
                }
                next = r.offset + 1;
            }
        }
        if next == before {
            break;
        }
    }
    Ok(next)
}
