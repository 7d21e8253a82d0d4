//! The links between nodes, server side: accepts peers on the node's peer address (mutual TLS;
//! only certificates named `quiver-node-<id>` by the cluster's CA are nodes), reads one request
//! per stream and hands it to Raft (append, vote and snapshot messages, and admin writes that a
//! follower forwards to the leader) or to a service (partition replicas, consumer groups).

use std::sync::Arc;

use openraft::error::{ClientWriteError, RaftError};
use rustls::pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

use super::network::{Forwarded, PeerRequest, PeerResponse, MAX_PEER_MESSAGE};
use super::types::{MetaCommand, Raft, NODE_NAME_PREFIX};
use super::PeerHandler;
use crate::auth::{principal::from_certificate, PrincipalFrom};

/// What a peer connection hands its requests to.
#[derive(Clone)]
pub struct Handlers {
    pub raft: Raft,
    pub replicas: Arc<dyn PeerHandler>,
    pub groups: Arc<dyn PeerHandler>,
    pub delays: Arc<dyn PeerHandler>,
}

/// Serves peers until `stop` is cancelled or the endpoint closes.
pub async fn serve(endpoint: quinn::Endpoint, handlers: Handlers, stop: CancellationToken) {
    loop {
        let incoming = tokio::select! {
            _ = stop.cancelled() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        tokio::spawn(connection(incoming, handlers.clone(), stop.clone()));
    }
}

async fn connection(incoming: quinn::Incoming, handlers: Handlers, stop: CancellationToken) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "a peer connection failed its handshake");
            return;
        }
    };
    if !is_node(&conn) {
        tracing::warn!(%remote, "refused a peer connection: its certificate is not a node's");
        conn.close(1u32.into(), b"not a cluster node");
        return;
    }
    loop {
        let (send, recv) = tokio::select! {
            _ = stop.cancelled() => break,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        tokio::spawn(stream(send, recv, handlers.clone()));
    }
}

/// Whether the verified client certificate names a node (a client certificate the same CA
/// signed for a person must not speak Raft).
fn is_node(conn: &quinn::Connection) -> bool {
    let Some(identity) = conn.peer_identity() else {
        return false;
    };
    let Ok(chain) = identity.downcast::<Vec<CertificateDer<'static>>>() else {
        return false;
    };
    chain
        .first()
        .and_then(|leaf| from_certificate(leaf, PrincipalFrom::Cn))
        .is_some_and(|name| name.starts_with(NODE_NAME_PREFIX))
}

async fn stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream, handlers: Handlers) {
    let Ok(bytes) = recv.read_to_end(MAX_PEER_MESSAGE).await else {
        return;
    };
    let answer = match rmp_serde::from_slice::<PeerRequest>(&bytes) {
        Ok(request) => handle(request, &handlers).await,
        Err(e) => PeerResponse::Refused(format!("cannot read the request: {e}")),
    };
    match rmp_serde::to_vec_named(&answer) {
        Ok(bytes) => {
            // A peer that went away only loses its answer; Raft retries.
            let _ = send.write_all(&bytes).await;
            let _ = send.finish();
        }
        Err(e) => tracing::error!(error = %e, "cannot encode a peer answer"),
    }
}

async fn handle(request: PeerRequest, handlers: &Handlers) -> PeerResponse {
    let raft = &handlers.raft;
    match request {
        PeerRequest::Append(r) => PeerResponse::Append(raft.append_entries(r).await),
        PeerRequest::Snapshot(r) => PeerResponse::Snapshot(raft.install_snapshot(r).await),
        PeerRequest::Vote(r) => PeerResponse::Vote(raft.vote(r).await),
        PeerRequest::Forward(command) => PeerResponse::Forwarded(propose(raft, command).await),
        PeerRequest::Replica(r) => PeerResponse::Replica(handlers.replicas.handle(r).await),
        PeerRequest::Group(r) => PeerResponse::Group(handlers.groups.handle(r).await),
        PeerRequest::Delay(r) => PeerResponse::Delay(handlers.delays.handle(r).await),
    }
}

/// Proposes a write on this node (the leader, as the forwarding node believed).
pub async fn propose(raft: &Raft, command: MetaCommand) -> Forwarded {
    match raft.client_write(command).await {
        Ok(r) => Forwarded::Done(r.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Forwarded::NotLeader,
        Err(e) => Forwarded::Failed(e.to_string()),
    }
}
