//! One live plugin instance: a store with its own limits, the component instantiated from a
//! pre-linked `InstancePre`, and the calls `init`, `filter` and `transform` with a time limit per
//! call, checked output and failures classified for the error policies.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use wasmtime::component::{ComponentNamedList, Func, InstancePre, Lift};
use wasmtime::{Engine, Store, Trap};

use super::engine::EPOCH_TICK;
use super::sandbox::{truncate_utf8, ConfigEntry, HostState, RecentLogs};

/// Longest message a plugin may put in an error (it travels in error frames, dead-letter headers
/// on every record of a batch, health reports and logs).
const MAX_MESSAGE: usize = 1024;
use super::{Failure, PluginError};

/// The plugin worlds the broker knows (see wit/quiver-plugin.wit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Filter,
    Transform,
}

impl World {
    pub fn as_str(self) -> &'static str {
        match self {
            World::Filter => "filter",
            World::Transform => "transform",
        }
    }

    /// The export that takes a batch.
    fn export(self) -> &'static str {
        self.as_str()
    }

    pub fn parse(s: &str) -> Option<World> {
        match s {
            "filter" => Some(World::Filter),
            "transform" => Some(World::Transform),
            _ => None,
        }
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
    pub(super) logs: Arc<Mutex<RecentLogs>>,
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

impl PluginInstance {
    /// Instantiates in a fresh sandbox. Fails when the component does not export the functions of
    /// its world with the right types.
    pub fn new(pre: &PluginPre, limits: Limits) -> Result<PluginInstance, PluginError> {
        let state = HostState::new(pre.label.clone(), limits.memory_bytes, pre.logs.clone());
        let mut store = Store::new(&pre.engine, state);
        store.limiter(|s| s.limiter());
        store.epoch_deadline_trap();
        store.set_epoch_deadline(deadline_ticks(limits.timeout));
        let instance = pre.pre.instantiate(&mut store).map_err(|e| {
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
                    pre.world.as_str()
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
                "{}: exports do not match the `{}` world: {e:#}",
                self.label,
                self.world.as_str()
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
        }
        .map_err(wrong)
    }

    pub fn world(&self) -> World {
        self.world
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
        let (kind, mut message) = if let Some((want, limit)) = self.store.data().memory_exceeded() {
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
            (Failure::Trap, format!("trapped: {e:#}"))
        };
        if !stderr.is_empty() {
            message.push_str(" (stderr: ");
            message.push_str(&stderr);
            message.push(')');
        }
        failure(&self.label, kind, message)
    }
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
