//! Helpers shared by the storage integration tests: building batches and reading records back.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use bytes::Bytes;
use quiver_broker::storage::{LogConfig, PartitionLog, ReadResult};
use quiver_proto::{Batch, BatchBuilder, Batches, RecordData};

/// A batch of records with the given values and timestamps.
pub fn batch(values: &[Vec<u8>], timestamps: &[i64]) -> Batch {
    let mut b = BatchBuilder::new();
    for (v, ts) in values.iter().zip(timestamps) {
        b.push(&RecordData {
            timestamp: *ts,
            value: v,
            tags: &["t"],
            ..Default::default()
        })
        .unwrap();
    }
    Batch::parse(b.finish().unwrap()).unwrap()
}

/// A batch of `n` records of `size` bytes whose values encode `first + i`.
pub fn numbered(first: u64, n: usize, size: usize, ts: i64) -> Batch {
    let values: Vec<Vec<u8>> = (0..n as u64).map(|i| value_for(first + i, size)).collect();
    batch(&values, &vec![ts; n])
}

pub fn value_for(id: u64, size: usize) -> Vec<u8> {
    let mut v = id.to_le_bytes().to_vec();
    v.resize(size.max(8), b'x');
    v
}

/// (offset, timestamp, value) of every record in a read result at or after `from`.
pub fn records_from(res: &ReadResult, from: u64) -> Vec<(u64, i64, Bytes)> {
    let mut out = Vec::new();
    for b in Batches::new(res.bytes.clone()) {
        let b = b.expect("log returned an invalid batch");
        for r in b.records().filter(|r| r.offset >= from) {
            out.push((r.offset, r.timestamp, Bytes::copy_from_slice(r.value)));
        }
    }
    out
}

/// Reads everything from `from` to the log end.
pub fn read_all(log: &PartitionLog, from: u64) -> Vec<(u64, i64, Bytes)> {
    let mut out = Vec::new();
    let mut at = from;
    loop {
        let res = log.read(at, 64 * 1024).unwrap();
        let recs = records_from(&res, at);
        match recs.last() {
            Some(last) => at = last.0 + 1,
            None => return out,
        }
        out.extend(recs);
    }
}

pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// Segment log files in a partition directory, sorted by base offset.
pub fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}
