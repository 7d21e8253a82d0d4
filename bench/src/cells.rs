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

/// The server's peak RSS, and its open files when the run counted them ("21 MiB/14 fd").
pub fn rss(r: &RunResult) -> String {
    let Some(k) = r.peak_rss_kib else {
        return "—".to_owned();
    };
    match r.open_files {
        Some(n) => format!("{:.0} MiB/{n} fd", k as f64 / 1024.0),
        None => format!("{:.0} MiB", k as f64 / 1024.0),
    }
}
