//! `quiver plugin logs` against a real `quiver serve` process: a real plugin (json-mask, which logs
//! at init and for every value that is not JSON) attached to a topic, `plugin logs --follow` as a
//! child process printing lines as records make the plugin log them, and the buffered form.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
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

#[test]
fn follow_prints_lines_as_the_plugin_logs_them_and_the_buffer_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start(d);
    common::plugin_wasm("json-mask");
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/json-mask.wasm");
    ok(&serve.cli(
        d,
        &["plugin", "deploy", "json-mask", wasm.to_str().unwrap()],
        "",
    ));
    ok(&serve.cli(d, &["topic", "create", "payments"], ""));
    ok(&serve.cli(
        d,
        &[
            "topic",
            "attach",
            "payments",
            "json-mask",
            "--config",
            "fields=card",
        ],
        "",
    ));

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
