//! Output: the header (date, machine line, raw-disk and no-op limits, versions and settings), one
//! table per case with a row per system and the ratio of Quiver to that row, and the JSON file.
//! A `filter` table has a row per way of reading instead, with its ratio to the native filter; the
//! group, rebalance and queue tables are in `report_groups`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::cells::{not_ok, rss};
use crate::machine::Machine;
use crate::numbers::{ratio, thousands};
use crate::report_groups;
use crate::runner::RunResult;
use crate::workloads::filter::{Read, WASM_TARGET};

/// Everything one invocation measured; written as JSON with `--json`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub date: String,
    pub machine: Machine,
    /// `dd bs=1M conv=fdatasync` in the work dir, MB/s (or why it failed).
    pub disk_mb_per_s: Result<f64, String>,
    pub disk_mib: u32,
    pub versions: BTreeMap<String, String>,
    /// System → durability class → settings used.
    pub settings: BTreeMap<String, BTreeMap<String, String>>,
    pub results: Vec<RunResult>,
    /// Workloads that cannot run yet, with the reason.
    pub unavailable: BTreeMap<String, String>,
}

impl Report {
    pub fn header(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "quiver-bench, {}", self.date);
        let _ = writeln!(s, "machine: {}", self.machine.line());
        let disk = match &self.disk_mb_per_s {
            Ok(mbs) => format!("{mbs:.0} MB/s"),
            Err(e) => format!("not measured ({e})"),
        };
        let _ = writeln!(
            s,
            "raw disk: dd bs=1M count={} conv=fdatasync → {disk}",
            self.disk_mib
        );
        for (system, version) in &self.versions {
            let _ = writeln!(s, "{system:<7} {version}");
            for (class, text) in self.settings.get(system).into_iter().flatten() {
                let _ = writeln!(s, "        [{class}] {text}");
            }
        }
        s
    }

    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {path:?}"))
    }
}

/// One case's table: a row per system, the ratio of Quiver to each row from this same run.
pub fn table(title: &str, rows: &[RunResult]) -> String {
    match rows.first().map(|r| r.workload.as_str()) {
        Some("filter") => return filter_table(title, rows),
        Some("group") => return report_groups::group_table(title, rows),
        Some("rebalance") => return report_groups::rebalance_table(title, rows),
        _ => {}
    }
    let latency = rows.iter().any(|r| r.latency_us.is_some());
    let quiver = rows.iter().find(|r| r.system == "quiver" && r.ok());
    let mut s = format!("\n── {title} ──\n");
    if latency {
        let _ = writeln!(
            s,
            "{:<8} {:>10} {:>7} {:>7} {:>8} {:>7} {:>11} {:>6} {:>16} {:>10}",
            "system",
            "rec/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "delay p99",
            "lost",
            "peak RSS",
            "p99 Q÷sys"
        );
    } else {
        let _ = writeln!(
            s,
            "{:<8} {:>12} {:>9} {:>16} {:>12}",
            "system", "rec/s", "MB/s", "peak RSS", "Q÷sys"
        );
    }
    for r in rows {
        s.push_str(&row(r, quiver, latency));
        s.push('\n');
    }
    // Queue notes are part of `queue_lines` below.
    for r in rows.iter().filter(|r| r.ok() && r.workload != "queue") {
        if let Some(note) = &r.note {
            let _ = writeln!(s, "{}: {note}", r.system);
        }
    }
    if rows.iter().any(|r| r.workload == "queue") {
        s.push_str(&report_groups::queue_lines(rows));
    }
    s
}

fn row(r: &RunResult, quiver: Option<&RunResult>, latency: bool) -> String {
    // A ratio to itself or to the no-op ceiling means nothing.
    let quiver = quiver.filter(|_| r.system != "quiver" && r.system != "noop");
    if !r.ok() {
        return not_ok(r);
    }
    let rss = rss(r);
    match (latency, r.latency_us) {
        (true, Some(l)) => {
            let ratio = quiver
                .and_then(|q| q.latency_us)
                .map(|q| ratio(q.p99 as f64, l.p99 as f64));
            let delay = r.send_delay_us.map_or(0.0, |d| ms(d.p99));
            format!(
                "{:<8} {:>10} {:>7.2} {:>7.2} {:>8.2} {:>7.2} {:>8.2} ms {:>6} {:>16} {:>10}",
                r.system,
                thousands(r.records_per_s),
                ms(l.p50),
                ms(l.p99),
                ms(l.p999),
                ms(l.max),
                delay,
                r.lost.unwrap_or(0),
                rss,
                ratio.unwrap_or_else(|| "—".to_owned())
            )
        }
        _ => {
            let ratio = quiver.map(|q| ratio(q.records_per_s, r.records_per_s));
            format!(
                "{:<8} {:>12} {:>9.1} {:>16} {:>12}",
                r.system,
                thousands(r.records_per_s),
                r.mb_per_s,
                rss,
                ratio.unwrap_or_else(|| "—".to_owned())
            )
        }
    }
}

/// A `filter` case: a row per (system, way of reading) with records scanned and kept per second and
/// the ratio to the native filter on the same system, then WASM ÷ native against the target.
fn filter_table(title: &str, rows: &[RunResult]) -> String {
    let mut s = format!("\n── {title} ──\n");
    let _ = writeln!(
        s,
        "{:<8} {:<7} {:>12} {:>12} {:>9} {:>9} {:>9}",
        "system", "filter", "scanned/s", "matched/s", "MB/s", "peak RSS", "÷ native"
    );
    for r in rows {
        s.push_str(&filter_row(r, native_of(rows, title, &r.system)));
        s.push('\n');
    }
    if let Some(line) = wasm_line(rows) {
        s.push_str(&line);
        s.push('\n');
    }
    s
}

fn filter_row(r: &RunResult, native: Option<&RunResult>) -> String {
    if !r.ok() {
        return not_ok(r);
    }
    // The native row is the reference itself.
    let ratio = native
        .filter(|n| n.filter != r.filter)
        .map(|n| ratio(r.records_per_s, n.records_per_s));
    format!(
        "{:<8} {:<7} {:>12} {:>12} {:>9.1} {:>9} {:>9}",
        r.system,
        r.filter.as_deref().unwrap_or("—"),
        thousands(r.records_per_s),
        r.matched_per_s.map_or("—".to_owned(), thousands),
        r.mb_per_s,
        rss(r),
        ratio.unwrap_or_else(|| "—".to_owned())
    )
}

/// The successful native-filter row of the case `title` on `system`.
pub fn native_of<'a>(rows: &'a [RunResult], title: &str, system: &str) -> Option<&'a RunResult> {
    rows.iter().find(|r| {
        r.title == title
            && r.system == system
            && r.ok()
            && r.filter.as_deref() == Some(Read::NATIVE)
    })
}

/// "WASM ÷ native …: 0.83× — issue target ≥ 0.70×: met", when both reads succeeded.
fn wasm_line(rows: &[RunResult]) -> Option<String> {
    let wasm = rows
        .iter()
        .find(|r| r.ok() && r.filter.as_deref() == Some(Read::WASM))?;
    let native = native_of(rows, &wasm.title, &wasm.system)?;
    let value = wasm.records_per_s / native.records_per_s;
    Some(format!(
        "WASM ÷ native (records scanned/s): {} — issue target ≥ {WASM_TARGET:.2}×: {} (recorded, \
         not asserted)",
        ratio(wasm.records_per_s, native.records_per_s),
        if value >= WASM_TARGET {
            "met"
        } else {
            "not met"
        }
    ))
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}
