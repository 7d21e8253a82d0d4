//! The plugin service: deploy (the component is the request's payload), list, describe (versions,
//! attachments, recent log lines), read log lines (a long-poll), remove, and attach/detach stages
//! of a topic's ingest pipeline.
//! The registry and the pipelines live in `plugins/`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quiver_proto::messages::{AdminRequest, AdminResponse};
use quiver_proto::plugins::{AttachOptions, PluginMemory};

use crate::error::BrokerError;
use crate::plugins::registry::split_ref;
use crate::plugins::{Pipelines, PluginRegistry};
use crate::storage::TopicStore;

#[derive(Debug)]
pub struct PluginService {
    registry: Arc<PluginRegistry>,
    pipelines: Arc<Pipelines>,
    topics: Arc<TopicStore>,
}

impl PluginService {
    pub fn new(
        registry: Arc<PluginRegistry>,
        pipelines: Arc<Pipelines>,
        topics: Arc<TopicStore>,
    ) -> PluginService {
        PluginService {
            registry,
            pipelines,
            topics,
        }
    }

    /// Answers one plugin request (blocking: compiles components, runs `init`, writes sled).
    pub fn handle(&self, req: AdminRequest, payload: Bytes) -> Result<AdminResponse, BrokerError> {
        match req {
            AdminRequest::DeployPlugin { name, version } => {
                self.deploy(&name, version.as_deref(), &payload)
            }
            AdminRequest::ListPlugins => Ok(AdminResponse::Plugins {
                plugins: self.registry.list()?,
            }),
            AdminRequest::DescribePlugin { name } => self.describe(&name),
            AdminRequest::ListPluginLogs {
                name,
                version,
                after,
                max_wait_ms,
            } => self.logs(&name, version.as_deref(), after, max_wait_ms),
            AdminRequest::RemovePlugin { name } => {
                let versions = self.pipelines.remove_plugin(&name)?;
                Ok(AdminResponse::PluginRemoved { name, versions })
            }
            AdminRequest::AttachPlugin { topic, options } => self.attach(topic, options),
            AdminRequest::DetachPlugin { topic, plugin } => {
                let stages = self.pipelines.detach(&topic, &plugin)?;
                Ok(AdminResponse::Pipeline { topic, stages })
            }
            other => Err(BrokerError::Internal(format!(
                "not a plugin request: {other:?}"
            ))),
        }
    }

    fn deploy(
        &self,
        name: &str,
        version: Option<&str>,
        component: &[u8],
    ) -> Result<AdminResponse, BrokerError> {
        let d = self.registry.deploy(name, version, component)?;
        Ok(AdminResponse::PluginDeployed {
            plugin: d.info,
            compile_ms: d.compile_ms,
            cached: d.cached,
        })
    }

    fn describe(&self, name: &str) -> Result<AdminResponse, BrokerError> {
        let versions = self.registry.versions(name)?;
        let (plugin, version) = split_ref(name);
        let logs = versions
            .iter()
            .flat_map(|v| self.registry.recent_logs(&v.name, &v.version))
            .collect();
        let budget = self.registry.engine().budget();
        Ok(AdminResponse::Plugin {
            versions,
            attachments: self.pipelines.attachments_of(plugin, version),
            logs,
            memory: PluginMemory {
                in_use_bytes: budget.used() as u64,
                budget_bytes: budget.limit() as u64,
            },
        })
    }

    /// Log lines of a deployed plugin after a cursor; waits up to `max_wait_ms` for one when
    /// there are none (this runs on the blocking pool, as every admin request does).
    fn logs(
        &self,
        reference: &str,
        version: Option<&str>,
        after: Option<u64>,
        max_wait_ms: u32,
    ) -> Result<AdminResponse, BrokerError> {
        // `NAME@VERSION` is accepted too, like the other plugin requests.
        let (name, embedded) = split_ref(reference);
        let version = version.or(embedded);
        match version {
            Some(v) => self.registry.versions(&format!("{name}@{v}"))?,
            None => self.registry.versions(name)?,
        };
        let wait = Duration::from_millis(max_wait_ms as u64);
        let page = self
            .registry
            .logs()
            .read_blocking(name, version, after, wait);
        Ok(AdminResponse::PluginLogs {
            name: name.to_owned(),
            lines: page.lines,
            next: page.next,
            dropped: page.dropped,
        })
    }

    fn attach(&self, topic: String, options: AttachOptions) -> Result<AdminResponse, BrokerError> {
        self.topics.get(&topic)?;
        let stages = self.pipelines.attach(&topic, options)?;
        Ok(AdminResponse::Pipeline { topic, stages })
    }
}
