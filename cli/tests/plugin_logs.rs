//! `quiver plugin logs` against a real `quiver serve` process: a real plugin (json-mask, which logs
//! at init and for every value that is not JSON) attached to a topic, `plugin logs --follow` as a
//! child process printing lines as records make the plugin log them, and the buffered form.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::serve::Serve;

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads lines from `rx` until one contains each of `wanted`; panics after 30 s.
fn wait_for(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, wanted: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !wanted.iter().all(|w| seen.iter().any(|l| l.contains(w))) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("waited for {wanted:?}; the follower printed {seen:?}"),
        }
    }
}

/// A broker with json-mask deployed and attached to `payments`.
fn broker_with_json_mask(d: &Path) -> Serve {
    let serve = Serve::start(d);
    common::plugin_wasm("json-mask");
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/json-mask.wasm");
    let deploy = ["plugin", "deploy", "json-mask", wasm.to_str().unwrap()];
    ok(&serve.cli(d, &deploy, ""));
    ok(&serve.cli(d, &["topic", "create", "payments"], ""));
    let attach = [
        "topic",
        "attach",
        "payments",
        "json-mask",
        "--config",
        "fields=card",
    ];
    ok(&serve.cli(d, &attach, ""));
    serve
}

/// `quiver plugin logs json-mask --follow` as a child process; its stdout lines arrive on the
/// receiver.
fn follow(serve: &Serve, d: &Path) -> (Child, mpsc::Receiver<String>) {
    let mut follower = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["plugin", "logs", "json-mask", "--follow"])
        .env("QUIVER_SERVER", &serve.addr)
        .env("QUIVER_CA", d.join("data/tls/ca.pem"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (follower, rx)
}

#[test]
fn follow_prints_lines_as_the_plugin_logs_them_and_the_buffer_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = broker_with_json_mask(d);
    let (mut follower, rx) = follow(&serve, d);
    let mut seen = Vec::new();
    // What was logged before the follower started comes first (the attach's init).
    wait_for(&rx, &mut seen, &["masking fields"]);
    // Then lines logged while it waits in its long-poll.
    ok(&serve.cli(
        d,
        &["produce", "payments"],
        "not json one\n{\"card\":\"4111\"}\nnot json two\n",
    ));
    wait_for(
        &rx,
        &mut seen,
        &["offset 0 is not JSON", "offset 2 is not JSON"],
    );
    // The follower keeps running until it is stopped.
    assert!(follower.try_wait().unwrap().is_none());
    unsafe { libc::kill(follower.id() as i32, libc::SIGINT) };
    let status = follower.wait().unwrap();
    assert!(status.success(), "Ctrl-C ends --follow cleanly: {status:?}");

    let init = &seen[0];
    assert!(init.contains("json-mask@1 INFO  [payments]"), "{init}");
    assert!(
        init.ends_with(
            r#"Z json-mask@1 INFO  [payments] json-mask: masking fields ["card"] with "***""#
        ),
        "{init}"
    );
    let debug = seen.iter().find(|l| l.contains("offset 0")).unwrap();
    assert!(debug.contains("DEBUG [payments]"), "{debug}");

    // Without --follow: what the broker holds, in order, then it exits.
    let buffered = ok(&serve.cli(d, &["plugin", "logs", "json-mask"], ""));
    let lines: Vec<&str> = buffered.lines().collect();
    assert_eq!(lines.len(), 3, "{buffered}");
    assert!(lines[0].contains("masking fields"), "{buffered}");
    assert!(lines[1].contains("offset 0 is not JSON"), "{buffered}");
    assert!(lines[2].contains("offset 2 is not JSON"), "{buffered}");
    let one_version = ok(&serve.cli(d, &["plugin", "logs", "json-mask", "--version", "1"], ""));
    assert_eq!(one_version, buffered);
    // `plugin describe` shows the same ring's last lines.
    let described = ok(&serve.cli(d, &["plugin", "describe", "json-mask"], ""));
    assert!(described.contains("recent log lines:"), "{described}");
    assert!(
        described.contains("json-mask@1 Debug: json-mask: value at offset 2"),
        "{described}"
    );

    for unknown in ["nope", "json-mask@7"] {
        let out = serve.cli(d, &["plugin", "logs", unknown], "");
        assert!(!out.status.success(), "{unknown}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(unknown));
    }
}

#[test]
fn a_follower_that_falls_behind_is_told_how_many_lines_it_missed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = broker_with_json_mask(d);
    let (mut follower, rx) = follow(&serve, d);
    let mut seen = Vec::new();
    wait_for(&rx, &mut seen, &["masking fields"]);
    // Stopped, it cannot ask again: its pending poll is answered by the first new lines, then
    // the broker's ring (512 lines) turns over while it sleeps.
    unsafe { libc::kill(follower.id() as i32, libc::SIGSTOP) };
    let batch: String = (0..70).map(|i| format!("not json {i}\n")).collect();
    // 64 lines per plugin call (one batch per produce here): 12 batches log 768 lines.
    for _ in 0..12 {
        ok(&serve.cli(d, &["produce", "payments"], &batch));
    }
    unsafe { libc::kill(follower.id() as i32, libc::SIGCONT) };
    wait_for(&rx, &mut seen, &["lines dropped"]);
    let marker = seen.iter().find(|l| l.contains("lines dropped")).unwrap();
    let dropped: u64 = marker
        .trim_start_matches("… ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{marker}"));
    // Some of the (at least) 768 lines, never more than were logged.
    assert!((1..=12 * 70).contains(&dropped), "{marker}");
    follower.kill().unwrap();
    follower.wait().unwrap();
}
