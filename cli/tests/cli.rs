//! The `quiver` binary as users and acceptance scripts run it: `serve` on a free port with a fresh data
//! dir (dev TLS generated), then `topic`, `produce` and `consume` as separate processes, then SIGTERM.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

mod common;

use common::serve::Serve;

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn serve_topic_produce_consume_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start(d);
    assert!(
        d.join("data/tls/ca.pem").exists(),
        "dev CA generated on first start"
    );

    ok(&serve.cli(
        d,
        &[
            "topic",
            "create",
            "greetings",
            "--partitions",
            "2",
            "--retention-ms",
            "3600000",
        ],
        "",
    ));
    assert_eq!(ok(&serve.cli(d, &["topic", "list"], "")), "greetings\t2\n");
    let produce = [
        "produce",
        "greetings",
        "--partition",
        "1",
        "--tag",
        "hi",
        "--header",
        "lang=en",
        "--acks",
        "all",
    ];
    ok(&serve.cli(d, &produce, "hello\nworld\n"));
    assert_eq!(
        ok(&serve.cli(d, &["consume", "greetings", "--count", "2"], "")),
        "hello\nworld\n"
    );
    let json_args = [
        "consume",
        "greetings",
        "--partition",
        "1",
        "--from",
        "1",
        "--count",
        "1",
        "--format",
        "json",
    ];
    let json = ok(&serve.cli(d, &json_args, ""));
    for want in [
        "\"offset\":1",
        "\"value\":\"world\"",
        "\"lang\":\"en\"",
        "\"hi\"",
    ] {
        assert!(json.contains(want), "{want} missing in {json}");
    }
    let describe = ok(&serve.cli(d, &["topic", "describe", "greetings"], ""));
    assert!(
        describe.contains("retention_ms 3600000") && describe.contains("1\t0\t2\t"),
        "{describe}"
    );
    // Nothing new arrives: consume exits after the idle timeout.
    let started = Instant::now();
    assert_eq!(
        ok(&serve.cli(
            d,
            &[
                "consume",
                "greetings",
                "--from",
                "latest",
                "--timeout-ms",
                "300"
            ],
            ""
        )),
        ""
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    let failed = serve.cli(d, &["produce", "nope"], "x\n");
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("unknown topic"),
        "{failed:?}"
    );

    ok(&serve.cli(d, &["topic", "delete", "greetings"], ""));
    assert_eq!(ok(&serve.cli(d, &["topic", "list"], "")), "");
    assert!(serve.terminate().success(), "graceful shutdown exits 0");
}

/// A component from `target/plugins/` (scripts/build-plugins.sh builds them; the test command runs
/// it first).
fn plugin_path(name: &str) -> String {
    // At the repository root, above cli/.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let path = root.join(format!("target/plugins/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh",
        path.display()
    );
    path.to_string_lossy().into_owned()
}

#[test]
fn plugins_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start(d);
    let (tags, mask) = (plugin_path("tag-filter"), plugin_path("json-mask"));

    let deployed = ok(&serve.cli(d, &["plugin", "deploy", "tf", &tags], ""));
    assert!(
        deployed.starts_with("deployed tf@1 (filter world"),
        "{deployed}"
    );
    ok(&serve.cli(
        d,
        &["plugin", "deploy", "mask", &mask, "--version", "2.0"],
        "",
    ));
    let listed = ok(&serve.cli(d, &["plugin", "list"], ""));
    assert!(
        listed.contains("mask\t2.0\ttransform") && listed.contains("tf\t1\tfilter"),
        "{listed}"
    );
    let refused = serve.cli(d, &["plugin", "deploy", "bad", "/dev/null"], "");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not a WebAssembly binary"));

    ok(&serve.cli(d, &["topic", "create", "pay"], ""));
    let attach = [
        "topic",
        "attach",
        "pay",
        "mask@2.0",
        "--config",
        "fields=card",
        "--on-error",
        "reject",
    ];
    ok(&serve.cli(d, &attach, ""));
    ok(&serve.cli(
        d,
        &["produce", "pay", "--tag", "eu"],
        "{\"card\":\"4111\",\"n\":1}\n",
    ));
    ok(&serve.cli(
        d,
        &["produce", "pay", "--tag", "us"],
        "{\"card\":\"5500\",\"n\":2}\n",
    ));
    let filtered = [
        "consume",
        "pay",
        "--plugin",
        "tf",
        "--plugin-config",
        "tags=us",
        "--timeout-ms",
        "1000",
    ];
    assert_eq!(
        ok(&serve.cli(d, &filtered, "")),
        "{\"card\":\"***\",\"n\":2}\n"
    );
    let described = ok(&serve.cli(d, &["plugin", "describe", "mask"], ""));
    assert!(
        described.contains("pay\t0\tmask@2.0\ttransform\treject"),
        "{described}"
    );
    let in_use = serve.cli(d, &["plugin", "remove", "mask"], "");
    assert!(String::from_utf8_lossy(&in_use.stderr).contains("detach it first"));
    ok(&serve.cli(d, &["topic", "detach", "pay", "mask"], ""));
    ok(&serve.cli(d, &["plugin", "remove", "mask@2.0"], ""));
    assert!(!ok(&serve.cli(d, &["plugin", "list"], "")).contains("mask"));
    assert!(serve.terminate().success());
}

#[test]
fn groups_and_queues_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start(d);
    ok(&serve.cli(d, &["topic", "create", "tasks", "--partitions", "2"], ""));
    let lines: String = (0..6).map(|i| format!("task-{i}\n")).collect();
    ok(&serve.cli(d, &["produce", "tasks"], &lines));

    // A group member reads everything and commits; a second run of the same group reads nothing.
    let group = ["consume", "tasks", "--group", "g1", "--timeout-ms", "1500"];
    let first = ok(&serve.cli(d, &group, ""));
    assert_eq!(first.lines().count(), 6, "{first}");
    assert_eq!(ok(&serve.cli(d, &group, "")), "");
    let manual = [
        "consume", "tasks", "--group", "g2", "--commit", "manual", "--count", "4",
    ];
    assert_eq!(ok(&serve.cli(d, &manual, "")).lines().count(), 4);

    let list = ok(&serve.cli(d, &["group", "list"], ""));
    assert!(list.contains("g1") && list.contains("g2"), "{list}");
    let describe = ok(&serve.cli(d, &["group", "describe", "g1"], ""));
    assert!(
        describe.contains("COMMITTED") && describe.contains("LAG"),
        "{describe}"
    );
    let lags: Vec<&str> = describe
        .lines()
        .filter(|l| l.starts_with("tasks"))
        .collect();
    assert_eq!(lags.len(), 2, "{describe}");
    assert!(
        lags.iter()
            .all(|l| l.split_whitespace().nth(4) == Some("0")),
        "{describe}"
    );

    // Reset to the start: the group reads everything again.
    let reset = [
        "group", "reset", "g1", "--topic", "tasks", "--to", "earliest",
    ];
    assert_eq!(
        ok(&serve.cli(d, &reset, "")),
        "tasks/0 -> 0\ntasks/1 -> 0\n"
    );
    assert_eq!(ok(&serve.cli(d, &group, "")).lines().count(), 6);
    let bad = serve.cli(d, &["group", "describe", "nobody"], "");
    assert!(!bad.status.success());

    // Queue mode: two runs share the records; acked ones are not delivered again.
    let queue = [
        "consume",
        "tasks",
        "--queue",
        "workers",
        "--count",
        "4",
        "--max-deliveries",
        "3",
        "--visibility-timeout-ms",
        "5000",
        "--format",
        "json",
    ];
    let q1 = ok(&serve.cli(d, &queue, ""));
    assert_eq!(q1.lines().count(), 4, "{q1}");
    assert!(q1.contains("\"delivery_count\":1"), "{q1}");
    let rest = [
        "consume",
        "tasks",
        "--queue",
        "workers",
        "--timeout-ms",
        "1500",
    ];
    let q2 = ok(&serve.cli(d, &rest, ""));
    assert_eq!(q2.lines().count(), 2, "{q2}");
    let describe = ok(&serve.cli(d, &["group", "describe", "workers"], ""));
    assert!(describe.contains("queue mode"), "{describe}");
    assert!(serve.terminate().success());
}

#[test]
fn exchanges_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start(d);
    for t in ["orders.eu", "orders.us", "orders.rest"] {
        ok(&serve.cli(d, &["topic", "create", t], ""));
    }
    let create = [
        "exchange",
        "create",
        "orders",
        "--kind",
        "topic",
        "--alternate",
        "orders.rest",
    ];
    assert_eq!(
        ok(&serve.cli(d, &create, "")),
        "orders\ttopic alternate=orders.rest\n"
    );
    ok(&serve.cli(
        d,
        &["exchange", "bind", "orders", "orders.eu", "--key", "*.eu"],
        "",
    ));
    ok(&serve.cli(
        d,
        &["exchange", "bind", "orders", "orders.us", "--key", "#.us"],
        "",
    ));
    let list = ok(&serve.cli(d, &["exchange", "list"], ""));
    assert!(
        list.contains("-> orders.eu key=*.eu") && list.contains("-> orders.us key=#.us"),
        "{list}"
    );
    let produce = |key: &str, line: &str| {
        ok(&serve.cli(d, &["produce", "--exchange", "orders", "--key", key], line));
    };
    produce("new.eu", "to-eu\n");
    produce("a.b.us", "to-us\n");
    produce("new.asia", "to-rest\n");
    for (topic, want) in [
        ("orders.eu", "to-eu\n"),
        ("orders.us", "to-us\n"),
        ("orders.rest", "to-rest\n"),
    ] {
        assert_eq!(
            ok(&serve.cli(d, &["consume", topic, "--count", "1"], "")),
            want
        );
    }
    let bad = serve.cli(d, &["exchange", "create", "x", "--kind", "weird"], "");
    assert!(!bad.status.success());
    let direct = ["exchange", "create", "strict", "--kind", "direct"];
    ok(&serve.cli(d, &direct, ""));
    let failed = serve.cli(d, &["produce", "--exchange", "strict", "--key", "k"], "x\n");
    assert!(!failed.status.success());
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("match no binding"),
        "{failed:?}"
    );
    assert!(serve.terminate().success());
}

#[test]
fn delayed_delivery_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start(d);
    ok(&serve.cli(d, &["topic", "create", "later", "--partitions", "1"], ""));

    // Every record of the command is held; the answer names their ids.
    let held = ok(&serve.cli(d, &["produce", "later", "--delay-ms", "1500"], "a\nb\nc\n"));
    let ids = held
        .strip_prefix("held 3 records for delayed delivery (ids ")
        .and_then(|rest| rest.split_once("), due in 1500 ms (at about "))
        .map(|(ids, _)| ids.to_owned())
        .unwrap_or_else(|| panic!("unexpected produce output: {held}"));
    let (first, last) = ids.split_once("..").expect("a range of ids");
    let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
    assert_eq!(last, first + 2, "{held}");
    assert!(ok(&serve.cli(d, &["topic", "describe", "later"], "")).contains("pending delayed: 3"));
    let not_yet = ["consume", "later", "--timeout-ms", "300"];
    assert_eq!(ok(&serve.cli(d, &not_yet, "")), "");

    // The first is cancelled; cancelling it again fails.
    let first = first.to_string();
    assert_eq!(
        ok(&serve.cli(d, &["delay", "cancel", &first], "")),
        format!("cancelled delayed record {first} (for topic later)\n")
    );
    let again = serve.cli(d, &["delay", "cancel", &first], "");
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no delayed record"),
        "{again:?}"
    );

    // The other two arrive once due.
    let started = Instant::now();
    assert_eq!(
        ok(&serve.cli(
            d,
            &["consume", "later", "--count", "2", "--timeout-ms", "10000"],
            ""
        )),
        "b\nc\n"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let describe = ok(&serve.cli(d, &["topic", "describe", "later"], ""));
    assert!(!describe.contains("pending delayed"), "{describe}");

    // An absolute time in the past: held anyway, delivered at once.
    let past = ok(&serve.cli(d, &["produce", "later", "--deliver-at", "1000"], "d\n"));
    assert!(
        past.starts_with("held 1 record for delayed delivery (id ")
            && past.contains("), due at 1970-01-01T00:00:01.000Z"),
        "{past}"
    );
    let from_two = [
        "consume",
        "later",
        "--from",
        "2",
        "--count",
        "1",
        "--timeout-ms",
        "10000",
    ];
    assert_eq!(ok(&serve.cli(d, &from_two, "")), "d\n");
    let both = serve.cli(
        d,
        &["produce", "later", "--delay-ms", "1", "--deliver-at", "1"],
        "x\n",
    );
    assert!(!both.status.success());
    assert!(serve.terminate().success());
}

#[test]
fn exchange_router_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start(d);
    for t in ["orders.eu", "orders.us"] {
        ok(&serve.cli(d, &["topic", "create", t], ""));
    }
    let router = plugin_path("json-router");
    ok(&serve.cli(d, &["plugin", "deploy", "json-router", &router], ""));
    ok(&serve.cli(d, &["exchange", "create", "orders", "--kind", "fanout"], ""));
    let attach = [
        "exchange",
        "attach",
        "orders",
        "json-router",
        "--config",
        "field=region",
        "--config",
        "prefix=orders.",
        "--on-error",
        "skip",
    ];
    let attached = ok(&serve.cli(d, &attach, ""));
    assert!(
        attached.starts_with(
            "orders\tfanout\n  router json-router@1 healthy calls=0 failures=0 on_error=skip "
        ),
        "{attached}"
    );
    assert!(
        attached.contains(" config=field=region,prefix=orders.\n"),
        "{attached}"
    );
    ok(&serve.cli(
        d,
        &["produce", "--exchange", "orders"],
        "{\"region\":\"eu\",\"n\":1}\n{\"region\":\"us\",\"n\":2}\n",
    ));
    for (topic, want) in [
        ("orders.eu", "{\"region\":\"eu\",\"n\":1}\n"),
        ("orders.us", "{\"region\":\"us\",\"n\":2}\n"),
    ] {
        assert_eq!(
            ok(&serve.cli(d, &["consume", topic, "--count", "1"], "")),
            want
        );
    }
    let list = ok(&serve.cli(d, &["exchange", "list"], ""));
    assert!(
        list.contains("  router json-router@1 healthy calls=1 failures=0"),
        "{list}"
    );
    let described = ok(&serve.cli(d, &["plugin", "describe", "json-router"], ""));
    assert!(
        described.contains("exchange:orders\trouter\tjson-router@1\trouter\tskip"),
        "{described}"
    );
    let detached = ok(&serve.cli(d, &["exchange", "detach", "orders"], ""));
    assert_eq!(detached, "orders\tfanout\n");
    assert!(serve.terminate().success());
}
