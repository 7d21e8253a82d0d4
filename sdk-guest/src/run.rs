//! The batch loops behind the plugin macros, as plain functions: bytes in, verdicts, a new batch,
//! routes or delays out. They never panic on bad input: a malformed batch or a failing record becomes an `SdkError`,
//! which the macros turn into the WIT `result`'s error string (the host then applies the
//! attachment's error policy to the whole batch).

use std::fmt::Display;

use quiver_proto::batch::CheckedRecords;

use crate::{Destinations, Output, Record, Routes, SdkError};

/// What a filter function may return for one record: `bool`, or `Result<bool, E>` to fail the batch.
pub trait FilterVerdict {
    fn into_verdict(self) -> Result<bool, String>;
}

impl FilterVerdict for bool {
    fn into_verdict(self) -> Result<bool, String> {
        Ok(self)
    }
}

impl<E: Display> FilterVerdict for Result<bool, E> {
    fn into_verdict(self) -> Result<bool, String> {
        self.map_err(|e| e.to_string())
    }
}

/// What a transform function may return for one record: `()`, or `Result<(), E>` to fail the batch.
pub trait TransformOutcome {
    fn into_outcome(self) -> Result<(), String>;
}

impl TransformOutcome for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> TransformOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// What a router function may return for one record: `()`, or `Result<(), E>` to fail the batch.
pub trait RouteOutcome {
    fn into_outcome(self) -> Result<(), String>;
}

impl RouteOutcome for () {
    fn into_outcome(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> RouteOutcome for Result<(), E> {
    fn into_outcome(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// What a scheduler function may return for one record: the delay in milliseconds as `u64`
/// (0 = deliver now), or `Result<u64, E>` to fail the batch.
pub trait ScheduleDelay {
    fn into_delay(self) -> Result<u64, String>;
}

impl ScheduleDelay for u64 {
    fn into_delay(self) -> Result<u64, String> {
        Ok(self)
    }
}

impl<E: Display> ScheduleDelay for Result<u64, E> {
    fn into_delay(self) -> Result<u64, String> {
        self.map_err(|e| e.to_string())
    }
}

/// The records of `batch`, checked one by one as they are read (a malformed batch fails at the
/// first bad record). The CRC is skipped: the broker verified it before the call, and in wasm (no
/// CRC instruction) it would cost more than most filters; one pass instead of validate-then-read
/// halves the parsing.
fn parse(batch: &[u8]) -> Result<CheckedRecords<'_>, SdkError> {
    CheckedRecords::new(batch).map_err(SdkError::BadBatch)
}

/// Runs `keep` over every record of `batch`: one verdict per record, in batch order.
pub fn filter_batch<F, V>(batch: Vec<u8>, mut keep: F) -> Result<Vec<bool>, SdkError>
where
    F: FnMut(&Record<'_>) -> V,
    V: FilterVerdict,
{
    let records = parse(&batch)?;
    // Bounded: `record_count` records of at least their fixed fields fit in the batch's length.
    let count = (records.header().record_count as usize).min(batch.len());
    let mut verdicts = Vec::with_capacity(count);
    for record in records {
        let record = record.map_err(SdkError::BadBatch)?;
        let verdict = keep(&record)
            .into_verdict()
            .map_err(|message| record_error(&record, message))?;
        verdicts.push(verdict);
    }
    Ok(verdicts)
}

/// Runs `transform` over every record of `batch` and returns the encoded replacement batch
/// (empty when no record was emitted).
pub fn transform_batch<F, R>(batch: Vec<u8>, mut transform: F) -> Result<Vec<u8>, SdkError>
where
    F: FnMut(&Record<'_>, &mut Output) -> R,
    R: TransformOutcome,
{
    let records = parse(&batch)?;
    let mut out = Output::with_capacity(batch.len());
    for record in records {
        let record = record.map_err(SdkError::BadBatch)?;
        transform(&record, &mut out)
            .into_outcome()
            .map_err(|message| record_error(&record, message))?;
    }
    out.finish()
}

/// Runs `route` over every record of `batch`: each call adds the record's topics to the
/// [`Destinations`] it is given (none = drop). Returns the flat routes of the whole batch, one count
/// per record in batch order.
pub fn route_batch<F, R>(batch: Vec<u8>, mut route: F) -> Result<Routes, SdkError>
where
    F: FnMut(&Record<'_>, &mut Destinations) -> R,
    R: RouteOutcome,
{
    let records = parse(&batch)?;
    let mut destinations = Destinations::new();
    // Bounded as in `filter_batch`: the header's count cannot make this reserve more than the
    // batch's length.
    destinations.reserve((records.header().record_count as usize).min(batch.len()));
    for record in records {
        let record = record.map_err(SdkError::BadBatch)?;
        route(&record, &mut destinations)
            .into_outcome()
            .map_err(|message| record_error(&record, message))?;
        destinations.end_record();
    }
    Ok(destinations.finish())
}

/// Runs `delay` over every record of `batch`: one delay in milliseconds per record, in batch order
/// (0 = deliver now).
pub fn schedule_batch<F, D>(batch: Vec<u8>, mut delay: F) -> Result<Vec<u64>, SdkError>
where
    F: FnMut(&Record<'_>) -> D,
    D: ScheduleDelay,
{
    let records = parse(&batch)?;
    let count = (records.header().record_count as usize).min(batch.len());
    let mut delays = Vec::with_capacity(count);
    for record in records {
        let record = record.map_err(SdkError::BadBatch)?;
        let ms = delay(&record)
            .into_delay()
            .map_err(|message| record_error(&record, message))?;
        delays.push(ms);
    }
    Ok(delays)
}

fn record_error(record: &Record<'_>, message: String) -> SdkError {
    SdkError::Record {
        offset: record.offset,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{decode, encode};
    use crate::OwnedRecord;

    fn sample() -> Vec<u8> {
        encode(&[
            OwnedRecord::new("one")
                .with_timestamp(10)
                .with_tag("a")
                .with_key("k1"),
            OwnedRecord::new("two")
                .with_timestamp(11)
                .with_tag("b")
                .with_header("h", "v"),
            OwnedRecord::new("three").with_timestamp(12),
        ])
        .unwrap()
    }

    #[test]
    fn filter_gives_one_verdict_per_record() {
        let verdicts = filter_batch(sample(), |r| r.has_tag("a") || r.value == b"three").unwrap();
        assert_eq!(verdicts, vec![true, false, true]);
    }

    #[test]
    fn filter_errors_name_the_record() {
        let err = filter_batch(
            sample(),
            |r| {
                if r.offset == 1 {
                    Err("boom")
                } else {
                    Ok(true)
                }
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "record at offset 1: boom");
    }

    #[test]
    fn malformed_batches_are_errors_not_panics() {
        let mut bad = sample();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        for input in [Vec::new(), b"QVRB".to_vec(), bad, vec![0; 100]] {
            assert!(matches!(
                filter_batch(input.clone(), |_| true),
                Err(SdkError::BadBatch(_))
            ));
            assert!(matches!(
                transform_batch(input.clone(), |_, _| ()),
                Err(SdkError::BadBatch(_))
            ));
            assert!(matches!(
                route_batch(input.clone(), |_, d| d.to("t")),
                Err(SdkError::BadBatch(_))
            ));
            assert!(matches!(
                schedule_batch(input, |_| 1),
                Err(SdkError::BadBatch(_))
            ));
        }
    }

    #[test]
    fn transform_keeps_metadata_and_renumbers() {
        let out = transform_batch(sample(), |r, out| {
            if r.offset == 0 {
                return Ok(());
            }
            let upper = r.value.to_ascii_uppercase();
            out.keep_with_value(r, &upper)?;
            out.keep(r)
        })
        .unwrap();
        let recs = decode(&out).unwrap();
        let values: Vec<&[u8]> = recs.iter().map(|r| r.value.as_slice()).collect();
        assert_eq!(values, [&b"TWO"[..], b"two", b"THREE", b"three"]);
        assert_eq!(recs[0].timestamp, 11);
        assert_eq!(recs[0].tags, vec!["b".to_string()]);
        assert_eq!(recs[0].header("h"), Some(&b"v"[..]));
        assert_eq!(recs[2].key, None);
    }

    #[test]
    fn transform_dropping_everything_returns_an_empty_list() {
        assert_eq!(
            transform_batch(sample(), |_, _| ()).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn transform_encode_errors_fail_the_batch() {
        let err = transform_batch(sample(), |r, out| {
            let far = OwnedRecord::from_record(r).with_timestamp(r.timestamp + 40 * 86_400_000);
            out.keep(r)?;
            out.push_owned(&far)
        })
        .unwrap_err();
        assert!(err
            .to_string()
            .starts_with("record at offset 0: output record 1"));
    }

    #[test]
    fn route_gives_one_count_per_record_and_interns_topics() {
        let routes = route_batch(sample(), |r, d| {
            for tag in r.tags() {
                d.to(&format!("by-tag.{tag}"));
            }
            if r.key.is_some() {
                d.to("keyed");
                d.to("by-tag.a");
            }
        })
        .unwrap();
        assert_eq!(routes.topics, ["by-tag.a", "keyed", "by-tag.b"]);
        assert_eq!(routes.counts, [2, 1, 0]);
        assert_eq!(routes.targets, [0, 1, 2]);
        assert_eq!(
            routes.per_record().unwrap(),
            vec![vec!["by-tag.a", "keyed"], vec!["by-tag.b"], vec![]]
        );
    }

    #[test]
    fn route_errors_name_the_record() {
        let err = route_batch(sample(), |r, d| {
            d.to("t");
            if r.value == b"three" {
                return Err(format!("no route for {}", r.timestamp));
            }
            Ok(())
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "record at offset 2: no route for 12");
    }

    #[test]
    fn schedule_gives_one_delay_per_record() {
        let delays = schedule_batch(sample(), |r| r.value.len() as u64 * 1000).unwrap();
        assert_eq!(delays, [3000, 3000, 5000]);
        let err = schedule_batch(sample(), |r| {
            u64::try_from(r.timestamp - 11).map_err(|_| "timestamp before the epoch of the test")
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "record at offset 0: timestamp before the epoch of the test"
        );
    }
}
