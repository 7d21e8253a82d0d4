//! Logging and time for plugins, over the two `host` imports (`log`, `now-ms`).
//!
//! In a wasm build every line goes to the broker, which tags it with the plugin and attachment. In a
//! native build (the author's `cargo test`) there is no broker: lines are kept per thread so a test
//! can assert on them with [`take_captured`], and the clock is the system's.

/// Severity of a log line; mirrors the WIT `host.level` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Sends `message` to the broker's log at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    host_log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    native::capture(level, message);
}

/// Sends one log line to the broker through the `host.log` import.
#[cfg(target_arch = "wasm32")]
fn host_log(level: Level, message: &str) {
    use crate::bindings::filter_world::quiver::plugin::host;
    let level = match level {
        Level::Trace => host::Level::Trace,
        Level::Debug => host::Level::Debug,
        Level::Info => host::Level::Info,
        Level::Warn => host::Level::Warn,
        Level::Error => host::Level::Error,
    };
    host::log(level, message);
}

pub fn trace(message: &str) {
    log(Level::Trace, message);
}

pub fn debug(message: &str) {
    log(Level::Debug, message);
}

pub fn info(message: &str) {
    log(Level::Info, message);
}

pub fn warn(message: &str) {
    log(Level::Warn, message);
}

pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Milliseconds since the Unix epoch, from the broker's clock (plugins get no WASI clocks).
pub fn now_ms() -> i64 {
    #[cfg(target_arch = "wasm32")]
    return crate::bindings::filter_world::quiver::plugin::host::now_ms();
    #[cfg(not(target_arch = "wasm32"))]
    return native::now_ms();
}

/// Lines logged so far on this thread in a native build, oldest first; clears the buffer. Always
/// empty in a wasm build, where every line has already gone to the broker.
pub fn take_captured() -> Vec<(Level, String)> {
    #[cfg(target_arch = "wasm32")]
    return Vec::new();
    #[cfg(not(target_arch = "wasm32"))]
    return native::take();
}

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::Level;

    thread_local! {
        // Per thread, so parallel tests of one plugin do not see each other's lines.
        static LINES: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn capture(level: Level, message: &str) {
        LINES.with(|lines| lines.borrow_mut().push((level, message.to_owned())));
    }

    pub(super) fn take() -> Vec<(Level, String)> {
        LINES.with(|lines| std::mem::take(&mut *lines.borrow_mut()))
    }

    pub(super) fn now_ms() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// `trace!("fmt", args..)`: formats and logs at trace level.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => { $crate::log::trace(&::std::format!($($arg)*)) };
}

/// `debug!("fmt", args..)`: formats and logs at debug level.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::log::debug(&::std::format!($($arg)*)) };
}

/// `info!("fmt", args..)`: formats and logs at info level.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::log::info(&::std::format!($($arg)*)) };
}

/// `warn!("fmt", args..)`: formats and logs at warn level.
#[macro_export]
macro_rules! warn {
    ($($arg:tt)*) => { $crate::log::warn(&::std::format!($($arg)*)) };
}

/// `error!("fmt", args..)`: formats and logs at error level.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::log::error(&::std::format!($($arg)*)) };
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn native_lines_are_captured_per_thread() {
        crate::info!("hello {}", 1);
        crate::debug!("x");
        assert_eq!(
            take_captured(),
            vec![(Level::Info, "hello 1".into()), (Level::Debug, "x".into())]
        );
        assert!(take_captured().is_empty());
        assert!(now_ms() > 1_600_000_000_000);
    }
}
