//! A cluster node: this broker's membership in the metadata Raft group (openraft). Every admin
//! write (topics, exchanges, plugins and attachments, users, ACLs, quotas, mirrors) is proposed
//! to the group and applied on every node through the same services a single broker uses, so any
//! node answers metadata reads from its own stores; a write that reaches a follower is forwarded
//! to the leader. Single-node brokers never start this module.
//!
//! Files: the replicated types (`types.rs`), the Raft log (`log_store.rs`), the state machine
//! (`state_machine.rs`), the links between nodes (`network.rs` dials, `peer_server.rs` answers).

// openraft's error types are a few hundred bytes and its traits fix the signatures that return
// them; its messages are enums of its request types, built once per RPC.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

mod log_store;
mod network;
mod peer_server;
mod state_machine;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use quiver_proto::messages::{ClusterNodeStatus, ClusterStatus};
use tokio_util::sync::CancellationToken;

use crate::config::ClusterConfig;
use network::{Forwarded, Network, PeerRequest, PeerResponse, Peers};
pub use state_machine::Applier;
use types::Raft;
pub use types::{node_name, MetaCommand, MetaResult, NodeId, PartitionState, SettledPoint};

/// Answers a service's requests that reach this node over the peer link: partition replicas'
/// (the replication service) and forwarded consumer-group requests (the group coordinator).
/// The bytes are the service's own messages.
pub trait PeerHandler: Send + Sync + 'static {
    fn handle(&self, request: Vec<u8>) -> futures_util::future::BoxFuture<'static, Vec<u8>>;
}

/// The services that answer peers besides Raft.
pub struct PeerServices {
    pub replicas: Arc<dyn PeerHandler>,
    pub groups: Arc<dyn PeerHandler>,
    pub delays: Arc<dyn PeerHandler>,
}

/// How long an admin write waits for a leader (an election takes a few heartbeats).
const WRITE_WAIT: Duration = Duration::from_secs(15);
/// How long one write may take once proposed (it may compile a component on every node).
const FORWARD_TTL: Duration = Duration::from_secs(120);

/// Errors of a cluster node.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot open the Raft store at {}: {source}", path.display())]
    Open { path: PathBuf, source: sled::Error },
    #[error("Raft storage: {0}")]
    Storage(String),
    #[error("cannot listen for peers on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid Raft settings: {0}")]
    Config(String),
    #[error("cannot reach a peer: {0}")]
    Unreachable(String),
    #[error("peer link: {0}")]
    Peer(String),
    #[error("no Raft leader took the write within {0:?} (an election, or a majority of nodes down); retry")]
    NoLeader(Duration),
    #[error("the write was not committed within {0:?} (a majority of nodes unreachable?); it may still be applied if they come back")]
    Uncommitted(Duration),
    #[error("Raft: {0}")]
    Raft(String),
}

impl ClusterError {
    /// The code a client sees: waiting for a leader or a peer is worth a retry.
    pub fn code(&self) -> quiver_proto::ErrorCode {
        use quiver_proto::ErrorCode as C;
        match self {
            ClusterError::NoLeader(_)
            | ClusterError::Uncommitted(_)
            | ClusterError::Unreachable(_)
            | ClusterError::Peer(_) => C::Timeout,
            ClusterError::Open { .. } | ClusterError::Storage(_) => C::StorageError,
            ClusterError::Bind { .. } | ClusterError::Config(_) | ClusterError::Raft(_) => {
                C::Internal
            }
        }
    }
}

/// This node's part in the cluster.
pub struct Cluster {
    node_id: NodeId,
    /// Every member's id, ascending (the membership is fixed by configuration).
    members: Vec<NodeId>,
    raft: Raft,
    peers: Arc<Peers>,
    endpoint: quinn::Endpoint,
    stop: CancellationToken,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Opens the Raft store under `data_dir/raft`, listens for peers at this node's member
    /// address (with the given mutual-TLS configurations) and joins the group; on a first start
    /// every node proposes the configured membership (openraft accepts the same one from all).
    pub async fn start(
        config: &ClusterConfig,
        data_dir: &Path,
        applier: Arc<dyn Applier>,
        services: PeerServices,
        (server, client): (quinn::ServerConfig, quinn::ClientConfig),
    ) -> Result<Arc<Cluster>, ClusterError> {
        let path = data_dir.join("raft");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(16 << 20)
            .open()
            .map_err(|source| ClusterError::Open { path, source })?;
        let log = log_store::LogStore::open(&db).map_err(storage)?;
        let mut sm = state_machine::StateMachine::open(&db, applier).map_err(storage)?;
        sm.recover().await.map_err(storage)?;
        let addr = config
            .own_addr()
            .ok_or_else(|| ClusterError::Config("this node is not a member".into()))?;
        let mut endpoint = quiver_wire::packets::endpoint(
            addr,
            quinn::EndpointConfig::default(),
            Some(server),
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| ClusterError::Bind { addr, source })?;
        endpoint.set_default_client_config(client);
        let peers = Peers::new(endpoint.clone());
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config(config)?),
            Network(peers.clone()),
            log,
            sm,
        )
        .await
        .map_err(raft_err)?;
        let stop = CancellationToken::new();
        let handlers = peer_server::Handlers {
            raft: raft.clone(),
            replicas: services.replicas,
            groups: services.groups,
            delays: services.delays,
        };
        tokio::spawn(peer_server::serve(endpoint.clone(), handlers, stop.clone()));
        let mut members: Vec<NodeId> = config.members.iter().map(|m| m.id).collect();
        members.sort_unstable();
        let cluster = Arc::new(Cluster {
            node_id: config.node_id,
            members,
            raft,
            peers,
            endpoint,
            stop,
        });
        cluster.initialize(config).await?;
        tracing::info!(node = config.node_id, peers = %addr, "cluster node started (QUIC, ALPN quiver-raft/1)");
        Ok(cluster)
    }

    async fn initialize(&self, config: &ClusterConfig) -> Result<(), ClusterError> {
        if self.raft.is_initialized().await.map_err(raft_err)? {
            return Ok(());
        }
        let members: BTreeMap<NodeId, BasicNode> = config
            .members
            .iter()
            .map(|m| (m.id, BasicNode::new(m.addr.to_string())))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(raft_err(e)),
        }
    }

    /// Proposes `command` and waits until it is applied on the leader (and so committed on a
    /// majority); a follower forwards it to the leader. Waits out an election up to
    /// [`WRITE_WAIT`]. A forwarded write whose answer was lost is proposed again, so a retried
    /// create may answer that the thing exists (docs/replication.md).
    pub async fn write(&self, command: MetaCommand) -> Result<MetaResult, ClusterError> {
        let deadline = Instant::now() + WRITE_WAIT;
        loop {
            match self.try_write(&command).await {
                Forwarded::Done(result) => return Ok(result),
                Forwarded::Failed(message) => return Err(ClusterError::Raft(message)),
                Forwarded::TimedOut => return Err(ClusterError::Uncommitted(FORWARD_TTL)),
                Forwarded::NotLeader if Instant::now() >= deadline => {
                    return Err(ClusterError::NoLeader(WRITE_WAIT));
                }
                Forwarded::NotLeader => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn try_write(&self, command: &MetaCommand) -> Forwarded {
        let Some(leader) = self.raft.metrics().borrow().current_leader else {
            return Forwarded::NotLeader;
        };
        let addr = self.member_addr(leader);
        if leader == self.node_id {
            // A leader cut off from its majority does not know it yet: bound the wait (the
            // proposal may still commit later, if the majority comes back).
            let proposed = peer_server::propose(&self.raft, command.clone());
            return match tokio::time::timeout(FORWARD_TTL, proposed).await {
                Ok(f) => f,
                Err(_) => Forwarded::TimedOut,
            };
        }
        let Some(addr) = addr else {
            return Forwarded::NotLeader;
        };
        let request = PeerRequest::Forward(command.clone());
        // A leader that dies with the write in hand never answers: when the others elect a new
        // one, ask that one instead of waiting for the dead link to time out.
        let answer = tokio::select! {
            a = self.peers.call(leader, &addr, &request, FORWARD_TTL) => a,
            () = self.leader_changes_from(leader) => return Forwarded::NotLeader,
        };
        match answer {
            Ok(PeerResponse::Forwarded(f)) => f,
            Ok(other) => Forwarded::Failed(format!("node {leader} answered {other:?}")),
            Err(e) => {
                tracing::debug!(leader, error = %e, "forwarding a write failed; retrying");
                Forwarded::NotLeader
            }
        }
    }

    /// Returns once this node knows of a leader other than `leader` (or of none).
    async fn leader_changes_from(&self, leader: NodeId) {
        let mut metrics = self.raft.metrics();
        loop {
            if metrics.borrow().current_leader != Some(leader) {
                return;
            }
            if metrics.changed().await.is_err() {
                // Raft stopped: the forwarded call decides.
                return std::future::pending().await;
            }
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Every member's id, ascending.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// Whether this node is the Raft leader now (and so the controller of partition leaders).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// When `node` last answered this node over the peer link (the Raft leader calls every
    /// live node at each heartbeat).
    pub fn last_answer(&self, node: NodeId) -> Option<Instant> {
        self.peers.last_answer(node)
    }

    /// Sends a replica request to `node` and returns its answer, within `ttl`.
    pub async fn call_replica(
        &self,
        node: NodeId,
        request: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, ClusterError> {
        match self.call(node, PeerRequest::Replica(request), ttl).await? {
            PeerResponse::Replica(answer) => Ok(answer),
            other => Err(unexpected(node, other)),
        }
    }

    /// Sends a consumer-group request to `node` (the coordinator) and returns its answer.
    pub async fn call_group(
        &self,
        node: NodeId,
        request: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, ClusterError> {
        match self.call(node, PeerRequest::Group(request), ttl).await? {
            PeerResponse::Group(answer) => Ok(answer),
            other => Err(unexpected(node, other)),
        }
    }

    /// Sends a delayed-record request to `node` (a delay shard's leader) and returns its answer.
    pub async fn call_delay(
        &self,
        node: NodeId,
        request: Vec<u8>,
        ttl: Duration,
    ) -> Result<Vec<u8>, ClusterError> {
        match self.call(node, PeerRequest::Delay(request), ttl).await? {
            PeerResponse::Delay(answer) => Ok(answer),
            other => Err(unexpected(node, other)),
        }
    }

    async fn call(
        &self,
        node: NodeId,
        request: PeerRequest,
        ttl: Duration,
    ) -> Result<PeerResponse, ClusterError> {
        let addr = self
            .member_addr(node)
            .ok_or_else(|| ClusterError::Unreachable(format!("node {node} is not a member")))?;
        self.peers.call(node, &addr, &request, ttl).await
    }

    /// The Raft leader as this node knows it.
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow().current_leader
    }

    /// A member's peer address.
    fn member_addr(&self, node: NodeId) -> Option<String> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let addr = m
            .membership_config
            .nodes()
            .find(|(id, _)| **id == node)
            .map(|(_, n)| n.addr.clone());
        addr
    }

    /// Members, leader and term as this node sees them.
    pub fn status(&self) -> ClusterStatus {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        let matched = |id: NodeId| {
            m.replication
                .as_ref()
                .map(|r| r.get(&id).copied().flatten().map_or(0, |l| l.index))
        };
        let nodes = m
            .membership_config
            .nodes()
            .map(|(id, n)| ClusterNodeStatus {
                id: *id,
                addr: n.addr.clone(),
                voter: voters.contains(id),
                client_addr: None,
                matched: matched(*id),
            })
            .collect();
        ClusterStatus {
            node_id: self.node_id,
            leader: m.current_leader,
            term: m.current_term,
            applied: m.last_applied.map_or(0, |l| l.index),
            nodes,
            partitions: Vec::new(),
        }
    }

    /// Leaves the group (peers elect without it) and closes the peer endpoint.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "Raft did not stop cleanly");
        }
        self.endpoint.close(0u32.into(), b"node shutting down");
    }
}

fn raft_config(config: &ClusterConfig) -> Result<openraft::Config, ClusterError> {
    let heartbeat = config.heartbeat_ms;
    openraft::Config {
        cluster_name: "quiver".into(),
        heartbeat_interval: heartbeat,
        election_timeout_min: heartbeat * 4,
        election_timeout_max: heartbeat * 8,
        // Snapshots bound the log; a lagging node installs one instead of every old entry.
        snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_logs),
        // Entries may carry components: small batches (network.rs splits large ones further),
        // and time for a snapshot's last chunk, whose install replays the journal.
        max_payload_entries: 16,
        install_snapshot_timeout: 60_000,
        max_in_snapshot_log_to_keep: config.snapshot_logs / 10,
        ..Default::default()
    }
    .validate()
    .map_err(|e| ClusterError::Config(e.to_string()))
}

fn storage(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Storage(e.to_string())
}

fn raft_err(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Raft(e.to_string())
}

fn unexpected(node: NodeId, answer: PeerResponse) -> ClusterError {
    ClusterError::Peer(format!("node {node} answered {answer:?}"))
}
