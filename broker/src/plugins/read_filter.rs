//! A consumer's read filter: a filter plugin named on a fetch, instantiated for that fetch session
//! and reused for its later fetches. The broker sends only the records it keeps; the consumer's
//! position still moves past the others.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use quiver_proto::{batch, Batch};

use super::instance::World;
use super::slot::Slot;
use super::{Failure, PluginError};

pub struct ReadFilter {
    slot: Slot,
    _session: Session,
}

/// Counts live read-filter sessions against their share of the instance pool, so consumers
/// cannot take the instances ingest pipelines need.
#[derive(Debug, Default)]
pub(super) struct Sessions {
    live: Arc<AtomicU32>,
}

struct Session(Arc<AtomicU32>);

impl Drop for Session {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Sessions {
    fn open(&self, max: u32, plugin: &str) -> Result<Session, PluginError> {
        let taken = self
            .live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(Session(self.live.clone())),
            Err(_) => Err(PluginError::Failed {
                plugin: plugin.to_owned(),
                kind: Failure::Busy,
                message: format!(
                    "busy: {max} read-filter sessions are open (half of plugins.max_instances)"
                ),
            }),
        }
    }
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
    pub(super) fn new(
        slot: Slot,
        sessions: &Sessions,
        max: u32,
    ) -> Result<ReadFilter, PluginError> {
        if slot.pre().world != World::Filter {
            return Err(PluginError::InvalidRequest(format!(
                "plugin {} is a {} plugin; a read filter must be a filter plugin",
                slot.pre().label,
                slot.pre().world.name()
            )));
        }
        let session = sessions.open(max, &slot.pre().label)?;
        slot.warm()?;
        Ok(ReadFilter {
            slot,
            _session: session,
        })
    }

    /// The records of `batch` at or after `from` that the plugin keeps, as a (sparse) batch.
    pub fn apply(&self, batch: &Batch, from: u64) -> Result<Option<Bytes>, PluginError> {
        let count = batch.record_count() as usize;
        let verdicts = self.slot.call(|i| i.filter(batch.bytes(), count))?;
        Ok(batch::select_indexed(batch, |i, offset| {
            verdicts.get(i) == Some(&true) && offset >= from
        }))
    }
}
