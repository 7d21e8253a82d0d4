//! The Quiver broker as a library: the stores (segment-log storage, metadata, the WebAssembly
//! plugin host, group state, exchanges, the delay store), the services over them, the supervisor
//! of background work, and the QUIC transport that drives the services. The `quiver` binary and
//! the integration tests drive it from here. docs/architecture.md maps it.

pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
mod coordination;
pub mod delay;
pub mod error;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod groups;
pub mod headers;
pub mod http;
pub mod meta;
pub mod mirrors;
pub mod offload;
pub mod plugins;
pub mod replication;
pub mod routing;
pub mod services;
pub mod storage;
pub mod supervisor;
pub mod telemetry;
pub mod transport;
pub mod util;

pub use broker::Broker;
pub use config::BrokerConfig;
pub use error::BrokerError;
pub use supervisor::Supervisor;
