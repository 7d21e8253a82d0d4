//! `summarize`: reads the JSON files of several runs and prints, per case and system (and way of
//! reading for `filter`, reader for `group`, way of leaving for `rebalance`), the median and the
//! spread (min–max) as Markdown, ready for BENCHMARKS.md. Ratios are taken within each run (Quiver
//! and the peer, a read and the native filter, the group and the one consumer, measured side by
//! side), then their median is reported.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::numbers::{median, thousands};
use crate::report::{native_of, Report};
use crate::runner::RunResult;
use crate::workloads::filter::WASM_TARGET;
use crate::workloads::group::{GROUP_TARGET, SINGLE};

/// Which table a result belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Throughput,
    Latency,
    Filter,
    Group,
    Rebalance,
}

impl Kind {
    fn of(r: &RunResult) -> Kind {
        match r.workload.as_str() {
            "e2e" => Kind::Latency,
            "filter" => Kind::Filter,
            "group" => Kind::Group,
            "rebalance" => Kind::Rebalance,
            _ => Kind::Throughput,
        }
    }
}

/// A table row: case title, system, and the row's variant (the way of reading of a filter run, the
/// reader of a group run, the way of leaving of a rebalance run).
type Key = (String, String, Option<String>);

pub fn run(files: &[PathBuf]) -> Result<()> {
    let reports = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).with_context(|| format!("reading {f:?}"))?;
            serde_json::from_str::<Report>(&text).with_context(|| format!("parsing {f:?}"))
        })
        .collect::<Result<Vec<Report>>>()?;
    let Some(first) = reports.first() else {
        return Ok(());
    };
    println!(
        "{} runs; first: {}; machine: {}",
        reports.len(),
        first.date,
        first.machine.line()
    );
    let disks: Vec<f64> = reports
        .iter()
        .filter_map(|r| r.disk_mb_per_s.as_ref().ok().copied())
        .collect();
    println!("raw disk (dd conv=fdatasync): {} MB/s\n", spread(&disks, 0));
    throughput_table(&reports);
    latency_table(&reports);
    filter_table(&reports);
    group_table(&reports);
    rebalance_table(&reports);
    Ok(())
}

/// The rows of one table, in the order they first appear.
fn keys(reports: &[Report], kind: Kind) -> Vec<Key> {
    let mut keys: Vec<Key> = Vec::new();
    for r in reports.iter().flat_map(|r| &r.results) {
        let key = (r.title.clone(), r.system.clone(), label(r));
        if Kind::of(r) == kind && !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Each report's result for (title, system), and for `filter` the way of reading.
fn rows<'a>(
    reports: &'a [Report],
    title: &str,
    system: &str,
    filter: Option<&str>,
) -> Vec<Option<&'a RunResult>> {
    reports
        .iter()
        .map(|rep| {
            rep.results
                .iter()
                .find(|r| r.title == title && r.system == system && label(r).as_deref() == filter)
        })
        .collect()
}

/// The row's variant: its way of reading (filter) or its reader / way of leaving (group, rebalance).
fn label(r: &RunResult) -> Option<String> {
    r.filter.clone().or_else(|| r.variant.clone())
}

fn throughput_table(reports: &[Report]) {
    let keys = keys(reports, Kind::Throughput);
    if keys.is_empty() {
        return;
    }
    println!("| case | system | records/s | MB/s | peak RSS MiB | Quiver ÷ system |");
    println!("|---|---|---|---|---|---|");
    for (title, system, _) in keys {
        let runs = rows(reports, &title, &system, None);
        let quiver = rows(reports, &title, "quiver", None);
        let ok: Vec<&RunResult> = runs.iter().flatten().filter(|r| r.ok()).copied().collect();
        if ok.is_empty() {
            println!("| {title} | {system} | {} | | | |", not_run(&runs));
            continue;
        }
        let rps: Vec<f64> = ok.iter().map(|r| r.records_per_s).collect();
        let mbs: Vec<f64> = ok.iter().map(|r| r.mb_per_s).collect();
        let ratios = paired(&quiver, &runs, |q, r| q.records_per_s / r.records_per_s);
        println!(
            "| {title} | {system} | {} | {} | {} | {} |",
            spread_thousands(&rps),
            spread(&mbs, 1),
            rss(&ok),
            spread_ratio(&ratios)
        );
    }
    println!();
}

fn latency_table(reports: &[Report]) {
    let keys = keys(reports, Kind::Latency);
    if keys.is_empty() {
        return;
    }
    println!(
        "| case | system | p50 ms | p99 ms | p99.9 ms | max ms | send delay p99 ms | lost \
         | peak RSS MiB | p99 Quiver ÷ system |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (title, system, _) in keys {
        let runs = rows(reports, &title, &system, None);
        let quiver = rows(reports, &title, "quiver", None);
        let ok: Vec<&RunResult> = runs.iter().flatten().filter(|r| r.ok()).copied().collect();
        let lat: Vec<_> = ok.iter().filter_map(|r| r.latency_us).collect();
        if lat.is_empty() {
            println!("| {title} | {system} | {} | | | | | | | |", not_run(&runs));
            continue;
        }
        let pick = |f: fn(&crate::workloads::measured::Latency) -> u64| -> String {
            let v: Vec<f64> = lat.iter().map(|l| f(l) as f64 / 1000.0).collect();
            spread(&v, 2)
        };
        let delay: Vec<f64> = ok
            .iter()
            .filter_map(|r| r.send_delay_us)
            .map(|d| d.p99 as f64 / 1000.0)
            .collect();
        let lost: Vec<f64> = ok.iter().map(|r| r.lost.unwrap_or(0) as f64).collect();
        let ratios = paired(&quiver, &runs, |q, r| match (q.latency_us, r.latency_us) {
            (Some(q), Some(r)) if r.p99 > 0 => q.p99 as f64 / r.p99 as f64,
            _ => f64::NAN,
        });
        println!(
            "| {title} | {system} | {} | {} | {} | {} | {} | {} | {} | {} |",
            pick(|l| l.p50),
            pick(|l| l.p99),
            pick(|l| l.p999),
            pick(|l| l.max),
            spread(&delay, 2),
            spread(&lost, 0),
            rss(&ok),
            spread_ratio(&ratios)
        );
    }
    println!();
}

/// `filter`: records scanned and kept per second per way of reading, and each read ÷ the native
/// filter on the same system within each run.
fn filter_table(reports: &[Report]) {
    let keys = keys(reports, Kind::Filter);
    if keys.is_empty() {
        return;
    }
    println!("| case | system | filter | scanned/s | matched/s | peak RSS MiB | ÷ native |");
    println!("|---|---|---|---|---|---|---|");
    for (title, system, filter) in keys {
        let runs = rows(reports, &title, &system, filter.as_deref());
        let ok: Vec<&RunResult> = runs.iter().flatten().filter(|r| r.ok()).copied().collect();
        let shown = filter.as_deref().unwrap_or("");
        if ok.is_empty() {
            println!(
                "| {title} | {system} | {shown} | {} | | | |",
                not_run(&runs)
            );
            continue;
        }
        let scanned: Vec<f64> = ok.iter().map(|r| r.records_per_s).collect();
        let matched: Vec<f64> = ok.iter().filter_map(|r| r.matched_per_s).collect();
        println!(
            "| {title} | {system} | {shown} | {} | {} | {} | {} |",
            spread_thousands(&scanned),
            spread_thousands(&matched),
            rss(&ok),
            spread_ratio(&to_native(reports, &title, &system, filter.as_deref()))
        );
    }
    println!("\nIssue target: WASM ÷ native ≥ {WASM_TARGET:.2}× (recorded, not asserted).\n");
}

/// Records scanned/s of a read ÷ the native filter's, within each run; nothing for the native row.
fn to_native(reports: &[Report], title: &str, system: &str, filter: Option<&str>) -> Vec<f64> {
    reports
        .iter()
        .filter_map(|rep| {
            let found = rep.results.iter().find(|r| {
                r.title == title && r.system == system && r.filter.as_deref() == filter
            })?;
            let native = native_of(&rep.results, title, system)?;
            let same = found.filter == native.filter;
            (found.ok() && !same).then(|| found.records_per_s / native.records_per_s)
        })
        .filter(|v| v.is_finite())
        .collect()
}

fn not_run(runs: &[Option<&RunResult>]) -> String {
    runs.iter()
        .flatten()
        .find_map(|r| r.note.clone().map(|n| format!("{}: {n}", r.status)))
        .unwrap_or_else(|| "not run".to_owned())
}

/// f(quiver, row) for every run where both succeeded; nothing for Quiver's own row or the no-op
/// ceiling, where a ratio means nothing.
fn paired(
    quiver: &[Option<&RunResult>],
    runs: &[Option<&RunResult>],
    f: impl Fn(&RunResult, &RunResult) -> f64,
) -> Vec<f64> {
    let own_or_ceiling = runs
        .iter()
        .flatten()
        .any(|r| r.system == "quiver" || r.system == "noop");
    if own_or_ceiling {
        return Vec::new();
    }
    within(quiver, runs, f)
}

fn rss(ok: &[&RunResult]) -> String {
    let v: Vec<f64> = ok
        .iter()
        .filter_map(|r| r.peak_rss_kib)
        .map(|k| k as f64 / 1024.0)
        .collect();
    if v.is_empty() {
        return "—".to_owned();
    }
    let fds: Vec<f64> = ok
        .iter()
        .filter_map(|r| r.open_files)
        .map(|n| n as f64)
        .collect();
    match fds.is_empty() {
        true => spread(&v, 0),
        false => format!("{}; {} open files", spread(&v, 0), spread(&fds, 0)),
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// "median (min–max)" with `digits` decimals; just the value for a single run.
fn spread(v: &[f64], digits: usize) -> String {
    if v.len() < 2 {
        return v.first().map_or("—".into(), |x| format!("{x:.digits$}"));
    }
    let (lo, hi) = min_max(v);
    format!("{:.digits$} ({lo:.digits$}–{hi:.digits$})", median(v))
}

fn spread_thousands(v: &[f64]) -> String {
    if v.is_empty() {
        return "—".to_owned();
    }
    let (lo, hi) = min_max(v);
    if v.len() < 2 {
        return thousands(median(v));
    }
    format!(
        "{} ({}–{})",
        thousands(median(v)),
        thousands(lo),
        thousands(hi)
    )
}

fn spread_ratio(v: &[f64]) -> String {
    if v.is_empty() {
        return "—".to_owned();
    }
    let (lo, hi) = min_max(v);
    if v.len() < 2 {
        return format!("{:.2}×", v[0]);
    }
    format!("**{:.2}×** ({lo:.2}–{hi:.2})", median(v))
}

/// `group`: records/s per reader, and each reader ÷ the one consumer within each run.
fn group_table(reports: &[Report]) {
    let keys = keys(reports, Kind::Group);
    if keys.is_empty() {
        return;
    }
    println!("| case | system | reader | records/s | peak RSS MiB | ÷ 1 consumer |");
    println!("|---|---|---|---|---|---|");
    for (title, system, variant) in keys {
        let runs = rows(reports, &title, &system, variant.as_deref());
        let ok: Vec<&RunResult> = runs.iter().flatten().filter(|r| r.ok()).copied().collect();
        let shown = variant.as_deref().unwrap_or("");
        if ok.is_empty() {
            println!("| {title} | {system} | {shown} | {} | | |", not_run(&runs));
            continue;
        }
        let rps: Vec<f64> = ok.iter().map(|r| r.records_per_s).collect();
        let single = rows(reports, &title, &system, Some(SINGLE));
        let ratios = if variant.as_deref() == Some(SINGLE) {
            Vec::new()
        } else {
            within(&single, &runs, |o, r| r.records_per_s / o.records_per_s)
        };
        println!(
            "| {title} | {system} | {shown} | {} | {} | {} |",
            spread_thousands(&rps),
            rss(&ok),
            spread_ratio(&ratios)
        );
    }
    println!("\nIssue target: group ÷ 1 consumer ≥ {GROUP_TARGET:.2}× (recorded, not asserted).\n");
}

/// `rebalance`: every trial of every run, per way of leaving: median, max and the bound.
fn rebalance_table(reports: &[Report]) {
    let keys = keys(reports, Kind::Rebalance);
    if keys.is_empty() {
        return;
    }
    println!("| case | system | member | trials | median ms | max ms | bound ms |");
    println!("|---|---|---|---|---|---|---|");
    for (title, system, variant) in keys {
        let runs = rows(reports, &title, &system, variant.as_deref());
        let ok: Vec<&RunResult> = runs.iter().flatten().filter(|r| r.ok()).copied().collect();
        let shown = variant.as_deref().unwrap_or("");
        let samples: Vec<f64> = ok
            .iter()
            .flat_map(|r| r.samples_ms.clone().unwrap_or_default())
            .collect();
        if samples.is_empty() {
            println!(
                "| {title} | {system} | {shown} | {} | | | |",
                not_run(&runs)
            );
            continue;
        }
        let bound = ok
            .iter()
            .filter_map(|r| r.target_ms)
            .fold(f64::INFINITY, f64::min);
        println!(
            "| {title} | {system} | {shown} | {} | {:.0} | {:.0} | {bound:.0} |",
            samples.len(),
            median(&samples),
            min_max(&samples).1
        );
    }
    println!();
}

/// f(reference, row) for every run where both succeeded.
fn within(
    reference: &[Option<&RunResult>],
    runs: &[Option<&RunResult>],
    f: impl Fn(&RunResult, &RunResult) -> f64,
) -> Vec<f64> {
    reference
        .iter()
        .zip(runs)
        .filter_map(|(o, r)| match (o, r) {
            (Some(o), Some(r)) if o.ok() && r.ok() => Some(f(o, r)),
            _ => None,
        })
        .filter(|v| v.is_finite())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads() {
        assert_eq!(spread(&[1.0, 3.0, 2.0], 1), "2.0 (1.0–3.0)");
        assert_eq!(spread(&[5.0], 0), "5");
    }
}
