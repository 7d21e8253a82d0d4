//! The `quiver` umbrella crate: re-exports the client API so applications depend on one crate.

pub use quiver_client::*;
pub use quiver_proto as proto;
