//! Sparse per-segment indexes: `.index` maps a batch's relative offset to its byte position, and
//! `.timeindex` maps "largest timestamp before this batch" to the batch's relative offset.
//!
//! Both are caches of the log: they can always be rebuilt by scanning the segment, so they are written
//! in the background of appends (buffered) and never fsync'd. Loading validates them; a file that is
//! not a clean run of entries is reported as damaged and the caller rebuilds it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// One `.index` entry: the batch starting at `rel_offset` begins at byte `position` of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

/// One `.timeindex` entry: every record before the batch at `rel_offset` has a timestamp of at most
/// `max_ts_before`. The entry written when a segment is sealed has `rel_offset` = record count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub max_ts_before: i64,
    pub rel_offset: u32,
}

const OFFSET_ENTRY_LEN: usize = 8;
const TIME_ENTRY_LEN: usize = 12;
/// Entries are written to disk once this many are pending (they are rebuildable, so a crash that
/// loses them only costs a longer tail scan on the next start).
const FLUSH_EVERY: usize = 32;

/// The two indexes of one segment, in memory, with the part not yet written to disk.
#[derive(Debug, Default)]
pub struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    offsets_written: usize,
    times_written: usize,
}

/// Why an index file could not be used.
#[derive(Debug)]
pub enum IndexLoadError {
    Missing,
    Damaged(&'static str),
    Io(io::Error),
}

impl SegmentIndex {
    pub fn push(&mut self, offset: OffsetEntry, time: Option<TimeEntry>) {
        self.offsets.push(offset);
        if let Some(t) = time {
            self.times.push(t);
        }
    }

    pub fn has_pending(&self) -> bool {
        self.offsets_written < self.offsets.len() || self.times_written < self.times.len()
    }

    pub fn should_flush(&self) -> bool {
        self.offsets.len() - self.offsets_written >= FLUSH_EVERY
    }

    /// Appends pending entries to the index files.
    pub fn flush(&mut self, log_path: &Path) -> io::Result<()> {
        if self.offsets_written < self.offsets.len() {
            let buf = encode_offsets(&self.offsets[self.offsets_written..]);
            append_to(&index_path(log_path), &buf)?;
            self.offsets_written = self.offsets.len();
        }
        if self.times_written < self.times.len() {
            let buf = encode_times(&self.times[self.times_written..]);
            append_to(&timeindex_path(log_path), &buf)?;
            self.times_written = self.times.len();
        }
        Ok(())
    }

    /// CRC32C of both files' contents as these entries encode them. The files are never fsync'd,
    /// so a clean-shutdown marker records this to tell a complete index from a stale one.
    pub fn crc(&self) -> u32 {
        let offsets = crc32c::crc32c(&encode_offsets(&self.offsets));
        crc32c::crc32c_append(offsets, &encode_times(&self.times))
    }

    /// Replaces both files with the in-memory entries (after a rebuild).
    pub fn rewrite(&mut self, log_path: &Path) -> io::Result<()> {
        File::create(index_path(log_path))?;
        File::create(timeindex_path(log_path))?;
        self.offsets_written = 0;
        self.times_written = 0;
        self.flush(log_path)
    }

    /// Loads and validates both files of a segment whose log is `log_len` bytes long.
    pub fn load(log_path: &Path, log_len: u64) -> Result<SegmentIndex, IndexLoadError> {
        let raw = read_file(&index_path(log_path))?;
        if raw.len() % OFFSET_ENTRY_LEN != 0 {
            return Err(IndexLoadError::Damaged(
                "offset index length is not a whole number of entries",
            ));
        }
        let offsets: Vec<OffsetEntry> = raw
            .chunks_exact(OFFSET_ENTRY_LEN)
            .map(|c| OffsetEntry {
                rel_offset: le_u32(&c[0..4]),
                position: le_u32(&c[4..8]),
            })
            .collect();
        let ordered = offsets
            .windows(2)
            .all(|w| w[0].rel_offset < w[1].rel_offset && w[0].position < w[1].position);
        if !ordered || offsets.last().is_some_and(|e| e.position as u64 >= log_len) {
            return Err(IndexLoadError::Damaged(
                "offset index entries are out of order or past the log",
            ));
        }
        let raw = read_file(&timeindex_path(log_path))?;
        if raw.len() % TIME_ENTRY_LEN != 0 {
            return Err(IndexLoadError::Damaged(
                "time index length is not a whole number of entries",
            ));
        }
        let times: Vec<TimeEntry> = raw
            .chunks_exact(TIME_ENTRY_LEN)
            .map(|c| TimeEntry {
                max_ts_before: le_i64(&c[0..8]),
                rel_offset: le_u32(&c[8..12]),
            })
            .collect();
        if !times
            .windows(2)
            .all(|w| w[0].rel_offset < w[1].rel_offset && w[0].max_ts_before <= w[1].max_ts_before)
        {
            return Err(IndexLoadError::Damaged(
                "time index entries are out of order",
            ));
        }
        let (offsets_written, times_written) = (offsets.len(), times.len());
        Ok(SegmentIndex {
            offsets,
            times,
            offsets_written,
            times_written,
        })
    }

    /// The last entry at or before `rel_offset`: where a scan for that offset should start.
    pub fn floor(&self, rel_offset: u32) -> Option<OffsetEntry> {
        let i = self.offsets.partition_point(|e| e.rel_offset <= rel_offset);
        i.checked_sub(1).map(|i| self.offsets[i])
    }

    /// Position of the batch at exactly `rel_offset`, if indexed.
    pub fn position_of(&self, rel_offset: u32) -> Option<u32> {
        self.floor(rel_offset)
            .filter(|e| e.rel_offset == rel_offset)
            .map(|e| e.position)
    }

    /// Where a search for the first record with timestamp >= `ts` may start: the last entry all of
    /// whose preceding records are older than `ts`.
    pub fn time_floor(&self, ts: i64) -> Option<TimeEntry> {
        let i = self.times.partition_point(|e| e.max_ts_before < ts);
        i.checked_sub(1).map(|i| self.times[i])
    }

    /// Drops entries at or past `position` (after the log was truncated there).
    pub fn truncate_to(&mut self, position: u64, rel_offset: u32) {
        self.offsets.retain(|e| (e.position as u64) < position);
        self.times.retain(|e| e.rel_offset < rel_offset);
        self.offsets_written = self.offsets_written.min(self.offsets.len());
        self.times_written = self.times_written.min(self.times.len());
    }
}

pub fn index_path(log_path: &Path) -> PathBuf {
    log_path.with_extension("index")
}

pub fn timeindex_path(log_path: &Path) -> PathBuf {
    log_path.with_extension("timeindex")
}

fn encode_offsets(entries: &[OffsetEntry]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(entries.len() * OFFSET_ENTRY_LEN);
    for e in entries {
        buf.extend_from_slice(&e.rel_offset.to_le_bytes());
        buf.extend_from_slice(&e.position.to_le_bytes());
    }
    buf
}

fn encode_times(entries: &[TimeEntry]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(entries.len() * TIME_ENTRY_LEN);
    for e in entries {
        buf.extend_from_slice(&e.max_ts_before.to_le_bytes());
        buf.extend_from_slice(&e.rel_offset.to_le_bytes());
    }
    buf
}

fn append_to(path: &Path, buf: &[u8]) -> io::Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?
        .write_all(buf)
}

fn read_file(path: &Path) -> Result<Vec<u8>, IndexLoadError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(IndexLoadError::Missing),
        Err(e) => return Err(IndexLoadError::Io(e)),
    };
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).map_err(IndexLoadError::Io)?;
    Ok(buf)
}

fn le_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn le_i64(b: &[u8]) -> i64 {
    i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}
