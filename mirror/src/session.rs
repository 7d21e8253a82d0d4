//! What one mirror session's forwarding tasks share (the link to the core, its producer and
//! admin, the core topics checked so far), and the topics it forwards from.

use std::collections::HashMap;
use std::sync::Arc;

use quiver::{Admin, Client, NewTopic, Producer};
use quiver_broker::mirrors::{MirrorDef, MirrorStatus};
use quiver_broker::storage::Topic;
use quiver_broker::Broker;
use quiver_proto::ErrorCode;

use crate::error::LinkError;

/// What the forwarding tasks of one session share.
pub struct Session {
    pub broker: Arc<Broker>,
    pub def: MirrorDef,
    pub status: Arc<MirrorStatus>,
    pub client: Client,
    pub producer: Producer,
    pub admin: Admin,
    /// Core topics checked or created in this session, with their partition counts.
    pub(crate) targets: tokio::sync::Mutex<HashMap<String, u32>>,
}

impl Session {
    /// The partition count of the core topic `target`, created with `partitions` when missing.
    pub async fn target(&self, target: &str, partitions: u32) -> Result<u32, LinkError> {
        let mut known = self.targets.lock().await;
        if let Some(n) = known.get(target) {
            return Ok(*n);
        }
        let err = |e: quiver::ClientError| LinkError::Target {
            topic: target.to_owned(),
            reason: e.to_string(),
        };
        let n = match self.admin.describe_topic(target).await {
            Ok(d) => d.partitions.len() as u32,
            Err(e) if e.code() == Some(ErrorCode::UnknownTopic) => {
                match self
                    .admin
                    .create_topic(NewTopic::new(target, partitions))
                    .await
                {
                    Ok(n) => {
                        tracing::info!(mirror = %self.def.name, topic = target, partitions = n, "created the topic on the core");
                        n
                    }
                    Err(e) if e.code() == Some(ErrorCode::TopicExists) => {
                        let d = self.admin.describe_topic(target).await.map_err(err)?;
                        d.partitions.len() as u32
                    }
                    Err(e) => return Err(err(e)),
                }
            }
            Err(e) => return Err(err(e)),
        };
        if n == 0 {
            return Err(LinkError::Target {
                topic: target.to_owned(),
                reason: "has no partitions".into(),
            });
        }
        known.insert(target.to_owned(), n);
        Ok(n)
    }

    /// A core partition's bounds (log start, log end).
    pub async fn bounds(&self, target: &str, partition: u32) -> Result<(u64, u64), LinkError> {
        let d = self.admin.describe_topic(target).await?;
        let p = d
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| LinkError::Target {
                topic: target.to_owned(),
                reason: format!("partition {partition} is gone"),
            })?;
        Ok((p.log_start, p.log_end))
    }
}

/// A topic the mirror forwards from: one of this broker's (push) or one of the core's (pull).
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub partitions: u32,
    /// Its creation time: a topic deleted and created again under the name is another source.
    pub created_ms: i64,
    /// The topic itself, when it is this broker's.
    pub local: Option<Arc<Topic>>,
    /// Each partition's (log start, log end), when it is the core's.
    pub bounds: Vec<(u64, u64)>,
}
