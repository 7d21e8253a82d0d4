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

/// Markup that runs script if a page inserts it as HTML (the browser test checks it never does).
const XSS: &str = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>";

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
    // Markup where a client controls the text: the page must show it as text, never run it.
    ok(
        &serve,
        d,
        &["exchange", "create", "hostile", "--kind", "direct"],
        "",
    );
    ok(
        &serve,
        d,
        &["exchange", "bind", "hostile", "orders", "--key", XSS],
        "",
    );
    ok(
        &serve,
        d,
        &["exchange", "create", "hostile-headers", "--kind", "headers"],
        "",
    );
    let header = format!("h={XSS}");
    ok(
        &serve,
        d,
        &[
            "exchange",
            "bind",
            "hostile-headers",
            "orders",
            "--header",
            &header,
        ],
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
        "--hostile",
        XSS,
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
    let (status, _, body) = raw(addr, method, path, "localhost", headers, body);
    (status, body)
}

/// One HTTP/1.1 request naming `host`; returns (status, head, body). The path is sent as is,
/// unnormalised, the way an attacker's client would.
fn raw(
    addr: &str,
    method: &str,
    path: &str,
    host: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    // A refused body may be answered before it is all read: a failed write is fine.
    let _ = s.write_all(body);
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_owned())
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
    // Nothing to sign in to: no cookie, whatever the form says.
    let (status, head, _) = raw(&serve.http, "POST", "/login", "localhost", "", b"token=abc");
    assert_eq!(status, 303, "{head}");
    assert!(!head.contains("set-cookie"), "{head}");
}

/// A broker with authentication on and the admin's token.
fn with_auth(d: &Path) -> (Serve, String) {
    let serve = Serve::start_with(d, &["--auth"]);
    let admin = std::fs::read_to_string(d.join("data/admin.token")).unwrap();
    (serve, admin.trim().to_owned())
}

/// Whether an answer's head carries the console's hardening headers.
fn hardened(head: &str) -> bool {
    head.contains("content-security-policy: default-src 'none'; script-src 'self'")
        && head.contains("frame-ancestors 'none'")
        && head.contains("x-content-type-options: nosniff")
        && head.contains("x-frame-options: deny")
}

#[test]
fn no_path_spelling_or_method_gets_past_the_guard() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, _) = with_auth(dir.path());
    let tricks = [
        "/assets/../api/topics",
        "/assets/..%2fapi%2ftopics",
        "/assets/%2e%2e/api/topics",
        "//api/topics",
        "/api//topics",
        "/api/topics/",
        "/api%2ftopics",
        "/%61pi/topics",
        "/API/topics",
        "/login/../api/topics",
        "/./api/topics",
        "/api/topics;/login",
        "/api/topics?/login",
        "/login?x=/api/topics",
        "/api/session#/login",
        "http://127.0.0.1/api/topics",
        "/metrics/",
        "/assets/app.js/../../metrics",
    ];
    for path in tricks {
        for method in ["GET", "HEAD", "OPTIONS", "POST", "DELETE", "PUT"] {
            let (status, _, body) = raw(&serve.http, method, path, "localhost", "", b"");
            let leaked = body.contains("\"items\"") || body.contains("quiver_");
            assert!(
                !(200..300).contains(&status) || path.starts_with("/login?"),
                "{method} {path}: {status} {body}"
            );
            assert!(!leaked, "{method} {path}: {body}");
        }
    }
    for method in ["GET", "HEAD"] {
        let (status, head, _) = raw(&serve.http, method, "/api/topics", "localhost", "", b"");
        assert_eq!(status, 401, "{method} without a token");
        assert!(hardened(&head), "{head}");
    }
    // The 401 page a browser gets is a page: it carries the policy too.
    let html = "Accept: text/html\r\n";
    let (status, head, body) = raw(&serve.http, "GET", "/", "localhost", html, b"");
    assert_eq!(status, 401);
    assert!(hardened(&head) && body.contains("/login"), "{head}");
}

#[test]
fn the_bearer_header_wins_and_a_deleted_users_cookie_stops_working() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (serve, admin) = with_auth(d);
    let as_admin = |args: &[&str]| {
        let all: Vec<&str> = args.iter().copied().chain(["--token", &admin]).collect();
        ok(&serve, d, &all, "")
    };
    let viewer = as_admin(&["user", "create", "viewer"]);
    let viewer = viewer.trim();
    as_admin(&[
        "acl",
        "add",
        "--principal",
        "viewer",
        "--cluster",
        "--op",
        "describe",
    ]);
    let cookie = format!("Cookie: quiver_session={viewer}\r\n");
    assert_eq!(
        http(&serve.http, "GET", "/api/session", &cookie, b"").0,
        200
    );
    // A wrong bearer is not rescued by a good cookie: one token is checked, the bearer.
    let both = format!("Authorization: Bearer qvt_00_wrong\r\n{cookie}");
    assert_eq!(http(&serve.http, "GET", "/api/session", &both, b"").0, 401);
    // Refused tokens of every kind get the same answer: nothing says whether the user exists.
    let (_, wrong) = http(&serve.http, "GET", "/api/session", &both, b"");
    let (_, none) = http(&serve.http, "GET", "/api/session", "", b"");
    assert_eq!(wrong, none);
    as_admin(&["user", "delete", "viewer"]);
    assert_eq!(
        http(&serve.http, "GET", "/api/session", &cookie, b"").0,
        401
    );
}

#[test]
fn sign_in_sign_out_and_actions_refuse_other_sites() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, admin) = with_auth(dir.path());
    let host = serve.http.clone();
    let form = format!("token={admin}");
    let evil = "Origin: http://evil.example\r\n";
    let cross = "Sec-Fetch-Site: cross-site\r\nOrigin: http://evil.example\r\n";
    let same_site = "Sec-Fetch-Site: same-site\r\n";
    // Login CSRF: another site's form posting the attacker's token gets no cookie.
    for forged in [evil, cross, same_site, "Origin: null\r\n"] {
        let (status, head, _) = raw(&host, "POST", "/login", &host, forged, form.as_bytes());
        assert_eq!(status, 403, "{forged:?}");
        assert!(!head.contains("set-cookie"), "{head}");
        let (status, head, _) = raw(&host, "POST", "/logout", &host, forged, b"");
        assert_eq!(status, 403, "{forged:?}");
        assert!(!head.contains("set-cookie"), "{head}");
    }
    // The sign-in page itself, as a browser sends it.
    let own = format!("Origin: http://{host}\r\nSec-Fetch-Site: same-origin\r\n");
    let (status, head, _) = raw(&host, "POST", "/login", &host, &own, form.as_bytes());
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .unwrap_or_default();
    for attribute in ["httponly", "samesite=strict", "path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let (status, head, _) = raw(&host, "POST", "/logout", &host, &own, b"");
    assert_eq!(status, 303);
    assert!(head.contains("max-age=0"), "{head}");

    // Actions: the admin's own token, sent by another site's page, is refused.
    let bearer = format!("Authorization: Bearer {admin}\r\nX-Quiver-Console: 1\r\n");
    let create = br#"{"name":"forged","partitions":1}"#;
    let forged = format!("{bearer}{cross}");
    let (status, _, body) = raw(&host, "POST", "/api/topics", &host, &forged, create);
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = raw(&host, "DELETE", "/api/topics/x", &host, &forged, b"");
    assert_eq!(status, 403, "{body}");
    let mine = format!("{bearer}{own}");
    let (status, _, body) = raw(&host, "POST", "/api/topics", &host, &mine, create);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn hostile_input_is_refused_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let (serve, admin) = with_auth(dir.path());
    let bearer = format!("Authorization: Bearer {admin}\r\n");
    let get = |path: &str| http(&serve.http, "GET", path, &bearer, b"");
    assert_eq!(
        get("/api/topics?offset=18446744073709551615&limit=18446744073709551615").0,
        200
    );
    assert_eq!(get("/api/groups?offset=99999999999999999999999").0, 400);
    assert_eq!(get("/api/plugins?limit=-1").0, 400);
    assert_eq!(get("/api/exchanges?offset=%ff%fe&limit=%00").0, 400);
    assert_eq!(get("/api/topics?offset&limit=&=&&%").0, 400);
    let action = format!("{bearer}X-Quiver-Console: 1\r\n");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for body in [
        deep.as_bytes(),
        b"\xff\xfe\x00",
        br#"{"name":"a","partitions":-1}"#,
        br#"{"name":"a","partitions":99999999999}"#,
        br#"{"name":"a","partitions":4294967295}"#,
        br#"{"name":"","partitions":1}"#,
        br#"{"name":"../x"}"#,
        br#"{"name":"a","extra":1}"#,
    ] {
        let (status, text) = http(&serve.http, "POST", "/api/topics", &action, body);
        assert!((400..500).contains(&status), "{status} {text}");
    }
    let long = format!("/api/topics/{}", "a".repeat(8_000));
    for path in [
        "/api/topics/%ff",
        "/api/topics/%",
        "/api/topics/..",
        long.as_str(),
    ] {
        let status = http(&serve.http, "DELETE", path, &action, b"").0;
        assert!((400..500).contains(&status), "DELETE {path}: {status}");
    }
    // Still serving.
    assert_eq!(get("/api/session").0, 200);
}

#[test]
fn without_authentication_the_console_answers_only_local_names() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    let port = serve.http.rsplit(':').next().unwrap().to_owned();
    let get =
        |path: &str, host: &str, headers: &str| raw(&serve.http, "GET", path, host, headers, b"").0;
    // DNS rebinding: a page at evil.example:PORT, its name now pointing at 127.0.0.1.
    let rebound = format!("evil.example:{port}");
    let browser = "Sec-Fetch-Site: same-origin\r\n";
    for path in ["/", "/api/topics", "/api/session"] {
        assert_eq!(get(path, &rebound, ""), 403, "{path}");
        assert_eq!(get(path, &rebound, browser), 403, "{path}");
        for local in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            "[::1]".into(),
        ] {
            assert_eq!(get(path, &local, browser), 200, "{path} at {local}");
        }
    }
    assert_eq!(
        get("/metrics", &rebound, browser),
        403,
        "a browser reading metrics"
    );
    // A scraper or probe (no browser headers) may use any name.
    assert_eq!(get("/metrics", &rebound, ""), 200);
    assert_eq!(get("/readyz", "quiver.internal", ""), 200);
}
