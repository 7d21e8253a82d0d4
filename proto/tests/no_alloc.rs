//! Decoding untrusted bytes must not allocate: a counting global allocator proves that parsing a batch,
//! valid or hostile, allocates nothing beyond what the input itself holds.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::Bytes;
use proptest::prelude::*;
use quiver_proto::{Batch, BatchBuilder, RecordData};

struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocated_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    (out, ALLOCATED.with(Cell::get) - before)
}

proptest! {
    #[test]
    fn parsing_arbitrary_bytes_allocates_nothing(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        // Cloned before measuring: the first clone of a Vec-backed `Bytes` allocates its shared header.
        let bytes = Bytes::from(data);
        let input = bytes.clone();
        let (_, n) = allocated_during(move || Batch::parse(input).map(|b| b.records().count()));
        prop_assert_eq!(n, 0);
    }

    #[test]
    fn parsing_a_claimed_huge_batch_allocates_nothing(count in any::<u32>(), len in any::<u32>()) {
        let mut b = BatchBuilder::new();
        b.push(&RecordData { value: b"x", ..Default::default() }).unwrap();
        let mut raw = b.finish().unwrap().to_vec();
        raw[8..12].copy_from_slice(&len.to_le_bytes());
        raw[40..44].copy_from_slice(&count.to_le_bytes());
        let bytes = Bytes::from(raw);
        let input = bytes.clone();
        let (res, n) = allocated_during(move || Batch::parse(input).map(|b| b.records().count()));
        prop_assert_eq!(n, 0);
        prop_assert!(res.is_err() || (count == 1 && len as usize == bytes.len()));
    }
}

#[test]
fn iterating_a_valid_batch_allocates_nothing() {
    let mut b = BatchBuilder::new();
    for i in 0..100u32 {
        let v = i.to_le_bytes();
        b.push(&RecordData {
            value: &v,
            tags: &["a", "b"],
            headers: &[("h", b"1")],
            ..Default::default()
        })
        .unwrap();
    }
    let bytes = b.finish().unwrap();
    let input = bytes.clone();
    let (sum, n) = allocated_during(move || {
        let batch = Batch::parse(input).unwrap();
        batch
            .records()
            .map(|r| r.value.len() + r.tags().count() + r.headers().count())
            .sum::<usize>()
    });
    assert_eq!(sum, 100 * 7);
    assert_eq!(n, 0);
}
