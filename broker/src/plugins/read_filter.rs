//! A consumer's read filter: a filter plugin named on a fetch, instantiated for that fetch session
//! and reused for its later fetches. The broker sends only the records it keeps; the consumer's
//! position still moves past the others.

use bytes::Bytes;
use quiver_proto::{batch, Batch};

use super::instance::World;
use super::slot::Slot;
use super::PluginError;

pub struct ReadFilter {
    slot: Slot,
}

impl std::fmt::Debug for ReadFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadFilter")
            .field("plugin", &self.slot.pre().label)
            .finish()
    }
}

impl ReadFilter {
    /// Wraps a slot of a filter plugin, initialising it now so a bad configuration fails the fetch
    /// that asked for it.
    pub(super) fn new(slot: Slot) -> Result<ReadFilter, PluginError> {
        if slot.pre().world != World::Filter {
            return Err(PluginError::InvalidRequest(format!(
                "plugin {} is a {} plugin; a read filter must be a filter plugin",
                slot.pre().label,
                slot.pre().world.as_str()
            )));
        }
        slot.warm()?;
        Ok(ReadFilter { slot })
    }

    /// The records of `batch` at or after `from` that the plugin keeps, as a (sparse) batch.
    pub fn apply(&self, batch: &Batch, from: u64) -> Result<Option<Bytes>, PluginError> {
        let count = batch.record_count() as usize;
        let verdicts = self.slot.call(|i| i.filter(batch.bytes(), count))?;
        Ok(batch::select_indexed(batch, |i, offset| {
            verdicts[i] && offset >= from
        }))
    }
}
