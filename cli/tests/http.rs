//! The broker's HTTP listener over real TCP: `/healthz`, `/readyz` (not ready once a shutdown
//! has begun), and `/metrics` scraped from a real `quiver serve` after known activity, parsed by
//! the reference Prometheus client's OpenMetrics parser and checked for values, not only names:
//! partitions, a plugin stage, a consumer group's committed offset and lag, the process.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::outside::{python, root};
use common::serve::Serve;
use quiver_broker::http::HttpServer;
use tokio_util::sync::CancellationToken;

use common::http_get as get;

/// One parsed sample: metric name and labels → value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

/// Parses a scrape with `prometheus_client.openmetrics.parser` (fails the test if it refuses).
fn parse(text: &str) -> Samples {
    let script = root().join("cli/tests/outside/parse_metrics.py");
    let mut cmd = Command::new(python());
    cmd.arg(script);
    let out = common::run_with_stdin(cmd, text);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the parser refused the scrape: {stderr}\n{text}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (name, labels, value): (String, BTreeMap<String, String>, f64) =
                serde_json::from_str(line).unwrap();
            ((name, labels), value)
        })
        .collect()
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    *samples
        .get(&(name.to_owned(), labels))
        .unwrap_or_else(|| panic!("no sample {name} {samples:?}"))
}

#[test]
fn metrics_report_partitions_plugins_and_the_process_after_real_activity() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start(d);
    let (status, body) = get(&serve.http, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert_eq!(get(&serve.http, "/readyz").0, 200);

    let ok = |args: &[&str], stdin: &str| {
        let out = serve.cli(d, args, stdin);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{args:?}: {stderr}");
    };
    ok(&["topic", "create", "obs", "--partitions", "2"], "");
    ok(&["produce", "obs", "--partition", "1"], "a\nb\nc\n");
    ok(&["topic", "create", "tagged", "--partitions", "1"], "");
    let wasm = root().join("target/plugins/tag-filter.wasm");
    common::plugin_wasm("tag-filter");
    ok(&["plugin", "deploy", "tags", wasm.to_str().unwrap()], "");
    ok(
        &["topic", "attach", "tagged", "tags", "--config", "tags=keep"],
        "",
    );
    ok(&["produce", "tagged", "--tag", "keep"], "kept\n");
    ok(&["produce", "tagged", "--tag", "drop"], "dropped\n");
    // A group reads all three and commits them; two more arrive after it left.
    let group = [
        "consume", "obs", "--group", "g1", "--commit", "manual", "--count", "3",
    ];
    ok(&group, "");
    ok(&["produce", "obs", "--partition", "1"], "d\ne\n");
    // Durable and delayed: an fsync, and a run delivered after its due time.
    ok(&["topic", "create", "later", "--partitions", "1"], "");
    ok(&["produce", "later", "--acks", "all"], "now\n");
    ok(&["produce", "later", "--delay-ms", "100"], "soon\n");
    let delivered = std::time::Instant::now();
    while get(&serve.http, "/metrics")
        .1
        .contains("quiver_delayed_pending{topic=\"later\"} 1")
    {
        assert!(
            delivered.elapsed().as_secs() < 30,
            "the delayed record never came"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }

    // A queue consumer takes both records of `later` (the metrics' queue families).
    ok(&["consume", "later", "--queue", "q1", "--count", "2"], "");

    let (status, text) = get(&serve.http, "/metrics");
    assert_eq!(status, 200, "{text}");
    let s = parse(&text);
    dashboard_names_are_exported(&s);
    let end = "quiver_partition_log_end_offset";
    assert_eq!(value(&s, end, &[("topic", "obs"), ("partition", "0")]), 0.0);
    assert_eq!(value(&s, end, &[("topic", "obs"), ("partition", "1")]), 5.0);
    assert_eq!(
        value(&s, end, &[("topic", "tagged"), ("partition", "0")]),
        1.0
    );
    let size = value(
        &s,
        "quiver_partition_size_bytes",
        &[("topic", "obs"), ("partition", "1")],
    );
    assert!(size > 0.0, "{size}");
    let stage = [
        ("attachment", "tagged"),
        ("plugin", "tags"),
        ("version", "1"),
    ];
    assert_eq!(value(&s, "quiver_plugin_calls_total", &stage), 2.0);
    assert_eq!(value(&s, "quiver_plugin_failures_total", &stage), 0.0);
    assert_eq!(value(&s, "quiver_plugin_healthy", &stage), 1.0);
    assert!(value(&s, "quiver_plugin_memory_bytes", &stage) > 0.0);
    let in_use = value(&s, "quiver_plugin_memory_in_use_bytes", &[]);
    let budget = value(&s, "quiver_plugin_memory_budget_bytes", &[]);
    assert!(in_use > 0.0 && in_use <= budget, "{in_use} of {budget}");
    assert_eq!(
        value(&s, "quiver_delayed_pending", &[("topic", "obs")]),
        0.0
    );
    // Traffic: in counts appends (the filtered record never was), out what readers got.
    let obs1 = [("topic", "obs"), ("partition", "1")];
    assert_eq!(value(&s, "quiver_partition_records_in_total", &obs1), 5.0);
    assert_eq!(value(&s, "quiver_partition_records_out_total", &obs1), 3.0);
    let tagged0 = [("topic", "tagged"), ("partition", "0")];
    assert_eq!(
        value(&s, "quiver_partition_records_in_total", &tagged0),
        1.0
    );
    let bytes_in = value(&s, "quiver_partition_bytes_in_total", &obs1);
    let bytes_out = value(&s, "quiver_partition_bytes_out_total", &obs1);
    assert!(
        bytes_in > 0.0 && bytes_out > 0.0 && bytes_out <= bytes_in,
        "{bytes_in} {bytes_out}"
    );
    let later0 = [("topic", "later"), ("partition", "0")];
    assert_eq!(value(&s, "quiver_partition_records_in_total", &later0), 2.0);
    assert_eq!(
        value(&s, "quiver_partition_records_out_total", &later0),
        2.0
    );
    let q1 = [("group", "q1"), ("topic", "later"), ("partition", "0")];
    assert_eq!(value(&s, "quiver_queue_leased", &q1), 0.0, "acked");
    assert_eq!(value(&s, "quiver_queue_redelivered_total", &q1), 0.0);
    // Request latencies by acks: every CLI produce above is one request.
    let produced = |acks| {
        value(
            &s,
            "quiver_produce_request_duration_seconds_count",
            &[("acks", acks)],
        )
    };
    assert_eq!(produced("all"), 1.0);
    assert_eq!(produced("leader"), 5.0);
    assert_eq!(produced("none"), 0.0);
    let fetches = value(
        &s,
        "quiver_fetch_request_duration_seconds_count",
        &[("result", "data")],
    );
    assert!(fetches >= 1.0, "{fetches}");
    assert!(value(&s, "quiver_fsync_duration_seconds_count", &[]) >= 1.0);
    let late = value(&s, "quiver_delayed_delivery_lateness_seconds_count", &[]);
    assert_eq!(late, 1.0, "one delayed run delivered");
    assert_eq!(
        value(&s, "quiver_plugin_call_duration_seconds_count", &stage),
        2.0
    );
    assert_eq!(value(&s, "quiver_plugin_timeouts_total", &stage), 0.0);
    // The CLI commands above each connected (one per process; a dozen of them).
    let accepted = value(&s, "quiver_connections_accepted_total", &[]);
    assert!((12.0..=13.0).contains(&accepted), "{accepted}");
    assert!(value(&s, "quiver_process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&s, "quiver_process_open_fds", &[]) > 0.0);
    assert_eq!(get(&serve.http, "/nope").0, 404);
}

/// Every metric the Grafana dashboard (docs/grafana/quiver.json) queries is in the scrape.
fn dashboard_names_are_exported(samples: &Samples) {
    let path = root().join("docs/grafana/quiver.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{} queries", exprs.len());
    let exported: std::collections::BTreeSet<&str> =
        samples.keys().map(|(name, _)| name.as_str()).collect();
    let mut used = std::collections::BTreeSet::new();
    for expr in &exprs {
        used.extend(metric_names(expr));
    }
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics the broker does not export: {missing:?}"
    );
    assert!(used.len() >= 25, "{used:?}");
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The `quiver_…` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("quiver_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_ends_when_a_shutdown_begins() {
    let dir = tempfile::tempdir().unwrap();
    let quic_shutdown = CancellationToken::new();
    let quiver = quiver_broker::Broker::open(quiver_broker::BrokerConfig {
        data_dir: dir.path().to_owned(),
        ..Default::default()
    })
    .unwrap();
    let http = HttpServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        quiver,
        quic_shutdown.clone(),
    )
    .await
    .unwrap();
    let addr = http.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    let task = tokio::spawn(http.run(stop.clone()));

    let probe = |path: &'static str| {
        let addr = addr.clone();
        tokio::task::spawn_blocking(move || get(&addr, path))
    };
    assert_eq!(probe("/readyz").await.unwrap(), (200, "ready\n".into()));
    quic_shutdown.cancel();
    assert_eq!(
        probe("/readyz").await.unwrap(),
        (503, "shutting down\n".into())
    );
    assert_eq!(probe("/healthz").await.unwrap().0, 200);
    stop.cancel();
    task.await.unwrap().unwrap();
}
