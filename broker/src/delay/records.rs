//! What the delay log holds, and how records move in and out of it: due times read from the
//! producer's headers, held runs annotated with their destination, control records (delivery
//! intents, undos, cancels) and the delivered form of a held record.

use bytes::Bytes;
use quiver_proto::batch::{self, Batch, BatchBuilder, RecordData, RecordRef};
use serde::{Deserialize, Serialize};

use super::DelayError;

/// Destination topic of a held record.
pub const TOPIC_HEADER: &str = "quiver-delay-topic";
/// Destination partition of a held record.
pub const PARTITION_HEADER: &str = "quiver-delay-partition";
/// Due time of a held record (ms since the epoch).
pub const DUE_HEADER: &str = "quiver-delay-due";
/// On a delivered record: its delay id (the id the produce answered with).
pub const ID_HEADER: &str = "quiver-delay-id";
/// Marks a control record of the delay log; the value says which kind.
const CONTROL_HEADER: &str = "quiver-delay-control";

/// A control record of the delay log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Control {
    /// A delivery round is about to append these held runs: once the next control record is
    /// written, they were delivered; the last intent of the log is checked against the
    /// destinations on restart.
    Intent(Vec<Destination>),
    /// A round failed: these held runs are pending again, with these ids cancelled.
    Undo { runs: Vec<u64>, cancelled: Vec<u64> },
    /// The last intent's round finished.
    Done,
    /// The record with this id is not to be delivered.
    Cancel(u64),
    /// The topic was deleted: its pending runs (all held before this record) are dropped.
    Purge(String),
}

/// One destination partition of a delivery round and the held runs it receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub topic: String,
    pub partition: u32,
    /// The partition's log end before the round's append: the delivered batch is at or after it.
    pub end: u64,
    /// The base ids of the held runs delivered there, in due order.
    pub runs: Vec<u64>,
}

/// Where and when a held run goes, as read back from the delay log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub topic: String,
    pub partition: u32,
    pub due: i64,
}

/// What a batch of the delay log is.
#[derive(Debug)]
pub enum Entry {
    Held(RunInfo),
    Control(Control),
}

/// Longest delay accepted: a year. Held records pin the delay log until delivered, so a due time
/// in the far future (by mistake, or `i64::MAX`) is refused rather than kept forever.
pub const MAX_DELAY_MS: i64 = 366 * 86_400_000;

/// The due time each record asks for (`None`: not delayed). `now` is when the broker received it.
pub fn due_times(batch: &Batch, now: i64) -> Result<Vec<Option<i64>>, DelayError> {
    batch
        .records()
        .map(|r| {
            let mut due = None;
            for (name, value) in r.headers() {
                let at = if name == batch::DELIVER_AT_HEADER {
                    parse_ms(name, value)?
                } else if name == batch::DELAY_MS_HEADER {
                    now.saturating_add(parse_ms(name, value)?)
                } else {
                    continue;
                };
                if at > now.saturating_add(MAX_DELAY_MS) {
                    return Err(DelayError::TooFar {
                        name: name.to_owned(),
                        due: at,
                    });
                }
                due = Some(at);
            }
            Ok(due)
        })
        .collect()
}

fn parse_ms(name: &str, value: &[u8]) -> Result<i64, DelayError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|ms| *ms >= 0)
        .ok_or_else(|| DelayError::BadHeader {
            name: name.to_owned(),
            value: String::from_utf8_lossy(&value[..value.len().min(64)]).into_owned(),
        })
}

/// Encodes records `indexes` of `batch` as one held run bound for `topic`/`partition` at `due`.
/// Headers with the delay store's own names are dropped from the records first: a producer must
/// not be able to steer the store (or make its log unreadable) through them.
pub fn held_run(batch: &Batch, indexes: &[usize], info: &RunInfo) -> Result<Batch, DelayError> {
    let partition = info.partition.to_string();
    let due = info.due.to_string();
    let ours = [
        (TOPIC_HEADER, info.topic.as_bytes()),
        (PARTITION_HEADER, partition.as_bytes()),
        (DUE_HEADER, due.as_bytes()),
    ];
    let mut out = BatchBuilder::with_capacity(batch.bytes().len() + 64 * indexes.len())
        .base_timestamp(batch.header().base_timestamp);
    let mut want = indexes.iter().peekable();
    for (i, r) in batch.records().enumerate() {
        if want.next_if(|&&j| j == i).is_none() {
            continue;
        }
        copy_record(&mut out, &r, &ours)?;
    }
    Ok(Batch::parse_trusted(out.finish()?)?)
}

/// Header names the delay store owns: never taken from a producer, never left on a delivered
/// record except its id and due time.
fn is_reserved(name: &str) -> bool {
    name.starts_with("quiver-delay-") || batch::is_delay_header(name)
}

/// Adds `r` to `out` without reserved headers, plus `extra`.
fn copy_record(
    out: &mut BatchBuilder,
    r: &RecordRef<'_>,
    extra: &[(&str, &[u8])],
) -> Result<(), DelayError> {
    let mut headers: Vec<(&str, &[u8])> = Vec::with_capacity(r.headers().count() + extra.len());
    headers.extend(r.headers().filter(|(n, _)| !is_reserved(n)));
    headers.extend_from_slice(extra);
    let tags: Vec<&str> = r.tags().collect();
    out.push(&RecordData {
        timestamp: r.timestamp,
        key: r.key,
        value: r.value,
        headers: &headers,
        tags: &tags,
    })?;
    Ok(())
}

/// Encodes a control record.
pub fn control(c: &Control, now: i64) -> Result<Batch, DelayError> {
    let value = rmp_serde::to_vec(c).map_err(|e| DelayError::Encode(e.to_string()))?;
    let kind: &[u8] = match c {
        Control::Intent(_) => b"intent",
        Control::Undo { .. } => b"undo",
        Control::Done => b"done",
        Control::Cancel(_) => b"cancel",
        Control::Purge(_) => b"purge",
    };
    let mut b = BatchBuilder::with_capacity(value.len() + 128);
    b.push(&RecordData {
        timestamp: now,
        key: None,
        value: &value,
        headers: &[(CONTROL_HEADER, kind)],
        tags: &[],
    })?;
    Ok(Batch::parse_trusted(b.finish()?)?)
}

/// Reads what a delay-log batch is from its first record.
pub fn entry(batch: &Batch) -> Result<Entry, DelayError> {
    let first = batch
        .records()
        .next()
        .ok_or(DelayError::Internal("an empty delay-log batch"))?;
    if first.header(CONTROL_HEADER).is_some() {
        let c = rmp_serde::from_slice(first.value)
            .map_err(|e| DelayError::Encode(format!("a control record: {e}")))?;
        return Ok(Entry::Control(c));
    }
    Ok(Entry::Held(run_info(&first)?))
}

fn run_info(r: &RecordRef<'_>) -> Result<RunInfo, DelayError> {
    let text = |name: &'static str| {
        r.header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or(DelayError::Corrupt(name))
    };
    Ok(RunInfo {
        topic: text(TOPIC_HEADER)?.to_owned(),
        partition: text(PARTITION_HEADER)?
            .parse()
            .map_err(|_| DelayError::Corrupt(PARTITION_HEADER))?,
        due: text(DUE_HEADER)?
            .parse()
            .map_err(|_| DelayError::Corrupt(DUE_HEADER))?,
    })
}

/// Adds the records of a held run, minus the `cancelled` ids, to `out` as delivered: without the
/// delay headers (re-producing a delivered record must not delay it again), with their id in
/// [`ID_HEADER`] (its offset plus `id_base`, the id its producer was given) and their due time
/// in [`DUE_HEADER`]. Returns how many were added.
pub fn deliver_into(
    out: &mut BatchBuilder,
    run: &Batch,
    cancelled: &[u64],
    id_base: u64,
) -> Result<u32, DelayError> {
    let mut added = 0;
    for r in run.records() {
        if cancelled.contains(&r.offset) {
            continue;
        }
        let id = (r.offset + id_base).to_string();
        let due = r.header(DUE_HEADER).unwrap_or_default();
        copy_record(out, &r, &[(ID_HEADER, id.as_bytes()), (DUE_HEADER, due)])?;
        added += 1;
    }
    Ok(added)
}

/// The delay id a delivered batch starts with, if it is one.
pub fn delivered_id(batch: &Batch) -> Option<u64> {
    let first = batch.records().next()?;
    std::str::from_utf8(first.header(ID_HEADER)?)
        .ok()?
        .parse()
        .ok()
}

/// Adds a `quiver-deliver-at` header to the records that `delays` (ms, one per record) hold
/// back: the output of a scheduler plugin. `None` when no record is delayed (then the batch goes
/// on unchanged, producer delays included).
pub fn schedule(batch: &Batch, delays: &[u64], now: i64) -> Result<Option<Bytes>, DelayError> {
    if delays.iter().all(|&d| d == 0) {
        return Ok(None);
    }
    let mut out = BatchBuilder::with_capacity(batch.bytes().len() + 32 * delays.len())
        .base_timestamp(batch.header().base_timestamp);
    for (r, &delay) in batch.records().zip(delays) {
        // A plugin cannot hold a record longer than a producer could.
        let at = now
            .saturating_add(delay.min(MAX_DELAY_MS as u64) as i64)
            .to_string();
        let due: &[(&str, &[u8])] = if delay > 0 {
            &[(batch::DELIVER_AT_HEADER, at.as_bytes())]
        } else {
            &[]
        };
        // The plugin's answer replaces any delay the producer asked for.
        copy_record(&mut out, &r, due)?;
    }
    Ok(Some(out.finish()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(headers: &[&[(&str, &[u8])]]) -> Batch {
        let mut b = BatchBuilder::new();
        for (i, h) in headers.iter().enumerate() {
            let v = format!("v{i}");
            b.push(&RecordData {
                timestamp: 1000 + i as i64,
                key: None,
                value: v.as_bytes(),
                headers: h,
                tags: &["t"],
            })
            .unwrap();
        }
        Batch::parse(b.finish().unwrap()).unwrap()
    }

    #[test]
    fn due_times_come_from_either_header() {
        let b = batch(&[
            &[(batch::DELAY_MS_HEADER, b"500")],
            &[],
            &[(batch::DELIVER_AT_HEADER, b"123456")],
        ]);
        assert_ne!(b.header().flags & batch::FLAG_DELAYED, 0);
        assert_eq!(
            due_times(&b, 10_000).unwrap(),
            vec![Some(10_500), None, Some(123_456)]
        );
        let bad = batch(&[&[(batch::DELAY_MS_HEADER, b"soon")]]);
        assert!(matches!(
            due_times(&bad, 0),
            Err(DelayError::BadHeader { .. })
        ));
        let negative = batch(&[&[(batch::DELIVER_AT_HEADER, b"-5")]]);
        assert!(due_times(&negative, 0).is_err());
        let never = batch(&[&[(batch::DELIVER_AT_HEADER, b"9223372036854775807")]]);
        assert!(matches!(
            due_times(&never, 0),
            Err(DelayError::TooFar { .. })
        ));
    }

    #[test]
    fn a_held_run_reads_back_and_delivers_without_internal_headers() {
        let b = batch(&[
            &[
                ("a", b"1"),
                (CONTROL_HEADER, b"x"),
                (TOPIC_HEADER, b"elsewhere"),
            ],
            &[("b", b"2")],
            &[
                ("c", b"3"),
                (batch::DELAY_MS_HEADER, b"5"),
                (ID_HEADER, b"7"),
            ],
        ]);
        let info = RunInfo {
            topic: "orders".into(),
            partition: 3,
            due: 99,
        };
        let run = held_run(&b, &[0, 2], &info).unwrap();
        assert_eq!(run.record_count(), 2);
        match entry(&run).unwrap() {
            Entry::Held(got) => assert_eq!(got, info),
            other => panic!("{other:?}"),
        }
        let mut out = BatchBuilder::new();
        // Offsets of a freshly built run are 0 and 1: cancel the second.
        assert_eq!(deliver_into(&mut out, &run, &[1], 0).unwrap(), 1);
        let delivered = Batch::parse(out.finish().unwrap()).unwrap();
        let r = delivered.records().next().unwrap();
        assert_eq!(r.value, b"v0");
        assert_eq!(r.header("a"), Some(&b"1"[..]));
        assert_eq!(r.header(TOPIC_HEADER), None);
        assert_eq!(
            r.header(CONTROL_HEADER),
            None,
            "a producer's copy is dropped"
        );
        assert_eq!(r.header(DUE_HEADER), Some(&b"99"[..]));
        assert_eq!(
            delivered.header().flags & batch::FLAG_DELAYED,
            0,
            "not delayed again"
        );
        assert!(r.has_tag("t"));
        assert_eq!(delivered_id(&delivered), Some(0));
    }

    #[test]
    fn control_records_round_trip() {
        let c = Control::Intent(vec![Destination {
            topic: "t".into(),
            partition: 1,
            end: 42,
            runs: vec![7, 9],
        }]);
        match entry(&control(&c, 5).unwrap()).unwrap() {
            Entry::Control(got) => assert_eq!(got, c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_schedule_marks_only_delayed_records() {
        let b = batch(&[&[], &[(batch::DELAY_MS_HEADER, b"1")]]);
        assert!(schedule(&b, &[0, 0], 0).unwrap().is_none());
        let out = Batch::parse(schedule(&b, &[0, 250], 1000).unwrap().unwrap()).unwrap();
        let dues = due_times(&out, 1000).unwrap();
        assert_eq!(dues, vec![None, Some(1250)]);
    }

    /// Regression (fuzz targets `batch` and `plugin_output`): a valid batch whose records are
    /// each within ±24 days of its base timestamp but further apart from each other is re-encoded
    /// with that base, not its first record's (which failed with a timestamp-span error).
    #[test]
    fn records_far_apart_in_time_are_scheduled_and_held() {
        let mut b = BatchBuilder::new().base_timestamp(0);
        for timestamp in [i32::MAX as i64, i32::MIN as i64] {
            b.push(&RecordData {
                timestamp,
                value: b"v",
                ..Default::default()
            })
            .unwrap();
        }
        let b = Batch::parse(b.finish().unwrap()).unwrap();
        let out = Batch::parse(schedule(&b, &[0, 250], 1000).unwrap().unwrap()).unwrap();
        let ts: Vec<i64> = out.records().map(|r| r.timestamp).collect();
        assert_eq!(ts, [i32::MAX as i64, i32::MIN as i64]);
        let info = RunInfo {
            topic: "t".into(),
            partition: 0,
            due: 5,
        };
        let held = held_run(&b, &[0, 1], &info).unwrap();
        assert_eq!(held.record_count(), 2);
    }
}
