//! Progress bars of `quiver produce` and `quiver consume --count`: piped, not a byte of bar
//! reaches stderr or stdout and the output is what scripts read; on a terminal (a pty from
//! `script`, when the machine has it) the bar is drawn and the records still come through.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::serve::Serve;

fn lines(n: usize) -> String {
    (0..n).map(|i| format!("record {i}\n")).collect()
}

fn assert_quiet_success(out: &std::process::Output, what: &str) {
    assert!(out.status.success(), "{what}: {out:?}");
    assert!(
        out.stderr.is_empty(),
        "{what} wrote to a piped stderr: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn quiver(serve: &Serve, dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
    cmd.env("QUIVER_SERVER", &serve.addr)
        .env("QUIVER_CA", dir.join("data/tls/ca.pem"));
    cmd
}

#[test]
fn piped_produce_and_consume_draw_no_bar_and_print_exactly_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start(d);
    assert_quiet_success(&serve.cli(d, &["topic", "create", "bulk"], ""), "create");
    let input = lines(3000);

    // From a pipe: stdout and stderr stay empty.
    let out = serve.cli(d, &["produce", "bulk"], &input);
    assert_quiet_success(&out, "produce from a pipe");
    assert!(out.stdout.is_empty(), "{out:?}");

    // From a file (the case with a known size): the same.
    let file = d.join("input.txt");
    std::fs::write(&file, &input).unwrap();
    let out = quiver(&serve, d)
        .args(["produce", "bulk"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    assert_quiet_success(&out, "produce from a file");
    assert!(out.stdout.is_empty(), "{out:?}");

    // Consume --count: exactly the values, one per line, as before progress bars existed.
    let out = serve.cli(d, &["consume", "bulk", "--count", "6000"], "");
    assert_quiet_success(&out, "consume --count");
    assert_eq!(String::from_utf8(out.stdout).unwrap(), input.repeat(2));

    // JSON output is untouched as well.
    let out = serve.cli(
        d,
        &["consume", "bulk", "--count", "2", "--format", "json"],
        "",
    );
    assert_quiet_success(&out, "consume --format json");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.starts_with("{\""), "{text}");
}

#[test]
fn on_a_terminal_consume_draws_a_bar_and_still_prints_the_records() {
    if Command::new("script")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("skipped: no `script` to give the command a terminal");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let serve = Serve::start(d);
    assert_quiet_success(&serve.cli(d, &["topic", "create", "tty"], ""), "create");
    assert_quiet_success(&serve.cli(d, &["produce", "tty"], &lines(500)), "produce");
    let command = format!("{} consume tty --count 500", env!("CARGO_BIN_EXE_quiver"));
    // `script` runs the command on a pty: stdout and stderr are both that terminal.
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("QUIVER_SERVER", &serve.addr)
        .env("QUIVER_CA", d.join("data/tls/ca.pem"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(screen.contains("record 0\r\n"), "{screen}");
    assert!(screen.contains("record 499\r\n"), "{screen}");
    // The bar's first frame is drawn as soon as records arrive.
    assert!(screen.contains("/500 records"), "{screen}");
}
