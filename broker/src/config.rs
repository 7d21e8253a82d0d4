//! Broker configuration: built-in defaults, then a TOML file, then `QUIVER_*` environment variables,
//! then command-line flags (the caller applies those last). Validated once at start; every default
//! works on a laptop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::auth::{AuthConfig, QuotaConfig};
use crate::storage::LogConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {name}: {reason}")]
    Env {
        name: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Certificate files for the QUIC listener; without them a dev CA and certificate are generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that client certificates must chain to; when set, clients must present one (mTLS).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The HTTP listener of `quiver serve` (`/metrics`, `/healthz`, `/readyz`): an address, or
    /// `none` to turn it off (see [`BrokerConfig::http_addr`]).
    pub http: String,
    /// How `quiver serve` writes its log to stderr: `text` for people, `json` for log shippers.
    pub log_format: LogFormat,
    pub tls: Option<TlsFiles>,
    /// Connections beyond this are refused with a "server busy" close.
    pub max_connections: usize,
    /// Concurrent streams one connection may open.
    pub max_streams_per_connection: u32,
    /// Largest protocol frame accepted (a produce frame holds one batch).
    pub max_frame_bytes: usize,
    /// How often retention runs over every partition.
    pub retention_check_ms: u64,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_grace_ms: u64,
    /// Partitions of a topic created without `--partitions`.
    pub default_partitions: u32,
    /// Log settings of new topics (each topic may override retention and segment size).
    pub log: LogConfig,
    /// Limits and defaults of the WebAssembly plugin host.
    pub plugins: PluginConfig,
    pub auth: AuthConfig,
    pub quotas: QuotaConfig,
    /// Mirrors forwarding this broker's topics to a core broker (`[[mirror]]` tables).
    #[serde(rename = "mirror", skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<crate::mirrors::MirrorConfig>,
    /// Membership of a cluster (`[cluster]`); absent, the broker runs alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

/// This node's place in a cluster: its id, every member's peer address, and the certificates
/// the nodes prove themselves with to each other (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Absent from a file that only tunes the cluster (`--node-id` names the node).
    #[serde(default)]
    pub node_id: u64,
    /// Every member, this node included, as `ID@HOST:PORT`: the address where that node listens
    /// for its peers (UDP, QUIC with mutual TLS; not the client address).
    #[serde(default)]
    pub members: Vec<ClusterMember>,
    /// A development CA shared by the nodes of a local cluster: created by the first node that
    /// starts (safely against concurrent starts), each node signs its own certificate with it.
    #[serde(default)]
    pub dev_ca: Option<PathBuf>,
    /// Configured peer certificates (production): this node's chain and key, and the CA every
    /// node's certificate chains to. Used instead of `dev_ca`.
    #[serde(default)]
    pub peer_tls: Option<PeerTls>,
    /// Raft heartbeats from the leader; elections start after 4-8 heartbeats without one.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// A snapshot of the metadata is taken every this many log entries; the log before it is
    /// then dropped (all but a tenth), and a node further behind receives the snapshot instead.
    #[serde(default = "default_snapshot_logs")]
    pub snapshot_logs: u64,
    /// Copies of each partition of a topic created without `--replication-factor` (default:
    /// 3, or the number of members if fewer).
    #[serde(default)]
    pub replication_factor: Option<u32>,
    /// A follower that has not caught up with its leader's log for this long leaves the
    /// partition's in-sync replicas (and rejoins once caught up).
    #[serde(default = "default_replica_lag_ms")]
    pub replica_lag_ms: u64,
    /// A node that has not answered the Raft leader for this long is dead: the partitions it
    /// leads get new leaders from their in-sync replicas.
    #[serde(default = "default_node_timeout_ms")]
    pub node_timeout_ms: u64,
    /// How often a node hands the partitions it leads back to their preferred leader (the
    /// first replica) when that one is in sync again, as after a restart; 0: never.
    #[serde(default = "default_leader_rebalance_ms")]
    pub leader_rebalance_ms: u64,
    /// The client address this node announces to clients (which send a partition's requests
    /// to its leader); default: the `listen` address.
    #[serde(default)]
    pub advertise: Option<String>,
}

fn default_heartbeat_ms() -> u64 {
    250
}

fn default_replica_lag_ms() -> u64 {
    10_000
}

fn default_node_timeout_ms() -> u64 {
    6_000
}

fn default_leader_rebalance_ms() -> u64 {
    30_000
}

fn default_snapshot_logs() -> u64 {
    1000
}

/// One member: its node id and peer address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterMember {
    pub id: u64,
    pub addr: SocketAddr,
}

impl std::str::FromStr for ClusterMember {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (id, addr) = s
            .split_once('@')
            .ok_or_else(|| format!("cluster member {s:?} is not ID@HOST:PORT"))?;
        let id = id
            .trim()
            .parse()
            .map_err(|e| format!("cluster member {s:?}: node id {id:?}: {e}"))?;
        let addr = addr
            .trim()
            .parse()
            .map_err(|e| format!("cluster member {s:?}: address {addr:?}: {e}"))?;
        Ok(ClusterMember { id, addr })
    }
}

impl TryFrom<String> for ClusterMember {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<ClusterMember> for String {
    fn from(m: ClusterMember) -> String {
        format!("{}@{}", m.id, m.addr)
    }
}

/// Configured certificates for the links between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

impl ClusterConfig {
    /// A member of `members` with every other setting at its default.
    pub fn new(node_id: u64, members: Vec<ClusterMember>) -> ClusterConfig {
        ClusterConfig {
            node_id,
            members,
            dev_ca: None,
            peer_tls: None,
            heartbeat_ms: default_heartbeat_ms(),
            snapshot_logs: default_snapshot_logs(),
            replication_factor: None,
            replica_lag_ms: default_replica_lag_ms(),
            node_timeout_ms: default_node_timeout_ms(),
            leader_rebalance_ms: default_leader_rebalance_ms(),
            advertise: None,
        }
    }

    /// Copies of each partition when a topic is created without saying.
    pub fn default_replication_factor(&self) -> u32 {
        self.replication_factor
            .unwrap_or_else(|| (self.members.len() as u32).min(3))
    }

    /// This node's own peer address, from the member list.
    pub fn own_addr(&self) -> Option<SocketAddr> {
        self.members
            .iter()
            .find(|m| m.id == self.node_id)
            .map(|m| m.addr)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("cluster: {m}")));
        if self.own_addr().is_none() {
            return bad(format!(
                "node id {} is not among the members (give every member, this node included, as ID@HOST:PORT)",
                self.node_id
            ));
        }
        let mut ids: Vec<u64> = self.members.iter().map(|m| m.id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != self.members.len() {
            return bad("a node id appears twice among the members".into());
        }
        if ids.last().is_some_and(|&id| id >= 1024) {
            // Producer ids carry the node id in their low ten bits.
            return bad("node ids must be below 1024".into());
        }
        if self.dev_ca.is_none() && self.peer_tls.is_none() {
            return bad("nodes need certificates: --dev-ca DIR for a local cluster, or [cluster.peer_tls] cert, key and ca".into());
        }
        if !(10..=60_000).contains(&self.heartbeat_ms) {
            return bad("heartbeat_ms must be between 10 and 60000".into());
        }
        if self.snapshot_logs == 0 {
            return bad("snapshot_logs must be at least 1".into());
        }
        if let Some(rf) = self.replication_factor {
            if rf == 0 || rf as usize > self.members.len() {
                return bad(format!(
                    "replication_factor {rf} must be between 1 and the {} members",
                    self.members.len()
                ));
            }
        }
        if self.replica_lag_ms < 100 || self.node_timeout_ms < self.heartbeat_ms * 4 {
            return bad(
                "replica_lag_ms must be at least 100 and node_timeout_ms at least 4 heartbeats"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The format of the broker's own log (stderr).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields.message`, ...).
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!(
                "unknown log format {other:?}: expected text or json"
            )),
        }
    }
}

/// The plugin host's engine-wide limits and the defaults of each attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// Time limit of one plugin call (init or one batch) unless the attachment sets its own.
    pub timeout_ms: u32,
    /// Upper bound of any attachment's time limit.
    pub max_timeout_ms: u32,
    /// Linear memory of one instance unless the attachment sets its own.
    pub memory_mb: u32,
    /// Upper bound of any attachment's memory limit (sizes the pooling allocator's slots).
    pub max_memory_mb: u32,
    /// Plugin instances alive at once (ingest stages plus read-filter sessions).
    pub max_instances: u32,
    /// Linear memory of all plugin instances together, in MiB; unset: a quarter of the machine's
    /// memory, at least 256 MiB and at most 16 GiB (see [`PluginConfig::total_memory_bytes`]).
    pub max_total_memory_mb: Option<u32>,
    /// Largest component a deploy may carry (its admin frame may exceed `max_frame_bytes`).
    pub max_component_mb: u32,
    /// Consecutive failures of the plugin's own (traps, timeouts, memory hits, bad output, refused
    /// re-inits) after which an attachment is marked unhealthy.
    pub unhealthy_after: u32,
    /// How long an unhealthy attachment is not called before it is tried again.
    pub cooldown_ms: u64,
}

impl Default for PluginConfig {
    fn default() -> Self {
        PluginConfig {
            timeout_ms: 200,
            max_timeout_ms: 10_000,
            memory_mb: 128,
            max_memory_mb: 512,
            max_instances: 256,
            max_total_memory_mb: None,
            max_component_mb: 64,
            unhealthy_after: 3,
            cooldown_ms: 5_000,
        }
    }
}

impl PluginConfig {
    /// The broker-wide plugin memory budget in bytes: the configured one, or a quarter of the
    /// machine's memory clamped to 256 MiB..16 GiB (1 GiB when the machine's memory is unknown).
    /// Instances reserve what they grow by from it; a grow past it is refused as `ServerBusy`.
    pub fn total_memory_bytes(&self) -> usize {
        if let Some(mb) = self.max_total_memory_mb {
            return (mb as usize) << 20;
        }
        let quarter = machine_memory_bytes().map_or(1 << 30, |total| total / 4);
        quarter.clamp(256 << 20, 16 << 30) as usize
    }
}

/// Total memory of the machine, from /proc/meminfo (Linux); `None` elsewhere.
fn machine_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            data_dir: PathBuf::from("./quiver-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 7447)),
            http: "127.0.0.1:7448".into(),
            log_format: LogFormat::Text,
            tls: None,
            max_connections: 1024,
            max_streams_per_connection: 1024,
            max_frame_bytes: 16 << 20,
            retention_check_ms: 60_000,
            shutdown_grace_ms: 10_000,
            default_partitions: 1,
            log: LogConfig::default(),
            plugins: PluginConfig::default(),
            auth: AuthConfig::default(),
            quotas: QuotaConfig::default(),
            mirrors: Vec::new(),
            cluster: None,
        }
    }
}

impl BrokerConfig {
    /// Defaults, overlaid with `file` when given, then with environment variables.
    pub fn load(file: Option<&Path>) -> Result<BrokerConfig, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => BrokerConfig::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<BrokerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// The HTTP listener's address; `None` when it is turned off (`http = "none"`).
    pub fn http_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        match self.http.trim() {
            "none" => Ok(None),
            addr => addr.parse().map(Some).map_err(|e| {
                ConfigError::Invalid(format!(
                    "http = {addr:?}: {e} (an address such as 127.0.0.1:7448, or none)"
                ))
            }),
        }
    }

    /// Applies `QUIVER_DATA_DIR`, `QUIVER_LISTEN`, `QUIVER_HTTP`, `QUIVER_LOG_FORMAT`,
    /// `QUIVER_MAX_CONNECTIONS`, `QUIVER_PLUGINS_MAX_TOTAL_MEMORY_MB`, `QUIVER_AUTH`,
    /// `QUIVER_ALLOW_ANONYMOUS`, `QUIVER_TLS_CERT` and `QUIVER_TLS_KEY` when set.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("QUIVER_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("QUIVER_LISTEN") {
            self.listen = parse_env("QUIVER_LISTEN", &v)?;
        }
        if let Some(v) = get("QUIVER_HTTP") {
            self.http = v;
        }
        if let Some(v) = get("QUIVER_LOG_FORMAT") {
            self.log_format = parse_env("QUIVER_LOG_FORMAT", &v)?;
        }
        if let Some(v) = get("QUIVER_MAX_CONNECTIONS") {
            self.max_connections = parse_env("QUIVER_MAX_CONNECTIONS", &v)?;
        }
        if let Some(v) = get("QUIVER_AUTH") {
            self.auth.enabled = parse_flag("QUIVER_AUTH", &v)?;
        }
        if let Some(v) = get("QUIVER_ALLOW_ANONYMOUS") {
            self.auth.allow_anonymous = parse_flag("QUIVER_ALLOW_ANONYMOUS", &v)?;
        }
        if let Some(v) = get("QUIVER_PLUGINS_MAX_TOTAL_MEMORY_MB") {
            self.plugins.max_total_memory_mb =
                Some(parse_env("QUIVER_PLUGINS_MAX_TOTAL_MEMORY_MB", &v)?);
        }
        match (get("QUIVER_TLS_CERT"), get("QUIVER_TLS_KEY")) {
            (Some(cert), Some(key)) => {
                let client_ca = get("QUIVER_TLS_CLIENT_CA").map(PathBuf::from);
                self.tls = Some(TlsFiles {
                    cert: cert.into(),
                    key: key.into(),
                    client_ca,
                });
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError::Invalid(
                    "QUIVER_TLS_CERT and QUIVER_TLS_KEY must be set together".into(),
                ))
            }
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.http_addr()?;
        if let Some(c) = &self.cluster {
            c.validate()?;
        }
        if !self.listen.ip().is_loopback() && !self.auth.enabled && !self.auth.allow_anonymous {
            return Err(ConfigError::Invalid(format!(
                "listening on {} (not a loopback address) needs authentication: pass --auth (QUIVER_AUTH=1), or --allow-anonymous to let anyone in",
                self.listen
            )));
        }
        self.log
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.max_connections == 0 {
            return Err(ConfigError::Invalid(
                "max_connections must be at least 1".into(),
            ));
        }
        if self.max_frame_bytes < 64 << 10 {
            return Err(ConfigError::Invalid(
                "max_frame_bytes must be at least 64 KiB".into(),
            ));
        }
        if (self.log.max_batch_bytes as usize) > self.max_frame_bytes {
            return Err(ConfigError::Invalid(
                "log.max_batch_bytes must not exceed max_frame_bytes".into(),
            ));
        }
        if self.default_partitions == 0 {
            return Err(ConfigError::Invalid(
                "default_partitions must be at least 1".into(),
            ));
        }
        let p = &self.plugins;
        if p.timeout_ms == 0 || p.memory_mb == 0 || p.max_instances == 0 {
            return Err(ConfigError::Invalid(
                "plugins.timeout_ms, plugins.memory_mb and plugins.max_instances must be at least 1"
                    .into(),
            ));
        }
        if p.memory_mb > p.max_memory_mb || p.max_memory_mb > 4096 {
            return Err(ConfigError::Invalid(
                "plugins.memory_mb must not exceed plugins.max_memory_mb (at most 4096)".into(),
            ));
        }
        if p.timeout_ms > p.max_timeout_ms || p.max_timeout_ms > 600_000 {
            return Err(ConfigError::Invalid(
                "plugins.timeout_ms must not exceed plugins.max_timeout_ms (at most 600000)".into(),
            ));
        }
        if p.max_total_memory_mb
            .is_some_and(|mb| mb == 0 || mb > 1 << 20)
        {
            return Err(ConfigError::Invalid(
                "plugins.max_total_memory_mb must be from 1 to 1048576 (1 TiB)".into(),
            ));
        }
        if p.max_instances > 10_000 || p.cooldown_ms > 86_400_000 || p.max_component_mb > 1024 {
            return Err(ConfigError::Invalid(
                "plugins.max_instances must be at most 10000, plugins.cooldown_ms at most a day and plugins.max_component_mb at most 1024"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`.
fn parse_flag(name: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError::Env {
            name,
            value: value.to_owned(),
            reason: "expected 1/true/yes/on or 0/false/no/off".into(),
        }),
    }
}

fn parse_env<T: std::str::FromStr>(name: &'static str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e: T::Err| ConfigError::Env {
        name,
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_then_env_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nmax_connections = 7\n[log]\nsegment_bytes = 1048576\n",
        )
        .unwrap();
        let mut c = BrokerConfig::from_file(&path).unwrap();
        assert_eq!(
            (c.listen.port(), c.max_connections, c.log.segment_bytes),
            (9000, 7, 1 << 20)
        );
        c.apply_env(|n| (n == "QUIVER_LISTEN").then(|| "127.0.0.1:9001".to_string()))
            .unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.log_format, LogFormat::Text);
        c.apply_env(|n| (n == "QUIVER_LOG_FORMAT").then(|| "json".to_string()))
            .unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        let file: BrokerConfig = toml::from_str("log_format = \"json\"").unwrap();
        assert_eq!(file.log_format, LogFormat::Json);
        let auto = c.plugins.total_memory_bytes();
        assert!((256 << 20..=16 << 30).contains(&auto), "{auto}");
        c.apply_env(|n| (n == "QUIVER_PLUGINS_MAX_TOTAL_MEMORY_MB").then(|| "64".to_string()))
            .unwrap();
        assert_eq!(c.plugins.total_memory_bytes(), 64 << 20);
        c.validate().unwrap();
        let err = c
            .apply_env(|n| (n == "QUIVER_MAX_CONNECTIONS").then(|| "many".to_string()))
            .unwrap_err();
        assert!(err.to_string().contains("QUIVER_MAX_CONNECTIONS"), "{err}");
        std::fs::write(&path, "listen = 5\n").unwrap();
        let err = BrokerConfig::from_file(&path).unwrap_err().to_string();
        assert!(err.contains("q.toml"), "{err}");
        std::fs::write(&path, "no_such_setting = 1\n").unwrap();
        assert!(
            BrokerConfig::from_file(&path).is_err(),
            "unknown settings are rejected, not ignored"
        );
    }
}
