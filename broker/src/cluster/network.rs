//! The links between nodes, client side: one QUIC connection per peer (mutual TLS, made by the
//! caller's endpoint configuration), one bidirectional stream per call, the request and answer
//! each one rmp-serde message. openraft's network traits are implemented on top.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
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

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// An admin write that reached a follower, for the leader to propose.
    Forward(MetaCommand),
}

/// The answer to a [`PeerRequest`], of the same kind.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Forwarded(Forwarded),
    /// The request could not be read.
    Refused(String),
}

/// What became of a forwarded write.
#[derive(Debug, Serialize, Deserialize)]
pub enum Forwarded {
    Done(MetaResult),
    /// The node is not (or no longer) the leader: ask again.
    NotLeader,
    Failed(String),
}

/// This node's connections to its peers.
#[derive(Debug)]
pub struct Peers {
    endpoint: quinn::Endpoint,
    connections: Mutex<HashMap<NodeId, quinn::Connection>>,
}

impl Peers {
    pub fn new(endpoint: quinn::Endpoint) -> Arc<Peers> {
        Arc::new(Peers {
            endpoint,
            connections: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `request` to node `target` at `addr` and reads its answer, within `ttl`.
    pub async fn call(
        &self,
        target: NodeId,
        addr: &str,
        request: &PeerRequest,
        ttl: Duration,
    ) -> Result<PeerResponse, ClusterError> {
        let bytes = rmp_serde::to_vec_named(request)
            .map_err(|e| ClusterError::Peer(format!("encoding a request: {e}")))?;
        let connection =
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connection(target, addr)).await {
                Ok(c) => c?,
                Err(_) => {
                    return Err(ClusterError::Unreachable(format!(
                        "node {target} at {addr}: no handshake within {CONNECT_TIMEOUT:?}"
                    )))
                }
            };
        let exchange = async {
            let (mut send, mut recv) = connection.open_bi().await.map_err(peer_io)?;
            send.write_all(&bytes).await.map_err(peer_io)?;
            send.finish().map_err(peer_io)?;
            let answer = recv.read_to_end(MAX_PEER_MESSAGE).await.map_err(peer_io)?;
            rmp_serde::from_slice(&answer)
                .map_err(|e| ClusterError::Peer(format!("node {target} answered garbage: {e}")))
        };
        match tokio::time::timeout(ttl, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(ClusterError::Peer(format!(
                "node {target} did not answer within {ttl:?}"
            ))),
        }
    }

    /// The open connection to `target`, or a new one (checked: the peer must hold the
    /// certificate of node `target`).
    async fn connection(
        &self,
        target: NodeId,
        addr: &str,
    ) -> Result<quinn::Connection, ClusterError> {
        if let Some(c) = self.connections.lock().get(&target) {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let socket: SocketAddr = addr.parse().map_err(|e| {
            ClusterError::Unreachable(format!("node {target} address {addr:?}: {e}"))
        })?;
        let connecting = self
            .endpoint
            .connect(socket, &node_name(target))
            .map_err(|e| ClusterError::Unreachable(format!("node {target} at {addr}: {e}")))?;
        let connection = connecting
            .await
            .map_err(|e| ClusterError::Unreachable(format!("node {target} at {addr}: {e}")))?;
        self.connections.lock().insert(target, connection.clone());
        Ok(connection)
    }
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
            .map_err(|e| match e {
                ClusterError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
                e => RPCError::Network(NetworkError::new(&e)),
            })
    }

    fn remote<T, E: std::error::Error>(
        &self,
        answer: Result<T, RaftError<NodeId, E>>,
    ) -> RpcResult<T, E> {
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
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
        match self
            .call(PeerRequest::Append(rpc), &option)
            .await
            .map_err(narrow)?
        {
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
