//! Mirrors defined in the broker's config file (`[[mirror]]`): the same fields as `mirror add`,
//! with the secrets as paths to files the operator manages.

use std::path::PathBuf;

use quiver_proto::mirror::{MirrorDirection, MirrorStart};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    pub name: String,
    /// The core broker, `host:port`.
    pub to: String,
    /// CA (PEM) the core's certificate must chain to.
    pub ca: PathBuf,
    /// Topics to forward: a name or a pattern with `*`.
    pub topics: String,
    /// Prefix of the core topic names.
    #[serde(default, rename = "as")]
    pub prefix: Option<String>,
    #[serde(default)]
    pub from: MirrorStart,
    /// `push` (this broker's topics to the core) or `pull` (the core's topics here).
    #[serde(default)]
    pub direction: MirrorDirection,
    #[serde(default)]
    pub source_id: Option<String>,
    /// A file holding the token the core knows this edge by.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mTLS to the core.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
}
