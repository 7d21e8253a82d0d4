//! Exchange definitions as they travel in admin requests and sit in the broker's metadata store:
//! the four AMQP kinds, bindings, and how a headers binding combines its conditions.

use serde::{Deserialize, Serialize};

use crate::plugins::AttachmentInfo;

/// The four exchange kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    /// The binding key equals the routing key.
    Direct,
    /// Every binding.
    Fanout,
    /// The binding key is a pattern over `.`-separated words: `*` one word, `#` zero or more.
    Topic,
    /// The binding's header conditions hold (all or any).
    Headers,
}

impl ExchangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

impl std::str::FromStr for ExchangeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "direct" => Ok(ExchangeKind::Direct),
            "fanout" => Ok(ExchangeKind::Fanout),
            "topic" => Ok(ExchangeKind::Topic),
            "headers" => Ok(ExchangeKind::Headers),
            other => Err(format!(
                "unknown exchange kind {other:?}: expected direct, fanout, topic or headers"
            )),
        }
    }
}

/// How a `headers` binding combines its conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeaderMatch {
    /// Every condition must hold (no conditions: every record matches).
    #[default]
    All,
    /// At least one condition must hold (no conditions: no record matches).
    Any,
}

/// One binding: records matching it are appended to `topic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub topic: String,
    /// Direct: the routing key; topic: the pattern; unused by fanout and headers.
    #[serde(default)]
    pub key: String,
    /// Headers exchanges: `name = value` conditions on the record's headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub header_match: HeaderMatch,
}

/// An exchange and its bindings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeInfo {
    pub name: String,
    pub kind: ExchangeKind,
    /// Where records matching no binding go; absent: such records fail the produce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternate: Option<String>,
    #[serde(default)]
    pub bindings: Vec<Binding>,
    pub created_ms: i64,
    /// The router plugin deciding destinations instead of the bindings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<AttachmentInfo>,
}

/// The partition of a keyed record among `partitions`: FNV-1a of the key, the same in the client's
/// partitioner and in the broker's exchange routing, so a key keeps one partition either way.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    let h = key.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (h % partitions.max(1) as u64) as u32
}
