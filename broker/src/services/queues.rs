//! The queue-mode service (share groups): leases records to consumers with a long-poll, and acks,
//! nacks or releases them. Values a peer sends are clamped to sane bounds here. The share
//! partitions' state lives in `groups/queues.rs` and `groups/share.rs`; records out of deliveries
//! go to the dead-letter topic.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quiver_proto::groups::{LeasedPart, OffsetRange, QueueRequest, QueueResponse};

use super::dead_letter::DeadLetters;
use crate::error::BrokerError;
use crate::groups::queues::Host;
use crate::groups::{validate_group, Groups, PollParams, Polled, Settle};
use crate::offload;
use crate::replication::Replication;
use crate::storage::{StorageError, TopicStore};

/// Most records one queue poll may lease.
const MAX_POLL_RECORDS: u32 = 10_000;
const MAX_POLL_WAIT: Duration = Duration::from_secs(60);
const MIN_VISIBILITY: Duration = Duration::from_millis(100);
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
const MAX_DELIVERIES: u32 = 1000;
/// Most ranges one ack, nack or release may name (each costs a scan of the records in flight).
const MAX_SETTLE_RANGES: usize = 10_000;
/// Longest a waiting queue poll goes without looking at its share partitions again (appends,
/// give-backs and due times wake it earlier).
const QUEUE_RECHECK: Duration = Duration::from_secs(1);

/// Who a poll leased records to: (group, topic, consumer).
pub type Lessee = (String, String, String);

#[derive(Debug)]
pub struct QueueService {
    topics: Arc<TopicStore>,
    groups: Arc<Groups>,
    dead_letters: DeadLetters,
    /// On a cluster, a node serves queue consumers the partitions it leads.
    replication: Arc<Replication>,
    /// Payload budget of one poll's answer.
    max_bytes: usize,
}

impl QueueService {
    pub fn new(
        topics: Arc<TopicStore>,
        groups: Arc<Groups>,
        dead_letters: DeadLetters,
        replication: Arc<Replication>,
        max_frame: usize,
    ) -> QueueService {
        QueueService {
            topics,
            groups,
            dead_letters,
            replication,
            max_bytes: max_frame / 2,
        }
    }

    /// Answers one queue request (the answer's payload holds the leased records' batches).
    pub async fn handle(
        self: &Arc<Self>,
        req: QueueRequest,
    ) -> Result<(QueueResponse, Bytes), BrokerError> {
        let (group, topic, consumer, ranges, how) = match req {
            QueueRequest::Poll {
                group,
                topic,
                consumer_id,
                max_records,
                max_wait_ms,
                visibility_timeout_ms,
                max_deliveries,
            } => {
                let visibility = Duration::from_millis(visibility_timeout_ms as u64)
                    .clamp(MIN_VISIBILITY, MAX_VISIBILITY);
                let params = PollParams {
                    group,
                    topic,
                    consumer: Arc::from(consumer_id),
                    max_records: max_records.clamp(1, MAX_POLL_RECORDS) as usize,
                    visibility,
                    max_deliveries: max_deliveries.clamp(1, MAX_DELIVERIES),
                    max_bytes: self.max_bytes,
                };
                let wait = Duration::from_millis(max_wait_ms as u64).min(MAX_POLL_WAIT);
                let polled = self.poll(params, wait).await?;
                return Ok(leased(polled, visibility));
            }
            QueueRequest::Ack {
                group,
                topic,
                consumer_id,
                records,
            } => (group, topic, consumer_id, records, Settle::Ack),
            QueueRequest::Nack {
                group,
                topic,
                consumer_id,
                records,
                delay_ms,
            } => {
                let delay = Duration::from_millis(delay_ms as u64).min(MAX_VISIBILITY);
                (group, topic, consumer_id, records, Settle::Nack { delay })
            }
            QueueRequest::Release {
                group,
                topic,
                consumer_id,
                records,
            } => (group, topic, consumer_id, records, Settle::Release),
        };
        BrokerError::too_many("ranges", ranges.len(), MAX_SETTLE_RANGES)?;
        let this = self.clone();
        let (settled, stale) =
            offload::blocking(move || this.settle(&group, &topic, &consumer, how, &ranges)).await?;
        Ok((QueueResponse::Settled { settled, stale }, Bytes::new()))
    }

    /// Releases leases whose answer never reached the consumer (it went away while the poll was
    /// parked), so they are delivered to others now rather than after the visibility timeout.
    pub async fn give_back(self: &Arc<Self>, lessee: Lessee, parts: &[LeasedPart]) {
        let pairs: Vec<(u32, u64)> = parts
            .iter()
            .flat_map(|p| p.records.iter().map(move |r| (p.partition, r.offset)))
            .collect();
        let ranges = OffsetRange::coalesce(pairs);
        let this = self.clone();
        let (group, topic, consumer) = lessee;
        let released = offload::blocking(move || {
            this.settle(&group, &topic, &consumer, Settle::Release, &ranges)
        })
        .await;
        if let Err(e) = released {
            tracing::warn!(error = %e, "could not release the leases of an undelivered poll");
        }
    }

    /// Leases records of a topic to a queue-mode consumer, waiting up to `max_wait` for some
    /// (new records, redeliveries coming due, or leases running out wake the wait).
    async fn poll(
        self: &Arc<Self>,
        params: PollParams,
        max_wait: Duration,
    ) -> Result<Polled, BrokerError> {
        validate_group(&params.group)?;
        let topic = self.topics.get(&params.topic)?;
        let deadline = tokio::time::Instant::now() + max_wait;
        // Appends to the partitions this node serves wake the poll (on a cluster, not those
        // it only copies: a follower's appends would wake it for nothing).
        let serves = |p: usize| self.replication.check_fetch(&topic.name, p as u32).is_ok();
        let mut ends: Vec<_> = (topic.partitions().iter().enumerate())
            .filter(|(p, _)| serves(*p))
            .map(|(_, l)| l.subscribe_end())
            .collect();
        let params = Arc::new(params);
        loop {
            for rx in &mut ends {
                rx.borrow_and_update();
            }
            // Registered before looking, so a give-back during the look is not missed.
            let given_back = self.groups.queues.given_back();
            tokio::pin!(given_back);
            given_back.as_mut().enable();
            let (this, t, p) = (self.clone(), topic.clone(), params.clone());
            let polled = offload::blocking(move || {
                let sink =
                    |topic: &str, batch: Bytes| this.dead_letters.bury_for_queue(topic, batch);
                let serves = |partition| this.replication.check_fetch(&t.name, partition).is_ok();
                let host = Host {
                    sink: &sink,
                    serves: &serves,
                };
                Ok(this.groups.queues.poll_once(&p, &t, host)?)
            })
            .await?;
            let now = tokio::time::Instant::now();
            if !polled.parts.is_empty() || now >= deadline {
                return Ok(polled);
            }
            // New records, records given back and due times wake the poll; this is a safety net.
            let mut wake = deadline.min(now + QUEUE_RECHECK);
            if let Some(e) = polled.next_event {
                wake = wake.min(tokio::time::Instant::from_std(e).max(now));
            }
            let changed = async {
                if ends.is_empty() {
                    return std::future::pending().await;
                }
                let any = ends.iter_mut().map(|rx| Box::pin(rx.changed()));
                futures_util::future::select_all(any).await.0
            };
            tokio::select! {
                r = changed => if r.is_err() {
                    return Err(StorageError::UnknownTopic(params.topic.clone()).into());
                },
                _ = given_back => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Acks, nacks or releases records leased to `consumer` (blocking: may write dead letters).
    fn settle(
        &self,
        group: &str,
        topic: &str,
        consumer: &str,
        how: Settle,
        ranges: &[OffsetRange],
    ) -> Result<(u64, u64), BrokerError> {
        validate_group(group)?;
        let t = self.topics.get(topic)?;
        let sink = |topic: &str, batch: Bytes| self.dead_letters.bury_for_queue(topic, batch);
        let serves = |partition| self.replication.check_fetch(topic, partition).is_ok();
        let host = Host {
            sink: &sink,
            serves: &serves,
        };
        Ok(self
            .groups
            .queues
            .settle(group, &t, consumer, how, ranges, host)?)
    }
}

/// Who a request leases records to, if it is a poll (for [`QueueService::give_back`]).
pub fn lessee(req: &QueueRequest) -> Option<Lessee> {
    match req {
        QueueRequest::Poll {
            group,
            topic,
            consumer_id,
            ..
        } => Some((group.clone(), topic.clone(), consumer_id.clone())),
        _ => None,
    }
}

fn leased(polled: Polled, visibility: Duration) -> (QueueResponse, Bytes) {
    let mut payload = BytesMut::new();
    let parts = polled
        .parts
        .into_iter()
        .map(|p| {
            payload.extend_from_slice(&p.bytes);
            LeasedPart {
                partition: p.partition,
                bytes: p.bytes.len() as u32,
                records: p.records,
            }
        })
        .collect();
    let resp = QueueResponse::Leased {
        parts,
        lease_deadline_ms: crate::util::now_ms() + visibility.as_millis() as i64,
        throttle_ms: 0,
    };
    (resp, payload.freeze())
}
