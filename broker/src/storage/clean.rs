//! The clean-shutdown marker of a partition: what a graceful stop verified about the active segment,
//! so the next open can trust it instead of scanning and checksumming its tail (as Kafka's
//! `.kafka_cleanshutdown`). Only a crash then pays for the tail recovery.
//!
//! Safety rests on three facts. The marker is written after the log was fsync'd, so what it describes
//! is on disk before it. It names the active segment's base and exact length: any later append, roll
//! or cut changes one of them, and a log that only lost appends after a crash is back to exactly the
//! content the marker describes. And an open consumes it (reads, then removes it), so it speaks of one
//! shutdown only. A marker that is torn, damaged or from another format fails its CRC and is ignored.
//! It is never fsync'd itself: losing it costs one tail scan, nothing else.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

const FILE_NAME: &str = "clean-shutdown";
const MAGIC: &[u8; 8] = b"QVCLEAN1";
const LEN: usize = 8 + 7 * 8 + 4;

/// The active segment as a graceful stop left it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CleanMark {
    pub base: u64,
    pub size: u64,
    pub next_offset: u64,
    pub max_ts: i64,
    /// Entries in the offset and time index files: fewer on disk means they were not all written.
    pub offset_entries: u64,
    pub time_entries: u64,
    /// [`SegmentIndex::crc`](super::index::SegmentIndex::crc) of the index as it was written: the
    /// index files are not fsync'd, so after a power loss they may hold stale or zeroed entries.
    pub index_crc: u32,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

impl CleanMark {
    fn encode(&self) -> [u8; LEN] {
        let mut out = [0u8; LEN];
        out[..8].copy_from_slice(MAGIC);
        let fields = [
            self.base,
            self.size,
            self.next_offset,
            self.max_ts as u64,
            self.offset_entries,
            self.time_entries,
            u64::from(self.index_crc),
        ];
        for (i, v) in fields.iter().enumerate() {
            out[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out[..LEN - 4]);
        out[LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(raw: &[u8]) -> Option<CleanMark> {
        if raw.len() != LEN || &raw[..8] != MAGIC {
            return None;
        }
        let (body, crc) = raw.split_at(LEN - 4);
        if crc32c::crc32c(body).to_le_bytes() != crc {
            return None;
        }
        let field = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&raw[8 + i * 8..16 + i * 8]);
            u64::from_le_bytes(b)
        };
        Some(CleanMark {
            base: field(0),
            size: field(1),
            next_offset: field(2),
            max_ts: field(3) as i64,
            offset_entries: field(4),
            time_entries: field(5),
            index_crc: u32::try_from(field(6)).ok()?,
        })
    }

    /// Writes the marker into the partition directory `dir` (after the log's fsync).
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        fs::write(path(dir), self.encode())
    }

    /// Reads and removes the marker of `dir`. `None` when there is none or it is not valid; a
    /// marker that cannot be removed is not trusted either (it would outlive this open).
    pub fn take(dir: &Path) -> Option<CleanMark> {
        // At most one byte more than a marker: a huge file there is not read into memory.
        let read = fs::File::open(path(dir)).and_then(|f| {
            let mut raw = Vec::with_capacity(LEN + 1);
            f.take(LEN as u64 + 1).read_to_end(&mut raw)?;
            Ok(raw)
        });
        let raw = match read {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "clean-shutdown marker unreadable");
                return None;
            }
        };
        if let Err(e) = fs::remove_file(path(dir)) {
            tracing::warn!(dir = %dir.display(), error = %e, "clean-shutdown marker not removed");
            return None;
        }
        let mark = CleanMark::decode(&raw);
        if mark.is_none() {
            tracing::warn!(dir = %dir.display(), "clean-shutdown marker is damaged; scanning the tail");
        }
        mark
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark() -> CleanMark {
        CleanMark {
            base: 7,
            size: 4096,
            next_offset: 99,
            max_ts: -5,
            offset_entries: 3,
            time_entries: 2,
            index_crc: 0xDEAD_BEEF,
        }
    }

    #[test]
    fn round_trip_consumes_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        mark().write(dir.path()).unwrap();
        assert_eq!(CleanMark::take(dir.path()), Some(mark()));
        assert_eq!(CleanMark::take(dir.path()), None, "an open consumes it");
    }

    #[test]
    fn any_damaged_byte_is_rejected() {
        let good = mark().encode();
        for i in 0..LEN {
            let mut bad = good;
            bad[i] ^= 0x10;
            assert_eq!(CleanMark::decode(&bad), None, "byte {i}");
        }
        assert_eq!(CleanMark::decode(&good[..LEN - 1]), None);
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path()), &good[..20]).unwrap();
        assert_eq!(CleanMark::take(dir.path()), None);
        assert!(
            !path(dir.path()).exists(),
            "a damaged marker is removed too"
        );
    }
}
