//! Edge mirroring: an edge broker forwards chosen topics to a core broker over QUIC/TLS as an
//! ordinary authenticated client, store-and-forward (its producers never wait for the core) and
//! exactly once (idempotent produce with acks=all, the position committed after the core
//! acknowledged, and a scan of the core's tail when a session starts). docs/mirroring.md.
//!
//! The broker keeps the definitions, positions and status (`quiver_broker::mirrors`); this crate
//! runs the links, one task per mirror, under the server's supervisor.

mod backoff;
mod error;
mod forward;
mod link;
mod manager;
mod pull;
mod record;
mod resume;
mod session;

pub use error::LinkError;
pub use link::producer_config;
pub use manager::start;
