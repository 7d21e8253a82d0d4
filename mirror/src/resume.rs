//! Where a session starts in an edge partition: the committed position, moved past any record the
//! core already has from an earlier session whose acknowledgement never arrived (the edge or the
//! core died in between). Those records sit after the last acknowledged one on the core
//! partition, so a scan from there to the core's end, for this partition's source header, finds
//! them. The core's idempotence state does not survive its restart; this scan does the same job
//! across restarts of either side.

use std::time::Duration;

use quiver::{Consumer, ConsumerConfig, SeekTo};
use quiver_broker::mirrors::Position;
use quiver_broker::storage::PartitionLog;
use quiver_proto::mirror::{MirrorStart, SOURCE_HEADER};

use crate::error::LinkError;
use crate::link::Session;
use crate::record::Route;

/// A fetch of the scan that brings nothing for this long means the core stopped answering.
const SCAN_STALL: Duration = Duration::from_secs(10);

pub async fn resume(
    session: &Session,
    route: &Route,
    log: &PartitionLog,
    topic_created_ms: i64,
) -> Result<Position, LinkError> {
    let store = session.broker.mirrors();
    let name = &session.def.name;
    let (core_start, core_end) = session
        .bounds(&route.target_topic, route.target_partition)
        .await?;
    let Some(mut position) = store.position(name, &route.topic, route.partition)? else {
        // First contact: nothing of this partition was sent yet, so the core's end is where a
        // later session's scan starts. Made durable before the first record goes out.
        let position = Position {
            next: first_offset(session, log, topic_created_ms),
            scan_from: Some(core_end),
            dropped: 0,
        };
        store.commit(name, &route.topic, route.partition, &position)?;
        store.flush()?;
        return Ok(position);
    };
    let from = position.scan_from.unwrap_or(core_start).max(core_start);
    if from > core_end {
        tracing::warn!(mirror = %name, topic = %route.target_topic, partition = route.target_partition, core_end, checkpoint = from, "the core partition ends before records it acknowledged to this mirror (was its log lost?); forwarding goes on from the edge position");
    } else if let Some(last) = scan(session, route, from, core_end).await? {
        if last >= position.next {
            tracing::info!(mirror = %name, topic = %route.topic, partition = route.partition, from = position.next, to = last + 1, "the core already has records whose acknowledgement was lost; skipping them");
            position.next = last + 1;
        }
    }
    position.scan_from = Some(core_end);
    store.commit(name, &route.topic, route.partition, &position)?;
    Ok(position)
}

/// The first edge offset a mirror forwards in a partition it has never seen.
fn first_offset(session: &Session, log: &PartitionLog, topic_created_ms: i64) -> u64 {
    let stats = log.stats();
    let existed = topic_created_ms <= session.def.created_ms;
    match session.def.from {
        MirrorStart::Latest if existed => stats.log_end,
        _ => stats.log_start,
    }
}

/// The highest edge offset of this partition's records in core offsets `from..end`.
async fn scan(
    session: &Session,
    route: &Route,
    from: u64,
    end: u64,
) -> Result<Option<u64>, LinkError> {
    if from >= end {
        return Ok(None);
    }
    let config = ConsumerConfig {
        max_wait: Duration::from_millis(200),
        reset: None,
        ..ConsumerConfig::default()
    };
    let tp = route.target_partition;
    let mut consumer = Consumer::new(session.client.clone(), &route.target_topic, config);
    consumer.assign(&[tp], SeekTo::Offset(from));
    let prefix = route.source_prefix();
    let mut last = None;
    let mut stalled = std::time::Instant::now();
    while consumer.position(tp).unwrap_or(from) < end {
        let records = consumer.poll(Duration::from_secs(1)).await?;
        if !records.is_empty() {
            stalled = std::time::Instant::now();
        } else if stalled.elapsed() > SCAN_STALL {
            return Err(LinkError::Target {
                topic: route.target_topic.clone(),
                reason: format!("reading partition {tp} from {from} to {end} stalled"),
            });
        }
        for r in records.iter().filter(|r| r.record.offset < end) {
            let offset = r
                .record
                .header(SOURCE_HEADER)
                .and_then(|v| v.strip_prefix(prefix.as_bytes()))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
            last = last.max(offset);
        }
    }
    Ok(last)
}
