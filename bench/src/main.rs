//! quiver-bench: runs the same workloads against Quiver, NATS JetStream, Redis Streams and a no-op
//! ceiling on this machine, prints a table per case with Quiver's ratio to each peer, the machine
//! line and the raw-disk limit, and optionally writes JSON; Quiver-only workloads (read filters,
//! consumer groups, rebalances, queue mode) measure Quiver against the issue's targets. See
//! BENCHMARKS.md.
//!
//! Modules, top to bottom; arrows point down, no module imports one that imports it back:
//!
//! ```text
//! main.rs          parse, plan, run every case on every system, print, write JSON
//! cli/             the command line (mod.rs) and the plan it asks for (plan.rs, with `all`)
//! summary.rs       `summarize`: several JSON files → Markdown
//! mirror.rs        `mirror`: edge mirroring between two broker processes (Quiver only)
//! startup.rs       `startup`: time to listening and memory with a large log (Quiver only)
//! report.rs        header, tables, JSON; report_groups.rs (group, rebalance, queue tables);
//!                  cells.rs (a not-ok row, peak RSS)
//! runner.rs        one case on one system → RunResult rows
//! workloads/       mod.rs hands a case to its workload; produce, consume, e2e, filter, group,
//!                  rebalance, queue; measured.rs (Measured, Latency), values.rs
//! cluster.rs       `cluster`: three real nodes, replication factor 3 against 1, failover time
//! drivers/         mod.rs: the Driver trait; quiver, nats, redis, noop; with server.rs (starting
//!                  and stopping server processes) and serve.rs (`internal-serve`, Quiver's process)
//! data, helpers    plan.rs (Plan), case.rs (Case), shapes.rs, system.rs, durability.rs;
//!                  numbers.rs, machine.rs, disk.rs, progress.rs
//! ```

mod case;
mod cells;
mod cli;
mod cluster;
mod disk;
mod drivers;
mod durability;
mod machine;
mod mirror;
mod numbers;
mod plan;
mod progress;
mod report;
mod report_groups;
mod runner;
mod serve;
mod server;
mod shapes;
mod startup;
mod summary;
mod system;
mod workloads;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::{Cli, Command};
use crate::drivers::quiver::QuiverDriver;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::report::Report;
use crate::system::System;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let plan = match &cli.command {
        Command::Summarize { files } => return exit(summary::run(files).map(|()| true)),
        Command::InternalServe { .. } => None,
        Command::Produce(a) => Some(Plan::produce(&cli.common, a)),
        Command::Consume(a) => Some(Plan::consume(&cli.common, a)),
        Command::E2e(a) => Some(Plan::e2e(&cli.common, a)),
        Command::Filter(a) => Some(Plan::filter(&cli.common, a)),
        Command::Group(a) => Some(Plan::group(&cli.common, a)),
        Command::Rebalance(a) => Some(Plan::rebalance(&cli.common, a)),
        Command::Queue(a) => Some(Plan::queue(&cli.common, a)),
        Command::All => Some(Plan::all(&cli.common)),
        Command::Scale => Some(Plan::scale(&cli.common)),
        Command::Mirror(_) | Command::Startup(_) | Command::Cluster(_) => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return exit(Err(e.into())),
    };
    let result = runtime.block_on(async {
        match (plan, &cli.command) {
            (Some(plan), _) => tokio::select! {
                r = bench(plan, cli.common.json.as_deref()) => r,
                // Dropping the run kills its server and removes its temp dir.
                s = interrupted() => Err(anyhow::anyhow!("interrupted by {s}; run abandoned")),
            },
            (
                None,
                Command::InternalServe {
                    data_dir,
                    listen,
                    auth,
                    metrics,
                },
            ) => serve::run(data_dir, *listen, *auth, *metrics)
                .await
                .map(|()| true),
            (None, Command::Mirror(a)) => mirror::run(&cli.common, a).await,
            (None, Command::Startup(a)) => startup::run(&cli.common, a).await,
            (None, Command::Cluster(a)) => cluster::run(&cli.common, a).await,
            (None, _) => Ok(true),
        }
    });
    exit(result)
}

/// Resolves on SIGINT or SIGTERM, naming it.
async fn interrupted() -> &'static str {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// Success only if every run that should have run did.
fn exit(result: Result<bool>) -> ExitCode {
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("error: some runs failed (see the tables)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(plan: Plan, json: Option<&std::path::Path>) -> Result<bool> {
    quiver_broker::transport::tls::install_crypto_provider();
    let mut report = Report {
        date: machine::now_utc(),
        machine: machine::Machine::read(),
        disk_mb_per_s: disk::measure(&plan.work_dir, plan.disk_mib)
            .await
            .map_err(|e| format!("{e:#}")),
        disk_mib: plan.disk_mib,
        versions: BTreeMap::new(),
        settings: BTreeMap::new(),
        results: Vec::new(),
        unavailable: plan
            .unavailable
            .iter()
            .map(|(w, r)| (w.to_string(), r.to_string()))
            .collect(),
    };
    describe_systems(&plan, &mut report);
    println!("{}", report.header());
    let runs = (plan.cases.len() * plan.systems.len()) as u64;
    let mut progress = Progress::new(runs);
    for case in &plan.cases {
        let mut rows = Vec::new();
        for &system in &plan.systems {
            let live = progress.start(format!("{} on {}", case.workload(), system.name()));
            rows.extend(runner::run_case(system, case, &plan, live).await);
            progress.finish_run();
        }
        progress.println(&report::table(&case.title(), &rows));
        report.results.extend(rows);
    }
    progress.done();
    for (workload, reason) in &report.unavailable {
        println!("\n{workload}: {reason}; nothing was measured.");
    }
    if let Some(path) = json {
        report.write_json(path)?;
        println!("\nJSON written to {}", path.display());
    }
    Ok(report.results.iter().all(|r| r.status != "failed"))
}

fn describe_systems(plan: &Plan, report: &mut Report) {
    let mut classes: Vec<_> = plan.cases.iter().map(|c| c.durability()).collect();
    classes.dedup();
    classes.sort_by_key(|c| c.name());
    classes.dedup();
    for &system in &plan.systems {
        report
            .versions
            .insert(system.name().to_owned(), runner::version(system));
        let settings = report.settings.entry(system.name().to_owned()).or_default();
        for &class in &classes {
            settings.insert(class.name().to_owned(), runner::describe(system, class));
        }
        if system == System::Quiver {
            let producer = QuiverDriver::describe_producer(plan.idempotent);
            settings.insert("producer".to_owned(), producer);
            let auth = if plan.auth {
                "on: token user, ACL checks on every request (100 other rules)"
            } else {
                "off"
            };
            settings.insert("auth".to_owned(), auth.to_owned());
            let metrics = match plan.metrics {
                true => "on: /metrics scraped every second",
                false => "off: the HTTP listener is idle (scraped once after a produce run for the fsync count)",
            };
            settings.insert("metrics".to_owned(), metrics.to_owned());
        }
    }
}
