//! Cells the results tables of `report` and `report_groups` show the same way: a skipped or failed
//! run in place of its row, and the server's peak RSS.

use crate::runner::RunResult;

/// A skipped or failed run: the system, the status and why.
pub fn not_ok(r: &RunResult) -> String {
    let note = r.note.as_deref().unwrap_or("");
    format!(
        "{:<8} {}: {}",
        r.system,
        r.status,
        note.replace('\n', " | ")
    )
}

pub fn rss(r: &RunResult) -> String {
    r.peak_rss_kib.map_or("—".to_owned(), |k| {
        format!("{:.0} MiB", k as f64 / 1024.0)
    })
}
