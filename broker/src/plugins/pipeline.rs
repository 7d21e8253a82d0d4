//! Topic ingest pipelines: ordered stages of filter and transform plugins that every produced batch
//! passes before it is appended. Each stage has an error policy (dead-letter, skip, reject) and a
//! health record: repeated traps or timeouts mark it unhealthy, and it is not called again until a
//! cool-down has passed. Attaching the same plugin name again swaps that stage in place, live.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use quiver_proto::batch::{self, FLAG_SPARSE};
use quiver_proto::messages::{AttachmentInfo, ErrorPolicy};
use quiver_proto::Batch;
use serde::{Deserialize, Serialize};

use super::instance::{Limits, World};
use super::read_filter::{ReadFilter, Sessions};
use super::registry::{split_ref, PluginRegistry};
use super::slot::Slot;
use super::{Failure, PluginError};
use crate::config::PluginConfig;
use crate::meta::{MetaStore, Namespace};

/// Header naming the error on a dead-lettered record.
pub const ERROR_HEADER: &str = "quiver-error";
/// Header naming the plugin (`name@version`) that failed on a dead-lettered record.
pub const PLUGIN_HEADER: &str = "quiver-plugin";

/// A stage as stored in the metadata store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    pub plugin: String,
    pub version: String,
    pub config: Vec<(String, String)>,
    pub on_error: ErrorPolicy,
    pub timeout_ms: u32,
    pub memory_mb: u32,
}

/// An attach request.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub plugin: String,
    pub config: Vec<(String, String)>,
    pub on_error: ErrorPolicy,
    pub timeout_ms: Option<u32>,
    pub memory_mb: Option<u32>,
}

/// The outcome of running a batch through a topic's pipeline.
#[derive(Debug, Default)]
pub struct Ingested {
    /// What to append; `None` when every record was filtered, skipped or dead-lettered.
    pub batch: Option<Batch>,
    /// Batches for `<topic>.dlq`.
    pub dead_letters: Vec<Bytes>,
    /// The records to append are not the records sent, one for one.
    pub transformed: bool,
}

#[derive(Debug, Default)]
struct Health {
    consecutive: u32,
    unhealthy_until: Option<Instant>,
    last_error: Option<String>,
}

struct Stage {
    spec: StageSpec,
    world: World,
    /// The loaded plugin, or why it could not be loaded at start (every batch then fails).
    slot: Result<Slot, String>,
    health: Mutex<Health>,
    calls: AtomicU64,
    failures: AtomicU64,
}

enum StageOut {
    Same,
    Replaced(Batch),
    Dropped,
}

#[derive(Default)]
struct Pipeline {
    stages: Vec<Arc<Stage>>,
}

pub struct Pipelines {
    meta: MetaStore,
    registry: Arc<PluginRegistry>,
    config: PluginConfig,
    /// Largest transform output: the largest batch the log accepts.
    max_output_bytes: usize,
    read_filters: Sessions,
    by_topic: RwLock<HashMap<String, Arc<Pipeline>>>,
    /// Serialises attach and detach (read-modify-write of a topic's stage list).
    admin: Mutex<()>,
}

fn pipeline_key(topic: &str) -> String {
    format!("pipeline/{topic}")
}

impl Pipelines {
    /// Loads every stored pipeline. A plugin that cannot be loaded leaves its stage in place, failing
    /// each batch under its error policy, rather than silently letting records bypass it.
    pub fn open(
        meta: MetaStore,
        registry: Arc<PluginRegistry>,
        config: PluginConfig,
        max_output_bytes: usize,
    ) -> Result<Pipelines, PluginError> {
        let mut by_topic = HashMap::new();
        for (key, specs) in meta.scan::<Vec<StageSpec>>(Namespace::Plugins, "pipeline/")? {
            let topic = key.trim_start_matches("pipeline/").to_owned();
            let stages = specs
                .into_iter()
                .map(|spec| {
                    Arc::new(load_stage(
                        &registry,
                        &config,
                        spec,
                        &topic,
                        max_output_bytes,
                    ))
                })
                .collect();
            by_topic.insert(topic, Arc::new(Pipeline { stages }));
        }
        Ok(Pipelines {
            meta,
            registry,
            config,
            max_output_bytes,
            read_filters: Sessions::default(),
            by_topic: RwLock::new(by_topic),
            admin: Mutex::new(()),
        })
    }

    /// A read filter: the filter plugin `reference` with `config`, under the default limits.
    pub fn read_filter(
        &self,
        reference: &str,
        config: Vec<(String, String)>,
    ) -> Result<ReadFilter, PluginError> {
        let info = self.registry.resolve(reference)?;
        let pre = self.registry.pre(&info.name, &info.version)?;
        let limits = Limits {
            timeout: Duration::from_millis(self.config.timeout_ms as u64),
            memory_bytes: (self.config.memory_mb as usize) << 20,
            max_output_bytes: 0,
        };
        let max = (self.config.max_instances / 2).max(1);
        ReadFilter::new(Slot::new(pre, limits, config), &self.read_filters, max)
    }

    pub fn has_pipeline(&self, topic: &str) -> bool {
        self.by_topic.read().contains_key(topic)
    }

    /// Adds a stage, or swaps the stage of the same plugin name in place. The instance is created
    /// and initialised first, so a refused configuration changes nothing.
    pub fn attach(
        &self,
        topic: &str,
        req: AttachRequest,
    ) -> Result<Vec<AttachmentInfo>, PluginError> {
        if req.on_error == ErrorPolicy::DeadLetter {
            crate::storage::validate_name(&format!("{topic}.dlq")).map_err(|e| {
                PluginError::InvalidRequest(format!(
                    "the dead-letter topic of {topic} would be invalid ({e}): use --on-error skip or reject"
                ))
            })?;
        }
        // Held throughout, so a concurrent remove cannot delete the version being attached.
        let _admin = self.admin.lock();
        let info = self.registry.resolve(&req.plugin)?;
        let pre = self.registry.pre(&info.name, &info.version)?;
        let world = pre.world;
        let spec = StageSpec {
            plugin: info.name.clone(),
            version: info.version.clone(),
            config: req.config,
            on_error: req.on_error,
            timeout_ms: req.timeout_ms.unwrap_or(self.config.timeout_ms),
            memory_mb: req.memory_mb.unwrap_or(self.config.memory_mb),
        };
        let spec = clamp_limits(spec, &self.config);
        let slot = Slot::new(
            pre,
            limits(&spec, self.max_output_bytes),
            spec.config.clone(),
        );
        slot.warm()?;
        let stage = Arc::new(Stage::new(spec, world, Ok(slot)));
        let mut stages = self.stages(topic);
        match stages.iter().position(|s| s.spec.plugin == info.name) {
            Some(i) => stages[i] = stage,
            None => stages.push(stage),
        }
        self.store(topic, stages)?;
        tracing::info!(%topic, plugin = %info.name, version = %info.version, "plugin attached");
        Ok(self.infos(topic))
    }

    /// Removes the stage of `plugin` (a name; a version suffix is ignored).
    pub fn detach(&self, topic: &str, plugin: &str) -> Result<Vec<AttachmentInfo>, PluginError> {
        let (name, _) = split_ref(plugin);
        let _admin = self.admin.lock();
        let mut stages = self.stages(topic);
        let before = stages.len();
        stages.retain(|s| s.spec.plugin != name);
        if stages.len() == before {
            return Err(PluginError::Unknown(format!(
                "{name} (not attached to {topic})"
            )));
        }
        self.store(topic, stages)?;
        tracing::info!(%topic, plugin = %name, "plugin detached");
        Ok(self.infos(topic))
    }

    /// Removes plugin versions (`NAME` or `NAME@VERSION`) that no topic has attached, under the
    /// same lock as attach so the two cannot interleave.
    pub fn remove_plugin(&self, reference: &str) -> Result<Vec<String>, PluginError> {
        let _admin = self.admin.lock();
        self.registry.remove(reference, |name, version| {
            self.attachments_of(name, Some(version))
                .into_iter()
                .map(|a| a.topic)
                .collect()
        })
    }

    /// Forgets the pipeline of a deleted topic (or a stale one of a topic created anew).
    pub fn remove_topic(&self, topic: &str) -> Result<(), PluginError> {
        let _admin = self.admin.lock();
        if !self.has_pipeline(topic) {
            return Ok(());
        }
        self.store(topic, Vec::new())
    }

    fn stages(&self, topic: &str) -> Vec<Arc<Stage>> {
        self.by_topic
            .read()
            .get(topic)
            .map(|p| p.stages.clone())
            .unwrap_or_default()
    }

    /// Persists (durably) then publishes a topic's stages; an empty list removes the pipeline.
    fn store(&self, topic: &str, stages: Vec<Arc<Stage>>) -> Result<(), PluginError> {
        if stages.is_empty() {
            self.meta
                .remove_durable(Namespace::Plugins, &pipeline_key(topic))?;
            self.by_topic.write().remove(topic);
            return Ok(());
        }
        let specs: Vec<&StageSpec> = stages.iter().map(|s| &s.spec).collect();
        self.meta
            .put_durable(Namespace::Plugins, &pipeline_key(topic), &specs)?;
        self.by_topic
            .write()
            .insert(topic.to_owned(), Arc::new(Pipeline { stages }));
        Ok(())
    }

    /// The topic's stages with their health, in order.
    pub fn infos(&self, topic: &str) -> Vec<AttachmentInfo> {
        self.stages(topic).iter().map(|s| s.info(topic)).collect()
    }

    /// Every stage that runs `name` (`version`: only that version).
    pub fn attachments_of(&self, name: &str, version: Option<&str>) -> Vec<AttachmentInfo> {
        let by_topic = self.by_topic.read();
        let mut out: Vec<AttachmentInfo> = by_topic
            .iter()
            .flat_map(|(topic, p)| p.stages.iter().map(move |s| (topic, s)))
            .filter(|(_, s)| s.spec.plugin == name && version.is_none_or(|v| s.spec.version == v))
            .map(|(topic, s)| s.info(topic))
            .collect();
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }

    /// Runs `batch` through the topic's stages (blocking: plugins run here). `Err` only when a
    /// stage with the `reject` policy failed.
    pub fn run(&self, topic: &str, batch: Batch) -> Result<Ingested, PluginError> {
        let Some(pipeline) = self.by_topic.read().get(topic).cloned() else {
            return Ok(Ingested {
                batch: Some(batch),
                ..Default::default()
            });
        };
        let mut out = Ingested::default();
        let mut current = batch;
        for stage in &pipeline.stages {
            match stage.apply(&current, &self.config) {
                Ok(StageOut::Same) => continue,
                Ok(StageOut::Replaced(b)) => {
                    out.transformed = true;
                    current = b;
                }
                Ok(StageOut::Dropped) => {
                    out.transformed = true;
                    return Ok(out);
                }
                // Out of capacity is the broker's condition, not the batch's: the producer retries.
                Err(e) if e.failure() == Some(Failure::Busy) => return Err(e),
                Err(e) => return stage.on_failure(topic, current, e, out),
            }
        }
        out.batch = Some(current);
        Ok(out)
    }
}

/// Keeps an attachment's limits within the broker's bounds (also for stored ones, when the bounds
/// were lowered since).
fn clamp_limits(mut spec: StageSpec, config: &PluginConfig) -> StageSpec {
    spec.timeout_ms = spec.timeout_ms.clamp(1, config.max_timeout_ms.max(1));
    spec.memory_mb = spec.memory_mb.clamp(1, config.max_memory_mb.max(1));
    spec
}

fn limits(spec: &StageSpec, max_output_bytes: usize) -> Limits {
    Limits {
        timeout: Duration::from_millis(spec.timeout_ms as u64),
        memory_bytes: (spec.memory_mb as usize) << 20,
        max_output_bytes,
    }
}

fn load_stage(
    registry: &PluginRegistry,
    config: &PluginConfig,
    spec: StageSpec,
    topic: &str,
    max_output_bytes: usize,
) -> Stage {
    let spec = clamp_limits(spec, config);
    let loaded = registry.pre(&spec.plugin, &spec.version);
    let world = loaded.as_ref().map_or(World::Filter, |p| p.world);
    let slot = loaded
        .map(|pre| Slot::new(pre, limits(&spec, max_output_bytes), spec.config.clone()))
        .map_err(|e| {
            tracing::error!(%topic, plugin = %spec.plugin, error = %e, "cannot load an attached plugin; its stage fails every batch");
            e.to_string()
        });
    Stage::new(spec, world, slot)
}

impl Stage {
    fn new(spec: StageSpec, world: World, slot: Result<Slot, String>) -> Stage {
        Stage {
            spec,
            world,
            slot,
            health: Mutex::default(),
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    fn label(&self) -> String {
        format!("{}@{}", self.spec.plugin, self.spec.version)
    }

    fn apply(&self, batch: &Batch, config: &PluginConfig) -> Result<StageOut, PluginError> {
        self.check_health()?;
        let slot = self.slot.as_ref().map_err(|e| PluginError::Failed {
            plugin: self.label(),
            kind: Failure::Trap,
            message: format!("not loaded: {e}"),
        })?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let result = match self.world {
            World::Filter => self.filter(slot, batch),
            World::Transform => self.transform(slot, batch),
        };
        self.record(&result, config);
        result
    }

    fn filter(&self, slot: &Slot, batch: &Batch) -> Result<StageOut, PluginError> {
        let count = batch.record_count() as usize;
        let verdicts = slot.call(|i| i.filter(batch.bytes(), count))?;
        if verdicts.iter().all(|&v| v) {
            return Ok(StageOut::Same);
        }
        let kept = batch::rebuild(batch, &[], |i, _| verdicts.get(i) == Some(&true))
            .map_err(|e| self.output_error(format!("cannot re-encode the kept records: {e}")))?;
        match kept {
            None => Ok(StageOut::Dropped),
            Some(bytes) => Batch::parse(bytes)
                .map(StageOut::Replaced)
                .map_err(|e| self.output_error(e.to_string())),
        }
    }

    fn transform(&self, slot: &Slot, batch: &Batch) -> Result<StageOut, PluginError> {
        let out = slot.call(|i| i.transform(batch.bytes()))?;
        if out.is_empty() {
            return Ok(StageOut::Dropped);
        }
        let out = Batch::parse(Bytes::from(out))
            .map_err(|e| self.output_error(format!("returned an invalid batch: {e}")))?;
        if out.header().flags & FLAG_SPARSE != 0 {
            return Err(self.output_error("returned a sparse batch".into()));
        }
        Ok(match out.record_count() {
            0 => StageOut::Dropped,
            _ => StageOut::Replaced(out),
        })
    }

    fn output_error(&self, message: String) -> PluginError {
        PluginError::Failed {
            plugin: self.label(),
            kind: Failure::Output,
            message,
        }
    }

    /// Fails fast while unhealthy; once the cool-down has passed the next batch is a trial call.
    fn check_health(&self) -> Result<(), PluginError> {
        let health = self.health.lock();
        match health.unhealthy_until {
            Some(until) if Instant::now() < until => Err(PluginError::Failed {
                plugin: self.label(),
                kind: Failure::Unhealthy,
                message: format!(
                    "unhealthy after {} consecutive failures, not called for {} ms more (last error: {})",
                    health.consecutive,
                    until.saturating_duration_since(Instant::now()).as_millis(),
                    health.last_error.as_deref().unwrap_or("none")
                ),
            }),
            _ => Ok(()),
        }
    }

    fn record(&self, result: &Result<StageOut, PluginError>, config: &PluginConfig) {
        let mut health = self.health.lock();
        let e = match result {
            Ok(_) => {
                health.consecutive = 0;
                health.unhealthy_until = None;
                return;
            }
            Err(e) => e,
        };
        self.failures.fetch_add(1, Ordering::Relaxed);
        health.last_error = Some(e.to_string());
        if e.failure().is_some_and(Failure::counts_against_health) {
            health.consecutive += 1;
            if health.consecutive >= config.unhealthy_after.max(1) {
                let cooldown = Duration::from_millis(config.cooldown_ms);
                health.unhealthy_until = Instant::now().checked_add(cooldown);
                tracing::error!(plugin = %self.label(), failures = health.consecutive, error = %e, "plugin marked unhealthy");
            }
        }
    }

    /// Applies the error policy to the batch the stage failed on.
    fn on_failure(
        &self,
        topic: &str,
        batch: Batch,
        e: PluginError,
        mut out: Ingested,
    ) -> Result<Ingested, PluginError> {
        out.transformed = true;
        match self.spec.on_error {
            ErrorPolicy::Reject => Err(e),
            ErrorPolicy::Skip => {
                tracing::warn!(%topic, records = batch.record_count(), error = %e, "plugin failed; batch skipped");
                Ok(out)
            }
            ErrorPolicy::DeadLetter => {
                let message = e.to_string();
                let label = self.label();
                let headers = [
                    (ERROR_HEADER, message.as_bytes()),
                    (PLUGIN_HEADER, label.as_bytes()),
                ];
                match batch::rebuild(&batch, &headers, |_, _| true) {
                    Ok(Some(dead)) => out.dead_letters.push(dead),
                    Ok(None) => {}
                    // The error header cannot be added (record at the format's limits): keep the
                    // records as they are rather than lose them.
                    Err(_) => out.dead_letters.push(batch.into_bytes()),
                }
                tracing::warn!(%topic, error = %message, "plugin failed; batch dead-lettered");
                Ok(out)
            }
        }
    }

    fn info(&self, topic: &str) -> AttachmentInfo {
        let health = self.health.lock();
        AttachmentInfo {
            topic: topic.to_owned(),
            plugin: self.spec.plugin.clone(),
            version: self.spec.version.clone(),
            world: self.world.as_str().to_owned(),
            config: self.spec.config.clone(),
            on_error: self.spec.on_error,
            timeout_ms: self.spec.timeout_ms,
            memory_mb: self.spec.memory_mb,
            healthy: health.unhealthy_until.is_none() && self.slot.is_ok(),
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: health
                .last_error
                .clone()
                .or_else(|| self.slot.as_ref().err().cloned()),
        }
    }
}
