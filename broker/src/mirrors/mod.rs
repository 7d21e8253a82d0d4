//! Edge mirroring's state on the edge broker: the mirror definitions (sled, with their secrets in
//! files under `<data>/mirrors/NAME/` only the broker's user may read), each forwarded partition's
//! committed position, and the live status the forwarding tasks report. The forwarding itself runs
//! in the `quiver-mirror` crate (it is a client of the core, and the broker never links the client);
//! it follows the definitions through [`MirrorStore::subscribe`].

mod config;
mod status;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quiver_proto::mirror::{MirrorDirection, MirrorSpec, MirrorStart};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use config::MirrorConfig;
pub use status::{LivePartition, MirrorStatus};

use crate::meta::{MetaError, MetaStore, Namespace};

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error("no mirror named {0:?} on this broker")]
    Unknown(String),
    #[error("invalid mirror: {0}")]
    Invalid(String),
    #[error("mirror {0:?} is defined in the config file: remove it there")]
    FromConfig(String),
    #[error("cannot write the mirror's credentials to {}: {source}", path.display())]
    Secrets {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl MirrorError {
    pub fn code(&self) -> quiver_proto::ErrorCode {
        use quiver_proto::ErrorCode as C;
        match self {
            MirrorError::Unknown(_) => C::UnknownMirror,
            MirrorError::Invalid(_) | MirrorError::FromConfig(_) => C::InvalidRequest,
            MirrorError::Secrets { .. } => C::StorageError,
            MirrorError::Meta(e) => e.code(),
        }
    }
}

/// A mirror as the edge keeps it: the secrets are paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorDef {
    pub name: String,
    pub to: String,
    pub topics: String,
    pub prefix: Option<String>,
    pub from: MirrorStart,
    #[serde(default)]
    pub direction: MirrorDirection,
    pub source_id: String,
    pub ca: PathBuf,
    pub token_file: Option<PathBuf>,
    pub cert: Option<(PathBuf, PathBuf)>,
    pub from_config: bool,
    /// When the mirror was first defined (ms since the epoch): with `from = latest`, topics
    /// created after it are forwarded from their beginning.
    #[serde(default)]
    pub created_ms: i64,
    /// New at every add or replace (and every start for the config file's), so a replaced
    /// definition restarts its link even when only the credentials' contents changed.
    #[serde(default)]
    pub revision: u64,
}

impl MirrorDef {
    /// The core topic an edge topic is forwarded to.
    pub fn target_topic(&self, topic: &str) -> String {
        format!("{}{topic}", self.prefix.as_deref().unwrap_or(""))
    }

    /// Whether the mirror forwards the edge topic `topic`.
    pub fn forwards(&self, topic: &str) -> bool {
        quiver_proto::mirror::matches_pattern(&self.topics, topic)
    }

    pub fn auth_kind(&self) -> &'static str {
        match (&self.token_file, &self.cert) {
            (Some(_), _) => "token",
            (None, Some(_)) => "certificate",
            (None, None) => "none",
        }
    }
}

/// How far a mirror got in one edge partition, committed after the core acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Position {
    /// The next edge offset to forward.
    pub next: u64,
    /// Where on the core partition a resumed session looks for records it sent but saw no
    /// acknowledgement for: past the last acknowledged one, or the core's end when the mirror
    /// first reached it. `None`: nothing was ever sent (a `--from latest` start).
    pub scan_from: Option<u64>,
    /// Records retention removed on the edge before they were forwarded (cumulative).
    pub dropped: u64,
    /// The core partition this edge partition goes to, fixed at the first send so that a core
    /// topic given more partitions later does not split the edge partition's order.
    #[serde(default)]
    pub target_partition: Option<u32>,
    /// The mirror's and the edge topic's creation times: a position left by a removed mirror or
    /// a deleted topic of the same name does not apply to a new one.
    #[serde(default)]
    pub mirror_created_ms: i64,
    #[serde(default)]
    pub topic_created_ms: i64,
}

impl Position {
    /// A partition the mirror has not forwarded from yet, starting at `next`.
    pub fn fresh(def: &MirrorDef, topic_created_ms: i64, next: u64) -> Position {
        Position {
            next,
            mirror_created_ms: def.created_ms,
            topic_created_ms,
            ..Position::default()
        }
    }

    /// Whether this position belongs to `def` in the topic created at `topic_created_ms`.
    pub fn belongs(&self, def: &MirrorDef, topic_created_ms: i64) -> bool {
        self.mirror_created_ms == def.created_ms && self.topic_created_ms == topic_created_ms
    }
}

const SOURCE_ID_KEY: &str = "mirror-source-id";

#[derive(Debug)]
pub struct MirrorStore {
    meta: MetaStore,
    dir: PathBuf,
    source_id: String,
    changes: watch::Sender<u64>,
    status: parking_lot::Mutex<std::collections::HashMap<String, Arc<MirrorStatus>>>,
    new_configured: parking_lot::Mutex<Vec<String>>,
}

impl MirrorStore {
    /// Opens the store and puts the config file's mirrors in place of any earlier ones of
    /// theirs (a mirror removed from the file stops).
    pub fn open(
        meta: MetaStore,
        data_dir: &Path,
        configured: &[MirrorConfig],
    ) -> Result<MirrorStore, MirrorError> {
        let source_id = match meta.get::<String>(Namespace::Node, SOURCE_ID_KEY)? {
            Some(id) => id,
            None => {
                let id = format!("edge-{:012x}", crate::util::rand_u64() & 0xffff_ffff_ffff);
                meta.put_durable(Namespace::Node, SOURCE_ID_KEY, &id)?;
                id
            }
        };
        let store = MirrorStore {
            meta,
            dir: data_dir.join("mirrors"),
            source_id,
            changes: watch::channel(0).0,
            status: Default::default(),
            new_configured: Default::default(),
        };
        for old in store.definitions()?.into_iter().filter(|d| d.from_config) {
            if !configured.iter().any(|c| c.name == old.name) {
                store.meta.remove_durable(Namespace::Mirrors, &old.name)?;
                store.forget_positions(&old.name)?;
            }
        }
        for c in configured {
            if store.get(&c.name).is_err() {
                store.new_configured.lock().push(c.name.clone());
            }
            store.put(store.configured(c)?)?;
        }
        Ok(store)
    }

    /// This broker's name in the source header when a mirror names none (generated once).
    pub fn source_id(&self) -> &str {
        &self.source_id
    }

    /// Changes whenever a mirror is added, replaced or removed.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub fn definitions(&self) -> Result<Vec<MirrorDef>, MirrorError> {
        Ok(self
            .meta
            .scan::<MirrorDef>(Namespace::Mirrors, "")?
            .into_iter()
            .map(|(_, d)| d)
            .collect())
    }

    pub fn get(&self, name: &str) -> Result<MirrorDef, MirrorError> {
        self.meta
            .get(Namespace::Mirrors, name)?
            .ok_or_else(|| MirrorError::Unknown(name.to_owned()))
    }

    /// Adds or replaces a mirror from `mirror add`; its secrets go to files beside each other.
    /// Replacing keeps the positions: a changed definition resumes where the old one stopped.
    ///
    /// `seed` runs for a new mirror (no definition of that name yet) before it becomes visible to
    /// the links, to commit its starting positions.
    pub fn add(
        &self,
        spec: MirrorSpec,
        seed: impl FnOnce(&MirrorDef) -> Result<(), MirrorError>,
    ) -> Result<MirrorDef, MirrorError> {
        validate(&spec.name, &spec.to, &spec.topics, spec.prefix.as_deref())?;
        let new = self.get(&spec.name).is_err();
        let source_id = self.source(spec.source_id.clone())?;
        if let Ok(old) = self.get(&spec.name) {
            if old.from_config {
                return Err(MirrorError::FromConfig(spec.name));
            }
        }
        if spec.token.is_some() && spec.cert_pem.is_some() {
            return Err(MirrorError::Invalid(
                "give a token or a client certificate, not both".into(),
            ));
        }
        if spec.cert_pem.is_some() != spec.key_pem.is_some() {
            return Err(MirrorError::Invalid(
                "a client certificate needs its key, and a key its certificate".into(),
            ));
        }
        // Written beside the old files first, then moved in place: a failed add leaves the
        // running mirror's credentials as they were.
        let dir = self.dir.join(&spec.name);
        let staging = self.dir.join(format!(".{}.new", spec.name));
        let _ = std::fs::remove_dir_all(&staging);
        let write =
            |file: &str, text: &str| write_secret(&staging, file, text).map(|_| dir.join(file));
        let def = MirrorDef {
            ca: write("ca.pem", &spec.ca_pem)?,
            token_file: spec
                .token
                .as_deref()
                .map(|t| write("token", t))
                .transpose()?,
            cert: match (&spec.cert_pem, &spec.key_pem) {
                (Some(c), Some(k)) => Some((write("cert.pem", c)?, write("key.pem", k)?)),
                _ => None,
            },
            source_id,
            created_ms: self.created_ms(&spec.name),
            revision: 0,
            name: spec.name,
            to: spec.to,
            topics: spec.topics,
            prefix: spec.prefix,
            from: spec.from,
            direction: spec.direction,
            from_config: false,
        };
        if new {
            seed(&def)?;
        }
        self.swap_in(&staging, &dir, || self.put(def))
    }

    /// Moves the staged credential files in place of the old ones and runs `put`; the old
    /// files come back when either fails.
    fn swap_in(
        &self,
        staging: &Path,
        dir: &Path,
        put: impl FnOnce() -> Result<MirrorDef, MirrorError>,
    ) -> Result<MirrorDef, MirrorError> {
        let err = |source| MirrorError::Secrets {
            path: dir.to_owned(),
            source,
        };
        let aside = staging.with_extension("old");
        let _ = std::fs::remove_dir_all(&aside);
        let had = dir.exists();
        if had {
            std::fs::rename(dir, &aside).map_err(err)?;
        }
        let restore = || {
            let _ = std::fs::remove_dir_all(dir);
            if had {
                let _ = std::fs::rename(&aside, dir);
            }
        };
        if let Err(e) = std::fs::rename(staging, dir) {
            restore();
            return Err(err(e));
        }
        match put() {
            Ok(def) => {
                let _ = std::fs::remove_dir_all(&aside);
                Ok(def)
            }
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    /// Removes a mirror added with `mirror add`, its positions and its credential files.
    pub fn remove(&self, name: &str) -> Result<(), MirrorError> {
        if self.get(name)?.from_config {
            return Err(MirrorError::FromConfig(name.to_owned()));
        }
        self.meta.remove_durable(Namespace::Mirrors, name)?;
        self.forget_positions(name)?;
        let _ = std::fs::remove_dir_all(self.dir.join(name));
        self.status.lock().remove(name);
        self.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Removes a mirror's positions (a link still running may commit again; `belongs` rejects
    /// those for a mirror added anew).
    fn forget_positions(&self, name: &str) -> Result<(), MirrorError> {
        let prefix = format!("{name}/");
        for (key, _) in self
            .meta
            .scan::<Position>(Namespace::MirrorPositions, &prefix)?
        {
            self.meta.remove(Namespace::MirrorPositions, &key)?;
        }
        Ok(())
    }

    /// The config file's mirrors that had no definition before this start (to be seeded).
    pub fn take_new_configured(&self) -> Vec<String> {
        std::mem::take(&mut self.new_configured.lock())
    }

    /// The committed position of a mirror in an edge partition.
    pub fn position(
        &self,
        name: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<Position>, MirrorError> {
        Ok(self.meta.get(
            Namespace::MirrorPositions,
            &position_key(name, topic, partition),
        )?)
    }

    /// Commits a position (it reaches disk with the metadata store's next flush; a crash that
    /// loses it is repaired by the scan of the core at the next session).
    pub fn commit(
        &self,
        name: &str,
        topic: &str,
        partition: u32,
        position: &Position,
    ) -> Result<(), MirrorError> {
        Ok(self.meta.put(
            Namespace::MirrorPositions,
            &position_key(name, topic, partition),
            position,
        )?)
    }

    /// Every committed position of a mirror: (topic, partition, position).
    pub fn positions(&self, name: &str) -> Result<Vec<(String, u32, Position)>, MirrorError> {
        let prefix = format!("{name}/");
        let all = self
            .meta
            .scan::<Position>(Namespace::MirrorPositions, &prefix)?;
        Ok(all
            .into_iter()
            .filter_map(|(key, at)| {
                let (topic, p) = key.strip_prefix(&prefix)?.rsplit_once('/')?;
                Some((topic.to_owned(), p.parse().ok()?, at))
            })
            .collect())
    }

    /// Makes the commits so far durable (a first position must be, before anything is sent).
    pub fn flush(&self) -> Result<(), MirrorError> {
        Ok(self.meta.flush()?)
    }

    /// Forgets every mirror's positions in a deleted topic: a topic of the same name created later
    /// is a new log whose offsets start again.
    pub fn forget_topic(&self, topic: &str) -> Result<(), MirrorError> {
        for def in self.definitions()? {
            let prefix = format!("{}/{topic}/", def.name);
            for (key, _) in self
                .meta
                .scan::<Position>(Namespace::MirrorPositions, &prefix)?
            {
                self.meta.remove(Namespace::MirrorPositions, &key)?;
            }
            self.status(&def.name).forget_topic(topic);
        }
        Ok(())
    }

    /// The live status of a mirror (created empty on first use).
    pub fn status(&self, name: &str) -> Arc<MirrorStatus> {
        self.status
            .lock()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// A replaced mirror keeps its first definition's time.
    fn created_ms(&self, name: &str) -> i64 {
        self.get(name)
            .map_or_else(|_| crate::util::now_ms(), |d| d.created_ms)
    }

    fn put(&self, mut def: MirrorDef) -> Result<MirrorDef, MirrorError> {
        def.revision = self.meta.generate_id()?;
        self.meta.put_durable(Namespace::Mirrors, &def.name, &def)?;
        self.changes.send_modify(|v| *v += 1);
        Ok(def)
    }

    fn source(&self, given: Option<String>) -> Result<String, MirrorError> {
        match given {
            Some(id) if id.is_empty() || id.contains(char::is_control) => {
                Err(MirrorError::Invalid(format!(
                    "source id {id:?}: must be non-empty printable text"
                )))
            }
            Some(id) => Ok(id),
            None => Ok(self.source_id.clone()),
        }
    }

    fn configured(&self, c: &MirrorConfig) -> Result<MirrorDef, MirrorError> {
        validate(&c.name, &c.to, &c.topics, c.prefix.as_deref())?;
        let cert = match (&c.cert, &c.key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            (None, None) => None,
            _ => {
                return Err(MirrorError::Invalid(format!(
                    "mirror {:?}: cert and key go together",
                    c.name
                )))
            }
        };
        Ok(MirrorDef {
            name: c.name.clone(),
            to: c.to.clone(),
            topics: c.topics.clone(),
            prefix: c.prefix.clone(),
            from: c.from,
            direction: c.direction,
            source_id: self.source(c.source_id.clone())?,
            ca: c.ca.clone(),
            token_file: c.token_file.clone(),
            cert,
            from_config: true,
            created_ms: self.created_ms(&c.name),
            revision: 0,
        })
    }
}

fn position_key(name: &str, topic: &str, partition: u32) -> String {
    format!("{name}/{topic}/{partition}")
}

fn validate(name: &str, to: &str, topics: &str, prefix: Option<&str>) -> Result<(), MirrorError> {
    let invalid = |m: String| Err(MirrorError::Invalid(m));
    if crate::storage::validate_name(name).is_err() {
        return invalid(format!(
            "name {name:?}: 1 to 200 letters, digits, '.', '_' or '-', not starting with '.'"
        ));
    }
    match to.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
        _ => return invalid(format!("--to {to:?}: expected HOST:PORT")),
    }
    let pattern_ok = !topics.is_empty()
        && topics
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*'));
    if !pattern_ok {
        return invalid(format!(
            "--topics {topics:?}: a topic name, or a pattern of topic-name characters and '*'"
        ));
    }
    if let Some(p) = prefix {
        if crate::storage::validate_name(&format!("{p}x")).is_err() {
            return invalid(format!(
                "--as {p:?}: must be the start of a valid topic name"
            ));
        }
    }
    Ok(())
}

/// Writes a credential file readable by the broker's user only.
fn write_secret(dir: &Path, file: &str, text: &str) -> Result<PathBuf, MirrorError> {
    let path = dir.join(file);
    let err = |source| MirrorError::Secrets {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&path).map_err(err)?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> MirrorSpec {
        MirrorSpec {
            name: name.into(),
            to: "core.example:7447".into(),
            topics: "sensors.*".into(),
            prefix: Some("site-1.".into()),
            from: MirrorStart::Earliest,
            direction: MirrorDirection::Push,
            source_id: None,
            ca_pem: "CA".into(),
            token: Some("secret".into()),
            cert_pem: None,
            key_pem: None,
        }
    }

    fn no_seed(_: &MirrorDef) -> Result<(), MirrorError> {
        Ok(())
    }

    fn open(dir: &Path, configured: &[MirrorConfig]) -> MirrorStore {
        let meta = MetaStore::open(&dir.join("meta")).unwrap();
        MirrorStore::open(meta, dir, configured).unwrap()
    }

    #[test]
    fn add_keeps_secrets_in_private_files_and_remove_forgets_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &[]);
        let mut changes = store.subscribe();
        let mut seeded = 0;
        let mut seed = |_: &MirrorDef| {
            seeded += 1;
            Ok(())
        };
        let def = store.add(spec("m1"), &mut seed).unwrap();
        store.add(spec("m1"), &mut seed).unwrap();
        assert_eq!(seeded, 1, "only a new mirror is seeded");
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        assert_eq!(def.source_id, store.source_id());
        assert_eq!(def.target_topic("sensors.t"), "site-1.sensors.t");
        assert!(def.forwards("sensors.t") && !def.forwards("orders"));
        let token = def.token_file.clone().unwrap();
        assert_eq!(std::fs::read_to_string(&token).unwrap(), "secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&token).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let position = Position {
            next: 7,
            scan_from: Some(3),
            dropped: 1,
            ..Position::fresh(&def, 5, 7)
        };
        assert!(position.belongs(&def, 5) && !position.belongs(&def, 6));
        store.commit("m1", "sensors.t", 0, &position).unwrap();
        assert_eq!(
            store.position("m1", "sensors.t", 0).unwrap(),
            Some(position)
        );
        store.remove("m1").unwrap();
        assert!(changes.has_changed().unwrap());
        assert!(matches!(store.get("m1"), Err(MirrorError::Unknown(_))));
        assert_eq!(store.position("m1", "sensors.t", 0).unwrap(), None);
        assert!(!token.exists());
        assert!(matches!(store.remove("m1"), Err(MirrorError::Unknown(_))));
    }

    #[test]
    fn bad_definitions_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), &[]);
        let refused = |s: MirrorSpec, what: &str| match store.add(s, no_seed) {
            Err(MirrorError::Invalid(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{other:?}"),
        };
        refused(spec("bad/name"), "name");
        refused(
            MirrorSpec {
                to: "core".into(),
                ..spec("m")
            },
            "HOST:PORT",
        );
        refused(
            MirrorSpec {
                topics: "a b".into(),
                ..spec("m")
            },
            "--topics",
        );
        refused(
            MirrorSpec {
                prefix: Some("x/".into()),
                ..spec("m")
            },
            "--as",
        );
        let both = MirrorSpec {
            cert_pem: Some("C".into()),
            key_pem: Some("K".into()),
            ..spec("m")
        };
        refused(both, "not both");
        let keyless = MirrorSpec {
            token: None,
            cert_pem: Some("C".into()),
            ..spec("m")
        };
        refused(keyless, "key");
        assert!(store.definitions().unwrap().is_empty());
    }

    #[test]
    fn config_mirrors_are_kept_in_step_with_the_file_and_the_source_id_with_the_data() {
        let dir = tempfile::tempdir().unwrap();
        let configured = MirrorConfig {
            name: "from-file".into(),
            to: "core:7447".into(),
            ca: "/etc/ca.pem".into(),
            topics: "*".into(),
            prefix: None,
            from: MirrorStart::Latest,
            direction: MirrorDirection::Push,
            source_id: Some("shop-9".into()),
            token_file: None,
            cert: None,
            key: None,
        };
        let (id, created) = {
            let store = open(dir.path(), std::slice::from_ref(&configured));
            assert_eq!(store.take_new_configured(), ["from-file"]);
            let def = store.get("from-file").unwrap();
            assert!(def.from_config);
            assert_eq!(def.source_id, "shop-9");
            assert!(matches!(
                store.remove("from-file"),
                Err(MirrorError::FromConfig(_))
            ));
            assert!(matches!(
                store.add(spec("from-file"), no_seed),
                Err(MirrorError::FromConfig(_))
            ));
            store.add(spec("by-hand"), no_seed).unwrap();
            (store.source_id().to_owned(), def.created_ms)
        };
        let store = open(dir.path(), std::slice::from_ref(&configured));
        assert!(
            store.take_new_configured().is_empty(),
            "seeded once, when new"
        );
        assert_eq!(store.source_id(), id, "generated once per data directory");
        assert_eq!(store.get("from-file").unwrap().created_ms, created);
        drop(store);
        let store = open(dir.path(), &[]);
        let names: Vec<String> = store
            .definitions()
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["by-hand"], "a mirror gone from the file stops");
    }
}
