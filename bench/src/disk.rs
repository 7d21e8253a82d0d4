//! The raw-disk limit printed beside the results: `dd if=/dev/zero bs=1M count=N conv=fdatasync`
//! in the work dir (one fdatasync at the end), bounded in time, its file removed afterwards.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

const DD_TIMEOUT: Duration = Duration::from_secs(120);

/// Sequential write speed in MB/s (10^6 bytes per second).
pub async fn measure(work_dir: &Path, mib: u32) -> Result<f64> {
    std::fs::create_dir_all(work_dir)?;
    let file = work_dir.join(format!("quiver-bench-dd-{}", std::process::id()));
    let mut cmd = tokio::process::Command::new("dd");
    cmd.arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", &format!("count={mib}"), "conv=fdatasync"])
        .kill_on_drop(true);
    let out = tokio::time::timeout(DD_TIMEOUT, cmd.output()).await;
    let _ = std::fs::remove_file(&file);
    let out = out
        .map_err(|_| anyhow!("dd took more than {DD_TIMEOUT:?}"))?
        .context("running dd")?;
    if !out.status.success() {
        bail!("dd failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    parse_dd(&String::from_utf8_lossy(&out.stderr))
}

/// From dd's summary line `268435456 bytes (268 MB, 256 MiB) copied, 0.180 s, 1.5 GB/s`.
fn parse_dd(stderr: &str) -> Result<f64> {
    let line = stderr
        .lines()
        .find(|l| l.contains(" copied, "))
        .ok_or_else(|| anyhow!("no summary line in dd's output: {stderr:?}"))?;
    let bytes: f64 = line
        .split_whitespace()
        .next()
        .and_then(|b| b.parse().ok())
        .ok_or_else(|| anyhow!("no byte count in {line:?}"))?;
    let secs: f64 = line
        .split(" copied, ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.replace(',', ".").parse().ok())
        .ok_or_else(|| anyhow!("no duration in {line:?}"))?;
    Ok(bytes / secs.max(1e-9) / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gnu_dd_summary() {
        let out = "256+0 records in\n256+0 records out\n\
                   268435456 bytes (268 MB, 256 MiB) copied, 0.5 s, 537 MB/s\n";
        let mbs = parse_dd(out).expect("parsed");
        assert!((mbs - 536.87).abs() < 0.1, "{mbs}");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_dd("dd: error").is_err());
    }
}
