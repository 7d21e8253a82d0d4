//! The metadata state machine. Applying a committed command runs it through the broker's own
//! services (the [`Applier`]), so a cluster node keeps its topics, plugins, users and ACLs exactly
//! where a single broker keeps them; this module records how far it has applied.
//!
//! Every committed entry is journaled (index → entry) before it is applied, and the applied index
//! is saved after each one. A snapshot is the journal: the state is the result of applying it in
//! order, and committed entries never change, so a node behind a snapshot journals the entries
//! past its own applied index and applies them. After a crash, [`StateMachine::recover`] applies
//! what was journaled but not yet recorded as applied, so a snapshot whose install was cut short
//! (its log already purged by openraft) is finished rather than lost. Replaying a journal is
//! slower than loading a state dump, but metadata changes are few and it needs no second
//! serialisation of every store (docs/replication.md).

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, Membership, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

use super::log_store::{decode, encode, key};
use super::types::{
    io_error, Entry, LogId, MetaCommand, MetaResult, Node, NodeId, Snapshot, SnapshotMeta,
    StorageError, StoredMembership, TypeConfig,
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

/// One committed entry as journaled.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journaled {
    log_id: LogId,
    payload: JournaledPayload,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum JournaledPayload {
    Blank,
    Command(MetaCommand),
    Membership(Membership<NodeId, Node>),
}

impl From<Entry> for Journaled {
    fn from(e: Entry) -> Journaled {
        let payload = match e.payload {
            EntryPayload::Blank => JournaledPayload::Blank,
            EntryPayload::Normal(c) => JournaledPayload::Command(c),
            EntryPayload::Membership(m) => JournaledPayload::Membership(m),
        };
        Journaled {
            log_id: e.log_id,
            payload,
        }
    }
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

    /// Applies the journaled entries past the applied index (left by a crash in the middle of an
    /// apply or of a snapshot install). Run before Raft starts.
    pub async fn recover(&mut self) -> Result<(), StorageError> {
        let from = self.applied_index().map_or(0, |i| i + 1);
        let mut replayed = 0;
        for item in self.journal.range(key(from)..) {
            let (_, v) = item.map_err(io_error)?;
            self.apply_journaled(decode(&v)?).await?;
            replayed += 1;
        }
        if replayed > 0 {
            tracing::info!(
                replayed,
                "applied journaled metadata entries left by a restart"
            );
        }
        Ok(())
    }

    /// Applies one journaled entry and records it applied (flushed): a crash re-applies at most
    /// this one entry.
    async fn apply_journaled(&mut self, entry: Journaled) -> Result<MetaResult, StorageError> {
        let index = entry.log_id.index;
        let result = match entry.payload {
            JournaledPayload::Blank => MetaResult::None,
            JournaledPayload::Command(command) => {
                let applier = self.applier.clone();
                tokio::task::spawn_blocking(move || applier.apply(index, command))
                    .await
                    .map_err(io_error)?
                    .map_err(|e| io_error(format!("cannot apply metadata entry {index}: {e}")))?
            }
            JournaledPayload::Membership(m) => {
                self.applied.membership = StoredMembership::new(Some(entry.log_id), m);
                MetaResult::None
            }
        };
        self.applied.log_id = Some(entry.log_id);
        self.state
            .insert(APPLIED, encode(&self.applied)?)
            .map_err(io_error)?;
        self.db.flush_async().await.map_err(io_error)?;
        Ok(result)
    }

    fn applied_index(&self) -> Option<u64> {
        self.applied.log_id.map(|l| l.index)
    }

    fn stored_snapshot(&self) -> Result<Option<StoredSnapshot>, StorageError> {
        match self.state.get(SNAPSHOT).map_err(io_error)? {
            Some(v) => Ok(Some(decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Keeps `snapshot` unless a newer one is kept already (a build may finish after an
    /// install of a later snapshot).
    async fn save_snapshot(&self, snapshot: &StoredSnapshot) -> Result<(), StorageError> {
        let kept = self.stored_snapshot()?.and_then(|s| s.meta.last_log_id);
        if kept > snapshot.meta.last_log_id {
            return Ok(());
        }
        self.state
            .insert(SNAPSHOT, encode(snapshot)?)
            .map_err(io_error)?;
        self.db.flush_async().await.map_err(io_error)?;
        Ok(())
    }
}

/// The journal up to `last`, encoded (on the blocking pool: it holds every deployed component).
/// Entries that only set values later entries set again (offset commits, queue settled points)
/// are left out and deleted from the journal: the journal would otherwise grow with every
/// commit for as long as the cluster lives.
async fn journal_bytes(journal: sled::Tree, last: u64) -> Result<Vec<u8>, StorageError> {
    tokio::task::spawn_blocking(move || {
        let mut entries: Vec<Journaled> = Vec::new();
        let mut set_later: std::collections::HashSet<String> = Default::default();
        let mut needless = sled::Batch::default();
        for item in journal.range(..=key(last)).rev() {
            let (k, v) = item.map_err(io_error)?;
            let entry: Journaled = decode(&v)?;
            if let JournaledPayload::Command(c) = &entry.payload {
                if let Some(keys) = c.replaces() {
                    if keys.iter().all(|k| set_later.contains(k)) {
                        needless.remove(k);
                        continue;
                    }
                    set_later.extend(keys);
                }
            }
            entries.push(entry);
        }
        entries.reverse();
        journal.apply_batch(needless).map_err(io_error)?;
        encode(&entries)
    })
    .await
    .map_err(io_error)?
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let last = self.applied.log_id;
        let data = journal_bytes(self.journal.clone(), last.map_or(0, |l| l.index)).await?;
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
            let entry = Journaled::from(entry);
            self.journal
                .insert(key(entry.log_id.index), encode(&entry)?)
                .map_err(io_error)?;
            results.push(self.apply_journaled(entry).await?);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    /// Journals the snapshot's entries past this node's applied index and the snapshot itself
    /// (flushed) before applying any: openraft purges the log as soon as this returns, or as
    /// soon as it starts, and the journal must then hold all the node still has to apply.
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let done = self.applied_index();
        let bytes = data.clone();
        let entries: Vec<Journaled> = tokio::task::spawn_blocking(move || decode(&bytes))
            .await
            .map_err(io_error)??;
        let mut batch = sled::Batch::default();
        let mut missing = 0;
        for e in entries
            .iter()
            .filter(|e| done.is_none_or(|d| e.log_id.index > d))
        {
            batch.insert(&key(e.log_id.index), encode(e)?);
            missing += 1;
        }
        self.journal.apply_batch(batch).map_err(io_error)?;
        self.db.flush_async().await.map_err(io_error)?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save_snapshot(&stored).await?;
        self.recover().await?;
        if self.applied.log_id < meta.last_log_id {
            self.applied = Applied {
                log_id: meta.last_log_id,
                membership: meta.last_membership.clone(),
            };
            self.state
                .insert(APPLIED, encode(&self.applied)?)
                .map_err(io_error)?;
            self.db.flush_async().await.map_err(io_error)?;
        }
        tracing::info!(
            snapshot = %meta.snapshot_id,
            applied = missing,
            "installed a metadata snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.stored_snapshot()?.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::groups::PartitionOffset;

    use crate::cluster::types::SettledPoint;

    fn commit(offsets: &[(u32, u64)]) -> MetaCommand {
        MetaCommand::CommitOffsets {
            group: "g".into(),
            offsets: offsets
                .iter()
                .map(|&(partition, offset)| PartitionOffset {
                    topic: "t".into(),
                    partition,
                    offset,
                })
                .collect(),
        }
    }

    fn settled(start: u64) -> MetaCommand {
        MetaCommand::QueueSettled {
            points: vec![SettledPoint {
                group: "g".into(),
                topic: "t".into(),
                partition: 0,
                start,
            }],
        }
    }

    #[tokio::test]
    async fn a_snapshot_leaves_out_commits_that_later_ones_replace() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let journal = db.open_tree("raft-journal").unwrap();
        let commands = [
            commit(&[(0, 5)]),
            commit(&[(0, 7), (1, 1)]),
            settled(3),
            commit(&[(0, 9)]),
            settled(4),
        ];
        for (i, c) in commands.into_iter().enumerate() {
            let index = i as u64 + 1;
            let entry = Journaled {
                log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
                payload: JournaledPayload::Command(c),
            };
            journal.insert(key(index), encode(&entry).unwrap()).unwrap();
        }
        let bytes = journal_bytes(journal.clone(), 5).await.unwrap();
        let kept: Vec<Journaled> = decode(&bytes).unwrap();
        let indexes: Vec<u64> = kept.iter().map(|e| e.log_id.index).collect();
        // 1 and 3 are replaced by 4 and 5; 2 also sets partition 1, set nowhere later.
        assert_eq!(indexes, vec![2, 4, 5]);
        let left: Vec<u64> = journal
            .iter()
            .map(|kv| u64::from_be_bytes(kv.unwrap().0.as_ref().try_into().unwrap()))
            .collect();
        assert_eq!(left, vec![2, 4, 5]);
    }
}
