//! Admin requests (one per stream): topic create / delete / list / describe / grow, metadata, and
//! plugins (deploy with the component in the frame payload, list, describe, remove, attach,
//! detach). Calls that touch the disk or compile run on the blocking pool.

use std::sync::Arc;

use bytes::Bytes;
use quiver_proto::frame::{Frame, FrameKind};
use quiver_proto::messages::{
    AdminRequest, AdminResponse, PartitionDescription, TopicDescription, TopicSummary,
};
use quiver_wire::{decode_frame, write_error, write_frame, WireError};

use crate::broker::{Broker, BrokerError, LogOverrides};
use crate::plugins::pipeline::AttachRequest;
use crate::plugins::registry::split_ref;
use crate::storage::Topic;
use quiver_proto::routing::ExchangeInfo;

pub(super) async fn serve(
    frame: Frame,
    send: &mut quinn::SendStream,
    broker: &Arc<Broker>,
) -> Result<(), WireError> {
    let (req, payload): (AdminRequest, Bytes) = match decode_frame(frame, FrameKind::Admin) {
        Ok(x) => x,
        Err(e) => {
            return write_error(send, quiver_proto::ErrorCode::InvalidRequest, e.to_string()).await
        }
    };
    tracing::debug!(?req, "admin request");
    let b = broker.clone();
    let result = tokio::task::spawn_blocking(move || handle(&b, req, payload))
        .await
        .unwrap_or_else(|e| Err(BrokerError::Internal(e.to_string())));
    match result {
        Ok(resp) => write_frame(send, FrameKind::AdminOk, &resp, Bytes::new()).await,
        Err(e) => write_error(send, e.code(), e.to_string()).await,
    }
}

fn handle(
    broker: &Broker,
    req: AdminRequest,
    payload: Bytes,
) -> Result<AdminResponse, BrokerError> {
    let topics = broker.topics();
    Ok(match req {
        AdminRequest::DeployPlugin { .. }
        | AdminRequest::ListPlugins
        | AdminRequest::DescribePlugin { .. }
        | AdminRequest::RemovePlugin { .. }
        | AdminRequest::AttachPlugin { .. }
        | AdminRequest::DetachPlugin { .. } => return plugins(broker, req, payload),
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
            broker.delete_topic(&name)?;
            tracing::info!(topic = %name, "topic deleted");
            AdminResponse::TopicDeleted { name }
        }
        AdminRequest::ListTopics => AdminResponse::Topics {
            topics: summaries(broker),
        },
        AdminRequest::DescribeTopic { name } => {
            let t = topics.get(&name)?;
            AdminResponse::Topic(describe(broker, &t))
        }
        AdminRequest::AddPartitions { name, count } => {
            let current = topics.get(&name)?.partitions().len() as u32;
            let t = topics.add_partitions(&name, current.saturating_add(count))?;
            AdminResponse::Topic(describe(broker, &t))
        }
        AdminRequest::CreateExchange { .. }
        | AdminRequest::BindExchange { .. }
        | AdminRequest::ListExchanges
        | AdminRequest::DeleteExchange { .. }
        | AdminRequest::AttachExchangeRouter { .. }
        | AdminRequest::DetachExchangeRouter { .. } => return exchanges(broker, req),
        AdminRequest::CancelDelayed { id } => AdminResponse::DelayCancelled {
            id,
            topic: broker.delays().cancel(id)?,
        },
        AdminRequest::InitProducer => AdminResponse::Producer {
            producer_id: broker.init_producer()?,
        },
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

/// The plugin operations.
fn plugins(
    broker: &Broker,
    req: AdminRequest,
    payload: Bytes,
) -> Result<AdminResponse, BrokerError> {
    let registry = broker.registry();
    let pipelines = broker.pipelines();
    Ok(match req {
        AdminRequest::DeployPlugin { name, version } => {
            let d = registry.deploy(&name, version.as_deref(), &payload)?;
            AdminResponse::PluginDeployed {
                plugin: d.info,
                compile_ms: d.compile_ms,
                cached: d.cached,
            }
        }
        AdminRequest::ListPlugins => AdminResponse::Plugins {
            plugins: registry.list()?,
        },
        AdminRequest::DescribePlugin { name } => {
            let versions = registry.versions(&name)?;
            let (plugin, version) = split_ref(&name);
            let logs = versions
                .iter()
                .flat_map(|v| registry.recent_logs(&v.name, &v.version))
                .collect();
            AdminResponse::Plugin {
                versions,
                attachments: pipelines.attachments_of(plugin, version),
                logs,
            }
        }
        AdminRequest::RemovePlugin { name } => {
            let versions = pipelines.remove_plugin(&name)?;
            AdminResponse::PluginRemoved { name, versions }
        }
        AdminRequest::AttachPlugin {
            topic,
            plugin,
            config,
            on_error,
            timeout_ms,
            memory_mb,
        } => {
            broker.topics().get(&topic)?;
            let req = AttachRequest {
                plugin,
                config,
                on_error,
                timeout_ms,
                memory_mb,
            };
            let stages = pipelines.attach(&topic, req)?;
            AdminResponse::Pipeline { topic, stages }
        }
        AdminRequest::DetachPlugin { topic, plugin } => {
            let stages = pipelines.detach(&topic, &plugin)?;
            AdminResponse::Pipeline { topic, stages }
        }
        other => {
            return Err(BrokerError::Internal(format!(
                "not a plugin request: {other:?}"
            )))
        }
    })
}

fn describe(broker: &Broker, t: &Topic) -> TopicDescription {
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
        pipeline: broker.pipelines().infos(&t.name),
        pending_delayed: broker.delays().pending_for(&t.name),
    }
}

/// The exchange operations. Topics named by an exchange must exist when they are named.
fn exchanges(broker: &Broker, req: AdminRequest) -> Result<AdminResponse, BrokerError> {
    let ex = broker.exchanges();
    Ok(match req {
        AdminRequest::CreateExchange {
            name,
            kind,
            alternate,
        } => {
            crate::storage::validate_name(&name)?;
            if let Some(t) = &alternate {
                broker.topics().get(t)?;
            }
            let def = ex.create(&name, kind, alternate)?;
            // A router left by an exchange of the same name (an attach racing its delete) must not
            // apply to the new one.
            broker.pipelines().detach_router(&name)?;
            tracing::info!(exchange = %name, kind = kind.as_str(), "exchange created");
            AdminResponse::Exchange(def)
        }
        AdminRequest::BindExchange { exchange, binding } => {
            broker.topics().get(&binding.topic)?;
            AdminResponse::Exchange(with_router(broker, ex.bind(&exchange, binding)?))
        }
        AdminRequest::ListExchanges => AdminResponse::Exchanges {
            exchanges: ex
                .list()
                .into_iter()
                .map(|def| with_router(broker, def))
                .collect(),
        },
        AdminRequest::DeleteExchange { name } => {
            ex.delete(&name)?;
            broker.pipelines().detach_router(&name)?;
            AdminResponse::ExchangeDeleted { name }
        }
        AdminRequest::AttachExchangeRouter {
            exchange,
            plugin,
            config,
            on_error,
            timeout_ms,
            memory_mb,
        } => {
            let def = ex.get(&exchange)?.def.clone();
            let req = AttachRequest {
                plugin,
                config,
                on_error,
                timeout_ms,
                memory_mb,
            };
            broker.pipelines().attach_router(&exchange, req)?;
            AdminResponse::Exchange(with_router(broker, def))
        }
        AdminRequest::DetachExchangeRouter { exchange } => {
            let def = ex.get(&exchange)?.def.clone();
            if !broker.pipelines().detach_router(&exchange)? {
                return Err(BrokerError::InvalidRequest(format!(
                    "exchange {exchange} has no router attached"
                )));
            }
            AdminResponse::Exchange(def)
        }
        other => {
            return Err(BrokerError::Internal(format!(
                "not an exchange request: {other:?}"
            )))
        }
    })
}

/// An exchange's definition with its router (health included), if one is attached.
fn with_router(broker: &Broker, mut def: ExchangeInfo) -> ExchangeInfo {
    def.router = broker.pipelines().router_info(&def.name);
    def
}
