//! Small shared helpers.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Cuts `s` to at most `max` bytes on a character boundary.
/// A random number (ids that only have to differ: a generated mirror source id, a node's
/// incarnation).
pub fn rand_u64() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b) ^ u64::from(std::process::id())
}

pub fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// A lock between processes: a file created exclusively, removed on drop. Nodes of a local
/// cluster that share a folder take it before creating what they share (the dev CA, the admin
/// token), so nodes started together agree on one. A lock file older than `stale_after` was
/// left by a process that died holding it, and is taken over (holders keep it for
/// milliseconds). Waiting is blocking: it is meant for start-up.
#[derive(Debug)]
pub struct LockFile(PathBuf);

impl LockFile {
    pub fn take(path: &Path, stale_after: Duration) -> std::io::Result<LockFile> {
        let start = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(_) => return Ok(LockFile(path.to_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if is_stale(path, stale_after) {
                        tracing::warn!(lock = %path.display(), "taking over a stale lock file");
                        let _ = std::fs::remove_file(path);
                    } else if start.elapsed() > stale_after * 2 {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("{} stays locked", path.display()),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A lock file not modified for `stale_after` (its holder died; holders keep it a moment).
fn is_stale(path: &Path, stale_after: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > stale_after)
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
