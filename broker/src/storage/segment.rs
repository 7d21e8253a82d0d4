//! One segment of a partition log: `<base-offset>.log` holding whole batches back to back, with its
//! sparse indexes. Sealed segments are opened lazily (file handle, indexes, max timestamp) so that
//! opening a partition costs the same however much sealed data it holds.
//!
//! Invariants: `size` only covers complete batches; offsets inside a segment are dense from `base` to
//! `next_offset - 1`; an index entry never points past `size`.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use quiver_proto::batch::{self, BatchHeader, HEADER_LEN, LENGTH_END};

use super::clean::CleanMark;
use super::index::{IndexLoadError, OffsetEntry, SegmentIndex, TimeEntry};

/// Where a scan of a segment stopped early, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanStop {
    pub position: u64,
    pub reason: String,
}

/// What a scan learned about a run of batches.
#[derive(Debug)]
pub struct ScanResult {
    pub valid_len: u64,
    pub next_offset: u64,
    pub max_ts: i64,
    pub stop: Option<ScanStop>,
}

#[derive(Debug)]
pub struct Segment {
    pub base: u64,
    pub path: PathBuf,
    file: Option<Arc<File>>,
    pub size: u64,
    pub next_offset: u64,
    /// Largest record timestamp; `None` until a sealed segment's time index is loaded.
    max_ts: Option<i64>,
    index: Option<SegmentIndex>,
    bytes_since_index: u64,
    /// Wall-clock or first-record time used for rolling by age.
    pub rolled_after_ms: Option<i64>,
    /// A failed write could not be undone: the file may end in a partial batch.
    pub poisoned: bool,
}

pub fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The base offset encoded in a segment file name, if it is one of ours.
pub fn parse_log_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

impl Segment {
    /// Creates a new, empty active segment.
    pub fn create(dir: &Path, base: u64) -> io::Result<Segment> {
        let path = log_path(dir, base);
        File::create(&path)?;
        // Append mode: after a failed write is cut back, the next write lands at the new end.
        let file = OpenOptions::new().read(true).append(true).open(&path)?;
        for p in [
            super::index::index_path(&path),
            super::index::timeindex_path(&path),
        ] {
            File::create(p)?;
        }
        Ok(Segment {
            base,
            path,
            file: Some(Arc::new(file)),
            size: 0,
            next_offset: base,
            max_ts: Some(i64::MIN),
            index: Some(SegmentIndex::default()),
            bytes_since_index: 0,
            rolled_after_ms: None,
            poisoned: false,
        })
    }

    /// A sealed segment known only by name and size; everything else loads on first use.
    pub fn sealed(path: PathBuf, base: u64, next_offset: u64, size: u64) -> Segment {
        Segment {
            base,
            path,
            file: None,
            size,
            next_offset,
            max_ts: None,
            index: None,
            bytes_since_index: 0,
            rolled_after_ms: None,
            poisoned: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.next_offset == self.base
    }

    /// The file handle, if the segment has been opened.
    pub fn open_file(&self) -> Option<&Arc<File>> {
        self.file.as_ref()
    }

    pub fn file(&mut self) -> io::Result<Arc<File>> {
        if let Some(f) = &self.file {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(&self.path)?);
        self.file = Some(f.clone());
        Ok(f)
    }

    /// Opens the segment for appending (the active segment) after recovery has fixed its length.
    pub fn open_for_append(&mut self) -> io::Result<()> {
        let f = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)?;
        self.file = Some(Arc::new(f));
        Ok(())
    }

    /// Loads the indexes, rebuilding them from the log when missing or damaged. Returns what a
    /// rebuild scan found wrong, if anything.
    pub fn ensure_index(&mut self, interval: u64) -> io::Result<Option<ScanStop>> {
        if self.index.is_some() {
            return Ok(None);
        }
        match SegmentIndex::load(&self.path, self.size) {
            Ok(index) if index_is_complete(&index, self.next_offset - self.base) => {
                self.max_ts = Some(index.times.last().map_or(i64::MIN, |t| t.max_ts_before));
                self.index = Some(index);
                Ok(None)
            }
            Ok(_) | Err(IndexLoadError::Missing) | Err(IndexLoadError::Damaged(_)) => {
                self.rebuild_index(interval)
            }
            Err(IndexLoadError::Io(e)) => Err(e),
        }
    }

    /// Scans the whole segment and writes fresh index files.
    pub fn rebuild_index(&mut self, interval: u64) -> io::Result<Option<ScanStop>> {
        tracing::info!(segment = %self.path.display(), "rebuilding segment index");
        let file = self.file()?;
        let mut index = SegmentIndex::default();
        let scan = scan(
            &file,
            self.base,
            0,
            self.base,
            i64::MIN,
            self.size,
            &mut index,
            interval,
        )?;
        if scan.next_offset > self.base {
            // The closing entry marks the index complete and carries the segment's max timestamp.
            index.times.push(TimeEntry {
                max_ts_before: scan.max_ts,
                rel_offset: (scan.next_offset - self.base) as u32,
            });
        }
        index.rewrite(&self.path)?;
        self.max_ts = Some(scan.max_ts);
        self.index = Some(index);
        Ok(scan.stop)
    }

    /// Verifies the tail of the active segment from its last index entry, truncating a torn or
    /// corrupt tail. Returns the truncation, if one happened.
    pub fn recover_tail(&mut self, interval: u64) -> io::Result<Option<ScanStop>> {
        let file_len = std::fs::metadata(&self.path)?.len();
        self.size = file_len;
        let loaded = match SegmentIndex::load(&self.path, file_len) {
            Ok(idx) => Some(idx),
            Err(IndexLoadError::Io(e)) => return Err(e),
            Err(_) => None,
        };
        let mut index = loaded.unwrap_or_default();
        // Drop a trailing "sealed" time entry: this segment is active again.
        let (start_pos, start_rel, max_before) = Self::tail_start(&mut index);
        let file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        let start_off = self.base + start_rel as u64;
        let mut scan = scan(
            &file, self.base, start_pos, start_off, max_before, file_len, &mut index, interval,
        )?;
        if scan.stop.is_some() && scan.valid_len == start_pos && start_pos > 0 {
            // The index entry led to no valid batch: a stale or damaged index (its files are not
            // fsync'd), or a torn last batch. Trusting it could cut off valid batches before the
            // tear, so the whole segment is scanned instead (bounded by `segment_bytes`).
            index = SegmentIndex::default();
            scan = self::scan(
                &file,
                self.base,
                0,
                self.base,
                i64::MIN,
                file_len,
                &mut index,
                interval,
            )?;
        }
        if scan.valid_len < file_len {
            file.set_len(scan.valid_len)?;
            file.sync_all()?;
            index.truncate_to(scan.valid_len, (scan.next_offset - self.base) as u32);
        }
        index.rewrite(&self.path)?;
        self.size = scan.valid_len;
        self.next_offset = scan.next_offset;
        self.max_ts = Some(scan.max_ts);
        self.index = Some(index);
        self.file = None;
        self.open_for_append()?;
        Ok(scan.stop)
    }

    /// Opens the active segment as a graceful stop described it in `mark`, without reading the log.
    /// `false` (nothing changed) when the file or its indexes do not match the marker exactly; the
    /// caller then recovers the tail as after a crash.
    pub fn open_clean(&mut self, mark: &CleanMark) -> io::Result<bool> {
        let file_len = std::fs::metadata(&self.path)?.len();
        let count = mark.next_offset.checked_sub(self.base);
        let plausible =
            count.is_some_and(|n| n <= u64::from(u32::MAX) && (n == 0) == (file_len == 0));
        if mark.base != self.base || mark.size != file_len || !plausible {
            return Ok(false);
        }
        let index = match SegmentIndex::load(&self.path, file_len) {
            Ok(index) => index,
            Err(IndexLoadError::Io(e)) => return Err(e),
            Err(_) => return Ok(false),
        };
        let within = |rel: u32| count.is_some_and(|n| u64::from(rel) < n);
        if index.offsets.len() as u64 != mark.offset_entries
            || index.times.len() as u64 != mark.time_entries
            || index.offsets.last().is_some_and(|e| !within(e.rel_offset))
            || index.crc() != mark.index_crc
        {
            return Ok(false);
        }
        self.size = file_len;
        self.next_offset = mark.next_offset;
        self.max_ts = Some(mark.max_ts);
        self.index = Some(index);
        self.file = None;
        self.open_for_append()?;
        Ok(true)
    }

    /// What a clean-shutdown marker must say of this (active) segment, once its indexes are written;
    /// `None` if they are not, or a write failed.
    pub fn clean_mark(&self) -> Option<CleanMark> {
        let index = self.index.as_ref().filter(|i| !i.has_pending())?;
        (!self.poisoned).then(|| CleanMark {
            base: self.base,
            size: self.size,
            next_offset: self.next_offset,
            max_ts: self.max_ts.unwrap_or(i64::MIN),
            offset_entries: index.offsets.len() as u64,
            time_entries: index.times.len() as u64,
            index_crc: index.crc(),
        })
    }

    /// Where the tail scan starts: the last indexed batch (its entry is re-added by the scan).
    fn tail_start(index: &mut SegmentIndex) -> (u64, u32, i64) {
        let Some(last) = index.offsets.pop() else {
            index.times.clear();
            return (0, 0, i64::MIN);
        };
        // A time entry is written at an index point exactly when the max grew, so the last one at or
        // before this point carries the max timestamp of everything before it.
        let at_or_before = index
            .times
            .iter()
            .rev()
            .find(|t| t.rel_offset <= last.rel_offset);
        let max_before = at_or_before.map_or(i64::MIN, |t| t.max_ts_before);
        index.times.retain(|t| t.rel_offset < last.rel_offset);
        index.truncate_to(last.position as u64, last.rel_offset);
        (last.position as u64, last.rel_offset, max_before)
    }

    pub fn max_ts(&mut self, interval: u64) -> io::Result<i64> {
        self.ensure_index(interval)?;
        Ok(self.max_ts.unwrap_or(i64::MIN))
    }

    pub fn index(&mut self, interval: u64) -> io::Result<&SegmentIndex> {
        self.ensure_index(interval)?;
        Ok(self.index.get_or_insert_with(SegmentIndex::default))
    }

    /// Appends one batch: `header` is the batch's header with its base offset already assigned and
    /// `body` the rest of the batch. On a write error the file is cut back to its old length.
    pub fn append(
        &mut self,
        header: &[u8; HEADER_LEN],
        body: &[u8],
        h: &BatchHeader,
        interval: u64,
    ) -> io::Result<()> {
        let file = self.file()?;
        if let Err(e) = write_all_vectored(&file, &[IoSlice::new(header), IoSlice::new(body)]) {
            if let Err(undo) = file.set_len(self.size) {
                tracing::error!(segment = %self.path.display(), error = %undo, "could not undo a partial write");
                self.poisoned = true;
                return Err(io::Error::new(
                    e.kind(),
                    format!("{e}; undoing the partial write also failed: {undo}"),
                ));
            }
            return Err(e);
        }
        let position = self.size;
        let prev_max = self.max_ts.unwrap_or(i64::MIN);
        if position == 0 || self.bytes_since_index >= interval {
            let rel = (h.base_offset - self.base) as u32;
            let index = self.index.get_or_insert_with(SegmentIndex::default);
            let time = TimeEntry {
                max_ts_before: prev_max,
                rel_offset: rel,
            };
            let needs_time = index
                .times
                .last()
                .is_none_or(|t| t.max_ts_before < prev_max)
                || position == 0;
            index.push(
                OffsetEntry {
                    rel_offset: rel,
                    position: position as u32,
                },
                needs_time.then_some(time),
            );
            self.bytes_since_index = 0;
        }
        self.size += h.length as u64;
        self.bytes_since_index += h.length as u64;
        self.next_offset = h.next_offset();
        self.max_ts = Some(prev_max.max(h.max_timestamp));
        if let Some(index) = self.index.as_mut().filter(|i| i.should_flush()) {
            index.flush(&self.path)?;
        }
        Ok(())
    }

    /// Closes the segment for appends: writes the closing time entry and pending index entries.
    pub fn seal(&mut self) -> io::Result<()> {
        let rel = (self.next_offset - self.base) as u32;
        let max = self.max_ts.unwrap_or(i64::MIN);
        let empty = self.is_empty();
        if let Some(index) = self.index.as_mut() {
            if !empty && index.times.last().is_none_or(|t| t.rel_offset < rel) {
                index.times.push(TimeEntry {
                    max_ts_before: max,
                    rel_offset: rel,
                });
            }
            index.flush(&self.path)?;
        }
        Ok(())
    }

    pub fn flush_index(&mut self) -> io::Result<()> {
        match self.index.as_mut() {
            Some(i) if i.has_pending() => i.flush(&self.path),
            _ => Ok(()),
        }
    }

    /// Byte position of the batch holding `offset` (which must lie in this segment), found by hopping
    /// batch headers from the nearest index entry.
    pub fn find_position(&mut self, offset: u64, interval: u64) -> io::Result<Option<u64>> {
        let rel = (offset - self.base) as u32;
        let start = self.index(interval)?.floor(rel).unwrap_or(OffsetEntry {
            rel_offset: 0,
            position: 0,
        });
        let file = self.file()?;
        hop_to(&file, start.position as u64, self.size, offset)
    }

    /// Cuts the segment at byte `position` (where a batch starts), drops the index entries past
    /// it and reopens the segment as the active one: a replica truncating a divergent tail.
    pub fn cut_at(&mut self, position: u64, interval: u64) -> io::Result<()> {
        let mut index = std::mem::take(self.index_mut(interval)?);
        if position < self.size {
            let mut hdr = [0u8; HEADER_LEN];
            self.file()?.read_exact_at(&mut hdr, position)?;
            let h = BatchHeader::parse(&hdr)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            index.truncate_to(position, (h.base_offset - self.base) as u32);
        }
        let file = OpenOptions::new().write(true).open(&self.path)?;
        file.set_len(position)?;
        file.sync_all()?;
        index.rewrite(&self.path)?;
        self.index = None;
        self.file = None;
        self.poisoned = false;
        // The tail scan re-reads what is left after the last index entry and reopens for appends.
        self.recover_tail(interval)?;
        Ok(())
    }

    fn index_mut(&mut self, interval: u64) -> io::Result<&mut SegmentIndex> {
        self.ensure_index(interval)?;
        Ok(self.index.get_or_insert_with(SegmentIndex::default))
    }

    /// Removes the segment's files (retention or topic deletion).
    pub fn delete_files(&self) -> io::Result<()> {
        for p in [
            self.path.clone(),
            super::index::index_path(&self.path),
            super::index::timeindex_path(&self.path),
        ] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

fn index_is_complete(index: &SegmentIndex, count: u64) -> bool {
    // A sealed segment's time index ends with the closing entry; without it the max timestamp and
    // possibly some entries are missing.
    count == 0
        || index
            .times
            .last()
            .is_some_and(|t| t.rel_offset as u64 == count)
}

/// Reads batch headers from `pos` until the batch containing `offset`; `None` if the segment ends first.
pub fn hop_to(file: &File, mut pos: u64, end: u64, offset: u64) -> io::Result<Option<u64>> {
    let mut hdr = [0u8; HEADER_LEN];
    while pos + HEADER_LEN as u64 <= end {
        file.read_exact_at(&mut hdr, pos)?;
        let h =
            BatchHeader::parse(&hdr).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if h.next_offset() > offset {
            return Ok(Some(pos));
        }
        pos += h.length as u64;
    }
    Ok(None)
}

/// Reads whole batches starting at `pos`, at most `max_bytes` of them but always at least one whole
/// batch (so a consumer makes progress past a batch larger than its budget).
pub fn read_batches(file: &File, pos: u64, end: u64, max_bytes: usize) -> io::Result<Bytes> {
    let avail = end.saturating_sub(pos) as usize;
    let want = avail.min(max_bytes.max(LENGTH_END));
    let mut buf = BytesMut::zeroed(want);
    file.read_exact_at(&mut buf, pos)?;
    let mut cut = 0usize;
    while cut + LENGTH_END <= buf.len() {
        let len = BatchHeader::peek_length(&buf[cut..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if cut + len > buf.len() {
            if cut == 0 {
                // The first batch alone is larger than the budget: return it whole.
                let len = len.min(avail);
                let mut whole = BytesMut::zeroed(len);
                file.read_exact_at(&mut whole, pos)?;
                return Ok(whole.freeze());
            }
            break;
        }
        cut += len;
    }
    buf.truncate(cut);
    Ok(buf.freeze())
}

/// Scans batches from `pos`, checking each one's CRC and offset continuity, and indexes them.
/// Stops at the first invalid or incomplete batch and reports where.
#[allow(clippy::too_many_arguments)]
pub fn scan(
    file: &File,
    seg_base: u64,
    mut pos: u64,
    mut next_offset: u64,
    mut max_ts: i64,
    file_len: u64,
    index: &mut SegmentIndex,
    interval: u64,
) -> io::Result<ScanResult> {
    let mut buf = Vec::new();
    let mut since_index = interval;
    while pos < file_len {
        let h = match next_batch(file, pos, file_len, next_offset, &mut buf)? {
            Ok(h) => h,
            Err(reason) => {
                let stop = Some(ScanStop {
                    position: pos,
                    reason,
                });
                return Ok(ScanResult {
                    valid_len: pos,
                    next_offset,
                    max_ts,
                    stop,
                });
            }
        };
        if since_index >= interval {
            let rel = (h.base_offset - seg_base) as u32;
            let needs_time = index.times.last().is_none_or(|t| t.max_ts_before < max_ts);
            let time = TimeEntry {
                max_ts_before: max_ts,
                rel_offset: rel,
            };
            let entry = OffsetEntry {
                rel_offset: rel,
                position: pos as u32,
            };
            index.push(entry, needs_time.then_some(time));
            since_index = 0;
        }
        since_index += h.length as u64;
        max_ts = max_ts.max(h.max_timestamp);
        next_offset = h.next_offset();
        pos += h.length as u64;
    }
    Ok(ScanResult {
        valid_len: pos,
        next_offset,
        max_ts,
        stop: None,
    })
}

/// Reads and checks the batch at `pos` (framing, CRC, records, expected base offset). The inner
/// `Err` says why the log is not valid from `pos` on; the outer one is an I/O failure.
fn next_batch(
    file: &File,
    pos: u64,
    file_len: u64,
    expected: u64,
    buf: &mut Vec<u8>,
) -> io::Result<Result<BatchHeader, String>> {
    if pos + LENGTH_END as u64 > file_len {
        return Ok(Err(format!(
            "{} trailing bytes are not a batch header",
            file_len - pos
        )));
    }
    let mut head = [0u8; LENGTH_END];
    file.read_exact_at(&mut head, pos)?;
    let len = match BatchHeader::peek_length(&head) {
        Ok(len) if pos + len as u64 <= file_len => len,
        Ok(len) => {
            return Ok(Err(format!(
                "batch of {len} bytes is cut short by the end of the file"
            )))
        }
        Err(e) => return Ok(Err(e.to_string())),
    };
    buf.resize(len, 0);
    file.read_exact_at(buf, pos)?;
    Ok(match batch::validate(buf) {
        Ok(h) if h.base_offset == expected => Ok(h),
        Ok(h) => Err(format!(
            "batch has base offset {}, expected {expected}",
            h.base_offset
        )),
        Err(e) => Err(e.to_string()),
    })
}

fn write_all_vectored(mut file: &File, bufs: &[IoSlice<'_>]) -> io::Result<()> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut written = file.write_vectored(bufs)?;
    if written == total {
        return Ok(());
    }
    // Rare partial write: finish the rest slice by slice.
    let mut skip = written;
    for b in bufs {
        if skip >= b.len() {
            skip -= b.len();
            continue;
        }
        file.write_all(&b[skip..])?;
        written += b.len() - skip;
        skip = 0;
    }
    debug_assert_eq!(written, total);
    Ok(())
}
