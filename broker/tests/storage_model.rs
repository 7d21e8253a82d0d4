//! Model test: random appends, reads, rolls, retention passes, time lookups, torn-tail crashes and
//! restarts run against a real partition on disk and an in-memory reference; both must agree.

mod common;

use std::fs::OpenOptions;
use std::sync::Arc;

use common::*;
use proptest::prelude::*;
use quiver_broker::storage::{Durability, LogConfig, PartitionLog};

#[derive(Debug, Clone)]
enum Op {
    Append {
        n: usize,
        size: usize,
        ts: i64,
        sync: bool,
    },
    Read {
        at: prop::sample::Index,
        max_bytes: usize,
    },
    Roll,
    Retention,
    TimeLookup(i64),
    Restart,
    /// Cut the last `cut` bytes of the newest batch, as a crash mid-write would, then restart.
    TornTail {
        cut: prop::sample::Index,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..20, 1usize..300, 0i64..1000, any::<bool>()).prop_map(|(n, size, ts, sync)| Op::Append { n, size, ts, sync }),
        4 => (any::<prop::sample::Index>(), 1usize..5000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => Just(Op::Roll),
        1 => Just(Op::Retention),
        2 => (0i64..1100).prop_map(Op::TimeLookup),
        1 => Just(Op::Restart),
        1 => any::<prop::sample::Index>().prop_map(|cut| Op::TornTail { cut }),
    ]
}

struct Model {
    /// (offset, timestamp, value) of every retained record.
    records: Vec<(u64, i64, Vec<u8>)>,
    log_start: u64,
    log_end: u64,
    /// (base offset, byte length) of the newest batch, while it is in the active segment.
    last_batch: Option<(u64, u64)>,
}

fn config() -> LogConfig {
    LogConfig {
        retention_bytes: Some(12_000),
        ..small_config()
    }
}

fn open(dir: &std::path::Path) -> PartitionLog {
    PartitionLog::open(dir, config(), Arc::new(|| 1_000_000)).unwrap()
}

fn run(ops: Vec<Op>) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p0");
    let mut log = open(&dir);
    let mut m = Model {
        records: Vec::new(),
        log_start: 0,
        log_end: 0,
        last_batch: None,
    };
    let mut next_id = 0u64;
    for op in ops {
        match op {
            Op::Append { n, size, ts, sync } => {
                let timestamps: Vec<i64> = (0..n as i64).map(|i| ts + (i * 7) % 13).collect();
                let values: Vec<Vec<u8>> = (0..n as u64)
                    .map(|i| value_for(next_id + i, size))
                    .collect();
                next_id += n as u64;
                let b = batch(&values, &timestamps);
                let info = log
                    .append(
                        &b,
                        if sync {
                            Durability::All
                        } else {
                            Durability::Leader
                        },
                    )
                    .unwrap();
                assert_eq!(info.base_offset, m.log_end);
                for (i, v) in values.into_iter().enumerate() {
                    m.records.push((m.log_end + i as u64, timestamps[i], v));
                }
                m.log_end += n as u64;
                assert_eq!(info.log_end, m.log_end);
                // An append always lands in the active segment (after a roll, if one was due).
                m.last_batch = Some((info.base_offset, b.bytes().len() as u64));
            }
            Op::Read { at, max_bytes } => {
                let span = (m.log_end - m.log_start + 1) as usize;
                let offset = m.log_start + at.index(span) as u64;
                let res = log.read(offset, max_bytes).unwrap();
                assert_eq!((res.log_start, res.log_end), (m.log_start, m.log_end));
                let got = records_from(&res, offset);
                if offset < m.log_end {
                    assert!(
                        !got.is_empty(),
                        "a read below the log end returns at least one record"
                    );
                }
                let first = (offset - m.log_start) as usize;
                for (g, want) in got.iter().zip(&m.records[first..]) {
                    assert_eq!((g.0, g.1, &g.2[..]), (want.0, want.1, &want.2[..]));
                }
                assert!(got.len() <= m.records.len() - first);
            }
            Op::Roll => {
                log.force_roll().unwrap();
                m.last_batch = None;
            }
            Op::Retention => {
                let before = log.stats();
                let out = log.enforce_retention().unwrap();
                let after = log.stats();
                assert!(after.log_start >= before.log_start && after.log_start <= after.log_end);
                if out.segments_deleted > 0 {
                    assert!(
                        after.size_bytes >= 12_000,
                        "retention keeps at least retention_bytes"
                    );
                }
                assert_eq!(after.size_bytes + out.bytes_deleted, before.size_bytes);
                m.records.retain(|r| r.0 >= after.log_start);
                m.log_start = after.log_start;
            }
            Op::TimeLookup(ts) => {
                let want = m
                    .records
                    .iter()
                    .find(|r| r.1 >= ts)
                    .map_or(m.log_end, |r| r.0);
                assert_eq!(
                    log.offset_for_timestamp(ts).unwrap(),
                    want,
                    "lookup of timestamp {ts}"
                );
            }
            Op::Restart => {
                drop(log);
                log = open(&dir);
                let s = log.stats();
                assert_eq!((s.log_start, s.log_end), (m.log_start, m.log_end));
            }
            Op::TornTail { cut } => {
                let Some((base, len)) = m.last_batch.take() else {
                    continue;
                };
                drop(log);
                let files = log_files(&dir);
                let active = files.last().unwrap();
                let size = std::fs::metadata(active).unwrap().len();
                let cut = 1 + cut.index(len as usize) as u64;
                OpenOptions::new()
                    .write(true)
                    .open(active)
                    .unwrap()
                    .set_len(size - cut)
                    .unwrap();
                log = open(&dir);
                m.records.retain(|r| r.0 < base);
                m.log_end = base;
                let s = log.stats();
                assert_eq!(
                    (s.log_start, s.log_end),
                    (m.log_start, m.log_end),
                    "torn batch dropped, the rest kept"
                );
            }
        }
    }
    let all = read_all(&log, m.log_start);
    assert_eq!(all.len(), m.records.len());
    for (g, want) in all.iter().zip(&m.records) {
        assert_eq!((g.0, g.1, &g.2[..]), (want.0, want.1, &want.2[..]));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn partition_agrees_with_model(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops);
    }
}
