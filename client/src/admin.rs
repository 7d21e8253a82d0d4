//! Administration: create, delete, list, describe and grow topics; deploy, list, describe and
//! remove plugins; attach plugins to topics and detach them.

use bytes::Bytes;
use quiver_proto::frame::FrameKind;
use quiver_proto::messages::{
    AdminRequest, AdminResponse, AttachmentInfo, ErrorPolicy, PluginVersionInfo, TopicDescription,
    TopicSummary,
};

use crate::client::Client;
use crate::error::ClientError;

/// Settings of a topic to create; unset fields take the broker's defaults.
#[derive(Debug, Clone, Default)]
pub struct NewTopic {
    pub name: String,
    /// 0 = the broker's default.
    pub partitions: u32,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: Option<u64>,
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

#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
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
        };
        match self.call(req).await? {
            AdminResponse::TopicCreated { partitions, .. } => Ok(partitions),
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

/// A plugin attachment to create (or swap in place, for the same plugin name).
#[derive(Debug, Clone, Default)]
pub struct Attach {
    pub topic: String,
    /// `NAME` (latest version) or `NAME@VERSION`.
    pub plugin: String,
    pub config: Vec<(String, String)>,
    pub on_error: ErrorPolicy,
    /// `None`: the broker's default.
    pub timeout_ms: Option<u32>,
    pub memory_mb: Option<u32>,
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
        self.describe_plugin_with_logs(name)
            .await
            .map(|(v, a, _)| (v, a))
    }

    /// Like [`Admin::describe_plugin`], plus the plugin's recent log lines.
    pub async fn describe_plugin_with_logs(
        &self,
        name: &str,
    ) -> Result<(Vec<PluginVersionInfo>, Vec<AttachmentInfo>, Vec<String>), ClientError> {
        let req = AdminRequest::DescribePlugin {
            name: name.to_owned(),
        };
        match self.call(req).await? {
            AdminResponse::Plugin {
                versions,
                attachments,
                logs,
            } => Ok((versions, attachments, logs)),
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

    /// Attaches a plugin to a topic's ingest pipeline; returns the pipeline.
    pub async fn attach_plugin(&self, a: Attach) -> Result<Vec<AttachmentInfo>, ClientError> {
        let req = AdminRequest::AttachPlugin {
            topic: a.topic,
            plugin: a.plugin,
            config: a.config,
            on_error: a.on_error,
            timeout_ms: a.timeout_ms,
            memory_mb: a.memory_mb,
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

fn unexpected(resp: AdminResponse) -> ClientError {
    ClientError::Protocol(format!("unexpected admin reply {resp:?}"))
}
