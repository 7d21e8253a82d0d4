//! The Raft log and vote of the metadata group, in a sled database under `<data-dir>/raft/`:
//! entries keyed by big-endian index (so sled's order is the log's order), and the vote, the
//! committed id and the last purged id beside them. Every write is flushed before openraft is
//! told it is done: a vote or an entry a node acknowledged must survive its crash.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{io_error, Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last-purged";

/// The log store: cheap to clone (sled trees are shared handles).
#[derive(Debug, Clone)]
pub struct LogStore {
    db: sled::Db,
    log: sled::Tree,
    state: sled::Tree,
}

impl LogStore {
    pub fn open(db: &sled::Db) -> Result<LogStore, sled::Error> {
        Ok(LogStore {
            db: db.clone(),
            log: db.open_tree("raft-log")?,
            state: db.open_tree("raft-log-state")?,
        })
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.db.flush_async().await.map_err(io_error)?;
        Ok(())
    }

    fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StorageError> {
        self.state
            .get(key)
            .map_err(io_error)?
            .map(|v| decode(&v))
            .transpose()
    }

    async fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StorageError> {
        self.state.insert(key, encode(value)?).map_err(io_error)?;
        self.flush().await
    }

    fn last_entry(&self) -> Result<Option<Entry>, StorageError> {
        match self.log.last().map_err(io_error)? {
            Some((_, v)) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Removes the entries with index in `from..to`.
    fn remove_range(&self, from: u64, to: Bound<u64>) -> Result<(), StorageError> {
        let keys: Result<Vec<sled::IVec>, sled::Error> = match to {
            Bound::Excluded(to) => self.log.range(key(from)..key(to)).keys().collect(),
            _ => self.log.range(key(from)..).keys().collect(),
        };
        let keys = keys.map_err(io_error)?;
        let mut batch = sled::Batch::default();
        for k in keys {
            batch.remove(k);
        }
        self.log.apply_batch(batch).map_err(io_error)
    }
}

pub(super) fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    rmp_serde::to_vec_named(value).map_err(io_error)
}

pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StorageError> {
    rmp_serde::from_slice(bytes).map_err(io_error)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in self.log.range(key(start)..) {
            let (k, v) = item.map_err(io_error)?;
            let index = u64::from_be_bytes(k.as_ref().try_into().map_err(io_error)?);
            if !range.contains(&index) {
                break;
            }
            out.push(decode(&v)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.get(PURGED)?;
        let last = self.last_entry()?.map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put(VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: a lost committed id only makes a restart re-learn it from the leader.
        let value = encode(&committed)?;
        self.state.insert(COMMITTED, value).map_err(io_error)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&key(entry.log_id.index), encode(&entry)?);
        }
        self.log.apply_batch(batch).map_err(io_error)?;
        let flushed = self.db.flush_async().await;
        callback.log_io_completed(flushed.map(drop).map_err(std::io::Error::other));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.remove_range(log_id.index, Bound::Unbounded)?;
        self.flush().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put(PURGED, &log_id).await?;
        self.remove_range(0, Bound::Excluded(log_id.index.saturating_add(1)))
    }
}
