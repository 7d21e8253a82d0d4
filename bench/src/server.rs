//! Server processes the harness starts and stops: free loopback ports, spawning with the output in
//! a log file, waiting (bounded) for readiness, peak RSS from `/proc/<pid>/status` (VmHWM, which
//! `clear_refs` can restart), and a stop that always ends the process (SIGTERM, then SIGKILL after
//! a grace period). The child dies with the harness too (parent-death signal), so a killed run
//! leaves no server behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;
use tokio::process::{Child, Command};

/// How long a server may take to accept connections.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopped server may take: more than the broker's shutdown grace (10 s) plus its
/// flush, so a graceful stop is not cut short into a crash.
const STOP_GRACE: Duration = Duration::from_secs(30);

pub struct ServerProcess {
    name: &'static str,
    child: Child,
    pid: u32,
    log: PathBuf,
    /// The run's data; removed when the process has stopped.
    dir: TempDir,
}

impl ServerProcess {
    /// Spawns `cmd` with stdout/stderr appended to `<dir>/server.log` unless the caller piped them.
    pub fn spawn(name: &'static str, mut cmd: Command, dir: TempDir) -> Result<ServerProcess> {
        let log = dir.path().join("server.log");
        let file = std::fs::File::create(&log).with_context(|| format!("creating {log:?}"))?;
        cmd.stderr(file.try_clone()?)
            .kill_on_drop(true)
            .stdin(Stdio::null());
        if !matches!(name, "quiver") {
            cmd.stdout(file);
        }
        die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting the {name} server (is it installed?)"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        Ok(ServerProcess {
            name,
            child,
            pid,
            log,
            dir,
        })
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Peak resident set size of the server so far, in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// Open file descriptors of the server now (Linux).
    pub fn open_fds(&self) -> Option<usize> {
        Some(
            std::fs::read_dir(format!("/proc/{}/fd", self.pid))
                .ok()?
                .count(),
        )
    }

    /// SIGKILL: no shutdown at all (a crash); the log dir is removed afterwards.
    pub async fn kill(mut self) -> Result<()> {
        self.child.kill().await?;
        let dir = self.dir.path().to_owned();
        self.dir
            .close()
            .with_context(|| format!("removing {dir:?}"))
    }

    /// Resident set size of the server now, in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Restarts the peak RSS from the current RSS (writing 5 to `/proc/<pid>/clear_refs`, Linux
    /// ≥ 4.0), so that a later reading covers only what ran since; false if it could not.
    pub fn reset_peak_rss(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid), "5").is_ok()
    }

    /// The last lines of the server's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Fails with the log tail if the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited ({status}):\n{}", self.name, self.log_tail());
        }
        Ok(())
    }

    /// SIGTERM, wait up to the grace period, then SIGKILL; the data dir is removed afterwards.
    pub async fn stop(mut self) -> Result<()> {
        if self.child.try_wait()?.is_none() {
            // SAFETY: kill(2) on our own child's pid; the child is not reaped yet, so the pid is ours.
            unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
            if tokio::time::timeout(STOP_GRACE, self.child.wait())
                .await
                .is_err()
            {
                self.child.kill().await?;
            }
        }
        let dir = self.dir.path().to_owned();
        self.dir
            .close()
            .with_context(|| format!("removing {dir:?}"))?;
        Ok(())
    }
}

/// Asks the kernel to SIGKILL the child if the harness dies first (Linux only; a no-op elsewhere).
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches only the child's own attributes.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A temp dir for one run's server data under `work_dir`.
pub fn run_dir(work_dir: &Path, system: &str) -> Result<TempDir> {
    std::fs::create_dir_all(work_dir).with_context(|| format!("creating {work_dir:?}"))?;
    tempfile::Builder::new()
        .prefix(&format!("quiver-bench-{system}-"))
        .tempdir_in(work_dir)
        .with_context(|| format!("creating a temp dir in {work_dir:?}"))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until 127.0.0.1:`port` accepts TCP connections, or the server dies, or the timeout passes.
pub async fn wait_for_tcp(server: &mut ServerProcess, port: u16) -> Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        server.check_alive()?;
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "{} did not listen on port {port} within {READY_TIMEOUT:?}:\n{}",
                server.name,
                server.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first line `program args` prints (its version), or why it could not run.
pub fn version_of(program: &str, args: &[&str]) -> String {
    match std::process::Command::new(program).args(args).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_owned(),
        Err(e) => format!("{program}: not runnable ({e})"),
    }
}
