//! The Quiver broker as a library: storage engine, metadata store, the WebAssembly plugin host, the
//! broker core and its QUIC transport. The `quiver` binary and the integration tests drive it from here.

pub mod broker;
pub mod config;
pub mod delay;
pub mod filter;
pub mod groups;
pub mod meta;
pub mod plugins;
pub mod producers;
pub mod routing;
pub mod storage;
pub mod transport;
pub mod util;

pub use broker::{Broker, BrokerError};
pub use config::BrokerConfig;
