//! The metadata state machine. Applying a committed command runs it through the broker's own
//! services (the [`Applier`]), so a cluster node keeps its topics, plugins, users and ACLs exactly
//! where a single broker keeps them; this module only records how far it has applied.
//!
//! Every applied command is also kept in a journal (index → command). A snapshot is that journal:
//! the state is the result of applying it in order, and committed commands never change, so a
//! node behind a snapshot applies only the commands past its own applied index. Replaying a
//! journal is slower than loading a state dump, but metadata changes are few and it needs no
//! second serialisation of every store (see docs/replication.md).

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::log_store::{decode, encode, key};
use super::types::{
    io_error, Entry, LogId, MetaCommand, MetaResult, Snapshot, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig,
};

/// Applies committed commands to the broker (blocking: it touches the disk and may compile).
pub trait Applier: Send + Sync + 'static {
    /// The command's answer, which may be a refusal every node gives alike (`TopicExists`).
    /// `Err` when this node cannot apply it now (its disk failed, it is shutting down): the
    /// command is then not recorded as applied and the Raft node stops, rather than go on with
    /// state the other nodes do not have.
    fn apply(&self, index: u64, command: MetaCommand) -> Result<MetaResult, String>;
}

const APPLIED: &str = "applied";
const SNAPSHOT: &str = "snapshot";

/// How far this node has applied, and the membership as of then.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Applied {
    log_id: Option<LogId>,
    membership: StoredMembership,
}

/// A snapshot as stored: its meta and its data (the encoded journal).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

#[derive(Clone)]
pub struct StateMachine {
    db: sled::Db,
    state: sled::Tree,
    journal: sled::Tree,
    applied: Applied,
    applier: Arc<dyn Applier>,
}

impl StateMachine {
    pub fn open(db: &sled::Db, applier: Arc<dyn Applier>) -> Result<StateMachine, StorageError> {
        let state = db.open_tree("raft-sm").map_err(io_error)?;
        let applied = match state.get(APPLIED).map_err(io_error)? {
            Some(v) => decode(&v)?,
            None => Applied::default(),
        };
        Ok(StateMachine {
            db: db.clone(),
            journal: db.open_tree("raft-journal").map_err(io_error)?,
            state,
            applied,
            applier,
        })
    }

    /// Journals and applies one command (on the blocking pool).
    async fn apply_command(
        &self,
        index: u64,
        command: MetaCommand,
    ) -> Result<MetaResult, StorageError> {
        self.journal
            .insert(key(index), encode(&command)?)
            .map_err(io_error)?;
        let applier = self.applier.clone();
        tokio::task::spawn_blocking(move || applier.apply(index, command))
            .await
            .map_err(io_error)?
            .map_err(|e| io_error(format!("cannot apply metadata entry {index}: {e}")))
    }

    async fn save_applied(&self) -> Result<(), StorageError> {
        self.state
            .insert(APPLIED, encode(&self.applied)?)
            .map_err(io_error)?;
        self.db.flush_async().await.map_err(io_error)?;
        Ok(())
    }

    fn applied_index(&self) -> Option<u64> {
        self.applied.log_id.map(|l| l.index)
    }

    /// The journal up to the applied index, encoded.
    fn journal_bytes(&self) -> Result<Vec<u8>, StorageError> {
        let last = self.applied_index().unwrap_or(0);
        let mut commands: Vec<(u64, MetaCommand)> = Vec::new();
        for item in self.journal.range(..=key(last)) {
            let (k, v) = item.map_err(io_error)?;
            let index = u64::from_be_bytes(k.as_ref().try_into().map_err(io_error)?);
            commands.push((index, decode(&v)?));
        }
        encode(&commands)
    }

    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        match self.state.get(SNAPSHOT).map_err(io_error)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    async fn save_snapshot(&self, snapshot: &StoredSnapshot) -> Result<(), StorageError> {
        self.state
            .insert(SNAPSHOT, encode(snapshot)?)
            .map_err(io_error)?;
        self.db.flush_async().await.map_err(io_error)?;
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let data = self.journal_bytes()?;
        let last = self.applied.log_id;
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: self.applied.membership.clone(),
            snapshot_id: match last {
                Some(l) => format!("{}-{}", l.leader_id, l.index),
                None => "empty".into(),
            },
        };
        let stored = StoredSnapshot { meta, data };
        self.save_snapshot(&stored).await?;
        Ok(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.applied.log_id, self.applied.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<MetaResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut results = Vec::new();
        for entry in entries {
            let result = match entry.payload {
                EntryPayload::Blank => MetaResult::None,
                EntryPayload::Normal(command) => {
                    self.apply_command(entry.log_id.index, command).await?
                }
                EntryPayload::Membership(m) => {
                    self.applied.membership = StoredMembership::new(Some(entry.log_id), m);
                    MetaResult::None
                }
            };
            self.applied.log_id = Some(entry.log_id);
            results.push(result);
        }
        self.save_applied().await?;
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let commands: Vec<(u64, MetaCommand)> = decode(&data)?;
        let done = self.applied_index();
        let mut applied = 0;
        for (index, command) in commands {
            if done.is_none_or(|d| index > d) {
                self.apply_command(index, command).await?;
                applied += 1;
            }
        }
        tracing::info!(
            snapshot = %meta.snapshot_id,
            applied,
            "installed a metadata snapshot from the leader"
        );
        self.applied = Applied {
            log_id: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.save_applied().await?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.stored_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
