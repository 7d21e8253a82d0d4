//! Forwarding one edge partition: a reader sends its records to the core in offset order as fast
//! as the producer's window allows (waiting on the log's end watch when caught up), and an
//! acknowledger awaits each delivery in the same order and commits the position after it. So the
//! position never passes a record the core has not acknowledged with acks=all.

use std::sync::Arc;

use quiver::Delivery;
use quiver_broker::mirrors::{LivePartition, Position};
use quiver_broker::storage::{PartitionLog, StorageError, Topic};
use quiver_proto::Batches;
use tokio::sync::mpsc;

use crate::error::LinkError;
use crate::record::Route;
use crate::session::Session;

/// Edge batches sent and not yet acknowledged, per partition (the producer's window bounds the
/// bytes).
const WINDOW: usize = 1024;
/// Bytes read from the local log at a time.
const READ_BYTES: usize = 1 << 20;
/// The pause before reading again after a read found its offset gone.
const RETRY_READ: std::time::Duration = std::time::Duration::from_millis(50);
/// Acknowledged records between position commits (and whenever the pipeline runs dry).
const COMMIT_EVERY: u64 = 1000;

enum Pending {
    /// The records of one edge batch, sent in order; `next` follows the last.
    Batch {
        deliveries: Vec<Delivery>,
        next: u64,
        bytes: u64,
    },
    /// Retention removed `count` records before they were forwarded; go on at `to`.
    Dropped { to: u64, count: u64 },
}

/// Forwards partition `p` of `topic` until the session ends or the task is aborted (its topic was
/// deleted).
pub async fn partition(session: Arc<Session>, topic: Arc<Topic>, p: u32) -> Result<(), LinkError> {
    let log = topic
        .partition(p)
        .map_err(|e| LinkError::Local(e.to_string()))?
        .clone();
    let (route, position) = crate::resume::resume(&session, &topic, p, &log).await?;
    let live = session.status.partition(&topic.name, p);
    *live.target_topic.lock() = route.target_topic.clone();
    live.next
        .store(position.next, std::sync::atomic::Ordering::Relaxed);
    *live.error.lock() = None;
    let (tx, rx) = mpsc::channel(WINDOW);
    let reader = read(&session, &route, &log, position.next, tx);
    let acker = acknowledge(&session, &route, &live, position, rx);
    tokio::try_join!(reader, acker)?;
    Ok(())
}

async fn read(
    session: &Session,
    route: &Route,
    log: &Arc<PartitionLog>,
    mut next: u64,
    tx: mpsc::Sender<Pending>,
) -> Result<(), LinkError> {
    let mut end = log.subscribe_end();
    let closed = || LinkError::Local("the acknowledger stopped".into());
    loop {
        end.borrow_and_update();
        let stats = log.stats();
        if next < stats.log_start {
            let count = stats.log_start - next;
            tracing::warn!(mirror = %session.def.name, topic = %route.topic, partition = route.partition, count, "retention removed records before they were mirrored");
            next = stats.log_start;
            tx.send(Pending::Dropped { to: next, count })
                .await
                .map_err(|_| closed())?;
        }
        if next >= stats.log_end {
            if end.changed().await.is_err() {
                return Err(LinkError::Local("the partition's log closed".into()));
            }
            continue;
        }
        let l = log.clone();
        let read = match quiver_broker::offload::blocking(move || Ok(l.read(next, READ_BYTES)?))
            .await
        {
            Ok(r) => r,
            Err(quiver_broker::BrokerError::Storage(StorageError::OffsetOutOfRange { .. })) => {
                // Retention ran between the bounds and the read; a moment later the bounds say.
                tokio::time::sleep(RETRY_READ).await;
                continue;
            }
            Err(e) => return Err(LinkError::Local(e.to_string())),
        };
        for batch in Batches::new(read.bytes) {
            let batch =
                batch.map_err(|e| LinkError::Local(format!("corrupt batch at {next}: {e}")))?;
            let (mut deliveries, mut bytes) = (Vec::new(), 0);
            for rec in batch.records().filter(|r| r.offset >= next) {
                let record = route.record(batch.bytes(), &rec);
                deliveries.push(session.producer.send(record).await?);
                bytes += rec.value.len() as u64;
            }
            next = next.max(batch.header().next_offset());
            if !deliveries.is_empty() {
                let pending = Pending::Batch {
                    deliveries,
                    next,
                    bytes,
                };
                tx.send(pending).await.map_err(|_| closed())?;
            }
        }
    }
}

async fn acknowledge(
    session: &Session,
    route: &Route,
    live: &LivePartition,
    mut position: Position,
    mut rx: mpsc::Receiver<Pending>,
) -> Result<(), LinkError> {
    let store = session.broker.mirrors();
    let mut uncommitted = 0u64;
    while let Some(pending) = rx.recv().await {
        match pending {
            Pending::Batch {
                deliveries,
                next,
                bytes,
            } => {
                let records = deliveries.len() as u64;
                for delivery in deliveries {
                    if let Some(o) = delivery.wait().await?.offset {
                        position.scan_from = Some(o + 1);
                    }
                }
                position.next = next;
                live.acknowledged(next, records, bytes);
                uncommitted += records;
            }
            Pending::Dropped { to, count } => {
                position.next = to;
                position.dropped += count;
                live.acknowledged(to, 0, 0);
                uncommitted = COMMIT_EVERY;
            }
        }
        if uncommitted >= COMMIT_EVERY || rx.is_empty() {
            store.commit(&session.def.name, &route.topic, route.partition, &position)?;
            uncommitted = 0;
        }
    }
    Ok(())
}
