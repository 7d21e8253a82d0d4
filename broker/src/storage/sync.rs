//! Group commit: appenders that need `acks=all` wait for an fsync that covers their offset. One of
//! them runs the fsync while the others wait; a sync covers everything appended before it started,
//! so N concurrent appenders share one fsync instead of paying N.

use parking_lot::{Condvar, Mutex, MutexGuard};

use super::error::StorageError;

#[derive(Default)]
pub struct GroupCommit {
    state: Mutex<SyncState>,
    done: Condvar,
}

#[derive(Default)]
struct SyncState {
    /// Every offset below this is on stable storage.
    synced: u64,
    in_progress: bool,
    syncs: u64,
    /// Grows when the log is cut: a sync that started before covers offsets since rewritten.
    generation: u64,
}

impl GroupCommit {
    /// Records that everything below `end` is already durable (after recovery).
    pub fn mark_synced(&self, end: u64) {
        let mut st = self.state.lock();
        st.synced = st.synced.max(end);
    }

    /// The log was cut back to `end`: offsets at or past it must be synced again when rewritten.
    pub fn truncated(&self, end: u64) {
        let mut st = self.state.lock();
        st.synced = st.synced.min(end);
        st.generation += 1;
    }

    /// How many fsyncs have run (tests assert that concurrent appenders share them).
    pub fn sync_count(&self) -> u64 {
        self.state.lock().syncs
    }

    /// Returns once every offset below `offset` is durable. `sync` performs one fsync and returns the
    /// log end it covers; it runs on the calling thread, outside the state lock.
    pub fn sync_through(
        &self,
        offset: u64,
        mut sync: impl FnMut() -> Result<u64, StorageError>,
    ) -> Result<(), StorageError> {
        let mut st = self.state.lock();
        loop {
            if st.synced >= offset {
                return Ok(());
            }
            if st.in_progress {
                self.done.wait(&mut st);
                continue;
            }
            st.in_progress = true;
            let generation = st.generation;
            let result = MutexGuard::unlocked(&mut st, &mut sync);
            st.in_progress = false;
            st.syncs += 1;
            self.done.notify_all();
            let end = result?;
            if st.generation == generation {
                st.synced = st.synced.max(end);
            }
        }
    }
}
