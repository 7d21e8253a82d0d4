//! The SDK's error type. Every variant reads as a sentence an operator can act on, because the text
//! crosses the WIT boundary as the `string` of `result<_, string>` and ends up in the broker's logs,
//! in a dead-letter header or in a producer's error.

use quiver_proto::BatchError;

/// What can go wrong between the broker's bytes and the author's function.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdkError {
    /// `Config::require` on a key the attachment did not set.
    #[error("missing required config `{key}` (attach with --config {key}=...)")]
    MissingConfig { key: String },
    /// A key was set but holds nothing usable (empty, or a list of empty items).
    #[error("config `{key}` is empty (attach with --config {key}=...)")]
    EmptyConfig { key: String },
    /// A key holds a value the plugin does not understand.
    #[error("config `{key}` has invalid value {value:?}: expected {expected}")]
    InvalidConfig {
        key: String,
        value: String,
        expected: String,
    },
    /// A batch function ran before `init` succeeded (the broker always calls `init` first).
    #[error("the plugin was called before a successful init")]
    NotInitialised,
    /// The bytes the broker passed are not a valid batch.
    #[error("input batch rejected: {0}")]
    BadBatch(BatchError),
    /// A record the transform produced cannot be encoded (a field over the format's limits, or
    /// timestamps more than ±24 days apart within one batch).
    #[error("output record {index} cannot be encoded: {source}")]
    Encode { index: usize, source: BatchError },
    /// The author's function failed on one record; this fails the whole batch.
    #[error("record at offset {offset}: {message}")]
    Record { offset: u64, message: String },
}

/// The WIT functions return `result<_, string>`; `?` on an `SdkError` in an author's `init`
/// (which returns `Result<_, String>`) goes through this.
impl From<SdkError> for String {
    fn from(err: SdkError) -> String {
        err.to_string()
    }
}
