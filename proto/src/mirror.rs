//! The wire vocabulary of edge mirroring: what `mirror add` sends to an edge broker and what
//! `mirror list` / `describe` answer. The edge forwards its local topics to a core broker as an
//! ordinary client; docs/mirroring.md has the guarantees.

use serde::{Deserialize, Serialize};

pub use crate::headers::MIRROR_SOURCE as SOURCE_HEADER;

/// Where a new mirror starts reading each partition that exists when it is added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MirrorStart {
    /// Everything still retained on the edge.
    #[default]
    Earliest,
    /// Only records produced after the mirror started.
    Latest,
}

impl std::str::FromStr for MirrorStart {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(MirrorStart::Earliest),
            "latest" => Ok(MirrorStart::Latest),
            _ => Err(format!("`{s}`: expected earliest or latest")),
        }
    }
}

/// Which way a mirror forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MirrorDirection {
    /// This (edge) broker's topics to the core.
    #[default]
    Push,
    /// The core's topics to this broker: configuration or command topics for the edge.
    Pull,
}

impl std::str::FromStr for MirrorDirection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "push" => Ok(MirrorDirection::Push),
            "pull" => Ok(MirrorDirection::Pull),
            _ => Err(format!("`{s}`: expected push or pull")),
        }
    }
}

/// `mirror add`: the definition with its secrets inlined, since the CLI may run on another machine
/// than the edge broker (which keeps them in files only it may read). Its `Debug` hides them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorSpec {
    pub name: String,
    /// The core broker, `host:port`; the host must be the name in its certificate.
    pub to: String,
    /// Topics to forward: a name, or a pattern with `*` (any characters) such as `sensors.*`.
    pub topics: String,
    /// Prefix of the core topic names (`site-17.` makes `orders` arrive as `site-17.orders`);
    /// none keeps the names, so several edges merge into one topic told apart by the source
    /// header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default)]
    pub from: MirrorStart,
    #[serde(default)]
    pub direction: MirrorDirection,
    /// This edge's name in the source header; the broker's own (generated once) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    /// PEM of the CA the core's certificate must chain to.
    pub ca_pem: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Client certificate and key (PEM) for mTLS to the core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pem: Option<String>,
}

impl std::fmt::Debug for MirrorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("MirrorSpec")
            .field("name", &self.name)
            .field("to", &self.to)
            .field("topics", &self.topics)
            .field("prefix", &self.prefix)
            .field("from", &self.from)
            .field("direction", &self.direction)
            .field("source_id", &self.source_id)
            .field("token", &hidden(&self.token))
            .field("cert_pem", &self.cert_pem.is_some())
            .field("key_pem", &hidden(&self.key_pem))
            .finish_non_exhaustive()
    }
}

/// The link to the core as the mirror last saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum MirrorState {
    /// Not started yet, or between its definition and the first attempt.
    Starting,
    Connecting,
    Connected {
        since_ms: i64,
    },
    /// The last attempt or session failed; the next one starts in `retry_in_ms`.
    BackingOff {
        error: String,
        retry_in_ms: u64,
        attempts: u32,
    },
    Stopped,
}

/// One forwarded partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorPartition {
    pub topic: String,
    pub partition: u32,
    pub target_topic: String,
    pub target_partition: u32,
    /// The next edge offset to forward (everything before it is acknowledged by the core).
    pub next_offset: u64,
    pub log_end: u64,
    /// Records on the edge not yet acknowledged by the core.
    pub lag_records: u64,
    /// Age of the oldest record not yet acknowledged by the core (0 when caught up).
    pub lag_ms: u64,
    /// Since the broker started.
    pub forwarded_records: u64,
    pub forwarded_bytes: u64,
    /// Records the edge's retention removed before they were forwarded (persisted, cumulative).
    pub dropped_by_retention: u64,
    /// Why this partition is not being forwarded while the rest of the mirror is (its core
    /// topic cannot be created or read, say); retried with back-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `mirror list` / `describe`: the definition (without its secrets) and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorInfo {
    pub name: String,
    pub to: String,
    pub topics: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    pub from: MirrorStart,
    #[serde(default)]
    pub direction: MirrorDirection,
    pub source_id: String,
    /// `token`, `certificate` or `none`.
    pub auth: String,
    /// Defined in the broker's config file (then removed there, not with `mirror remove`).
    pub from_config: bool,
    pub state: MirrorState,
    /// Sessions started since the broker started (1 when the link never dropped).
    pub sessions: u64,
    /// Records per second forwarded over the last few seconds.
    pub records_per_sec: u64,
    pub partitions: Vec<MirrorPartition>,
}

impl MirrorInfo {
    pub fn lag_records(&self) -> u64 {
        self.partitions.iter().map(|p| p.lag_records).sum()
    }

    pub fn lag_ms(&self) -> u64 {
        self.partitions.iter().map(|p| p.lag_ms).max().unwrap_or(0)
    }

    pub fn dropped_by_retention(&self) -> u64 {
        self.partitions.iter().map(|p| p.dropped_by_retention).sum()
    }
}

/// Splits a source header value into (source id, topic, partition, offset).
pub fn parse_source(value: &[u8]) -> Option<(&str, &str, u32, u64)> {
    let s = std::str::from_utf8(value).ok()?;
    let mut it = s.rsplitn(4, '/');
    let offset = it.next()?.parse().ok()?;
    let partition = it.next()?.parse().ok()?;
    let topic = it.next()?;
    let source = it.next()?;
    Some((source, topic, partition, offset))
}

/// The source header value for an edge record.
pub fn source_value(source_id: &str, topic: &str, partition: u32, offset: u64) -> String {
    format!("{source_id}/{topic}/{partition}/{offset}")
}

/// Whether `topic` matches a mirror's topic pattern (`*` matches any run of characters).
pub fn matches_pattern(pattern: &str, topic: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == topic;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !topic.starts_with(first) || topic.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &topic[first.len()..topic.len() - last.len()];
    if !topic.ends_with(last) {
        return false;
    }
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_values_round_trip_with_slashes_in_the_source_id() {
        let v = source_value("shop/17", "orders.eu", 3, 42);
        assert_eq!(
            parse_source(v.as_bytes()),
            Some(("shop/17", "orders.eu", 3, 42))
        );
        assert_eq!(parse_source(b"a/b/c"), None);
        assert_eq!(parse_source(b"a/t/x/1"), None);
    }

    #[test]
    fn patterns() {
        assert!(matches_pattern("orders", "orders"));
        assert!(!matches_pattern("orders", "orders2"));
        assert!(matches_pattern("*", "anything"));
        assert!(matches_pattern("sensors.*", "sensors.t1"));
        assert!(!matches_pattern("sensors.*", "sensor.t1"));
        assert!(matches_pattern("*.dlq", "a.dlq"));
        assert!(matches_pattern("a*b*c", "axxbyyc"));
        assert!(!matches_pattern("a*b*c", "axxc"));
        assert!(!matches_pattern("ab*ba", "aba"));
    }
}
