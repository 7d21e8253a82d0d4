//! The produce pipeline of one stream: requests are handed to the produce service in arrival
//! order (so a stream's batches are appended in order), while their answers are written by a
//! second task in the same order, `acks=all` answers waiting for their fsync off to the side so
//! one stream's requests share group commits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_proto::frame::{Frame, FrameKind};
use quiver_proto::messages::{Acks, ProduceRequest, ProduceResponse};
use quiver_wire::{decode_frame, write_frame, write_request_error, WireError};
use tokio::sync::mpsc;

use super::requests::{wire_code, Requests};
use crate::auth::{Direction, Principal, Request};
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::services::produce::{Accepted, Writer};

/// Produce answers a stream may have outstanding before it stops reading new requests.
const MAX_IN_FLIGHT: usize = 256;

/// A produce answer still to be written, in request order, with its request id and how long
/// the principal's produce quota holds it back.
struct Pending(Accepted, u64, Duration, Timing);

/// When a request arrived and its acks level (none for a request that could not be read): its
/// latency is observed when its result is ready, before any quota wait.
struct Timing(Instant, Option<Acks>);

pub(super) async fn pipeline(
    first: Frame,
    mut reader: Requests,
    send: quinn::SendStream,
    broker: Arc<Broker>,
    principal: Arc<Principal>,
) -> Result<(), WireError> {
    let (tx, rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(write_answers(rx, send, broker.clone()));
    let mut next = Some(first);
    while let Some(frame) = next.take() {
        let pending = match decode_frame::<ProduceRequest>(frame, FrameKind::Produce) {
            Ok((req, payload)) => accept(&broker, &principal, req, payload).await,
            Err(e) => unreadable(&e),
        };
        if tx.send(pending).await.is_err() {
            break; // the writer stopped: the client went away
        }
        match reader.next().await {
            Ok(f) => next = f,
            Err(e) => {
                let _ = tx.send(unreadable(&e)).await;
                break;
            }
        }
    }
    drop(tx);
    writer
        .await
        .map_err(|e| WireError::Read(std::io::Error::other(e)))?
}

/// Checks one request and hands it to the produce service, charging its bytes to the
/// principal's produce quota.
async fn accept(
    broker: &Arc<Broker>,
    principal: &Arc<Principal>,
    req: ProduceRequest,
    payload: Bytes,
) -> Pending {
    let id = req.request_id;
    let timing = Timing(Instant::now(), Some(req.acks));
    if let Err(e) = broker.authorize(principal, Request::Produce(&req)) {
        return Pending(Accepted::Done(Err(e)), id, Duration::ZERO, timing);
    }
    let quotas = broker.auth().quotas();
    let wait = quotas.charge(principal.name(), Direction::Produce, payload.len() as u64);
    let writer = Writer {
        auth: broker.auth().clone(),
        principal: principal.clone(),
    };
    let accepted = broker.produce().accept(req, payload, Some(writer)).await;
    Pending(accepted, id, wait, timing)
}

/// A request that could not be read, as the answer it gets.
fn unreadable(e: &WireError) -> Pending {
    let err = BrokerError::Wire(wire_code(e), e.to_string());
    let timing = Timing(Instant::now(), None);
    Pending(Accepted::Done(Err(err)), 0, Duration::ZERO, timing)
}

async fn write_answers(
    mut rx: mpsc::Receiver<Pending>,
    mut send: quinn::SendStream,
    broker: Arc<Broker>,
) -> Result<(), WireError> {
    while let Some(Pending(accepted, request_id, throttle, timing)) = rx.recv().await {
        let result: Result<ProduceResponse, BrokerError> = match accepted {
            Accepted::NoReply => {
                timing.observe(&broker);
                continue;
            }
            Accepted::Done(r) => r,
            Accepted::Syncing(h) => h
                .await
                .unwrap_or_else(|e| Err(BrokerError::Internal(e.to_string()))),
        };
        timing.observe(&broker);
        if !throttle.is_zero() {
            tokio::time::sleep(throttle).await;
        }
        match result {
            Ok(mut resp) => {
                resp.throttle_ms = throttle.as_millis().try_into().unwrap_or(u32::MAX);
                write_frame(&mut send, FrameKind::ProduceOk, &resp, Bytes::new()).await?
            }
            Err(e) => {
                let msg = format!("request {request_id}: {e}");
                write_request_error(&mut send, e.code(), msg, request_id).await?
            }
        }
    }
    send.finish()?;
    Ok(())
}

impl Timing {
    fn observe(&self, broker: &Broker) {
        if let Some(acks) = self.1 {
            broker.telemetry().observe_produce(acks, self.0.elapsed());
        }
    }
}
