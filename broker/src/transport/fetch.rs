//! The fetch session of one stream: each request is answered in turn by the fetch service (a
//! session keeps the stream's read-filter instance). A parked long-poll is not in-flight work:
//! shutdown answers it at once with a retriable error.

use std::sync::Arc;

use bytes::Bytes;
use quiver_proto::frame::{Frame, FrameKind};
use quiver_proto::messages::FetchRequest;
use quiver_wire::{decode_frame, write_frame, write_request_error, WireError};

use super::requests::{authorize, reject, Requests};
use crate::auth::{Principal, Request};
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
        let fetched = match authorize(&broker, &principal, Request::Fetch(&req)) {
            Ok(()) => tokio::select! {
                r = session.fetch(&req) => r,
                _ = reader.shutdown.cancelled() => Err(BrokerError::ShuttingDown),
            },
            Err(e) => Err(e),
        };
        match fetched {
            Ok((resp, bytes)) => write_frame(&mut send, FrameKind::FetchOk, &resp, bytes).await?,
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
