//! `quiver plugin logs`: pages through a plugin's log lines on the broker by sequence number, and
//! with `--follow` long-polls for new ones, marking lines the broker's buffer dropped in between.

use std::time::{Duration, Instant};

use quiver::{Admin, PluginLogLine, PluginLogs};

use crate::produce::format_ms;

/// How long one poll of `--follow` may be held by the broker (it caps this at 30 s).
const FOLLOW_WAIT: Duration = Duration::from_secs(25);
/// An empty answer sooner than this means the broker could not hold the poll (too many readers
/// waiting, or it is shutting down): pause before asking again rather than spin.
const EARLY: Duration = Duration::from_millis(500);

/// Prints every line the broker holds, page by page; returns the cursor after the last.
pub async fn print_buffered(
    admin: &Admin,
    name: &str,
    version: Option<&str>,
) -> anyhow::Result<Option<u64>> {
    let mut cursor = None;
    loop {
        let page = admin
            .plugin_logs(name, version, cursor, Duration::ZERO)
            .await?;
        let done = page.lines.is_empty() || cursor == Some(page.next);
        print_page(name, &page);
        cursor = Some(page.next);
        if done {
            return Ok(cursor);
        }
    }
}

/// Prints the buffered lines, then every new line as it is logged, until the caller stops it.
pub async fn follow(admin: &Admin, name: &str, version: Option<&str>) -> anyhow::Result<()> {
    let mut cursor = print_buffered(admin, name, version).await?;
    loop {
        let asked = Instant::now();
        let page = admin
            .plugin_logs(name, version, cursor, FOLLOW_WAIT)
            .await?;
        print_page(name, &page);
        if is_empty(&page) && asked.elapsed() < EARLY {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        cursor = Some(page.next);
    }
}

/// Neither lines nor a gap.
fn is_empty(page: &PluginLogs) -> bool {
    page.lines.is_empty() && page.dropped == 0
}

fn print_page(name: &str, page: &PluginLogs) {
    if page.dropped > 0 {
        println!(
            "… {} lines dropped (the broker keeps the last 512 per plugin)",
            page.dropped
        );
    }
    for line in &page.lines {
        println!("{}", format_line(name, line));
    }
}

/// `2026-01-02T03:04:05.678Z json-mask@1 INFO [payments] text`.
fn format_line(name: &str, l: &PluginLogLine) -> String {
    let source = l
        .source
        .as_deref()
        .map(|s| format!("[{s}] "))
        .unwrap_or_default();
    format!(
        "{} {name}@{} {:<5} {source}{}",
        format_ms(l.timestamp_ms),
        l.version,
        l.level.to_uppercase(),
        l.text
    )
}
