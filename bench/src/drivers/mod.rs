//! The one interface every system implements (Quiver, NATS JetStream, Redis Streams, and the no-op
//! ceiling), so the workloads run the very same loops against each. A driver owns its server process
//! (started on a free loopback port in a temp dir) and stops it in `stop`. Server-side read filters
//! exist in Quiver alone, and so do the consumer groups and queue mode measured here: the
//! Quiver-only workloads take the Quiver driver itself ([`quiver::QuiverDriver`]).
//!
//! Contract: `ProducerHandle::send` hands over one batch and may return before it is acknowledged,
//! but never lets more than `window` batches wait for their acknowledgement; `flush` returns once
//! every record sent is acknowledged at the run's durability class, and fails if any was refused.

pub mod nats;
pub mod noop;
pub mod quiver;
pub mod redis;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;

use crate::case::Case;
use crate::durability::Durability;

/// The topic / stream / subject every workload uses (each run has a fresh server).
pub const TOPIC: &str = "bench";

/// Why a peer skips the consumer-group and queue workloads.
pub const QUIVER_ONLY: &str = "measured on Quiver only: the issue's targets are Quiver's own \
     (JetStream consumers and Redis XREADGROUP are not set up comparably here)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The first record ever written.
    Earliest,
    /// Only records written after the consumer was created.
    Latest,
}

#[derive(Debug, Clone)]
pub struct DriverConfig {
    pub durability: Durability,
    /// Records per batch.
    pub batch: usize,
    /// Record value size in bytes.
    pub size: usize,
    /// Partitions of [`TOPIC`] (streams for Redis, subjects of the one stream for NATS); a
    /// producer sends batch number k to partition k mod this.
    pub partitions: u32,
    /// Batches a producer may have unacknowledged.
    pub window: usize,
    /// Latency run: send what is there at once rather than wait to fill batches.
    pub low_latency: bool,
    pub work_dir: PathBuf,
    /// Quiver producers are idempotent (the peers have no such setting and ignore it).
    pub idempotent: bool,
    /// Quiver authenticates and checks ACLs (the peers ignore it).
    pub auth: bool,
    /// Quiver serves `/metrics`, scraped every second (the peers ignore it).
    pub metrics: bool,
}

pub trait Driver: Sized + Send + Sync + 'static {
    type Producer: ProducerHandle;
    type Consumer: ConsumerHandle;

    /// Why this system cannot run `case` comparably (no such durability setting, no server-side
    /// filter), if it cannot; the run is then reported as skipped.
    fn unsupported(_case: &Case) -> Option<&'static str> {
        None
    }

    /// The settings used at `durability`, printed beside the results.
    fn describe(durability: Durability) -> String;

    /// The server's version line (or why it is missing).
    fn version() -> String;

    /// Starts the server (if any) and waits until it accepts connections.
    fn start(cfg: DriverConfig) -> impl Future<Output = Result<Self>> + Send;

    /// Creates [`TOPIC`] with `partitions` partitions (one stream, one key when 1).
    fn create_topic(&self) -> impl Future<Output = Result<()>> + Send;

    /// A producer with its own connection.
    fn producer(&self) -> impl Future<Output = Result<Self::Producer>> + Send;

    /// A consumer with its own connection, reading [`TOPIC`] from `from`.
    fn consumer(&self, from: StartAt) -> impl Future<Output = Result<Self::Consumer>> + Send;

    /// A connection that only stays open (with the system's own keep-alives) while the answer lives:
    /// the idle-connections workloads hold many of them beside the measured clients.
    fn idle_connection(&self) -> impl Future<Output = Result<IdleConnection>> + Send;

    /// Peak resident set size of the server process, in KiB.
    fn peak_rss_kib(&self) -> Option<u64>;

    /// The server's fsyncs of record data since it started, where it counts them (Quiver).
    fn fsyncs(&self) -> impl Future<Output = Option<u64>> + Send {
        async { None }
    }

    /// File descriptors the server process has open now.
    fn open_files(&self) -> Option<usize> {
        None
    }

    /// Stops the server and removes its data.
    fn stop(self) -> impl Future<Output = Result<()>> + Send;
}

/// An open connection that is not used; dropping it closes it.
pub type IdleConnection = Box<dyn Send + Sync>;

pub trait ProducerHandle: Send + 'static {
    /// Hands over one batch of record values (see the module contract).
    fn send(&mut self, batch: &[Bytes]) -> impl Future<Output = Result<()>> + Send;

    /// Waits until everything sent is acknowledged.
    fn flush(&mut self) -> impl Future<Output = Result<()>> + Send;
}

/// Receives record values; called once per record.
pub type Sink<'a> = dyn FnMut(&[u8]) + Send + 'a;

pub trait ConsumerHandle: Send + 'static {
    /// Waits up to `wait` for records, passes each value to `sink`, returns how many there were.
    fn poll(
        &mut self,
        wait: Duration,
        sink: &mut Sink<'_>,
    ) -> impl Future<Output = Result<usize>> + Send;
}
