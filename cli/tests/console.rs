//! The web console in a real headless browser: Debian's `chromium` (installed here when missing,
//! never downloaded by playwright) driven by playwright from PyPI (`outside/console_test.py`),
//! against a real `quiver serve`. With authentication off the page shows what the command line
//! made and follows produce and consume live; with it on the listener is closed to strangers,
//! read-only for a describe-only viewer, writable for an admin. Screenshots of every page go to
//! `target/console-screenshots/`, and to `docs/console/` with `QUIVER_CONSOLE_SCREENSHOTS=1`. The
//! JSON API's bounds are checked over plain HTTP, without a browser.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::outside::{python, root};
use common::serve::Serve;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Whether chromium is there, installing it with apt-get when it is not (as root, or with sudo
/// that needs no password). `false` only when it cannot be installed for want of root.
fn chromium() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    let root = unsafe { libc::geteuid() } == 0;
    let sudo = !root
        && Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
    if !root && !sudo {
        return false;
    }
    let prefix: &[&str] = if root { &[] } else { &["sudo", "-n"] };
    for step in [
        &["apt-get", "update", "-qq"][..],
        &["apt-get", "install", "-y", "-qq", "chromium"],
    ] {
        let argv: Vec<&str> = prefix.iter().chain(step).copied().collect();
        let status = Command::new(argv[0]).args(&argv[1..]).status();
        assert!(status.is_ok_and(|s| s.success()), "{argv:?} failed");
    }
    assert!(
        Path::new(CHROMIUM).exists(),
        "apt-get installed no {CHROMIUM}"
    );
    true
}

/// Where screenshots go: always target/console-screenshots/, docs/console/ on request.
fn screenshot_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("target/console-screenshots")];
    if for_docs() {
        dirs.push(root().join("docs/console"));
    }
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }
    dirs
}

/// Screenshots for docs/console/ were asked for.
fn for_docs() -> bool {
    std::env::var("QUIVER_CONSOLE_SCREENSHOTS").is_ok_and(|v| v == "1")
}

/// Runs the browser script in `mode` and fails with its output if it fails.
fn browser(mode: &str, url: &str, args: &[&str]) {
    let mut cmd = Command::new(python());
    cmd.arg(root().join("cli/tests/outside/console_test.py"))
        .args([mode, url, "--shots"])
        .args(screenshot_dirs())
        .args(args);
    let out = cmd.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    println!("{stdout}");
    assert!(
        out.status.success(),
        "console_test.py {mode} failed:\n{stdout}\n{stderr}"
    );
}

/// A `quiver` command against `serve` that must succeed; its stdout.
fn ok(serve: &Serve, d: &Path, args: &[&str], stdin: &str) -> String {
    let out = serve.cli(d, args, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

macro_rules! need_chromium {
    () => {
        if !chromium() {
            println!("SKIPPED: {CHROMIUM} is missing and cannot be installed (not root, no sudo)");
            return;
        }
    };
}

#[test]
fn the_console_shows_the_broker_live_in_a_real_browser() {
    need_chromium!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start(d);
    ok(
        &serve,
        d,
        &["topic", "create", "orders", "--partitions", "3"],
        "",
    );
    let lines: String = (0..30).map(|i| format!("order-{i}\n")).collect();
    ok(&serve, d, &["produce", "orders"], &lines);
    ok(
        &serve,
        d,
        &["consume", "orders", "--group", "billing", "--count", "10"],
        "",
    );
    ok(
        &serve,
        d,
        &["consume", "orders", "--queue", "workers", "--count", "5"],
        "",
    );
    ok(
        &serve,
        d,
        &["exchange", "create", "routes", "--kind", "direct"],
        "",
    );
    ok(
        &serve,
        d,
        &["exchange", "bind", "routes", "orders", "--key", "eu"],
        "",
    );
    ok(&serve, d, &["topic", "create", "reminders"], "");
    ok(
        &serve,
        d,
        &["produce", "reminders", "--delay-ms", "3600000"],
        "call back\nrenew\n",
    );
    let mut extra = vec![];
    let wasm = root().join("target/plugins/json-mask.wasm");
    if wasm.exists() {
        let wasm = wasm.to_string_lossy().into_owned();
        ok(&serve, d, &["plugin", "deploy", "json-mask", &wasm], "");
        ok(&serve, d, &["topic", "create", "payments"], "");
        ok(
            &serve,
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
        );
        ok(
            &serve,
            d,
            &["produce", "payments"],
            "{\"card\":\"4111\",\"amount\":12}\n",
        );
        extra.extend(["--plugin", "json-mask"]);
    }
    let ca = d.join("data/tls/ca.pem");
    let url = format!("http://{}", serve.http);
    let mut args = vec![
        "--topic",
        "orders",
        "--group",
        "billing",
        "--queue",
        "workers",
        "--exchange",
        "routes",
        "--delayed",
        "reminders",
        "--quiver",
        env!("CARGO_BIN_EXE_quiver"),
        "--server",
        &serve.addr,
        "--ca",
        ca.to_str().unwrap(),
    ];
    args.extend(extra);
    if for_docs() {
        // Charts with some history in the pictures: the page keeps polling a while longer.
        args.extend(["--linger", "10"]);
    }
    browser("open", &url, &args);
}

#[test]
fn with_authentication_the_console_needs_a_token_and_only_admins_write() {
    need_chromium!();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start_with(d, &["--auth"]);
    let admin = std::fs::read_to_string(d.join("data/admin.token")).unwrap();
    let admin = admin.trim();
    let as_admin = |args: &[&str]| {
        let all: Vec<&str> = args.iter().copied().chain(["--token", admin]).collect();
        ok(&serve, d, &all, "")
    };
    let viewer = as_admin(&["user", "create", "viewer"]);
    let stranger = as_admin(&["user", "create", "stranger"]);
    as_admin(&[
        "acl",
        "add",
        "--principal",
        "viewer",
        "--cluster",
        "--op",
        "describe",
    ]);
    as_admin(&[
        "acl",
        "add",
        "--principal",
        "viewer",
        "--topic",
        "*",
        "--op",
        "describe",
    ]);
    as_admin(&["topic", "create", "orders"]);
    let url = format!("http://{}", serve.http);
    browser(
        "auth",
        &url,
        &[
            "--topic",
            "orders",
            "--admin",
            admin,
            "--viewer",
            viewer.trim(),
            "--stranger",
            stranger.trim(),
        ],
    );
}

/// One HTTP/1.1 request; returns (status, body).
fn http(addr: &str, method: &str, path: &str, headers: &str, body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A refused body may be answered before it is all read: a failed write is fine.
    let _ = s.write_all(body);
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[test]
fn the_api_is_paged_capped_and_read_only_without_authentication() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start(d);
    ok(
        &serve,
        d,
        &["topic", "create", "wide", "--partitions", "300"],
        "",
    );
    for t in ["a", "b", "c"] {
        ok(&serve, d, &["topic", "create", t], "");
    }
    let (status, body) = http(&serve.http, "GET", "/api/topics?limit=2", "", b"");
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["total"], 4);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let (_, body) = http(
        &serve.http,
        "GET",
        "/api/topics?offset=3&limit=100000",
        "",
        b"",
    );
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(page["limit"], 500, "the limit is capped");
    let wide = &page["items"][0];
    assert_eq!(wide["name"], "wide");
    assert_eq!(wide["partition_count"], 300);
    assert_eq!(wide["partitions"].as_array().unwrap().len(), 256);
    assert_eq!(
        http(&serve.http, "GET", "/api/topics?offset=x", "", b"").0,
        400
    );

    // Authentication off: read-only, whatever the request says.
    let action = "X-Quiver-Console: 1\r\n";
    let create = br#"{"name":"new","partitions":1}"#;
    let (status, body) = http(&serve.http, "POST", "/api/topics", action, create);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read-only"), "{body}");
    assert_eq!(
        http(&serve.http, "DELETE", "/api/topics/a", action, b"").0,
        403
    );
    let big = vec![b'x'; 64 * 1024];
    assert_eq!(
        http(&serve.http, "POST", "/api/topics", action, &big).0,
        413
    );
    let (status, session) = http(&serve.http, "GET", "/api/session", "", b"");
    assert_eq!(status, 200);
    assert!(
        session.contains(r#""auth":false"#) && session.contains(r#""admin":false"#),
        "{session}"
    );
}
