//! The links between nodes, client side: one QUIC connection per peer (mutual TLS, made by the
//! caller's endpoint configuration), one bidirectional stream per call, the request and answer
//! each one rmp-serde message. openraft's network traits are implemented on top.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, FutureExt, Shared};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::types::{node_name, MetaCommand, MetaResult, Node, NodeId, TypeConfig};
use super::ClusterError;

/// The largest message a node reads from a peer (a log batch can carry deployed components).
pub const MAX_PEER_MESSAGE: usize = 512 << 20;

/// A handshake gets its own time, apart from a call's: a first handshake (certificate checks)
/// may take longer than a heartbeat's time-to-live, and cutting it off would only start over.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// An encoded append larger than this is sent in smaller batches.
const LARGE_APPEND: usize = 4 << 20;

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// An admin write that reached a follower, for the leader to propose.
    Forward(MetaCommand),
    /// A partition replica's request (a follower fetching, docs/replication.md), opaque here.
    Replica(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A consumer-group request a node forwards to the groups' coordinator, opaque here.
    Group(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A delayed-record request a node hands to a delay shard's leader, opaque here.
    Delay(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// The answer to a [`PeerRequest`], of the same kind.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Forwarded(Forwarded),
    Replica(#[serde(with = "serde_bytes")] Vec<u8>),
    Group(#[serde(with = "serde_bytes")] Vec<u8>),
    Delay(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The request could not be read.
    Refused(String),
}

/// What became of a forwarded write.
#[derive(Debug, Serialize, Deserialize)]
pub enum Forwarded {
    Done(MetaResult),
    /// The node is not (or no longer) the leader: ask again.
    NotLeader,
    /// Proposed, but not committed in time (the leader may have lost its majority).
    TimedOut,
    Failed(String),
}

/// This node's connections to its peers.
pub struct Peers {
    endpoint: quinn::Endpoint,
    links: Mutex<HashMap<NodeId, Link>>,
    /// When each peer last answered a call (the Raft leader hears from every live node at
    /// each heartbeat, which is how the controller tells dead nodes).
    answered: Mutex<HashMap<NodeId, Instant>>,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").finish_non_exhaustive()
    }
}

impl Peers {
    pub fn new(endpoint: quinn::Endpoint) -> Arc<Peers> {
        Arc::new(Peers {
            endpoint,
            links: Mutex::new(HashMap::new()),
            answered: Mutex::new(HashMap::new()),
        })
    }

    /// When `node` last answered a call from this node.
    pub fn last_answer(&self, node: NodeId) -> Option<Instant> {
        self.answered.lock().get(&node).copied()
    }

    /// Sends `request` to node `target` at `addr` and reads its answer, within `ttl`.
    pub async fn call(
        &self,
        target: NodeId,
        addr: &str,
        request: &PeerRequest,
        ttl: Duration,
    ) -> Result<PeerResponse, ClusterError> {
        self.call_encoded(target, addr, encode_request(request)?, ttl)
            .await
    }

    /// [`Peers::call`] with the request already encoded.
    pub async fn call_encoded(
        &self,
        target: NodeId,
        addr: &str,
        bytes: Vec<u8>,
        ttl: Duration,
    ) -> Result<PeerResponse, ClusterError> {
        let connection = self.connection(target, addr).await?;
        let exchange = async {
            let (mut send, mut recv) = connection.open_bi().await.map_err(peer_io)?;
            send.write_all(&bytes).await.map_err(peer_io)?;
            send.finish().map_err(peer_io)?;
            let answer = recv.read_to_end(MAX_PEER_MESSAGE).await.map_err(peer_io)?;
            rmp_serde::from_slice(&answer)
                .map_err(|e| ClusterError::Peer(format!("node {target} answered garbage: {e}")))
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(Ok(answer)) => {
                self.answered.lock().insert(target, Instant::now());
                Ok(answer)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClusterError::Peer(format!(
                "node {target} did not answer within {ttl:?}"
            ))),
        }
    }

    /// The open connection to `target`, or the handshake under way to it, or a new one (the
    /// peer must hold the certificate of node `target`). A handshake runs in its own task, so
    /// a caller that gives up (openraft times a heartbeat out) does not cut it off: the next
    /// call finds it done.
    async fn connection(
        &self,
        target: NodeId,
        addr: &str,
    ) -> Result<quinn::Connection, ClusterError> {
        let handshake = {
            let mut links = self.links.lock();
            match links.get(&target) {
                Some(Link::Up(c)) if c.close_reason().is_none() => return Ok(c.clone()),
                Some(Link::Connecting(h)) => h.clone(),
                _ => {
                    let h = connect(self.endpoint.clone(), target, addr.to_owned())
                        .boxed()
                        .shared();
                    tokio::spawn(h.clone());
                    links.insert(target, Link::Connecting(h.clone()));
                    h
                }
            }
        };
        let result = handshake.await;
        let mut links = self.links.lock();
        match result {
            Ok(c) => {
                links.insert(target, Link::Up(c.clone()));
                Ok(c)
            }
            Err(e) => {
                // The next call starts a new handshake.
                if matches!(links.get(&target), Some(Link::Connecting(_))) {
                    links.remove(&target);
                }
                Err(ClusterError::Unreachable(e))
            }
        }
    }
}

type Handshake = Shared<BoxFuture<'static, Result<quinn::Connection, String>>>;

/// A peer link: up, or its handshake under way.
enum Link {
    Up(quinn::Connection),
    Connecting(Handshake),
}

async fn connect(
    endpoint: quinn::Endpoint,
    target: NodeId,
    addr: String,
) -> Result<quinn::Connection, String> {
    let socket: SocketAddr = addr
        .parse()
        .map_err(|e| format!("node {target} address {addr:?}: {e}"))?;
    let connecting = endpoint
        .connect(socket, &node_name(target))
        .map_err(|e| format!("node {target} at {addr}: {e}"))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(c) => c.map_err(|e| format!("node {target} at {addr}: {e}")),
        Err(_) => Err(format!(
            "node {target} at {addr}: no handshake within {CONNECT_TIMEOUT:?}"
        )),
    }
}

fn encode_request(request: &PeerRequest) -> Result<Vec<u8>, ClusterError> {
    rmp_serde::to_vec_named(request)
        .map_err(|e| ClusterError::Peer(format!("encoding a request: {e}")))
}

fn peer_io(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Peer(e.to_string())
}

/// openraft's network factory: one [`PeerClient`] per target.
#[derive(Debug, Clone)]
pub struct Network(pub Arc<Peers>);

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> PeerClient {
        PeerClient {
            peers: self.0.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// The link to one peer, as openraft uses it.
pub struct PeerClient {
    peers: Arc<Peers>,
    target: NodeId,
    addr: String,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, Node, RaftError<NodeId, E>>>;

impl PeerClient {
    async fn call(
        &self,
        request: PeerRequest,
        option: &RPCOption,
    ) -> Result<PeerResponse, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        self.peers
            .call(self.target, &self.addr, &request, option.hard_ttl())
            .await
            .map_err(transport_error)
    }

    fn remote<T, E: std::error::Error>(
        &self,
        answer: Result<T, RaftError<NodeId, E>>,
    ) -> RpcResult<T, E> {
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

fn transport_error(
    e: ClusterError,
) -> RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>> {
    match e {
        ClusterError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
        e => RPCError::Network(NetworkError::new(&e)),
    }
}

/// A wrong kind of answer: the peer runs something else.
fn mismatch<E: std::error::Error>(
    answer: PeerResponse,
) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
    let e = ClusterError::Peer(format!("unexpected answer: {answer:?}"));
    RPCError::Network(NetworkError::new(&e))
}

/// Keeps the transport error and drops the type of the remote error it could not have carried.
fn narrow<E: std::error::Error>(
    e: RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>,
) -> RPCError<NodeId, Node, RaftError<NodeId, E>> {
    match e {
        RPCError::Unreachable(u) => RPCError::Unreachable(u),
        RPCError::Network(n) => RPCError::Network(n),
        other => RPCError::Network(NetworkError::new(&other)),
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let entries = rpc.entries.len() as u64;
        let bytes = encode_request(&PeerRequest::Append(rpc))
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // openraft gives an append one heartbeat: a batch carrying components is sent in
        // smaller batches (down to one entry) so each fits.
        if bytes.len() > LARGE_APPEND && entries > 1 {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            ));
        }
        let answer = self
            .peers
            .call_encoded(self.target, &self.addr, bytes, option.hard_ttl())
            .await
            .map_err(transport_error)
            .map_err(narrow)?;
        match answer {
            PeerResponse::Append(answer) => self.remote(answer),
            other => Err(mismatch(other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.call(PeerRequest::Snapshot(rpc), &option).await? {
            PeerResponse::Snapshot(answer) => self.remote(answer),
            other => Err(mismatch(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        match self
            .call(PeerRequest::Vote(rpc), &option)
            .await
            .map_err(narrow)?
        {
            PeerResponse::Vote(answer) => self.remote(answer),
            other => Err(mismatch(other)),
        }
    }
}
