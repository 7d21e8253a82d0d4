//! The five-minute plugin paths of docs/plugins.md, run literally: each `sh` block under a
//! `five-minute path: LANG KIND` marker runs with bash, as written, in an empty directory with the
//! `quiver` under test first on the PATH and a real `quiver serve` with its data in ./quiver-data
//! (named by QUIVER_SERVER only, its port being free rather than the default; the client commands
//! find its CA as the doc's reader's do), and its output must end with the `text` block
//! that follows it. new -> build -> test -> deploy -> attach -> produce -> consume, for Python,
//! JavaScript and Rust, filter and transform; then each project's own unit test as its README says.
//!
//! The language tools are the user's: componentize-py is installed by `plugin build` into the
//! cache (~/.cache/quiver/tools, once per machine), componentize-js by `npm install`, Rust's
//! wasm32-wasip2 target by rustup. The Rust projects share one CARGO_TARGET_DIR under target/
//! (which `plugin build` honours, as cargo does) so the second does not compile the SDK again.
//! A language whose toolchain is missing (node, python3-venv) is skipped, saying so.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::serve::Serve;

/// One path of the doc: its commands and the lines their output must end with.
struct DocPath {
    kind: String,
    script: String,
    expected: Vec<String>,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The doc's paths for one language, in the order they appear.
fn doc_paths(lang: &str) -> Vec<DocPath> {
    let doc = std::fs::read_to_string(repo().join("docs/plugins.md")).unwrap();
    let marker = format!("<!-- five-minute path: {lang} ");
    let mut paths = Vec::new();
    for chunk in doc.split(&marker).skip(1) {
        let kind = chunk.split_whitespace().next().unwrap().to_owned();
        let script = fenced(chunk, "```sh\n");
        let expected = fenced(&chunk[chunk.find("```text\n").unwrap()..], "```text\n");
        paths.push(DocPath {
            kind,
            script,
            expected: expected.lines().map(str::to_owned).collect(),
        });
    }
    paths
}

/// The body of the first fenced block that opens with `open` in `text`.
fn fenced(text: &str, open: &str) -> String {
    let start = text.find(open).expect("a fenced block") + open.len();
    let len = text[start..].find("```").expect("a closed block");
    text[start..start + len].to_owned()
}

fn has(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs every path of `lang` in one fresh directory against one broker, then the unit test of
/// each project it made.
fn follow(lang: &str, unit_test: &[&str]) {
    let paths = doc_paths(lang);
    let kinds: Vec<&str> = paths.iter().map(|p| p.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["filter", "transform"],
        "docs/plugins.md paths for {lang}"
    );
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    // The broker's data in ./quiver-data of the working directory, as after the README's first
    // command there: the client commands find its CA by default. Only the port differs.
    let broker = Serve::start_in(&work.join("quiver-data"), &[]);
    let bin = Path::new(env!("CARGO_BIN_EXE_quiver")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for doc in &paths {
        let started = std::time::Instant::now();
        let out = Command::new("bash")
            .args(["-euo", "pipefail", "-c", &doc.script])
            .current_dir(&work)
            .env("PATH", &path)
            .env("QUIVER_SERVER", &broker.addr)
            .env_remove("QUIVER_CA")
            .env("CARGO_TARGET_DIR", repo().join("target/plugin-paths"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{lang} {}: the doc's block failed\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            doc.kind
        );
        let lines: Vec<&str> = stdout.lines().collect();
        let tail = &lines[lines.len().saturating_sub(doc.expected.len())..];
        assert_eq!(tail, doc.expected, "{lang} {}: output\n{stdout}", doc.kind);
        // The component was tested against its sample before deploy: that step's report is there.
        assert!(
            stdout.contains("failed batches"),
            "{lang} {}: {stdout}",
            doc.kind
        );
        eprintln!(
            "{lang} {}: {:.1} s",
            doc.kind,
            started.elapsed().as_secs_f64()
        );
    }
    for project in ["vip-only", "shout"] {
        let out = Command::new(unit_test[0])
            .args(&unit_test[1..])
            .current_dir(work.join(project))
            .env(
                "CARGO_TARGET_DIR",
                repo().join("target/plugin-paths-native"),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{lang} {project}: the unit test failed\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn python_paths_from_new_to_consume() {
    // Debian's python3 runs `-m venv` without python3-venv but cannot make a venv with pip:
    // ensurepip is what is missing then.
    let can_venv = Command::new("python3")
        .args(["-c", "import ensurepip, venv"])
        .status()
        .is_ok_and(|s| s.success());
    if !can_venv {
        eprintln!(
            "skipped: python3 with its venv module is not installed (scripts/test.sh installs it)"
        );
        return;
    }
    follow("python", &["python3", "-m", "unittest"]);
}

#[test]
fn javascript_paths_from_new_to_consume() {
    if !has("node") || !has("npm") {
        eprintln!("skipped: node and npm are not installed (scripts/test.sh installs them)");
        return;
    }
    follow("js", &["npm", "test"]);
}

#[test]
fn rust_paths_from_new_to_consume() {
    follow("rust", &["cargo", "test", "-q"]);
}
