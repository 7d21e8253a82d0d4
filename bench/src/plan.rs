//! A plan: the cases to run, the systems to run each on, and the settings every run shares (duration,
//! window, work dir, payload cap, time budget). `cli/plan.rs` builds it from the command line.

use std::path::PathBuf;
use std::time::Duration;

use crate::case::Case;
use crate::system::System;

/// Everything a run needs besides the system.
#[derive(Debug, Clone)]
pub struct Plan {
    pub cases: Vec<Case>,
    pub systems: Vec<System>,
    pub duration: Duration,
    pub window: usize,
    pub work_dir: PathBuf,
    /// MiB that `dd` writes for the raw-disk figure.
    pub disk_mib: u32,
    /// Upper bound of one produce run's payload, whatever the duration (Redis keeps it all in RAM).
    pub max_bytes: u64,
    /// Time a run may take beyond its measured duration (pre-fill, flush, drain, read-back).
    pub slack: Duration,
    /// Workloads that cannot run yet, with the reason (printed, never measured).
    pub unavailable: Vec<(&'static str, &'static str)>,
    /// Quiver producers are idempotent.
    pub idempotent: bool,
    /// Quiver runs with authentication and ACL checks on.
    pub auth: bool,
    /// Quiver serves `/metrics`, scraped every second.
    pub metrics: bool,
}
