//! Partition replication on a cluster node (docs/replication.md), as Kafka does it: every
//! partition has a replica set, one leader per leader epoch and a set of in-sync replicas
//! (ISR), all held by the metadata Raft group (`cluster/`). The leader takes produces and
//! fetches; followers copy its log over the peer link; the high watermark is what every in-sync
//! replica has, consumers read below it and `acks=all` answers once it covers the batch. A
//! follower that falls behind leaves the ISR (the leader asks the metadata group) and comes
//! back once caught up; when a leader's node dies the controller (the Raft leader) elects an
//! in-sync replica; a returning replica cuts its divergent tail by leader epoch (KIP-101).
//!
//! Files: the placement of new partitions (`placement.rs`), the leader-epoch cache
//! (`epochs.rs`), the messages between replicas (`messages.rs`), a led partition
//! (`leader.rs`), a followed one (`follower.rs`), elections and ISR changes (`controller.rs`),
//! a graceful stop's hand-over (`handover.rs`), preferred leaders taking their partitions back
//! (`rebalance.rs`), delayed records delivered at the leader (`delivery.rs`).
//! On a single broker the service is disabled and every check passes.

mod controller;
mod delivery;
mod epochs;
mod follower;
mod handover;
mod leader;
mod messages;
mod placement;
mod rebalance;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt};
use parking_lot::{Mutex, RwLock};
use quiver_proto::messages::PartitionReplicas;
use quiver_proto::ErrorCode;
use tokio_util::sync::CancellationToken;

use crate::cluster::{Cluster, MetaCommand, NodeId, PartitionState, PeerHandler};
use crate::config::ClusterConfig;
use crate::meta::{MetaError, MetaStore, Namespace};
use crate::storage::{PartitionLog, TopicStore};
use epochs::EpochCache;
use leader::{Leader, Stopped};
use messages::{decode, encode, ReplicaRequest, ReplicaResponse};

/// How long an `acks=all` produce waits for its in-sync replicas.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// The internal topic of the delay shards (`delay/shards.rs`): one partition per member, each a
/// delay log replicated like any partition. Its logs are not in the topic store (clients cannot
/// name it); the broker opens them and hands them over at start.
pub const DELAY_TOPIC: &str = "__quiver.delay";

/// Errors of partition replication.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("node {node} does not lead {topic}/{partition}; {}: refresh metadata and retry", leader_text(*leader, addr.as_deref()))]
    NotLeader {
        node: NodeId,
        topic: String,
        partition: u32,
        leader: Option<NodeId>,
        addr: Option<String>,
    },
    #[error("{topic}/{partition} has {isr} in-sync replicas, fewer than its min-insync {min}: acks=all produce is refused until followers catch up; retry")]
    NotEnoughReplicas {
        topic: String,
        partition: u32,
        isr: usize,
        min: u32,
    },
    #[error("{topic}/{partition}: the in-sync replicas did not confirm offset {end} within {waited:?}; the records may still be committed, retry (idempotent producers get no duplicates)")]
    Timeout {
        topic: String,
        partition: u32,
        end: u64,
        waited: Duration,
    },
    #[error("invalid replication: {0}")]
    Invalid(String),
    #[error("replica state: {0}")]
    Io(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl ReplicationError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ReplicationError::NotLeader { .. } => ErrorCode::NotLeader,
            ReplicationError::NotEnoughReplicas { .. } => ErrorCode::NotEnoughReplicas,
            ReplicationError::Timeout { .. } => ErrorCode::Timeout,
            ReplicationError::Invalid(_) => ErrorCode::InvalidConfig,
            ReplicationError::Io(_) => ErrorCode::StorageError,
            ReplicationError::Meta(e) => e.code(),
        }
    }
}

fn leader_text(leader: Option<NodeId>, addr: Option<&str>) -> String {
    match (leader, addr) {
        (Some(l), Some(a)) => format!("node {l} at {a} does"),
        (Some(l), None) => format!("node {l} does"),
        (None, _) => "no in-sync replica is alive to lead it yet".into(),
    }
}

/// The cluster settings replication works with.
#[derive(Debug, Clone)]
struct Settings {
    node: NodeId,
    members: Vec<NodeId>,
    default_rf: u32,
    lag: Duration,
    node_timeout: Duration,
    /// How often led partitions go back to their preferred leaders (`None`: never).
    rebalance: Option<Duration>,
    /// The configured client address to announce (else the address the listener got).
    advertise: Option<String>,
}

/// One partition as this node holds it.
struct Replica {
    state: PartitionState,
    log: Arc<PartitionLog>,
    epochs: Arc<Mutex<EpochCache>>,
    /// Held by the follower task writing the log (successive tasks take turns).
    writing: Arc<tokio::sync::Mutex<()>>,
    role: Role,
}

enum Role {
    Leader(Arc<Leader>),
    Follower {
        leader: NodeId,
        epoch: u64,
        stop: CancellationToken,
    },
    Idle,
}

impl Role {
    fn stop(&self) {
        match self {
            Role::Leader(l) => l.stop.cancel(),
            Role::Follower { stop, .. } => stop.cancel(),
            Role::Idle => {}
        }
    }
}

pub struct Replication {
    me: Weak<Replication>,
    settings: Option<Settings>,
    topics: Arc<TopicStore>,
    meta: MetaStore,
    /// Replicated partitions by topic, indexed by partition number.
    partitions: RwLock<HashMap<String, Vec<Replica>>>,
    /// Members' client addresses, as they registered.
    nodes: RwLock<BTreeMap<NodeId, String>>,
    cluster: OnceLock<Arc<Cluster>>,
    /// The runtime the cluster side runs on (the delay thread waits on it for deliveries).
    runtime: OnceLock<tokio::runtime::Handle>,
    /// Drawn at start: the registration carrying it tells this node that it has applied every
    /// metadata change committed before it, so it may take up its roles.
    incarnation: u64,
    active: AtomicBool,
    /// Set by a graceful stop's hand-over: this node follows nothing from then on.
    leaving: AtomicBool,
    stop: CancellationToken,
    /// Called when this node takes the lead of a partition, before it takes writes (the
    /// produce service learns the producer sequences in the log).
    on_lead: OnceLock<LeadHook>,
    /// The logs of [`DELAY_TOPIC`]'s partitions, by number.
    delay_logs: Vec<Arc<PartitionLog>>,
}

/// What runs when this node takes the lead of a partition.
pub type LeadHook = Box<dyn Fn(&str, u32, &PartitionLog) -> Result<(), String> + Send + Sync>;

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Replication {
    /// The service of a broker: disabled without a cluster. On a cluster node every partition
    /// refuses appends until this node knows it leads it.
    /// `delay_logs`: the delay shards' logs (a cluster node has one per member).
    pub fn new(
        cluster: Option<&ClusterConfig>,
        topics: Arc<TopicStore>,
        delay_logs: Vec<Arc<PartitionLog>>,
    ) -> Result<Arc<Replication>, ReplicationError> {
        let settings = cluster.map(|c| {
            let mut members: Vec<NodeId> = c.members.iter().map(|m| m.id).collect();
            members.sort_unstable();
            Settings {
                node: c.node_id,
                members,
                default_rf: c.default_replication_factor(),
                lag: Duration::from_millis(c.replica_lag_ms),
                node_timeout: Duration::from_millis(c.node_timeout_ms),
                rebalance: (c.leader_rebalance_ms > 0)
                    .then(|| Duration::from_millis(c.leader_rebalance_ms)),
                advertise: c.advertise.clone(),
            }
        });
        let meta = topics.meta().clone();
        let this = Arc::new_cyclic(|me| Replication {
            me: me.clone(),
            settings,
            topics,
            meta,
            partitions: RwLock::default(),
            nodes: RwLock::default(),
            cluster: OnceLock::new(),
            runtime: OnceLock::new(),
            incarnation: crate::util::rand_u64(),
            active: AtomicBool::new(false),
            leaving: AtomicBool::new(false),
            stop: CancellationToken::new(),
            on_lead: OnceLock::new(),
            delay_logs,
        });
        if this.settings.is_some() {
            this.topics.fence_partitions();
            for log in &this.delay_logs {
                log.set_follower(true);
            }
            this.load()?;
            this.place_delay_shards()?;
        }
        Ok(this)
    }

    /// Places the delay shards the first time this node starts: like a topic created with the
    /// cluster's default factor, computed (not proposed) because every node computes the same
    /// from the member list before it applies anything; elections and ISR changes then go
    /// through Raft as for any partition.
    fn place_delay_shards(&self) -> Result<(), ReplicationError> {
        if self.partitions.read().contains_key(DELAY_TOPIC) {
            return Ok(());
        }
        let s = self.settings()?;
        let count = self.delay_logs.len() as u32;
        for (p, state) in placement::assign(DELAY_TOPIC, 0, count, s.default_rf, 1, &s.members)
            .into_iter()
            .enumerate()
        {
            self.put(DELAY_TOPIC, p as u32, state, true)?;
        }
        Ok(())
    }

    /// The log of a partition this node holds (the delay shards' are not in the topic store).
    fn log_of(&self, topic: &str, p: u32) -> Result<Arc<PartitionLog>, String> {
        if topic == DELAY_TOPIC {
            return self
                .delay_logs
                .get(p as usize)
                .cloned()
                .ok_or_else(|| format!("no delay shard {p}"));
        }
        self.topics.partition(topic, p).map_err(|e| e.to_string())
    }

    /// The leader epoch of a partition this node leads now (`None`: it does not).
    pub fn led_epoch(&self, topic: &str, p: u32) -> Option<u64> {
        self.leader_of(topic, p).ok().flatten().map(|l| l.epoch)
    }

    /// The node leading a partition, as this node last applied it.
    pub fn leader_node(&self, topic: &str, p: u32) -> Option<NodeId> {
        self.state(topic, p).and_then(|s| s.leader)
    }

    /// Whether a topic's partitions are replicated (created through the metadata group).
    pub fn is_replicated(&self, topic: &str) -> bool {
        self.partitions.read().contains_key(topic)
    }

    /// The cluster this node joined, once it has.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// The runtime the cluster side runs on (blocking callers wait on it).
    pub fn runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.get()
    }

    pub fn enabled(&self) -> bool {
        self.settings.is_some()
    }

    /// Sets what runs when this node takes the lead of a partition (once).
    pub fn on_lead(&self, hook: LeadHook) {
        let _ = self.on_lead.set(hook);
    }

    /// Reads the partition states and node addresses this node applied before it stopped.
    fn load(&self) -> Result<(), ReplicationError> {
        // Keys sort as text ("t/10" before "t/2"): place partitions in number order.
        let mut states: Vec<(String, u32, PartitionState)> = Vec::new();
        for (key, state) in self.meta.scan::<PartitionState>(Namespace::Replicas, "")? {
            if let Some((topic, p)) = key.rsplit_once('/') {
                if let Ok(p) = p.parse::<u32>() {
                    states.push((topic.to_owned(), p, state));
                }
            }
        }
        states.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        for (topic, p, state) in states {
            if let Err(e) = self.put(&topic, p, state, false) {
                tracing::error!(%topic, partition = p, error = %e, "a replica state was not loaded");
            }
        }
        let nodes = self.meta.scan::<String>(Namespace::ClusterNodes, "")?;
        let mut map = self.nodes.write();
        for (id, addr) in nodes {
            if let Ok(id) = id.parse() {
                map.insert(id, addr);
            }
        }
        Ok(())
    }

    /// Starts the cluster side: registers this node's client address (`listening`, unless one
    /// is configured to be announced; the registration's application tells this node it caught
    /// up and may lead) and runs the ISR and election checks.
    pub fn start(&self, cluster: Arc<Cluster>, listening: std::net::SocketAddr) {
        let Some(settings) = self.settings.clone() else {
            return;
        };
        if self.cluster.set(cluster.clone()).is_err() {
            return;
        }
        let _ = self.runtime.set(tokio::runtime::Handle::current());
        let command = MetaCommand::RegisterNode {
            node: settings.node,
            client_addr: settings
                .advertise
                .clone()
                .unwrap_or_else(|| listening.to_string()),
            incarnation: self.incarnation,
        };
        let stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                match cluster.write(command.clone()).await {
                    Ok(_) => return,
                    Err(e) => {
                        tracing::warn!(error = %e, "registering with the cluster failed; retrying")
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        if let Some(me) = self.me.upgrade() {
            tokio::spawn(controller::run(me, self.stop.clone()));
        }
    }

    /// Stops every leader and follower task.
    pub fn shutdown(&self) {
        self.stop.cancel();
        for replicas in self.partitions.read().values() {
            for r in replicas {
                r.role.stop();
            }
        }
    }

    fn settings(&self) -> Result<&Settings, ReplicationError> {
        self.settings
            .as_ref()
            .ok_or_else(|| ReplicationError::Invalid("this broker is not a cluster node".into()))
    }

    /// Checks a topic's replication settings before it is created: the factor (the cluster's
    /// default when absent; 1 on a single broker) and min-insync (1 when absent).
    pub fn check_create(
        &self,
        rf: Option<u32>,
        min_insync: Option<u32>,
    ) -> Result<(u32, u32), ReplicationError> {
        let (default, members) = match &self.settings {
            Some(s) => (s.default_rf, s.members.len() as u32),
            None => (1, 1),
        };
        let rf = rf.unwrap_or(default);
        let min = min_insync.unwrap_or(1);
        if rf == 0 || rf > members {
            let where_ = if self.enabled() {
                format!("the cluster's {members} nodes")
            } else {
                "1 on a single broker (start a cluster for more copies)".into()
            };
            return Err(ReplicationError::Invalid(format!(
                "replication factor {rf} must be between 1 and {where_}"
            )));
        }
        if min == 0 || min > rf {
            return Err(ReplicationError::Invalid(format!(
                "min-insync {min} must be between 1 and the replication factor {rf}"
            )));
        }
        Ok((rf, min))
    }

    /// A topic was created (applied on every node): places its partitions.
    pub fn topic_created(
        &self,
        topic: &str,
        partitions: u32,
        (rf, min_insync): (u32, u32),
    ) -> Result<(), ReplicationError> {
        let s = self.settings()?;
        let states = placement::assign(topic, 0, partitions, rf, min_insync, &s.members);
        for (p, state) in states.into_iter().enumerate() {
            self.put(topic, p as u32, state, true)?;
        }
        Ok(())
    }

    /// Partitions were added to a topic: placed like the first ones.
    pub fn partitions_added(&self, topic: &str, total: u32) -> Result<(), ReplicationError> {
        let s = self.settings()?;
        let (first, rf, min) = {
            let map = self.partitions.read();
            let Some(existing) = map.get(topic).filter(|v| !v.is_empty()) else {
                return Ok(());
            };
            let s0 = &existing[0].state;
            (
                existing.len() as u32,
                s0.replicas.len() as u32,
                s0.min_insync,
            )
        };
        let count = total.saturating_sub(first);
        for (i, state) in placement::assign(topic, first, count, rf, min, &s.members)
            .into_iter()
            .enumerate()
        {
            self.put(topic, first + i as u32, state, true)?;
        }
        Ok(())
    }

    /// A topic was deleted: its replicas stop and their states go.
    pub fn topic_deleted(&self, topic: &str) -> Result<(), ReplicationError> {
        if let Some(replicas) = self.partitions.write().remove(topic) {
            for (p, r) in replicas.iter().enumerate() {
                r.role.stop();
                self.meta
                    .remove_durable(Namespace::Replicas, &format!("{topic}/{p}"))?;
            }
        }
        Ok(())
    }

    /// A node registered its client address. This node's own registration of this start
    /// means everything committed before it is applied here: it takes up its roles.
    pub fn register(
        &self,
        node: NodeId,
        addr: &str,
        incarnation: u64,
    ) -> Result<(), ReplicationError> {
        self.meta
            .put_durable(Namespace::ClusterNodes, &node.to_string(), &addr)?;
        self.nodes.write().insert(node, addr.to_owned());
        let mine = self
            .settings
            .as_ref()
            .is_some_and(|s| s.node == node && incarnation == self.incarnation);
        if mine && !self.active.swap(true, Ordering::AcqRel) {
            tracing::info!(
                node,
                "caught up with the cluster's metadata; taking up partition roles"
            );
            self.refresh_all();
        }
        Ok(())
    }

    /// A leader changed its ISR (only on the state it saw). `false`: the state moved on.
    pub fn set_isr(
        &self,
        topic: &str,
        p: u32,
        version: u64,
        isr: Vec<NodeId>,
    ) -> Result<bool, ReplicationError> {
        let Some(mut state) = self.state(topic, p).filter(|s| s.version == version) else {
            return Ok(false);
        };
        state.isr = isr;
        state.version += 1;
        self.put(topic, p, state, true)?;
        Ok(true)
    }

    /// The controller elected a leader (only on the state it saw). `false`: it is stale.
    pub fn elect(
        &self,
        topic: &str,
        p: u32,
        version: u64,
        leader: Option<NodeId>,
        isr: Vec<NodeId>,
    ) -> Result<bool, ReplicationError> {
        let Some(mut state) = self.state(topic, p).filter(|s| s.version == version) else {
            return Ok(false);
        };
        state.epoch += 1;
        let epoch = state.epoch;
        tracing::info!(
            topic,
            partition = p,
            epoch,
            ?leader,
            ?isr,
            "partition leader elected"
        );
        state.leader = leader;
        state.isr = isr;
        state.version += 1;
        self.put(topic, p, state, true)?;
        Ok(true)
    }

    fn state(&self, topic: &str, p: u32) -> Option<PartitionState> {
        let map = self.partitions.read();
        map.get(topic)?.get(p as usize).map(|r| r.state.clone())
    }

    /// Stores a partition's state (when `persist`, flushed: the Raft log counts it applied
    /// once this returns, and a state lost in a crash would not be applied again) and brings
    /// this node's role in it up to date.
    fn put(
        &self,
        topic: &str,
        p: u32,
        state: PartitionState,
        persist: bool,
    ) -> Result<(), ReplicationError> {
        if persist {
            self.meta
                .put_durable(Namespace::Replicas, &format!("{topic}/{p}"), &state)?;
        }
        let log = match self.log_of(topic, p) {
            Ok(log) => log,
            Err(e) => {
                tracing::warn!(topic, partition = p, error = %e, "a replicated partition has no log here");
                return Ok(());
            }
        };
        let mut map = self.partitions.write();
        let replicas = map.entry(topic.to_owned()).or_default();
        let i = p as usize;
        if replicas.len() <= i {
            // Partitions are placed in order; a gap would mean an unknown partition.
            if replicas.len() < i {
                return Err(ReplicationError::Invalid(format!(
                    "{topic}/{p} placed before {topic}/{}",
                    replicas.len()
                )));
            }
            replicas.push(Replica {
                epochs: Arc::new(Mutex::new(EpochCache::load(log.dir()))),
                writing: Arc::default(),
                log,
                state,
                role: Role::Idle,
            });
        } else {
            replicas[i].state = state;
        }
        if self.active.load(Ordering::Acquire) {
            self.refresh(topic, p, &mut replicas[i]);
        }
        Ok(())
    }

    fn refresh_all(&self) {
        let mut map = self.partitions.write();
        for (topic, replicas) in map.iter_mut() {
            for (p, r) in replicas.iter_mut().enumerate() {
                self.refresh(topic, p as u32, r);
            }
        }
    }

    /// Makes this node's role in a partition match its state: lead, follow or neither.
    fn refresh(&self, topic: &str, p: u32, r: &mut Replica) {
        let (Some(s), Some(cluster)) = (&self.settings, self.cluster.get()) else {
            return;
        };
        let st = &r.state;
        match (&r.role, st.leader) {
            (Role::Leader(l), Some(leader)) if leader == s.node && l.epoch == st.epoch => {
                l.set_isr(st.isr.clone());
                return;
            }
            (Role::Follower { leader, epoch, .. }, Some(now))
                if *leader == now && *epoch == st.epoch =>
            {
                return;
            }
            _ => {}
        }
        r.role.stop();
        r.role = Role::Idle;
        r.log.set_follower(true);
        match st.leader {
            Some(leader) if leader == s.node => {
                // A follower task of this node's previous role may be finishing an append:
                // the new epoch starts after it, and the producer sequences include it. (This
                // runs where metadata is applied, on a blocking thread.)
                let _quiet = r.writing.blocking_lock();
                match Leader::start(
                    s.node,
                    st.epoch,
                    (st.isr.clone(), st.min_insync),
                    r.log.clone(),
                    r.epochs.clone(),
                ) {
                    Ok(l) => {
                        if let Some(Err(e)) = self.on_lead.get().map(|h| h(topic, p, &r.log)) {
                            // Retries are then appended again: worth a warning, not a refusal.
                            tracing::warn!(topic, partition = p, error = %e, "producer sequences not recovered");
                        }
                        tracing::info!(
                            topic,
                            partition = p,
                            epoch = st.epoch,
                            "leading the partition"
                        );
                        r.log.set_follower(false);
                        r.role = Role::Leader(l);
                    }
                    Err(e) => {
                        tracing::error!(topic, partition = p, error = %e, "cannot take the lead")
                    }
                }
            }
            Some(leader)
                if st.replicas.contains(&s.node) && !self.leaving.load(Ordering::Acquire) =>
            {
                let stop = self.stop.child_token();
                let task = follower::Following {
                    me: s.node,
                    topic: topic.to_owned(),
                    partition: p,
                    leader,
                    epoch: st.epoch,
                    log: r.log.clone(),
                    epochs: r.epochs.clone(),
                    writing: r.writing.clone(),
                    stop: stop.clone(),
                };
                tokio::spawn(task.run(cluster.clone()));
                r.role = Role::Follower {
                    leader,
                    epoch: st.epoch,
                    stop,
                };
            }
            _ => {}
        }
    }

    fn leader_of(&self, topic: &str, p: u32) -> Result<Option<Arc<Leader>>, ReplicationError> {
        if self.settings.is_none() {
            return Ok(None);
        }
        let map = self.partitions.read();
        let Some(r) = map.get(topic).and_then(|v| v.get(p as usize)) else {
            return Ok(None);
        };
        if let Role::Leader(l) = &r.role {
            return Ok(Some(l.clone()));
        }
        drop(map);
        Err(self.not_leader(topic, p))
    }

    /// Whether this node may take a produce to the partition: it leads it, and for `acks=all`
    /// enough replicas are in sync.
    pub fn check_produce(
        &self,
        topic: &str,
        p: u32,
        acks_all: bool,
    ) -> Result<Option<u64>, ReplicationError> {
        let Some(leader) = self.leader_of(topic, p)? else {
            return Ok(None);
        };
        let isr = leader.isr().len();
        if acks_all && isr < leader.min_insync as usize {
            return Err(ReplicationError::NotEnoughReplicas {
                topic: topic.to_owned(),
                partition: p,
                isr,
                min: leader.min_insync,
            });
        }
        Ok(Some(leader.epoch))
    }

    /// Whether consumers may read the partition here (its leader).
    pub fn check_fetch(&self, topic: &str, p: u32) -> Result<(), ReplicationError> {
        self.leader_of(topic, p).map(|_| ())
    }

    /// Waits until every in-sync replica has the partition's records below `end`, appended
    /// in leader `epoch` (an `acks=all` produce, after the local fsync). A leader deposed in
    /// between (even if elected again since) cannot vouch for them: NotLeader.
    pub async fn replicated(
        &self,
        topic: &str,
        p: u32,
        end: u64,
        epoch: Option<u64>,
    ) -> Result<(), ReplicationError> {
        let Some(epoch) = epoch else {
            return Ok(());
        };
        let leader = match self.leader_of(topic, p)? {
            Some(l) if l.epoch == epoch => l,
            _ => return Err(self.not_leader(topic, p)),
        };
        let timeout = || ReplicationError::Timeout {
            topic: topic.to_owned(),
            partition: p,
            end,
            waited: ACK_TIMEOUT,
        };
        match leader.replicated(end, ACK_TIMEOUT).await {
            Ok(()) => Ok(()),
            Err(Stopped::Deposed) => Err(self.not_leader(topic, p)),
            Err(Stopped::TooFew(isr)) => Err(ReplicationError::NotEnoughReplicas {
                topic: topic.to_owned(),
                partition: p,
                isr,
                min: leader.min_insync,
            }),
            Err(Stopped::TimedOut) => Err(timeout()),
        }
    }

    fn not_leader(&self, topic: &str, p: u32) -> ReplicationError {
        let leader = self.state(topic, p).and_then(|s| s.leader);
        ReplicationError::NotLeader {
            node: self.settings.as_ref().map_or(0, |s| s.node),
            topic: topic.to_owned(),
            partition: p,
            leader,
            addr: leader.and_then(|l| self.client_addr(l)),
        }
    }

    /// Every replicated partition: placement, leader (with its client address), epoch, ISR,
    /// and the high watermark where this node leads.
    pub fn describe(&self) -> Vec<PartitionReplicas> {
        // A copy: never hold both locks in an order other than `leader_of`'s.
        let nodes = self.nodes.read().clone();
        let map = self.partitions.read();
        let mut out = Vec::new();
        for (topic, replicas) in map.iter() {
            for (p, r) in replicas.iter().enumerate() {
                let s = &r.state;
                out.push(PartitionReplicas {
                    topic: topic.clone(),
                    partition: p as u32,
                    replicas: s.replicas.clone(),
                    leader: s.leader,
                    leader_addr: s.leader.and_then(|l| nodes.get(&l).cloned()),
                    epoch: s.epoch,
                    isr: s.isr.clone(),
                    min_insync: s.min_insync,
                    high_watermark: match &r.role {
                        Role::Leader(l) => Some(l.high_watermark()),
                        _ => r.log.high_watermark(),
                    },
                });
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// The client address a node registered.
    pub fn client_addr(&self, node: NodeId) -> Option<String> {
        self.nodes.read().get(&node).cloned()
    }

    async fn answer(self: Arc<Self>, request: Vec<u8>) -> Vec<u8> {
        let response = match decode::<ReplicaRequest>(&request) {
            Ok(req) => self.serve(req).await,
            Err(e) => ReplicaResponse::Failed(e),
        };
        encode(&response)
    }

    /// A follower's request, answered by this node's leader of the partition.
    async fn serve(&self, req: ReplicaRequest) -> ReplicaResponse {
        let Some((topic, p, epoch)) = req.key() else {
            let ReplicaRequest::Deliver {
                topic,
                partition,
                batches,
            } = req
            else {
                return ReplicaResponse::Failed("a request without a partition".into());
            };
            let batches = batches.into_iter().map(|b| b.into_vec().into()).collect();
            return self.accept_delivery(&topic, partition, batches).await;
        };
        let leader = match self.leader_of(topic, p) {
            Ok(Some(l)) => l,
            Ok(None) | Err(_) => return ReplicaResponse::NotLeader,
        };
        if epoch < leader.epoch {
            return ReplicaResponse::FencedEpoch {
                current: leader.epoch,
            };
        }
        if epoch > leader.epoch {
            return ReplicaResponse::UnknownEpoch;
        }
        match req {
            ReplicaRequest::Fetch {
                offset,
                replica,
                max_bytes,
                ..
            } => leader.fetch(replica, offset, max_bytes as usize).await,
            ReplicaRequest::EpochEnd { last_epoch, .. } => leader.epoch_end(last_epoch),
            ReplicaRequest::Deliver { .. } => ReplicaResponse::Failed("not a follower's".into()),
        }
    }
}

impl PeerHandler for Replication {
    fn handle(&self, request: Vec<u8>) -> BoxFuture<'static, Vec<u8>> {
        match self.me.upgrade() {
            Some(me) => me.answer(request).boxed(),
            None => async { encode(&ReplicaResponse::NotLeader) }.boxed(),
        }
    }
}
