//! A record as the other broker receives it: the same key, value, tags and timestamp, its headers
//! (a broker-written `quiver-*` header renamed `edge-quiver-*` or `core-quiver-*` after where it
//! came from, since the receiver would refuse it and a delay request would be held again), and
//! the source header naming where it came from.

use bytes::Bytes;
use quiver::ProducerRecord;
use quiver_proto::headers::{forwarded_name, forwards_unchanged};
use quiver_proto::mirror::{source_value, SOURCE_HEADER};
use quiver_proto::RecordRef;

/// Where the records of one edge partition go.
#[derive(Debug, Clone)]
pub struct Route {
    pub topic: String,
    pub partition: u32,
    pub target_topic: String,
    pub target_partition: u32,
    /// `SOURCE/TOPIC/PARTITION/`, the start of every record's source header.
    prefix: String,
}

impl Route {
    pub fn new(
        source_id: String,
        topic: String,
        partition: u32,
        target_topic: String,
        target_partition: u32,
    ) -> Route {
        let mut prefix = source_value(&source_id, &topic, partition, 0);
        prefix.pop();
        Route {
            topic,
            partition,
            target_topic,
            target_partition,
            prefix,
        }
    }

    /// The record to produce for `rec`, a record of the batch `batch` (its bytes are shared, not
    /// copied).
    pub fn record(&self, batch: &Bytes, rec: &RecordRef<'_>) -> ProducerRecord {
        let headers = rec.headers().map(|(n, v)| (n, batch.slice_ref(v)));
        let headers = self.headers("edge", headers, rec.offset);
        ProducerRecord {
            topic: self.target_topic.clone(),
            partition: Some(self.target_partition),
            key: rec.key.map(|k| batch.slice_ref(k)),
            value: batch.slice_ref(rec.value),
            headers,
            tags: rec.tags().map(str::to_owned).collect(),
            timestamp: Some(rec.timestamp),
            exchange: false,
        }
    }

    /// A record's headers for the other broker, from `origin` (`edge`, `core`), with the source
    /// header of its `offset` last.
    pub fn headers<'a>(
        &self,
        origin: &str,
        headers: impl Iterator<Item = (&'a str, Bytes)>,
        offset: u64,
    ) -> Vec<(String, Bytes)> {
        let mut out: Vec<(String, Bytes)> = headers
            .map(|(name, value)| match forwards_unchanged(name) {
                true => (name.to_owned(), value),
                false => (forwarded_name(origin, name), value),
            })
            .collect();
        let mut source = Vec::with_capacity(self.prefix.len() + 20);
        source.extend_from_slice(self.prefix.as_bytes());
        source.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
        out.push((SOURCE_HEADER.to_owned(), Bytes::from(source)));
        out
    }

    /// The source header prefix of this partition's records: `SOURCE/TOPIC/PARTITION/`.
    pub fn source_prefix(&self) -> &str {
        &self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::{Batch, BatchBuilder, RecordData};

    #[test]
    fn keeps_the_record_and_renames_broker_headers() {
        let mut b = BatchBuilder::new();
        b.push(&RecordData {
            timestamp: 1234,
            key: Some(b"k"),
            value: b"v",
            headers: &[
                ("trace", b"1"),
                ("quiver-error", b"boom"),
                ("quiver-delay-ms", b"10"),
                ("quiver-reply-to", b"r"),
            ],
            tags: &["vip"],
        })
        .unwrap();
        let batch = Batch::parse(b.finish().unwrap()).unwrap();
        let route = Route::new("edge-1".into(), "orders".into(), 2, "site.orders".into(), 0);
        let rec = batch.records().next().unwrap();
        let out = route.record(batch.bytes(), &rec);
        assert_eq!(out.topic, "site.orders");
        assert_eq!(out.partition, Some(0));
        assert_eq!(out.timestamp, Some(1234));
        assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out.tags, vec!["vip".to_owned()]);
        let names: Vec<&str> = out.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "trace",
                "edge-quiver-error",
                "edge-quiver-delay-ms",
                "quiver-reply-to",
                SOURCE_HEADER
            ]
        );
        assert_eq!(&out.headers[4].1[..], b"edge-1/orders/2/0");
        assert_eq!(route.source_prefix(), "edge-1/orders/2/");
    }
}
