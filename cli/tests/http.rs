//! The broker's HTTP listener over real TCP: `/healthz`, `/readyz` (not ready once a shutdown
//! has begun), and `/metrics` scraped from a real `quiver serve` after known activity, parsed by
//! the reference Prometheus client's OpenMetrics parser and checked for values, not only names:
//! partitions, a plugin stage, a consumer group's committed offset and lag, the process.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;

use common::outside::{python, root};
use common::serve::Serve;
use quiver_broker::http::HttpServer;
use tokio_util::sync::CancellationToken;

/// A plain HTTP/1.1 GET; returns (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

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

    let (status, text) = get(&serve.http, "/metrics");
    assert_eq!(status, 200, "{text}");
    let s = parse(&text);
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
    assert!(value(&s, "quiver_process_resident_memory_bytes", &[]) > 1e6);
    assert!(value(&s, "quiver_process_open_fds", &[]) > 0.0);
    assert_eq!(get(&serve.http, "/nope").0, 404);
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
