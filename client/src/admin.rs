//! Topic administration: create, delete, list, describe and grow topics.

use quiver_proto::frame::FrameKind;
use quiver_proto::messages::{AdminRequest, AdminResponse, TopicDescription, TopicSummary};

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

fn unexpected(resp: AdminResponse) -> ClientError {
    ClientError::Protocol(format!("unexpected admin reply {resp:?}"))
}
