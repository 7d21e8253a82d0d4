//! The metadata store: topic configs, consumer-group offsets, plugin records and other small values,
//! kept in sled behind this one module so it can be swapped if crash tests show loss.
//!
//! Values are rmp-serde maps (`to_vec_named`) so fields can be added later. sled flushes in the
//! background; writes that must survive a crash call `put_durable`, which flushes before returning.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Errors of the metadata store.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot open the metadata store at {}: {source}", path.display())]
    Open { path: PathBuf, source: sled::Error },
    #[error("metadata store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("metadata value {key:?} in {namespace} cannot be decoded: {reason}")]
    Decode {
        namespace: &'static str,
        key: String,
        reason: String,
    },
    #[error("metadata value cannot be encoded: {0}")]
    Encode(String),
}

impl MetaError {
    /// Every metadata failure is a storage failure to a client.
    pub fn code(&self) -> quiver_proto::ErrorCode {
        quiver_proto::ErrorCode::StorageError
    }
}

/// The namespaces (sled trees) Quiver keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    Topics,
    GroupOffsets,
    /// The settled point of each queue-mode (share group) partition.
    QueueOffsets,
    Plugins,
    /// Exchanges and their bindings.
    Exchanges,
    /// Token users (name, token id, token hash).
    Users,
    /// ACL rules, by id.
    Acls,
    /// Quotas set at runtime, by principal.
    Quotas,
    /// Edge mirror definitions, by name.
    Mirrors,
    /// Each mirror's committed position per edge partition (`MIRROR/TOPIC/PARTITION`).
    MirrorPositions,
    /// Facts about this broker itself (its generated mirror source id).
    Node,
    /// A cluster node's copy of each replicated partition's state (`TOPIC/PARTITION`).
    Replicas,
    /// Cluster members' client addresses, by node id.
    ClusterNodes,
}

impl Namespace {
    fn name(self) -> &'static str {
        match self {
            Namespace::Topics => "topics",
            Namespace::GroupOffsets => "group-offsets",
            Namespace::QueueOffsets => "queue-offsets",
            Namespace::Exchanges => "exchanges",
            Namespace::Plugins => "plugins",
            Namespace::Users => "users",
            Namespace::Acls => "acls",
            Namespace::Quotas => "quotas",
            Namespace::Mirrors => "mirrors",
            Namespace::MirrorPositions => "mirror-positions",
            Namespace::Node => "node",
            Namespace::Replicas => "replicas",
            Namespace::ClusterNodes => "cluster-nodes",
        }
    }
}

#[derive(Clone)]
pub struct MetaStore {
    db: sled::Db,
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaStore").finish_non_exhaustive()
    }
}

impl MetaStore {
    pub fn open(path: &Path) -> Result<MetaStore, MetaError> {
        let db = sled::Config::new()
            .path(path)
            .flush_every_ms(Some(500))
            .open()
            .map_err(|source| MetaError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(MetaStore { db })
    }

    fn tree(&self, ns: Namespace) -> Result<sled::Tree, MetaError> {
        Ok(self.db.open_tree(ns.name())?)
    }

    /// Stores a value; it reaches disk with sled's background flush.
    pub fn put<T: Serialize>(&self, ns: Namespace, key: &str, value: &T) -> Result<(), MetaError> {
        let bytes = rmp_serde::to_vec_named(value).map_err(|e| MetaError::Encode(e.to_string()))?;
        self.tree(ns)?.insert(key.as_bytes(), bytes)?;
        Ok(())
    }

    /// Stores a value and flushes it to disk before returning.
    pub fn put_durable<T: Serialize>(
        &self,
        ns: Namespace,
        key: &str,
        value: &T,
    ) -> Result<(), MetaError> {
        self.put(ns, key, value)?;
        self.flush()
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        ns: Namespace,
        key: &str,
    ) -> Result<Option<T>, MetaError> {
        match self.tree(ns)?.get(key.as_bytes())? {
            Some(v) => decode(ns, key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Removes a value; the removal reaches disk with sled's background flush.
    pub fn remove(&self, ns: Namespace, key: &str) -> Result<(), MetaError> {
        self.tree(ns)?.remove(key.as_bytes())?;
        Ok(())
    }

    /// Removes a value and flushes the removal.
    pub fn remove_durable(&self, ns: Namespace, key: &str) -> Result<(), MetaError> {
        self.tree(ns)?.remove(key.as_bytes())?;
        self.flush()
    }

    /// All entries whose key starts with `prefix`, in key order.
    pub fn scan<T: DeserializeOwned>(
        &self,
        ns: Namespace,
        prefix: &str,
    ) -> Result<Vec<(String, T)>, MetaError> {
        let mut out = Vec::new();
        for item in self.tree(ns)?.scan_prefix(prefix.as_bytes()) {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let value = decode(ns, &key, &v)?;
            out.push((key, value));
        }
        Ok(out)
    }

    /// A number never handed out before by this store, across restarts and crashes (sled
    /// reserves ranges durably); never 0.
    pub fn generate_id(&self) -> Result<u64, MetaError> {
        Ok(self.db.generate_id()?.wrapping_add(1).max(1))
    }

    pub fn flush(&self) -> Result<(), MetaError> {
        self.db.flush()?;
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(ns: Namespace, key: &str, bytes: &[u8]) -> Result<T, MetaError> {
    rmp_serde::from_slice(bytes).map_err(|e| MetaError::Decode {
        namespace: ns.name(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct V {
        a: u32,
        #[serde(default)]
        b: Option<String>,
    }

    #[test]
    fn values_survive_reopen_and_decode_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        {
            let m = MetaStore::open(dir.path()).unwrap();
            m.put_durable(Namespace::Topics, "t1", &V { a: 1, b: None })
                .unwrap();
            m.put_durable(
                Namespace::Topics,
                "t2",
                &V {
                    a: 2,
                    b: Some("x".into()),
                },
            )
            .unwrap();
            m.put_durable(Namespace::Plugins, "t3", &V { a: 3, b: None })
                .unwrap();
            m.remove_durable(Namespace::Topics, "t1").unwrap();
        }
        let m = MetaStore::open(dir.path()).unwrap();
        let all: Vec<(String, V)> = m.scan(Namespace::Topics, "").unwrap();
        assert_eq!(
            all,
            vec![(
                "t2".to_string(),
                V {
                    a: 2,
                    b: Some("x".into())
                }
            )]
        );
        m.tree(Namespace::Topics)
            .unwrap()
            .insert("bad", &[0xc1u8][..])
            .unwrap();
        let err = m
            .get::<V>(Namespace::Topics, "bad")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"bad\"") && err.contains("topics"), "{err}");
    }
}
