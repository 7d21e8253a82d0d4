//! Topic ingest pipelines: ordered stages of filter, transform, router and scheduler plugins that
//! every produced batch passes before it is appended, and the router plugins attached to exchanges.
//! A router stage sends records to other topics (records it routes to the pipeline's own topic go
//! on through the later stages); a scheduler stage marks records with a due time, and the broker
//! holds those after the pipeline. Each stage has an error policy (dead-letter, skip, reject) and a
//! health record: repeated failures of its own (traps, timeouts, bad output, refused re-inits) mark
//! it unhealthy, and it is not called again until a cool-down has passed. Attaching the same plugin name again swaps that stage in place, live.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use quiver_proto::batch::{self, FLAG_DELAYED, FLAG_SPARSE};
use quiver_proto::plugins::{AttachOptions, AttachmentInfo, ErrorPolicy};
use quiver_proto::Batch;
use serde::{Deserialize, Serialize};

use super::instance::{Limits, Routes, World};
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
/// Longest error text put on every dead-lettered record (the full text is in the broker's log
/// and the stage's `last_error`): a batch of small records must not grow many times over.
pub const MAX_ERROR_HEADER: usize = 512;

/// A stage as stored in the metadata store: the options it was attached with, resolved. Its
/// `plugin` is the bare name, `version` the version that name resolved to, and both limits are set
/// (the broker's defaults filled in and clamped at attach, so a later change of the defaults does
/// not move a stored stage).
///
/// Stored as a named map with the options flattened in: the same keys as before the options were
/// a type (only their order differs), so stages stored by older builds still load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSpec {
    #[serde(flatten)]
    pub options: AttachOptions,
    pub version: String,
}

impl StageSpec {
    fn plugin(&self) -> &str {
        &self.options.plugin
    }

    /// The per-call time limit. Set on every spec a stage is built from (see [`clamp_limits`]);
    /// the fallback only keeps this total.
    fn timeout_ms(&self) -> u32 {
        self.options.timeout_ms.unwrap_or(1)
    }

    /// The per-instance memory limit in MiB, set like the time limit.
    fn memory_mb(&self) -> u32 {
        self.options.memory_mb.unwrap_or(1)
    }
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
    /// Records a router stage sent to other topics (each batch bound for one topic).
    pub routed: Vec<(String, Batch)>,
}

/// Where a router sends the records of a batch: (topic, ascending record indexes), one entry per
/// topic, in the order the plugin named them.
pub type RoutePlan = Vec<(String, Vec<usize>)>;

/// What an exchange's router did with a batch.
#[derive(Debug)]
pub enum ExchangeRouting {
    /// Destinations per topic (possibly none: every record dropped).
    Plan(RoutePlan),
    /// The plugin failed and its error policy settled the batch (dead letters to append).
    Failed(Ingested),
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
    /// The log's batch limit: what a dead-letter copy's every record must fit.
    max_batch_bytes: usize,
    /// The loaded plugin, or why it could not be loaded at start (every batch then fails).
    slot: Result<Slot, String>,
    health: Mutex<Health>,
    calls: AtomicU64,
    failures: AtomicU64,
    timeouts: AtomicU64,
    /// Each call's duration, from the plugin's entry to its checked output.
    call_seconds: Histogram,
}

/// A stage's call measurements, for `/metrics`: series per stage, gone when it is detached.
#[derive(Debug, Clone)]
pub struct StageTimings {
    pub info: AttachmentInfo,
    pub timeouts: u64,
    pub call_seconds: Histogram,
}

/// Buckets of the plugin call duration histogram, in seconds: 10 µs to ~5 s.
fn call_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.000_01, 2.5, 15)
}

/// What a stage did with a batch.
pub(crate) enum StageOut {
    Same,
    Replaced(Batch),
    Dropped,
    Routed(RoutePlan),
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
    /// Router plugins attached to exchanges, by exchange name.
    routers: RwLock<HashMap<String, Arc<Stage>>>,
    /// Serialises attach and detach (read-modify-write of a topic's stage list).
    admin: Mutex<()>,
}

impl std::fmt::Debug for Pipelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipelines")
            .field("topics", &self.by_topic.read().len())
            .field("routers", &self.routers.read().len())
            .finish_non_exhaustive()
    }
}

fn pipeline_key(topic: &str) -> String {
    format!("pipeline/{topic}")
}

fn router_key(exchange: &str) -> String {
    format!("exchange-router/{exchange}")
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
        let mut routers = HashMap::new();
        for (key, spec) in meta.scan::<StageSpec>(Namespace::Plugins, "exchange-router/")? {
            let exchange = key.trim_start_matches("exchange-router/").to_owned();
            let source = format!("exchange:{exchange}");
            let stage = load_stage(&registry, &config, spec, &source, max_output_bytes);
            routers.insert(exchange, Arc::new(stage));
        }
        Ok(Pipelines {
            meta,
            registry,
            config,
            max_output_bytes,
            read_filters: Sessions::default(),
            by_topic: RwLock::new(by_topic),
            routers: RwLock::new(routers),
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
        let slot = Slot::new(pre, limits, config, "read-filter");
        ReadFilter::new(slot, &self.read_filters, max)
    }

    pub fn has_pipeline(&self, topic: &str) -> bool {
        self.by_topic.read().contains_key(topic)
    }

    /// Adds a stage, or swaps the stage of the same plugin name in place. The instance is created
    /// and initialised first, so a refused configuration changes nothing.
    pub fn attach(
        &self,
        topic: &str,
        options: AttachOptions,
    ) -> Result<Vec<AttachmentInfo>, PluginError> {
        check_dlq_name(topic, options.on_error)?;
        // Warmed up before the lock: a slow `init` (up to its time limit) must not hold up every
        // other attach, detach and topic delete of the broker.
        let stage = self.new_stage(options, topic)?;
        let _admin = self.admin.lock();
        self.check_still_deployed(&stage)?;
        let name = stage.spec.plugin().to_owned();
        let version = stage.spec.version.clone();
        let mut stages = self.stages(topic);
        match stages.iter().position(|s| s.spec.plugin() == name) {
            Some(i) => stages[i] = stage,
            None => stages.push(stage),
        }
        self.store(topic, stages)?;
        tracing::info!(%topic, plugin = %name, %version, "plugin attached");
        Ok(self.infos(topic))
    }

    /// Under the admin lock: the version a stage was built from (outside the lock) was not
    /// removed meanwhile (`remove_plugin` takes the same lock, so it cannot remove it later while
    /// the stage is not yet published).
    fn check_still_deployed(&self, stage: &Stage) -> Result<(), PluginError> {
        match self
            .registry
            .version(stage.spec.plugin(), &stage.spec.version)?
        {
            Some(_) => Ok(()),
            None => Err(PluginError::Unknown(format!(
                "{} (removed while it was being attached)",
                stage.label()
            ))),
        }
    }

    /// A stage for `options`, its instance created and initialised (so a refused configuration
    /// fails here, before anything changes).
    /// `source` names the attachment in the plugin's log lines.
    fn new_stage(&self, options: AttachOptions, source: &str) -> Result<Arc<Stage>, PluginError> {
        let info = self.registry.resolve(&options.plugin)?;
        let pre = self.registry.pre(&info.name, &info.version)?;
        let world = pre.world;
        let spec = StageSpec {
            options: AttachOptions {
                plugin: info.name.clone(),
                ..options
            },
            version: info.version.clone(),
        };
        let spec = clamp_limits(spec, &self.config);
        let slot = Slot::new(
            pre,
            limits(&spec, self.max_output_bytes),
            spec.options.config.clone(),
            source,
        );
        slot.warm()?;
        Ok(Arc::new(Stage::new(
            spec,
            world,
            Ok(slot),
            self.max_output_bytes,
        )))
    }

    /// Attaches (or swaps) the router plugin of an exchange: from now on it, not the bindings,
    /// decides where the exchange's records go.
    pub fn attach_router(
        &self,
        exchange: &str,
        options: AttachOptions,
    ) -> Result<AttachmentInfo, PluginError> {
        check_dlq_name(exchange, options.on_error)?;
        let stage = self.new_stage(options, &format!("exchange:{exchange}"))?;
        let _admin = self.admin.lock();
        self.check_still_deployed(&stage)?;
        if stage.world != World::Router {
            return Err(PluginError::InvalidRequest(format!(
                "{} is a {} plugin; an exchange takes a router plugin",
                stage.label(),
                stage.world.name()
            )));
        }
        self.meta
            .put_durable(Namespace::Plugins, &router_key(exchange), &stage.spec)?;
        let info = stage.router_info(exchange);
        self.routers.write().insert(exchange.to_owned(), stage);
        tracing::info!(%exchange, plugin = %info.plugin, version = %info.version, "router attached to exchange");
        Ok(info)
    }

    /// Detaches the router of an exchange (its bindings route again); false if it had none.
    pub fn detach_router(&self, exchange: &str) -> Result<bool, PluginError> {
        let _admin = self.admin.lock();
        if !self.routers.read().contains_key(exchange) {
            return Ok(false);
        }
        self.meta
            .remove_durable(Namespace::Plugins, &router_key(exchange))?;
        self.routers.write().remove(exchange);
        tracing::info!(%exchange, "router detached from exchange");
        Ok(true)
    }

    /// The router attached to `exchange`, with its health.
    pub fn router_info(&self, exchange: &str) -> Option<AttachmentInfo> {
        self.routers
            .read()
            .get(exchange)
            .map(|s| s.router_info(exchange))
    }

    /// Runs the exchange's router over `batch`; `None` when it has none (bindings route). Blocking.
    pub fn route_exchange(
        &self,
        exchange: &str,
        batch: &Batch,
        exists: &dyn Fn(&str) -> bool,
    ) -> Option<Result<ExchangeRouting, PluginError>> {
        let stage = self.routers.read().get(exchange).cloned()?;
        Some(match stage.apply(batch, &self.config, exchange, exists) {
            Ok(StageOut::Routed(plan)) => Ok(ExchangeRouting::Plan(plan)),
            Ok(_) => Err(stage.output_error("an exchange router returned no routes".into())),
            Err(e) if e.failure().is_some_and(Failure::is_retriable) => Err(e),
            Err(e) => stage
                .on_failure(exchange, batch.clone(), e, Ingested::default())
                .map(ExchangeRouting::Failed),
        })
    }

    /// Removes the stage of `plugin` (a name; a version suffix is ignored).
    pub fn detach(&self, topic: &str, plugin: &str) -> Result<Vec<AttachmentInfo>, PluginError> {
        let (name, _) = split_ref(plugin);
        let _admin = self.admin.lock();
        let mut stages = self.stages(topic);
        let before = stages.len();
        stages.retain(|s| s.spec.plugin() != name);
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

    /// Every stage of every topic and every exchange router, with its health and memory.
    pub fn all_attachments(&self) -> Vec<AttachmentInfo> {
        let mut out: Vec<AttachmentInfo> = {
            let by_topic = self.by_topic.read();
            by_topic
                .iter()
                .flat_map(|(topic, p)| p.stages.iter().map(move |s| s.info(topic)))
                .collect()
        };
        let routers = self.routers.read();
        out.extend(routers.iter().map(|(exchange, s)| s.router_info(exchange)));
        out
    }

    /// Every stage of every topic and exchange with its call measurements (for `/metrics`).
    pub fn all_timings(&self) -> Vec<StageTimings> {
        let mut out: Vec<StageTimings> = {
            let by_topic = self.by_topic.read();
            by_topic
                .iter()
                .flat_map(|(topic, p)| p.stages.iter().map(move |s| s.timings(s.info(topic))))
                .collect()
        };
        let routers = self.routers.read();
        out.extend(
            routers
                .iter()
                .map(|(exchange, s)| s.timings(s.router_info(exchange))),
        );
        out
    }

    /// Every stage that runs `name` (`version`: only that version).
    pub fn attachments_of(&self, name: &str, version: Option<&str>) -> Vec<AttachmentInfo> {
        let by_topic = self.by_topic.read();
        let mut out: Vec<AttachmentInfo> = by_topic
            .iter()
            .flat_map(|(topic, p)| p.stages.iter().map(move |s| (topic, s)))
            .filter(|(_, s)| s.spec.plugin() == name && version.is_none_or(|v| s.spec.version == v))
            .map(|(topic, s)| s.info(topic))
            .collect();
        let routers = self.routers.read();
        out.extend(
            routers
                .iter()
                .filter(|(_, s)| {
                    s.spec.plugin() == name && version.is_none_or(|v| s.spec.version == v)
                })
                .map(|(exchange, s)| s.router_info(exchange)),
        );
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }

    /// Runs `batch` through the topic's stages (blocking: plugins run here). `Err` only when a
    /// stage with the `reject` policy failed.
    /// `exists` tells whether a topic a router names exists.
    pub fn run(
        &self,
        topic: &str,
        batch: Batch,
        exists: &dyn Fn(&str) -> bool,
    ) -> Result<Ingested, PluginError> {
        let Some(pipeline) = self.by_topic.read().get(topic).cloned() else {
            return Ok(Ingested {
                batch: Some(batch),
                ..Default::default()
            });
        };
        let mut out = Ingested::default();
        let mut current = batch;
        for stage in &pipeline.stages {
            match stage.apply(&current, &self.config, topic, exists) {
                Ok(StageOut::Same) => continue,
                Ok(StageOut::Replaced(b)) => {
                    out.transformed = true;
                    current = b;
                }
                Ok(StageOut::Dropped) => {
                    out.transformed = true;
                    return Ok(out);
                }
                Ok(StageOut::Routed(plan)) => {
                    out.transformed = true;
                    match stage.split_routed(topic, &current, plan, &mut out.routed)? {
                        Some(b) => current = b,
                        None => return Ok(out),
                    }
                }
                // Out of capacity is the broker's condition, not the batch's: the producer retries.
                Err(e) if e.failure().is_some_and(Failure::is_retriable) => return Err(e),
                Err(e) => return stage.on_failure(topic, current, e, out),
            }
        }
        out.batch = Some(current);
        Ok(out)
    }
}

fn check_dlq_name(name: &str, policy: ErrorPolicy) -> Result<(), PluginError> {
    if policy != ErrorPolicy::DeadLetter {
        return Ok(());
    }
    crate::storage::validate_name(&format!("{name}.dlq")).map_err(|e| {
        PluginError::InvalidRequest(format!(
            "the dead-letter topic of {name} would be invalid ({e}): use --on-error skip or reject"
        ))
    })?;
    Ok(())
}

/// Groups a router's answer by topic: (topic, ascending record indexes), topics in first-named
/// order, a record listed once per topic however often the plugin named it.
pub fn plan_of(routes: &Routes) -> RoutePlan {
    let mut plan: RoutePlan = Vec::new();
    let mut slot_of: HashMap<&str, usize> = HashMap::new();
    let mut targets = routes.targets.iter();
    for (record, &n) in routes.counts.iter().enumerate() {
        for &t in targets.by_ref().take(n as usize) {
            let Some(topic) = routes.topics.get(t as usize) else {
                continue;
            };
            let i = *slot_of.entry(topic.as_str()).or_insert_with(|| {
                plan.push((topic.clone(), Vec::new()));
                plan.len() - 1
            });
            let indexes = &mut plan[i].1;
            if indexes.last() != Some(&record) {
                indexes.push(record);
            }
        }
    }
    plan
}

// What the broker makes of a plugin's answer, once the instance has checked its shape (one verdict
// or delay per record, routes naming returned topics, output within its size limit). Free
// functions rather than `Stage` methods so that they can be fuzzed without a wasm instance
// (crate::fuzzing); an `Err` is the stage's output failure, with this text.

/// What a filter's verdicts (one per record) leave of `batch`.
pub(crate) fn filtered(batch: &Batch, verdicts: &[bool]) -> Result<StageOut, String> {
    if verdicts.iter().all(|&v| v) {
        return Ok(StageOut::Same);
    }
    let kept = batch::rebuild(batch, &[], |i, _| verdicts.get(i) == Some(&true))
        .map_err(|e| format!("cannot re-encode the kept records: {e}"))?;
    match kept {
        None => Ok(StageOut::Dropped),
        Some(bytes) => Batch::parse(bytes)
            .map(StageOut::Replaced)
            .map_err(|e| e.to_string()),
    }
}

/// A transform's output (an encoded batch, empty: drop them all), checked like produced records.
pub(crate) fn transformed(out: Vec<u8>, now: i64) -> Result<StageOut, String> {
    if out.is_empty() {
        return Ok(StageOut::Dropped);
    }
    let out =
        Batch::parse(Bytes::from(out)).map_err(|e| format!("returned an invalid batch: {e}"))?;
    if out.header().flags & FLAG_SPARSE != 0 {
        return Err("returned a sparse batch".into());
    }
    check_output(&out, now)?;
    Ok(match out.record_count() {
        0 => StageOut::Dropped,
        _ => StageOut::Replaced(out),
    })
}

/// `batch` with the records a scheduler delays (`delays`: ms, one per record) marked with their
/// due time.
pub(crate) fn scheduled(batch: &Batch, delays: &[u64], now: i64) -> Result<StageOut, String> {
    let marked = crate::delay::records::schedule(batch, delays, now)
        .map_err(|e| format!("cannot mark delayed records: {e}"))?;
    let Some(bytes) = marked else {
        return Ok(StageOut::Same);
    };
    let out = Batch::parse_trusted(bytes).map_err(|e| e.to_string())?;
    check_output(&out, now)?;
    Ok(StageOut::Replaced(out))
}

/// Records a stage wrote must pass what a producer's would: no header only the broker may write,
/// and due times the delay store takes. Anything wrong is this stage's failure (its error policy
/// applies, and it counts against its health), never the producer's.
pub(crate) fn check_output(out: &Batch, now: i64) -> Result<(), String> {
    crate::headers::check(out).map_err(|e| format!("wrote {e}"))?;
    if out.header().flags & FLAG_DELAYED != 0 {
        crate::delay::records::due_times(out, now)
            .map_err(|e| format!("wrote an invalid delay: {e}"))?;
    }
    Ok(())
}

/// The records `indexes` (ascending) of `batch` as a batch of their own (`None`: no records).
pub fn select(batch: &Batch, indexes: &[usize]) -> Result<Option<Batch>, quiver_proto::BatchError> {
    if indexes.len() == batch.record_count() as usize {
        return Ok(Some(batch.clone()));
    }
    // Copied from a validated batch: its CRC needs no second check.
    batch::select_dense(batch, indexes)
        .map(Batch::parse_trusted)
        .transpose()
}

/// Fills in the broker's default limits where an attach left them out, and keeps the limits
/// within the broker's bounds (also for stored stages, when the bounds were lowered since). Every
/// spec a stage is built from passes here, so a stage's limits are always set.
fn clamp_limits(mut spec: StageSpec, config: &PluginConfig) -> StageSpec {
    let o = &mut spec.options;
    let timeout_ms = o.timeout_ms.unwrap_or(config.timeout_ms);
    o.timeout_ms = Some(timeout_ms.clamp(1, config.max_timeout_ms.max(1)));
    let memory_mb = o.memory_mb.unwrap_or(config.memory_mb);
    o.memory_mb = Some(memory_mb.clamp(1, config.max_memory_mb.max(1)));
    spec
}

fn limits(spec: &StageSpec, max_output_bytes: usize) -> Limits {
    Limits {
        timeout: Duration::from_millis(spec.timeout_ms() as u64),
        memory_bytes: (spec.memory_mb() as usize) << 20,
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
    let loaded = registry.pre(spec.plugin(), &spec.version);
    let world = loaded.as_ref().map_or(World::Filter, |p| p.world);
    let slot = loaded
        .map(|pre| {
            let config = spec.options.config.clone();
            Slot::new(pre, limits(&spec, max_output_bytes), config, topic)
        })
        .map_err(|e| {
            tracing::error!(%topic, plugin = %spec.plugin(), error = %e, "cannot load an attached plugin; its stage fails every batch");
            e.to_string()
        });
    Stage::new(spec, world, slot, max_output_bytes)
}

impl Stage {
    fn new(
        spec: StageSpec,
        world: World,
        slot: Result<Slot, String>,
        max_batch_bytes: usize,
    ) -> Stage {
        Stage {
            spec,
            world,
            max_batch_bytes,
            slot,
            health: Mutex::default(),
            calls: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            call_seconds: Histogram::new(call_buckets()),
            failures: AtomicU64::new(0),
        }
    }

    fn label(&self) -> String {
        format!("{}@{}", self.spec.plugin(), self.spec.version)
    }

    fn apply(
        &self,
        batch: &Batch,
        config: &PluginConfig,
        topic: &str,
        exists: &dyn Fn(&str) -> bool,
    ) -> Result<StageOut, PluginError> {
        self.check_health()?;
        let slot = self.slot.as_ref().map_err(|e| PluginError::Failed {
            plugin: self.label(),
            kind: Failure::Trap,
            message: format!("not loaded: {e}"),
        })?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = match self.world {
            World::Filter => self.filter(slot, batch),
            World::Transform => self.transform(slot, batch),
            World::Router => self.route(slot, batch, topic, exists),
            World::Scheduler => self.schedule(slot, batch),
        };
        self.call_seconds.observe(started.elapsed().as_secs_f64());
        self.record(&result, config);
        result
    }

    fn filter(&self, slot: &Slot, batch: &Batch) -> Result<StageOut, PluginError> {
        let count = batch.record_count() as usize;
        let verdicts = slot.call(|i| i.filter(batch.bytes(), count))?;
        filtered(batch, &verdicts).map_err(|e| self.output_error(e))
    }

    fn transform(&self, slot: &Slot, batch: &Batch) -> Result<StageOut, PluginError> {
        let out = slot.call(|i| i.transform(batch.bytes()))?;
        transformed(out, crate::util::now_ms()).map_err(|e| self.output_error(e))
    }

    /// Destinations per topic (merged when the plugin names a topic twice); a destination that
    /// does not exist fails the batch (its error policy applies), before anything is appended.
    fn route(
        &self,
        slot: &Slot,
        batch: &Batch,
        own: &str,
        exists: &dyn Fn(&str) -> bool,
    ) -> Result<StageOut, PluginError> {
        let count = batch.record_count() as usize;
        let routes = slot.call(|i| i.route(batch.bytes(), count))?;
        let plan = plan_of(&routes);
        if let Some((missing, _)) = plan.iter().find(|(t, _)| t != own && !exists(t)) {
            return Err(self.output_error(format!("routed records to unknown topic {missing}")));
        }
        Ok(StageOut::Routed(plan))
    }

    /// Splits a routed batch: records for `own` go on (returned), the others into `routed`.
    fn split_routed(
        &self,
        own: &str,
        batch: &Batch,
        plan: RoutePlan,
        routed: &mut Vec<(String, Batch)>,
    ) -> Result<Option<Batch>, PluginError> {
        let mut keep = None;
        for (topic, indexes) in plan {
            let part = select(batch, &indexes)
                .map_err(|e| self.output_error(format!("cannot re-encode routed records: {e}")))?;
            match (topic == own, part) {
                (true, p) => keep = p,
                (false, Some(p)) => routed.push((topic, p)),
                (false, None) => {}
            }
        }
        Ok(keep)
    }

    /// Marks the records the plugin delays with their due time (`quiver-deliver-at`).
    fn schedule(&self, slot: &Slot, batch: &Batch) -> Result<StageOut, PluginError> {
        let count = batch.record_count() as usize;
        let delays = slot.call(|i| i.schedule(batch.bytes(), count))?;
        scheduled(batch, &delays, crate::util::now_ms()).map_err(|e| self.output_error(e))
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
        if e.failure() == Some(Failure::Timeout) {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        }
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
        match self.spec.options.on_error {
            ErrorPolicy::Reject => Err(e),
            ErrorPolicy::Skip => {
                tracing::warn!(%topic, records = batch.record_count(), error = %e, "plugin failed; batch skipped");
                Ok(out)
            }
            ErrorPolicy::DeadLetter => {
                let message = e.to_string();
                out.dead_letters.push(self.dead_letter(batch, &message));
                tracing::warn!(%topic, error = %message, "plugin failed; batch dead-lettered");
                Ok(out)
            }
        }
    }

    /// The dead-letter copy of `batch`: every record with the error (its first
    /// [`MAX_ERROR_HEADER`] bytes) and the plugin's name as headers. The copy may be larger than
    /// the log's batch limit (burying splits it), but each record must still fit a batch on its
    /// own: if one would not, the records are dead-lettered as they are, without the headers,
    /// rather than lost.
    fn dead_letter(&self, batch: Batch, message: &str) -> Bytes {
        let mut error = message.to_owned();
        crate::util::truncate_utf8(&mut error, MAX_ERROR_HEADER);
        let label = self.label();
        let headers = [
            (ERROR_HEADER, error.as_bytes()),
            (PLUGIN_HEADER, label.as_bytes()),
        ];
        let added = headers
            .iter()
            .map(|(n, v)| 6 + n.len() + v.len())
            .sum::<usize>();
        let largest = batch.records().map(|r| r.raw().len()).max().unwrap_or(0);
        if batch::HEADER_LEN + largest + added > self.max_batch_bytes {
            return batch.into_bytes();
        }
        match batch::rebuild(&batch, &headers, |_, _| true) {
            Ok(Some(dead)) => dead,
            // Not re-encodable with the headers (a record at the format's limits): as it is.
            Ok(None) | Err(_) => batch.into_bytes(),
        }
    }

    fn timings(&self, info: AttachmentInfo) -> StageTimings {
        StageTimings {
            info,
            timeouts: self.timeouts.load(Ordering::Relaxed),
            call_seconds: self.call_seconds.clone(),
        }
    }

    fn router_info(&self, exchange: &str) -> AttachmentInfo {
        AttachmentInfo {
            exchange: true,
            ..self.info(exchange)
        }
    }

    fn info(&self, topic: &str) -> AttachmentInfo {
        let health = self.health.lock();
        AttachmentInfo {
            topic: topic.to_owned(),
            plugin: self.spec.plugin().to_owned(),
            version: self.spec.version.clone(),
            world: self.world.name().to_owned(),
            config: self.spec.options.config.clone(),
            on_error: self.spec.options.on_error,
            timeout_ms: self.spec.timeout_ms(),
            memory_mb: self.spec.memory_mb(),
            healthy: health.unhealthy_until.is_none() && self.slot.is_ok(),
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            last_error: health
                .last_error
                .clone()
                .or_else(|| self.slot.as_ref().err().cloned()),
            exchange: false,
            memory_in_use_bytes: self.slot.as_ref().map_or(0, |s| s.memory_bytes() as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::engine::{EngineLimits, PluginEngine};

    /// A stage exactly as builds before [`AttachOptions`] stored it: resolved limits as plain
    /// numbers, `plugin` first.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct OldStageSpec {
        plugin: String,
        version: String,
        config: Vec<(String, String)>,
        on_error: ErrorPolicy,
        timeout_ms: u32,
        memory_mb: u32,
    }

    fn old(plugin: &str, timeout_ms: u32) -> OldStageSpec {
        OldStageSpec {
            plugin: plugin.into(),
            version: "3".into(),
            config: vec![("fields".into(), "card".into())],
            on_error: ErrorPolicy::Reject,
            timeout_ms,
            memory_mb: 64,
        }
    }

    #[test]
    fn stages_stored_in_the_old_shape_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(&dir.path().join("meta")).unwrap();
        meta.put(
            Namespace::Plugins,
            &pipeline_key("t"),
            &[old("mask", 250), old("tags", 60_000)],
        )
        .unwrap();
        meta.put(Namespace::Plugins, &router_key("e"), &old("route", 250))
            .unwrap();

        // The record decodes as the new type, field for field.
        let stored: Vec<(String, StageSpec)> =
            meta.scan(Namespace::Plugins, "exchange-router/").unwrap();
        let want = StageSpec {
            options: AttachOptions::new("route")
                .config("fields", "card")
                .on_error(ErrorPolicy::Reject)
                .timeout_ms(250)
                .memory_mb(64),
            version: "3".into(),
        };
        assert_eq!(stored, vec![(router_key("e"), want)]);

        // And loads as the stages they were: the plugins are not deployed here, so the stages are
        // unhealthy, but their options and limits (clamped as ever) are the stored ones.
        let engine = PluginEngine::new(&dir.path().join("compiled"), EngineLimits::default());
        let registry = Arc::new(PluginRegistry::new(meta.clone(), Arc::new(engine.unwrap())));
        let config = PluginConfig::default();
        let pipelines = Pipelines::open(meta, registry, config, 1 << 20).unwrap();
        let stages = pipelines.infos("t");
        let summary: Vec<_> = stages
            .iter()
            .map(|s| {
                (
                    s.plugin.as_str(),
                    s.version.as_str(),
                    s.timeout_ms,
                    s.memory_mb,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("mask", "3", 250, 64),
                ("tags", "3", config.max_timeout_ms, 64)
            ]
        );
        assert!(stages.iter().all(|s| !s.healthy && !s.exchange));
        assert_eq!(stages[0].config, [("fields".into(), "card".into())]);
        assert_eq!(stages[0].on_error, ErrorPolicy::Reject);
        let router = pipelines.router_info("e").unwrap();
        assert!(router.exchange && router.plugin == "route" && router.timeout_ms == 250);
    }

    #[test]
    fn stages_are_stored_under_the_old_keys() {
        // A build from before `AttachOptions` (a downgrade) reads what this one stores.
        let spec = StageSpec {
            options: AttachOptions::new("mask").timeout_ms(250).memory_mb(64),
            version: "3".into(),
        };
        let bytes = rmp_serde::to_vec_named(&spec).unwrap();
        let old: OldStageSpec = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            old,
            OldStageSpec {
                plugin: "mask".into(),
                version: "3".into(),
                config: Vec::new(),
                on_error: ErrorPolicy::DeadLetter,
                timeout_ms: 250,
                memory_mb: 64,
            }
        );
    }
}
