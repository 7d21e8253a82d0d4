//! The Quiver client library. Until the transport lands it exposes the record types shared with the
//! broker; `Client`, `Producer`, `Consumer` and `Admin` build on QUIC in the transport issue.

pub use quiver_proto::{Batch, BatchBuilder, Record, RecordData, RecordRef};
