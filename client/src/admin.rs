//! Administration: create, delete, list, describe and grow topics; deploy, list, describe and
//! remove plugins and read their log lines; attach plugins to topics and detach them; list, describe and reset consumer
//! groups and read or store their committed offsets; hand out idempotent producer ids; manage
//! exchanges and their router plugins; cancel records held for delayed delivery; manage users and
//! ACLs.

use bytes::Bytes;
use quiver_proto::auth::{AclRule, AclSpec, PrincipalQuota, Quota, UserInfo};
use quiver_proto::frame::FrameKind;
use quiver_proto::groups::{
    CommittedOffset, GroupDescription, GroupRequest, GroupResponse, GroupSummary, PartitionOffset,
    ResetTo, TopicPartition,
};
use quiver_proto::messages::{
    AdminRequest, AdminResponse, ClusterStatus, PartitionReplicas, TopicDescription, TopicSummary,
};
use quiver_proto::mirror::{MirrorInfo, MirrorSpec};
use quiver_proto::plugins::{
    AttachOptions, AttachmentInfo, PluginDescription, PluginLogLine, PluginVersionInfo,
};
use quiver_proto::routing::{Binding, ExchangeInfo, ExchangeKind};

use crate::client::Client;
use crate::error::ClientError;
use crate::group::{call_group, unexpected as unexpected_group};

/// Settings of a topic to create; unset fields take the broker's defaults.
#[derive(Debug, Clone, Default)]
pub struct NewTopic {
    pub name: String,
    /// 0 = the broker's default.
    pub partitions: u32,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: Option<u64>,
    /// Copies of each partition on a cluster (the cluster's default when `None`).
    pub replication_factor: Option<u32>,
    /// In-sync replicas an `acks=all` produce needs (1 when `None`).
    pub min_insync: Option<u32>,
}

impl NewTopic {
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        NewTopic {
            name: name.into(),
            partitions,
            ..Default::default()
        }
    }
}

/// One answer of [`Admin::plugin_logs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLogs {
    /// Oldest first, each with its sequence number (per plugin, without gaps).
    pub lines: Vec<PluginLogLine>,
    /// The cursor for the next call's `after`.
    pub next: u64,
    /// Lines after the cursor that the broker's bounded buffer dropped before this read.
    pub dropped: u64,
}

#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

impl Client {
    /// Topic, plugin, exchange and group administration over this connection.
    pub fn admin(&self) -> Admin {
        Admin::new(self.clone())
    }
}

impl Admin {
    pub(crate) fn new(client: Client) -> Self {
        Admin { client }
    }

    async fn call(&self, req: AdminRequest) -> Result<AdminResponse, ClientError> {
        self.client
            .call(FrameKind::Admin, &req, FrameKind::AdminOk)
            .await
    }

    /// Creates a topic; returns its partition count.
    pub async fn create_topic(&self, topic: NewTopic) -> Result<u32, ClientError> {
        let req = AdminRequest::CreateTopic {
            name: topic.name,
            partitions: topic.partitions,
            retention_ms: topic.retention_ms,
            retention_bytes: topic.retention_bytes,
            segment_bytes: topic.segment_bytes,
            replication_factor: topic.replication_factor,
            min_insync: topic.min_insync,
        };
        match self.call(req).await? {
            AdminResponse::TopicCreated(t) => Ok(t.partitions),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        match self
            .call(AdminRequest::DeleteTopic {
                name: name.to_owned(),
            })
            .await?
        {
            AdminResponse::TopicDeleted { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>, ClientError> {
        match self.call(AdminRequest::ListTopics).await? {
            AdminResponse::Topics { topics } => Ok(topics),
            other => Err(unexpected(other)),
        }
    }

    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        match self
            .call(AdminRequest::DescribeTopic {
                name: name.to_owned(),
            })
            .await?
        {
            AdminResponse::Topic(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    /// Adds `count` partitions to a topic.
    pub async fn add_partitions(
        &self,
        name: &str,
        count: u32,
    ) -> Result<TopicDescription, ClientError> {
        match self
            .call(AdminRequest::AddPartitions {
                name: name.to_owned(),
                count,
            })
            .await?
        {
            AdminResponse::Topic(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }
}

/// The reply to a deploy.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub plugin: PluginVersionInfo,
    pub compile_ms: u64,
    pub cached: bool,
}

impl Admin {
    /// Deploys a component as `name` (`version: None` numbers it after the highest so far).
    pub async fn deploy_plugin(
        &self,
        name: &str,
        version: Option<&str>,
        wasm: Bytes,
    ) -> Result<Deployed, ClientError> {
        let req = AdminRequest::DeployPlugin {
            name: name.to_owned(),
            version: version.map(str::to_owned),
        };
        let resp = self
            .client
            .call_with_payload(FrameKind::Admin, &req, wasm, FrameKind::AdminOk)
            .await?;
        match resp {
            AdminResponse::PluginDeployed {
                plugin,
                compile_ms,
                cached,
            } => Ok(Deployed {
                plugin,
                compile_ms,
                cached,
            }),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list_plugins(&self) -> Result<Vec<PluginVersionInfo>, ClientError> {
        match self.call(AdminRequest::ListPlugins).await? {
            AdminResponse::Plugins { plugins } => Ok(plugins),
            other => Err(unexpected(other)),
        }
    }

    /// The versions of `NAME` (or the one `NAME@VERSION`) and the topics they are attached to.
    pub async fn describe_plugin(
        &self,
        name: &str,
    ) -> Result<(Vec<PluginVersionInfo>, Vec<AttachmentInfo>), ClientError> {
        self.plugin_description(name)
            .await
            .map(|d| (d.versions, d.attachments))
    }

    /// Everything about a plugin: [`Admin::describe_plugin`], plus its recent log lines and the
    /// memory of all plugins against the broker's budget.
    pub async fn plugin_description(&self, name: &str) -> Result<PluginDescription, ClientError> {
        let req = AdminRequest::DescribePlugin {
            name: name.to_owned(),
        };
        match self.call(req).await? {
            AdminResponse::Plugin {
                versions,
                attachments,
                logs,
                memory,
            } => Ok(PluginDescription {
                versions,
                attachments,
                logs,
                memory,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// The log lines plugin `name` wrote (of one `version`, or all) after the cursor `after`
    /// (every line the broker still holds when `None`). With none yet, the broker holds the request
    /// up to `max_wait` (at most 30 s) and answers as soon as one is logged: call again with
    /// [`PluginLogs::next`] to follow the log.
    pub async fn plugin_logs(
        &self,
        name: &str,
        version: Option<&str>,
        after: Option<u64>,
        max_wait: std::time::Duration,
    ) -> Result<PluginLogs, ClientError> {
        let req = AdminRequest::ListPluginLogs {
            name: name.to_owned(),
            version: version.map(str::to_owned),
            after,
            max_wait_ms: max_wait.as_millis().min(u32::MAX as u128) as u32,
        };
        match self.call(req).await? {
            AdminResponse::PluginLogs {
                lines,
                next,
                dropped,
                ..
            } => Ok(PluginLogs {
                lines,
                next,
                dropped,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Removes every version of `NAME`, or one `NAME@VERSION`; returns the versions removed.
    pub async fn remove_plugin(&self, name: &str) -> Result<Vec<String>, ClientError> {
        let req = AdminRequest::RemovePlugin {
            name: name.to_owned(),
        };
        match self.call(req).await? {
            AdminResponse::PluginRemoved { versions, .. } => Ok(versions),
            other => Err(unexpected(other)),
        }
    }

    /// Attaches a plugin to a topic's ingest pipeline, or swaps in place the stage of the same
    /// plugin name (e.g. to a new version); returns the pipeline.
    pub async fn attach_plugin(
        &self,
        topic: &str,
        options: AttachOptions,
    ) -> Result<Vec<AttachmentInfo>, ClientError> {
        let req = AdminRequest::AttachPlugin {
            topic: topic.to_owned(),
            options,
        };
        self.pipeline(req).await
    }

    /// Removes a plugin's stage from a topic's pipeline; returns the pipeline.
    pub async fn detach_plugin(
        &self,
        topic: &str,
        plugin: &str,
    ) -> Result<Vec<AttachmentInfo>, ClientError> {
        let req = AdminRequest::DetachPlugin {
            topic: topic.to_owned(),
            plugin: plugin.to_owned(),
        };
        self.pipeline(req).await
    }

    async fn pipeline(&self, req: AdminRequest) -> Result<Vec<AttachmentInfo>, ClientError> {
        match self.call(req).await? {
            AdminResponse::Pipeline { stages, .. } => Ok(stages),
            other => Err(unexpected(other)),
        }
    }
}

impl Admin {
    /// A fresh producer id for idempotent produce (the producer asks for one by itself).
    pub async fn init_producer(&self) -> Result<u64, ClientError> {
        self.init_producer_with(None, None).await
    }

    /// A fresh producer id that fences the id this principal took before under `fencing_key`:
    /// the broker refuses its batches from then on (see [`crate::ProducerConfig::fencing_key`]).
    /// `current`: the id the caller holds under the key, when it replaces its own; the broker
    /// answers `ProducerFenced` if a newer producer took the key since.
    pub async fn init_fenced_producer(
        &self,
        fencing_key: &str,
        current: Option<u64>,
    ) -> Result<u64, ClientError> {
        self.init_producer_with(Some(fencing_key.to_owned()), current)
            .await
    }

    async fn init_producer_with(
        &self,
        fencing_key: Option<String>,
        current_id: Option<u64>,
    ) -> Result<u64, ClientError> {
        let req = AdminRequest::InitProducer {
            fencing_key,
            current_id,
        };
        match self.call(req).await? {
            AdminResponse::Producer { producer_id } => Ok(producer_id),
            other => Err(unexpected(other)),
        }
    }
}

/// Exchanges: routing rules that bind to topics (docs/routing.md).
impl Admin {
    pub async fn create_exchange(
        &self,
        name: &str,
        kind: ExchangeKind,
        alternate: Option<String>,
    ) -> Result<ExchangeInfo, ClientError> {
        let req = AdminRequest::CreateExchange {
            name: name.to_owned(),
            kind,
            alternate,
        };
        match self.call(req).await? {
            AdminResponse::Exchange(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    /// Binds `binding.topic` to the exchange; returns the exchange with all its bindings.
    pub async fn bind_exchange(
        &self,
        exchange: &str,
        binding: Binding,
    ) -> Result<ExchangeInfo, ClientError> {
        let req = AdminRequest::BindExchange {
            exchange: exchange.to_owned(),
            binding,
        };
        match self.call(req).await? {
            AdminResponse::Exchange(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list_exchanges(&self) -> Result<Vec<ExchangeInfo>, ClientError> {
        match self.call(AdminRequest::ListExchanges).await? {
            AdminResponse::Exchanges { exchanges } => Ok(exchanges),
            other => Err(unexpected(other)),
        }
    }

    pub async fn delete_exchange(&self, name: &str) -> Result<(), ClientError> {
        let req = AdminRequest::DeleteExchange {
            name: name.to_owned(),
        };
        match self.call(req).await? {
            AdminResponse::ExchangeDeleted { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Attaches a router plugin (world `router`) to an exchange, replacing any router it had: the
    /// plugin, not the bindings, then decides the destination topics of each record. Returns the
    /// exchange (its `router` set).
    pub async fn attach_exchange_router(
        &self,
        exchange: &str,
        options: AttachOptions,
    ) -> Result<ExchangeInfo, ClientError> {
        let req = AdminRequest::AttachExchangeRouter {
            exchange: exchange.to_owned(),
            options,
        };
        match self.call(req).await? {
            AdminResponse::Exchange(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }

    /// Detaches the exchange's router plugin: its bindings route again. Returns the exchange.
    pub async fn detach_exchange_router(
        &self,
        exchange: &str,
    ) -> Result<ExchangeInfo, ClientError> {
        let req = AdminRequest::DetachExchangeRouter {
            exchange: exchange.to_owned(),
        };
        match self.call(req).await? {
            AdminResponse::Exchange(e) => Ok(e),
            other => Err(unexpected(other)),
        }
    }
}

/// Delayed delivery: records produced with a delivery-time header are held by the broker.
impl Admin {
    /// Cancels a record held for delayed delivery (its id is `RecordMetadata::delay_id`); returns
    /// the topic it would have gone to. Fails with code `UnknownDelayed` when no record with that
    /// id is pending (never held, already delivered or already cancelled).
    pub async fn cancel_delayed(&self, id: u64) -> Result<String, ClientError> {
        match self.call(AdminRequest::CancelDelayed { id }).await? {
            AdminResponse::DelayCancelled { topic, .. } => Ok(topic),
            other => Err(unexpected(other)),
        }
    }
}

/// Users and ACLs (a broker started with `--auth`; each call needs `admin` on the cluster), and
/// who this connection is.
impl Admin {
    /// Creates a token user; returns its token, which the broker never shows again.
    pub async fn create_user(&self, name: &str) -> Result<String, ClientError> {
        let name = name.to_owned();
        match self.call(AdminRequest::CreateUser { name }).await? {
            AdminResponse::UserCreated { token, .. } => Ok(token),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes a token user; its open connections are closed. Returns how many were.
    pub async fn delete_user(&self, name: &str) -> Result<u64, ClientError> {
        let name = name.to_owned();
        match self.call(AdminRequest::DeleteUser { name }).await? {
            AdminResponse::UserDeleted {
                closed_connections, ..
            } => Ok(closed_connections),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list_users(&self) -> Result<Vec<UserInfo>, ClientError> {
        match self.call(AdminRequest::ListUsers).await? {
            AdminResponse::Users { users } => Ok(users),
            other => Err(unexpected(other)),
        }
    }

    /// Adds an ACL rule; returns it with its id.
    pub async fn add_acl(&self, rule: AclSpec) -> Result<AclRule, ClientError> {
        match self.call(AdminRequest::AddAcl { rule }).await? {
            AdminResponse::AclAdded(rule) => Ok(rule),
            other => Err(unexpected(other)),
        }
    }

    pub async fn list_acls(&self) -> Result<Vec<AclRule>, ClientError> {
        match self.call(AdminRequest::ListAcls).await? {
            AdminResponse::Acls { rules } => Ok(rules),
            other => Err(unexpected(other)),
        }
    }

    pub async fn remove_acl(&self, id: u64) -> Result<(), ClientError> {
        match self.call(AdminRequest::RemoveAcl { id }).await? {
            AdminResponse::AclRemoved { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Sets (replaces) `principal`'s quota (`*`: the default); returns every quota in force.
    pub async fn set_quota(
        &self,
        principal: &str,
        quota: Quota,
    ) -> Result<Vec<PrincipalQuota>, ClientError> {
        let principal = principal.to_owned();
        self.quotas(AdminRequest::SetQuota { principal, quota })
            .await
    }

    /// Every quota in force (`*` is the default).
    pub async fn list_quotas(&self) -> Result<Vec<PrincipalQuota>, ClientError> {
        self.quotas(AdminRequest::ListQuotas).await
    }

    /// Removes a quota set at runtime; the config file's (or the default) applies again.
    pub async fn remove_quota(&self, principal: &str) -> Result<Vec<PrincipalQuota>, ClientError> {
        let principal = principal.to_owned();
        self.quotas(AdminRequest::RemoveQuota { principal }).await
    }

    async fn quotas(&self, req: AdminRequest) -> Result<Vec<PrincipalQuota>, ClientError> {
        match self.call(req).await? {
            AdminResponse::Quotas { quotas } => Ok(quotas),
            other => Err(unexpected(other)),
        }
    }

    /// The principal this connection acts as, and whether the broker checks ACLs.
    pub async fn whoami(&self) -> Result<(String, bool), ClientError> {
        match self.call(AdminRequest::WhoAmI).await? {
            AdminResponse::Identity { principal, auth } => Ok((principal, auth)),
            other => Err(unexpected(other)),
        }
    }

    /// Each replicated partition's leader and its client address, as the connected node knows
    /// them (empty from a single broker).
    pub async fn partition_leaders(&self) -> Result<Vec<PartitionReplicas>, ClientError> {
        match self.call(AdminRequest::Metadata).await? {
            AdminResponse::Metadata { leaders, .. } => Ok(leaders),
            other => Err(unexpected(other)),
        }
    }

    /// The cluster as the connected node sees it: members, Raft leader and term (an error from
    /// a broker that is not a cluster node).
    pub async fn cluster_status(&self) -> Result<ClusterStatus, ClientError> {
        match self.call(AdminRequest::ClusterStatus).await? {
            AdminResponse::ClusterStatus(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }
}

/// Edge mirrors: forward this broker's topics to a core broker (docs/mirroring.md).
impl Admin {
    /// Adds (or replaces) a mirror; answers its description.
    pub async fn add_mirror(&self, spec: MirrorSpec) -> Result<MirrorInfo, ClientError> {
        self.mirror(AdminRequest::AddMirror { spec }).await
    }

    pub async fn list_mirrors(&self) -> Result<Vec<MirrorInfo>, ClientError> {
        match self.call(AdminRequest::ListMirrors).await? {
            AdminResponse::Mirrors { mirrors } => Ok(mirrors),
            other => Err(unexpected(other)),
        }
    }

    /// A mirror's state, lag and counters, per forwarded partition.
    pub async fn describe_mirror(&self, name: &str) -> Result<MirrorInfo, ClientError> {
        let name = name.to_owned();
        self.mirror(AdminRequest::DescribeMirror { name }).await
    }

    /// Stops a mirror and forgets its positions.
    pub async fn remove_mirror(&self, name: &str) -> Result<(), ClientError> {
        let name = name.to_owned();
        match self.call(AdminRequest::RemoveMirror { name }).await? {
            AdminResponse::MirrorRemoved { .. } => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    async fn mirror(&self, req: AdminRequest) -> Result<MirrorInfo, ClientError> {
        match self.call(req).await? {
            AdminResponse::Mirror(info) => Ok(info),
            other => Err(unexpected(other)),
        }
    }
}

/// Consumer groups: inspect them and move their committed offsets.
impl Admin {
    async fn group(&self, req: GroupRequest) -> Result<GroupResponse, ClientError> {
        call_group(&self.client, &req).await
    }

    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>, ClientError> {
        match self.group(GroupRequest::List).await? {
            GroupResponse::Groups { groups } => Ok(groups),
            other => Err(unexpected_group(other)),
        }
    }

    /// Members, what they own, per-partition lag and queue-mode state of a group.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let req = GroupRequest::Describe {
            group: group.to_owned(),
        };
        match self.group(req).await? {
            GroupResponse::Group(g) => Ok(g),
            other => Err(unexpected_group(other)),
        }
    }

    /// Moves the group's committed offsets of every partition of `topic`; refused (`GroupActive`)
    /// while members consume the topic. Returns the offsets stored.
    pub async fn reset_group(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        let req = GroupRequest::Reset {
            group: group.to_owned(),
            topic: topic.to_owned(),
            to,
        };
        match self.group(req).await? {
            GroupResponse::Reset { offsets } => Ok(offsets),
            other => Err(unexpected_group(other)),
        }
    }

    /// Stores offsets for a group from outside it (no member id); returns how many were stored.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<PartitionOffset>,
    ) -> Result<u32, ClientError> {
        let req = GroupRequest::Commit {
            group: group.to_owned(),
            member_id: None,
            offsets,
        };
        match self.group(req).await? {
            GroupResponse::Committed { count } => Ok(count),
            other => Err(unexpected_group(other)),
        }
    }

    /// The group's committed offsets of `partitions` (`offset: None` where nothing is committed).
    pub async fn committed_offsets(
        &self,
        group: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<Vec<CommittedOffset>, ClientError> {
        let req = GroupRequest::FetchOffsets {
            group: group.to_owned(),
            partitions,
        };
        match self.group(req).await? {
            GroupResponse::Offsets { offsets } => Ok(offsets),
            other => Err(unexpected_group(other)),
        }
    }
}

fn unexpected(resp: AdminResponse) -> ClientError {
    ClientError::Protocol(format!("unexpected admin reply {resp:?}"))
}
