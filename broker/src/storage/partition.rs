//! A partition: an ordered list of segments with dense offsets, appended at the tail and read from
//! any offset. Appends and the segment list sit behind one mutex; file reads and fsyncs happen outside
//! it, on shared file handles, so readers and the group commit never stall appenders.
//!
//! Invariants: segments are contiguous (each one's `next_offset` is the next one's `base`); only the
//! last segment is written; an acknowledged `all` append was fsync'd, and so was every segment sealed
//! before it.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus_client::metrics::histogram::Histogram;
use quiver_proto::batch::{self, encode_header, Batch};

use super::clean::CleanMark;
use super::config::LogConfig;
use super::error::StorageError;
use super::segment::{self, Segment};
use super::sync::GroupCommit;
use super::Durability;

/// A clock in milliseconds since the Unix epoch; replaceable so tests can age segments.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(crate::util::now_ms)
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    /// The offset the next append will get.
    pub log_end: u64,
}

/// Bytes of whole batches read from the log, and the log's bounds at the time of the read.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    pub bytes: Bytes,
    pub log_start: u64,
    pub log_end: u64,
}

/// Counters a partition reports (describe, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionStats {
    pub log_start: u64,
    pub log_end: u64,
    pub size_bytes: u64,
    pub segments: usize,
    /// Traffic since the broker started (not persisted: Prometheus counters may reset).
    pub traffic: Traffic,
}

/// Records and bytes into and out of a partition since the broker started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traffic {
    /// Appended (by producers, routing, dead-lettering, delayed delivery).
    pub records_in: u64,
    pub bytes_in: u64,
    /// Handed to readers (fetches and queue leases), after read filters.
    pub records_out: u64,
    pub bytes_out: u64,
}

/// [`Traffic`]'s live counters: bumped once per batch or answer, never per record.
#[derive(Debug, Default)]
struct TrafficCounters {
    records_in: AtomicU64,
    bytes_in: AtomicU64,
    records_out: AtomicU64,
    bytes_out: AtomicU64,
}

impl TrafficCounters {
    fn snapshot(&self) -> Traffic {
        Traffic {
            records_in: self.records_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }
}

/// Buckets of the fsync duration histogram, in seconds: 50 µs to ~3 s.
pub fn fsync_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.000_05, 3.0, 11)
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
}

struct State {
    segments: Vec<Segment>,
    /// Sealed since the last fsync: the next group commit syncs them too.
    unsynced_sealed: Vec<Arc<File>>,
    /// Set when a failed write could not be undone; appends are refused until a restart recovers.
    failed: Option<String>,
    /// An fsync failed: the kernel may have dropped dirty pages and reports that only once, so a
    /// later fsync's success proves nothing. No clean-shutdown marker then (the restart scans).
    sync_failed: bool,
}

pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    clock: Clock,
    state: Mutex<State>,
    sync: GroupCommit,
    /// The end readers may see (the log end, or the high watermark below it), for long-polling
    /// readers. Only grows, except when a replica truncates.
    end_tx: tokio::sync::watch::Sender<u64>,
    /// The log end itself after every append, for a leader answering its followers.
    leo_tx: tokio::sync::watch::Sender<u64>,
    /// A replicated partition's high watermark: readers see only the records below it (every
    /// in-sync replica has them). `u64::MAX` when the partition is not replicated.
    high_watermark: AtomicU64,
    /// Set on a cluster node that does not lead the partition: appends other than a replica's
    /// copying from its leader are refused.
    follower: AtomicBool,
    traffic: TrafficCounters,
    /// Every fsync's duration; the topic store shares one histogram across its partitions.
    fsync_seconds: Histogram,
}

impl PartitionLog {
    /// Opens (or creates) the partition in `dir`, recovering the active segment's tail.
    pub fn open(dir: &Path, config: LogConfig, clock: Clock) -> Result<PartitionLog, StorageError> {
        let io = |e| StorageError::io(dir, e);
        fs::create_dir_all(dir).map_err(io)?;
        let mut bases = list_segments(dir)?;
        if bases.is_empty() {
            Segment::create(dir, 0).map_err(io)?;
            bases.push((0, 0));
        }
        // An empty last segment left by a crash during a roll: drop it and reopen its predecessor.
        if bases.len() > 1 && bases.last().is_some_and(|&(_, size)| size == 0) {
            if let Some((base, _)) = bases.pop() {
                Segment::sealed(segment::log_path(dir, base), base, base, 0)
                    .delete_files()
                    .map_err(io)?;
            }
        }
        let mut segments = Vec::with_capacity(bases.len());
        for w in bases.windows(2) {
            let (base, size) = w[0];
            segments.push(Segment::sealed(
                segment::log_path(dir, base),
                base,
                w[1].0,
                size,
            ));
        }
        let (base, _) = bases[bases.len() - 1];
        let mut active = open_active(dir, base, &config)?;
        active.rolled_after_ms = Some(clock());
        segments.push(active);
        let log = PartitionLog {
            dir: dir.to_owned(),
            config,
            clock,
            state: Mutex::new(State {
                segments,
                unsynced_sealed: Vec::new(),
                failed: None,
                sync_failed: false,
            }),
            sync: GroupCommit::default(),
            end_tx: tokio::sync::watch::Sender::new(0),
            leo_tx: tokio::sync::watch::Sender::new(0),
            high_watermark: AtomicU64::new(u64::MAX),
            follower: AtomicBool::new(false),
            traffic: TrafficCounters::default(),
            fsync_seconds: Histogram::new(fsync_buckets()),
        };
        let end = log.stats().log_end;
        log.sync.mark_synced(end);
        log.end_tx.send_replace(end);
        log.leo_tx.send_replace(end);
        Ok(log)
    }

    /// Reports fsyncs into `histogram` (shared by a store's partitions) instead of its own.
    pub fn with_fsync_histogram(mut self, histogram: Histogram) -> PartitionLog {
        self.fsync_seconds = histogram;
        self
    }

    /// Counts records and bytes handed to a reader (a fetch answer or a queue lease).
    pub fn count_out(&self, records: u64, bytes: u64) {
        self.traffic
            .records_out
            .fetch_add(records, Ordering::Relaxed);
        self.traffic.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Watches the end readers may see: changes after every append (on a replicated partition,
    /// when the high watermark moves).
    pub fn subscribe_end(&self) -> tokio::sync::watch::Receiver<u64> {
        self.end_tx.subscribe()
    }

    /// Watches the log end itself (a leader long-polls its followers' fetches on it).
    pub fn subscribe_log_end(&self) -> tokio::sync::watch::Receiver<u64> {
        self.leo_tx.subscribe()
    }

    /// Limits readers to the records below `hw` (a replicated partition), or lifts the limit.
    pub fn set_high_watermark(&self, hw: Option<u64>) {
        self.high_watermark
            .store(hw.unwrap_or(u64::MAX), Ordering::Release);
        self.publish_visible(bounds(&self.state.lock()).1);
    }

    /// The high watermark readers are held to, if the partition is replicated.
    pub fn high_watermark(&self) -> Option<u64> {
        match self.high_watermark.load(Ordering::Acquire) {
            u64::MAX => None,
            hw => Some(hw),
        }
    }

    /// The end readers may see: the log end, or the high watermark when it is lower.
    pub fn visible_end(&self) -> u64 {
        let end = bounds(&self.state.lock()).1;
        end.min(self.high_watermark.load(Ordering::Acquire))
    }

    /// Tells long-polling readers the visible end, which only grows here (concurrent appends
    /// and high-watermark moves may publish out of order).
    /// `log_end`: the log end the caller just saw (an append knows it without the lock).
    fn publish_visible(&self, log_end: u64) {
        let visible = log_end.min(self.high_watermark.load(Ordering::Acquire));
        self.end_tx.send_if_modified(|v| {
            let grew = visible > *v;
            *v = (*v).max(visible);
            grew
        });
    }

    /// Refuses (or again takes) appends: a cluster node that does not lead the partition. Set
    /// under the append lock: no append of a leader is still on its way once this returns.
    pub fn set_follower(&self, follower: bool) {
        let _appends = self.state.lock();
        self.follower.store(follower, Ordering::Release);
    }

    /// Whether appends are refused because another node leads the partition.
    pub fn is_follower(&self) -> bool {
        self.follower.load(Ordering::Acquire)
    }

    /// Appends one validated batch, assigning it the next offsets, with the requested durability.
    pub fn append(
        &self,
        batch: &Batch,
        durability: Durability,
    ) -> Result<AppendInfo, StorageError> {
        self.append_with(batch, durability, None)
    }

    /// Appends a batch copied from the partition's leader (a follower's own log, where
    /// [`append`](Self::append) refuses); it must land at `at`, where the leader has it.
    pub fn append_as_replica(
        &self,
        batch: &Batch,
        at: u64,
        durability: Durability,
    ) -> Result<AppendInfo, StorageError> {
        self.append_with(batch, durability, Some(at))
    }

    fn append_with(
        &self,
        batch: &Batch,
        durability: Durability,
        replica_at: Option<u64>,
    ) -> Result<AppendInfo, StorageError> {
        let info = self.append_unsynced(batch, replica_at)?;
        self.leo_tx.send_replace(info.log_end);
        self.publish_visible(info.log_end);
        if durability == Durability::All {
            self.sync_through(info.log_end)?;
        }
        Ok(info)
    }

    fn append_unsynced(
        &self,
        batch: &Batch,
        replica_at: Option<u64>,
    ) -> Result<AppendInfo, StorageError> {
        let len = batch.bytes().len();
        if len > self.config.max_batch_bytes as usize {
            return Err(StorageError::BatchTooLarge {
                len,
                max: self.config.max_batch_bytes as usize,
            });
        }
        if batch.header().flags & batch::FLAG_SPARSE != 0 {
            // Offsets are assigned densely here; a filtered (sparse) batch is a fetch result only.
            let err = quiver_proto::BatchError::BadHeader {
                field: "flags",
                value: batch.header().flags as u64,
            };
            return Err(StorageError::InvalidBatch(err));
        }
        let mut st = self.state.lock();
        if let Some(why) = &st.failed {
            return Err(StorageError::Failed {
                dir: self.dir.clone(),
                reason: why.clone(),
            });
        }
        let end = bounds(&st).1;
        match replica_at {
            None if self.is_follower() => {
                return Err(StorageError::NotLeader {
                    dir: self.dir.clone(),
                })
            }
            Some(at) if at != end => {
                return Err(StorageError::Failed {
                    dir: self.dir.clone(),
                    reason: format!("a replica's batch for offset {at} arrived at log end {end}"),
                })
            }
            _ => {}
        }
        let now = (self.clock)();
        self.maybe_roll(&mut st, Some(len as u64), now)?;
        let active = st.segments.last_mut().ok_or_else(|| self.no_segments())?;
        let mut h = *batch.header();
        h.base_offset = active.next_offset;
        let header = encode_header(&h);
        let body = &batch.bytes()[batch::HEADER_LEN..];
        if let Err(e) = active.append(&header, body, &h, self.config.index_interval_bytes) {
            let err = StorageError::io(&active.path, e);
            if active.poisoned {
                // The file may now end in a partial batch: refuse writes until recovery cuts it off.
                st.failed = Some(err.to_string());
            }
            return Err(err);
        }
        if active.rolled_after_ms.is_none() {
            active.rolled_after_ms = Some(now);
        }
        let t = &self.traffic;
        t.records_in
            .fetch_add(h.record_count as u64, Ordering::Relaxed);
        t.bytes_in.fetch_add(len as u64, Ordering::Relaxed);
        Ok(AppendInfo {
            base_offset: h.base_offset,
            last_offset: h.last_offset(),
            log_end: h.next_offset(),
        })
    }

    /// Rolls to a new segment when the active one has aged out or would grow past its size with an
    /// `incoming` batch.
    fn maybe_roll(
        &self,
        st: &mut State,
        incoming: Option<u64>,
        now: i64,
    ) -> Result<(), StorageError> {
        let Some(active) = st.segments.last() else {
            return Err(self.no_segments());
        };
        if active.is_empty() {
            return Ok(());
        }
        let too_big = incoming.is_some_and(|n| active.size + n > self.config.segment_bytes);
        let too_old = active
            .rolled_after_ms
            .is_some_and(|t| now.saturating_sub(t) >= self.config.segment_ms as i64);
        if too_big || too_old {
            self.roll(st)?;
        }
        Ok(())
    }

    fn roll(&self, st: &mut State) -> Result<(), StorageError> {
        let Some(active) = st.segments.last_mut() else {
            return Err(self.no_segments());
        };
        active
            .seal()
            .map_err(|e| StorageError::io(&active.path, e))?;
        let file = active
            .file()
            .map_err(|e| StorageError::io(&active.path, e))?;
        let next = active.next_offset;
        st.unsynced_sealed.push(file);
        let seg = Segment::create(&self.dir, next)
            .map_err(|e| StorageError::io(segment::log_path(&self.dir, next), e))?;
        st.segments.push(seg);
        Ok(())
    }

    /// Seals the active segment now (operators, tests); a no-op on an empty active segment.
    pub fn force_roll(&self) -> Result<(), StorageError> {
        let mut st = self.state.lock();
        if st.segments.last().is_some_and(|s| !s.is_empty()) {
            self.roll(&mut st)?;
        }
        Ok(())
    }

    /// Sealed segments still waiting for an fsync (tests: retention must not leave deleted ones here).
    pub fn unsynced_sealed(&self) -> usize {
        self.state.lock().unsynced_sealed.len()
    }

    /// How many fsyncs the group commit has run.
    pub fn fsync_count(&self) -> u64 {
        self.sync.sync_count()
    }

    /// Makes every append up to `offset` durable. Concurrent callers share one fsync (group commit).
    pub fn sync_through(&self, offset: u64) -> Result<(), StorageError> {
        self.sync.sync_through(offset, || self.sync_now())
    }

    /// One fsync of the active segment (and of segments sealed since the last one). Returns the log
    /// end it covers.
    fn sync_now(&self) -> Result<u64, StorageError> {
        let (mut files, end, path) = {
            let mut st = self.state.lock();
            let active = st.segments.last_mut().ok_or_else(|| self.no_segments())?;
            let end = active.next_offset;
            let path = active.path.clone();
            let file = active.file().map_err(|e| StorageError::io(&path, e))?;
            let mut files = std::mem::take(&mut st.unsynced_sealed);
            files.push(file);
            (files, end, path)
        };
        let started = Instant::now();
        if let Err(e) = files.iter().try_for_each(|f| f.sync_data()) {
            let mut st = self.state.lock();
            st.sync_failed = true;
            // The sealed ones are synced again by the next group commit (the last is the active).
            files.pop();
            st.unsynced_sealed.extend(files);
            return Err(StorageError::io(&path, e));
        }
        self.fsync_seconds.observe(started.elapsed().as_secs_f64());
        Ok(end)
    }

    /// Reads whole batches starting with the one holding `offset`, up to about `max_bytes`, as
    /// readers see the log: on a replicated partition only below the high watermark (a reader
    /// at or past it, but within the log, gets nothing yet).
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult, StorageError> {
        let hw = self.high_watermark.load(Ordering::Acquire);
        if hw == u64::MAX {
            return self.read_raw(offset, max_bytes);
        }
        let (log_start, log_end) = bounds(&self.state.lock());
        let visible = hw.min(log_end);
        if offset >= visible && offset <= log_end {
            return Ok(ReadResult {
                bytes: Bytes::new(),
                log_start,
                log_end: visible,
            });
        }
        let mut res = self.read_raw(offset, max_bytes)?;
        res.bytes = batches_before(res.bytes, visible);
        res.log_end = visible;
        Ok(res)
    }

    /// Reads whole batches starting with the one holding `offset`, up to about `max_bytes`, up
    /// to the log end (a leader answering a follower).
    pub fn read_raw(&self, offset: u64, max_bytes: usize) -> Result<ReadResult, StorageError> {
        let (file, path, pos, end, (log_start, log_end), seg_next) = {
            let mut st = self.state.lock();
            let (log_start, log_end) = bounds(&st);
            if offset == log_end {
                return Ok(ReadResult {
                    bytes: Bytes::new(),
                    log_start,
                    log_end,
                });
            }
            if offset < log_start || offset > log_end {
                return Err(StorageError::OffsetOutOfRange {
                    offset,
                    log_start,
                    log_end,
                });
            }
            let i = st.segments.partition_point(|s| s.base <= offset) - 1;
            let seg = &mut st.segments[i];
            let path = seg.path.clone();
            let io = |e| StorageError::io(&path, e);
            let rel = (offset - seg.base) as u32;
            let start = seg
                .index(self.config.index_interval_bytes)
                .map_err(io)?
                .floor(rel);
            let file = seg.file().map_err(io)?;
            let pos = start.map_or(0, |e| e.position as u64);
            (
                file,
                path,
                pos,
                seg.size,
                (log_start, log_end),
                seg.next_offset,
            )
        };
        let io = |e| StorageError::io(&path, e);
        match segment::hop_to(&file, pos, end, offset).map_err(io)? {
            Some(at) => {
                let bytes = segment::read_batches(&file, at, end, max_bytes).map_err(io)?;
                Ok(ReadResult {
                    bytes,
                    log_start,
                    log_end,
                })
            }
            // A segment whose tail was lost ends early; continue in the next one.
            None if seg_next > offset => self.read_raw(seg_next, max_bytes),
            None => Err(StorageError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            }),
        }
    }

    /// An offset where about the last `bytes` of the log begin (a batch start; the log start
    /// when the log is smaller), found from the segment sizes and the sparse index.
    pub fn offset_near_end(&self, bytes: u64) -> Result<u64, StorageError> {
        let interval = self.config.index_interval_bytes;
        let mut st = self.state.lock();
        let mut left = bytes;
        for seg in st.segments.iter_mut().rev() {
            if seg.size <= left {
                left -= seg.size;
                continue;
            }
            let from = seg.size - left;
            let (base, next, path) = (seg.base, seg.next_offset, seg.path.clone());
            let index = seg
                .index(interval)
                .map_err(|e| StorageError::io(&path, e))?;
            let i = index
                .offsets
                .partition_point(|e| (e.position as u64) < from);
            let rel = index.offsets.get(i).map(|e| u64::from(e.rel_offset));
            return Ok(rel.map_or(next, |r| base + r));
        }
        Ok(bounds(&st).0)
    }

    /// Removes every record at or after `offset` (a replica cutting the tail that diverged from
    /// its leader's log, docs/replication.md). `offset` should start a batch; inside one, the
    /// whole batch goes. Below the log start, the log is emptied and restarts at `offset`.
    pub fn truncate_to(&self, offset: u64) -> Result<(), StorageError> {
        let mut st = self.state.lock();
        let (start, end) = bounds(&st);
        if offset >= end {
            return Ok(());
        }
        if offset < start {
            drop(st);
            return self.restart_at(offset);
        }
        let interval = self.config.index_interval_bytes;
        while st.segments.len() > 1 && st.segments.last().is_some_and(|s| s.base >= offset) {
            if let Some(seg) = st.segments.pop() {
                self.drop_segment(&mut st, &seg)?;
            }
        }
        let active = st.segments.last_mut().ok_or_else(|| self.no_segments())?;
        let path = active.path.clone();
        let io = |e| StorageError::io(&path, e);
        let at = active.find_position(offset, interval).map_err(io)?;
        let at = at.unwrap_or(active.size);
        active.cut_at(at, interval).map_err(io)?;
        active.rolled_after_ms = Some((self.clock)());
        self.after_cut(st, offset);
        Ok(())
    }

    /// Empties the log and makes `offset` its next offset (a replica whose copy ends before
    /// what its leader still keeps).
    pub fn restart_at(&self, offset: u64) -> Result<(), StorageError> {
        let mut st = self.state.lock();
        while let Some(seg) = st.segments.pop() {
            self.drop_segment(&mut st, &seg)?;
        }
        let seg = Segment::create(&self.dir, offset)
            .map_err(|e| StorageError::io(segment::log_path(&self.dir, offset), e))?;
        st.segments.push(seg);
        self.after_cut(st, offset);
        Ok(())
    }

    /// Publishes the new (lower) log end after a cut.
    fn after_cut(&self, mut st: parking_lot::MutexGuard<'_, State>, from: u64) {
        st.failed = None;
        let end = bounds(&st).1;
        drop(st);
        tracing::warn!(dir = %self.dir.display(), from, end, "cut the log to its leader's");
        self.sync.truncated(end);
        self.leo_tx.send_replace(end);
        let visible = end.min(self.high_watermark.load(Ordering::Acquire));
        self.end_tx.send_replace(visible);
    }

    fn drop_segment(&self, st: &mut State, seg: &Segment) -> Result<(), StorageError> {
        if let Some(file) = seg.open_file() {
            st.unsynced_sealed.retain(|f| !Arc::ptr_eq(f, file));
        }
        seg.delete_files()
            .map_err(|e| StorageError::io(&seg.path, e))
    }

    /// The first offset whose record timestamp is at or after `ts`, or the log end if none is.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<u64, StorageError> {
        let interval = self.config.index_interval_bytes;
        let mut st = self.state.lock();
        let log_end = bounds(&st).1;
        for seg in st.segments.iter_mut() {
            let path = seg.path.clone();
            let io = |e| StorageError::io(&path, e);
            if seg.is_empty() || seg.max_ts(interval).map_err(io)? < ts {
                continue;
            }
            let start = seg.index(interval).map_err(io)?.time_floor(ts);
            let from = seg.base + start.map_or(0, |t| t.rel_offset as u64);
            let (file, size) = (seg.file().map_err(io)?, seg.size);
            if let Some(found) = first_at_or_after(
                &file,
                seg.find_position(from, interval).map_err(io)?,
                size,
                from,
                ts,
            )
            .map_err(io)?
            {
                return Ok(found);
            }
        }
        Ok(log_end)
    }

    /// Deletes whole sealed segments beyond the size or age limits, oldest first, and rolls an
    /// active segment that has aged out so that it can expire later.
    pub fn enforce_retention(&self) -> Result<RetentionOutcome, StorageError> {
        let now = (self.clock)();
        let mut st = self.state.lock();
        self.maybe_roll(&mut st, None, now)?;
        let mut out = RetentionOutcome::default();
        let mut total: u64 = st.segments.iter().map(|s| s.size).sum();
        while st.segments.len() > 1 {
            let interval = self.config.index_interval_bytes;
            let oldest = &mut st.segments[0];
            // Like Kafka: drop the oldest segment only while what remains still meets the limit.
            let over_size = self
                .config
                .retention_bytes
                .is_some_and(|max| total - oldest.size >= max);
            let expired = match self.config.retention_ms {
                Some(ms) => {
                    oldest
                        .max_ts(interval)
                        .map_err(|e| StorageError::io(&oldest.path, e))?
                        < now - ms as i64
                }
                None => false,
            };
            if !over_size && !expired {
                break;
            }
            let seg = st.segments.remove(0);
            // A deleted segment needs no fsync; holding its handle would keep its space allocated.
            self.drop_segment(&mut st, &seg)?;
            tracing::debug!(segment = %seg.path.display(), over_size, expired, "retention deleted segment");
            total -= seg.size;
            out.segments_deleted += 1;
            out.bytes_deleted += seg.size;
        }
        Ok(out)
    }

    /// Deletes the sealed segments that end at or before `offset` (records below it are no longer
    /// needed: the delay store's delivered prefix). The active segment is never deleted.
    pub fn delete_before(&self, offset: u64) -> Result<usize, StorageError> {
        let mut st = self.state.lock();
        let mut deleted = 0;
        while st.segments.len() > 1 && st.segments[0].next_offset <= offset {
            let seg = st.segments.remove(0);
            self.drop_segment(&mut st, &seg)?;
            deleted += 1;
        }
        Ok(deleted)
    }

    pub fn stats(&self) -> PartitionStats {
        let st = self.state.lock();
        let (log_start, log_end) = bounds(&st);
        PartitionStats {
            log_start,
            log_end,
            size_bytes: st.segments.iter().map(|s| s.size).sum(),
            segments: st.segments.len(),
            traffic: self.traffic.snapshot(),
        }
    }

    /// Writes pending index entries and fsyncs the log: the clean-shutdown path.
    pub fn flush(&self) -> Result<(), StorageError> {
        {
            let mut st = self.state.lock();
            if let Some(active) = st.segments.last_mut() {
                active
                    .flush_index()
                    .map_err(|e| StorageError::io(&active.path, e))?;
            }
        }
        let end = self.stats().log_end;
        self.sync_through(end)
    }

    /// The graceful stop: [`flush`](Self::flush), then a clean-shutdown marker so the next open
    /// skips the tail scan. The marker describes the log as it was before the fsync, so an append
    /// racing the stop is either covered by it or makes the file longer than the marker says (and
    /// the next open scans). A partition whose writes or fsyncs failed gets none. Failing to write
    /// the marker only costs the next start a scan: it is logged, not returned.
    pub fn close(&self) -> Result<(), StorageError> {
        let mark = {
            let mut st = self.state.lock();
            let active = st.segments.last_mut().ok_or_else(|| self.no_segments())?;
            active
                .flush_index()
                .map_err(|e| StorageError::io(&active.path, e))?;
            let mark = active.clean_mark();
            mark.filter(|_| st.failed.is_none() && !st.sync_failed)
        };
        let end = mark.map_or_else(|| self.stats().log_end, |m| m.next_offset);
        self.sync_through(end)?;
        if let Some(mark) = mark {
            if let Err(e) = mark.write(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "clean-shutdown marker not written");
            }
        }
        Ok(())
    }

    fn no_segments(&self) -> StorageError {
        StorageError::Failed {
            dir: self.dir.clone(),
            reason: "partition has no segments".into(),
        }
    }
}

/// Opens the last segment for appends: as a clean-shutdown marker describes it, or else by
/// recovering its tail (checking every batch from the last index entry on).
fn open_active(dir: &Path, base: u64, config: &LogConfig) -> Result<Segment, StorageError> {
    let path = segment::log_path(dir, base);
    let io = |e| StorageError::io(&path, e);
    let mut active = Segment::sealed(path.clone(), base, base, 0);
    let clean = match CleanMark::take(dir) {
        Some(mark) => active.open_clean(&mark).map_err(io)?,
        None => false,
    };
    if clean {
        return Ok(active);
    }
    let stop = active
        .recover_tail(config.index_interval_bytes)
        .map_err(io)?;
    if let Some(stop) = stop {
        tracing::warn!(
            segment = %active.path.display(), position = stop.position, reason = %stop.reason,
            "truncated a torn or corrupt tail of the active segment"
        );
    }
    Ok(active)
}

/// The leading batches of `bytes` (whole batches back to back) that start below `end`.
fn batches_before(bytes: Bytes, end: u64) -> Bytes {
    let mut cut = 0;
    while let Ok(h) = quiver_proto::BatchHeader::parse(&bytes[cut..]) {
        if h.base_offset >= end || cut + h.length as usize > bytes.len() {
            break;
        }
        cut += h.length as usize;
    }
    bytes.slice(..cut)
}

fn bounds(st: &State) -> (u64, u64) {
    let start = st.segments.first().map_or(0, |s| s.base);
    let end = st.segments.last().map_or(0, |s| s.next_offset);
    (start, end)
}

/// Segment base offsets and sizes in `dir`, sorted; stray files are ignored.
fn list_segments(dir: &Path) -> Result<Vec<(u64, u64)>, StorageError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let entry = entry.map_err(|e| StorageError::io(dir, e))?;
        let name = entry.file_name();
        let Some(base) = name.to_str().and_then(segment::parse_log_name) else {
            continue;
        };
        let size = entry
            .metadata()
            .map_err(|e| StorageError::io(entry.path(), e))?
            .len();
        out.push((base, size));
    }
    out.sort_unstable();
    Ok(out)
}

/// Scans batches from `pos` for the first record with timestamp >= `ts` at or after offset `from`.
fn first_at_or_after(
    file: &File,
    pos: Option<u64>,
    end: u64,
    from: u64,
    ts: i64,
) -> std::io::Result<Option<u64>> {
    let Some(mut pos) = pos else { return Ok(None) };
    while pos < end {
        let bytes = segment::read_batches(file, pos, end, 1)?;
        let b = Batch::parse(bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if b.header().max_timestamp >= ts {
            if let Some(r) = b.records().find(|r| r.offset >= from && r.timestamp >= ts) {
                return Ok(Some(r.offset));
            }
        }
        pos += b.bytes().len() as u64;
    }
    Ok(None)
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("stats", &self.stats())
            .finish()
    }
}
