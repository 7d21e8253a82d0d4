//! The one wasmtime `Engine` of the broker: its configuration (pooling allocator, epoch
//! interruption), the epoch ticker that bounds the CPU time of every call, and the on-disk cache of
//! compiled components keyed by content hash and engine compatibility hash.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::sandbox::{self, HostState, MemoryBudget};
use super::{sha256_hex, PluginError};

/// How often the epoch advances: the granularity of call time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// Engine-wide limits, from the broker configuration.
#[derive(Debug, Clone, Copy)]
pub struct EngineLimits {
    /// Largest linear memory any plugin may reach (per-attachment limits are at most this).
    pub max_memory_bytes: usize,
    /// Plugin instances alive at once (attachments plus read-filter sessions).
    pub max_instances: u32,
    /// Linear memory of all instances together (the broker-wide budget).
    pub max_total_memory_bytes: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits {
            max_memory_bytes: 512 << 20,
            max_instances: 256,
            max_total_memory_bytes: 1 << 30,
        }
    }
}

/// A compiled component, and how it was obtained.
pub struct Compiled {
    pub component: Component,
    pub compile_ms: u64,
    pub cached: bool,
}

pub struct PluginEngine {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: PathBuf,
    /// Engine compatibility hash: an artifact compiled by another wasmtime build or configuration
    /// gets another file name, so it is never loaded.
    compat: String,
    stop_ticker: Arc<AtomicBool>,
    pub limits: EngineLimits,
    budget: Arc<MemoryBudget>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl PluginEngine {
    pub fn new(cache_dir: &Path, limits: EngineLimits) -> Result<PluginEngine, PluginError> {
        let engine = Engine::new(&engine_config(limits)).map_err(PluginError::engine)?;
        let linker = sandbox::linker(&engine).map_err(PluginError::engine)?;
        std::fs::create_dir_all(cache_dir).map_err(|e| PluginError::io(cache_dir, e))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let stop_ticker = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), stop_ticker.clone())
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(PluginEngine {
            engine,
            linker,
            cache_dir: cache_dir.to_owned(),
            compat: format!("{:016x}", h.finish()),
            stop_ticker,
            limits,
            budget: MemoryBudget::new(limits.max_total_memory_bytes),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// The broker-wide plugin memory budget (what all instances hold, and its limit).
    pub fn budget(&self) -> &Arc<MemoryBudget> {
        &self.budget
    }

    fn cache_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir
            .join(format!("{sha256}-{}.cwasm", self.compat))
    }

    /// Compiles `bytes`, or loads the artifact compiled earlier for the same bytes and engine.
    pub fn compile(&self, sha256: &str, bytes: &[u8]) -> Result<Compiled, PluginError> {
        let path = self.cache_path(sha256);
        if let Some(component) = self.load_artifact(&path) {
            return Ok(Compiled {
                component,
                compile_ms: 0,
                cached: true,
            });
        }
        let started = Instant::now();
        let component = Component::new(&self.engine, bytes).map_err(PluginError::invalid)?;
        let compile_ms = started.elapsed().as_millis() as u64;
        self.store_artifact(&path, &component);
        Ok(Compiled {
            component,
            compile_ms,
            cached: false,
        })
    }

    /// A cached artifact whose bytes still match the checksum written next to it. Loading
    /// compiled code is `unsafe` in wasmtime (it is mapped and run as is), so a file that was torn,
    /// damaged or replaced is discarded and the component compiled again.
    fn load_artifact(&self, path: &Path) -> Option<Component> {
        let bytes = std::fs::read(path).ok()?;
        let expected = std::fs::read_to_string(checksum_path(path)).unwrap_or_default();
        if expected.trim() != sha256_hex(&bytes) {
            tracing::warn!(path = %path.display(), "discarding a compiled plugin whose checksum does not match");
            let _ = std::fs::remove_file(path);
            return None;
        }
        // SAFETY: these bytes are exactly what this broker wrote with `Component::serialize`
        // (checked against the SHA-256 recorded with them), under a name that carries the engine
        // compatibility hash, in its own data directory; wasmtime also checks the header.
        match unsafe { Component::deserialize(&self.engine, &bytes) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding a compiled plugin that cannot be loaded");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    /// Writes the compiled artifact and its checksum (each via a unique temporary file, fsync'd,
    /// then renamed); a failure only costs a recompile later.
    fn store_artifact(&self, path: &Path, component: &Component) {
        let written = component
            .serialize()
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|bytes| {
                write_atomically(&checksum_path(path), sha256_hex(&bytes).as_bytes())?;
                write_atomically(path, &bytes)
            });
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache a compiled plugin");
        }
    }

    /// Forgets the compiled artifact of a removed component.
    pub fn evict(&self, sha256: &str) {
        let path = self.cache_path(sha256);
        let _ = std::fs::remove_file(checksum_path(&path));
        let _ = std::fs::remove_file(path);
    }
}

fn checksum_path(artifact: &Path) -> PathBuf {
    artifact.with_extension("cwasm.sha256")
}

/// Writes `bytes` to a temporary file unique to this call, fsyncs it and renames it over `path`, so
/// concurrent writers and crashes never leave a partial file under `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
    let result = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

impl Drop for PluginEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

fn engine_config(limits: EngineLimits) -> Config {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(limits.max_instances)
        .total_core_instances(limits.max_instances * 8)
        .total_memories(limits.max_instances * 2)
        .total_tables(limits.max_instances * 8)
        .total_stacks(limits.max_instances)
        .max_memory_size(limits.max_memory_bytes)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .table_elements(1 << 20)
        .max_core_instance_size(1 << 20)
        .max_component_instance_size(1 << 20);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .parallel_compilation(true)
        .cranelift_opt_level(wasmtime::OptLevel::Speed);
    config
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the engine is dropped; a call's deadline
/// is a number of ticks, checked by the compiled code at loop headers and function entries.
fn spawn_ticker(engine: Engine, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("quiver-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .map(drop)
}
