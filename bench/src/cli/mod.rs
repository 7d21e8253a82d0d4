//! The command line of `quiver-bench`: one subcommand per workload, plus `all`, `summarize` and the
//! hidden `internal-serve` (the Quiver broker process the harness starts for itself). Options that
//! every workload shares are global, so they may stand before or after the subcommand. `plan.rs`
//! turns them into the plan of a run.

pub mod plan;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::durability::Durability;
use crate::system::System;

#[derive(Parser, Debug)]
#[command(
    name = "quiver-bench",
    version,
    about = "Benchmark harness: Quiver against NATS JetStream and Redis Streams on this machine"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Systems to run, comma-separated; `noop` is the harness's own loops with no broker.
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "quiver,nats,redis,noop"
    )]
    pub systems: Vec<System>,
    /// Measured seconds of each throughput or latency run [default: 5, or 1 with --smoke].
    #[arg(long, global = true)]
    pub duration_secs: Option<f64>,
    /// Tiny sizes and short runs: checks that every path works, in seconds. Numbers mean little.
    #[arg(long, global = true)]
    pub smoke: bool,
    /// Also write the results as JSON to this file.
    #[arg(long, global = true)]
    pub json: Option<PathBuf>,
    /// Where the servers keep their data: a temp dir per run, removed after it [default: $TMPDIR].
    #[arg(long, global = true)]
    pub work_dir: Option<PathBuf>,
    /// Batches a producer may have sent but not yet acknowledged.
    #[arg(long, global = true, default_value_t = 8)]
    pub window: usize,
    /// Quiver producers are idempotent (a producer id and per-partition sequence numbers, so the
    /// broker drops a resent batch); `--idempotent false` turns it off. The peers ignore it.
    #[arg(long, global = true, default_value_t = true, action = ArgAction::Set)]
    pub idempotent: bool,
    /// Quiver only: the broker authenticates every connection (a token user with topic and group
    /// ACLs, among 100 rules of other principals) and checks every request, to measure what the
    /// checks cost against a run without.
    #[arg(long, global = true)]
    pub auth: bool,
    /// Quiver only: the broker serves its HTTP listener and `/metrics` is scraped once a second
    /// for the whole run (Prometheus scrapes every 15 s by default), to measure what the metrics
    /// cost against a run without.
    #[arg(long, global = true)]
    pub metrics: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Produce throughput: P producers, record size S, batches of B, a durability class.
    Produce(ProduceArgs),
    /// Consume throughput: one consumer reads back a pre-filled topic from the start.
    Consume(ConsumeArgs),
    /// Produce → consume latency at a fixed offered rate (HDR histogram: p50, p99, p99.9, max).
    E2e(E2eArgs),
    /// Consumer group, Quiver only: one consumer reads every partition of a pre-filled topic, then
    /// a group of M group consumers reads the same records (records/s of each, group ÷ one).
    Group(GroupArgs),
    /// Group rebalance, Quiver only: how long until the other members own every partition after
    /// one member is killed (no heartbeats) or leaves (close).
    Rebalance(RebalanceArgs),
    /// Queue mode, Quiver only: C queue consumers lease and ack a pre-filled topic (acked/s).
    Queue(QueueArgs),
    /// Read filters, Quiver only: a pre-filled topic read from the start with no filter, the native
    /// tag filter and the WASM tag-filter plugin (records scanned/s, and WASM ÷ native).
    Filter(FilterArgs),
    /// The scaling table: produce over 1 / 10 / 100 / 1,000 partitions; 1 / 4 / 16 producers;
    /// 1 / 4 / 16 consumers of one topic (fan-out); one producer (throughput) and one e2e run
    /// (latency at 10,000 rec/s) without and with 1,000 idle connections. Server RSS and open
    /// files at each step.
    Scale,
    /// Runs the whole set: produce, consume, e2e, filter, group, rebalance and queue at the sizes,
    /// classes and rates of BENCHMARKS.md.
    All,
    /// Prints the median and spread of several `--json` result files as a Markdown table.
    Summarize {
        /// JSON files written by earlier runs.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Edge mirroring, Quiver only: forwarding throughput at 100 B and 1 KB, lag at fixed offered
    /// rates, and the edge's memory while records wait for a missing core.
    Mirror(MirrorArgs),
    /// Start-up, Quiver only: time to accept connections and memory with a large log (GiB in
    /// many partitions, written first), after graceful stops and after a SIGKILL.
    Startup(StartupArgs),
    /// A three-node cluster on loopback, Quiver only (the `quiver` binary next to this one):
    /// produce with replication factor 3 and acks=all against factor 1, and failover time.
    Cluster(ClusterArgs),
    /// Runs a Quiver broker in this process and prints its address (used by the harness itself).
    #[command(hide = true)]
    InternalServe {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long)]
        auth: bool,
        #[arg(long)]
        metrics: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct StartupArgs {
    /// Partitions of the topic the log is written to.
    #[arg(long, default_value_t = 1000)]
    pub partitions: u32,
    /// GiB of records written before the restarts.
    #[arg(long, default_value_t = 10.0)]
    pub gib: f64,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 1000)]
    pub size: usize,
    /// Restarts after graceful stops (one more follows a SIGKILL).
    #[arg(long, default_value_t = 3)]
    pub restarts: u32,
    /// Keep the broker's data here (not in a temp dir removed afterwards); a directory written by
    /// an earlier run is restarted on without writing it again (to profile a start, say).
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Records of the smaller sizes per throughput run (a quarter as many from 1 KB up).
    #[arg(long, default_value_t = 200_000)]
    pub records: u64,
    /// Record value sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "100,1000")]
    pub sizes: Vec<usize>,
    /// Failover trials (each kills the partition's leader and restarts it).
    #[arg(long, default_value_t = 5)]
    pub trials: u32,
}

#[derive(Args, Debug, Clone)]
pub struct MirrorArgs {
    /// Records of 100 B forwarded in the throughput run (a quarter as many of 1 KB).
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Offered rates (records/s of 100 B) of the lag runs, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
    pub rates: Vec<u64>,
    /// Records waiting on the edge in the memory run.
    #[arg(long, default_value_t = 1_000_000)]
    pub waiting: u64,
}

#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    /// Concurrent producers (each with its own connection), comma-separated for several runs.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub producers: Vec<usize>,
    /// Record value size in bytes, comma-separated for several runs.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub size: Vec<usize>,
    /// Records per batch (Quiver batch, Redis pipeline, NATS async publishes between ack checks).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Durability classes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "none-fsync")]
    pub durability: Vec<Durability>,
    /// Partitions the producers spread their batches over, in turn (Redis: stream keys; NATS:
    /// subjects of the one stream), comma-separated for several runs.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub partitions: Vec<u32>,
    /// Connections opened before the run and held idle through it, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub idle_connections: Vec<usize>,
}

#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    /// Records written before the consumer starts [default: 1000000, or 20000 with --smoke].
    #[arg(long)]
    pub records: Option<u64>,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Records per batch when pre-filling and the most asked for per read.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Consumers reading the whole topic at the same time (fan-out), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub consumers: Vec<usize>,
}

#[derive(Args, Debug, Clone)]
pub struct FilterArgs {
    /// Records written before the reads, tagged `a` and `b` in turn [default: 1000000, or 20000
    /// with --smoke].
    #[arg(long)]
    pub records: Option<u64>,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Records per batch when pre-filling.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// The tag-filter component (config `tags=a`) [default: target/plugins/tag-filter.wasm in this
    /// repository, built by `bash scripts/build-plugins.sh`].
    #[arg(long)]
    pub wasm: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct GroupArgs {
    /// Records written before the reads, spread over the partitions a batch at a time [default:
    /// 2000000, or 20000 with --smoke].
    #[arg(long)]
    pub records: Option<u64>,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Records per batch when pre-filling.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: u32,
    /// Members of the group, each with its own connection.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
}

#[derive(Args, Debug, Clone)]
pub struct RebalanceArgs {
    /// Partitions of the topic.
    #[arg(long, default_value_t = 6)]
    pub partitions: u32,
    /// Members of the group before one goes.
    #[arg(long, default_value_t = 3)]
    pub members: usize,
    /// The members' session timeout in milliseconds [default: 3000, or 1000 with --smoke].
    #[arg(long)]
    pub session_ms: Option<u64>,
    /// Times each departure (kill, leave) is measured [default: 3, or 1 with --smoke].
    #[arg(long)]
    pub trials: Option<usize>,
}

#[derive(Args, Debug, Clone)]
pub struct QueueArgs {
    /// Records written before the consumers start, spread over the partitions a batch at a time
    /// [default: 1000000, or 20000 with --smoke].
    #[arg(long)]
    pub records: Option<u64>,
    /// Record value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Records per batch when pre-filling, and the most one poll leases.
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Partitions of the topic, comma-separated for several runs.
    #[arg(long, value_delimiter = ',', default_value = "4,1")]
    pub partitions: Vec<u32>,
    /// Queue consumers, each with its own connection.
    #[arg(long, default_value_t = 4)]
    pub consumers: usize,
}

#[derive(Args, Debug, Clone)]
pub struct E2eArgs {
    /// Offered rates in records/s, comma-separated for several runs.
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    pub rate: Vec<u64>,
    /// Record value size in bytes (at least 8: the send time travels in the value).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Durability class.
    #[arg(long, default_value = "none-fsync")]
    pub durability: Durability,
    /// Connections opened before the run and held idle through it, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    pub idle_connections: Vec<usize>,
}
