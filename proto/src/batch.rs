//! The record batch: the one binary encoding of a run of records. The same bytes travel on the wire,
//! sit in segment files and are handed to plugins (see docs/batch-format.md for the byte layout).
//!
//! Invariants: a [`Batch`] value has been fully validated (header, length, CRC32C, every record), so
//! iterating it cannot fail; decoding never allocates (records are views into the batch's `Bytes`);
//! the broker may rewrite `base_offset` in place because it is outside the CRC.

use bytes::{BufMut, Bytes, BytesMut};

use crate::bytes_le::{i64_at, slice_at, u16_at, u32_at, u64_at, u8_at};

/// First four bytes of every batch.
pub const MAGIC: [u8; 4] = *b"QVRB";
/// The only batch version this build reads and writes.
pub const VERSION: u8 = 1;
/// Size of the fixed batch header.
pub const HEADER_LEN: usize = 56;
/// Byte position of the length field: a reader needs `LENGTH_END` bytes to know a batch's size.
pub const LENGTH_END: usize = 12;
/// Bytes of fixed fields in front of every record (length, offset delta, timestamp delta).
pub const RECORD_FIXED_LEN: usize = 12;
/// Header flag: record offsets are strictly increasing rather than dense. Only the broker produces
/// such batches, when a fetch filter leaves records out; appends must be dense.
pub const FLAG_SPARSE: u8 = 1;
/// Header flag: some record carries a delivery-time header ([`DELIVER_AT_HEADER`] or
/// [`DELAY_MS_HEADER`]): the broker holds such records until they are due. [`BatchBuilder`] sets
/// it by itself, so the broker only looks at the headers of batches that have it.
pub const FLAG_DELAYED: u8 = 2;
/// Flags this build understands; any other bit set is rejected.
const KNOWN_FLAGS: u8 = FLAG_SPARSE | FLAG_DELAYED;

/// Record header: deliver the record at this time (decimal ms since the Unix epoch).
pub const DELIVER_AT_HEADER: &str = "quiver-deliver-at";
/// Record header: deliver the record this many ms (decimal) after the broker received it.
pub const DELAY_MS_HEADER: &str = "quiver-delay-ms";

/// Whether a header name asks for delayed delivery.
pub fn is_delay_header(name: &str) -> bool {
    name == DELIVER_AT_HEADER || name == DELAY_MS_HEADER
}
/// Largest batch this format can describe.
pub const MAX_BATCH_LEN: usize = u32::MAX as usize;

const OFF_VERSION: usize = 4;
const OFF_FLAGS: usize = 5;
const OFF_RESERVED: usize = 6;
const OFF_LENGTH: usize = 8;
const OFF_BASE_OFFSET: usize = 12;
const OFF_CRC: usize = 20;
/// The CRC covers everything from here to the end of the batch.
const CRC_START: usize = 24;
const OFF_BASE_TS: usize = 24;
const OFF_MAX_TS: usize = 32;
const OFF_COUNT: usize = 40;
const OFF_PRODUCER: usize = 44;
const OFF_SEQUENCE: usize = 52;

const NO_KEY: u32 = u32::MAX;
const MAX_TAG_LEN: usize = u8::MAX as usize;
const MAX_TAGS: usize = u8::MAX as usize;
const MAX_HEADERS: usize = u16::MAX as usize;
const MAX_HEADER_NAME: usize = u16::MAX as usize;

/// Why bytes are not a valid batch, or why a record cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("batch truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    #[error("not a Quiver batch: magic bytes {0:02x?}")]
    BadMagic([u8; 4]),
    #[error("unsupported batch version {0} (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("batch header field {field} has invalid value {value}")]
    BadHeader { field: &'static str, value: u64 },
    #[error("batch of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("batch CRC32C mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("malformed record {index}: {reason}")]
    Malformed { index: u32, reason: &'static str },
    #[error("a batch must hold at least one record")]
    Empty,
    #[error("record field {field} is {len} bytes, more than the limit of {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("record timestamp {ts} is too far from the batch's first timestamp {base} (at most ±24 days)")]
    TimestampSpan { ts: i64, base: i64 },
}

/// The fixed header of a batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub version: u8,
    pub flags: u8,
    /// Total bytes of the batch, header included.
    pub length: u32,
    pub base_offset: u64,
    pub crc: u32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub record_count: u32,
    /// 0 when the producer is not idempotent.
    pub producer_id: u64,
    pub base_sequence: u32,
}

impl BatchHeader {
    /// Decodes and checks the fixed header. Needs `HEADER_LEN` bytes; does not look at the records.
    pub fn parse(b: &[u8]) -> Result<BatchHeader, BatchError> {
        let prefix = Self::peek_length(b)?;
        if b.len() < HEADER_LEN {
            return Err(BatchError::Truncated {
                need: HEADER_LEN,
                have: b.len(),
            });
        }
        let h = BatchHeader {
            version: VERSION,
            flags: u8_at(b, OFF_FLAGS).unwrap_or(0),
            length: prefix as u32,
            base_offset: u64_at(b, OFF_BASE_OFFSET).unwrap_or(0),
            crc: u32_at(b, OFF_CRC).unwrap_or(0),
            base_timestamp: i64_at(b, OFF_BASE_TS).unwrap_or(0),
            max_timestamp: i64_at(b, OFF_MAX_TS).unwrap_or(0),
            record_count: u32_at(b, OFF_COUNT).unwrap_or(0),
            producer_id: u64_at(b, OFF_PRODUCER).unwrap_or(0),
            base_sequence: u32_at(b, OFF_SEQUENCE).unwrap_or(0),
        };
        if h.record_count == 0 {
            return Err(BatchError::Empty);
        }
        // Every record takes at least its fixed part plus tag count, key, value and header count.
        let min_body = (h.record_count as usize).saturating_mul(RECORD_FIXED_LEN + 11);
        if min_body > (h.length as usize).saturating_sub(HEADER_LEN) {
            return Err(BatchError::BadHeader {
                field: "record_count",
                value: h.record_count as u64,
            });
        }
        Ok(h)
    }

    /// Reads magic, version and length from the first `LENGTH_END` bytes: enough for a stream reader
    /// to know how many bytes the whole batch takes before it buffers them.
    pub fn peek_length(b: &[u8]) -> Result<usize, BatchError> {
        if b.len() < LENGTH_END {
            return Err(BatchError::Truncated {
                need: LENGTH_END,
                have: b.len(),
            });
        }
        let magic: [u8; 4] = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC {
            return Err(BatchError::BadMagic(magic));
        }
        let version = b[OFF_VERSION];
        if version != VERSION {
            return Err(BatchError::UnsupportedVersion(version));
        }
        let reserved = u16_at(b, OFF_RESERVED).unwrap_or(0);
        if reserved != 0 {
            return Err(BatchError::BadHeader {
                field: "reserved",
                value: reserved as u64,
            });
        }
        let length = u32_at(b, OFF_LENGTH).unwrap_or(0) as usize;
        if length < HEADER_LEN {
            return Err(BatchError::BadHeader {
                field: "length",
                value: length as u64,
            });
        }
        Ok(length)
    }

    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + self.record_count.saturating_sub(1) as u64
    }

    /// Offset just after the batch.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + self.record_count as u64
    }
}

/// CRC32C as stored in the header, over `batch[24..]`.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(CRC_START..).unwrap_or(&[]))
}

/// Writes a new base offset into an encoded batch (outside the CRC, so the CRC stays valid).
/// Returns false when `batch` is too short to be a batch.
pub fn set_base_offset(batch: &mut [u8], base_offset: u64) -> bool {
    match batch.get_mut(OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8) {
        Some(field) => {
            field.copy_from_slice(&base_offset.to_le_bytes());
            true
        }
        None => false,
    }
}

/// Encoded header bytes of `header`, for writers that assemble a batch from parts.
pub fn encode_header(h: &BatchHeader) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..4].copy_from_slice(&MAGIC);
    out[OFF_VERSION] = VERSION;
    out[OFF_FLAGS] = h.flags;
    out[OFF_LENGTH..OFF_LENGTH + 4].copy_from_slice(&h.length.to_le_bytes());
    out[OFF_BASE_OFFSET..OFF_BASE_OFFSET + 8].copy_from_slice(&h.base_offset.to_le_bytes());
    out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&h.crc.to_le_bytes());
    out[OFF_BASE_TS..OFF_BASE_TS + 8].copy_from_slice(&h.base_timestamp.to_le_bytes());
    out[OFF_MAX_TS..OFF_MAX_TS + 8].copy_from_slice(&h.max_timestamp.to_le_bytes());
    out[OFF_COUNT..OFF_COUNT + 4].copy_from_slice(&h.record_count.to_le_bytes());
    out[OFF_PRODUCER..OFF_PRODUCER + 8].copy_from_slice(&h.producer_id.to_le_bytes());
    out[OFF_SEQUENCE..OFF_SEQUENCE + 4].copy_from_slice(&h.base_sequence.to_le_bytes());
    out
}

/// A record to encode, borrowed from the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordData<'a> {
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    pub headers: &'a [(&'a str, &'a [u8])],
    pub tags: &'a [&'a str],
}

/// Encodes records into one batch. Fields are checked against the format's limits as they are pushed.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    count: u32,
    base_ts: i64,
    max_ts: i64,
    producer_id: u64,
    base_sequence: u32,
    flags: u8,
    /// `base_ts` was set by [`BatchBuilder::base_timestamp`], not by the first record.
    fixed_base: bool,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(4096)
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder whose buffer starts with room for `bytes` bytes.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = BytesMut::with_capacity(bytes.max(HEADER_LEN));
        buf.put_bytes(0, HEADER_LEN);
        BatchBuilder {
            buf,
            count: 0,
            base_ts: 0,
            max_ts: i64::MIN,
            producer_id: 0,
            base_sequence: 0,
            flags: 0,
            fixed_base: false,
        }
    }

    /// Encodes timestamps relative to `ts` rather than to the first record's. For re-encoding
    /// records of a batch whose base timestamp is `ts`: each of them is within the format's span
    /// (±24 days) of it, but two of them may be up to twice that apart, so a subset starting at
    /// another record would not always fit.
    pub fn base_timestamp(mut self, ts: i64) -> Self {
        self.base_ts = ts;
        self.fixed_base = true;
        self
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn producer(mut self, producer_id: u64, base_sequence: u32) -> Self {
        self.producer_id = producer_id;
        self.base_sequence = base_sequence;
        self
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the batch would take if finished now.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Bytes one record takes in a batch (for batching by size before encoding).
    pub fn record_encoded_len(rec: &RecordData<'_>) -> usize {
        let tags: usize = rec.tags.iter().map(|t| 1 + t.len()).sum();
        let headers: usize = rec.headers.iter().map(|(n, v)| 6 + n.len() + v.len()).sum();
        RECORD_FIXED_LEN
            + 1
            + tags
            + 4
            + rec.key.map_or(0, <[u8]>::len)
            + 4
            + rec.value.len()
            + 2
            + headers
    }

    /// Appends one record; its offset delta is its position in the batch.
    pub fn push(&mut self, rec: &RecordData<'_>) -> Result<(), BatchError> {
        check_record_limits(rec)?;
        if self.count == 0 && !self.fixed_base {
            self.base_ts = rec.timestamp;
        }
        let delta = rec
            .timestamp
            .checked_sub(self.base_ts)
            .and_then(|d| i32::try_from(d).ok());
        let Some(ts_delta) = delta else {
            return Err(BatchError::TimestampSpan {
                ts: rec.timestamp,
                base: self.base_ts,
            });
        };
        let body_len = Self::record_encoded_len(rec) - 4;
        let body_len = u32::try_from(body_len).map_err(|_| BatchError::FieldTooLong {
            field: "record",
            len: body_len,
            max: u32::MAX as usize,
        })?;
        let buf = &mut self.buf;
        buf.reserve(body_len as usize + 4);
        buf.put_u32_le(body_len);
        buf.put_u32_le(self.count);
        buf.put_i32_le(ts_delta);
        buf.put_u8(rec.tags.len() as u8);
        for tag in rec.tags {
            buf.put_u8(tag.len() as u8);
            buf.put_slice(tag.as_bytes());
        }
        match rec.key {
            Some(k) => {
                buf.put_u32_le(k.len() as u32);
                buf.put_slice(k);
            }
            None => buf.put_u32_le(NO_KEY),
        }
        buf.put_u32_le(rec.value.len() as u32);
        buf.put_slice(rec.value);
        buf.put_u16_le(rec.headers.len() as u16);
        for (name, value) in rec.headers {
            buf.put_u16_le(name.len() as u16);
            buf.put_slice(name.as_bytes());
            buf.put_u32_le(value.len() as u32);
            buf.put_slice(value);
        }
        if rec.headers.iter().any(|(name, _)| is_delay_header(name)) {
            self.flags |= FLAG_DELAYED;
        }
        self.count += 1;
        self.max_ts = self.max_ts.max(rec.timestamp);
        Ok(())
    }

    /// Seals the batch with base offset 0 (the broker assigns the real one) and its CRC.
    pub fn finish(mut self) -> Result<Bytes, BatchError> {
        if self.count == 0 {
            return Err(BatchError::Empty);
        }
        let len = self.buf.len();
        let length = u32::try_from(len).map_err(|_| BatchError::TooLarge {
            len,
            max: MAX_BATCH_LEN,
        })?;
        let mut header = BatchHeader {
            version: VERSION,
            flags: self.flags,
            length,
            base_offset: 0,
            crc: 0,
            base_timestamp: self.base_ts,
            max_timestamp: self.max_ts,
            record_count: self.count,
            producer_id: self.producer_id,
            base_sequence: self.base_sequence,
        };
        self.buf[..HEADER_LEN].copy_from_slice(&encode_header(&header));
        header.crc = compute_crc(&self.buf);
        self.buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&header.crc.to_le_bytes());
        Ok(self.buf.freeze())
    }
}

fn check_record_limits(rec: &RecordData<'_>) -> Result<(), BatchError> {
    let too_long = |field, len, max| {
        if len > max {
            Err(BatchError::FieldTooLong { field, len, max })
        } else {
            Ok(())
        }
    };
    too_long("tags", rec.tags.len(), MAX_TAGS)?;
    for t in rec.tags {
        too_long("tag", t.len(), MAX_TAG_LEN)?;
    }
    too_long("headers", rec.headers.len(), MAX_HEADERS)?;
    for (name, value) in rec.headers {
        too_long("header name", name.len(), MAX_HEADER_NAME)?;
        too_long("header value", value.len(), u32::MAX as usize - 1)?;
    }
    too_long("key", rec.key.map_or(0, <[u8]>::len), u32::MAX as usize - 1)?;
    too_long("value", rec.value.len(), u32::MAX as usize - 1)
}

/// A validated batch: a cheap handle on its bytes.
#[derive(Clone, Debug)]
pub struct Batch {
    bytes: Bytes,
    header: BatchHeader,
}

impl Batch {
    /// Validates `bytes` as exactly one batch: header, length, CRC and every record.
    pub fn parse(bytes: Bytes) -> Result<Batch, BatchError> {
        Self::parse_checked(bytes, true)
    }

    /// Like [`Batch::parse`] but without the CRC: for bytes whose CRC a trusted party has already
    /// verified, such as a batch the broker hands to a plugin. Every structural check still runs,
    /// so reading the records stays bounds-safe; only corruption would go unnoticed. Inside a wasm
    /// guest (no CRC instruction) the CRC is most of the cost of parsing.
    pub fn parse_trusted(bytes: Bytes) -> Result<Batch, BatchError> {
        Self::parse_checked(bytes, false)
    }

    fn parse_checked(bytes: Bytes, check_crc: bool) -> Result<Batch, BatchError> {
        let header = validate_with(&bytes, check_crc)?;
        if header.length as usize != bytes.len() {
            return Err(BatchError::BadHeader {
                field: "length",
                value: header.length as u64,
            });
        }
        Ok(Batch { bytes, header })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }

    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Zero-copy views of the records, in offset order.
    pub fn records(&self) -> RecordIter<'_> {
        RecordIter {
            buf: &self.bytes,
            pos: HEADER_LEN,
            index: 0,
            header: self.header,
        }
    }

    /// Owned records whose byte fields share this batch's buffer (no copies of keys or values).
    pub fn to_records(&self) -> impl Iterator<Item = Record> + '_ {
        self.records().map(|r| r.to_record(&self.bytes))
    }
}

/// Checks a whole batch held in `b` (which may continue past the batch) and returns its header.
pub fn validate(b: &[u8]) -> Result<BatchHeader, BatchError> {
    validate_with(b, true)
}

/// The header of the batch at the front of `b`, after checking that the whole batch is in `b`
/// and, with `check_crc`, its CRC; returns the batch's bytes too. The records are not read.
fn framed(b: &[u8], check_crc: bool) -> Result<(BatchHeader, &[u8]), BatchError> {
    let header = BatchHeader::parse(b)?;
    let len = header.length as usize;
    let Some(batch) = b.get(..len) else {
        return Err(BatchError::Truncated {
            need: len,
            have: b.len(),
        });
    };
    if check_crc {
        let computed = compute_crc(batch);
        if computed != header.crc {
            return Err(BatchError::CrcMismatch {
                stored: header.crc,
                computed,
            });
        }
    }
    Ok((header, batch))
}

fn validate_with(b: &[u8], check_crc: bool) -> Result<BatchHeader, BatchError> {
    let (header, batch) = framed(b, check_crc)?;
    if header.flags & !KNOWN_FLAGS != 0 {
        return Err(BatchError::BadHeader {
            field: "flags",
            value: header.flags as u64,
        });
    }
    let sparse = header.flags & FLAG_SPARSE != 0;
    let mut pos = HEADER_LEN;
    let mut next_min = header.base_offset;
    for index in 0..header.record_count {
        let (rec, next) = parse_record(batch, pos, index, &header)?;
        let in_order = if sparse {
            rec.offset >= next_min
        } else {
            rec.offset == header.base_offset.wrapping_add(index as u64)
        };
        if !in_order {
            return Err(BatchError::Malformed {
                index,
                reason: "offset deltas are not dense (or, in a sparse batch, not increasing)",
            });
        }
        next_min = rec.offset.saturating_add(1);
        pos = next;
    }
    if pos != batch.len() {
        return Err(BatchError::Malformed {
            index: header.record_count,
            reason: "trailing bytes after last record",
        });
    }
    Ok(header)
}

/// A record inside a batch, borrowed from the batch's bytes.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: &'a [u8],
    tag_count: u8,
    tags_raw: &'a [u8],
    header_count: u16,
    headers_raw: &'a [u8],
    /// The record's whole encoding, length prefix included (for copying it into another batch).
    raw: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// The record's whole encoding, length prefix included.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    pub fn tags(&self) -> TagIter<'a> {
        TagIter {
            raw: self.tags_raw,
            left: self.tag_count,
        }
    }

    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags().any(|t| t == tag)
    }

    pub fn headers(&self) -> HeaderIter<'a> {
        HeaderIter {
            raw: self.headers_raw,
            left: self.header_count,
        }
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// An owned copy whose byte fields are slices of `batch` (the buffer this view was parsed from).
    pub fn to_record(&self, batch: &Bytes) -> Record {
        Record {
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(|k| batch.slice_ref(k)),
            value: batch.slice_ref(self.value),
            headers: self
                .headers()
                .map(|(n, v)| (n.to_owned(), batch.slice_ref(v)))
                .collect(),
            tags: self.tags().map(str::to_owned).collect(),
        }
    }
}

/// An owned record, as handed to client applications.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, Bytes)>,
    pub tags: Vec<String>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Iterates the tags of a record.
#[derive(Debug, Clone)]
pub struct TagIter<'a> {
    raw: &'a [u8],
    left: u8,
}

impl<'a> Iterator for TagIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let len = *self.raw.first()? as usize;
        let tag = self.raw.get(1..1 + len)?;
        self.raw = &self.raw[1 + len..];
        // Validated at parse time; a failure here cannot happen for a `Batch`.
        std::str::from_utf8(tag).ok()
    }
}

/// Iterates the headers of a record as (name, value).
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    raw: &'a [u8],
    left: u16,
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let name_len = u16_at(self.raw, 0)? as usize;
        let name = slice_at(self.raw, 2, name_len)?;
        let value_len = u32_at(self.raw, 2 + name_len)? as usize;
        let value = slice_at(self.raw, 6 + name_len, value_len)?;
        self.raw = &self.raw[6 + name_len + value_len..];
        Some((std::str::from_utf8(name).ok()?, value))
    }
}

/// Iterates the records of a validated batch.
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    buf: &'a [u8],
    pos: usize,
    index: u32,
    header: BatchHeader,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RecordRef<'a>;

    fn next(&mut self) -> Option<RecordRef<'a>> {
        if self.index >= self.header.record_count {
            return None;
        }
        let (rec, next) = parse_record(self.buf, self.pos, self.index, &self.header).ok()?;
        self.pos = next;
        self.index += 1;
        Some(rec)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.header.record_count - self.index) as usize;
        (left, Some(left))
    }
}

/// The records of one batch read in a single pass, each checked as it is reached, without the CRC:
/// for a reader that gives up on the first error anyway (a plugin handed a batch the broker has
/// verified), this does half the work of [`Batch::parse_trusted`] followed by [`Batch::records`].
/// After an error the iterator ends.
#[derive(Debug, Clone)]
pub struct CheckedRecords<'a> {
    batch: &'a [u8],
    header: BatchHeader,
    pos: usize,
    index: u32,
    next_min: u64,
    done: bool,
}

impl<'a> CheckedRecords<'a> {
    /// Checks the header, and that `b` is exactly one batch.
    pub fn new(b: &'a [u8]) -> Result<CheckedRecords<'a>, BatchError> {
        let header = BatchHeader::parse(b)?;
        if header.length as usize != b.len() {
            return Err(BatchError::BadHeader {
                field: "length",
                value: header.length as u64,
            });
        }
        if header.flags & !KNOWN_FLAGS != 0 {
            return Err(BatchError::BadHeader {
                field: "flags",
                value: header.flags as u64,
            });
        }
        Ok(CheckedRecords {
            batch: b,
            header,
            pos: HEADER_LEN,
            index: 0,
            next_min: header.base_offset,
            done: false,
        })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    fn fail(&mut self, e: BatchError) -> Option<Result<RecordRef<'a>, BatchError>> {
        self.done = true;
        Some(Err(e))
    }
}

impl<'a> Iterator for CheckedRecords<'a> {
    type Item = Result<RecordRef<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.index == self.header.record_count {
            self.done = true;
            return (self.pos != self.batch.len()).then_some(Err(BatchError::Malformed {
                index: self.index,
                reason: "trailing bytes after last record",
            }));
        }
        let (rec, next) = match parse_record(self.batch, self.pos, self.index, &self.header) {
            Ok(x) => x,
            Err(e) => return self.fail(e),
        };
        let in_order = if self.header.flags & FLAG_SPARSE != 0 {
            rec.offset >= self.next_min
        } else {
            rec.offset == self.header.base_offset.wrapping_add(self.index as u64)
        };
        if !in_order {
            let index = self.index;
            return self.fail(BatchError::Malformed {
                index,
                reason: "offset deltas are not dense (or, in a sparse batch, not increasing)",
            });
        }
        self.next_min = rec.offset.saturating_add(1);
        self.pos = next;
        self.index += 1;
        Some(Ok(rec))
    }
}

/// Parses the record at `pos` of `batch` (which ends where the batch ends); returns it and the
/// position of the next record.
fn parse_record<'a>(
    batch: &'a [u8],
    pos: usize,
    index: u32,
    header: &BatchHeader,
) -> Result<(RecordRef<'a>, usize), BatchError> {
    let bad = |reason| BatchError::Malformed { index, reason };
    let body_len = u32_at(batch, pos).ok_or(bad("record length runs past the batch"))? as usize;
    let body = slice_at(batch, pos + 4, body_len).ok_or(bad("record runs past the batch"))?;
    let offset_delta = u32_at(body, 0).ok_or(bad("record shorter than its fixed fields"))?;
    let ts_delta = u32_at(body, 4).ok_or(bad("record shorter than its fixed fields"))? as i32;
    let mut at = 8;

    let tag_count = u8_at(body, at).ok_or(bad("missing tag count"))?;
    at += 1;
    let tags_start = at;
    for _ in 0..tag_count {
        let len = u8_at(body, at).ok_or(bad("tag runs past the record"))? as usize;
        let tag = slice_at(body, at + 1, len).ok_or(bad("tag runs past the record"))?;
        std::str::from_utf8(tag).map_err(|_| bad("tag is not UTF-8"))?;
        at += 1 + len;
    }
    let tags_raw = &body[tags_start..at];

    let key_len = u32_at(body, at).ok_or(bad("missing key length"))?;
    at += 4;
    let key = if key_len == NO_KEY {
        None
    } else {
        let k = slice_at(body, at, key_len as usize).ok_or(bad("key runs past the record"))?;
        at += k.len();
        Some(k)
    };
    let value_len = u32_at(body, at).ok_or(bad("missing value length"))? as usize;
    let value = slice_at(body, at + 4, value_len).ok_or(bad("value runs past the record"))?;
    at += 4 + value_len;

    let header_count = u16_at(body, at).ok_or(bad("missing header count"))?;
    at += 2;
    let headers_start = at;
    for _ in 0..header_count {
        let name_len = u16_at(body, at).ok_or(bad("header runs past the record"))? as usize;
        let name =
            slice_at(body, at + 2, name_len).ok_or(bad("header name runs past the record"))?;
        std::str::from_utf8(name).map_err(|_| bad("header name is not UTF-8"))?;
        let vlen =
            u32_at(body, at + 2 + name_len).ok_or(bad("header runs past the record"))? as usize;
        slice_at(body, at + 6 + name_len, vlen).ok_or(bad("header value runs past the record"))?;
        at += 6 + name_len + vlen;
    }
    if at != body.len() {
        return Err(bad("record length does not match its fields"));
    }
    let rec = RecordRef {
        offset: header.base_offset.wrapping_add(offset_delta as u64),
        timestamp: header.base_timestamp.wrapping_add(ts_delta as i64),
        key,
        value,
        tag_count,
        tags_raw,
        header_count,
        headers_raw: &body[headers_start..at],
        raw: &batch[pos..pos + 4 + body_len],
    };
    Ok((rec, pos + 4 + body_len))
}

/// The records of `batch` for which `keep` is true, as a batch: the original bytes when every record
/// is kept, `None` when none is, otherwise a sparse batch holding the kept records' bytes verbatim
/// (same base offset and timestamp, so no record needs rewriting).
pub fn select(batch: &Batch, mut keep: impl FnMut(&RecordRef<'_>) -> bool) -> Option<Bytes> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut max_ts = i64::MIN;
    for r in batch.records() {
        if keep(&r) {
            kept.push(r.raw());
            max_ts = max_ts.max(r.timestamp);
        }
    }
    assemble(batch, kept, max_ts)
}

/// Like [`select`], for decisions already made per record: `keep(index, offset)`. It walks only
/// the records' fixed-width prefixes (length, offset and timestamp deltas) instead of parsing each
/// record again, which a validated [`Batch`] makes safe; used with a plugin's verdicts.
pub fn select_indexed(batch: &Batch, mut keep: impl FnMut(usize, u64) -> bool) -> Option<Bytes> {
    let bytes = batch.bytes();
    let h = batch.header();
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut max_ts = i64::MIN;
    let mut pos = HEADER_LEN;
    for i in 0..h.record_count as usize {
        // Validated at parse time, so these reads cannot fail; stop rather than panic if they do.
        let Some(len) = u32_at(bytes, pos) else { break };
        let (Some(delta), Some(ts)) = (u32_at(bytes, pos + 4), u32_at(bytes, pos + 8)) else {
            break;
        };
        let Some(raw) = slice_at(bytes, pos, 4 + len as usize) else {
            break;
        };
        if keep(i, h.base_offset.wrapping_add(delta as u64)) {
            kept.push(raw);
            max_ts = max_ts.max(h.base_timestamp.wrapping_add(ts as i32 as i64));
        }
        pos += raw.len();
    }
    assemble(batch, kept, max_ts)
}

/// The records `indexes` (ascending) of `batch` as a dense batch to append elsewhere: the records'
/// encodings are copied as they are, only their offset deltas renumbered from 0 (timestamps keep
/// the batch's base timestamp, the producer fields are dropped). What exchange and router fan-out
/// use instead of re-encoding every record with [`rebuild`]. `None` when no index is in range.
pub fn select_dense(batch: &Batch, indexes: &[usize]) -> Option<Bytes> {
    let bytes = batch.bytes();
    let h = batch.header();
    let mut kept: Vec<&[u8]> = Vec::with_capacity(indexes.len());
    let mut max_ts = i64::MIN;
    let mut want = indexes.iter().peekable();
    let mut pos = HEADER_LEN;
    for i in 0..h.record_count as usize {
        // Validated at parse time, so these reads cannot fail; stop rather than panic if they do.
        let (Some(len), Some(ts)) = (u32_at(bytes, pos), u32_at(bytes, pos + 8)) else {
            break;
        };
        let Some(raw) = slice_at(bytes, pos, 4 + len as usize) else {
            break;
        };
        if want.next_if(|&&j| j == i).is_some() {
            kept.push(raw);
            max_ts = max_ts.max(h.base_timestamp.wrapping_add(ts as i32 as i64));
        }
        pos += raw.len();
    }
    if kept.is_empty() {
        return None;
    }
    let body: usize = kept.iter().map(|r| r.len()).sum();
    let mut out = BytesMut::with_capacity(HEADER_LEN + body);
    let header = BatchHeader {
        flags: h.flags & !FLAG_SPARSE,
        length: (HEADER_LEN + body) as u32,
        base_offset: 0,
        crc: 0,
        max_timestamp: max_ts,
        record_count: kept.len() as u32,
        producer_id: 0,
        base_sequence: 0,
        ..*h
    };
    out.extend_from_slice(&encode_header(&header));
    for (n, r) in kept.into_iter().enumerate() {
        let at = out.len();
        out.extend_from_slice(r);
        out[at + 4..at + 8].copy_from_slice(&(n as u32).to_le_bytes());
    }
    let crc = compute_crc(&out);
    out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Some(out.freeze())
}

/// A batch of `kept` records (raw encodings from `batch`): `batch` itself when all are kept.
fn assemble(batch: &Batch, kept: Vec<&[u8]>, max_ts: i64) -> Option<Bytes> {
    if kept.is_empty() {
        return None;
    }
    if kept.len() == batch.record_count() as usize {
        return Some(batch.bytes().clone());
    }
    let body: usize = kept.iter().map(|r| r.len()).sum();
    let mut out = BytesMut::with_capacity(HEADER_LEN + body);
    let mut h = *batch.header();
    h.flags |= FLAG_SPARSE;
    h.record_count = kept.len() as u32;
    h.length = (HEADER_LEN + body) as u32;
    h.max_timestamp = max_ts;
    out.extend_from_slice(&encode_header(&h));
    for r in kept {
        out.extend_from_slice(r);
    }
    let crc = compute_crc(&out);
    out[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
    Some(out.freeze())
}

/// Re-encodes the records of `batch` for which `keep(index, record)` is true as a dense batch
/// (offsets renumbered from 0, the producer fields dropped), adding `extra_headers` to each record.
/// `None` when no record is kept. Used where a batch is appended again after records were removed
/// (an ingest filter) or annotated (a dead letter); fetch results use the cheaper [`select`].
pub fn rebuild(
    batch: &Batch,
    extra_headers: &[(&str, &[u8])],
    mut keep: impl FnMut(usize, &RecordRef<'_>) -> bool,
) -> Result<Option<Bytes>, BatchError> {
    // The source's base timestamp: every record of a valid batch fits relative to it.
    let mut builder = BatchBuilder::with_capacity(batch.bytes().len() + 64)
        .base_timestamp(batch.header().base_timestamp);
    let mut headers: Vec<(&str, &[u8])> = Vec::new();
    let mut tags: Vec<&str> = Vec::new();
    for (i, r) in batch.records().enumerate() {
        if !keep(i, &r) {
            continue;
        }
        headers.clear();
        headers.extend(r.headers());
        headers.extend_from_slice(extra_headers);
        tags.clear();
        tags.extend(r.tags());
        builder.push(&RecordData {
            timestamp: r.timestamp,
            key: r.key,
            value: r.value,
            headers: &headers,
            tags: &tags,
        })?;
    }
    if builder.is_empty() {
        return Ok(None);
    }
    builder.finish().map(Some)
}

/// The headers of the batches in `b`, one after another, without reading their records or CRCs:
/// for bytes a log validated when they were appended, where a reader needs only the batch
/// boundaries (the broker answering a fetch). Ends at the first header that does not parse or
/// whose batch runs past `b` (a header's length is at least `HEADER_LEN`, so it always moves on).
pub fn headers(b: &[u8]) -> impl Iterator<Item = BatchHeader> + '_ {
    let mut rest = b;
    std::iter::from_fn(move || {
        let h = BatchHeader::parse(rest).ok()?;
        rest = rest.get(h.length as usize..)?;
        Some(h)
    })
}

/// Splits the first batch off `rest` and checks its header, length and CRC, but not its records:
/// a reader that parses the records anyway checks them as it goes ([`CheckedRecords`]), in one
/// pass instead of two. On an error `rest` is left as it was.
pub fn split_crc_checked(rest: &mut Bytes) -> Result<Bytes, BatchError> {
    let len = framed(rest, true)?.1.len();
    Ok(rest.split_to(len))
}

/// Splits a buffer of concatenated batches (a fetch response, a segment slice) into batches.
/// Yields an error once and stops at the first invalid batch.
#[derive(Debug, Clone)]
pub struct Batches {
    rest: Bytes,
    failed: bool,
}

impl Batches {
    pub fn new(bytes: Bytes) -> Batches {
        Batches {
            rest: bytes,
            failed: false,
        }
    }
}

impl Iterator for Batches {
    type Item = Result<Batch, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        let item = validate(&self.rest).map(|header| {
            let bytes = self.rest.split_to(header.length as usize);
            Batch { bytes, header }
        });
        self.failed = item.is_err();
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct OwnedRec {
        ts: i64,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        headers: Vec<(String, Vec<u8>)>,
        tags: Vec<String>,
    }

    fn rec_strategy() -> impl Strategy<Value = OwnedRec> {
        (
            -1_000_000i64..1_000_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(
                (
                    "[a-z\u{e9}]{0,8}",
                    proptest::collection::vec(any::<u8>(), 0..10),
                ),
                0..4,
            ),
            proptest::collection::vec("[a-z0-9.\u{3b1}]{0,12}", 0..4),
        )
            .prop_map(|(ts, key, value, headers, tags)| OwnedRec {
                ts,
                key,
                value,
                headers,
                tags,
            })
    }

    fn encode(recs: &[OwnedRec], base_offset: u64) -> Bytes {
        let mut b = BatchBuilder::new().producer(7, 9);
        for r in recs {
            let headers: Vec<(&str, &[u8])> = r
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            let tags: Vec<&str> = r.tags.iter().map(String::as_str).collect();
            let data = RecordData {
                timestamp: r.ts,
                key: r.key.as_deref(),
                value: &r.value,
                headers: &headers,
                tags: &tags,
            };
            b.push(&data).unwrap();
        }
        let mut bytes = BytesMut::from(&b.finish().unwrap()[..]);
        assert!(set_base_offset(&mut bytes, base_offset));
        bytes.freeze()
    }

    proptest! {
        #[test]
        fn round_trip(recs in proptest::collection::vec(rec_strategy(), 1..30), base in 0u64..1<<40) {
            let bytes = encode(&recs, base);
            let batch = Batch::parse(bytes.clone()).unwrap();
            prop_assert_eq!(batch.record_count() as usize, recs.len());
            prop_assert_eq!(batch.header().producer_id, 7);
            prop_assert_eq!(batch.header().max_timestamp, recs.iter().map(|r| r.ts).max().unwrap());
            for (i, (got, want)) in batch.records().zip(&recs).enumerate() {
                prop_assert_eq!(got.offset, base + i as u64);
                prop_assert_eq!(got.timestamp, want.ts);
                prop_assert_eq!(got.key, want.key.as_deref());
                prop_assert_eq!(got.value, &want.value[..]);
                let tags: Vec<&str> = got.tags().collect();
                prop_assert_eq!(tags, want.tags.iter().map(String::as_str).collect::<Vec<_>>());
                let headers: Vec<(&str, &[u8])> = got.headers().collect();
                let want_h: Vec<(&str, &[u8])> = want.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
                prop_assert_eq!(headers, want_h);
                // Zero-copy: the value view points into the batch's buffer.
                let owned = got.to_record(batch.bytes());
                prop_assert_eq!(&owned.value[..], &want.value[..]);
            }
            // Concatenated batches split back apart.
            let mut two = BytesMut::from(&bytes[..]);
            two.extend_from_slice(&encode(&recs, base + recs.len() as u64));
            let two = two.freeze();
            let parsed: Vec<_> = Batches::new(two.clone()).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(parsed.len(), 2);
            // The header walk finds the same boundaries without reading the records.
            let walked: Vec<BatchHeader> = headers(&two).collect();
            let want: Vec<BatchHeader> = parsed.iter().map(|b| *b.header()).collect();
            prop_assert_eq!(walked, want);
            // So does the CRC-checked split, leaving the records to a one-pass reader.
            let mut rest = two.clone();
            for b in &parsed {
                let split = split_crc_checked(&mut rest).unwrap();
                prop_assert_eq!(&split, b.bytes());
                let checked: Vec<_> = CheckedRecords::new(&split).unwrap().collect::<Result<_, _>>().unwrap();
                prop_assert_eq!(checked.len(), recs.len());
            }
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Batch::parse(Bytes::from(data.clone()));
            let _ = Batches::new(Bytes::from(data.clone())).count();
            let _ = headers(&data).count();
            let mut rest = Bytes::from(data.clone());
            while split_crc_checked(&mut rest).is_ok() {}
            let _ = BatchHeader::parse(&data);
        }

        #[test]
        fn corrupted_batches_are_rejected_not_panicking(
            recs in proptest::collection::vec(rec_strategy(), 1..8),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = encode(&recs, 0).to_vec();
            let mut bad = bytes.clone();
            for (idx, val) in &flips {
                let i = idx.index(bad.len());
                bad[i] ^= val | 1;
            }
            // Flipping any byte covered by the CRC or the fixed header must be caught.
            let base_offset_only = flips.iter().all(|(idx, _)| (OFF_BASE_OFFSET..OFF_CRC).contains(&idx.index(bytes.len())));
            let res = Batch::parse(Bytes::from(bad.clone()));
            prop_assert!(res.is_err() || base_offset_only);
            // The split and one-pass reader together catch the same.
            let mut rest = Bytes::from(bad);
            let one_pass = split_crc_checked(&mut rest).and_then(|b| {
                CheckedRecords::new(&b)?.collect::<Result<Vec<_>, _>>().map(|_| ())
            });
            prop_assert!(one_pass.is_err() || base_offset_only);
            let truncated = &bytes[..cut.index(bytes.len())];
            prop_assert!(Batch::parse(Bytes::copy_from_slice(truncated)).is_err());
        }
    }

    proptest! {
        #[test]
        fn select_keeps_exactly_the_chosen_records(
            recs in proptest::collection::vec(rec_strategy(), 1..30),
            mask in proptest::collection::vec(any::<bool>(), 30),
            base in 0u64..1 << 40,
        ) {
            let batch = Batch::parse(encode(&recs, base)).unwrap();
            let mut i = 0;
            let selected = select(&batch, |_| { i += 1; mask[i - 1] });
            let want: Vec<u64> = (0..recs.len()).filter(|&i| mask[i]).map(|i| base + i as u64).collect();
            match selected {
                None => prop_assert!(want.is_empty()),
                Some(bytes) => {
                    let out = Batch::parse(bytes).unwrap();
                    let got: Vec<u64> = out.records().map(|r| r.offset).collect();
                    prop_assert_eq!(&got, &want);
                    for r in out.records() {
                        let src = &recs[(r.offset - base) as usize];
                        prop_assert_eq!(r.value, &src.value[..]);
                        prop_assert_eq!(r.timestamp, src.ts);
                    }
                }
            }
        }

        #[test]
        fn checked_records_agree_with_parse(
            recs in proptest::collection::vec(rec_strategy(), 1..20),
            base in 0u64..1 << 40,
            flip in any::<prop::sample::Index>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = encode(&recs, base);
            let batch = Batch::parse(bytes.clone()).unwrap();
            let checked: Vec<RecordRef<'_>> =
                CheckedRecords::new(&bytes).unwrap().collect::<Result<_, _>>().unwrap();
            let parsed: Vec<RecordRef<'_>> = batch.records().collect();
            prop_assert_eq!(checked.len(), parsed.len());
            for (a, b) in checked.iter().zip(&parsed) {
                prop_assert_eq!((a.offset, a.raw()), (b.offset, b.raw()));
            }
            // Damaged input: never a panic, and whatever `parse_trusted` refuses ends in an error.
            let mut bad = bytes.to_vec();
            let i = flip.index(bad.len());
            bad[i] ^= 0x5a;
            let trusted_ok = Batch::parse_trusted(Bytes::from(bad.clone())).is_ok();
            let checked_ok = CheckedRecords::new(&bad).map(|it| it.collect::<Result<Vec<_>, _>>().is_ok());
            prop_assert_eq!(checked_ok.unwrap_or(false), trusted_ok);
            let truncated = &bytes[..cut.index(bytes.len())];
            let ok = CheckedRecords::new(truncated).map(|it| it.collect::<Result<Vec<_>, _>>().is_ok());
            prop_assert!(!ok.unwrap_or(false));
        }

        #[test]
        fn select_indexed_agrees_with_select(
            recs in proptest::collection::vec(rec_strategy(), 1..30),
            mask in proptest::collection::vec(any::<bool>(), 30),
            base in 0u64..1 << 40,
            from in 0u64..30,
        ) {
            let batch = Batch::parse(encode(&recs, base)).unwrap();
            let mut i = 0;
            let by_record = select(&batch, |r| { i += 1; mask[i - 1] && r.offset >= base + from });
            let by_index = select_indexed(&batch, |i, offset| mask[i] && offset >= base + from);
            prop_assert_eq!(by_record, by_index);
        }

        #[test]
        fn select_dense_agrees_with_rebuild(
            recs in proptest::collection::vec(rec_strategy(), 1..30),
            mask in proptest::collection::vec(any::<bool>(), 30),
            base in 0u64..1 << 40,
        ) {
            let batch = Batch::parse(encode(&recs, base)).unwrap();
            let indexes: Vec<usize> = (0..recs.len()).filter(|&i| mask[i]).collect();
            let dense = select_dense(&batch, &indexes).map(|b| Batch::parse(b).unwrap());
            let rebuilt = rebuild(&batch, &[], |i, _| mask[i]).unwrap().map(|b| Batch::parse(b).unwrap());
            prop_assert_eq!(dense.is_none(), rebuilt.is_none());
            if let (Some(d), Some(r)) = (dense, rebuilt) {
                prop_assert_eq!(d.header().flags & FLAG_SPARSE, 0);
                prop_assert_eq!(d.header().max_timestamp, r.header().max_timestamp);
                prop_assert_eq!(d.to_records().collect::<Vec<_>>(), r.to_records().collect::<Vec<_>>());
            }
        }

        #[test]
        fn rebuild_is_dense_and_keeps_fields_plus_extra_headers(
            recs in proptest::collection::vec(rec_strategy(), 1..30),
            mask in proptest::collection::vec(any::<bool>(), 30),
            base in 0u64..1 << 40,
        ) {
            let batch = Batch::parse(encode(&recs, base)).unwrap();
            let extra: [(&str, &[u8]); 1] = [("quiver-error", b"boom")];
            let rebuilt = rebuild(&batch, &extra, |i, _| mask[i]).unwrap();
            let kept: Vec<&OwnedRec> = recs.iter().enumerate().filter(|(i, _)| mask[*i]).map(|(_, r)| r).collect();
            match rebuilt {
                None => prop_assert!(kept.is_empty()),
                Some(bytes) => {
                    let out = Batch::parse(bytes).unwrap();
                    prop_assert_eq!(out.header().flags & FLAG_SPARSE, 0);
                    prop_assert_eq!(out.record_count() as usize, kept.len());
                    for (i, (r, src)) in out.records().zip(kept).enumerate() {
                        prop_assert_eq!(r.offset, i as u64);
                        prop_assert_eq!(r.value, &src.value[..]);
                        prop_assert_eq!(r.key, src.key.as_deref());
                        prop_assert_eq!(r.timestamp, src.ts);
                        prop_assert_eq!(r.header("quiver-error"), Some(&b"boom"[..]));
                        prop_assert_eq!(r.headers().count(), src.headers.len() + 1);
                    }
                }
            }
        }
    }

    #[test]
    fn header_checks() {
        let recs = vec![OwnedRec {
            ts: 5,
            key: None,
            value: b"v".to_vec(),
            headers: vec![],
            tags: vec![],
        }];
        let bytes = encode(&recs, 3);
        let h = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(
            (
                h.base_offset,
                h.record_count,
                h.last_offset(),
                h.next_offset()
            ),
            (3, 1, 3, 4)
        );
        let mut bad = bytes.to_vec();
        bad[0] = b'X';
        assert!(matches!(
            BatchHeader::parse(&bad),
            Err(BatchError::BadMagic(_))
        ));
        let mut bad = bytes.to_vec();
        bad[4] = 9;
        assert_eq!(
            BatchHeader::parse(&bad),
            Err(BatchError::UnsupportedVersion(9))
        );
        assert!(matches!(
            BatchBuilder::new().finish(),
            Err(BatchError::Empty)
        ));
    }

    /// Regression (fuzz target `batch`): records of a valid batch are each within the span of the
    /// batch's base timestamp, but two of them may be nearly twice the span apart; re-encoding a
    /// subset used to take the first kept record as the base and failed with `TimestampSpan`
    /// (a plugin filter dropping the first record then counted as the plugin's failure). These
    /// are the timestamps the fuzzer found.
    #[test]
    fn rebuild_keeps_the_base_timestamp_so_any_subset_fits() {
        let base = -1_711_276_033i64;
        let mut b = BatchBuilder::new();
        for ts in [base, -3_422_552_066, 0] {
            b.push(&RecordData {
                timestamp: ts,
                value: b"v",
                ..Default::default()
            })
            .unwrap();
        }
        let batch = Batch::parse(b.finish().unwrap()).unwrap();
        let rebuilt = rebuild(&batch, &[("x", b"1")], |i, _| i > 0)
            .unwrap()
            .unwrap();
        let rebuilt = Batch::parse(rebuilt).unwrap();
        let ts: Vec<i64> = rebuilt.records().map(|r| r.timestamp).collect();
        assert_eq!(ts, [-3_422_552_066, 0]);
        assert_eq!(rebuilt.header().base_timestamp, base);
        assert_eq!(rebuilt.header().max_timestamp, 0);
    }

    #[test]
    fn timestamp_span_is_checked() {
        let mut b = BatchBuilder::new();
        b.push(&RecordData {
            timestamp: 0,
            ..Default::default()
        })
        .unwrap();
        let far = RecordData {
            timestamp: 40 * 86_400_000,
            ..Default::default()
        };
        assert!(matches!(
            b.push(&far),
            Err(BatchError::TimestampSpan { .. })
        ));
    }
}
