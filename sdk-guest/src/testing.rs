//! Helpers for plugin authors' native tests: build the batch bytes the broker would pass, and read
//! back the batch a transform returns. Plain functions over the real batch codec, so a test that
//! passes here exercises the same bytes as the broker.

use bytes::Bytes;
use quiver_proto::Batch;

use crate::{Output, OwnedRecord, SdkError};

/// Encodes `records` as one batch (offsets 0..n). An empty slice gives an empty list, which is what a
/// transform returns to drop everything (a batch itself always holds at least one record).
pub fn encode(records: &[OwnedRecord]) -> Result<Vec<u8>, SdkError> {
    let mut out = Output::with_capacity(records.iter().map(|r| r.value.len() + 64).sum());
    for record in records {
        out.push_owned(record)?;
    }
    out.finish()
}

/// Decodes a batch into owned records; an empty list decodes to no records.
pub fn decode(batch: &[u8]) -> Result<Vec<OwnedRecord>, SdkError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let batch = Batch::parse(Bytes::copy_from_slice(batch)).map_err(SdkError::BadBatch)?;
    Ok(batch
        .records()
        .map(|r| OwnedRecord::from_record(&r))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let recs = vec![
            OwnedRecord::new("v")
                .with_timestamp(5)
                .with_key("k")
                .with_tag("t")
                .with_header("h", "x"),
            OwnedRecord::new(Vec::new()).with_timestamp(6),
        ];
        assert_eq!(decode(&encode(&recs).unwrap()).unwrap(), recs);
        assert!(encode(&[]).unwrap().is_empty());
        assert!(decode(&[]).unwrap().is_empty());
        assert!(decode(b"nope").is_err());
    }
}
