//! Quiver's sans-IO protocol core: the record batch encoding shared by the wire, the segment files and
//! plugins. Nothing here does I/O, so the same code serves the broker, the client and guest plugins.

pub mod batch;
mod bytes_le;

pub use batch::{
    Batch, BatchBuilder, BatchError, BatchHeader, Batches, HeaderIter, Record, RecordData, RecordIter,
    RecordRef, TagIter,
};
