//! The record values the workloads send.

use bytes::Bytes;

/// `batch` record values of `size` bytes (shared buffers: cloning one is a reference count).
pub fn values(size: usize, batch: usize) -> Vec<Bytes> {
    let pattern: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    let value = Bytes::from(pattern);
    vec![value; batch]
}
