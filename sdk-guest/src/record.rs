//! Records as a plugin sees them: [`Record`] is a zero-copy view into the batch the broker passed
//! (no allocation to read a key, value, tag or header), and [`OwnedRecord`] is a record a transform
//! builds from scratch.

use crate::log::now_ms;

/// A record inside the input batch, borrowed from its bytes: `offset`, `timestamp`, `key` and
/// `value` are fields; `tags()`, `has_tag(t)`, `headers()` and `header(name)` walk the encoded
/// tags and headers in place. Valid only for the duration of the call that received it.
pub type Record<'a> = quiver_proto::RecordRef<'a>;

/// A record a transform creates or rewrites wholesale. `Output::keep` and `Output::keep_with_value`
/// avoid building one when only the value changes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnedRecord {
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub tags: Vec<String>,
}

impl OwnedRecord {
    /// A record holding `value`, stamped with the broker's current time, no key, tags or headers.
    pub fn new(value: impl Into<Vec<u8>>) -> OwnedRecord {
        OwnedRecord {
            timestamp: now_ms(),
            value: value.into(),
            ..OwnedRecord::default()
        }
    }

    /// A copy of `record` (timestamp, key, value, headers and tags; the offset is reassigned).
    pub fn from_record(record: &Record<'_>) -> OwnedRecord {
        OwnedRecord {
            timestamp: record.timestamp,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.to_vec(),
            headers: record
                .headers()
                .map(|(n, v)| (n.to_owned(), v.to_vec()))
                .collect(),
            tags: record.tags().map(str::to_owned).collect(),
        }
    }

    pub fn with_timestamp(mut self, timestamp: i64) -> OwnedRecord {
        self.timestamp = timestamp;
        self
    }

    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> OwnedRecord {
        self.key = Some(key.into());
        self
    }

    pub fn with_value(mut self, value: impl Into<Vec<u8>>) -> OwnedRecord {
        self.value = value.into();
        self
    }

    pub fn with_tag(mut self, tag: impl Into<String>) -> OwnedRecord {
        self.tags.push(tag.into());
        self
    }

    pub fn with_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> OwnedRecord {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

impl From<&Record<'_>> for OwnedRecord {
    fn from(record: &Record<'_>) -> OwnedRecord {
        OwnedRecord::from_record(record)
    }
}
