//! Fuzz target: record batches (proto/src/batch.rs) — parsing (`BatchHeader::parse`,
//! `peek_length`, `validate`, `Batch::parse` / `parse_trusted`, `CheckedRecords`, `Batches`),
//! iterating records, and cutting batches down (`select`, `select_indexed`, `select_dense`,
//! `rebuild`), as the broker does with every produced batch and every fetch.
//!
//! Input: byte 0 is the mode. Bit 0 set: the batch is built from the input by `BatchBuilder`, then
//! bytes of it are overwritten (so the fuzzer starts from valid batches and breaks them in place);
//! clear: the rest of the input is the batch bytes. Bit 1: the CRC is recomputed before parsing,
//! because a fuzzer would almost never get past a CRC32C by chance and the record checks behind it
//! are what matters (`parse_trusted` skips the CRC in the broker for the same bytes).
//! Bits 2..: which records the cutting functions keep.

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use quiver_proto::batch::{
    self, compute_crc, select, select_dense, select_indexed, validate, Batch, BatchHeader, Batches,
    CheckedRecords, FLAG_SPARSE, HEADER_LEN,
};

fuzz_target!(|data: &[u8]| {
    let [mode, rest @ ..] = data else {
        return;
    };
    let mut bytes = if mode & 1 == 1 {
        match built_then_damaged(rest) {
            Some(b) => b,
            None => return,
        }
    } else {
        rest.to_vec()
    };
    if mode & 2 == 2 && bytes.len() >= 24 {
        let crc = compute_crc(&bytes);
        bytes[20..24].copy_from_slice(&crc.to_le_bytes());
    }
    parse_all_ways(&bytes, mode >> 2);
});

/// A valid batch from the first part of `input`, with bytes overwritten as the rest says:
/// (position, value) pairs.
fn built_then_damaged(input: &[u8]) -> Option<Vec<u8>> {
    let mut u = Unstructured::new(input);
    let batch = quiver_fuzz::batch(&mut u).ok()??;
    let mut bytes = batch.bytes().to_vec();
    let edits = u.take_rest();
    for pair in edits.chunks_exact(3) {
        let at = u16::from_le_bytes([pair[0], pair[1]]) as usize % bytes.len();
        bytes[at] = pair[2];
    }
    Some(bytes)
}

fn parse_all_ways(bytes: &[u8], keep_bits: u8) {
    let header = BatchHeader::parse(bytes);
    if let Ok(h) = &header {
        assert_eq!(BatchHeader::peek_length(bytes), Ok(h.length as usize));
        assert!(h.length as usize >= HEADER_LEN && h.record_count > 0);
        let _ = (h.last_offset(), h.next_offset());
    }
    let validated = validate(bytes);
    let parsed = Batch::parse(Bytes::copy_from_slice(bytes));
    let trusted = Batch::parse_trusted(Bytes::copy_from_slice(bytes));
    // The single-pass reader agrees with the full check (CRC aside) on exactly-one-batch bytes.
    let single: Option<Result<Vec<_>, _>> = CheckedRecords::new(bytes).ok().map(|c| c.collect());
    match (&trusted, &single) {
        (Ok(b), Some(Ok(recs))) => assert_eq!(recs.len(), b.record_count() as usize),
        (Ok(_), _) => panic!("parse_trusted accepted what CheckedRecords refused"),
        (Err(_), Some(Ok(_))) => panic!("CheckedRecords accepted what parse_trusted refused"),
        (Err(_), _) => {}
    }
    if let Ok(b) = &parsed {
        assert!(
            trusted.is_ok(),
            "a CRC-checked batch passes without the CRC check"
        );
        assert_eq!(validated.as_ref().ok(), Some(b.header()));
        exercise(b, keep_bits);
    }
    // A buffer of several batches: the same bytes twice, as a fetch response carries them.
    let twice = Bytes::from([bytes, bytes].concat());
    let mut n = 0;
    for item in Batches::new(twice) {
        match item {
            Ok(b) => {
                assert!(parsed.is_ok() || validated.is_ok());
                exercise(&b, keep_bits);
                n += 1;
            }
            Err(_) => break,
        }
    }
    assert!(n <= 2 || validated.is_ok(), "{n} batches out of two copies");
}

/// Reads every record of a valid batch and cuts it down every way the broker does.
fn exercise(b: &Batch, keep_bits: u8) {
    let count = b.record_count() as usize;
    let mut seen = 0;
    for r in b.records() {
        seen += 1;
        let _ = (r.tags().count(), r.headers().count(), r.has_tag("eu"));
        let _ = r.header("lang");
        let owned = r.to_record(b.bytes());
        assert_eq!(owned.value, r.value);
        assert_eq!(owned.tags.len(), r.tags().count());
    }
    assert_eq!(seen, count, "iteration stops early in a validated batch");
    assert_eq!(b.to_records().count(), count);

    let keep = |i: usize| (keep_bits >> (i % 6)) & 1 == 1;
    let kept: Vec<usize> = (0..count).filter(|&i| keep(i)).collect();

    // select: the kept records, verbatim, in a sparse batch (or the batch itself, or None).
    let mut i = 0;
    let sel = select(b, |_| {
        i += 1;
        keep(i - 1)
    });
    let by_index = select_indexed(b, |i, _| keep(i));
    assert_eq!(sel, by_index, "select and select_indexed disagree");
    check_cut(b, sel, &kept, true);

    // select_dense: the kept records renumbered from 0 in a dense batch.
    let dense = select_dense(b, &kept);
    check_cut(b, dense.clone(), &kept, false);
    if let Some(d) = dense {
        let d = Batch::parse(d).expect("select_dense output parses");
        assert_eq!(d.header().flags & FLAG_SPARSE, 0);
        assert_eq!(d.base_offset(), 0);
    }

    // rebuild: re-encoded, with an extra header on every record.
    let extra: [(&str, &[u8]); 1] = [("fuzz", b"1")];
    match batch::rebuild(b, &extra, |i, _| keep(i)) {
        Ok(r) => {
            check_cut(b, r.clone(), &kept, false);
            if let Some(r) = r {
                let r = Batch::parse(r).expect("rebuild output parses");
                // Added after the record's own headers (which may have that name too).
                let last =
                    |rec: batch::RecordRef<'_>| rec.headers().last() == Some(("fuzz", &b"1"[..]));
                assert!(r.records().all(last));
            }
        }
        // Only a record at the format's limits cannot take one more header.
        Err(e) => assert!(matches!(e, batch::BatchError::FieldTooLong { .. }), "{e}"),
    }
}

/// A cut of `b` keeps exactly the records `kept`, with their keys and values, and parses.
fn check_cut(b: &Batch, cut: Option<Bytes>, kept: &[usize], same_offsets: bool) {
    let Some(cut) = cut else {
        assert!(kept.is_empty(), "records were kept but nothing came out");
        return;
    };
    assert!(!kept.is_empty(), "nothing was kept but a batch came out");
    let cut = Batch::parse(cut).expect("a cut batch parses");
    let originals: Vec<_> = b.records().collect();
    let got: Vec<_> = cut.records().collect();
    assert_eq!(got.len(), kept.len());
    for (r, &i) in got.iter().zip(kept) {
        let o = &originals[i];
        assert_eq!((r.key, r.value), (o.key, o.value));
        assert_eq!(r.timestamp, o.timestamp);
        if same_offsets {
            assert_eq!(r.offset, o.offset);
        }
    }
}
