//! The reserved-header rule, applied to every produced batch and to the output of every plugin
//! stage that writes records: `quiver-*` headers other than the client-settable ones
//! ([`quiver_proto::headers::CLIENT_SETTABLE`]) are the broker's and are refused, so records a
//! consumer reads carry them only where the broker wrote them (dead letters, delayed deliveries).

use quiver_proto::headers::{client_may_set, CLIENT_SETTABLE, PREFIX};
use quiver_proto::Batch;

/// A record of the batch carries a header only the broker may write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header {name} is reserved for the broker (of the quiver- headers, records may carry only {})", CLIENT_SETTABLE.join(", "))]
pub struct ReservedHeader {
    /// The header's name (its first 64 bytes).
    pub name: String,
}

/// Refuses a batch with a reserved header no client may set. Batches without the prefix anywhere
/// in their bytes (almost all) are passed after one `memmem` scan, without decoding a record.
pub fn check(batch: &Batch) -> Result<(), ReservedHeader> {
    if memchr::memmem::find(batch.bytes(), PREFIX.as_bytes()).is_none() {
        return Ok(());
    }
    for record in batch.records() {
        if let Some((name, _)) = record.headers().find(|(n, _)| !client_may_set(n)) {
            let mut name = name.to_owned();
            crate::util::truncate_utf8(&mut name, 64);
            return Err(ReservedHeader { name });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_proto::{BatchBuilder, RecordData};

    fn batch(headers: &[(&str, &[u8])]) -> Batch {
        let mut b = BatchBuilder::new();
        for value in [&b"quiver-error in a value is data"[..], b"v"] {
            b.push(&RecordData {
                timestamp: 1,
                key: Some(b"quiver-plugin"),
                value,
                headers,
                tags: &["quiver-group"],
            })
            .unwrap();
        }
        Batch::parse(b.finish().unwrap()).unwrap()
    }

    #[test]
    fn only_header_names_count() {
        check(&batch(&[])).unwrap();
        check(&batch(&[("trace", b"quiver-error")])).unwrap();
        check(&batch(&[
            ("quiver-reply-to", b"replies"),
            ("quiver-correlation-id", b"7"),
            ("quiver-delay-ms", b"10"),
        ]))
        .unwrap();
    }

    #[test]
    fn broker_headers_are_refused_by_name() {
        for name in [
            "quiver-error",
            "quiver-delay-id",
            "quiver-group",
            "quiver-x",
        ] {
            let e = check(&batch(&[("a", b"1"), (name, b"forged")])).unwrap_err();
            assert_eq!(e.name, name);
            assert!(e.to_string().contains("quiver-reply-to"), "{e}");
        }
    }
}
