//! Turns the command line into a [`Plan`]: the list of cases (workload + parameters) to run on each
//! system, with the durations and sizes that `--smoke` shrinks. `all` is defined here.
//! `filter`, `group`, `rebalance` and `queue` run on Quiver alone ([`Case::quiver_only`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::case::Case;
use crate::cli::{
    Common, ConsumeArgs, E2eArgs, FilterArgs, GroupArgs, ProduceArgs, QueueArgs, RebalanceArgs,
};
use crate::durability::Durability;
use crate::plan::Plan;
use crate::shapes::{GroupShape, QueueShape, RebalanceShape};

impl Plan {
    fn base(common: &Common) -> Plan {
        let secs = common
            .duration_secs
            .unwrap_or(if common.smoke { 1.0 } else { 5.0 });
        let mut systems = common.systems.clone();
        systems.sort();
        systems.dedup();
        Plan {
            cases: Vec::new(),
            systems,
            duration: Duration::from_secs_f64(secs.clamp(0.1, 600.0)),
            window: common.window.max(1),
            work_dir: common.work_dir.clone().unwrap_or_else(std::env::temp_dir),
            disk_mib: if common.smoke { 16 } else { 256 },
            max_bytes: 4 << 30,
            slack: Duration::from_secs(if common.smoke { 30 } else { 180 }),
            unavailable: Vec::new(),
            idempotent: common.idempotent,
            auth: common.auth,
            metrics: common.metrics,
        }
    }

    pub fn produce(common: &Common, a: &ProduceArgs) -> Plan {
        let mut plan = Plan::base(common);
        for &size in &a.size {
            for &durability in &a.durability {
                for &producers in &a.producers {
                    for &partitions in &a.partitions {
                        for &idle in &a.idle_connections {
                            plan.cases.push(Case::Produce {
                                producers: producers.max(1),
                                size: size.max(1),
                                batch: a.batch.max(1),
                                durability: durability.name(),
                                partitions: partitions.max(1),
                                idle,
                            });
                        }
                    }
                }
            }
        }
        plan
    }

    pub fn consume(common: &Common, a: &ConsumeArgs) -> Plan {
        let mut plan = Plan::base(common);
        let default = if common.smoke { 20_000 } else { 1_000_000 };
        for &consumers in &a.consumers {
            plan.cases.push(Case::Consume {
                records: a.records.unwrap_or(default).max(1),
                size: a.size.max(1),
                batch: a.batch.max(1),
                consumers: consumers.max(1),
            });
        }
        plan
    }

    pub fn filter(common: &Common, a: &FilterArgs) -> Plan {
        let mut plan = Plan::base(common);
        let default = if common.smoke { 20_000 } else { 1_000_000 };
        plan.cases.push(Case::Filter {
            records: a.records.unwrap_or(default).max(1),
            size: a.size.max(1),
            batch: a.batch.max(1),
            wasm: a.wasm.clone().unwrap_or_else(default_wasm),
        });
        plan
    }

    pub fn group(common: &Common, a: &GroupArgs) -> Plan {
        let mut plan = Plan::base(common);
        let default = if common.smoke { 20_000 } else { 2_000_000 };
        plan.cases.push(Case::Group(GroupShape {
            records: a.records.unwrap_or(default).max(1),
            size: a.size.max(1),
            batch: a.batch.max(1),
            partitions: a.partitions.max(1),
            members: a.members.max(1),
        }));
        plan
    }

    pub fn rebalance(common: &Common, a: &RebalanceArgs) -> Plan {
        let mut plan = Plan::base(common);
        let (session, trials) = if common.smoke { (1000, 1) } else { (3000, 3) };
        plan.cases.push(Case::Rebalance(RebalanceShape {
            partitions: a.partitions.max(1),
            // One member goes and at least one stays.
            members: a.members.max(2),
            session_ms: a.session_ms.unwrap_or(session).max(1),
            trials: a.trials.unwrap_or(trials).max(1),
        }));
        plan
    }

    pub fn queue(common: &Common, a: &QueueArgs) -> Plan {
        let mut plan = Plan::base(common);
        let default = if common.smoke { 20_000 } else { 1_000_000 };
        for &partitions in &a.partitions {
            plan.cases.push(Case::Queue(QueueShape {
                records: a.records.unwrap_or(default).max(1),
                size: a.size.max(1),
                batch: a.batch.max(1),
                partitions: partitions.max(1),
                consumers: a.consumers.max(1),
            }));
        }
        plan
    }

    pub fn e2e(common: &Common, a: &E2eArgs) -> Plan {
        let mut plan = Plan::base(common);
        for &rate in &a.rate {
            for &idle in &a.idle_connections {
                plan.cases.push(Case::E2e {
                    rate: rate.max(1),
                    size: a.size.max(8),
                    durability: a.durability.name(),
                    idle,
                });
            }
        }
        plan
    }

    /// The set recorded in BENCHMARKS.md; `--smoke` keeps one of each path at tiny sizes.
    pub fn all(common: &Common) -> Plan {
        let (sizes, producers, rates): (&[usize], &[usize], &[u64]) = if common.smoke {
            (&[100], &[1], &[2_000])
        } else {
            (&[100, 1024], &[1, 4], &[10_000, 100_000])
        };
        let produce = ProduceArgs {
            producers: vec![1],
            size: sizes.to_vec(),
            batch: 1000,
            durability: vec![Durability::NoneFsync, Durability::FsyncPerBatch],
            partitions: vec![1],
            idle_connections: vec![0],
        };
        let mut plan = Plan::produce(common, &produce);
        for &p in producers.iter().filter(|&&p| p > 1) {
            plan.cases.push(Case::Produce {
                producers: p,
                size: 100,
                batch: 1000,
                durability: Durability::NoneFsync.name(),
                partitions: 1,
                idle: 0,
            });
        }
        let consume = ConsumeArgs {
            records: None,
            size: 100,
            batch: 1000,
            consumers: vec![1],
        };
        plan.cases.extend(Plan::consume(common, &consume).cases);
        let e2e = E2eArgs {
            rate: rates.to_vec(),
            size: 100,
            durability: Durability::NoneFsync,
            idle_connections: vec![0],
        };
        plan.cases.extend(Plan::e2e(common, &e2e).cases);
        let filter = FilterArgs {
            records: None,
            size: 100,
            batch: 1000,
            wasm: None,
        };
        plan.cases.extend(Plan::filter(common, &filter).cases);
        plan.cases.extend(Plan::groups(common).cases);
        plan
    }

    /// The scaling table of BENCHMARKS.md (`--smoke`: two small steps of each).
    pub fn scale(common: &Common) -> Plan {
        type Steps = (&'static [u32], &'static [usize], &'static [usize], usize);
        let (partitions, producers, consumers, idle): Steps = if common.smoke {
            (&[1, 10], &[1, 4], &[1, 4], 20)
        } else {
            (&[1, 10, 100, 1000], &[1, 4, 16], &[1, 4, 16], 1000)
        };
        let produce = |producers: &[usize], partitions: &[u32], idle: &[usize]| ProduceArgs {
            producers: producers.to_vec(),
            size: vec![100],
            batch: 1000,
            durability: vec![Durability::NoneFsync],
            partitions: partitions.to_vec(),
            idle_connections: idle.to_vec(),
        };
        let mut plan = Plan::produce(common, &produce(&[1], partitions, &[0]));
        let more_producers: Vec<usize> = producers.iter().copied().filter(|&p| p > 1).collect();
        let steps = [
            Plan::produce(common, &produce(&more_producers, &[1], &[0])),
            Plan::consume(
                common,
                &ConsumeArgs {
                    records: None,
                    size: 100,
                    batch: 1000,
                    consumers: consumers.to_vec(),
                },
            ),
            Plan::produce(common, &produce(&[1], &[1], &[idle])),
            Plan::e2e(
                common,
                &E2eArgs {
                    rate: vec![10_000],
                    size: 100,
                    durability: Durability::NoneFsync,
                    idle_connections: vec![0, idle],
                },
            ),
        ];
        for step in steps {
            plan.cases.extend(step.cases);
        }
        plan
    }

    /// The consumer-group and queue-mode part of `all`, at the defaults of their subcommands.
    fn groups(common: &Common) -> Plan {
        let mut plan = Plan::group(
            common,
            &GroupArgs {
                records: None,
                size: 100,
                batch: 1000,
                partitions: 6,
                members: 3,
            },
        );
        let rebalance = RebalanceArgs {
            partitions: 6,
            members: 3,
            session_ms: None,
            trials: None,
        };
        plan.cases.extend(Plan::rebalance(common, &rebalance).cases);
        let queue = QueueArgs {
            records: None,
            size: 100,
            batch: 1000,
            partitions: vec![4, 1],
            consumers: 4,
        };
        plan.cases.extend(Plan::queue(common, &queue).cases);
        plan
    }
}

/// `target/plugins/tag-filter.wasm` in the repository this harness was built from, where
/// `scripts/build-plugins.sh` puts it.
fn default_wasm() -> PathBuf {
    let bench = Path::new(env!("CARGO_MANIFEST_DIR"));
    bench
        .parent()
        .unwrap_or(bench)
        .join("target/plugins/tag-filter.wasm")
}
