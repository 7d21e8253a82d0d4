//! The composition root: opens the stores of a data directory (topics, metadata, plugins, delay
//! log), builds the services over them, starts the background work under a supervisor and
//! flushes everything at shutdown. It holds no business rules of its own: those live in
//! `services/`, one module per concern.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use quiver_proto::groups::{GroupRequest, GroupResponse};
use quiver_proto::messages::{AdminRequest, AdminResponse, ClusterStatus};
use quiver_proto::ErrorCode;

use crate::auth::{Auth, Principal, Request};
use crate::cluster::{Applier, Cluster, MetaCommand, MetaResult, PeerServices};
use crate::config::BrokerConfig;
use crate::config::ClusterConfig;
use crate::coordination::Coordination;
use crate::delay::{DelayError, DelayStore, Delays, Shards};
use crate::error::BrokerError;
use crate::groups::Groups;
use crate::meta::MetaStore;
use crate::mirrors::MirrorStore;
use crate::plugins::{EngineLimits, Pipelines, PluginEngine, PluginRegistry};
use crate::replication::Replication;
use crate::routing::Exchanges;
use crate::services::admin::{AdminService, Identity};
use crate::services::catalog::Catalog;
use crate::services::dead_letter::DeadLetters;
use crate::services::exchanges::ExchangeService;
use crate::services::fetch::FetchService;
use crate::services::groups::GroupService;
use crate::services::mirrors::MirrorService;
use crate::services::plugins::PluginService;
use crate::services::produce::ProduceService;
use crate::services::queues::QueueService;
use crate::storage::{StorageError, TopicStore};
use crate::supervisor::Supervisor;
use crate::telemetry::Telemetry;

/// How often group sessions are checked for expiry (bounds how late a dead member is noticed).
const SESSION_CHECK: Duration = Duration::from_millis(100);
/// How often a cluster node opens the delay shards it came to lead and closes the others
/// (bounds how long a shard's delivery pauses after a failover).
const SHARD_CHECK: Duration = Duration::from_millis(200);

/// The stores of one data directory.
struct Stores {
    meta: MetaStore,
    topics: Arc<TopicStore>,
    registry: Arc<PluginRegistry>,
    pipelines: Arc<Pipelines>,
    exchanges: Arc<Exchanges>,
    groups: Arc<Groups>,
    delays: Arc<Delays>,
    auth: Arc<Auth>,
    mirrors: Arc<MirrorStore>,
    replication: Arc<Replication>,
}

impl Stores {
    fn open(config: &BrokerConfig) -> Result<Stores, BrokerError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| StorageError::io(&config.data_dir, e))?;
        let meta = MetaStore::open(&config.data_dir.join("meta"))?;
        let limits = EngineLimits {
            max_memory_bytes: (config.plugins.max_memory_mb as usize) << 20,
            max_instances: config.plugins.max_instances,
            max_total_memory_bytes: config.plugins.total_memory_bytes(),
        };
        let engine = PluginEngine::new(&config.data_dir.join("plugins").join("compiled"), limits)?;
        let registry = Arc::new(PluginRegistry::new(meta.clone(), Arc::new(engine)));
        let max_output = config.log.max_batch_bytes as usize;
        let pipelines =
            Pipelines::open(meta.clone(), registry.clone(), config.plugins, max_output)?;
        let topics = Arc::new(TopicStore::open(&config.data_dir, meta.clone())?);
        let delay_logs = open_delay_shards(config)?;
        let replication =
            Replication::new(config.cluster.as_ref(), topics.clone(), delay_logs.clone())?;
        let delays = Delays::new(DelayStore::open(&config.data_dir.join("delay"), &topics)?);
        if config.cluster.is_some() {
            let lateness = delays.lateness().clone();
            let weak = Arc::downgrade(&topics);
            delays.set_shards(Shards::new(replication.clone(), delay_logs, weak, lateness));
        }
        let auth = Auth::open(meta.clone(), config.auth, config.quotas.clone())?;
        // Nodes of a local cluster share their admin token through the dev CA's folder.
        let shared = config.cluster.as_ref().and_then(|c| c.dev_ca.as_deref());
        if let Some(path) = auth.bootstrap(&config.data_dir, shared)? {
            tracing::info!(path = %path.display(), "authentication on: created user `admin` (a superuser); its token is in this file");
        }
        let mirrors = MirrorStore::open(meta.clone(), &config.data_dir, &config.mirrors)?;
        Ok(Stores {
            replication,
            mirrors: Arc::new(mirrors),
            auth: Arc::new(auth),
            registry,
            pipelines: Arc::new(pipelines),
            exchanges: Arc::new(Exchanges::open(meta.clone())?),
            groups: Arc::new(Groups::new(meta.clone())),
            delays: Arc::new(delays),
            topics,
            meta,
        })
    }
}

pub struct Broker {
    config: BrokerConfig,
    topics: Arc<TopicStore>,
    delays: Arc<Delays>,
    exchanges: Arc<Exchanges>,
    catalog: Catalog,
    produce: Arc<ProduceService>,
    fetch: Arc<FetchService>,
    queues: Arc<QueueService>,
    groups: Arc<GroupService>,
    /// Group requests on a cluster go to the groups' coordinator.
    coordination: Arc<Coordination>,
    admin: AdminService,
    pipelines: Arc<Pipelines>,
    registry: Arc<PluginRegistry>,
    auth: Arc<Auth>,
    mirrors: Arc<MirrorStore>,
    telemetry: Telemetry,
    replication: Arc<Replication>,
    /// Set once a cluster node has joined its metadata group.
    cluster: OnceLock<Arc<Cluster>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("data_dir", &self.config.data_dir)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// Opens the data directory (creating it on first start) with its metadata store and topics.
    /// Background work (retention, session expiry, delayed delivery) starts with [`Broker::start`].
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>, BrokerError> {
        let s = Stores::open(&config)?;
        let catalog = Catalog::new(
            s.topics.clone(),
            s.pipelines.clone(),
            config.default_partitions,
            config.log,
        );
        let dead_letters = DeadLetters::new(catalog.clone(), s.replication.clone());
        let produce = Arc::new(ProduceService::new(
            s.topics.clone(),
            s.pipelines.clone(),
            s.delays.clone(),
            s.exchanges.clone(),
            dead_letters.clone(),
            s.replication.clone(),
        ));
        // A node taking the lead of a partition learns the producer sequences in its log, and
        // its queue consumers resume from the settled points the previous leader replicated.
        let (leads, groups) = (Arc::downgrade(&produce), Arc::downgrade(&s.groups));
        s.replication.on_lead(Box::new(move |topic, p, log| {
            if let Some(groups) = groups.upgrade() {
                groups.queues.forget_partition(topic, p);
            }
            match leads.upgrade() {
                Some(produce) => produce.take_lead(topic, p, log).map_err(|e| e.to_string()),
                None => Ok(()),
            }
        }));
        let mirror_service = Arc::new(MirrorService::new(s.mirrors.clone(), s.topics.clone()));
        mirror_service.seed_configured()?;
        let admin = AdminService {
            catalog: catalog.clone(),
            pipelines: s.pipelines.clone(),
            delays: s.delays.clone(),
            produce: produce.clone(),
            groups: s.groups.clone(),
            meta: s.meta.clone(),
            plugins: Arc::new(PluginService::new(
                s.registry.clone(),
                s.pipelines.clone(),
                s.topics.clone(),
            )),
            exchanges: Arc::new(ExchangeService::new(
                s.exchanges.clone(),
                s.pipelines.clone(),
                s.topics.clone(),
            )),
            mirrors: s.mirrors.clone(),
            mirror_service,
            identity: Identity {
                broker_id: format!("quiver@{}", config.listen),
                listen: config.listen.to_string(),
                node_id: config.cluster.as_ref().map(|c| c.node_id),
            },
            auth: s.auth.clone(),
            replication: s.replication.clone(),
        };
        let groups = Arc::new(GroupService::new(s.groups.clone(), s.topics.clone()));
        Ok(Arc::new(Broker {
            fetch: Arc::new(FetchService::new(
                s.topics.clone(),
                s.pipelines.clone(),
                s.replication.clone(),
                config.max_frame_bytes,
            )),
            queues: Arc::new(QueueService::new(
                s.topics.clone(),
                s.groups.clone(),
                dead_letters,
                s.replication.clone(),
                config.max_frame_bytes,
            )),
            coordination: Coordination::new(groups.clone()),
            groups,
            pipelines: s.pipelines,
            registry: s.registry,
            auth: s.auth,
            mirrors: s.mirrors,
            topics: s.topics,
            delays: s.delays,
            exchanges: s.exchanges,
            catalog,
            produce,
            admin,
            config,
            telemetry: Telemetry::default(),
            replication: s.replication,
            cluster: OnceLock::new(),
        }))
    }

    /// Starts the background work under `supervisor`: retention, group session expiry and
    /// delayed delivery. Each stops when the supervisor shuts down.
    pub fn start(self: &Arc<Self>, supervisor: &Supervisor) -> Result<(), BrokerError> {
        let period = Duration::from_millis(self.config.retention_check_ms.max(100));
        let topics = self.topics.clone();
        supervisor.every("retention", period, move || {
            let out = topics.enforce_retention();
            if out.segments_deleted > 0 {
                tracing::info!(
                    segments = out.segments_deleted,
                    bytes = out.bytes_deleted,
                    "retention removed segments"
                );
            }
        });
        let broker = Arc::downgrade(self);
        supervisor.every("group sessions", SESSION_CHECK, move || {
            if let Some(b) = broker.upgrade() {
                b.groups.expire_sessions();
            }
        });
        self.delays
            .start(Arc::downgrade(&self.topics))
            .map_err(|e| BrokerError::Internal(format!("cannot start delayed delivery: {e}")))?;
        if let Some(shards) = self.delays.shards() {
            let shards = Arc::downgrade(shards);
            supervisor.every("delay shards", SHARD_CHECK, move || {
                if let Some(s) = shards.upgrade() {
                    s.keep();
                }
            });
        }
        let delays = Arc::downgrade(&self.delays);
        supervisor.on_shutdown(move || {
            if let Some(d) = delays.upgrade() {
                d.stop();
            }
        });
        // A `plugin logs --follow` parked in a long-poll must not hold up the drain.
        let registry = Arc::downgrade(&self.registry);
        supervisor.on_shutdown(move || {
            if let Some(r) = registry.upgrade() {
                r.logs().stop_waiting();
            }
        });
        Ok(())
    }

    /// Joins the metadata group of `config`'s cluster: from then on admin writes go through
    /// Raft and are applied on every node. `server`/`client` are the peer links' mutual-TLS
    /// configurations; `listening` is where this node takes clients (announced to them).
    pub async fn join_cluster(
        self: &Arc<Self>,
        config: &ClusterConfig,
        (server, client): (quinn::ServerConfig, quinn::ClientConfig),
        listening: std::net::SocketAddr,
    ) -> Result<Arc<Cluster>, BrokerError> {
        let applier = Arc::new(BrokerApplier(Arc::downgrade(self)));
        let delays: Arc<dyn crate::cluster::PeerHandler> = match self.delays.shards() {
            Some(s) => s.clone(),
            None => {
                return Err(BrokerError::Internal(
                    "a cluster node without delay shards".into(),
                ))
            }
        };
        let services = PeerServices {
            replicas: self.replication.clone(),
            groups: self.coordination.peer_handler(),
            delays,
        };
        let dir = &self.config.data_dir;
        let cluster = Cluster::start(config, dir, applier, services, (server, client)).await?;
        self.cluster
            .set(cluster.clone())
            .map_err(|_| BrokerError::Internal("the broker joined a cluster twice".into()))?;
        self.replication.start(cluster.clone(), listening);
        let replication = Arc::downgrade(&self.replication);
        self.delays.on_deliver(Box::new(move |topic, p, batches| {
            let r = replication.upgrade().ok_or("the broker is stopping")?;
            r.deliver_blocking(topic, p, batches)
                .map_err(|e| e.to_string())
        }));
        self.coordination.start(cluster.clone());
        Ok(cluster)
    }

    /// The cluster this node belongs to, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Answers one admin request of `principal` (already authorized): on a cluster node a
    /// metadata write is replicated through Raft, everything else is answered here on the
    /// blocking pool.
    pub async fn admin_request(
        self: &Arc<Self>,
        principal: &Arc<Principal>,
        req: AdminRequest,
        payload: Bytes,
    ) -> Result<AdminResponse, BrokerError> {
        if let Some(cluster) = self.cluster.get() {
            if let AdminRequest::CancelDelayed { id } = req {
                return self.cancel_delayed(principal, id).await;
            }
            if let AdminRequest::InitProducer {
                fencing_key: Some(key),
                current_id,
            } = req
            {
                // Every node fences the key's earlier producer, wherever its partitions are.
                let command = MetaCommand::FenceProducer {
                    principal: principal.name().to_owned(),
                    key,
                    id: self.admin.draw_producer_id()?,
                    current: current_id,
                };
                return answer(cluster.write(command).await?);
            }
            if matches!(req, AdminRequest::ClusterStatus) {
                return Ok(AdminResponse::ClusterStatus(self.cluster_status(cluster)));
            }
            if MetaCommand::replicates(&req) {
                return self.replicate(cluster, principal, req, payload).await;
            }
        }
        let (b, p) = (self.clone(), principal.clone());
        crate::offload::blocking(move || b.admin().handle(&p, req, payload)).await
    }

    /// Cancels a delayed record on a cluster. The drivers' ACL check could not name the
    /// record's topic without asking its shard's leader: it is asked here and checked before
    /// the cancel, which the leader makes only if the record is bound for that topic.
    async fn cancel_delayed(
        self: &Arc<Self>,
        principal: &Principal,
        id: u64,
    ) -> Result<AdminResponse, BrokerError> {
        let topic = (self.delays.topic_of(id).await?).ok_or(DelayError::UnknownId(id))?;
        let req = AdminRequest::CancelDelayed { id };
        let named = Some(topic.clone());
        self.auth
            .authorize(principal, Request::Admin(&req), &|_| named.clone())?;
        let b = self.clone();
        crate::offload::blocking(move || {
            let topic = b.delays.cancel_authorized(id, &topic)?;
            Ok(AdminResponse::DelayCancelled { id, topic })
        })
        .await
    }

    async fn replicate(
        &self,
        cluster: &Cluster,
        principal: &Principal,
        req: AdminRequest,
        payload: Bytes,
    ) -> Result<AdminResponse, BrokerError> {
        let who = principal.name();
        let AdminRequest::CreateUser { name } = req else {
            return answer(cluster.write(MetaCommand::admin(who, req, payload)).await?);
        };
        // The token is drawn here, once; only its id and hash are replicated.
        let token = self.auth.draw_user_token()?;
        let command = MetaCommand::CreateUser {
            principal: who.to_owned(),
            name,
            token_id: token.id.clone(),
            token_hash: token.hash(),
        };
        match answer(cluster.write(command).await?)? {
            AdminResponse::UserCreated { name, .. } => Ok(AdminResponse::UserCreated {
                name,
                token: token.text(),
            }),
            other => Ok(other),
        }
    }

    /// Members, leader and term, with each node's client address and every replicated
    /// partition's leader and in-sync replicas.
    fn cluster_status(&self, cluster: &Cluster) -> ClusterStatus {
        let mut status = cluster.status();
        for node in &mut status.nodes {
            node.client_addr = self.replication.client_addr(node.id);
        }
        status.partitions = self.replication.describe();
        status
    }

    /// Partition replication (a disabled service on a single broker).
    pub fn replication(&self) -> &Arc<Replication> {
        &self.replication
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// The name a client sees for this broker.
    pub fn id(&self) -> &str {
        &self.admin.identity.broker_id
    }

    pub fn produce(&self) -> &Arc<ProduceService> {
        &self.produce
    }

    pub fn fetch(&self) -> &Arc<FetchService> {
        &self.fetch
    }

    pub fn queues(&self) -> &Arc<QueueService> {
        &self.queues
    }

    pub fn groups(&self) -> &GroupService {
        &self.groups
    }

    /// Answers a group request (already authorized): on a cluster, at the groups' coordinator.
    pub async fn group(&self, req: GroupRequest) -> Result<GroupResponse, BrokerError> {
        self.coordination.group(req).await
    }

    pub fn admin(&self) -> &AdminService {
        &self.admin
    }

    /// Who connections are and what they may do.
    pub fn auth(&self) -> &Arc<Auth> {
        &self.auth
    }

    /// Checks one request of `principal` against the ACLs (nothing, with authentication off):
    /// what every driver (QUIC streams, the HTTP console) calls for every request it reads; the
    /// table in auth/table.rs says what each needs.
    pub fn authorize(
        &self,
        principal: &crate::auth::Principal,
        request: crate::auth::Request<'_>,
    ) -> Result<(), BrokerError> {
        let delays = &self.delays;
        Ok(self
            .auth
            .authorize(principal, request, &|id| delays.pending_topic(id))?)
    }

    /// Edge mirrors: definitions, positions and live status (the forwarding runs in
    /// `quiver-mirror`).
    pub fn mirrors(&self) -> &Arc<MirrorStore> {
        &self.mirrors
    }

    /// Request latencies and open connections and streams, for `/metrics`.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Creating topics with the broker's defaults.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn topics(&self) -> &TopicStore {
        &self.topics
    }

    pub fn delays(&self) -> &Delays {
        &self.delays
    }

    /// A graceful stop on a cluster: the delay shards this node leads finish their rounds and
    /// close, then the partitions it leads go to other nodes (within `wait`).
    pub async fn hand_over(&self, wait: Duration) {
        if let Some(shards) = self.delays.shards().cloned() {
            // Part of the wait: a round still running then is delivered again by the next
            // leader (at least once).
            let rounds = wait / 2;
            let _ = tokio::task::spawn_blocking(move || shards.leave(rounds)).await;
        }
        self.replication.hand_over(wait).await;
    }

    pub fn exchanges(&self) -> &Exchanges {
        &self.exchanges
    }

    /// Ingest pipelines and exchange routers, with their health (for metrics).
    pub fn pipelines(&self) -> &Pipelines {
        &self.pipelines
    }

    /// Deployed plugins and the engine (its broker-wide memory budget).
    pub fn plugin_registry(&self) -> &PluginRegistry {
        &self.registry
    }

    /// Stops delayed delivery and fsyncs every partition, the delay log and the metadata store
    /// (graceful shutdown: nothing is delivered after it).
    pub fn flush(&self) -> Result<(), BrokerError> {
        self.delays.close()?;
        Ok(self.topics.flush_all()?)
    }
}

/// What a replicated command answered, as the proposing client's answer.
fn answer(result: MetaResult) -> Result<AdminResponse, BrokerError> {
    match result {
        MetaResult::Ok(a) => Ok(a),
        MetaResult::Err { code, message } => Err(BrokerError::Wire(ErrorCode::from(code), message)),
        MetaResult::None => Err(BrokerError::Internal("a write answered nothing".into())),
    }
}

/// Applies committed metadata commands to this broker's stores (the cluster's state machine
/// calls it on every node, in log order).
struct BrokerApplier(Weak<Broker>);

impl Applier for BrokerApplier {
    fn apply(&self, index: u64, command: MetaCommand) -> Result<MetaResult, String> {
        let broker = self.0.upgrade().ok_or("the broker is shutting down")?;
        let result = match command {
            MetaCommand::Admin {
                principal,
                request,
                payload,
            } => {
                tracing::debug!(index, %principal, ?request, "applying a replicated admin write");
                // The principal only matters to reads (`WhoAmI`); writes were authorized by the
                // node the client reached.
                broker
                    .admin
                    .handle(&Principal::anonymous(), request, Bytes::from(payload))
            }
            MetaCommand::CreateUser {
                principal,
                name,
                token_id,
                token_hash,
            } => {
                tracing::debug!(index, %principal, user = %name, "applying a replicated user");
                broker
                    .auth
                    .create_user_with(&name, &token_id, token_hash)
                    .map_err(BrokerError::from)
            }
            MetaCommand::FenceProducer {
                principal,
                key,
                id,
                current,
            } => {
                tracing::debug!(index, %principal, %key, id, "applying a producer fence");
                broker
                    .admin
                    .fence_producer(&principal, key, id, current, false)
                    .map(|()| AdminResponse::Producer { producer_id: id })
            }
            MetaCommand::CommitOffsets { group, offsets } => {
                tracing::debug!(index, %group, count = offsets.len(), "applying committed offsets");
                let state = broker.groups().state();
                // This node's store failed: not applied here (Raft stops this node).
                state
                    .offsets
                    .commit(&group, &offsets)
                    .map_err(|e| e.to_string())?;
                return Ok(MetaResult::None);
            }
            MetaCommand::QueueSettled { points } => {
                let queues = &broker.groups().state().queues;
                for p in points {
                    queues
                        .save_replicated(&p.group, &p.topic, p.partition, p.start)
                        .map_err(|e| e.to_string())?;
                }
                return Ok(MetaResult::None);
            }
            replica => return apply_replica(&broker, replica),
        };
        match result {
            Ok(a) => Ok(MetaResult::Ok(a)),
            // This node's own trouble, not an answer every node gives: do not record it applied.
            Err(e) if local_failure(e.code()) => Err(e.to_string()),
            Err(e) => Ok(MetaResult::Err {
                code: e.code().as_u16(),
                message: e.to_string(),
            }),
        }
    }
}

/// Applies a change of partition replicas (registrations, ISR changes, elections). A change
/// decided on a state that has changed since answers `NotLeader` and changes nothing.
fn apply_replica(broker: &Broker, command: MetaCommand) -> Result<MetaResult, String> {
    let r = &broker.replication;
    let applied = match command {
        MetaCommand::RegisterNode {
            node,
            client_addr,
            incarnation,
        } => r.register(node, &client_addr, incarnation).map(|()| true),
        MetaCommand::SetIsr {
            topic,
            partition,
            version,
            isr,
        } => r.set_isr(&topic, partition, version, isr),
        MetaCommand::Elect {
            topic,
            partition,
            version,
            leader,
            isr,
        } => r.elect(&topic, partition, version, leader, isr),
        MetaCommand::Admin { .. }
        | MetaCommand::CreateUser { .. }
        | MetaCommand::CommitOffsets { .. }
        | MetaCommand::FenceProducer { .. }
        | MetaCommand::QueueSettled { .. } => return Err("not a replica change".into()),
    };
    match applied {
        Ok(true) => Ok(MetaResult::None),
        Ok(false) => Ok(MetaResult::Err {
            code: ErrorCode::NotLeader.as_u16(),
            message: "the partition's state changed since; the change was not applied".into(),
        }),
        // This node's store failed: not applied here (Raft stops rather than diverge).
        Err(e) => Err(e.to_string()),
    }
}

/// Failures of this node's disk, state or load rather than of the command (a plugin engine over
/// its memory budget on one node only, say).
fn local_failure(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::StorageError
            | ErrorCode::DiskFull
            | ErrorCode::Internal
            | ErrorCode::ShuttingDown
    )
}

/// A cluster node's delay-shard logs, one per member (`<data>/delay-shards/<n>`); none on a
/// single broker.
fn open_delay_shards(
    config: &BrokerConfig,
) -> Result<Vec<Arc<crate::storage::PartitionLog>>, BrokerError> {
    let Some(cluster) = &config.cluster else {
        return Ok(Vec::new());
    };
    let root = config.data_dir.join("delay-shards");
    (0..cluster.members.len())
        .map(|k| {
            let dir = root.join(k.to_string());
            let clock = crate::storage::partition::system_clock();
            let log = crate::storage::PartitionLog::open(&dir, crate::delay::log_config(), clock)?;
            Ok(Arc::new(log))
        })
        .collect()
}
