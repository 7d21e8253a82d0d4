//! Admin requests (one per stream): topic create / delete / list / describe / grow, and metadata.
//! Storage calls that touch the disk run on the blocking pool.

use std::sync::Arc;

use bytes::Bytes;
use quiver_client::wire::{decode_frame, write_error, write_frame, WireError};
use quiver_proto::frame::{Frame, FrameKind};
use quiver_proto::messages::{
    AdminRequest, AdminResponse, PartitionDescription, TopicDescription, TopicSummary,
};

use crate::broker::{Broker, BrokerError, LogOverrides};
use crate::storage::Topic;

pub(super) async fn serve(
    frame: Frame,
    send: &mut quinn::SendStream,
    broker: &Arc<Broker>,
) -> Result<(), WireError> {
    let req: AdminRequest = match decode_frame(frame, FrameKind::Admin) {
        Ok((req, _)) => req,
        Err(e) => {
            return write_error(send, quiver_proto::ErrorCode::InvalidRequest, e.to_string()).await
        }
    };
    tracing::debug!(?req, "admin request");
    let b = broker.clone();
    let result = tokio::task::spawn_blocking(move || handle(&b, req))
        .await
        .unwrap_or_else(|e| Err(BrokerError::Internal(e.to_string())));
    match result {
        Ok(resp) => write_frame(send, FrameKind::AdminOk, &resp, Bytes::new()).await,
        Err(e) => write_error(send, e.code(), e.to_string()).await,
    }
}

fn handle(broker: &Broker, req: AdminRequest) -> Result<AdminResponse, BrokerError> {
    let topics = broker.topics();
    Ok(match req {
        AdminRequest::CreateTopic {
            name,
            partitions,
            retention_ms,
            retention_bytes,
            segment_bytes,
        } => {
            let overrides = LogOverrides {
                retention_ms,
                retention_bytes,
                segment_bytes,
            };
            let partitions = (partitions > 0).then_some(partitions);
            let t = broker.create_topic(&name, partitions, overrides)?;
            tracing::info!(topic = %name, partitions = t.partitions().len(), "topic created");
            AdminResponse::TopicCreated {
                name,
                partitions: t.partitions().len() as u32,
            }
        }
        AdminRequest::DeleteTopic { name } => {
            topics.delete_topic(&name)?;
            tracing::info!(topic = %name, "topic deleted");
            AdminResponse::TopicDeleted { name }
        }
        AdminRequest::ListTopics => AdminResponse::Topics {
            topics: summaries(broker),
        },
        AdminRequest::DescribeTopic { name } => {
            let t = topics.get(&name)?;
            AdminResponse::Topic(describe(&t))
        }
        AdminRequest::AddPartitions { name, count } => {
            let current = topics.get(&name)?.partitions().len() as u32;
            let t = topics.add_partitions(&name, current.saturating_add(count))?;
            AdminResponse::Topic(describe(&t))
        }
        AdminRequest::Metadata => AdminResponse::Metadata {
            broker_id: super::server::broker_id(broker),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            listen: broker.config().listen.to_string(),
            topics: summaries(broker),
        },
    })
}

fn summaries(broker: &Broker) -> Vec<TopicSummary> {
    broker
        .topics()
        .list()
        .iter()
        .map(|t| TopicSummary {
            name: t.name.clone(),
            partitions: t.partitions().len() as u32,
        })
        .collect()
}

fn describe(t: &Topic) -> TopicDescription {
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
    }
}
