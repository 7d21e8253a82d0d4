//! What `quiver plugin test` prints: per batch, the plugin's log lines, the verdict on each record
//! (kept/dropped, output records, routes, delays) or the failure with the plugin's message, and the
//! time the call took; as text for people or one JSON object per line (`--format json`).

use std::path::Path;
use std::time::Duration;

use quiver_broker::plugins::PluginError;
use quiver_proto::batch::Record;
use quiver_proto::plugins::PluginLogLine;
use serde_json::{json, Value};

use super::records::to_json;
use super::Local;

/// What the broker would do with a batch that the plugin processed.
pub enum Verdict {
    /// Filter: one keep (true) or drop per record.
    Kept(Vec<bool>),
    /// Transform: the records that replace the batch (none: all dropped).
    Transformed(Vec<Record>),
    /// Router: each record's destination topics (none: dropped).
    Routed(Vec<Vec<String>>),
    /// Scheduler: each record's delay in ms (0: delivered now), from `now`.
    Scheduled { delays: Vec<u64>, now: i64 },
}

/// A failed call: its kind (`trap`, `timeout`, `memory`, `output`, `returned`, …) and message.
pub struct Failed {
    pub kind: String,
    pub message: String,
}

impl Failed {
    pub fn of(e: &PluginError) -> Failed {
        let kind = match (e.failure(), e) {
            (Some(f), _) => format!("{f:?}").to_lowercase(),
            (None, PluginError::Init { .. }) => "init".into(),
            (None, _) => "invalid".into(),
        };
        Failed {
            kind,
            message: e.to_string(),
        }
    }
}

pub struct BatchReport {
    /// From 1.
    pub number: usize,
    /// The input line of each record.
    pub lines: Vec<usize>,
    pub elapsed: Duration,
    pub logs: Vec<PluginLogLine>,
    pub result: Result<Verdict, Failed>,
}

pub struct Printer {
    json: bool,
}

fn ms(d: Duration) -> f64 {
    // Three decimals: microseconds are what a small batch takes.
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Printer {
    pub fn new(json: bool) -> Printer {
        Printer { json }
    }

    fn emit(&self, v: Value) {
        println!("{v}");
    }

    pub fn loaded(&self, file: &Path, local: &Local) {
        let world = local.pre.world.name();
        if self.json {
            return self.emit(
                json!({"event": "loaded", "file": file.display().to_string(),
                "world": world, "size_bytes": local.size_bytes, "compile_ms": local.compile_ms,
                "cached": local.cached}),
            );
        }
        let how = match local.cached {
            true => "compiled code from cache".to_owned(),
            false => format!("compiled in {} ms", local.compile_ms),
        };
        println!(
            "{}: world {world}, {} bytes, {how}",
            file.display(),
            local.size_bytes
        );
    }

    pub fn init(&self, elapsed: Duration, logs: &[PluginLogLine], error: Option<&Failed>) {
        if self.json {
            let mut v = json!({"event": "init", "ok": error.is_none(), "time_ms": ms(elapsed),
                "logs": logs_json(logs)});
            if let Some(f) = error {
                v["error"] = json!({"kind": f.kind, "message": f.message});
            }
            return self.emit(v);
        }
        let status = match error {
            None => "ok".to_owned(),
            Some(f) => format!("FAILED ({}): {}", f.kind, short(&f.message)),
        };
        println!("init: {status} ({} ms)", ms(elapsed));
        print_logs(logs);
    }

    pub fn batch(&self, r: &BatchReport) {
        if self.json {
            return self.emit(batch_json(r));
        }
        let per = r.elapsed / r.lines.len().max(1) as u32;
        println!(
            "batch {} ({}): {} ms, {} ms per record",
            r.number,
            span(&r.lines),
            ms(r.elapsed),
            ms(per)
        );
        print_logs(&r.logs);
        match &r.result {
            Ok(v) => print_verdict(&r.lines, v),
            Err(f) => println!("  FAILED ({}): {}", f.kind, short(&f.message)),
        }
    }

    pub fn summary(&self, records: usize, failed: usize, busy: Duration) {
        if self.json {
            return self.emit(json!({"event": "summary", "records": records,
                "failed_batches": failed, "time_ms": ms(busy)}));
        }
        println!(
            "{records} records, {failed} failed batches, {} ms in the plugin",
            ms(busy)
        );
    }
}

/// A trap's message without wasmtime's wasm backtrace (kilobytes of `<wasm function N>` frames
/// that say nothing to the plugin's author): what the plugin printed, then the trap itself. The
/// JSON output keeps the whole message.
fn short(message: &str) -> String {
    const BACKTRACE: &str = "error while executing at wasm backtrace:";
    match (message.find(BACKTRACE), message.rfind("wasm trap:")) {
        (Some(start), Some(trap)) if trap > start => {
            format!("{}{}", &message[..start], &message[trap..])
        }
        _ => message.to_owned(),
    }
}

/// `record 3` or `records 3-7` (by input line).
fn span(lines: &[usize]) -> String {
    match (lines.first(), lines.last()) {
        (Some(a), Some(b)) if a == b => format!("record {a}"),
        (Some(a), Some(b)) => format!("records {a}-{b}"),
        _ => "no records".into(),
    }
}

fn print_logs(logs: &[PluginLogLine]) {
    for l in logs {
        println!("  log {}: {}", l.level, l.text);
    }
}

fn print_verdict(lines: &[usize], v: &Verdict) {
    match v {
        Verdict::Kept(keep) => {
            for (line, k) in lines.iter().zip(keep) {
                println!("  record {line}: {}", if *k { "kept" } else { "dropped" });
            }
        }
        Verdict::Transformed(out) if out.is_empty() => println!("  dropped: no output records"),
        Verdict::Transformed(out) => {
            println!("  output: {} record(s)", out.len());
            out.iter().for_each(|r| println!("    {}", to_json(r)));
        }
        Verdict::Routed(routes) => {
            for (line, topics) in lines.iter().zip(routes) {
                match topics.is_empty() {
                    true => println!("  record {line}: dropped (no destination)"),
                    false => println!("  record {line}: -> {}", topics.join(", ")),
                }
            }
        }
        Verdict::Scheduled { delays, now } => {
            for (line, d) in lines.iter().zip(delays) {
                match d {
                    0 => println!("  record {line}: delivered now"),
                    d => println!("  record {line}: delayed {d} ms (due at {})", due(*now, *d)),
                }
            }
        }
    }
}

fn due(now: i64, delay: u64) -> i64 {
    now.saturating_add(i64::try_from(delay).unwrap_or(i64::MAX))
}

fn logs_json(logs: &[PluginLogLine]) -> Value {
    logs.iter()
        .map(|l| json!({"level": l.level, "message": l.text}))
        .collect()
}

fn batch_json(r: &BatchReport) -> Value {
    let mut v = json!({"event": "batch", "batch": r.number, "records": r.lines,
        "time_ms": ms(r.elapsed),
        "time_per_record_ms": ms(r.elapsed / r.lines.len().max(1) as u32),
        "logs": logs_json(&r.logs)});
    match &r.result {
        Ok(verdict) => {
            v["ok"] = json!(true);
            add_verdict(&mut v, &r.lines, verdict);
        }
        Err(f) => {
            v["ok"] = json!(false);
            v["error"] = json!({"kind": f.kind, "message": f.message});
        }
    }
    v
}

fn add_verdict(v: &mut Value, lines: &[usize], verdict: &Verdict) {
    let per = |f: &dyn Fn(usize) -> Value| -> Value { (0..lines.len()).map(f).collect() };
    match verdict {
        Verdict::Kept(keep) => {
            v["results"] = per(&|i| json!({"record": lines[i], "kept": keep.get(i)}));
        }
        Verdict::Transformed(out) => {
            v["output"] = out.iter().map(to_json).collect();
        }
        Verdict::Routed(routes) => {
            v["results"] = per(&|i| json!({"record": lines[i], "topics": routes.get(i)}));
        }
        Verdict::Scheduled { delays, now } => {
            v["results"] = per(&|i| {
                let d = delays.get(i).copied().unwrap_or(0);
                let due = (d > 0).then(|| due(*now, d));
                json!({"record": lines[i], "delay_ms": d, "due_ms": due})
            });
        }
    }
}
