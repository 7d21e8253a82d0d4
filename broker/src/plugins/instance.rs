//! One live plugin instance: a store with its own limits, the component instantiated from a
//! pre-linked `InstancePre`, and the calls `init`, `filter` and `transform` with a time limit per
//! call, checked output and failures classified for the error policies.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{ComponentNamedList, ComponentType, Func, InstancePre, Lift};
use wasmtime::{Engine, Store, Trap};

use super::engine::EPOCH_TICK;
use super::logs::LogSink;
use super::sandbox::{ConfigEntry, HostState, MemoryBudget};
use crate::util::truncate_utf8;

/// Longest message a plugin may put in an error (it travels in error frames, dead-letter headers
/// on every record of a batch, health reports and logs).
const MAX_MESSAGE: usize = 1024;
use super::{Failure, PluginError};

/// The plugin worlds the broker knows (see wit/quiver-plugin.wit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Filter,
    Transform,
    Router,
    Scheduler,
}

impl World {
    pub const ALL: [World; 4] = [
        World::Filter,
        World::Transform,
        World::Router,
        World::Scheduler,
    ];

    /// The world's name, which is also the name of its batch function... except for the two
    /// whose function is a verb of its own.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Filter => "filter",
            World::Transform => "transform",
            World::Router => "route",
            World::Scheduler => "schedule",
        }
    }

    /// The name operators see (`plugin list`, attachments).
    pub fn name(self) -> &'static str {
        match self {
            World::Router => "router",
            World::Scheduler => "scheduler",
            other => other.as_str(),
        }
    }

    /// The export that takes a batch.
    fn export(self) -> &'static str {
        self.as_str()
    }

    pub fn parse(s: &str) -> Option<World> {
        World::ALL
            .into_iter()
            .find(|w| w.name() == s || w.as_str() == s)
    }
}

/// Per-instance limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time per call (init or one batch), enforced by epoch interruption.
    pub timeout: Duration,
    /// Linear memory of the instance.
    pub memory_bytes: usize,
    /// Largest transform output accepted.
    pub max_output_bytes: usize,
}

/// A deployed version, compiled and linked: instantiating it is cheap (pooling allocator).
pub struct PluginPre {
    pub label: Arc<str>,
    pub world: World,
    pub(super) engine: Engine,
    pub(super) pre: InstancePre<HostState>,
    /// Where its instances log (no source: [`PluginInstance::with_logs`] adds one).
    pub(super) logs: LogSink,
    /// The broker-wide memory budget every instance reserves from.
    pub(super) budget: Arc<MemoryBudget>,
}

pub struct PluginInstance {
    store: Store<HostState>,
    label: Arc<str>,
    world: World,
    init: Func,
    run: Func,
    limits: Limits,
}

type InitResult = (Result<(), String>,);
// Results are lifted into host memory inside `call`: wasmtime runs the guest's post-return (which
// frees them) before `call` returns, so a borrowed `WasmList` would read freed guest memory.
type FilterResult = (Result<Vec<bool>, String>,);
type TransformResult = (Result<Vec<u8>, String>,);
type RouteResult = (Result<Routes, String>,);
type ScheduleResult = (Result<Vec<u64>, String>,);

/// `types.routes` of the WIT: destinations per record, flattened.
#[derive(ComponentType, Lift, Debug, Clone, Default, PartialEq, Eq)]
#[component(record)]
pub struct Routes {
    pub topics: Vec<String>,
    pub counts: Vec<u32>,
    pub targets: Vec<u32>,
}

impl PluginInstance {
    /// Instantiates in a fresh sandbox. Fails when the component does not export the functions of
    /// its world with the right types.
    pub fn new(pre: &PluginPre, limits: Limits) -> Result<PluginInstance, PluginError> {
        PluginInstance::with_logs(pre, limits, pre.logs.clone())
    }

    /// [`PluginInstance::new`], logging to `logs` (tagged with where the instance runs).
    pub fn with_logs(
        pre: &PluginPre,
        limits: Limits,
        logs: LogSink,
    ) -> Result<PluginInstance, PluginError> {
        let state = HostState::new(
            pre.label.clone(),
            limits.memory_bytes,
            pre.budget.clone(),
            logs,
        );
        let mut store = Store::new(&pre.engine, state);
        store.limiter(|s| s.limiter());
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(limits.timeout));
        let instance = pre.pre.instantiate(&mut store).map_err(|e| {
            if let Some(over) = over_budget(store.data()) {
                return failure(&pre.label, Failure::OverBudget, over);
            }
            let kind = match e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
                Some(_) => Failure::Busy,
                None => Failure::Trap,
            };
            failure(&pre.label, kind, format!("instantiation failed: {e:#}"))
        })?;
        let func = |store: &mut Store<HostState>, name: &str| {
            instance.get_func(&mut *store, name).ok_or_else(|| {
                PluginError::Invalid(format!(
                    "{}: the component does not export `{name}` (world {})",
                    pre.label,
                    pre.world.name()
                ))
            })
        };
        let init = func(&mut store, "init")?;
        let run = func(&mut store, pre.world.export())?;
        let mut me = PluginInstance {
            store,
            label: pre.label.clone(),
            world: pre.world,
            init,
            run,
            limits,
        };
        me.check_types()?;
        Ok(me)
    }

    /// Checks the export signatures once, so later calls cannot fail on types.
    fn check_types(&mut self) -> Result<(), PluginError> {
        let wrong = |e: wasmtime::Error| {
            PluginError::Invalid(format!(
                "{}: exports do not match the `{}` world of quiver:plugin@0.1.0 (built against another version of the WIT? regenerate the bindings from this broker's wit/quiver-plugin.wit): {e:#}",
                self.label,
                self.world.name()
            ))
        };
        self.init
            .typed::<(Vec<ConfigEntry>,), InitResult>(&self.store)
            .map_err(wrong)?;
        match self.world {
            World::Filter => self
                .run
                .typed::<(&[u8],), FilterResult>(&self.store)
                .map(drop),
            World::Transform => self
                .run
                .typed::<(&[u8],), TransformResult>(&self.store)
                .map(drop),
            World::Router => self
                .run
                .typed::<(&[u8],), RouteResult>(&self.store)
                .map(drop),
            World::Scheduler => self
                .run
                .typed::<(&[u8],), ScheduleResult>(&self.store)
                .map(drop),
        }
        .map_err(wrong)
    }

    pub fn world(&self) -> World {
        self.world
    }

    /// Bytes of linear memory this instance holds.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory_bytes()
    }

    /// Runs `init`; the plugin's error message is returned to the operator as is.
    pub fn init(&mut self, config: &[(String, String)]) -> Result<(), PluginError> {
        let entries = config
            .iter()
            .map(|(key, value)| ConfigEntry {
                key: key.clone(),
                value: value.clone(),
            })
            .collect::<Vec<_>>();
        let f = self
            .init
            .typed::<(Vec<ConfigEntry>,), InitResult>(&self.store)
            .map_err(|e| self.classify(e))?;
        self.begin();
        match f.call(&mut self.store, (entries,)) {
            Ok((Ok(()),)) => Ok(()),
            Ok((Err(mut message),)) => {
                truncate_utf8(&mut message, MAX_MESSAGE);
                Err(PluginError::Init {
                    plugin: self.label.to_string(),
                    message,
                })
            }
            Err(e) => Err(self.classify(e)),
        }
    }

    /// One verdict per record of `batch` (`records` of them).
    pub fn filter(&mut self, batch: &[u8], records: usize) -> Result<Vec<bool>, PluginError> {
        let verdicts: Vec<bool> = self.call_batch(batch)?;
        if verdicts.len() != records {
            let msg = format!(
                "returned {} verdicts for a batch of {records} records",
                verdicts.len()
            );
            return Err(failure(&self.label, Failure::Output, msg));
        }
        Ok(verdicts)
    }

    /// The encoded replacement batch (possibly empty).
    pub fn transform(&mut self, batch: &[u8]) -> Result<Vec<u8>, PluginError> {
        // The copy is bounded by the instance's memory limit; the output limit is checked on it.
        let out: Vec<u8> = self.call_batch(batch)?;
        if out.len() > self.limits.max_output_bytes {
            let msg = format!(
                "output of {} bytes exceeds the limit of {} bytes",
                out.len(),
                self.limits.max_output_bytes
            );
            return Err(failure(&self.label, Failure::Output, msg));
        }
        Ok(out)
    }

    /// Where each record of `batch` (`records` of them) goes, checked for shape: one count per
    /// record, every target naming one of the topics, at most `MAX_ROUTES` destinations per record.
    pub fn route(&mut self, batch: &[u8], records: usize) -> Result<Routes, PluginError> {
        let routes: Routes = self.call_batch(batch)?;
        if let Err(msg) = check_routes(&routes, records) {
            return Err(failure(&self.label, Failure::Output, msg));
        }
        Ok(routes)
    }

    /// One delay (ms) per record of `batch` (`records` of them).
    pub fn schedule(&mut self, batch: &[u8], records: usize) -> Result<Vec<u64>, PluginError> {
        let delays: Vec<u64> = self.call_batch(batch)?;
        if delays.len() != records {
            let msg = format!(
                "returned {} delays for a batch of {records} records",
                delays.len()
            );
            return Err(failure(&self.label, Failure::Output, msg));
        }
        Ok(delays)
    }

    /// Calls the world's batch function, whose result is `result<T, string>`, with the call's
    /// limits reset and any failure classified.
    fn call_batch<T>(&mut self, batch: &[u8]) -> Result<T, PluginError>
    where
        (Result<T, String>,): ComponentNamedList + Lift + 'static,
    {
        let f = self
            .run
            .typed::<(&[u8],), (Result<T, String>,)>(&self.store)
            .map_err(|e| self.classify(e))?;
        self.begin();
        match f.call(&mut self.store, (batch,)) {
            Ok((Ok(out),)) => Ok(out),
            Ok((Err(message),)) => Err(self.returned(message)),
            Err(e) => Err(self.classify(e)),
        }
    }

    fn begin(&mut self) {
        self.store.data_mut().begin_call();
        self.store
            .set_epoch_deadline(deadline_ticks(self.limits.timeout));
    }

    fn returned(&mut self, mut message: String) -> PluginError {
        truncate_utf8(&mut message, MAX_MESSAGE);
        message.shrink_to_fit();
        failure(&self.label, Failure::Returned, message)
    }

    /// Turns a wasmtime error into the failure an operator can act on, with the guest's last
    /// stderr output (a Rust panic message lands there).
    fn classify(&mut self, e: wasmtime::Error) -> PluginError {
        let stderr = self.store.data().stderr.take();
        let (kind, message) = if let Some(over) = over_budget(self.store.data()) {
            (Failure::OverBudget, over)
        } else if let Some((want, limit)) = self.store.data().memory_exceeded() {
            let msg = format!(
                "memory limit exceeded: asked for {} MiB, the limit is {} MiB",
                want >> 20,
                limit >> 20
            );
            (Failure::Memory, msg)
        } else if matches!(e.downcast_ref::<Trap>(), Some(Trap::Interrupt)) {
            let msg = format!(
                "time limit exceeded: interrupted after {} ms",
                self.limits.timeout.as_millis()
            );
            (Failure::Timeout, msg)
        } else {
            (Failure::Trap, "trapped".to_owned())
        };
        // The guest's own words (a panic message) before wasmtime's error chain, whose wasm
        // backtrace can run to kilobytes: a shortened message (a dead-letter header) keeps them.
        let mut message = match stderr.is_empty() {
            true => message,
            false => format!("{message} (stderr: {stderr})"),
        };
        if kind == Failure::Trap {
            // A trap is a bug in the plugin: say so, and where to reproduce it, before the
            // (long) wasm backtrace.
            message.push_str(&format!(
                " (a panic or invalid instruction in the plugin; reproduce it with `quiver plugin test`): {e:#}"
            ));
        }
        failure(&self.label, kind, message)
    }
}

/// Most destinations one record may have.
pub const MAX_ROUTES: u32 = 64;

pub(crate) fn check_routes(r: &Routes, records: usize) -> Result<(), String> {
    if r.counts.len() != records {
        return Err(format!(
            "returned {} route counts for a batch of {records} records",
            r.counts.len()
        ));
    }
    if let Some(c) = r.counts.iter().find(|&&c| c > MAX_ROUTES) {
        return Err(format!(
            "routed a record to {c} topics (at most {MAX_ROUTES})"
        ));
    }
    let total: u64 = r.counts.iter().map(|&c| c as u64).sum();
    if total != r.targets.len() as u64 {
        return Err(format!(
            "counts add up to {total} destinations but {} targets were returned",
            r.targets.len()
        ));
    }
    if let Some(t) = r.targets.iter().find(|&&t| t as usize >= r.topics.len()) {
        return Err(format!(
            "target {t} names no topic ({} topics returned)",
            r.topics.len()
        ));
    }
    if let Some(bad) = r
        .topics
        .iter()
        .find(|t| crate::storage::validate_name(t).is_err())
    {
        let mut shown = bad.clone();
        truncate_utf8(&mut shown, 64);
        return Err(format!("routed to an invalid topic name {shown:?}"));
    }
    Ok(())
}

/// The message of a grow the broker-wide budget refused during the last call, if one was.
fn over_budget(state: &HostState) -> Option<String> {
    state.over_budget().map(|(limit, used)| {
        format!(
            "busy: the broker's plugin memory budget is in use ({} of {} MiB, plugins.max_total_memory_mb); retry later",
            used >> 20,
            limit >> 20
        )
    })
}

fn failure(label: &str, kind: Failure, message: String) -> PluginError {
    PluginError::Failed {
        plugin: label.to_owned(),
        kind,
        message,
    }
}

/// Epoch ticks for a time limit, rounded up, plus one because the current tick is partly spent.
fn deadline_ticks(timeout: Duration) -> u64 {
    let tick = EPOCH_TICK.as_nanos();
    (timeout.as_nanos().div_ceil(tick) as u64).max(1) + 1
}
