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
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::offload;
use crate::services::queues::lessee;

pub(super) async fn serve(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) -> Result<(), WireError> {
    let mut reader = Requests::new(recv, broker.config(), shutdown);
    let first = match reader.next().await {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(()),
        Err(e) => return reject(send, &e).await,
    };
    match first.kind {
        FrameKind::Produce => produce::pipeline(first, reader, send, broker).await,
        FrameKind::Fetch => fetch::session(first, reader, send, broker).await,
        FrameKind::Admin => {
            one_shot(&mut send, FrameKind::AdminOk, admin(first, &broker).await).await
        }
        FrameKind::Group => {
            one_shot(&mut send, FrameKind::GroupOk, group(first, &broker).await).await
        }
        FrameKind::Queue => {
            // A parked long-poll is not in-flight work: shutdown ends it (the client retries).
            tokio::select! {
                r = queue(first, &mut send, &broker) => r?,
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

async fn admin(frame: Frame, broker: &Arc<Broker>) -> Result<AdminResponse, BrokerError> {
    let (req, payload): (AdminRequest, Bytes) =
        decode_frame(frame, FrameKind::Admin).map_err(invalid)?;
    tracing::debug!(?req, "admin request");
    let b = broker.clone();
    offload::blocking(move || b.admin().handle(req, payload)).await
}

async fn group(frame: Frame, broker: &Arc<Broker>) -> Result<GroupResponse, BrokerError> {
    let (req, _): (GroupRequest, Bytes) = decode_frame(frame, FrameKind::Group).map_err(invalid)?;
    tracing::trace!(?req, "group request");
    let b = broker.clone();
    offload::blocking(move || b.groups().handle(req)).await
}

/// A queue request; leases whose answer could not be written are given back at once.
async fn queue(
    frame: Frame,
    send: &mut quinn::SendStream,
    broker: &Arc<Broker>,
) -> Result<(), WireError> {
    let req: QueueRequest = match decode_frame(frame, FrameKind::Queue) {
        Ok((req, _)) => req,
        Err(e) => return write_error(send, ErrorCode::InvalidRequest, e.to_string()).await,
    };
    let lessee = lessee(&req);
    let queues = broker.queues();
    match queues.handle(req).await {
        Ok((resp, payload)) => {
            let written = write_frame(send, FrameKind::QueueOk, &resp, payload).await;
            if let (Err(_), Some(lessee), QueueResponse::Leased { parts, .. }) =
                (&written, lessee, &resp)
            {
                queues.give_back(lessee, parts).await;
            }
            written
        }
        Err(e) => write_error(send, e.code(), e.to_string()).await,
    }
}
