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
    },
    Consume {
        records: u64,
        size: usize,
        batch: usize,
    },
    E2e {
        rate: u64,
        size: usize,
        durability: &'static str,
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
            } => format!("produce {size} B, {producers} producer(s), batch {batch}, {durability}"),
            Case::Consume {
                records,
                size,
                batch,
            } => format!("consume {records} × {size} B from the start, batch {batch}"),
            Case::E2e {
                rate,
                size,
                durability,
            } => format!("e2e {rate} rec/s offered, {size} B, {durability}"),
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

/// Rebalance runs carry no records; their size only sizes the producer's batch.
const REBALANCE_SIZE: usize = 100;

/// The most records one `e2e` send carries (the drivers' batch setting in latency runs).
pub const E2E_MAX_BATCH: u64 = 1000;
