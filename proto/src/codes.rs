//! Error codes carried in `Error` frames: a stable `u16` number per failure, with human text and a
//! retry hint (see docs/protocol.md for the table).
//!
//! Invariants: numbers never change meaning once released; a number this build does not know
//! decodes as [`ErrorCode::Unknown`], so an old client can still read an error from a newer broker.

use std::fmt;

/// Why a request failed. The discriminant is the number on the wire.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Fallback for numbers this build does not know (and for failures with no better code).
    Unknown = 0,
    MalformedFrame = 1,
    FrameTooLarge = 2,
    UnsupportedVersion = 3,
    InvalidRequest = 4,
    UnknownTopic = 10,
    UnknownPartition = 11,
    TopicExists = 12,
    InvalidTopicName = 13,
    InvalidConfig = 14,
    TopicUnavailable = 15,
    UnknownExchange = 16,
    ExchangeExists = 17,
    OffsetOutOfRange = 20,
    InvalidBatch = 21,
    RecordTooLarge = 22,
    /// An idempotent producer's batch skips sequence numbers (an earlier batch has not arrived
    /// yet); retry after the earlier ones.
    OutOfOrderSequence = 23,
    /// A newer producer took an id under the same fencing key: this producer may not write any
    /// more (it is a zombie of an earlier session).
    ProducerFenced = 24,
    /// Records produced to an exchange match no binding, and it has no alternate topic.
    Unroutable = 25,
    /// No record with that id is held for delayed delivery (never, or already delivered or
    /// cancelled).
    UnknownDelayed = 26,
    /// This node does not lead the partition (a cluster moved or elected its leader): refresh
    /// metadata and send the request to the leader it names.
    NotLeader = 27,
    /// Fewer replicas of the partition are in sync than the topic's `min-insync`: an `acks=all`
    /// produce is refused rather than acknowledged with less redundancy. Retry later.
    NotEnoughReplicas = 28,
    StorageError = 30,
    DiskFull = 31,
    Timeout = 40,
    ServerBusy = 41,
    ShuttingDown = 42,
    NotAuthorized = 50,
    /// No plugin (or no such version) is deployed under that name.
    UnknownPlugin = 60,
    /// The bytes are not a component of a known plugin world, or it cannot be linked.
    InvalidPlugin = 61,
    /// A plugin's `init` refused its configuration.
    PluginInitFailed = 62,
    /// A plugin call failed: it returned an error, trapped, ran out of time or memory, or broke
    /// its output contract.
    PluginFailed = 63,
    /// A plugin is in use (attached) and cannot be removed.
    PluginInUse = 64,
    /// The member is not in the group (its session expired, or it left): join again.
    UnknownMember = 70,
    /// The member does not own a partition it tried to commit (the partition moved).
    NotPartitionOwner = 71,
    /// The operation needs a group without live members on the topic.
    GroupActive = 72,
    /// No mirror of that name is defined on this broker.
    UnknownMirror = 80,
    Internal = 99,
}

impl ErrorCode {
    /// Every code, in numeric order (for tables, docs and exhaustive tests).
    pub const ALL: [ErrorCode; 38] = [
        ErrorCode::Unknown,
        ErrorCode::MalformedFrame,
        ErrorCode::FrameTooLarge,
        ErrorCode::UnsupportedVersion,
        ErrorCode::InvalidRequest,
        ErrorCode::UnknownTopic,
        ErrorCode::UnknownPartition,
        ErrorCode::TopicExists,
        ErrorCode::InvalidTopicName,
        ErrorCode::InvalidConfig,
        ErrorCode::TopicUnavailable,
        ErrorCode::UnknownExchange,
        ErrorCode::ExchangeExists,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::InvalidBatch,
        ErrorCode::RecordTooLarge,
        ErrorCode::OutOfOrderSequence,
        ErrorCode::ProducerFenced,
        ErrorCode::Unroutable,
        ErrorCode::UnknownDelayed,
        ErrorCode::NotLeader,
        ErrorCode::NotEnoughReplicas,
        ErrorCode::StorageError,
        ErrorCode::DiskFull,
        ErrorCode::Timeout,
        ErrorCode::ServerBusy,
        ErrorCode::ShuttingDown,
        ErrorCode::NotAuthorized,
        ErrorCode::UnknownPlugin,
        ErrorCode::InvalidPlugin,
        ErrorCode::PluginInitFailed,
        ErrorCode::PluginFailed,
        ErrorCode::PluginInUse,
        ErrorCode::UnknownMember,
        ErrorCode::NotPartitionOwner,
        ErrorCode::GroupActive,
        ErrorCode::UnknownMirror,
        ErrorCode::Internal,
    ];

    /// The number sent on the wire.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// One line of human text, for logs and CLI output.
    pub fn description(self) -> &'static str {
        match self {
            ErrorCode::Unknown => "unknown error",
            ErrorCode::MalformedFrame => "malformed frame",
            ErrorCode::FrameTooLarge => "frame exceeds the size limit",
            ErrorCode::UnsupportedVersion => "unsupported protocol version",
            ErrorCode::InvalidRequest => "invalid request",
            ErrorCode::UnknownTopic => "unknown topic",
            ErrorCode::UnknownPartition => "unknown partition",
            ErrorCode::TopicExists => "topic already exists",
            ErrorCode::InvalidTopicName => "invalid topic name",
            ErrorCode::InvalidConfig => "invalid configuration",
            ErrorCode::TopicUnavailable => "topic unavailable",
            ErrorCode::UnknownExchange => "unknown exchange",
            ErrorCode::ExchangeExists => "exchange already exists",
            ErrorCode::OffsetOutOfRange => "offset out of range",
            ErrorCode::InvalidBatch => "invalid record batch",
            ErrorCode::RecordTooLarge => "record batch too large",
            ErrorCode::OutOfOrderSequence => "producer sequence out of order",
            ErrorCode::ProducerFenced => "producer fenced by a newer one with its fencing key",
            ErrorCode::Unroutable => "records match no binding of the exchange",
            ErrorCode::UnknownDelayed => "no delayed record is pending with that id",
            ErrorCode::NotLeader => "this node does not lead the partition",
            ErrorCode::NotEnoughReplicas => "too few replicas of the partition are in sync",
            ErrorCode::StorageError => "storage error",
            ErrorCode::DiskFull => "disk full",
            ErrorCode::Timeout => "request timed out",
            ErrorCode::ServerBusy => "server busy, retry later",
            ErrorCode::ShuttingDown => "server shutting down",
            ErrorCode::NotAuthorized => "not authorized",
            ErrorCode::UnknownPlugin => "unknown plugin",
            ErrorCode::InvalidPlugin => "invalid plugin component",
            ErrorCode::PluginInitFailed => "plugin refused its configuration",
            ErrorCode::PluginFailed => "plugin failed",
            ErrorCode::PluginInUse => "plugin is attached",
            ErrorCode::UnknownMember => "unknown group member",
            ErrorCode::NotPartitionOwner => "member does not own the partition",
            ErrorCode::GroupActive => "group has live members",
            ErrorCode::UnknownMirror => "unknown mirror",
            ErrorCode::Internal => "internal server error",
        }
    }

    /// True when the same request may succeed later unchanged, so clients can retry with backoff.
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::StorageError
                | ErrorCode::DiskFull
                | ErrorCode::Timeout
                | ErrorCode::ServerBusy
                | ErrorCode::ShuttingDown
                | ErrorCode::OutOfOrderSequence
                | ErrorCode::NotLeader
                | ErrorCode::NotEnoughReplicas
        )
    }
}

impl From<u16> for ErrorCode {
    /// Unknown numbers become `Unknown` instead of failing: new codes must not break old clients.
    fn from(n: u16) -> Self {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_u16() == n)
            .unwrap_or(ErrorCode::Unknown)
    }
}

impl From<ErrorCode> for u16 {
    fn from(c: ErrorCode) -> u16 {
        c.as_u16()
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.description(), self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_codes_round_trip_and_are_sorted() {
        for pair in ErrorCode::ALL.windows(2) {
            assert!(
                pair[0].as_u16() < pair[1].as_u16(),
                "ALL must be sorted and unique"
            );
        }
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from(c.as_u16()), c);
            assert_eq!(u16::from(c), c as u16);
        }
    }

    #[test]
    fn stable_numbers_and_flags() {
        assert_eq!(ErrorCode::ServerBusy.as_u16(), 41);
        assert_eq!(ErrorCode::Internal.as_u16(), 99);
        assert!(ErrorCode::DiskFull.is_retriable());
        assert!(!ErrorCode::UnknownTopic.is_retriable());
        assert_eq!(ErrorCode::UnknownTopic.to_string(), "unknown topic (10)");
    }

    proptest! {
        #[test]
        fn unknown_numbers_map_to_unknown(n in any::<u16>()) {
            let c = ErrorCode::from(n);
            let known = ErrorCode::ALL.iter().any(|k| k.as_u16() == n);
            prop_assert_eq!(c == ErrorCode::Unknown, !known || n == 0);
        }
    }

    #[test]
    fn specific_unknown_numbers() {
        for n in [5, 18, 29, 98, 100, 1000, u16::MAX] {
            assert_eq!(ErrorCode::from(n), ErrorCode::Unknown);
        }
    }
}
