//! `filter` (Quiver only): fill the topic with N records tagged `a` and `b` in turn (one producer,
//! not timed), deploy the tag-filter component (not timed), then read the whole topic from the start
//! three times on that same broker, each time with a new consumer: with no filter, with the native
//! filter `tag:a`, and with the plugin configured `tags=a`. A filtered read receives only the
//! records it keeps, but its position still moves past the others, so each read is timed from the
//! consumer's creation until its position reaches N (plugin instantiation included). Throughput is
//! records scanned per second, and records kept per second; a read must keep exactly the records
//! tagged `a` (all N without a filter), within a bounded time. The target, WASM ≥ 70% of
//! native, is recorded next to the table, not asserted.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use quiver::PluginRef;

use super::consume::prefill;
use super::measured::Measured;
use crate::drivers::quiver::QuiverDriver;
use crate::drivers::{ConsumerHandle, Driver, StartAt};

/// The longest one read may take before the run fails.
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one poll waits: short, because a poll that got only chunks a filter emptied waits all
/// of it, even when they took the position to the end.
const POLL_WAIT: Duration = Duration::from_millis(20);
/// Tags of the records, in turn; the filters keep the first.
const TAGS: &[&str] = &["a", "b"];
/// The native expression and the plugin config that keep the records tagged `a`.
const NATIVE_EXPR: &str = "tag:a";
const PLUGIN_CONFIG: (&str, &str) = ("tags", "a");
/// The name the component is deployed under.
const PLUGIN: &str = "tag-filter";
/// The target for WASM ÷ native records scanned per second (recorded, not asserted).
pub const WASM_TARGET: f64 = 0.70;

/// One way of reading the topic; its label names the result row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Unfiltered,
    Native,
    Wasm,
}

impl Read {
    /// In the order they run.
    const ALL: [Read; 3] = [Read::Unfiltered, Read::Native, Read::Wasm];
    pub const NATIVE: &'static str = "native";
    pub const WASM: &'static str = "wasm";

    pub fn label(self) -> &'static str {
        match self {
            Read::Unfiltered => "none",
            Read::Native => Read::NATIVE,
            Read::Wasm => Read::WASM,
        }
    }

    fn filter(self) -> Option<String> {
        (self == Read::Native).then(|| NATIVE_EXPR.to_owned())
    }

    fn plugin(self) -> Option<PluginRef> {
        (self == Read::Wasm).then(|| PluginRef {
            name: PLUGIN.to_owned(),
            config: vec![(PLUGIN_CONFIG.0.to_owned(), PLUGIN_CONFIG.1.to_owned())],
        })
    }

    /// Records of `0..records` the read keeps: all, or those tagged `a` (the even ones).
    fn expected(self, records: u64) -> u64 {
        match self {
            Read::Unfiltered => records,
            Read::Native | Read::Wasm => records.div_ceil(TAGS.len() as u64),
        }
    }
}

pub async fn run(
    driver: &QuiverDriver,
    records: u64,
    size: usize,
    batch: usize,
    wasm: &Path,
    live: Arc<AtomicU64>,
) -> Result<Vec<Measured>> {
    let component = read_component(wasm)?;
    driver.create_topic().await?;
    prefill(driver.tagged_producer(TAGS).await?, records, size, batch).await?;
    driver.deploy_plugin(PLUGIN, component).await?;
    let mut out = Vec::with_capacity(Read::ALL.len());
    for read in Read::ALL {
        out.push(read_all(driver, read, records, size, &live).await?);
    }
    Ok(out)
}

/// The component's bytes, or an error that says how to build it.
fn read_component(path: &Path) -> Result<Bytes> {
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "reading the tag-filter component {} (build it with `bash scripts/build-plugins.sh`)",
            path.display()
        )
    })?;
    Ok(Bytes::from(bytes))
}

/// Reads all `records` from the start one way; the broker's peak RSS is that of this read alone
/// when it could be restarted first.
async fn read_all(
    driver: &QuiverDriver,
    read: Read,
    records: u64,
    size: usize,
    live: &AtomicU64,
) -> Result<Measured> {
    let isolated = driver.reset_peak_rss();
    let start = Instant::now();
    let mut consumer = driver
        .filtered_consumer(StartAt::Earliest, read.filter(), read.plugin())
        .await?;
    let mut kept = 0u64;
    while consumer.scanned() < records {
        if start.elapsed() > READ_TIMEOUT {
            let scanned = consumer.scanned();
            bail!(
                "{} read: only {scanned} of {records} records scanned within {READ_TIMEOUT:?}",
                read.label()
            );
        }
        kept += consumer.poll(POLL_WAIT, &mut |_| {}).await? as u64;
        live.store(consumer.scanned(), Ordering::Relaxed);
    }
    let secs = start.elapsed().as_secs_f64();
    let expected = read.expected(records);
    if kept != expected {
        bail!(
            "{} read kept {kept} of {records} records, expected {expected}",
            read.label()
        );
    }
    Ok(Measured {
        records,
        bytes: records * size as u64,
        secs,
        filter: Some(read.label()),
        matched: Some(kept),
        peak_rss_kib: if isolated {
            driver.peak_rss_kib()
        } else {
            None
        },
        ..Measured::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filtered_reads_keep_the_even_records() {
        assert_eq!(Read::Unfiltered.expected(5), 5);
        assert_eq!(Read::Native.expected(5), 3);
        assert_eq!(Read::Wasm.expected(4), 2);
    }

    #[test]
    fn each_read_sets_only_its_own_filter() {
        assert_eq!(Read::Native.filter().as_deref(), Some("tag:a"));
        assert!(Read::Native.plugin().is_none());
        assert!(Read::Wasm.filter().is_none());
        assert_eq!(Read::Wasm.plugin().map(|p| p.name), Some(PLUGIN.to_owned()));
        assert!(Read::Unfiltered.filter().is_none() && Read::Unfiltered.plugin().is_none());
    }
}
