//! Plugins as the wire names and describes them: the options of an attach (one type from the CLI
//! flags through the admin request to the broker's stored stage), the error policy of a stage, and
//! the descriptions of deployed versions and attached stages.
//!
//! These types live apart from `messages` because both the admin messages and the exchange
//! definitions of `routing` embed them (an exchange reports its router as an [`AttachmentInfo`]):
//! with them here, `messages` → `routing` → `plugins` point one way. Like every header type they
//! are MessagePack maps with named fields, so their field names and order are the wire format.

use serde::{Deserialize, Serialize};

/// How a plugin is attached, to a topic's ingest pipeline or as an exchange's router.
///
/// The attach admin requests flatten it next to their `topic` or `exchange` field, so its fields
/// keep the names and order the requests had before it existed (docs/protocol.md).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttachOptions {
    /// `NAME` (latest version) or `NAME@VERSION`. In a stage the broker stored, the bare name (the
    /// version it resolved to is kept beside it).
    pub plugin: String,
    /// `key=value` configuration handed to the plugin's `init`.
    #[serde(default)]
    pub config: Vec<(String, String)>,
    #[serde(default)]
    pub on_error: ErrorPolicy,
    /// Time limit per call; `None`: the broker's `plugins.timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Memory limit per instance in MiB; `None`: the broker's `plugins.memory_mb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
}

impl AttachOptions {
    /// `plugin` (`NAME` or `NAME@VERSION`) with no configuration, dead-lettering failed batches,
    /// under the broker's default limits.
    pub fn new(plugin: impl Into<String>) -> AttachOptions {
        AttachOptions {
            plugin: plugin.into(),
            ..AttachOptions::default()
        }
    }

    /// Adds one `key=value` configuration pair (repeatable, like the CLI's `--config`).
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> AttachOptions {
        self.config.push((key.into(), value.into()));
        self
    }

    pub fn on_error(mut self, policy: ErrorPolicy) -> AttachOptions {
        self.on_error = policy;
        self
    }

    pub fn timeout_ms(mut self, ms: u32) -> AttachOptions {
        self.timeout_ms = Some(ms);
        self
    }

    pub fn memory_mb(mut self, mb: u32) -> AttachOptions {
        self.memory_mb = Some(mb);
        self
    }
}

/// What an ingest stage does with a batch its plugin failed on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorPolicy {
    /// The batch's records go to `<topic>.dlq` with the error in the `quiver-error` header.
    #[default]
    DeadLetter,
    /// The batch's records are dropped (logged and counted).
    Skip,
    /// The produce fails with the plugin's message.
    Reject,
}

impl ErrorPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorPolicy::DeadLetter => "dead-letter",
            ErrorPolicy::Skip => "skip",
            ErrorPolicy::Reject => "reject",
        }
    }
}

impl std::str::FromStr for ErrorPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dead-letter" => Ok(ErrorPolicy::DeadLetter),
            "skip" => Ok(ErrorPolicy::Skip),
            "reject" => Ok(ErrorPolicy::Reject),
            other => Err(format!(
                "unknown error policy {other:?}: expected dead-letter, skip or reject"
            )),
        }
    }
}

/// A plugin named by a request, with its `key=value` configuration.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PluginRef {
    /// `NAME` (the latest version) or `NAME@VERSION`.
    pub name: String,
    #[serde(default)]
    pub config: Vec<(String, String)>,
}

/// One deployed version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginVersionInfo {
    pub name: String,
    pub version: String,
    /// `filter`, `transform`, `router` or `scheduler`.
    pub world: String,
    /// SHA-256 of the component bytes, hex.
    pub sha256: String,
    pub size_bytes: u64,
    pub deployed_ms: i64,
}

/// A stage of a topic's ingest pipeline, with its health.
///
/// Not built on [`AttachOptions`]: its limits are the resolved ones (never absent) and its
/// fields interleave `version` and `world` between `plugin` and `config`, so flattening the
/// options in would reorder the encoded map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentInfo {
    pub topic: String,
    pub plugin: String,
    pub version: String,
    pub world: String,
    pub config: Vec<(String, String)>,
    pub on_error: ErrorPolicy,
    pub timeout_ms: u32,
    pub memory_mb: u32,
    pub healthy: bool,
    pub calls: u64,
    pub failures: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// `topic` names an exchange this router is attached to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exchange: bool,
    /// Linear memory the stage's live instance holds now (0 when it has none: before its first
    /// batch after a start, or after a trap).
    #[serde(default)]
    pub memory_in_use_bytes: u64,
}

/// What every plugin instance of the broker holds together, against the broker-wide budget
/// (`plugins.max_total_memory_mb`): attachments and read-filter sessions alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginMemory {
    pub in_use_bytes: u64,
    pub budget_bytes: u64,
}

/// Everything `plugin describe` shows about a plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDescription {
    pub versions: Vec<PluginVersionInfo>,
    /// Where it is attached, with each stage's health and memory.
    pub attachments: Vec<AttachmentInfo>,
    /// The last log lines of its instances since the broker started, oldest first.
    pub logs: Vec<String>,
    /// The memory of all plugins together, against the broker's budget.
    pub memory: PluginMemory,
}

/// One line a plugin logged through `host.log`, as `ListPluginLogs` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginLogLine {
    /// Numbered per plugin name from 1 since the broker started, without gaps: a reader that sees
    /// a jump knows how many lines the broker's bounded buffer dropped in between.
    pub seq: u64,
    /// When the plugin logged it, ms since the epoch.
    pub timestamp_ms: i64,
    /// The version of the plugin that logged it.
    pub version: String,
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// Where the instance runs: a topic's name (an ingest stage), `exchange:NAME` (a router) or
    /// `read-filter` (a consumer's read filter); absent for the deploy-time probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub text: String,
}
