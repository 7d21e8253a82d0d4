//! The lines plugins log through `host.log`: one bounded ring per plugin name, each line numbered
//! (per plugin, without gaps), stamped and tagged with its version and where its instance runs. A
//! reader pages through a ring by sequence number and may wait for the next line (a `watch`
//! channel wakes it the moment one is pushed: no timer polling).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use quiver_proto::plugins::PluginLogLine;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use wasmtime::component::{ComponentType, Lift, Lower};

/// Lines kept per plugin name: at most ~1 KiB each (the sandbox truncates), so ~0.5 MiB a plugin.
pub const KEEP: usize = 512;
/// Most lines one answer carries (well under the 1 MiB frame header limit).
pub const MAX_PAGE: usize = 256;
/// Longest a reader may wait for a line.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Readers waiting at once, broker-wide: a waiting reader holds a blocking-pool thread (admin
/// requests run there), so their number is bounded; past it a reader is answered at once.
const MAX_WAITERS: usize = 64;

/// One buffered line.
#[derive(Debug, Clone)]
struct Line {
    seq: u64,
    timestamp_ms: i64,
    version: Arc<str>,
    level: Level,
    source: Option<Arc<str>>,
    text: String,
}

impl Line {
    fn to_wire(&self) -> PluginLogLine {
        PluginLogLine {
            seq: self.seq,
            timestamp_ms: self.timestamp_ms,
            version: self.version.to_string(),
            level: level_name(self.level).to_owned(),
            source: self.source.as_deref().map(str::to_owned),
            text: self.text.clone(),
        }
    }
}

/// `host.level` of the WIT: a plugin log line's level.
#[derive(ComponentType, Lift, Lower, Debug, Clone, Copy, PartialEq, Eq)]
#[component(enum)]
#[repr(u8)]
pub enum Level {
    #[component(name = "trace")]
    Trace,
    #[component(name = "debug")]
    Debug,
    #[component(name = "info")]
    Info,
    #[component(name = "warn")]
    Warn,
    #[component(name = "error")]
    Error,
}

pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

/// What a read of a ring gives: the lines, the cursor to read from next, and how many lines after
/// the reader's cursor were already dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    pub lines: Vec<PluginLogLine>,
    pub next: u64,
    pub dropped: u64,
}

impl LogPage {
    /// Nothing to tell the reader: neither lines nor a gap.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty() && self.dropped == 0
    }
}

/// The log ring of one plugin name (all its versions).
#[derive(Debug)]
pub struct LogRing {
    lines: Mutex<VecDeque<Line>>,
    /// The sequence number of the last line pushed (0: none yet); readers wait on its changes.
    last: watch::Sender<u64>,
}

impl Default for LogRing {
    fn default() -> Self {
        LogRing {
            lines: Mutex::new(VecDeque::with_capacity(16)),
            last: watch::Sender::new(0),
        }
    }
}

impl LogRing {
    fn push(&self, version: &Arc<str>, source: &Option<Arc<str>>, level: Level, text: String) {
        let mut lines = self.lines.lock();
        let seq = *self.last.borrow() + 1;
        if lines.len() == KEEP {
            lines.pop_front();
        }
        lines.push_back(Line {
            seq,
            timestamp_ms: crate::util::now_ms(),
            version: version.clone(),
            level,
            source: source.clone(),
            text,
        });
        // Under the lock, so the watched number only ever grows and matches the ring.
        self.last.send_replace(seq);
    }

    /// Lines after `after` (all buffered lines when `None`), of `version` or all, at most
    /// [`MAX_PAGE`]. A cursor past the last line (the broker restarted and numbering began again)
    /// reads from the start.
    pub fn read(&self, after: Option<u64>, version: Option<&str>) -> LogPage {
        let lines = self.lines.lock();
        let last = *self.last.borrow();
        let from = after.filter(|&a| a <= last).unwrap_or(0);
        let oldest = lines.front().map_or(last + 1, |l| l.seq);
        // A gap only counts for a reader that had a cursor: a first read starts where the ring does.
        let dropped = match after {
            Some(_) => oldest.saturating_sub(from + 1),
            None => 0,
        };
        let mut page = LogPage {
            lines: Vec::new(),
            next: last,
            dropped,
        };
        for line in lines.iter().filter(|l| l.seq > from) {
            if version.is_some_and(|v| v != &*line.version) {
                continue;
            }
            page.lines.push(line.to_wire());
            if page.lines.len() == MAX_PAGE {
                page.next = line.seq;
                break;
            }
        }
        page
    }

    /// Like [`LogRing::read`], but with nothing to answer waits until a line is pushed, `wait`
    /// passes or `stop` is cancelled (then answers what there is: possibly nothing).
    pub async fn wait(
        &self,
        after: Option<u64>,
        version: Option<&str>,
        wait: Duration,
        stop: &CancellationToken,
    ) -> LogPage {
        let deadline = tokio::time::Instant::now() + wait.min(MAX_WAIT);
        // Subscribed before the first read, so a line pushed in between still wakes us.
        let mut pushed = self.last.subscribe();
        loop {
            let page = self.read(after, version);
            if !page.is_empty() {
                return page;
            }
            tokio::select! {
                changed = tokio::time::timeout_at(deadline, pushed.changed()) => {
                    if !matches!(changed, Ok(Ok(()))) {
                        return page;
                    }
                }
                _ = stop.cancelled() => return page,
            }
        }
    }

    /// The last `n` lines of `version`, formatted for `plugin describe`.
    pub fn recent(&self, name: &str, version: &str, n: usize) -> Vec<String> {
        let lines = self.lines.lock();
        let mut out: Vec<String> = lines
            .iter()
            .rev()
            .filter(|l| &*l.version == version)
            .take(n)
            .map(|l| format!("{name}@{version} {:?}: {}", l.level, l.text))
            .collect();
        out.reverse();
        out
    }
}

/// Where an instance's log lines go: its plugin's ring, tagged with its version and source.
#[derive(Debug, Clone)]
pub struct LogSink {
    ring: Arc<LogRing>,
    version: Arc<str>,
    source: Option<Arc<str>>,
}

impl LogSink {
    /// The same ring and version, tagged with where the instance runs (`source`).
    pub fn for_source(&self, source: &str) -> LogSink {
        LogSink {
            source: Some(source.into()),
            ..self.clone()
        }
    }

    pub fn push(&self, level: Level, text: String) {
        self.ring.push(&self.version, &self.source, level, text);
    }
}

/// Every plugin's ring, by name, and the readers waiting on them.
#[derive(Debug, Default)]
pub struct LogHub {
    rings: Mutex<HashMap<String, Arc<LogRing>>>,
    waiters: AtomicUsize,
    /// Cancelled when the broker shuts down: waiting readers are answered at once.
    stop: CancellationToken,
}

impl LogHub {
    /// The ring of plugin `name`, created empty on first use.
    pub fn ring(&self, name: &str) -> Arc<LogRing> {
        self.rings
            .lock()
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// A sink for instances of `name@version` into the plugin's ring.
    pub fn sink(&self, name: &str, version: &str) -> LogSink {
        LogSink {
            ring: self.ring(name),
            version: version.into(),
            source: None,
        }
    }

    /// Forgets the lines of a plugin that has no version left.
    pub fn forget(&self, name: &str) {
        self.rings.lock().remove(name);
    }

    /// Answers waiting readers now and lets no new one wait (graceful shutdown).
    pub fn stop_waiting(&self) {
        self.stop.cancel();
    }

    /// Reads `name`'s ring; with nothing to answer and `wait` > 0, waits on the calling thread
    /// (a blocking-pool thread inside the runtime) for a line. Without a runtime, or with too
    /// many readers waiting already, it answers at once.
    pub fn read_blocking(
        &self,
        name: &str,
        version: Option<&str>,
        after: Option<u64>,
        wait: Duration,
    ) -> LogPage {
        let ring = self.ring(name);
        let page = ring.read(after, version);
        if !page.is_empty() || wait.is_zero() || self.stop.is_cancelled() {
            return page;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return page;
        };
        let Some(_slot) = WaitSlot::take(&self.waiters) else {
            return page;
        };
        runtime.block_on(ring.wait(after, version, wait, &self.stop))
    }
}

/// One of the [`MAX_WAITERS`] places for a waiting reader, given back on drop.
struct WaitSlot<'a>(&'a AtomicUsize);

impl<'a> WaitSlot<'a> {
    fn take(count: &'a AtomicUsize) -> Option<WaitSlot<'a>> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_WAITERS).then_some(n + 1)
            })
            .ok()
            .map(|_| WaitSlot(count))
    }
}

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(hub: &LogHub, version: &str) -> LogSink {
        hub.sink("p", version).for_source("t")
    }

    #[test]
    fn lines_are_numbered_and_paged_by_cursor() {
        let hub = LogHub::default();
        let s = sink(&hub, "1");
        for i in 0..3 {
            s.push(Level::Info, format!("line {i}"));
        }
        let ring = hub.ring("p");
        let all = ring.read(None, None);
        let seqs: Vec<u64> = all.lines.iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert_eq!(all.next, 3);
        assert_eq!(all.lines[0].source.as_deref(), Some("t"));
        assert_eq!(all.lines[0].level, "info");
        let after = ring.read(Some(2), None);
        assert_eq!(after.lines.len(), 1);
        assert_eq!(after.lines[0].text, "line 2");
        assert!(ring.read(Some(3), None).is_empty());
    }

    #[test]
    fn a_reader_behind_the_ring_learns_how_many_lines_it_missed() {
        let hub = LogHub::default();
        let s = sink(&hub, "1");
        for i in 0..KEEP + 10 {
            s.push(Level::Debug, format!("line {i}"));
        }
        let page = hub.ring("p").read(Some(5), None);
        // Lines 6..=10 were dropped (the ring holds 11..).
        assert_eq!(page.dropped, 5);
        assert_eq!(page.lines[0].seq, 11);
        assert_eq!(page.lines.len(), MAX_PAGE);
        assert_eq!(page.next, 11 + MAX_PAGE as u64 - 1);
        assert_eq!(hub.ring("p").read(None, None).dropped, 0);
    }

    #[test]
    fn a_version_filter_still_moves_the_cursor_and_a_future_cursor_restarts() {
        let hub = LogHub::default();
        sink(&hub, "1").push(Level::Info, "old".into());
        sink(&hub, "2").push(Level::Info, "new".into());
        sink(&hub, "1").push(Level::Info, "old again".into());
        let page = hub.ring("p").read(None, Some("2"));
        assert_eq!(page.lines.len(), 1);
        assert_eq!(page.next, 3);
        // After a broker restart a reader's cursor may be ahead of the ring.
        assert_eq!(hub.ring("p").read(Some(99), None).lines.len(), 3);
        assert_eq!(hub.ring("p").recent("p", "1", 1), ["p@1 Info: old again"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiting_reader_is_answered_when_a_line_lands() {
        let hub = Arc::new(LogHub::default());
        let s = sink(&hub, "1");
        let reader = {
            let hub = hub.clone();
            tokio::task::spawn_blocking(move || {
                hub.read_blocking("p", None, Some(0), Duration::from_secs(20))
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        s.push(Level::Warn, "wake up".into());
        let page = reader.await.unwrap();
        assert_eq!(page.lines[0].text, "wake up");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_answers_waiting_readers() {
        let hub = Arc::new(LogHub::default());
        let reader = {
            let hub = hub.clone();
            tokio::task::spawn_blocking(move || {
                hub.read_blocking("p", None, None, Duration::from_secs(20))
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        hub.stop_waiting();
        let page = tokio::time::timeout(Duration::from_secs(5), reader)
            .await
            .expect("answered at shutdown")
            .unwrap();
        assert!(page.is_empty());
    }
}
