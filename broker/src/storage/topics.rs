//! Topics: named sets of partitions under `<data-dir>/topics/<topic>/<partition>/`, with their configs
//! in the metadata store. The store is the source of truth for which topics exist; a partition
//! directory that the store expects but the disk lacks makes the topic unavailable (with the path in
//! the error) rather than silently recreating it empty.

use std::collections::BTreeMap;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use prometheus_client::metrics::histogram::Histogram;
use serde::{Deserialize, Serialize};

use super::config::LogConfig;
use super::error::StorageError;
use super::partition::{fsync_buckets, system_clock, Clock, PartitionLog, RetentionOutcome};
use crate::meta::{MetaStore, Namespace};

pub const MAX_PARTITIONS: u32 = 10_000;
const MAX_NAME_LEN: usize = 200;

/// A topic's settings as stored in the metadata store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicConfig {
    pub partitions: u32,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub created_ms: i64,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            log: LogConfig::default(),
            created_ms: 0,
        }
    }
}

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub config: TopicConfig,
    partitions: Vec<Arc<PartitionLog>>,
}

impl Topic {
    pub fn partitions(&self) -> &[Arc<PartitionLog>] {
        &self.partitions
    }

    pub fn partition(&self, p: u32) -> Result<&Arc<PartitionLog>, StorageError> {
        self.partitions
            .get(p as usize)
            .ok_or_else(|| StorageError::UnknownPartition {
                topic: self.name.clone(),
                partition: p,
                count: self.partitions.len() as u32,
            })
    }
}

pub struct TopicStore {
    root: PathBuf,
    meta: MetaStore,
    clock: Clock,
    /// Every fsync of every partition (one histogram: bounded series however many partitions).
    fsync_seconds: Histogram,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Topics the metadata store knows but that could not be opened, with the reason.
    unavailable: RwLock<BTreeMap<String, String>>,
    /// A cluster node: partitions open refusing appends until replication says this node
    /// leads them.
    fenced: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for TopicStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicStore")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl TopicStore {
    /// Opens every topic recorded in `meta` under `data_dir/topics`.
    pub fn open(data_dir: &Path, meta: MetaStore) -> Result<TopicStore, StorageError> {
        Self::open_with_clock(data_dir, meta, system_clock())
    }

    pub fn open_with_clock(
        data_dir: &Path,
        meta: MetaStore,
        clock: Clock,
    ) -> Result<TopicStore, StorageError> {
        let root = data_dir.join("topics");
        fs::create_dir_all(&root).map_err(|e| StorageError::io(&root, e))?;
        remove_deleted_leftovers(&root);
        let store = TopicStore {
            root,
            meta,
            clock,
            fsync_seconds: Histogram::new(fsync_buckets()),
            topics: RwLock::default(),
            unavailable: RwLock::default(),
            fenced: std::sync::atomic::AtomicBool::new(false),
        };
        let listed = store.meta.scan::<TopicConfig>(Namespace::Topics, "")?;
        let dirs = listed.iter().flat_map(|(name, config)| {
            (0..config.partitions).map(|p| (store.topic_dir(name).join(p.to_string()), config.log))
        });
        let mut opened = store.open_existing(dirs.collect()).into_iter();
        for (name, config) in listed {
            let logs = opened.by_ref().take(config.partitions as usize);
            let topic = logs.collect::<Result<Vec<_>, _>>().map(|logs| Topic {
                name: name.clone(),
                config,
                partitions: logs.into_iter().map(Arc::new).collect(),
            });
            match topic {
                Ok(topic) => {
                    store.topics.write().insert(name, Arc::new(topic));
                }
                Err(e) => {
                    tracing::error!(topic = %name, error = %e, "topic is unavailable");
                    store.unavailable.write().insert(name, e.to_string());
                }
            }
        }
        Ok(store)
    }

    /// Makes every partition, open now or later, refuse appends until replication names this
    /// node its leader (a cluster node, before it knows which partitions it leads).
    pub fn fence_partitions(&self) {
        self.fenced
            .store(true, std::sync::atomic::Ordering::Release);
        for topic in self.list() {
            for log in topic.partitions() {
                log.set_follower(true);
            }
        }
    }

    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    /// Counts records and bytes a reader received from a partition (after its answer was
    /// written: a long poll whose client went away delivered nothing). Unknown partitions (a
    /// topic deleted meanwhile) are ignored.
    pub fn count_out(&self, topic: &str, partition: u32, records: u64, bytes: u64) {
        if let Ok(log) = self.partition(topic, partition) {
            log.count_out(records, bytes);
        }
    }

    /// The duration of every fsync of every partition since the broker started.
    pub fn fsync_histogram(&self) -> &Histogram {
        &self.fsync_seconds
    }

    fn open_partition(&self, dir: &Path, log: LogConfig) -> Result<PartitionLog, StorageError> {
        let log = PartitionLog::open(dir, log, self.clock.clone())?;
        log.set_follower(self.fenced.load(std::sync::atomic::Ordering::Acquire));
        Ok(log.with_fsync_histogram(self.fsync_seconds.clone()))
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Opens the partitions of existing topics, answers in the order given. They open on as many
    /// threads as there are cores: a start with many partitions is bound by per-file system calls
    /// (and, after a crash, by checksumming each active tail), which spread over cores.
    fn open_existing(
        &self,
        dirs: Vec<(PathBuf, LogConfig)>,
    ) -> Vec<Result<PartitionLog, StorageError>> {
        let open = |(dir, log): &(PathBuf, LogConfig)| {
            if !dir.is_dir() {
                let source = std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "partition directory is missing",
                );
                return Err(StorageError::io(dir, source));
            }
            self.open_partition(dir, *log)
        };
        let failed = |dir: &Path| StorageError::Failed {
            dir: dir.to_owned(),
            reason: "opening the partition panicked".into(),
        };
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let next = AtomicUsize::new(0);
        let done: Vec<(usize, Result<PartitionLog, StorageError>)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads.min(dirs.len()))
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(job) = dirs.get(i) else { break mine };
                            // A panic fails this partition alone, not the worker's others.
                            let opened = catch_unwind(AssertUnwindSafe(|| open(job)));
                            mine.push((i, opened.unwrap_or_else(|_| Err(failed(&job.0)))));
                        }
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap_or_default())
                .collect()
        });
        let mut slots: Vec<Option<_>> = (0..dirs.len()).map(|_| None).collect();
        for (i, result) in done {
            slots[i] = Some(result);
        }
        slots
            .into_iter()
            .zip(&dirs)
            .map(|(slot, (dir, _))| slot.unwrap_or_else(|| Err(failed(dir))))
            .collect()
    }

    /// Creates a new topic's partitions.
    fn create_partitions(&self, name: &str, config: TopicConfig) -> Result<Topic, StorageError> {
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        for p in 0..config.partitions {
            let dir = self.topic_dir(name).join(p.to_string());
            partitions.push(Arc::new(self.open_partition(&dir, config.log)?));
        }
        Ok(Topic {
            name: name.to_owned(),
            config,
            partitions,
        })
    }

    pub fn create_topic(
        &self,
        name: &str,
        mut config: TopicConfig,
    ) -> Result<Arc<Topic>, StorageError> {
        validate_name(name)?;
        if name.starts_with(RESERVED_PREFIX) {
            return Err(StorageError::InvalidTopicName {
                name: name.to_owned(),
                reason: "names starting with `__quiver.` are the broker's own",
            });
        }
        config.log.validate()?;
        if config.partitions == 0 || config.partitions > MAX_PARTITIONS {
            return Err(StorageError::InvalidConfig(format!(
                "partitions must be between 1 and {MAX_PARTITIONS}"
            )));
        }
        let mut topics = self.topics.write();
        if topics.contains_key(name) || self.unavailable.read().contains_key(name) {
            return Err(StorageError::TopicExists(name.to_owned()));
        }
        config.created_ms = (self.clock)();
        let dir = self.topic_dir(name);
        // Leftovers of a topic that was never recorded (a crash during create) are not data.
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        }
        let topic = self.create_partitions(name, config.clone()).and_then(|t| {
            self.meta.put_durable(Namespace::Topics, name, &config)?;
            Ok(t)
        });
        match topic {
            Ok(t) => {
                let t = Arc::new(t);
                topics.insert(name.to_owned(), t.clone());
                Ok(t)
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// Deletes a topic: forgets it in the metadata store first, then removes its files.
    pub fn delete_topic(&self, name: &str) -> Result<(), StorageError> {
        let mut topics = self.topics.write();
        let known = topics.contains_key(name) || self.unavailable.read().contains_key(name);
        if !known {
            return Err(StorageError::UnknownTopic(name.to_owned()));
        }
        self.meta.remove_durable(Namespace::Topics, name)?;
        topics.remove(name);
        self.unavailable.write().remove(name);
        let dir = self.topic_dir(name);
        let trash = self
            .root
            .join(format!(".deleted-{name}-{}", (self.clock)()));
        if dir.exists() {
            fs::rename(&dir, &trash).map_err(|e| StorageError::io(&dir, e))?;
            fs::remove_dir_all(&trash).map_err(|e| StorageError::io(&trash, e))?;
        }
        Ok(())
    }

    /// Grows a topic to `count` partitions (partitions are never removed).
    pub fn add_partitions(&self, name: &str, count: u32) -> Result<Arc<Topic>, StorageError> {
        let mut topics = self.topics.write();
        let old = topics
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::UnknownTopic(name.to_owned()))?;
        if count <= old.config.partitions || count > MAX_PARTITIONS {
            let msg = format!(
                "partitions can only grow, from {} up to {MAX_PARTITIONS}",
                old.config.partitions
            );
            return Err(StorageError::InvalidConfig(msg));
        }
        let mut config = old.config.clone();
        let mut partitions = old.partitions.clone();
        for p in old.config.partitions..count {
            let dir = self.topic_dir(name).join(p.to_string());
            partitions.push(Arc::new(self.open_partition(&dir, config.log)?));
        }
        config.partitions = count;
        self.meta.put_durable(Namespace::Topics, name, &config)?;
        let topic = Arc::new(Topic {
            name: name.to_owned(),
            config,
            partitions,
        });
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    pub fn get(&self, name: &str) -> Result<Arc<Topic>, StorageError> {
        if let Some(t) = self.topics.read().get(name) {
            return Ok(t.clone());
        }
        match self.unavailable.read().get(name) {
            Some(reason) => Err(StorageError::TopicUnavailable {
                topic: name.to_owned(),
                reason: reason.clone(),
            }),
            None => Err(StorageError::UnknownTopic(name.to_owned())),
        }
    }

    pub fn partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<PartitionLog>, StorageError> {
        self.get(topic)?.partition(partition).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.topics.read().values().cloned().collect()
    }

    /// Topics that exist in the metadata store but failed to open, with the reason.
    pub fn unavailable(&self) -> Vec<(String, String)> {
        self.unavailable
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// One retention pass over every partition; errors are logged and the pass goes on.
    pub fn enforce_retention(&self) -> RetentionOutcome {
        let mut total = RetentionOutcome::default();
        for topic in self.list() {
            for p in topic.partitions() {
                match p.enforce_retention() {
                    Ok(o) => {
                        total.segments_deleted += o.segments_deleted;
                        total.bytes_deleted += o.bytes_deleted;
                    }
                    Err(e) => {
                        tracing::error!(topic = %topic.name, error = %e, "retention pass failed")
                    }
                }
            }
        }
        total
    }

    /// Flushes indexes and fsyncs every partition and leaves its clean-shutdown marker, then
    /// flushes the metadata store (clean shutdown).
    /// One partition's failure does not keep the others (or the metadata) from being flushed; the
    /// first error is returned at the end.
    pub fn flush_all(&self) -> Result<(), StorageError> {
        let mut first = None;
        for topic in self.list() {
            for p in topic.partitions() {
                if let Err(e) = p.close() {
                    tracing::error!(dir = %p.dir().display(), error = %e, "flush at shutdown failed");
                    first.get_or_insert(e);
                }
            }
        }
        let meta = self.meta.flush();
        match first {
            Some(e) => Err(e),
            None => Ok(meta?),
        }
    }
}

/// Names the broker keeps for itself (a cluster's delay shards, `__quiver.delay`).
pub const RESERVED_PREFIX: &str = "__quiver.";

pub fn validate_name(name: &str) -> Result<(), StorageError> {
    let bad = |reason| {
        Err(StorageError::InvalidTopicName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return bad("must be 1 to 200 characters");
    }
    if name.starts_with('.') {
        return bad("must not start with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return bad("may only contain ASCII letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

fn remove_deleted_leftovers(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(".deleted-") {
            if let Err(err) = fs::remove_dir_all(e.path()) {
                tracing::warn!(path = %e.path().display(), error = %err, "could not remove a deleted topic's files");
            }
        }
    }
}
