//! The reverse direction: a pulling mirror reads the core's topics that match its pattern and
//! appends their records to this broker's topics of the same names (after the mirror's prefix),
//! through the produce service, so this broker's ingest plugins run on them. Exactly once: the
//! position (the next core offset) is committed after the local append is on disk, and a session
//! start scans the local partition from the last commit for the source header. One appender
//! writes whole batches to the partition in order, so the highest source offset found there is
//! what was appended without its commit (a crash in between).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quiver::{ConsumedRecord, Consumer, ConsumerConfig, SeekTo};
use quiver_broker::mirrors::Position;
use quiver_broker::services::catalog::LogOverrides;
use quiver_broker::storage::{Durability, PartitionLog, Topic};
use quiver_broker::{offload, Broker};
use quiver_proto::mirror::{MirrorStart, SOURCE_HEADER};
use quiver_proto::{BatchBuilder, Batches, RecordData};

use crate::error::LinkError;
use crate::record::Route;
use crate::session::{Session, Source};

/// Record bytes appended locally in one batch at most.
const BATCH_BYTES: usize = 512 << 10;

/// The core's topics the mirror covers, with their partitions' bounds (which the live status
/// keeps as the core's end, for the lag).
pub async fn core_sources(session: &Session) -> Result<Vec<Source>, LinkError> {
    let mut out = Vec::new();
    let listed = session.admin.list_topics().await?;
    for t in listed.iter().filter(|t| session.def.forwards(&t.name)) {
        let d = match session.admin.describe_topic(&t.name).await {
            Ok(d) => d,
            Err(e) if e.code() == Some(quiver::ErrorCode::UnknownTopic) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut bounds = vec![(0, 0); d.partitions.len()];
        for p in &d.partitions {
            if let Some(b) = bounds.get_mut(p.partition as usize) {
                *b = (p.log_start, p.log_end);
            }
            let live = session.status.partition(&d.name, p.partition);
            live.source_end.store(p.log_end, Ordering::Relaxed);
        }
        out.push(Source {
            partitions: bounds.len() as u32,
            name: d.name,
            created_ms: d.created_ms,
            local: None,
            bounds,
        });
    }
    Ok(out)
}

/// Pulls core partition `p` of `source` until the session ends or the task is aborted.
pub async fn partition(session: Arc<Session>, source: Source, p: u32) -> Result<(), LinkError> {
    let def = &session.def;
    let local_name = def.target_topic(&source.name);
    let local = ensure_local(&session.broker, &local_name, source.partitions).await?;
    let live = session.status.partition(&source.name, p);
    // The last session's append in progress, if any, ends before the scan in `resume`.
    drop(live.appending.lock().await);
    let (route, mut position) = resume(&session, &source, p, &local).await?;
    *live.target_topic.lock() = local_name.clone();
    live.next.store(position.next, Ordering::Relaxed);
    *live.error.lock() = None;
    let config = ConsumerConfig {
        max_wait: Duration::from_millis(500),
        reset: Some(SeekTo::Earliest),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(session.client.clone(), &source.name, config);
    consumer.assign(&[p], SeekTo::Offset(position.next));
    let store = session.broker.mirrors();
    loop {
        let records = consumer.poll(Duration::from_secs(1)).await?;
        for chunk in chunks(&records) {
            let (batch, bytes) = encode(&route, chunk)?;
            let appending = live.appending.clone().lock_owned().await;
            let appended = append(&session.broker, &route, batch, appending).await?;
            position.next = chunk[chunk.len() - 1].record.offset + 1;
            position.scan_from = Some(appended);
            store.commit(&def.name, &source.name, p, &position)?;
            live.acknowledged(position.next, chunk.len() as u64, bytes);
        }
    }
}

/// The route and position a session pulls core partition `p` with.
async fn resume(
    session: &Session,
    source: &Source,
    p: u32,
    local: &Topic,
) -> Result<(Route, Position), LinkError> {
    let (store, def) = (session.broker.mirrors(), &session.def);
    let (start, end) = source.bounds.get(p as usize).copied().unwrap_or((0, 0));
    let first = match def.from {
        MirrorStart::Earliest => start,
        MirrorStart::Latest => end,
    };
    let mut position = store
        .position(&def.name, &source.name, p)?
        .filter(|at| at.belongs(def, source.created_ms))
        .unwrap_or_else(|| Position::fresh(def, source.created_ms, first));
    let count = local.partitions().len() as u32;
    let target = position
        .target_partition
        .filter(|t| *t < count)
        .unwrap_or(p % count);
    let log = local
        .partition(target)
        .map_err(|e| LinkError::Local(e.to_string()))?
        .clone();
    let route = Route::new(
        def.to.clone(),
        source.name.clone(),
        p,
        local.name.clone(),
        target,
    );
    if let Some(from) = position
        .scan_from
        .filter(|_| position.target_partition == Some(target))
    {
        if let Some(last) = scan_local(&log, from, route.source_prefix()).await? {
            if last >= position.next {
                tracing::info!(mirror = %def.name, topic = %source.name, partition = p, from = position.next, to = last + 1, "records already appended here before a crash; skipping them");
                position.next = last + 1;
            }
        }
    }
    if position.next < start {
        tracing::warn!(mirror = %def.name, topic = %source.name, partition = p, count = start - position.next, "the core's retention removed records before they were pulled");
        position.dropped += start - position.next;
        position.next = start;
    }
    position.target_partition = Some(target);
    position.scan_from = Some(log.stats().log_end);
    store.commit(&def.name, &source.name, p, &position)?;
    crate::resume::flush(session).await?;
    Ok((route, position))
}

/// This broker's topic `name`, created with `partitions` when missing.
async fn ensure_local(
    broker: &Arc<Broker>,
    name: &str,
    partitions: u32,
) -> Result<Arc<Topic>, LinkError> {
    if let Ok(t) = broker.topics().get(name) {
        return Ok(t);
    }
    let (b, n) = (broker.clone(), name.to_owned());
    let created = offload::blocking(move || {
        match b
            .catalog()
            .create(&n, Some(partitions), LogOverrides::default())
        {
            Ok(t) => Ok(t),
            Err(_) if b.topics().get(&n).is_ok() => Ok(b.topics().get(&n)?),
            Err(e) => Err(e),
        }
    })
    .await;
    created.map_err(|e| LinkError::Target {
        topic: name.to_owned(),
        reason: format!("cannot create it here: {e}"),
    })
}

/// The highest source offset with `prefix` in the local partition from `from` on.
async fn scan_local(
    log: &Arc<PartitionLog>,
    from: u64,
    prefix: &str,
) -> Result<Option<u64>, LinkError> {
    let stats = log.stats();
    let mut at = from.max(stats.log_start);
    let mut last = None;
    if at > stats.log_end {
        // The local topic was deleted and created again: nothing of the old commit is there.
        return Ok(None);
    }
    loop {
        let (l, offset) = (log.clone(), at);
        let read = offload::blocking(move || Ok(l.read(offset, 1 << 20)?))
            .await
            .map_err(|e| LinkError::Local(e.to_string()))?;
        if read.bytes.is_empty() {
            return Ok(last);
        }
        for batch in Batches::new(read.bytes) {
            let batch = batch.map_err(|e| LinkError::Local(format!("corrupt batch: {e}")))?;
            for r in batch.records().filter(|r| r.offset >= at) {
                let source = r
                    .header(SOURCE_HEADER)
                    .and_then(|v| v.strip_prefix(prefix.as_bytes()));
                let offset = source.and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
                last = last.max(offset);
            }
            at = at.max(batch.header().next_offset());
        }
    }
}

/// Consecutive runs of records of at most about [`BATCH_BYTES`] each.
fn chunks(records: &[ConsumedRecord]) -> Vec<&[ConsumedRecord]> {
    let (mut out, mut start, mut bytes) = (Vec::new(), 0, 0);
    for (i, r) in records.iter().enumerate() {
        let size = r.record.value.len() + r.record.key.as_ref().map_or(0, |k| k.len());
        if i > start && bytes + size > BATCH_BYTES {
            out.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

/// One local batch of `records`, with the source header; and their value bytes.
fn encode(route: &Route, records: &[ConsumedRecord]) -> Result<(Bytes, u64), LinkError> {
    let mut builder = BatchBuilder::new();
    let mut bytes = 0;
    for r in records {
        let rec = &r.record;
        let headers = rec.headers.iter().map(|(n, v)| (n.as_str(), v.clone()));
        let headers = route.headers("core", headers, rec.offset);
        let headers: Vec<(&str, &[u8])> =
            headers.iter().map(|(n, v)| (n.as_str(), &v[..])).collect();
        let tags: Vec<&str> = rec.tags.iter().map(String::as_str).collect();
        builder
            .push(&RecordData {
                timestamp: rec.timestamp,
                key: rec.key.as_deref(),
                value: &rec.value,
                headers: &headers,
                tags: &tags,
            })
            .map_err(|e| LinkError::Local(format!("cannot encode a pulled record: {e}")))?;
        bytes += rec.value.len() as u64;
    }
    let batch = builder
        .finish()
        .map_err(|e| LinkError::Local(format!("cannot encode a pulled batch: {e}")))?;
    Ok((batch, bytes))
}

/// Appends a batch to the route's local partition and waits for it to be on disk; answers the
/// partition's end after it. `appending` is released when the append is done, even if this
/// session's task was aborted meanwhile.
async fn append(
    broker: &Arc<Broker>,
    route: &Route,
    batch: Bytes,
    appending: tokio::sync::OwnedMutexGuard<()>,
) -> Result<u64, LinkError> {
    let (b, topic, p) = (
        broker.clone(),
        route.target_topic.clone(),
        route.target_partition,
    );
    offload::blocking(move || {
        let _appending = appending;
        let produce = b.produce();
        let done = produce.append(&topic, Some(p), batch, Durability::All)?;
        produce.sync(&topic, done.partition, done.log_end)?;
        Ok(done.log_end)
    })
    .await
    .map_err(|e| LinkError::Local(format!("appending pulled records: {e}")))
}
