//! The user's cache directory for what the CLI keeps between runs (compiled plugin code, plugin
//! build tools): `QUIVER_CACHE_DIR`, else `$XDG_CACHE_HOME/quiver`, else `~/.cache/quiver`.

use std::path::PathBuf;

/// `None` when there is no home directory to put it in.
pub fn dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("QUIVER_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("quiver"))
}
