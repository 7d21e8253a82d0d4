//! `quiver plugin logs`: pages through a plugin's log lines on the broker by sequence number, and
//! with `--follow` long-polls for new ones, marking lines the broker's buffer dropped in between.

use std::time::{Duration, Instant};

use quiver::{Admin, PluginLogLine, PluginLogs};

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
        utc(l.timestamp_ms),
        l.version,
        l.level.to_uppercase(),
        l.text
    )
}

/// Milliseconds since the epoch as an RFC 3339 UTC time (no date crate needed for one format).
fn utc(ms: i64) -> String {
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    let s = ms_of_day / 1000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ms_of_day % 1000
    )
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_rfc3339_utc() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_798_804_800_000), "2027-01-01T12:00:00.000Z");
    }
}
