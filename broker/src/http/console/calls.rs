//! Calls into the broker's services as a viewer, the way the QUIC transport makes them: each
//! request checked through the one request table (`auth/table.rs`), answered by the same service
//! function, list answers filtered to what the principal may describe. Synchronous: callers run
//! them on the blocking pool ([`crate::offload`]).

use bytes::Bytes;
use quiver_proto::groups::{GroupRequest, GroupResponse};
use quiver_proto::messages::{AdminRequest, AdminResponse};

use crate::auth::{Principal, Request};
use crate::error::BrokerError;
use crate::Broker;

/// One admin request, as the QUIC admin stream answers it.
pub fn admin(
    broker: &Broker,
    principal: &Principal,
    req: AdminRequest,
) -> Result<AdminResponse, BrokerError> {
    broker.authorize(principal, Request::Admin(&req))?;
    let mut answer = broker.admin().handle(principal, req, Bytes::new())?;
    broker.auth().filter_admin(principal, &mut answer);
    Ok(answer)
}

/// One group request, as the QUIC group stream answers it: on a cluster by the groups'
/// coordinator, which knows their members (this runs on the blocking pool, so it may wait
/// for the forwarded call).
pub fn group(
    broker: &Broker,
    principal: &Principal,
    req: GroupRequest,
) -> Result<GroupResponse, BrokerError> {
    broker.authorize(principal, Request::Group(&req))?;
    let mut answer = match broker.cluster() {
        Some(_) => tokio::runtime::Handle::current().block_on(broker.group(req))?,
        None => broker.groups().handle(req)?,
    };
    broker.auth().filter_groups(principal, &mut answer);
    Ok(answer)
}

/// An answer of the wrong kind: a broker bug, not the caller's.
pub fn unexpected(what: &str) -> BrokerError {
    BrokerError::Internal(format!("unexpected answer to {what}"))
}
