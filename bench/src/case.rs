//! A case: one workload with its parameters, run once per system; its title, durability class,
//! record size and batch. `filter`, `group`, `rebalance` and `queue` run on Quiver alone
//! ([`Case::quiver_only`]).

use std::path::PathBuf;

use serde::Serialize;

use crate::durability::Durability;
use crate::shapes::{GroupShape, QueueShape, RebalanceShape};

/// One workload with its parameters; run once per system.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "workload", rename_all = "lowercase")]
pub enum Case {
    Produce {
        producers: usize,
        size: usize,
        batch: usize,
        durability: &'static str,
        /// Batches go to the partitions in turn.
        partitions: u32,
        /// Connections opened first and held, unused, through the run.
        idle: usize,
    },
    Consume {
        records: u64,
        size: usize,
        batch: usize,
        /// Each reads every record (fan-out); the throughput counts all of them.
        consumers: usize,
    },
    E2e {
        rate: u64,
        size: usize,
        durability: &'static str,
        idle: usize,
    },
    Filter {
        records: u64,
        size: usize,
        batch: usize,
        /// The tag-filter component.
        wasm: PathBuf,
    },
    Group(GroupShape),
    Rebalance(RebalanceShape),
    Queue(QueueShape),
}

impl Case {
    pub fn workload(&self) -> &'static str {
        match self {
            Case::Produce { .. } => "produce",
            Case::Consume { .. } => "consume",
            Case::E2e { .. } => "e2e",
            Case::Filter { .. } => "filter",
            Case::Group(_) => "group",
            Case::Rebalance(_) => "rebalance",
            Case::Queue(_) => "queue",
        }
    }

    /// Workloads of Quiver features the peers have no comparable setup for here.
    pub fn quiver_only(&self) -> bool {
        !matches!(
            self,
            Case::Produce { .. } | Case::Consume { .. } | Case::E2e { .. }
        )
    }

    pub fn durability(&self) -> Durability {
        let name = match self {
            Case::Produce { durability, .. } | Case::E2e { durability, .. } => durability,
            _ => return Durability::NoneFsync,
        };
        if *name == Durability::FsyncPerBatch.name() {
            Durability::FsyncPerBatch
        } else {
            Durability::NoneFsync
        }
    }

    /// Partitions of the topic the drivers create (the group and queue workloads make their own).
    pub fn partitions(&self) -> u32 {
        match self {
            Case::Produce { partitions, .. } => *partitions,
            _ => 1,
        }
    }

    /// Idle connections held through the run.
    pub fn idle(&self) -> usize {
        match self {
            Case::Produce { idle, .. } | Case::E2e { idle, .. } => *idle,
            _ => 0,
        }
    }

    pub fn size(&self) -> usize {
        match self {
            Case::Produce { size, .. }
            | Case::Consume { size, .. }
            | Case::E2e { size, .. }
            | Case::Filter { size, .. } => *size,
            Case::Group(g) => g.size,
            Case::Queue(q) => q.size,
            Case::Rebalance(_) => REBALANCE_SIZE,
        }
    }

    pub fn batch(&self) -> usize {
        match self {
            Case::Produce { batch, .. }
            | Case::Consume { batch, .. }
            | Case::Filter { batch, .. } => *batch,
            Case::Group(g) => g.batch,
            Case::Queue(q) => q.batch,
            Case::Rebalance(_) => 1,
            // Latency runs send what is due each millisecond; the batch is only a ceiling.
            Case::E2e { .. } => E2E_MAX_BATCH as usize,
        }
    }

    /// A one-line title, also the key that `summarize` groups runs by.
    pub fn title(&self) -> String {
        match self {
            Case::Produce {
                producers,
                size,
                batch,
                durability,
                partitions,
                idle,
            } => {
                let spread = match partitions {
                    1 => String::new(),
                    p => format!(", {p} partitions"),
                };
                format!(
                    "produce {size} B, {producers} producer(s), batch {batch}, {durability}{spread}{}",
                    idle_suffix(*idle)
                )
            }
            Case::Consume {
                records,
                size,
                batch,
                consumers,
            } => {
                let fan_out = match consumers {
                    1 => String::new(),
                    c => format!(", {c} consumers each reading all"),
                };
                format!("consume {records} × {size} B from the start, batch {batch}{fan_out}")
            }
            Case::E2e {
                rate,
                size,
                durability,
                idle,
            } => format!(
                "e2e {rate} rec/s offered, {size} B, {durability}{}",
                idle_suffix(*idle)
            ),
            Case::Filter {
                records,
                size,
                batch,
                wasm,
            } => {
                let plugin = wasm.file_stem().unwrap_or_default().to_string_lossy();
                format!(
                    "filter {records} × {size} B (half tagged a) from the start, batch {batch}: \
                     native tag:a vs wasm {plugin} tags=a"
                )
            }
            Case::Group(g) => g.title(),
            Case::Rebalance(r) => r.title(),
            Case::Queue(q) => q.title(),
        }
    }
}

fn idle_suffix(idle: usize) -> String {
    match idle {
        0 => String::new(),
        n => format!(", +{n} idle connections"),
    }
}

/// Rebalance runs carry no records; their size only sizes the producer's batch.
const REBALANCE_SIZE: usize = 100;

/// The most records one `e2e` send carries (the drivers' batch setting in latency runs).
pub const E2E_MAX_BATCH: u64 = 1000;
