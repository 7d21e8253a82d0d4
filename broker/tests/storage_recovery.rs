//! Recovery and bad-input tests for the storage engine: torn and corrupt tails, lost indexes, a full
//! disk, missing directories, group commit, rolling and retention by age and size, time lookups.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use common::*;
use quiver_broker::meta::MetaStore;
use quiver_broker::storage::{
    Durability, LogConfig, PartitionLog, StorageError, TopicConfig, TopicStore,
};

fn open(dir: &std::path::Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, Arc::new(|| 1_000)).unwrap()
}

/// Appends `batches` batches of 10 records and returns the log end after each.
fn fill(log: &PartitionLog, batches: u64) -> Vec<u64> {
    (0..batches)
        .map(|i| {
            log.append(
                &numbered(i * 10, 10, 50, 100 + i as i64),
                Durability::Leader,
            )
            .unwrap()
            .log_end
        })
        .collect()
}

#[test]
fn torn_tail_is_truncated_and_every_complete_batch_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let ends = fill(&open(&dir, small_config()), 5);
    let files = log_files(&dir);
    let active = files.last().unwrap();
    let len = fs::metadata(active).unwrap().len();
    // Cut into the middle of the last batch.
    OpenOptions::new()
        .write(true)
        .open(active)
        .unwrap()
        .set_len(len - 17)
        .unwrap();
    let log = open(&dir, small_config());
    assert_eq!(log.stats().log_end, ends[3]);
    let all = read_all(&log, 0);
    assert_eq!(all.len() as u64, ends[3]);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, r)| r.0 == i as u64 && r.2[..8] == (i as u64).to_le_bytes()));
    // The log accepts appends again right after the kept data.
    assert_eq!(
        log.append(&numbered(99, 1, 10, 1), Durability::All)
            .unwrap()
            .base_offset,
        ends[3]
    );
}

#[test]
fn corrupt_bytes_in_the_tail_are_cut_off() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let ends = fill(
        &open(
            &dir,
            LogConfig {
                index_interval_bytes: 1,
                ..small_config()
            },
        ),
        3,
    );
    let active = log_files(&dir).pop().unwrap();
    let len = fs::metadata(&active).unwrap().len();
    let mut f = OpenOptions::new().write(true).open(&active).unwrap();
    f.seek(SeekFrom::Start(len - 5)).unwrap();
    f.write_all(b"XXXXX").unwrap();
    // Garbage appended after the corrupt batch is dropped with it.
    f.seek(SeekFrom::End(0)).unwrap();
    f.write_all(&[0xAB; 100]).unwrap();
    drop(f);
    let log = open(&dir, small_config());
    assert_eq!(log.stats().log_end, ends[1]);
    assert_eq!(read_all(&log, 0).len() as u64, ends[1]);
    assert_eq!(fs::metadata(&active).unwrap().len(), log.stats().size_bytes);
}

#[test]
fn deleted_and_damaged_indexes_are_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let config = LogConfig {
        index_interval_bytes: 128,
        ..small_config()
    };
    let log = open(&dir, config);
    let ends = fill(&log, 40);
    log.flush().unwrap();
    let ts_lookup = log.offset_for_timestamp(120).unwrap();
    drop(log);
    let files = log_files(&dir);
    assert!(files.len() > 3, "several segments");
    // Delete the index of a sealed segment and of the active one; damage another sealed one's.
    fs::remove_file(files[0].with_extension("index")).unwrap();
    fs::remove_file(files[0].with_extension("timeindex")).unwrap();
    fs::remove_file(files.last().unwrap().with_extension("index")).unwrap();
    fs::write(files[1].with_extension("index"), b"garbage").unwrap();
    let log = open(&dir, config);
    assert_eq!(log.stats().log_end, *ends.last().unwrap());
    let all = read_all(&log, 0);
    assert_eq!(all.len() as u64, *ends.last().unwrap());
    assert_eq!(log.offset_for_timestamp(120).unwrap(), ts_lookup);
    for f in [&files[0], &files[1], files.last().unwrap()] {
        let idx = fs::metadata(f.with_extension("index")).unwrap().len();
        assert!(idx > 0 && idx % 8 == 0, "index of {} rebuilt", f.display());
    }
    // Reads from the middle use the rebuilt index.
    let mid = ends[20];
    assert_eq!(records_from(&log.read(mid, 100).unwrap(), mid)[0].0, mid);
}

#[test]
fn opening_does_not_read_sealed_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let ends = fill(&open(&dir, small_config()), 30);
    let files = log_files(&dir);
    // Corrupt the middle of the first sealed segment: opening must not notice (it never reads it),
    // while reading it reports the damage instead of returning bad records.
    let mut f = OpenOptions::new().write(true).open(&files[0]).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"NOTABATCH").unwrap();
    drop(f);
    let log = open(&dir, small_config());
    assert_eq!(log.stats().log_end, *ends.last().unwrap());
    let err = log.read(0, 1000).unwrap_err();
    assert!(
        err.to_string().contains(&files[0].display().to_string()),
        "the error names the segment: {err}"
    );
}

#[test]
fn concurrent_all_appends_share_fsyncs() {
    let tmp = tempfile::tempdir().unwrap();
    let log = Arc::new(open(&tmp.path().join("p"), LogConfig::default()));
    let before = log.fsync_count();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    log.append(&numbered(t * 1000 + i, 4, 100, 1), Durability::All)
                        .unwrap();
                }
            })
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
    let syncs = log.fsync_count() - before;
    assert_eq!(log.stats().log_end, 8 * 25 * 4);
    assert!(
        (1..200).contains(&syncs),
        "200 acks=all appends ran {syncs} fsyncs"
    );
}

#[test]
fn leader_appends_do_not_fsync() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(&tmp.path().join("p"), LogConfig::default());
    fill(&log, 10);
    assert_eq!(log.fsync_count(), 0);
}

#[test]
fn segments_roll_by_size_and_age_and_retention_deletes_old_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(1_000_000));
    let clock = now.clone();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        segment_ms: 60_000,
        retention_ms: Some(3_600_000),
        retention_bytes: None,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(
        &tmp.path().join("p"),
        config,
        Arc::new(move || clock.load(Ordering::SeqCst)),
    )
    .unwrap();
    // Three segments, each rolled by age, with record timestamps following the clock.
    for round in 0..3 {
        let t = now.load(Ordering::SeqCst);
        log.append(&numbered(round * 10, 10, 100, t), Durability::Leader)
            .unwrap();
        now.fetch_add(61_000, Ordering::SeqCst);
    }
    log.enforce_retention().unwrap();
    assert_eq!(
        log.stats().segments,
        4,
        "each aged segment rolled; a fresh active one waits"
    );
    // Two hours later every sealed segment has expired; the log keeps its end offset.
    now.fetch_add(7_200_000, Ordering::SeqCst);
    let out = log.enforce_retention().unwrap();
    assert_eq!(out.segments_deleted, 3);
    let s = log.stats();
    assert_eq!((s.log_start, s.log_end, s.segments), (30, 30, 1));
    assert!(matches!(
        log.read(0, 100),
        Err(StorageError::OffsetOutOfRange { log_start: 30, .. })
    ));
}

#[test]
fn retention_by_size_keeps_at_least_the_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(10_000),
        ..small_config()
    };
    let log = open(&tmp.path().join("p"), config);
    fill(&log, 60);
    let before = log.stats();
    let out = log.enforce_retention().unwrap();
    let after = log.stats();
    assert!(out.segments_deleted > 0);
    assert!(
        after.size_bytes >= 10_000 && after.size_bytes < 10_000 + 4096,
        "{after:?}"
    );
    assert_eq!(after.log_end, before.log_end);
    assert_eq!(
        read_all(&log, after.log_start).len() as u64,
        after.log_end - after.log_start
    );
}

#[test]
fn retention_releases_deleted_segments_in_leader_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        retention_bytes: Some(8_000),
        ..small_config()
    };
    let log = open(&tmp.path().join("p"), config);
    fill(&log, 60);
    assert!(
        log.unsynced_sealed() > 5,
        "leader appends leave sealed segments unsynced"
    );
    log.enforce_retention().unwrap();
    // Only segments that still exist may wait for an fsync; deleted ones are closed and freed.
    let (unsynced, segments) = (log.unsynced_sealed(), log.stats().segments);
    assert!(
        unsynced < segments,
        "{unsynced} unsynced, {segments} segments"
    );
}

#[test]
fn timestamp_lookup_finds_the_first_record_at_or_after() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(&tmp.path().join("p"), small_config());
    for i in 0..50i64 {
        log.append(
            &batch(&[b"a".to_vec(), b"b".to_vec()], &[i * 10, i * 10 + 5]),
            Durability::Leader,
        )
        .unwrap();
    }
    assert_eq!(log.offset_for_timestamp(i64::MIN).unwrap(), 0);
    assert_eq!(log.offset_for_timestamp(5).unwrap(), 1);
    assert_eq!(log.offset_for_timestamp(6).unwrap(), 2);
    assert_eq!(log.offset_for_timestamp(250).unwrap(), 50);
    assert_eq!(
        log.offset_for_timestamp(10_000).unwrap(),
        100,
        "past the newest record: the log end"
    );
}

#[test]
fn reads_out_of_range_and_oversized_batches_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(
        &tmp.path().join("p"),
        LogConfig {
            max_batch_bytes: 2048,
            ..small_config()
        },
    );
    fill(&log, 1);
    let err = log.read(11, 100).unwrap_err();
    assert!(
        err.to_string().contains("offset 11 is out of range"),
        "{err}"
    );
    assert!(
        log.read(10, 100).unwrap().bytes.is_empty(),
        "reading at the log end is empty, not an error"
    );
    let big = numbered(0, 10, 500, 0);
    let err = log.append(&big, Durability::Leader).unwrap_err();
    assert!(matches!(err, StorageError::BatchTooLarge { .. }), "{err}");
}

/// A real small filesystem: a 1 MiB tmpfs mounted for the test (the tests run as root here).
struct SmallFs {
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount() -> SmallFs {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        fs::create_dir(&path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root; the full-disk test cannot run without it"
        );
        SmallFs { path, _dir: dir }
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn a_full_disk_fails_the_append_and_loses_nothing() {
    let fs_ = SmallFs::mount();
    let dir = fs_.path.join("p");
    let config = LogConfig {
        segment_bytes: 8 << 20,
        max_batch_bytes: 8 << 20,
        ..LogConfig::default()
    };
    let log = open(&dir, config);
    let mut acked = 0u64;
    let err = loop {
        match log.append(&numbered(acked, 100, 1000, 5), Durability::All) {
            Ok(info) => acked = info.log_end,
            Err(e) => break e,
        }
    };
    assert!(err.is_disk_full(), "expected ENOSPC, got {err}");
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "the error names the file: {err}"
    );
    assert!(acked > 0);
    // The failed append left no partial batch: everything acknowledged reads back, before and after a restart.
    assert_eq!(read_all(&log, 0).len() as u64, acked);
    let small = log.append(&numbered(0, 1, 10, 5), Durability::All);
    let expect_end = acked + small.as_ref().map_or(0, |_| 1);
    drop(log);
    let log = open(&dir, config);
    assert_eq!(log.stats().log_end, expect_end);
    assert_eq!(read_all(&log, 0).len() as u64, expect_end);
}

#[test]
fn topics_persist_and_a_missing_partition_dir_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let open_store = || {
        TopicStore::open(
            tmp.path(),
            MetaStore::open(&tmp.path().join("meta")).unwrap(),
        )
        .unwrap()
    };
    {
        let store = open_store();
        store
            .create_topic(
                "orders",
                TopicConfig {
                    partitions: 3,
                    ..TopicConfig::default()
                },
            )
            .unwrap();
        store.create_topic("audit", TopicConfig::default()).unwrap();
        let err = store
            .create_topic("orders", TopicConfig::default())
            .unwrap_err();
        assert!(matches!(err, StorageError::TopicExists(_)));
        let err = store
            .create_topic("../etc", TopicConfig::default())
            .unwrap_err();
        assert!(err.to_string().contains("invalid topic name"), "{err}");
        store
            .partition("orders", 2)
            .unwrap()
            .append(&numbered(0, 3, 10, 1), Durability::All)
            .unwrap();
        assert!(store
            .partition("orders", 3)
            .unwrap_err()
            .to_string()
            .contains("no partition 3"));
        store.create_topic("gone", TopicConfig::default()).unwrap();
        store.delete_topic("gone").unwrap();
        assert!(matches!(
            store.get("gone"),
            Err(StorageError::UnknownTopic(_))
        ));
    }
    fs::remove_dir_all(tmp.path().join("topics/audit/0")).unwrap();
    let store = open_store();
    let names: Vec<String> = store.list().iter().map(|t| t.name.clone()).collect();
    assert_eq!(names, vec!["orders"]);
    assert_eq!(store.partition("orders", 2).unwrap().stats().log_end, 3);
    let err = store.get("audit").unwrap_err().to_string();
    assert!(
        err.contains("unavailable") && err.contains("audit/0"),
        "{err}"
    );
    // An operator can delete the broken topic and create it again.
    store.delete_topic("audit").unwrap();
    store.create_topic("audit", TopicConfig::default()).unwrap();
    let grown = store.add_partitions("orders", 5).unwrap();
    assert_eq!(grown.partitions().len(), 5);
}

/// A log whose active segment holds several indexed batches, the state a graceful stop records.
fn closed_log(dir: &std::path::Path, config: LogConfig) -> Vec<u64> {
    let log = open(dir, config);
    let ends = fill(&log, 6);
    log.close().unwrap();
    ends
}

fn big_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 1 << 20,
        index_interval_bytes: 128,
        ..small_config()
    }
}

#[test]
fn a_clean_stop_reopens_without_the_tail_scan_and_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let ends = closed_log(&dir, big_segments());
    let end = *ends.last().unwrap();
    assert!(dir.join("clean-shutdown").exists());
    // Flip a byte inside the last batch after the stop: a tail scan would cut that batch off, an
    // open that trusts the marker does not read it (this is how the test sees which path ran).
    let active = log_files(&dir).pop().unwrap();
    let len = fs::metadata(&active).unwrap().len();
    let mut f = OpenOptions::new().write(true).open(&active).unwrap();
    f.seek(SeekFrom::Start(len - 3)).unwrap();
    f.write_all(b"!").unwrap();
    drop(f);
    let log = open(&dir, big_segments());
    assert!(!dir.join("clean-shutdown").exists(), "the open consumes it");
    assert_eq!(log.stats().log_end, end, "the marker was trusted");
    assert_eq!(log.offset_for_timestamp(103).unwrap(), ends[2]);
    assert_eq!(
        records_from(&log.read(ends[3], 100).unwrap(), ends[3])[0].0,
        ends[3]
    );
    // Appends continue where the stop left off.
    let next = log
        .append(&numbered(0, 1, 10, 200), Durability::All)
        .unwrap();
    assert_eq!(next.base_offset, end);
    drop(log);
    // No marker now (the drop is a crash): the tail is scanned and the flipped batch found.
    let log = open(&dir, big_segments());
    assert_eq!(log.stats().log_end, ends[4]);
}

#[test]
fn a_marker_that_does_not_match_the_files_is_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    // The log was cut after the stop (a torn copy, a restore): the length no longer matches.
    let dir = tmp.path().join("cut");
    let ends = closed_log(&dir, big_segments());
    let active = log_files(&dir).pop().unwrap();
    let len = fs::metadata(&active).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&active)
        .unwrap()
        .set_len(len - 17)
        .unwrap();
    assert_eq!(open(&dir, big_segments()).stats().log_end, ends[4]);
    // The index lost entries (written, never fsync'd): the scan rebuilds it.
    let dir = tmp.path().join("index");
    let ends = closed_log(&dir, big_segments());
    let index = log_files(&dir).pop().unwrap().with_extension("index");
    let ilen = fs::metadata(&index).unwrap().len();
    assert!(ilen >= 16, "several index entries");
    OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(ilen - 8)
        .unwrap();
    let log = open(&dir, big_segments());
    assert_eq!(log.stats().log_end, *ends.last().unwrap());
    assert_eq!(fs::metadata(&index).unwrap().len(), ilen, "index rebuilt");
    // An index entry that is stale but plausible (in order, inside the log): only the index
    // checksum in the marker tells it from the one written at the stop.
    let dir = tmp.path().join("stale");
    let ends = closed_log(&dir, big_segments());
    let index = log_files(&dir).pop().unwrap().with_extension("index");
    let good = fs::read(&index).unwrap();
    let mut stale = good.clone();
    let last = stale.len() - 4;
    let position = u32::from_le_bytes(stale[last..].try_into().unwrap());
    stale[last..].copy_from_slice(&(position - 1).to_le_bytes());
    fs::write(&index, &stale).unwrap();
    let log = open(&dir, big_segments());
    assert_eq!(log.stats().log_end, *ends.last().unwrap());
    assert_eq!(
        fs::read(&index).unwrap(),
        good,
        "the scan rebuilt the index"
    );
    // A damaged marker is ignored and removed.
    let dir = tmp.path().join("damaged");
    let ends = closed_log(&dir, big_segments());
    fs::write(dir.join("clean-shutdown"), b"QVCLEAN1 not a marker").unwrap();
    assert_eq!(
        open(&dir, big_segments()).stats().log_end,
        *ends.last().unwrap()
    );
    assert!(!dir.join("clean-shutdown").exists());
}

#[test]
fn a_marker_outlived_by_appends_and_a_roll_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let config = small_config();
    let log = open(&dir, config);
    fill(&log, 3);
    log.close().unwrap();
    // A stale marker (say its removal was lost in a crash) for a log that grew and rolled since.
    let stale = fs::read(dir.join("clean-shutdown")).unwrap();
    let ends = fill(&log, 30);
    drop(log);
    fs::write(dir.join("clean-shutdown"), stale).unwrap();
    let log = open(&dir, config);
    assert_eq!(log.stats().log_end, *ends.last().unwrap());
    assert_eq!(read_all(&log, 0).len() as u64, *ends.last().unwrap());
}

#[test]
fn a_replica_cuts_its_log_back_and_appends_after_the_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p");
    let log = open(&dir, small_config());
    // Several segments of 10-record batches.
    let ends = fill(&log, 40);
    assert!(log.stats().segments > 2, "{:?}", log.stats());
    // Cut inside a sealed segment: later segments go, the offsets continue from the cut.
    log.truncate_to(ends[12]).unwrap();
    assert_eq!(log.stats().log_end, ends[12]);
    assert_eq!(read_all(&log, 0).len() as u64, ends[12]);
    let info = log
        .append(&numbered(7, 10, 50, 1), Durability::All)
        .unwrap();
    assert_eq!(info.base_offset, ends[12]);
    // A cut survives a restart, with its indexes.
    drop(log);
    let log = open(&dir, small_config());
    assert_eq!(log.stats().log_end, ends[12] + 10);
    let all = read_all(&log, 0);
    assert_eq!(all.len() as u64, ends[12] + 10);
    assert!(all.iter().enumerate().all(|(i, r)| r.0 == i as u64));
    // Inside a batch, the whole batch goes; past the end nothing happens.
    log.truncate_to(ends[3] + 4).unwrap();
    assert_eq!(log.stats().log_end, ends[3]);
    log.truncate_to(ends[3] + 100).unwrap();
    assert_eq!(log.stats().log_end, ends[3]);
    // To zero, and a restart at a later offset (a leader that no longer keeps the start).
    log.truncate_to(0).unwrap();
    assert_eq!(log.stats().log_end, 0);
    log.restart_at(500).unwrap();
    assert_eq!((log.stats().log_start, log.stats().log_end), (500, 500));
    let info = log
        .append(&numbered(0, 10, 50, 1), Durability::All)
        .unwrap();
    assert_eq!(info.base_offset, 500);
}

#[test]
fn readers_stop_at_the_high_watermark_and_followers_refuse_appends() {
    let tmp = tempfile::tempdir().unwrap();
    let log = open(&tmp.path().join("p"), small_config());
    let ends = fill(&log, 5);
    log.set_high_watermark(Some(ends[1]));
    assert_eq!(log.visible_end(), ends[1]);
    assert_eq!(*log.subscribe_end().borrow(), ends[4].max(ends[1]));
    let all = read_all(&log, 0);
    assert_eq!(all.len() as u64, ends[1]);
    // At the watermark (inside the log) a reader waits; the raw read sees everything.
    let at = log.read(ends[1], 1 << 20).unwrap();
    assert!(at.bytes.is_empty());
    assert_eq!(at.log_end, ends[1]);
    assert!(!log.read_raw(ends[1], 1 << 20).unwrap().bytes.is_empty());
    log.set_high_watermark(None);
    assert_eq!(read_all(&log, 0).len() as u64, ends[4]);
    // A follower's log takes only its leader's batches.
    log.set_follower(true);
    let err = log
        .append(&numbered(0, 1, 10, 1), Durability::Leader)
        .unwrap_err();
    assert_eq!(err.code(), quiver_proto::ErrorCode::NotLeader);
    let batch = numbered(0, 1, 10, 1);
    // Only where the leader has it.
    assert!(log
        .append_as_replica(&batch, ends[4] + 1, Durability::Leader)
        .is_err());
    assert_eq!(
        log.append_as_replica(&batch, ends[4], Durability::Leader)
            .unwrap()
            .base_offset,
        ends[4]
    );
    // About the last 3 batches' bytes begin at a batch start near the end.
    let near = log.offset_near_end(3 * 600).unwrap();
    assert!(near > 0 && near < ends[4], "{near}");
}
