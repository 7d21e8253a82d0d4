//! `quiver plugin test`: the `quiver` binary runs real components from `target/plugins/` over
//! sample records with no broker, and its output (text and JSON) is checked line by line: a filter
//! (tag-filter), a transform (json-mask), a router (json-router), a trapping and a looping plugin
//! (the hostile fixture), a refused init and a wrong `--world`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

/// Two orders: one tagged `vip` in region eu, one keyed `k2` in region us.
const ORDERS: &str = r#"{"value":"{\"card\":\"4111\",\"region\":\"eu\"}","tags":["vip"],"timestamp":1700000000000}
{"value":"{\"card\":\"5500\",\"region\":\"us\"}","key":"k2","timestamp":1700000000001}
"#;

/// The component's path, built by scripts/build-plugins.sh when missing.
fn component(name: &str) -> PathBuf {
    common::plugin_wasm(name);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    root.join("target/plugins").join(format!("{name}.wasm"))
}

/// Runs `quiver plugin test` on `plugin` over `input` with `args`, compiling into a fresh cache.
fn plugin_test(plugin: &str, input: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("records.jsonl");
    std::fs::write(&records, input).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["plugin", "test"])
        .arg(component(plugin))
        .arg("--input")
        .arg(&records)
        .args(args)
        .env("QUIVER_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON lines of a run, without what varies between runs (times, the file's path).
fn events(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            let obj = v.as_object_mut().unwrap();
            for k in [
                "time_ms",
                "time_per_record_ms",
                "compile_ms",
                "cached",
                "file",
            ] {
                obj.remove(k);
            }
            v
        })
        .collect()
}

/// Text output with every time (`N ms`, `(N ms`) written as `T`.
fn untimed(text: &str) -> String {
    let line = |line: &str| {
        let words: Vec<&str> = line.split(' ').collect();
        let word = |(i, w): (usize, &&str)| {
            let (open, number) = match w.strip_prefix('(') {
                Some(n) => ("(", n),
                None => ("", *w),
            };
            let next_is_ms = words.get(i + 1).is_some_and(|n| n.starts_with("ms"));
            match number.parse::<f64>().is_ok() && next_is_ms {
                true => format!("{open}T"),
                false => w.to_string(),
            }
        };
        words
            .iter()
            .enumerate()
            .map(word)
            .collect::<Vec<_>>()
            .join(" ")
    };
    text.lines().map(line).collect::<Vec<_>>().join("\n")
}

fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

#[test]
fn a_filter_keeps_and_drops_each_record() {
    let out = plugin_test(
        "tag-filter",
        ORDERS,
        &["--config", "tags=vip", "--format", "json"],
    );
    assert_ok(&out);
    let log =
        json!([{"level": "info", "message": "tag-filter: keeping records with Any of [\"vip\"]"}]);
    assert_eq!(
        events(&out),
        vec![
            json!({"event": "loaded", "world": "filter", "size_bytes": std::fs::metadata(component("tag-filter")).unwrap().len()}),
            json!({"event": "init", "ok": true, "logs": log}),
            json!({"event": "batch", "batch": 1, "records": [1], "ok": true, "logs": [],
                "results": [{"record": 1, "kept": true}]}),
            json!({"event": "batch", "batch": 2, "records": [2], "ok": true, "logs": [],
                "results": [{"record": 2, "kept": false}]}),
            json!({"event": "summary", "records": 2, "failed_batches": 0}),
        ]
    );
}

#[test]
fn a_transform_prints_its_output_records() {
    let out = plugin_test("json-mask", ORDERS, &["--config", "fields=card"]);
    assert_ok(&out);
    let text = untimed(&stdout(&out));
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "init: ok (T ms)",
            "  log info: json-mask: masking fields [\"card\"] with \"***\"",
            "batch 1 (record 1): T ms, T ms per record",
            "  output: 1 record(s)",
            r#"    {"tags":["vip"],"timestamp":1700000000000,"value":"{\"card\":\"***\",\"region\":\"eu\"}"}"#,
            "batch 2 (record 2): T ms, T ms per record",
            "  output: 1 record(s)",
            r#"    {"key":"k2","timestamp":1700000000001,"value":"{\"card\":\"***\",\"region\":\"us\"}"}"#,
            "2 records, 0 failed batches, T ms in the plugin",
        ]
    );
    assert!(
        text.starts_with(&format!(
            "{}: world transform, ",
            component("json-mask").display()
        )),
        "{text}"
    );
}

#[test]
fn a_router_prints_each_records_topics_in_batches() {
    let out = plugin_test(
        "json-router",
        ORDERS,
        &[
            "--config",
            "also=audit",
            "--batch-size",
            "2",
            "--format",
            "json",
        ],
    );
    assert_ok(&out);
    let batch = &events(&out)[2];
    assert_eq!(
        batch,
        &json!({"event": "batch", "batch": 1, "records": [1, 2], "ok": true, "logs": [],
            "results": [{"record": 1, "topics": ["orders.eu", "audit"]},
                        {"record": 2, "topics": ["orders.us", "audit"]}]})
    );
}

#[test]
fn a_trapping_plugin_fails_with_its_panic_message_and_is_replaced() {
    let out = plugin_test(
        "hostile",
        ORDERS,
        &["--config", "mode=panic", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert_eq!(
        stderr(&out).trim(),
        "error: the plugin failed on 2 batch(es); see above"
    );
    let ev = events(&out);
    for (i, batch) in ev[2..4].iter().enumerate() {
        assert_eq!(batch["ok"], json!(false));
        assert_eq!(batch["records"], json!([i + 1]));
        assert_eq!(batch["error"]["kind"], json!("trap"));
        let message = batch["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("plugin hostile@local: trapped (stderr: ")
                && message.contains("hostile plugin panicked on purpose"),
            "{message}"
        );
    }
    // The second batch ran in a replacement instance, whose init logged again.
    assert_eq!(ev[3]["logs"].as_array().unwrap().len(), 1);
    assert_eq!(
        ev[4],
        json!({"event": "summary", "records": 2, "failed_batches": 2})
    );
}

#[test]
fn a_looping_plugin_hits_the_time_limit() {
    let out = plugin_test(
        "hostile",
        "\"x\"\n",
        &["--config", "mode=loop", "--timeout-ms", "50"],
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("  FAILED (timeout): plugin hostile@local: time limit exceeded: interrupted after 50 ms\n"),
        "{text}"
    );
}

#[test]
fn a_refused_init_shows_the_plugins_message() {
    let out = plugin_test("json-mask", ORDERS, &[]);
    assert_eq!(out.status.code(), Some(1));
    let expected = "plugin json-mask@local: missing required config `fields` (attach with --config fields=...)";
    assert!(
        untimed(&stdout(&out)).contains(&format!("init: FAILED (init): {expected} (T ms)")),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        stderr(&out).trim(),
        format!("error: the plugin's init failed: {expected}")
    );
}

#[test]
fn a_wrong_world_names_the_world_and_the_fix() {
    let out = plugin_test("json-mask", ORDERS, &["--world", "filter"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).trim(),
        "error: this component implements the `transform` world, not `filter`: build it against world `filter` of wit/quiver-plugin.wit (export `init` and `filter`), or test it with --world transform"
    );
}

#[test]
fn bad_input_names_the_line() {
    let out = plugin_test(
        "tag-filter",
        "\"ok\"\n{\"value\": 5}\n",
        &["--config", "tags=a"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("line 2: `value` must be a string or {\"base64\": \"…\"}"),
        "{}",
        stderr(&out)
    );
}
