//! Group and queue requests (one per stream): the coordinator protocol (heartbeat, leave, commit,
//! offsets, list, describe, reset) and queue-mode leasing (poll with long-poll, ack, nack,
//! release). Values a peer sends are clamped to sane bounds before they reach the broker.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quiver_proto::frame::{Frame, FrameKind};
use quiver_proto::groups::{
    CommittedOffset, GroupRequest, GroupResponse, LeasedPart, QueueRequest, QueueResponse,
};
use quiver_proto::ErrorCode;
use quiver_wire::{decode_frame, write_error, write_frame, WireError};

use crate::broker::{Broker, BrokerError};
use crate::groups::{validate_group, Heartbeat, PollParams, Settle};

/// Most records one queue poll may lease.
const MAX_POLL_RECORDS: u32 = 10_000;
const MAX_POLL_WAIT: Duration = Duration::from_secs(60);
const MIN_VISIBILITY: Duration = Duration::from_millis(100);
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);
const MAX_DELIVERIES: u32 = 1000;
/// Most ranges one ack, nack or release may name (each costs a scan of the records in flight).
const MAX_SETTLE_RANGES: usize = 10_000;
/// Most topics a member may consume, and partitions it may report or commit in one request.
const MAX_TOPICS: usize = 1_000;
const MAX_PARTITIONS: usize = 100_000;

fn too_many(what: &str, n: usize, max: usize) -> Result<(), BrokerError> {
    if n > max {
        return Err(BrokerError::InvalidRequest(format!(
            "{n} {what} in one request; at most {max}"
        )));
    }
    Ok(())
}

pub(super) async fn serve_group(
    frame: Frame,
    send: &mut quinn::SendStream,
    broker: &Arc<Broker>,
) -> Result<(), WireError> {
    let (req, _): (GroupRequest, Bytes) = match decode_frame(frame, FrameKind::Group) {
        Ok(x) => x,
        Err(e) => return write_error(send, ErrorCode::InvalidRequest, e.to_string()).await,
    };
    tracing::trace!(?req, "group request");
    let b = broker.clone();
    // Commits flush the metadata store: off the async workers.
    let result = tokio::task::spawn_blocking(move || group(&b, req))
        .await
        .unwrap_or_else(|e| Err(BrokerError::Internal(e.to_string())));
    match result {
        Ok(resp) => write_frame(send, FrameKind::GroupOk, &resp, Bytes::new()).await,
        Err(e) => write_error(send, e.code(), e.to_string()).await,
    }
}

fn group(broker: &Broker, req: GroupRequest) -> Result<GroupResponse, BrokerError> {
    let groups = broker.groups();
    Ok(match req {
        GroupRequest::Heartbeat {
            group,
            member_id,
            client_id,
            topics,
            session_timeout_ms,
            owned,
        } => {
            validate_group(&group)?;
            too_many("topics", topics.len(), MAX_TOPICS)?;
            too_many("owned partitions", owned.len(), MAX_PARTITIONS)?;
            if member_id.is_none() {
                // A join names its topics: an unknown one is a mistake to report, not to wait on.
                for t in &topics {
                    broker.topics().get(t)?;
                }
            }
            let hb = Heartbeat {
                group,
                member_id,
                client_id,
                topics,
                session_timeout: Duration::from_millis(session_timeout_ms as u64),
                owned,
            };
            let count = |t: &str| {
                broker
                    .topics()
                    .get(t)
                    .ok()
                    .map(|t| t.partitions().len() as u32)
            };
            let a = groups.coordinator.heartbeat(hb, &count)?;
            GroupResponse::Assignment {
                member_id: a.member_id,
                epoch: a.epoch,
                assigned: a.assigned,
                heartbeat_interval_ms: a.heartbeat_interval_ms,
            }
        }
        GroupRequest::Leave { group, member_id } => {
            groups.coordinator.leave(&group, &member_id)?;
            tracing::info!(%group, member = %member_id, "member left");
            GroupResponse::Left
        }
        GroupRequest::Commit {
            group,
            member_id,
            offsets,
        } => {
            too_many("offsets", offsets.len(), MAX_PARTITIONS)?;
            for o in &offsets {
                // Only offsets inside a partition that exists: no garbage in the metadata store.
                let end = broker
                    .topics()
                    .partition(&o.topic, o.partition)?
                    .stats()
                    .log_end;
                if o.offset > end {
                    return Err(BrokerError::InvalidRequest(format!(
                        "offset {} of {}/{} is past the log end {end}",
                        o.offset, o.topic, o.partition
                    )));
                }
            }
            groups.commit(&group, member_id.as_deref(), &offsets)?;
            GroupResponse::Committed {
                count: offsets.len() as u32,
            }
        }
        GroupRequest::FetchOffsets { group, partitions } => {
            validate_group(&group)?;
            too_many("partitions", partitions.len(), MAX_PARTITIONS)?;
            let offsets = partitions
                .into_iter()
                .map(|tp| {
                    Ok(CommittedOffset {
                        offset: groups.offsets.get(&group, &tp)?,
                        topic: tp.topic,
                        partition: tp.partition,
                    })
                })
                .collect::<Result<Vec<_>, crate::meta::MetaError>>()?;
            GroupResponse::Offsets { offsets }
        }
        GroupRequest::List => GroupResponse::Groups {
            groups: groups.list()?,
        },
        GroupRequest::Describe { group } => {
            validate_group(&group)?;
            GroupResponse::Group(groups.describe(&group, broker.topics())?)
        }
        GroupRequest::Reset { group, topic, to } => {
            let offsets = groups.reset(&group, &topic, to, broker.topics())?;
            tracing::info!(%group, %topic, ?to, "group offsets reset");
            GroupResponse::Reset { offsets }
        }
    })
}

pub(super) async fn serve_queue(
    frame: Frame,
    send: &mut quinn::SendStream,
    broker: &Arc<Broker>,
) -> Result<(), WireError> {
    let (req, _): (QueueRequest, Bytes) = match decode_frame(frame, FrameKind::Queue) {
        Ok(x) => x,
        Err(e) => return write_error(send, ErrorCode::InvalidRequest, e.to_string()).await,
    };
    let poller = match &req {
        QueueRequest::Poll {
            group,
            topic,
            consumer_id,
            ..
        } => Some((group.clone(), topic.clone(), consumer_id.clone())),
        _ => None,
    };
    match queue(broker, req).await {
        Ok((resp, payload)) => {
            let written = write_frame(send, FrameKind::QueueOk, &resp, payload).await;
            if let (Err(_), Some(owner), QueueResponse::Leased { parts, .. }) =
                (&written, poller, &resp)
            {
                give_back(broker, owner, parts).await;
            }
            written
        }
        Err(e) => write_error(send, e.code(), e.to_string()).await,
    }
}

/// Releases leases whose reply never reached the consumer (it went away while the poll was
/// parked), so they are delivered to others now rather than after the visibility timeout.
async fn give_back(broker: &Arc<Broker>, owner: (String, String, String), parts: &[LeasedPart]) {
    let pairs: Vec<(u32, u64)> = parts
        .iter()
        .flat_map(|p| p.records.iter().map(move |r| (p.partition, r.offset)))
        .collect();
    let ranges = quiver_proto::groups::OffsetRange::coalesce(pairs);
    let b = broker.clone();
    let (group, topic, consumer) = owner;
    let released = tokio::task::spawn_blocking(move || {
        b.queue_settle(&group, &topic, &consumer, Settle::Release, &ranges)
    })
    .await;
    if let Ok(Err(e)) = released {
        tracing::warn!(error = %e, "could not release the leases of an undelivered poll");
    }
}

async fn queue(
    broker: &Arc<Broker>,
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
                max_bytes: broker.config().max_frame_bytes / 2,
            };
            let wait = Duration::from_millis(max_wait_ms as u64).min(MAX_POLL_WAIT);
            let polled = broker.queue_poll(params, wait).await?;
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
    too_many("ranges", ranges.len(), MAX_SETTLE_RANGES)?;
    let b = broker.clone();
    let (settled, stale) = tokio::task::spawn_blocking(move || {
        b.queue_settle(&group, &topic, &consumer, how, &ranges)
    })
    .await
    .map_err(|e| BrokerError::Internal(e.to_string()))??;
    Ok((QueueResponse::Settled { settled, stale }, Bytes::new()))
}

fn leased(polled: crate::groups::Polled, visibility: Duration) -> (QueueResponse, Bytes) {
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
    };
    (resp, payload.freeze())
}
