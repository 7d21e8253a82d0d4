//! The fetch session of one stream: each request is answered in turn by the fetch service (a
//! session keeps the stream's read-filter instance). A parked long-poll is not in-flight work:
//! shutdown answers it at once with a retriable error.

use std::sync::Arc;

use bytes::Bytes;
use quiver_proto::frame::{Frame, FrameKind};
use quiver_proto::messages::{FetchRequest, FetchResponse};
use quiver_wire::{decode_frame, write_frame, write_request_error, WireError};

use super::requests::{reject, Requests};
use crate::auth::{Direction, Principal, Request};
use crate::broker::Broker;
use crate::error::BrokerError;

pub(super) async fn session(
    first: Frame,
    mut reader: Requests,
    mut send: quinn::SendStream,
    broker: Arc<Broker>,
    principal: Arc<Principal>,
) -> Result<(), WireError> {
    let mut session = broker.fetch().session();
    let mut next = Some(first);
    while let Some(frame) = next.take() {
        let (req, _): (FetchRequest, Bytes) = match decode_frame(frame, FrameKind::Fetch) {
            Ok(x) => x,
            Err(e) => return reject(send, &e).await,
        };
        let started = std::time::Instant::now();
        let fetched = match broker.authorize(&principal, Request::Fetch(&req)) {
            Ok(()) => tokio::select! {
                r = session.fetch(&req) => r,
                _ = reader.shutdown.cancelled() => Err(BrokerError::ShuttingDown),
            },
            Err(e) => Err(e),
        };
        if let Ok((resp, _)) = &fetched {
            broker
                .telemetry()
                .observe_fetch(resp.records, started.elapsed());
        }
        let fetched = match fetched {
            Ok(answer) => throttle(answer, &broker, &principal, &reader).await,
            Err(e) => Err(e),
        };
        match fetched {
            Ok((resp, bytes)) => {
                let size = bytes.len() as u64;
                write_frame(&mut send, FrameKind::FetchOk, &resp, bytes).await?;
                let topics = broker.topics();
                topics.count_out(&req.topic, req.partition, resp.records as u64, size);
            }
            Err(e) => {
                let msg = format!("request {}: {e}", req.request_id);
                write_request_error(&mut send, e.code(), msg, req.request_id).await?
            }
        }
        next = match reader.next().await {
            Ok(f) => f,
            Err(e) => return reject(send, &e).await,
        };
    }
    send.finish()?;
    Ok(())
}

/// Holds an answer back while the principal is over its fetch quota, and says so in it.
async fn throttle(
    (mut resp, bytes): (FetchResponse, Bytes),
    broker: &Broker,
    principal: &Principal,
    reader: &Requests,
) -> Result<(FetchResponse, Bytes), BrokerError> {
    let quotas = broker.auth().quotas();
    let wait = quotas.charge(principal.name(), Direction::Fetch, bytes.len() as u64);
    if !wait.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = reader.shutdown.cancelled() => return Err(BrokerError::ShuttingDown),
        }
        resp.throttle_ms = wait.as_millis().try_into().unwrap_or(u32::MAX);
    }
    Ok((resp, bytes))
}
