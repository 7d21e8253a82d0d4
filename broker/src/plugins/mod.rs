//! The WebAssembly plugin host: one wasmtime engine ([`engine`]), the sandbox every instance runs in
//! ([`sandbox`]), live instances ([`instance`]), the registry of deployed components
//! ([`registry`]) and the lines they log ([`logs`]), topic ingest pipelines with error policies
//! and health ([`pipeline`]) and consumer read filters ([`read_filter`]). See docs/plugins.md.

pub mod engine;
pub mod instance;
pub mod logs;
pub mod pipeline;
pub mod read_filter;
pub mod registry;
pub mod sandbox;
mod slot;

use std::path::{Path, PathBuf};

use quiver_proto::ErrorCode;

pub use engine::{EngineLimits, PluginEngine};
pub use instance::{Limits, PluginInstance, PluginPre, World};
pub use pipeline::{Ingested, Pipelines};
pub use read_filter::ReadFilter;
pub use registry::PluginRegistry;

use crate::meta::MetaError;

/// SHA-256 of `bytes`, lowercase hex: the content hash of components and compiled artifacts.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// How a plugin call failed; decides whether the instance survives and whether it counts against
/// the attachment's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The plugin returned an error for the batch: the instance is fine.
    Returned,
    /// It trapped (a panic, an invalid operation, a failed instantiation).
    Trap,
    /// It ran past its time limit.
    Timeout,
    /// It grew its memory past its limit.
    Memory,
    /// It broke the output contract (wrong verdict count, oversized or invalid batch, reserved or
    /// invalid headers).
    Output,
    /// A replacement instance (after a trap, a timeout or a memory-limit hit) refused its `init`:
    /// the stage cannot process batches until the plugin accepts its configuration again.
    Reinit,
    /// The attachment is unhealthy and was not called.
    Unhealthy,
    /// The broker is out of plugin capacity (instances, or the instance is busy for longer than a
    /// call may take): not the plugin's fault, and retriable.
    Busy,
    /// Growing the instance's memory would take all plugins past the broker-wide memory budget:
    /// the instance is discarded (its grow trapped), the batch is retriable.
    OverBudget,
}

impl Failure {
    /// After these the instance is unusable (a trapped component cannot be entered again).
    pub fn poisons_instance(self) -> bool {
        matches!(
            self,
            Failure::Trap | Failure::Timeout | Failure::Memory | Failure::OverBudget
        )
    }

    /// These count towards marking an attachment unhealthy: everything the plugin did wrong. An
    /// error the plugin returned for a batch is its verdict on the data, and the broker's own
    /// conditions (capacity, budget) are not the plugin's fault.
    pub fn counts_against_health(self) -> bool {
        matches!(
            self,
            Failure::Trap | Failure::Timeout | Failure::Memory | Failure::Output | Failure::Reinit
        )
    }

    /// The broker's condition rather than the batch's: the producer should retry, and no error
    /// policy applies.
    pub fn is_retriable(self) -> bool {
        matches!(self, Failure::Busy | Failure::OverBudget)
    }
}

/// Errors of the plugin host.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("plugin engine: {0}")]
    Engine(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("unknown plugin {0}")]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("plugin {plugin} is attached to {}; detach it first", topics.join(", "))]
    InUse { plugin: String, topics: Vec<String> },
    #[error("plugin {plugin}: {message}")]
    Init { plugin: String, message: String },
    #[error("plugin {plugin}: {message}")]
    Failed {
        plugin: String,
        kind: Failure,
        message: String,
    },
}

impl PluginError {
    pub(crate) fn engine(e: wasmtime::Error) -> PluginError {
        PluginError::Engine(format!("{e:#}"))
    }

    pub(crate) fn invalid(e: wasmtime::Error) -> PluginError {
        PluginError::Invalid(format!("{e:#}"))
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> PluginError {
        PluginError::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// The failure kind of a failed call, if this is one.
    pub fn failure(&self) -> Option<Failure> {
        match self {
            PluginError::Failed { kind, .. } => Some(*kind),
            // An init that traps is a trap; one that refuses is the operator's configuration.
            _ => None,
        }
    }

    /// The stable error code sent to clients.
    pub fn code(&self) -> ErrorCode {
        match self {
            PluginError::Engine(_) => ErrorCode::Internal,
            PluginError::Io { .. } | PluginError::Meta(_) => ErrorCode::StorageError,
            PluginError::Unknown(_) => ErrorCode::UnknownPlugin,
            PluginError::Invalid(_) => ErrorCode::InvalidPlugin,
            PluginError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            PluginError::InUse { .. } => ErrorCode::PluginInUse,
            PluginError::Init { .. } => ErrorCode::PluginInitFailed,
            PluginError::Failed { kind, .. } if kind.is_retriable() => ErrorCode::ServerBusy,
            PluginError::Failed { .. } => ErrorCode::PluginFailed,
        }
    }
}
