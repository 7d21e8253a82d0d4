//! The plugin registry: deploy (validate, compile, link, store), list, describe and remove plugin
//! versions `name@version`. The component bytes and version records live in the metadata store
//! (flushed before a deploy is acknowledged) and survive restarts; compiled code is cached on disk
//! by the engine and linked code in memory.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use quiver_proto::messages::PluginVersionInfo;
use serde::{Deserialize, Serialize};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;

use super::engine::{Compiled, PluginEngine};
use super::instance::{Limits, PluginInstance, PluginPre, World};
use super::logs::LogHub;
use super::{sha256_hex, PluginError};
use crate::meta::{MetaStore, Namespace};

/// A component starts with the wasm magic, then version 0x0d and layer 0x01 (a core module has
/// version 1, layer 0).
const COMPONENT_PREAMBLE: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
const WASM_MAGIC: [u8; 4] = [0x00, 0x61, 0x73, 0x6d];
const MAX_NAME: usize = 64;
/// Log lines `plugin describe` shows per version.
const RECENT_LINES: usize = 20;

/// The stored bytes of one component (keyed by content hash, shared by versions).
#[derive(Serialize, Deserialize)]
struct StoredWasm {
    #[serde(with = "serde_bytes")]
    bytes: Vec<u8>,
}

/// What a deploy returns.
#[derive(Debug, Clone)]
pub struct Deployed {
    pub info: PluginVersionInfo,
    pub compile_ms: u64,
    pub cached: bool,
}

pub struct PluginRegistry {
    meta: MetaStore,
    engine: Arc<PluginEngine>,
    /// Linked versions by `(name, version)`, loaded on first use after a restart.
    loaded: Mutex<HashMap<(String, String), Arc<PluginPre>>>,
    /// Serialises deploy and remove so version numbering and hash reference counts stay exact.
    admin: Mutex<()>,
    /// The log lines of every plugin, by name.
    logs: LogHub,
}

impl std::fmt::Debug for PluginRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRegistry").finish_non_exhaustive()
    }
}

fn version_key(name: &str, version: &str) -> String {
    format!("version/{name}/{version}")
}

fn wasm_key(sha256: &str) -> String {
    format!("wasm/{sha256}")
}

impl PluginRegistry {
    pub fn new(meta: MetaStore, engine: Arc<PluginEngine>) -> PluginRegistry {
        PluginRegistry {
            meta,
            engine,
            loaded: Mutex::default(),
            admin: Mutex::new(()),
            logs: LogHub::default(),
        }
    }

    pub fn engine(&self) -> &Arc<PluginEngine> {
        &self.engine
    }

    /// The log lines plugins wrote since the broker started.
    pub fn logs(&self) -> &LogHub {
        &self.logs
    }

    /// Validates and stores a component. Deploying the same bytes again under the same version (or
    /// with no version, when they are the latest) is a no-op; other bytes under an existing version
    /// are refused.
    pub fn deploy(
        &self,
        name: &str,
        version: Option<&str>,
        bytes: &[u8],
    ) -> Result<Deployed, PluginError> {
        check_name("plugin name", name)?;
        if let Some(v) = version {
            check_name("version", v)?;
        }
        check_preamble(bytes)?;
        let sha256 = sha256_hex(bytes);
        let _admin = self.admin.lock();
        let version = match version {
            Some(v) => v.to_owned(),
            None => match self.resolve(name) {
                Ok(latest) if latest.sha256 == sha256 => latest.version,
                _ => self.next_version(name)?,
            },
        };
        if let Some(existing) = self.version(name, &version)? {
            if existing.sha256 != sha256 {
                return Err(PluginError::InvalidRequest(format!(
                    "{name}@{version} is already deployed with other content; deploy under a new --version"
                )));
            }
            drop(_admin);
            self.pre(name, &version)?;
            return Ok(Deployed {
                info: existing,
                compile_ms: 0,
                cached: true,
            });
        }
        let compiled = self.engine.compile(&sha256, bytes)?;
        check_wit_version(&compiled.component, &self.engine)?;
        let world = detect_world(&compiled.component, &self.engine)?;
        let info = PluginVersionInfo {
            name: name.to_owned(),
            version: version.clone(),
            world: world.name().to_owned(),
            sha256: sha256.clone(),
            size_bytes: bytes.len() as u64,
            deployed_ms: crate::util::now_ms(),
        };
        let pre = self.link(&info, world, &compiled)?;
        self.meta.put(
            Namespace::Plugins,
            &wasm_key(&sha256),
            &StoredWasm {
                bytes: bytes.to_vec(),
            },
        )?;
        self.meta
            .put_durable(Namespace::Plugins, &version_key(name, &version), &info)?;
        self.loaded.lock().insert((name.to_owned(), version), pre);
        tracing::info!(plugin = %name, version = %info.version, world = %info.world, sha256 = %info.sha256, compile_ms = compiled.compile_ms, cached = compiled.cached, "plugin deployed");
        Ok(Deployed {
            info,
            compile_ms: compiled.compile_ms,
            cached: compiled.cached,
        })
    }

    /// Links a compiled component and proves it instantiates in the sandbox with the exports of
    /// its world (no `init` yet: that needs an attachment's configuration).
    fn link(
        &self,
        info: &PluginVersionInfo,
        world: World,
        compiled: &Compiled,
    ) -> Result<Arc<PluginPre>, PluginError> {
        let pre = self
            .engine
            .linker()
            .instantiate_pre(&compiled.component)
            .map_err(|e| {
                PluginError::Invalid(format!(
                    "{}@{}: cannot be linked (it imports something the broker does not offer): {e:#}",
                    info.name, info.version
                ))
            })?;
        let pre = Arc::new(PluginPre {
            label: format!("{}@{}", info.name, info.version).into(),
            world,
            engine: self.engine.engine().clone(),
            pre,
            logs: self.logs.sink(&info.name, &info.version),
            budget: self.engine.budget().clone(),
        });
        let probe = Limits {
            timeout: std::time::Duration::from_secs(1),
            memory_bytes: self.engine.limits.max_memory_bytes,
            max_output_bytes: 0,
        };
        // A component that cannot even be instantiated is an invalid plugin, not a failed call.
        // (Out of capacity or budget is the broker's condition: retriable, as it is.)
        PluginInstance::new(&pre, probe).map_err(|e| match e {
            PluginError::Failed {
                plugin,
                message,
                kind,
            } if !kind.is_retriable() => PluginError::Invalid(format!("{plugin}: {message}")),
            other => other,
        })?;
        Ok(pre)
    }

    /// The linked code of a version, loading and compiling (or reading the compile cache) on first
    /// use since start.
    pub fn pre(&self, name: &str, version: &str) -> Result<Arc<PluginPre>, PluginError> {
        let key = (name.to_owned(), version.to_owned());
        if let Some(pre) = self.loaded.lock().get(&key) {
            return Ok(pre.clone());
        }
        let info = self
            .version(name, version)?
            .ok_or_else(|| PluginError::Unknown(format!("{name}@{version}")))?;
        let wasm: StoredWasm = self
            .meta
            .get(Namespace::Plugins, &wasm_key(&info.sha256))?
            .ok_or_else(|| {
                PluginError::Invalid(format!("{name}@{version}: component bytes are missing"))
            })?;
        let compiled = self.engine.compile(&info.sha256, &wasm.bytes)?;
        let world = World::parse(&info.world)
            .ok_or_else(|| PluginError::Invalid(format!("unknown world {:?}", info.world)))?;
        let pre = self.link(&info, world, &compiled)?;
        self.loaded.lock().insert(key, pre.clone());
        Ok(pre)
    }

    pub fn version(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<PluginVersionInfo>, PluginError> {
        Ok(self
            .meta
            .get(Namespace::Plugins, &version_key(name, version))?)
    }

    /// Every version of every plugin, by name then deploy time.
    pub fn list(&self) -> Result<Vec<PluginVersionInfo>, PluginError> {
        let mut all: Vec<PluginVersionInfo> = self
            .meta
            .scan::<PluginVersionInfo>(Namespace::Plugins, "version/")?
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        all.sort_by(|a, b| (&a.name, a.deployed_ms).cmp(&(&b.name, b.deployed_ms)));
        Ok(all)
    }

    /// The versions `NAME` (all) or `NAME@VERSION` (one) names; an error when there are none.
    pub fn versions(&self, reference: &str) -> Result<Vec<PluginVersionInfo>, PluginError> {
        let (name, version) = split_ref(reference);
        let found: Vec<PluginVersionInfo> = match version {
            Some(v) => self.version(name, v)?.into_iter().collect(),
            None => self
                .list()?
                .into_iter()
                .filter(|v| v.name == name)
                .collect(),
        };
        if found.is_empty() {
            return Err(PluginError::Unknown(reference.to_owned()));
        }
        Ok(found)
    }

    /// `NAME@VERSION` as given, or `NAME` resolved to its most recently deployed version.
    pub fn resolve(&self, reference: &str) -> Result<PluginVersionInfo, PluginError> {
        let mut found = self.versions(reference)?;
        found.sort_by_key(|v| v.deployed_ms);
        found
            .pop()
            .ok_or_else(|| PluginError::Unknown(reference.to_owned()))
    }

    /// Removes the named versions; `attached` lists the topics that use a version (those refuse).
    pub fn remove(
        &self,
        reference: &str,
        attached: impl Fn(&str, &str) -> Vec<String>,
    ) -> Result<Vec<String>, PluginError> {
        let _admin = self.admin.lock();
        let found = self.versions(reference)?;
        for v in &found {
            let topics = attached(&v.name, &v.version);
            if !topics.is_empty() {
                return Err(PluginError::InUse {
                    plugin: format!("{}@{}", v.name, v.version),
                    topics,
                });
            }
        }
        for v in &found {
            self.meta
                .remove_durable(Namespace::Plugins, &version_key(&v.name, &v.version))?;
            self.loaded
                .lock()
                .remove(&(v.name.clone(), v.version.clone()));
        }
        self.collect_garbage(&found)?;
        self.forget_logs_of_gone(&found)?;
        tracing::info!(plugin = %reference, versions = found.len(), "plugin removed");
        Ok(found.into_iter().map(|v| v.version).collect())
    }

    /// Drops component bytes (and compiled code) no remaining version refers to.
    fn collect_garbage(&self, removed: &[PluginVersionInfo]) -> Result<(), PluginError> {
        let remaining = self.list()?;
        for v in removed {
            if !remaining.iter().any(|r| r.sha256 == v.sha256) {
                self.meta
                    .remove_durable(Namespace::Plugins, &wasm_key(&v.sha256))?;
                self.engine.evict(&v.sha256);
            }
        }
        Ok(())
    }

    /// Drops the log lines of plugins that have no version left.
    fn forget_logs_of_gone(&self, removed: &[PluginVersionInfo]) -> Result<(), PluginError> {
        let remaining = self.list()?;
        for v in removed {
            if !remaining.iter().any(|r| r.name == v.name) {
                self.logs.forget(&v.name);
            }
        }
        Ok(())
    }

    /// One more than the highest numeric version of `name` (1 for a new plugin).
    fn next_version(&self, name: &str) -> Result<String, PluginError> {
        let highest = self
            .list()?
            .iter()
            .filter(|v| v.name == name)
            .filter_map(|v| v.version.parse::<u64>().ok())
            .max()
            .unwrap_or(0);
        Ok((highest + 1).to_string())
    }

    /// The recent log lines of a version since the broker started, for `plugin describe`.
    pub fn recent_logs(&self, name: &str, version: &str) -> Vec<String> {
        self.logs.ring(name).recent(name, version, RECENT_LINES)
    }
}

/// Splits `NAME@VERSION` (the version is optional).
pub fn split_ref(reference: &str) -> (&str, Option<&str>) {
    match reference.split_once('@') {
        Some((name, version)) => (name, Some(version)),
        None => (reference, None),
    }
}

fn check_name(what: &str, s: &str) -> Result<(), PluginError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(PluginError::InvalidRequest(format!(
            "invalid {what} {s:?}: use 1 to {MAX_NAME} characters of a-z, A-Z, 0-9, '.', '_', '-'"
        )))
    }
}

/// Refuses what is not a component before handing it to the compiler, with the fix in the message.
fn check_preamble(bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.get(..4) != Some(&WASM_MAGIC[..]) {
        return Err(PluginError::Invalid(
            "not a WebAssembly binary (no \\0asm header)".into(),
        ));
    }
    if bytes.get(..8) != Some(&COMPONENT_PREAMBLE[..]) {
        return Err(PluginError::Invalid(
            "this is a core WebAssembly module, not a component: build a component (Rust: `cargo build --target wasm32-wasip2`; JavaScript: componentize-js; Python: componentize-py), or wrap the module with `wasm-tools component new`".into(),
        ));
    }
    Ok(())
}

/// Which plugin world a component implements, from its exported functions; what is missing or
/// too much is named with the fix.
fn detect_world(component: &Component, engine: &PluginEngine) -> Result<World, PluginError> {
    let ty = component.component_type();
    let funcs: Vec<&str> = ty
        .exports(engine.engine())
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
        .map(|(name, _)| name)
        .collect();
    let has = |f: &str| funcs.contains(&f);
    let worlds: Vec<World> = World::ALL.into_iter().filter(|w| has(w.as_str())).collect();
    let message = match worlds[..] {
        [world] if has("init") => return Ok(world),
        [world] => format!(
            "the component exports `{}` but not `init`: every {WIT_PACKAGE} world also exports `init: func(config: list<config-entry>) -> result<_, string>`; add it (the SDK's `{}_plugin!(init = …, {} = …)` does)",
            world.as_str(),
            world.name(),
            world.as_str()
        ),
        [] if has("init") => format!(
            "the component exports `init` but none of `filter`, `transform`, `route`, `schedule`: export the batch function of the world you target ({WORLDS})"
        ),
        [] => format!(
            "the component exports {funcs:?}, not a {WIT_PACKAGE} world: build it against one of the worlds {WORLDS} of wit/quiver-plugin.wit"
        ),
        _ => format!(
            "the component exports {}: a plugin implements one world; build one component per world",
            worlds.iter().map(|w| format!("`{}`", w.as_str())).collect::<Vec<_>>().join(" and ")
        ),
    };
    Err(PluginError::Invalid(message))
}

/// The WIT package (and version) this broker implements.
const WIT_PACKAGE: &str = "quiver:plugin@0.1.0";
const WORLDS: &str = "filter, transform, router, scheduler";

/// Refuses a component built against another version of the quiver:plugin WIT: it would fail to
/// link (another host interface) or on its first call (other types), with a message about neither.
fn check_wit_version(component: &Component, engine: &PluginEngine) -> Result<(), PluginError> {
    let ty = component.component_type();
    let other = ty
        .imports(engine.engine())
        .map(|(name, _)| name)
        .find(|name| name.starts_with("quiver:plugin/") && !name.ends_with("@0.1.0"));
    match other {
        Some(name) => Err(PluginError::Invalid(format!(
            "the component was built against another version of the plugin WIT (it imports `{name}`); this broker implements {WIT_PACKAGE}: regenerate its bindings from this broker's wit/quiver-plugin.wit and rebuild"
        ))),
        None => Ok(()),
    }
}
