//! A configured plugin instance that is created on first use, reused across calls, and replaced
//! after a trap, a timeout or a memory-limit hit (a component that trapped cannot be entered again).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::instance::{Limits, PluginInstance, PluginPre};
use super::logs::LogSink;
use super::{Failure, PluginError};

pub struct Slot {
    pre: Arc<PluginPre>,
    limits: Limits,
    config: Vec<(String, String)>,
    /// The plugin's log, tagged with where this slot runs.
    logs: LogSink,
    instance: Mutex<Option<PluginInstance>>,
    /// The live instance's memory after its last call, readable while a call runs.
    last_memory: AtomicUsize,
}

impl Slot {
    /// `source` says where the instance runs, in its log lines: a topic, `exchange:NAME` or
    /// `read-filter`.
    pub fn new(
        pre: Arc<PluginPre>,
        limits: Limits,
        config: Vec<(String, String)>,
        source: &str,
    ) -> Slot {
        Slot {
            logs: pre.logs.for_source(source),
            pre,
            limits,
            config,
            instance: Mutex::new(None),
            last_memory: AtomicUsize::new(0),
        }
    }

    pub fn pre(&self) -> &PluginPre {
        &self.pre
    }

    /// Instantiates and runs `init` now, so a bad configuration is refused up front (as the
    /// operator's error, [`PluginError::Init`]).
    pub fn warm(&self) -> Result<(), PluginError> {
        let mut guard = self.instance.lock();
        if guard.is_none() {
            let instance = self.fresh()?;
            self.last_memory
                .store(instance.memory_bytes(), Ordering::Relaxed);
            *guard = Some(instance);
        }
        Ok(())
    }

    /// Bytes of linear memory the slot's live instance held after its last call (0 when it has
    /// none). Read without waiting for a call in progress.
    pub fn memory_bytes(&self) -> usize {
        self.last_memory.load(Ordering::Relaxed)
    }

    /// Runs `f` on the instance (creating it if needed); calls are serialised per slot. A caller
    /// waits at most one call's time limit for the instance, then gets a retriable `Busy`, so a
    /// slow plugin cannot pile up waiting threads for long.
    pub fn call<R>(
        &self,
        f: impl FnOnce(&mut PluginInstance) -> Result<R, PluginError>,
    ) -> Result<R, PluginError> {
        let Some(mut guard) = self.instance.try_lock_for(self.limits.timeout) else {
            return Err(PluginError::Failed {
                plugin: self.pre.label.to_string(),
                kind: Failure::Busy,
                message: "busy: the instance is still working on earlier batches".into(),
            });
        };
        let instance = match guard.as_mut() {
            Some(i) => i,
            None => guard.insert(self.fresh().map_err(|e| self.reinit_failed(e))?),
        };
        let result = f(instance);
        self.last_memory
            .store(instance.memory_bytes(), Ordering::Relaxed);
        if let Err(e) = &result {
            if e.failure().is_some_and(|f| f.poisons_instance()) {
                *guard = None;
                self.last_memory.store(0, Ordering::Relaxed);
            }
        }
        result
    }

    /// A replacement instance whose `init` refuses is the plugin's failure on this batch (counted
    /// against the stage's health), not an operator's configuration error as at attach.
    fn reinit_failed(&self, e: PluginError) -> PluginError {
        match e {
            PluginError::Init { plugin, message } => PluginError::Failed {
                plugin,
                kind: Failure::Reinit,
                message: format!("a replacement instance refused its init: {message}"),
            },
            other => other,
        }
    }

    fn fresh(&self) -> Result<PluginInstance, PluginError> {
        let mut instance = PluginInstance::with_logs(&self.pre, self.limits, self.logs.clone())?;
        instance.init(&self.config)?;
        Ok(instance)
    }
}
