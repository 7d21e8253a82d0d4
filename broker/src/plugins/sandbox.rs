//! The sandbox a plugin instance runs in: its store state (an empty WASI p2 context, a memory
//! limiter, a bounded log), and the linker that offers WASI plus the `quiver:plugin/host` imports.
//!
//! The WASI context grants nothing: no preopened directories, no environment or arguments, TCP,
//! UDP and name lookup switched off. rustc's wasm32-wasip2 output imports WASI even for a pure
//! function, so the imports are linked (and fail at use) rather than refused at deploy.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use wasmtime::component::{ComponentType, Lift, Linker, Lower, Resource, ResourceTable};
use wasmtime::{Engine, ResourceLimiter, StoreContextMut};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::logs::{Level, LogSink};
use crate::util::truncate_utf8;

/// The WIT interface name of the host imports.
const HOST_INTERFACE: &str = "quiver:plugin/host@0.1.0";
/// The WASI clock interface whose timers the sandbox refuses (see [`refuse_waiting`]).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";
/// Resources (streams, pollables) one instance may hold at once.
const MAX_RESOURCES: usize = 1024;
/// Table elements one instance may grow to (JavaScript engines need tens of thousands).
const MAX_TABLE_ELEMENTS: usize = 200_000;
/// Log lines a plugin may emit per call; the rest are counted and dropped.
const MAX_LOG_LINES_PER_CALL: u32 = 64;
/// Longest log line kept, in bytes.
const MAX_LOG_LINE: usize = 1024;
/// Bytes of stderr kept (the tail): a Rust guest's panic message lands there before it traps.
const STDERR_TAIL: usize = 2048;
/// Most bytes one `wasi:random` call may ask for (secure or insecure). Host calls run outside
/// wasm, where epoch interruption cannot stop them: each must be short for a call's time limit to
/// hold (64 MiB of random bytes took a third of a second). Seeding needs a few dozen bytes.
pub const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// `types.config-entry` of the WIT.
#[derive(ComponentType, Lift, Lower, Debug, Clone, PartialEq, Eq)]
#[component(record)]
pub struct ConfigEntry {
    pub key: String,
    pub value: String,
}

/// Everything one plugin instance's store holds.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// `name@version`, the target of its log lines.
    pub(crate) label: Arc<str>,
    log_budget: u32,
    pub(crate) logs: LogSink,
    pub(crate) stderr: TailPipe,
}

impl HostState {
    pub fn new(
        label: Arc<str>,
        memory_limit: usize,
        budget: Arc<MemoryBudget>,
        logs: LogSink,
    ) -> HostState {
        let stderr = TailPipe::default();
        let wasi = WasiCtx::builder()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .max_random_size(MAX_RANDOM_BYTES)
            .stderr(stderr.clone())
            .build();
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        HostState {
            wasi,
            table,
            limiter: MemoryLimiter {
                limit: memory_limit,
                total: 0,
                exceeded: None,
                budget,
                over_budget: false,
                last_grow: None,
            },
            label,
            log_budget: MAX_LOG_LINES_PER_CALL,
            logs,
            stderr,
        }
    }

    /// Called before each export call.
    pub fn begin_call(&mut self) {
        self.log_budget = MAX_LOG_LINES_PER_CALL;
        self.limiter.exceeded = None;
        self.limiter.over_budget = false;
    }

    /// The memory the guest asked for past its limit during the last call, if it did.
    pub fn memory_exceeded(&self) -> Option<(usize, usize)> {
        self.limiter.exceeded.map(|want| (want, self.limiter.limit))
    }

    /// A grow during the last call was refused by the broker-wide budget: (budget, in use).
    pub fn over_budget(&self) -> Option<(usize, usize)> {
        let b = &self.limiter.budget;
        self.limiter.over_budget.then(|| (b.limit, b.used()))
    }

    /// Bytes of linear memory the instance holds.
    pub fn memory_bytes(&self) -> usize {
        self.limiter.total
    }

    pub fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }

    fn log(&mut self, level: Level, message: String) {
        if self.log_budget == 0 {
            return;
        }
        self.log_budget -= 1;
        let mut message = message;
        truncate_utf8(&mut message, MAX_LOG_LINE);
        if self.log_budget == 0 {
            message.push_str(" (further log lines of this call dropped)");
        }
        let plugin = &*self.label;
        match level {
            Level::Trace => tracing::trace!(target: "quiver::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "quiver::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "quiver::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "quiver::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "quiver::plugin", plugin, "{message}"),
        }
        self.logs.push(level, message);
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The broker-wide budget of plugin linear memory (`plugins.max_total_memory_mb`): every
/// instance reserves here what it grows by and gives it back when it is dropped, so the sum over
/// all instances (attachments and read-filter sessions) never passes the budget, however many
/// instances the pool allows.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Takes `bytes` from the budget, or nothing if they do not fit.
    fn reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes reserved by live instances.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

/// Caps the linear memory of an instance: the sum over all its memories (a component may have
/// several), and the size of its tables. A grow past the limit traps at once, with the amount
/// recorded, so the error names the limit rather than surfacing as an allocator abort. Every grow
/// (the initial memory at instantiation too) is also reserved from the broker-wide budget.
pub struct MemoryLimiter {
    limit: usize,
    /// Bytes of linear memory across the instance's memories.
    total: usize,
    exceeded: Option<usize>,
    budget: Arc<MemoryBudget>,
    /// A grow of the current call was refused by the budget.
    over_budget: bool,
    /// (bytes reserved, total before) of the last permitted grow, undone if the grow then fails.
    last_grow: Option<(usize, usize)>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.total.saturating_sub(current).saturating_add(desired);
        if total > self.limit {
            self.exceeded = Some(total);
            return Err(wasmtime::Error::msg(format!(
                "memory limit exceeded: the plugin asked for {total} bytes, the limit is {}",
                self.limit
            )));
        }
        let more = desired.saturating_sub(current);
        if !self.budget.reserve(more) {
            self.over_budget = true;
            return Err(wasmtime::Error::msg(format!(
                "the broker's plugin memory budget of {} bytes is in use",
                self.budget.limit
            )));
        }
        self.last_grow = Some((more, self.total));
        self.total = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        if let Some((reserved, before)) = self.last_grow.take() {
            self.budget.release(reserved);
            self.total = before;
        }
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.budget.release(self.total);
    }
}

/// Builds the linker every plugin is instantiated with: WASI p2 (empty context) and the host
/// interface.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    refuse_waiting(&mut linker)?;
    let mut host = linker.instance(HOST_INTERFACE)?;
    host.func_wrap(
        "log",
        |mut store: StoreContextMut<'_, HostState>, (level, message): (Level, String)| {
            store.data_mut().log(level, message);
            Ok(())
        },
    )?;
    host.func_wrap("now-ms", |_: StoreContextMut<'_, HostState>, (): ()| {
        Ok((crate::util::now_ms(),))
    })?;
    Ok(linker)
}

/// Replaces the WASI timers with ones that trap. A synchronous host waits for a pollable on the
/// calling thread, outside wasm code, where epoch interruption cannot reach it: a plugin that
/// sleeps (or waits on a timer it set far in the future) would hold its thread and its
/// attachment for as long as it liked. The other pollables of an empty context (closed stdin,
/// discarded output) are always ready, so timers are the only way to wait.
fn refuse_waiting(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    let refuse = |what: &str| {
        wasmtime::Error::msg(format!(
            "plugins may not sleep or wait: {what} is refused in the sandbox"
        ))
    };
    clock.func_wrap(
        "subscribe-duration",
        move |_: StoreContextMut<'_, HostState>,
              (_,): (u64,)|
              -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(refuse("monotonic-clock.subscribe-duration"))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        move |_: StoreContextMut<'_, HostState>,
              (_,): (u64,)|
              -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(refuse("monotonic-clock.subscribe-instant"))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// A stderr that keeps only its last bytes and never fails a write (a chatty guest must not trap
/// because of its own output).
#[derive(Clone, Default)]
pub struct TailPipe {
    buf: Arc<Mutex<VecDeque<u8>>>,
}

impl TailPipe {
    fn push(&self, bytes: &[u8]) {
        let mut buf = self.buf.lock();
        let bytes = &bytes[bytes.len().saturating_sub(STDERR_TAIL)..];
        let excess = (buf.len() + bytes.len()).saturating_sub(STDERR_TAIL);
        buf.drain(..excess);
        buf.extend(bytes);
    }

    /// Takes what was written since the last call, as trimmed text.
    pub fn take(&self) -> String {
        let bytes: Vec<u8> = self.buf.lock().drain(..).collect();
        String::from_utf8_lossy(&bytes).trim().to_owned()
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for TailPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for TailPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 << 10)
    }
}

impl tokio::io::AsyncWrite for TailPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
