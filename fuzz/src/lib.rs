//! Helpers shared by the fuzz targets: record batches built from fuzz input through the real
//! `BatchBuilder`, so the targets that take a batch (filters, exchanges, plugin output) spend their
//! time past the batch checks instead of rediscovering the format and its CRC.
//!
//! Strings come half the time from small pools of names the broker gives meaning to (tags a filter
//! names, reserved and delay headers, dotted routing keys), so the fuzzer hits matches and special
//! cases often; the other half are arbitrary.

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use quiver_proto::batch::{Batch, BatchBuilder, RecordData, DELAY_MS_HEADER, DELIVER_AT_HEADER};

/// Most records in a generated batch: enough for select/rebuild to have something to skip.
const MAX_RECORDS: usize = 16;

/// Words that tags, header values, filter terms and routing keys are built from.
pub const WORDS: &[&str] = &[
    "", "a", "b", "eu", "us", "vip", "orders", "created", "*", "#", "en", "quiver", "\u{e9}",
];

/// Header names: ordinary, reserved, delay and client-settable ones.
pub const HEADER_NAMES: &[&str] = &[
    "lang",
    "trace",
    DELIVER_AT_HEADER,
    DELAY_MS_HEADER,
    "quiver-reply-to",
    "quiver-correlation-id",
    "quiver-error",
    "quiver-delay-topic",
    "quiver-",
];

/// Header values: words, and times the delay checks parse (valid, negative, huge, not numbers).
const HEADER_VALUES: &[&str] = &[
    "en",
    "eu",
    "0",
    "500",
    "-5",
    " 42 ",
    "1700000000000",
    "9223372036854775807",
    "99999999999999999999",
    "soon",
];

/// A word from `pool`, or (half the time) any string.
pub fn word(u: &mut Unstructured<'_>, pool: &[&str]) -> Result<String> {
    if u.arbitrary::<bool>()? {
        Ok(u.choose(pool)?.to_string())
    } else {
        u.arbitrary::<&str>().map(str::to_owned)
    }
}

/// A `.`-joined routing key or topic pattern of up to 6 words.
pub fn dotted(u: &mut Unstructured<'_>) -> Result<String> {
    let n = u.int_in_range(1..=6)?;
    let mut words = Vec::with_capacity(n);
    for _ in 0..n {
        words.push(word(u, WORDS)?);
    }
    Ok(words.join("."))
}

struct OwnedRecord {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    tags: Vec<String>,
}

fn record(u: &mut Unstructured<'_>, base_ts: i64) -> Result<OwnedRecord> {
    // Mostly close to the first record's time; sometimes anywhere (the ±24-day span check).
    let timestamp = if u.ratio(1, 8)? {
        u.arbitrary()?
    } else {
        base_ts.wrapping_add(u.int_in_range(-1000..=1000)?)
    };
    let key = match u.int_in_range(0..=2)? {
        0 => None,
        1 => Some(dotted(u)?.into_bytes()),
        _ => Some(u.arbitrary::<&[u8]>()?.to_vec()),
    };
    let value = u.arbitrary::<&[u8]>()?.to_vec();
    let mut headers = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        let name = word(u, HEADER_NAMES)?;
        let value = word(u, HEADER_VALUES)?.into_bytes();
        headers.push((name, value));
    }
    let mut tags = Vec::new();
    for _ in 0..u.int_in_range(0..=3)? {
        tags.push(word(u, WORDS)?);
    }
    Ok(OwnedRecord {
        timestamp,
        key,
        value,
        headers,
        tags,
    })
}

/// A valid batch of 1 to 16 records built from `u` (records the builder refuses are left out),
/// or `None` when it refused them all. A batch the builder finished must parse: that is checked.
pub fn batch(u: &mut Unstructured<'_>) -> Result<Option<Batch>> {
    let n = u.int_in_range(1..=MAX_RECORDS)?;
    let base_ts: i64 = if u.arbitrary()? {
        1_700_000_000_000
    } else {
        u.arbitrary()?
    };
    let mut builder = if u.arbitrary()? {
        BatchBuilder::new().producer(u.arbitrary()?, u.arbitrary()?)
    } else {
        BatchBuilder::new()
    };
    for _ in 0..n {
        let r = record(u, base_ts)?;
        let headers: Vec<(&str, &[u8])> = r
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let tags: Vec<&str> = r.tags.iter().map(String::as_str).collect();
        // Refused records (a tag over 255 bytes, a timestamp too far out) are not the point here.
        let _ = builder.push(&RecordData {
            timestamp: r.timestamp,
            key: r.key.as_deref(),
            value: &r.value,
            headers: &headers,
            tags: &tags,
        });
    }
    if builder.is_empty() {
        return Ok(None);
    }
    let count = builder.len();
    let bytes = builder.finish().expect("a builder with records finishes");
    let batch = Batch::parse(bytes).expect("what BatchBuilder encodes parses");
    assert_eq!(batch.record_count() as usize, count);
    Ok(Some(batch))
}
