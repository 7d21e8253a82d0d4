//! The Quiver broker as a library: storage engine, metadata store and (in later modules) transport,
//! groups and the plugin host. The `quiver` binary and the integration tests drive it from here.

pub mod meta;
pub mod storage;
pub mod util;
