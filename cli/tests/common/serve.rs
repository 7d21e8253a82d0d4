//! `quiver serve` as a child process on 127.0.0.1 port 0, for tests of the binary itself: the
//! command line, and crashes (dropping a `Serve` kills it with SIGKILL).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Serve {
    child: Child,
    /// Everything the broker logged so far (ANSI codes removed); kept by a test that wants
    /// to read what a stopped broker logged.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
    pub addr: String,
    /// The HTTP listener (`/metrics`, `/healthz`, `/readyz`), on a free port too.
    pub http: String,
}

impl Serve {
    /// Starts `quiver serve` on a free port with its data in `<dir>/data`.
    pub fn start(dir: &Path) -> Serve {
        Self::start_with(dir, &[])
    }

    /// Like `start`, with more `serve` flags.
    pub fn start_with(dir: &Path, flags: &[&str]) -> Serve {
        Self::start_in(&dir.join("data"), flags)
    }

    /// Like `start_with`, with the data directory itself named.
    pub fn start_in(data_dir: &Path, flags: &[&str]) -> Serve {
        Self::start_at(data_dir, "127.0.0.1:0", flags)
    }

    /// Like `start_in`, listening on `listen` (a broker restarted where its clients expect it).
    pub fn start_at(data_dir: &Path, listen: &str, flags: &[&str]) -> Serve {
        // QUIVER_TEST_BIN runs another build of `quiver` (a copy, so that a test binary can be
        // looped on a race while the tree is rebuilt).
        let bin = std::env::var("QUIVER_TEST_BIN").unwrap_or(env!("CARGO_BIN_EXE_quiver").into());
        let mut child = Command::new(bin)
            .args([
                "serve",
                "--listen",
                listen,
                "--http",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(data_dir)
            .args(flags)
            .env(
                "RUST_LOG",
                std::env::var("QUIVER_TEST_RUST_LOG").unwrap_or("info".into()),
            )
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // QUIVER_TEST_LOGS=FILE keeps every test broker's log there, prefixed by its PID, to see
        // what the brokers of a failed run did (QUIVER_TEST_RUST_LOG sets their RUST_LOG).
        let mut keep = std::env::var_os("QUIVER_TEST_LOGS").and_then(|f| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .ok()
        });
        let name = format!("{} {}", child.id(), data_dir.display());
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let log_in = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let line = strip_ansi(&line);
                if let Ok(mut l) = log_in.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
                if let Some(file) = keep.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(file, "[{name}] {line}");
                }
                for field in ["addr=", "http="] {
                    if let Some(value) = line.split(field).nth(1) {
                        let value = value.split_whitespace().next().unwrap_or_default();
                        let _ = tx.send((field, value.to_owned()));
                    }
                }
            }
        });
        let (mut addr, mut http) = (None, None);
        while addr.is_none() || http.is_none() {
            let Ok((field, value)) = rx.recv_timeout(Duration::from_secs(30)) else {
                // Say why: the broker's own words (it may have exited, e.g. a port taken).
                std::thread::sleep(Duration::from_millis(200));
                let said = log.lock().map(|l| l.clone()).unwrap_or_default();
                panic!("the broker did not print its addresses; its log:\n{said}");
            };
            match field {
                "addr=" => addr = Some(value),
                _ => http = Some(value),
            }
        }
        Serve {
            child,
            log,
            addr: addr.unwrap_or_default(),
            http: http.unwrap_or_default(),
        }
    }

    /// Runs a `quiver` client command against this broker (CA of `<dir>/data`).
    pub fn cli(&self, dir: &Path, args: &[&str], stdin: &str) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quiver"));
        cmd.args(args)
            .env("QUIVER_SERVER", &self.addr)
            .env("QUIVER_CA", dir.join("data/tls/ca.pem"));
        super::run_with_stdin(cmd, stdin)
    }

    /// Sends `signal` to the broker (SIGSTOP and SIGCONT make a node lag; SIGKILL crashes it).
    pub fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// What the broker has logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit (graceful shutdown).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "broker did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// SIGKILL: no flush, no shutdown (crash tests rely on it).
impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
