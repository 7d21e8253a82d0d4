//! One bidirectional stream: its first frame's kind picks the handler — a produce pipeline, a
//! fetch session, or a one-shot admin, group or queue request — and the handler hands each
//! request to its service. Malformed input gets an error frame and ends this stream only.

use std::sync::Arc;

use bytes::Bytes;
use quiver_proto::frame::{Frame, FrameKind};
use quiver_proto::groups::{GroupRequest, GroupResponse, QueueRequest, QueueResponse};
use quiver_proto::messages::{AdminRequest, AdminResponse};
use quiver_proto::ErrorCode;
use quiver_wire::{decode_frame, write_error, write_frame, WireError};
use tokio_util::sync::CancellationToken;

use super::requests::{finish, reject, Requests};
use super::{fetch, produce};
use crate::auth::{Direction, Principal, Request};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::services::queues::lessee;

pub(super) async fn serve(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    broker: Arc<Broker>,
    principal: Arc<Principal>,
    shutdown: CancellationToken,
) -> Result<(), WireError> {
    let mut reader = Requests::new(recv, broker.config(), shutdown);
    let first = match reader.next().await {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(()),
        Err(e) => return reject(send, &e).await,
    };
    match first.kind {
        FrameKind::Produce => produce::pipeline(first, reader, send, broker, principal).await,
        FrameKind::Fetch => fetch::session(first, reader, send, broker, principal).await,
        FrameKind::Admin => {
            let answer = admin(first, &broker, principal).await;
            one_shot(&mut send, FrameKind::AdminOk, answer).await
        }
        FrameKind::Group => {
            let answer = group(first, &broker, &principal).await;
            one_shot(&mut send, FrameKind::GroupOk, answer).await
        }
        FrameKind::Queue => {
            // A parked long-poll is not in-flight work: shutdown ends it (the client retries).
            tokio::select! {
                r = queue(first, &mut send, &broker, &principal) => r?,
                _ = reader.shutdown.cancelled() => {
                    write_error(&mut send, ErrorCode::ShuttingDown, "server shutting down".into()).await?
                }
            }
            finish(send)
        }
        other => {
            let msg = format!("a stream cannot start with a {other:?} frame");
            let answer: Result<(), _> = Err(BrokerError::InvalidRequest(msg));
            one_shot(&mut send, FrameKind::AdminOk, answer).await
        }
    }
}

/// A request header that does not decode is the caller's mistake.
fn invalid(e: WireError) -> BrokerError {
    BrokerError::InvalidRequest(e.to_string())
}

/// Writes the one answer of an admin or group stream and ends it.
async fn one_shot<T: serde::Serialize>(
    send: &mut quinn::SendStream,
    kind: FrameKind,
    answer: Result<T, BrokerError>,
) -> Result<(), WireError> {
    match answer {
        Ok(resp) => write_frame(send, kind, &resp, Bytes::new()).await?,
        Err(e) => write_error(send, e.code(), e.to_string()).await?,
    }
    send.finish()?;
    Ok(())
}

/// An admin request: checked, answered, its list answers filtered to what the principal may
/// see, and logged once to `quiver::audit` (a denial is logged by the check itself).
async fn admin(
    frame: Frame,
    broker: &Arc<Broker>,
    principal: Arc<Principal>,
) -> Result<AdminResponse, BrokerError> {
    let (req, payload): (AdminRequest, Bytes) =
        decode_frame(frame, FrameKind::Admin).map_err(invalid)?;
    tracing::debug!(?req, "admin request");
    broker.authorize(&principal, Request::Admin(&req))?;
    let operation = operation_name(&req);
    let mut answer = broker.admin_request(&principal, req, payload).await;
    if let Ok(a) = &mut answer {
        broker.auth().filter_admin(&principal, a);
    }
    let result = match &answer {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("{}: {e}", e.code()),
    };
    // Reads (lists, describes, producer ids) are at debug: a client asks for them all the time.
    let read_only = ["List", "Describe", "Metadata", "WhoAmI", "InitProducer"]
        .iter()
        .any(|p| operation.starts_with(p));
    if read_only {
        tracing::debug!(target: "quiver::audit", principal = %principal, operation, result, "admin request");
    } else {
        tracing::info!(target: "quiver::audit", principal = %principal, operation, result, "admin request");
    }
    answer
}

/// The request's kind as the protocol spells it (`CreateTopic`), for the audit log.
fn operation_name(req: &AdminRequest) -> String {
    let debug = format!("{req:?}");
    let end = debug.find([' ', '{', '(']).unwrap_or(debug.len());
    debug[..end].to_owned()
}

async fn group(
    frame: Frame,
    broker: &Arc<Broker>,
    principal: &Principal,
) -> Result<GroupResponse, BrokerError> {
    let (req, _): (GroupRequest, Bytes) = decode_frame(frame, FrameKind::Group).map_err(invalid)?;
    tracing::trace!(?req, "group request");
    broker.authorize(principal, Request::Group(&req))?;
    let mut answer = broker.group(req).await?;
    broker.auth().filter_groups(principal, &mut answer);
    Ok(answer)
}

/// Counts leased bytes against the principal's fetch quota; the answer goes out at once and
/// says how long the next poll will be held back.
fn charge_leases(broker: &Broker, principal: &Principal, resp: &mut QueueResponse, bytes: usize) {
    if let QueueResponse::Leased { throttle_ms, .. } = resp {
        let wait = broker
            .auth()
            .quotas()
            .charge(principal.name(), Direction::Fetch, bytes as u64);
        *throttle_ms = wait.as_millis().try_into().unwrap_or(u32::MAX);
    }
}

fn queue_topic(req: &QueueRequest) -> &str {
    match req {
        QueueRequest::Poll { topic, .. }
        | QueueRequest::Ack { topic, .. }
        | QueueRequest::Nack { topic, .. }
        | QueueRequest::Release { topic, .. } => topic,
    }
}

/// Counts leased records and bytes as handed out of their partitions.
fn count_leased(broker: &Broker, topic: &str, parts: &[quiver_proto::groups::LeasedPart]) {
    for p in parts {
        let records = p.records.len() as u64;
        let topics = broker.topics();
        topics.count_out(topic, p.partition, records, p.bytes as u64);
    }
}

/// A queue request; leases whose answer could not be written are given back at once.
async fn queue(
    frame: Frame,
    send: &mut quinn::SendStream,
    broker: &Arc<Broker>,
    principal: &Principal,
) -> Result<(), WireError> {
    let req: QueueRequest = match decode_frame(frame, FrameKind::Queue) {
        Ok((req, _)) => req,
        Err(e) => return write_error(send, ErrorCode::InvalidRequest, e.to_string()).await,
    };
    if let Err(e) = broker.authorize(principal, Request::Queue(&req)) {
        return write_error(send, e.code(), e.to_string()).await;
    }
    let lessee = lessee(&req);
    let topic = queue_topic(&req).to_owned();
    if lessee.is_some() {
        // Over its fetch quota, a principal's poll waits before it leases anything.
        let debt = broker
            .auth()
            .quotas()
            .debt(principal.name(), Direction::Fetch);
        tokio::time::sleep(debt).await;
    }
    let queues = broker.queues();
    match queues.handle(req).await {
        Ok((mut resp, payload)) => {
            charge_leases(broker, principal, &mut resp, payload.len());
            let written = write_frame(send, FrameKind::QueueOk, &resp, payload).await;
            if let QueueResponse::Leased { parts, .. } = &resp {
                match (&written, lessee) {
                    (Err(_), Some(lessee)) => queues.give_back(lessee, parts).await,
                    (Err(_), None) => {}
                    (Ok(()), _) => count_leased(broker, &topic, parts),
                }
            }
            written
        }
        Err(e) => write_error(send, e.code(), e.to_string()).await,
    }
}
