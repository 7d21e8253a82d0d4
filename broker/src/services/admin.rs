//! The admin/metadata service: topics (create, delete, list, describe, add partitions), broker
//! metadata, producer ids and cancelling delayed records, one function per request kind; plugin
//! and exchange requests are handed to their services. Deleting a topic forgets everything other
//! services keep for it.

use std::sync::Arc;

use bytes::Bytes;
use quiver_proto::messages::{
    AdminRequest, AdminResponse, PartitionDescription, TopicDescription, TopicSummary,
};

use super::catalog::{Catalog, LogOverrides};
use super::exchanges::ExchangeService;
use super::plugins::PluginService;
use super::produce::ProduceService;
use crate::auth::{Auth, Principal};
use crate::delay::Delays;
use crate::error::BrokerError;
use crate::groups::Groups;
use crate::meta::MetaStore;
use crate::plugins::Pipelines;
use crate::replication::Replication;
use crate::storage::Topic;

/// What the broker says about itself in a metadata answer.
#[derive(Debug, Clone)]
pub struct Identity {
    pub broker_id: String,
    pub listen: String,
    /// A cluster node's id: producer ids carry it, so nodes never hand out the same one.
    pub node_id: Option<u64>,
}

#[derive(Debug)]
pub struct AdminService {
    pub(crate) catalog: Catalog,
    pub(crate) pipelines: Arc<Pipelines>,
    pub(crate) delays: Arc<Delays>,
    pub(crate) produce: Arc<ProduceService>,
    pub(crate) groups: Arc<Groups>,
    pub(crate) meta: MetaStore,
    pub(crate) plugins: Arc<PluginService>,
    pub(crate) exchanges: Arc<ExchangeService>,
    pub(crate) mirrors: Arc<crate::mirrors::MirrorStore>,
    pub(crate) mirror_service: Arc<super::mirrors::MirrorService>,
    pub(crate) identity: Identity,
    pub(crate) auth: Arc<Auth>,
    pub(crate) replication: Arc<Replication>,
}

impl AdminService {
    /// Answers one admin request (blocking: touches the disk, compiles, may run `init`).
    /// `principal` matters only to the user, ACL and identity requests (it was checked before).
    pub fn handle(
        &self,
        principal: &Principal,
        req: AdminRequest,
        payload: Bytes,
    ) -> Result<AdminResponse, BrokerError> {
        use AdminRequest as R;
        match req {
            R::CreateUser { .. }
            | R::DeleteUser { .. }
            | R::ListUsers
            | R::AddAcl { .. }
            | R::ListAcls
            | R::RemoveAcl { .. }
            | R::SetQuota { .. }
            | R::ListQuotas
            | R::RemoveQuota { .. }
            | R::WhoAmI => match self.auth.handle(principal, &req) {
                Some(answer) => Ok(answer?),
                None => Err(BrokerError::Internal("auth request not answered".into())),
            },
            R::DeployPlugin { .. }
            | R::ListPlugins
            | R::DescribePlugin { .. }
            | R::ListPluginLogs { .. }
            | R::RemovePlugin { .. }
            | R::AttachPlugin { .. }
            | R::DetachPlugin { .. } => self.plugins.handle(req, payload),
            R::AddMirror { .. }
            | R::ListMirrors
            | R::DescribeMirror { .. }
            | R::RemoveMirror { .. } => self.mirror_service.handle(req),
            R::CreateExchange { .. }
            | R::BindExchange { .. }
            | R::ListExchanges
            | R::DeleteExchange { .. }
            | R::AttachExchangeRouter { .. }
            | R::DetachExchangeRouter { .. } => self.exchanges.handle(req),
            R::CreateTopic {
                name,
                partitions,
                retention_ms,
                retention_bytes,
                segment_bytes,
                replication_factor,
                min_insync,
            } => {
                let overrides = LogOverrides {
                    retention_ms,
                    retention_bytes,
                    segment_bytes,
                };
                let copies = self
                    .replication
                    .check_create(replication_factor, min_insync)?;
                self.create_topic(name, partitions, overrides, copies)
            }
            R::DeleteTopic { name } => self.delete_topic(name),
            R::ListTopics => Ok(AdminResponse::Topics {
                topics: self.summaries(),
            }),
            R::DescribeTopic { name } => {
                let t = self.catalog.topics().get(&name)?;
                Ok(AdminResponse::Topic(self.describe(&t, true)))
            }
            R::AddPartitions { name, count } => self.add_partitions(&name, count),
            R::CancelDelayed { id } => Ok(AdminResponse::DelayCancelled {
                id,
                topic: self.delays.cancel(id)?,
            }),
            R::InitProducer {
                fencing_key,
                current_id,
            } => Ok(AdminResponse::Producer {
                producer_id: self.init_producer(principal, fencing_key, current_id)?,
            }),
            R::ClusterStatus => Err(BrokerError::InvalidRequest(
                "this broker is not a cluster node (it was started without --cluster)".into(),
            )),
            R::Metadata => Ok(AdminResponse::Metadata {
                broker_id: self.identity.broker_id.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                listen: self.identity.listen.clone(),
                topics: self.summaries(),
                leaders: self.replication.describe(),
            }),
        }
    }

    fn create_topic(
        &self,
        name: String,
        partitions: u32,
        overrides: LogOverrides,
        copies: (u32, u32),
    ) -> Result<AdminResponse, BrokerError> {
        let partitions = (partitions > 0).then_some(partitions);
        let t = self.catalog.create(&name, partitions, overrides)?;
        let count = t.partitions().len() as u32;
        if self.replication.enabled() {
            self.replication.topic_created(&name, count, copies)?;
        }
        tracing::info!(topic = %name, partitions = count, replication_factor = copies.0, "topic created");
        Ok(AdminResponse::TopicCreated(TopicSummary {
            name,
            partitions: t.partitions().len() as u32,
        }))
    }

    /// Deletes a topic and forgets its ingest pipeline, producer sequences, queue state and the
    /// records held for it.
    pub fn delete_topic(&self, name: String) -> Result<AdminResponse, BrokerError> {
        self.catalog.topics().delete_topic(&name)?;
        self.delays.purge_topic(&name)?;
        self.pipelines.remove_topic(&name)?;
        self.produce.forget_topic(&name);
        self.groups.queues.remove_topic(&name);
        self.mirrors.forget_topic(&name)?;
        self.replication.topic_deleted(&name)?;
        tracing::info!(topic = %name, "topic deleted");
        Ok(AdminResponse::TopicDeleted { name })
    }

    fn add_partitions(&self, name: &str, count: u32) -> Result<AdminResponse, BrokerError> {
        let topics = self.catalog.topics();
        let current = topics.get(name)?.partitions().len() as u32;
        let t = topics.add_partitions(name, current.saturating_add(count))?;
        if self.replication.enabled() {
            self.replication
                .partitions_added(name, t.partitions().len() as u32)?;
        }
        Ok(AdminResponse::Topic(self.describe(&t, false)))
    }

    /// A new producer id for idempotent produce; with a fencing key, the id `principal` took
    /// under it before is fenced (one principal cannot fence another's producers with the same
    /// key). `current`: the id the caller holds under the key; refused if a newer producer took
    /// it since. (On a cluster the fence goes through Raft, see `Broker::admin_request`.)
    pub fn init_producer(
        &self,
        principal: &Principal,
        fencing_key: Option<String>,
        current: Option<u64>,
    ) -> Result<u64, BrokerError> {
        let id = self.draw_producer_id()?;
        if let Some(key) = fencing_key {
            self.fence_producer(principal.name(), key, id, current, true)?;
        }
        Ok(id)
    }

    /// A fresh producer id (unique across restarts, and across the nodes of a cluster).
    pub fn draw_producer_id(&self) -> Result<u64, BrokerError> {
        let id = self.meta.generate_id()?;
        // Ids are drawn per node: the low bits name the node, so two nodes never hand out the
        // same id to producers that may meet on one partition after a failover.
        Ok(match self.identity.node_id {
            Some(node) => (id << 10) | (node & 0x3ff),
            None => id,
        })
    }

    /// Makes `id` the producer of `principal`'s fencing key `key` and fences the one before;
    /// `ProducerFenced` if `current` no longer holds the key. `wait`: for the old id's appends
    /// in progress (not where a cluster applies metadata, which must not wait on appends).
    pub fn fence_producer(
        &self,
        principal: &str,
        key: String,
        id: u64,
        current: Option<u64>,
        wait: bool,
    ) -> Result<(), BrokerError> {
        if !self
            .produce
            .fence((principal.to_owned(), key), id, current, wait)
        {
            return Err(BrokerError::ProducerFenced {
                producer: current.unwrap_or_default(),
            });
        }
        Ok(())
    }

    fn summaries(&self) -> Vec<TopicSummary> {
        self.catalog
            .topics()
            .list()
            .iter()
            .map(|t| TopicSummary {
                name: t.name.clone(),
                partitions: t.partitions().len() as u32,
            })
            .collect()
    }

    /// A topic as `describe` shows it; `everywhere`: its delayed records counted in the whole
    /// cluster (asking other nodes: not while applying metadata), else on this node.
    fn describe(&self, t: &Topic, everywhere: bool) -> TopicDescription {
        let partitions = t
            .partitions()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let s = p.stats();
                PartitionDescription {
                    partition: i as u32,
                    log_start: s.log_start,
                    log_end: s.log_end,
                    size_bytes: s.size_bytes,
                    segments: s.segments as u32,
                }
            })
            .collect();
        TopicDescription {
            name: t.name.clone(),
            partitions,
            retention_ms: t.config.log.retention_ms,
            retention_bytes: t.config.log.retention_bytes,
            segment_bytes: t.config.log.segment_bytes,
            created_ms: t.config.created_ms,
            pipeline: self.pipelines.infos(&t.name),
            pending_delayed: match everywhere {
                true => self.delays.pending_for(&t.name),
                false => self.delays.pending_here(&t.name),
            },
        }
    }
}
