//! The output of a transform: records pushed here are encoded straight into the replacement batch
//! (one buffer, sized from the input), so keeping a record costs a copy of its bytes and nothing more.

use quiver_proto::{BatchBuilder, RecordData};

use crate::{OwnedRecord, Record, SdkError};

/// Collects the records a transform emits, in order; their offsets are renumbered from 0.
#[derive(Debug)]
pub struct Output {
    builder: BatchBuilder,
}

impl Output {
    /// An output whose buffer starts with room for `bytes` bytes (the input's size is a good guess).
    pub fn with_capacity(bytes: usize) -> Output {
        Output {
            builder: BatchBuilder::with_capacity(bytes),
        }
    }

    /// Emits `record` unchanged (timestamp, key, value, headers and tags).
    pub fn keep(&mut self, record: &Record<'_>) -> Result<(), SdkError> {
        self.keep_with_value(record, record.value)
    }

    /// Emits `record` with its value replaced by `value`; everything else is kept.
    pub fn keep_with_value(&mut self, record: &Record<'_>, value: &[u8]) -> Result<(), SdkError> {
        // Collecting an empty iterator does not allocate, so records without tags or headers cost
        // nothing extra here.
        let headers: Vec<(&str, &[u8])> = record.headers().collect();
        let tags: Vec<&str> = record.tags().collect();
        self.push(&RecordData {
            timestamp: record.timestamp,
            key: record.key,
            value,
            headers: &headers,
            tags: &tags,
        })
    }

    /// Emits a record described by borrowed parts.
    pub fn push(&mut self, data: &RecordData<'_>) -> Result<(), SdkError> {
        let index = self.builder.len();
        self.builder
            .push(data)
            .map_err(|source| SdkError::Encode { index, source })
    }

    /// Emits an owned record.
    pub fn push_owned(&mut self, record: &OwnedRecord) -> Result<(), SdkError> {
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let tags: Vec<&str> = record.tags.iter().map(String::as_str).collect();
        self.push(&RecordData {
            timestamp: record.timestamp,
            key: record.key.as_deref(),
            value: &record.value,
            headers: &headers,
            tags: &tags,
        })
    }

    /// Records emitted so far.
    pub fn len(&self) -> usize {
        self.builder.len()
    }

    pub fn is_empty(&self) -> bool {
        self.builder.is_empty()
    }

    /// The encoded batch, or an empty list when nothing was emitted (the WIT's "drop all").
    pub fn finish(self) -> Result<Vec<u8>, SdkError> {
        if self.builder.is_empty() {
            return Ok(Vec::new());
        }
        let index = self.builder.len();
        let bytes = self
            .builder
            .finish()
            .map_err(|source| SdkError::Encode { index, source })?;
        Ok(bytes.into())
    }
}
