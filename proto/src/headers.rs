//! Reserved record headers: every header name starting with `quiver-` belongs to the broker. A
//! client (or a transform plugin) may set only the few that ask the broker for something; the
//! broker writes the others itself (dead letters, delayed deliveries) and refuses them from anyone
//! else, so a consumer can trust them. docs/protocol.md lists them.

pub use crate::batch::{DELAY_MS_HEADER as DELAY_MS, DELIVER_AT_HEADER as DELIVER_AT};

/// The prefix of every reserved header name.
pub const PREFIX: &str = "quiver-";

/// Names the topic a reply goes to (request/reply).
pub const REPLY_TO: &str = "quiver-reply-to";
/// Pairs a reply with its request (request/reply).
pub const CORRELATION_ID: &str = "quiver-correlation-id";

/// Where a mirrored record came from: `SOURCE_ID/TOPIC/PARTITION/OFFSET` on the edge broker that
/// forwarded it (topic names cannot hold `/`). The edge is an ordinary client of the core, so any
/// principal allowed to produce may set it: it says what the producer claims, like any header.
pub const MIRROR_SOURCE: &str = "quiver-mirror-source";

/// The reserved headers a producer or a transform may set: delayed delivery (`DELIVER_AT`, ms
/// since the Unix epoch, or `DELAY_MS` from now), request/reply and the mirror's source.
pub const CLIENT_SETTABLE: [&str; 5] = [
    DELIVER_AT,
    DELAY_MS,
    REPLY_TO,
    CORRELATION_ID,
    MIRROR_SOURCE,
];

/// Whether a record read from one broker keeps this header unchanged when it is produced to
/// another (mirroring): a broker-written header would be refused there, and a delay request would
/// be held a second time, so those are renamed (see `forwarded_name`).
pub fn forwards_unchanged(name: &str) -> bool {
    !name.starts_with(PREFIX) || name == REPLY_TO || name == CORRELATION_ID
}

/// The name a header that does not forward unchanged gets on the other broker: where it came
/// from (`edge` or `core`) and `-` before it, so it is kept, visible, and no longer means
/// anything to the broker.
pub fn forwarded_name(origin: &str, name: &str) -> String {
    format!("{origin}-{name}")
}

/// Whether a client may send a record with a header of this name.
pub fn client_may_set(name: &str) -> bool {
    !name.starts_with(PREFIX) || CLIENT_SETTABLE.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_request_headers_of_the_reserved_prefix_are_open_to_clients() {
        for name in CLIENT_SETTABLE {
            assert!(client_may_set(name), "{name}");
        }
        for name in ["trace-id", "Quiver-Error", "quiver", "x-quiver-error"] {
            assert!(client_may_set(name), "{name}");
        }
        for name in [
            "quiver-error",
            "quiver-plugin",
            "quiver-delay-id",
            "quiver-delay-topic",
            "quiver-group",
            "quiver-",
        ] {
            assert!(!client_may_set(name), "{name}");
        }
    }
}
