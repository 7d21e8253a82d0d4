//! The queue consumer (share groups): many consumers read one topic, even one partition, together;
//! the broker leases each record to one consumer at a time and forgets it once acknowledged.
//! A record not settled before its lease ends (`visibility_timeout`) is delivered again, to any
//! consumer; after `max_deliveries` deliveries it goes to the dead-letter topic `<topic>.dlq`.
//!
//! A poll's payload is the leased parts one after the other, each part a partition's batches; the
//! batches may hold records that were not leased (the part's record list is authoritative), and are
//! CRC-checked like fetched batches. Acks, nacks and releases are sent as coalesced offset ranges.
//!
//! On a cluster each node leases the partitions it leads: a poll asks every such node at once
//! (`queue_fanout.rs`), and records are settled at their partition's leader.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quiver_proto::frame::FrameKind;
use quiver_proto::groups::{LeasedPart, OffsetRange, QueueRequest, QueueResponse};
use quiver_proto::{Batches, Record};

use futures_util::FutureExt;

use crate::client::Client;
use crate::error::ClientError;
use crate::queue_fanout::NodePolls;
use crate::routes::Routes;

/// How a queue consumer leases records.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// At most this many records per poll.
    pub max_records: u32,
    /// How long the broker holds a poll waiting for records.
    pub max_wait: Duration,
    /// How long a lease lasts: settle records within it or they are delivered again.
    pub visibility_timeout: Duration,
    /// Deliveries before a record goes to `<topic>.dlq`.
    pub max_deliveries: u32,
    /// Who holds the leases; `None`: a unique id per [`QueueConsumer`].
    pub consumer_id: Option<String>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_records: 500,
            max_wait: Duration::from_secs(1),
            visibility_timeout: Duration::from_secs(30),
            max_deliveries: 5,
            consumer_id: None,
        }
    }
}

/// A leased record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub record: Record,
    /// 1 on the first delivery.
    pub delivery_count: u32,
    /// When the lease ends (ms since the epoch); settle before then.
    pub lease_deadline_ms: i64,
}

/// What an ack, nack or release did: `stale` records were no longer leased to this consumer
/// (their lease ran out, or they were settled already).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settled {
    pub settled: u64,
    pub stale: u64,
}

/// Leases records of one topic under a share group. Cheap to clone; clones are the same consumer
/// (same id), so records can be settled from other tasks.
#[derive(Clone)]
pub struct QueueConsumer {
    client: Client,
    routes: Arc<Routes>,
    /// A cluster's polls still running (their records come out of the next poll).
    polls: Arc<tokio::sync::Mutex<NodePolls<QueuedRecord>>>,
    group: String,
    topic: Arc<str>,
    consumer_id: String,
    config: QueueConfig,
}

impl std::fmt::Debug for QueueConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueConsumer")
            .field("group", &self.group)
            .field("topic", &self.topic)
            .field("consumer_id", &self.consumer_id)
            .finish_non_exhaustive()
    }
}

impl QueueConsumer {
    pub fn new(
        client: Client,
        group: impl Into<String>,
        topic: impl Into<String>,
        config: QueueConfig,
    ) -> QueueConsumer {
        let consumer_id = config
            .consumer_id
            .clone()
            .unwrap_or_else(|| format!("{}-{}", client.client_id(), crate::ids::random_hex16()));
        QueueConsumer {
            routes: Arc::new(Routes::new(client.clone())),
            polls: Arc::default(),
            client,
            group: group.into(),
            topic: Arc::from(topic.into()),
            consumer_id,
            config,
        }
    }

    pub fn consumer_id(&self) -> &str {
        &self.consumer_id
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    /// Leases up to `max_records` records, waiting up to `max_wait` for some (possibly none).
    /// On a cluster, up to that many from each node leading partitions of the topic.
    pub async fn poll(&self) -> Result<Vec<QueuedRecord>, ClientError> {
        self.routes.ready().await;
        if !self.routes.is_cluster() {
            return self.poll_node(self.client.clone()).await;
        }
        // A poll task holds the consumer without its polls in flight: the consumer dropped,
        // they are cut.
        let detached = QueueConsumer {
            polls: Arc::default(),
            ..self.clone()
        };
        let poll_at = move |addr: String| {
            let node = detached.clone();
            async move {
                let client = node.routes.client(&addr).await?;
                node.poll_node(client).await
            }
            .boxed()
        };
        let mut polls = self.polls.lock().await;
        let routes = &self.routes;
        polls
            .poll(routes, &self.topic, self.config.max_wait, &poll_at)
            .await
    }

    /// One poll of one node.
    async fn poll_node(&self, client: Client) -> Result<Vec<QueuedRecord>, ClientError> {
        let req = QueueRequest::Poll {
            group: self.group.clone(),
            topic: self.topic.to_string(),
            consumer_id: self.consumer_id.clone(),
            max_records: self.config.max_records,
            max_wait_ms: millis_u32(self.config.max_wait),
            visibility_timeout_ms: millis_u32(self.config.visibility_timeout),
            max_deliveries: self.config.max_deliveries,
        };
        let (resp, payload) = call(&client, &req).await?;
        match resp {
            // A throttled principal's next poll is held back by the broker itself.
            QueueResponse::Leased {
                parts,
                lease_deadline_ms,
                ..
            } => decode_leased(&self.topic, &parts, payload, lease_deadline_ms),
            other => Err(unexpected(other)),
        }
    }

    /// Done with these records: they are never delivered again.
    pub async fn ack(&self, records: &[QueuedRecord]) -> Result<Settled, ClientError> {
        self.settle(records, |group, topic, consumer_id, records| {
            QueueRequest::Ack {
                group,
                topic,
                consumer_id,
                records,
            }
        })
        .await
    }

    pub async fn ack_one(&self, record: &QueuedRecord) -> Result<Settled, ClientError> {
        self.ack(std::slice::from_ref(record)).await
    }

    /// Failed: deliver again after `delay` (counts as a delivery towards `max_deliveries`).
    pub async fn nack(
        &self,
        records: &[QueuedRecord],
        delay: Duration,
    ) -> Result<Settled, ClientError> {
        let delay_ms = millis_u32(delay);
        self.settle(records, |group, topic, consumer_id, records| {
            QueueRequest::Nack {
                group,
                topic,
                consumer_id,
                records,
                delay_ms,
            }
        })
        .await
    }

    /// Not processed: give the records back at once without counting the delivery.
    pub async fn release(&self, records: &[QueuedRecord]) -> Result<Settled, ClientError> {
        self.settle(records, |group, topic, consumer_id, records| {
            QueueRequest::Release {
                group,
                topic,
                consumer_id,
                records,
            }
        })
        .await
    }

    async fn settle(
        &self,
        records: &[QueuedRecord],
        request: impl Fn(String, String, String, Vec<OffsetRange>) -> QueueRequest,
    ) -> Result<Settled, ClientError> {
        let ranges = ranges(&self.topic, records)?;
        let mut total = Settled::default();
        if ranges.is_empty() {
            return Ok(total);
        }
        // Each partition's records at its leader (one node, on a single broker).
        let mut by_node: std::collections::BTreeMap<String, Vec<OffsetRange>> = Default::default();
        for r in ranges {
            let addr = self.routes.address(&self.topic, r.partition);
            by_node.entry(addr).or_default().push(r);
        }
        let request = &request;
        for (addr, ranges) in by_node {
            let count: u64 = ranges.iter().map(OffsetRange::len).sum();
            let req = request(
                self.group.clone(),
                self.topic.to_string(),
                self.consumer_id.clone(),
                ranges,
            );
            let answer = match self.routes.client(&addr).await {
                Ok(c) => call(&c, &req).await,
                Err(e) => Err(e),
            };
            match answer {
                Ok((QueueResponse::Settled { settled, stale }, _)) => {
                    total.settled += settled;
                    total.stale += stale;
                }
                Ok((other, _)) => return Err(unexpected(other)),
                // The partition's leadership moved, and its leases with it: the new leader
                // delivers the records again.
                Err(e) if self.routes.moved(&e) => {
                    self.routes.refresh().await;
                    total.stale += count;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}

/// One request on its own stream; the reply's payload too (a poll's batches).
async fn call(client: &Client, req: &QueueRequest) -> Result<(QueueResponse, Bytes), ClientError> {
    client
        .exchange(FrameKind::Queue, req, Bytes::new(), FrameKind::QueueOk)
        .await
}

/// The coalesced offset ranges of `records`, which must all be of `topic`.
fn ranges(topic: &str, records: &[QueuedRecord]) -> Result<Vec<OffsetRange>, ClientError> {
    if let Some(r) = records.iter().find(|r| &*r.topic != topic) {
        return Err(ClientError::InvalidArgument(format!(
            "a record of topic {} cannot be settled by the queue consumer of {topic}",
            r.topic
        )));
    }
    let offsets = records
        .iter()
        .map(|r| (r.partition, r.record.offset))
        .collect();
    Ok(OffsetRange::coalesce(offsets))
}

/// The leased records in a poll's payload, in payload order.
fn decode_leased(
    topic: &Arc<str>,
    parts: &[LeasedPart],
    mut payload: Bytes,
    lease_deadline_ms: i64,
) -> Result<Vec<QueuedRecord>, ClientError> {
    let mut out = Vec::new();
    for part in parts {
        let len = part.bytes as usize;
        if len > payload.len() {
            return Err(ClientError::Protocol(format!(
                "leased part of partition {} claims {len} bytes, {} left in the payload",
                part.partition,
                payload.len()
            )));
        }
        let before = out.len();
        decode_part(
            topic,
            part,
            payload.split_to(len),
            lease_deadline_ms,
            &mut out,
        )?;
        let missing = part.records.len().saturating_sub(out.len() - before);
        if missing > 0 {
            // The leases run out and the records come again; nothing to stop for.
            tracing::warn!(%topic, partition = part.partition, missing, "leased records missing from the payload");
        }
    }
    if !payload.is_empty() {
        return Err(ClientError::Protocol(format!(
            "{} bytes after the leased parts",
            payload.len()
        )));
    }
    Ok(out)
}

fn decode_part(
    topic: &Arc<str>,
    part: &LeasedPart,
    bytes: Bytes,
    lease_deadline_ms: i64,
    out: &mut Vec<QueuedRecord>,
) -> Result<(), ClientError> {
    // The broker lists a part's leases in offset order: look them up by binary search, and
    // build a `Record` only for leased ones (a batch may hold others).
    let delivery = |offset: u64| {
        part.records
            .binary_search_by_key(&offset, |r| r.offset)
            .ok()
            .map(|i| part.records[i].delivery_count)
    };
    for batch in Batches::new(bytes) {
        let batch = batch?;
        for r in batch.records() {
            if let Some(delivery_count) = delivery(r.offset) {
                out.push(QueuedRecord {
                    topic: topic.clone(),
                    partition: part.partition,
                    record: r.to_record(batch.bytes()),
                    delivery_count,
                    lease_deadline_ms,
                });
            }
        }
    }
    Ok(())
}

fn unexpected(resp: QueueResponse) -> ClientError {
    ClientError::Protocol(format!("unexpected queue reply {resp:?}"))
}

fn millis_u32(d: Duration) -> u32 {
    d.as_millis().min(u32::MAX as u128) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::batch::set_base_offset;
    use quiver_proto::groups::LeasedRecord;
    use quiver_proto::{BatchBuilder, RecordData};

    /// A batch of `values` at `base`, as the broker stores it.
    fn batch(base: u64, values: &[&str]) -> Bytes {
        let mut b = BatchBuilder::new();
        for v in values {
            b.push(&RecordData {
                timestamp: 1,
                value: v.as_bytes(),
                ..Default::default()
            })
            .unwrap();
        }
        let mut bytes = b.finish().unwrap().to_vec();
        assert!(set_base_offset(&mut bytes, base));
        bytes.into()
    }

    fn part(partition: u32, bytes: &[Bytes], leased: &[(u64, u32)]) -> LeasedPart {
        LeasedPart {
            partition,
            bytes: bytes.iter().map(|b| b.len() as u32).sum(),
            records: leased
                .iter()
                .map(|&(offset, delivery_count)| LeasedRecord {
                    offset,
                    delivery_count,
                })
                .collect(),
        }
    }

    fn values(records: &[QueuedRecord]) -> Vec<(u32, u64, String, u32)> {
        records
            .iter()
            .map(|r| {
                let v = String::from_utf8_lossy(&r.record.value).into_owned();
                (r.partition, r.record.offset, v, r.delivery_count)
            })
            .collect()
    }

    #[test]
    fn only_leased_records_come_out_of_their_parts() {
        let p0 = [batch(10, &["a", "b", "c"]), batch(13, &["d"])];
        let p3 = [batch(0, &["x", "y"])];
        let parts = [
            part(0, &p0, &[(11, 1), (13, 2)]),
            part(3, &p3, &[(0, 5), (1, 1)]),
        ];
        let payload: Vec<u8> = p0.iter().chain(&p3).flat_map(|b| b.to_vec()).collect();
        let topic: Arc<str> = Arc::from("jobs");
        let out = decode_leased(&topic, &parts, payload.into(), 99).unwrap();
        assert_eq!(
            values(&out),
            vec![
                (0, 11, "b".into(), 1),
                (0, 13, "d".into(), 2),
                (3, 0, "x".into(), 5),
                (3, 1, "y".into(), 1),
            ]
        );
        assert!(out
            .iter()
            .all(|r| &*r.topic == "jobs" && r.lease_deadline_ms == 99));
    }

    #[test]
    fn corrupt_or_short_payloads_are_refused() {
        let p0 = [batch(0, &["a", "b"])];
        let parts = [part(0, &p0, &[(0, 1)])];
        let topic: Arc<str> = Arc::from("jobs");
        let mut bytes = p0[0].to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let err = decode_leased(&topic, &parts, bytes.into(), 0).unwrap_err();
        assert!(matches!(err, ClientError::Record(_)), "{err}");
        let short = p0[0].slice(..p0[0].len() - 1);
        let err = decode_leased(&topic, &parts, short, 0).unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err}");
        let mut long = p0[0].to_vec();
        long.push(0);
        let err = decode_leased(&topic, &parts, long.into(), 0).unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err}");
    }

    #[test]
    fn an_empty_lease_is_no_records() {
        let topic: Arc<str> = Arc::from("jobs");
        assert!(decode_leased(&topic, &[], Bytes::new(), 0)
            .unwrap()
            .is_empty());
    }

    fn queued(topic: &str, partition: u32, offset: u64) -> QueuedRecord {
        QueuedRecord {
            topic: Arc::from(topic),
            partition,
            record: Record {
                offset,
                ..Default::default()
            },
            delivery_count: 1,
            lease_deadline_ms: 0,
        }
    }

    #[test]
    fn settling_sends_coalesced_ranges_of_its_own_topic() {
        let records = [
            queued("jobs", 1, 7),
            queued("jobs", 0, 4),
            queued("jobs", 0, 3),
            queued("jobs", 1, 8),
            queued("jobs", 0, 9),
        ];
        let range = |partition, first, last| OffsetRange {
            partition,
            first,
            last,
        };
        assert_eq!(
            ranges("jobs", &records).unwrap(),
            vec![range(0, 3, 4), range(0, 9, 9), range(1, 7, 8)]
        );
        let err = ranges("jobs", &[queued("other", 0, 1)]).unwrap_err();
        assert!(matches!(err, ClientError::InvalidArgument(_)), "{err}");
    }
}
