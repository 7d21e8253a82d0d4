//! `quiver serve --log-format json` as a process: every line it writes is one JSON object with
//! the fields log shippers key on, the audit log (`quiver::audit`) included.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Reads lines until one satisfies `done`; panics after 30 s.
fn read_until(rx: &mpsc::Receiver<String>, seen: &mut Vec<String>, done: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no such line; the broker wrote {seen:?}"));
        seen.push(line);
        if done(seen.last().map(String::as_str).unwrap_or_default()) {
            return;
        }
    }
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn serve_writes_json_lines_including_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "none",
            "--auth",
        ])
        .args(["--log-format", "json", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(serve.stderr.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(serve.stdout.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let mut seen = Vec::new();
    read_until(&rx, &mut seen, |l| l.contains("quiver listening"));
    let listening = json(seen.last().unwrap());
    let addr = listening["fields"]["addr"].as_str().unwrap().to_owned();

    // A wrong token: the broker logs the failed authentication to `quiver::audit`.
    let refused = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["whoami", "--token", "not-a-token"])
        .env("QUIVER_SERVER", &addr)
        .env("QUIVER_CA", data.join("tls/ca.pem"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    read_until(&rx, &mut seen, |l| l.contains("quiver::audit"));

    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    assert!(serve.wait().unwrap().success());
    // The threads end at EOF, and with them every sender but ours.
    drop(tx);
    seen.extend(rx.iter());

    for line in &seen {
        let v = json(line);
        for field in ["timestamp", "level", "target"] {
            assert!(v[field].is_string(), "no {field}: {line}");
        }
        assert!(v["fields"]["message"].is_string(), "no message: {line}");
    }
    let audit = seen
        .iter()
        .map(|l| json(l))
        .find(|v| v["target"] == "quiver::audit")
        .unwrap();
    assert_eq!(audit["level"], "WARN");
    assert_eq!(audit["fields"]["message"], "authentication failed");
    assert!(seen.iter().any(|l| l.contains("shutdown complete")));
}
