//! A configured plugin instance that is created on first use, reused across calls, and replaced
//! after a trap, a timeout or a memory-limit hit (a component that trapped cannot be entered again).

use std::sync::Arc;

use parking_lot::Mutex;

use super::instance::{Limits, PluginInstance, PluginPre};
use super::{Failure, PluginError};

pub struct Slot {
    pre: Arc<PluginPre>,
    limits: Limits,
    config: Vec<(String, String)>,
    instance: Mutex<Option<PluginInstance>>,
}

impl Slot {
    pub fn new(pre: Arc<PluginPre>, limits: Limits, config: Vec<(String, String)>) -> Slot {
        Slot {
            pre,
            limits,
            config,
            instance: Mutex::new(None),
        }
    }

    pub fn pre(&self) -> &PluginPre {
        &self.pre
    }

    /// Instantiates and runs `init` now, so a bad configuration is refused up front.
    pub fn warm(&self) -> Result<(), PluginError> {
        self.call(|_| Ok(()))
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
            None => guard.insert(self.fresh()?),
        };
        let result = f(instance);
        if let Err(e) = &result {
            if e.failure().is_some_and(|f| f.poisons_instance()) {
                *guard = None;
            }
        }
        result
    }

    fn fresh(&self) -> Result<PluginInstance, PluginError> {
        let mut instance = PluginInstance::new(&self.pre, self.limits)?;
        instance.init(&self.config)?;
        Ok(instance)
    }
}
