//! The Quiver driver: the broker runs as a separate process (this binary's hidden `internal-serve`,
//! so it is always the same build as the harness and needs no other binary), clients connect over
//! QUIC + TLS 1.3 with the broker's dev CA. Durability maps to `acks=leader` (appended, page cache)
//! and `acks=all` (fsync'd before the reply, group commit). A harness batch is one Quiver batch:
//! the producer's `batch_bytes` is set to exactly that many encoded records; producers are
//! idempotent unless the plan says otherwise. For the `filter` workload it also deploys plugins,
//! tags records and reads with the broker's read filters; for the group and queue workloads it
//! creates topics of several partitions, fills them a batch per partition in turn, and hands out
//! connections for the workloads' own group and queue consumers.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use quiver::{
    Acks, AclSpec, Client, ClientOptions, Consumer, ConsumerConfig, Delivery, NewTopic, Operation,
    PluginRef, Producer, ProducerConfig, ProducerRecord, ResourceKind, SeekTo,
};
use quiver_proto::batch::HEADER_LEN;
use quiver_proto::{BatchBuilder, RecordData};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::{
    ConsumerHandle, Driver, DriverConfig, IdleConnection, ProducerHandle, Sink, StartAt, TOPIC,
};
use crate::durability::Durability;
use crate::serve::{scrape, HTTP_ADDR_FILE, READY};
use crate::server::{self, ServerProcess, READY_TIMEOUT};

/// The count of the broker's fsync histogram in `/metrics`: its fsyncs of partition data.
const FSYNC_COUNT: &str = "quiver_fsync_duration_seconds_count";

pub struct QuiverDriver {
    server: ServerProcess,
    addr: String,
    ca: PathBuf,
    admin: Client,
    cfg: DriverConfig,
    /// With `--auth`: the token of the user producers and consumers connect as.
    token: Option<String>,
}

impl QuiverDriver {
    /// `tags`: the tags records get in turn (one each); the longest sizes the batch.
    fn producer_config(&self, tags: &[&str]) -> ProducerConfig {
        let longest = tags.iter().max_by_key(|t| t.len());
        let record = RecordData {
            timestamp: 0,
            key: None,
            value: &vec![0u8; self.cfg.size],
            headers: &[],
            tags: longest.map_or(&[], std::slice::from_ref),
        };
        let batch_bytes = HEADER_LEN + self.cfg.batch * BatchBuilder::record_encoded_len(&record);
        ProducerConfig {
            acks: acks(self.cfg.durability),
            linger: if self.cfg.low_latency {
                Duration::ZERO
            } else {
                Duration::from_millis(5)
            },
            batch_bytes,
            max_in_flight: self.cfg.window,
            idempotent: self.cfg.idempotent,
            ..ProducerConfig::default()
        }
    }

    /// The producer setting printed beside the results.
    pub fn describe_producer(idempotent: bool) -> String {
        if idempotent {
            "idempotent (producer id + per-partition sequence numbers; the broker drops resent \
             batches) — the client's default"
                .to_owned()
        } else {
            "not idempotent (--idempotent false): batches carry no producer id".to_owned()
        }
    }

    /// A new connection to the broker (as the bench user with `--auth`).
    pub async fn connect(&self) -> Result<Client> {
        connect_as(&self.addr, &self.ca, self.token.clone()).await
    }

    /// Creates [`TOPIC`] with `partitions` partitions.
    pub async fn create_topic_with(&self, partitions: u32) -> Result<()> {
        self.admin
            .admin()
            .create_topic(NewTopic::new(TOPIC, partitions))
            .await?;
        Ok(())
    }

    /// Where each partition of [`TOPIC`] ends (the offset the next record would get).
    pub async fn partition_ends(&self) -> Result<Vec<u64>> {
        let desc = self.admin.admin().describe_topic(TOPIC).await?;
        let mut parts: Vec<(u32, u64)> = desc
            .partitions
            .iter()
            .map(|p| (p.partition, p.log_end))
            .collect();
        parts.sort_unstable();
        Ok(parts.into_iter().map(|(_, end)| end).collect())
    }

    /// A producer that sends harness batch number k to partition k % `partitions`.
    pub async fn partitioned_producer(&self, partitions: u32) -> Result<QuiverProducer> {
        let mut producer = self.tagged_producer(&[]).await?;
        producer.partitions = partitions.max(1);
        Ok(producer)
    }

    /// A producer whose record number n carries the tag `tags[n % tags.len()]` (none if empty).
    pub async fn tagged_producer(&self, tags: &'static [&'static str]) -> Result<QuiverProducer> {
        let client = self.connect().await?;
        Ok(QuiverProducer {
            producer: Producer::new(client, self.producer_config(tags)),
            pending: VecDeque::new(),
            window: self.cfg.window,
            tags,
            sent: 0,
            partitions: 1,
            batches: 0,
        })
    }

    /// A consumer of [`TOPIC`] from `from`, the broker applying `filter` (a native expression)
    /// and then `plugin` on each fetch.
    pub async fn filtered_consumer(
        &self,
        from: StartAt,
        filter: Option<String>,
        plugin: Option<PluginRef>,
    ) -> Result<QuiverConsumer> {
        let client = self.connect().await?;
        let config = ConsumerConfig {
            max_wait: Duration::from_millis(500),
            filter,
            plugin,
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(client, TOPIC, config);
        let seek = match from {
            StartAt::Earliest => SeekTo::Earliest,
            StartAt::Latest => SeekTo::Latest,
        };
        consumer.assign(&[0], seek);
        Ok(QuiverConsumer { consumer })
    }

    /// Deploys a WebAssembly component as `name` (the next version).
    pub async fn deploy_plugin(&self, name: &str, wasm: Bytes) -> Result<()> {
        self.admin
            .admin()
            .deploy_plugin(name, None, wasm)
            .await
            .with_context(|| format!("deploying the plugin {name}"))?;
        Ok(())
    }

    /// Restarts the broker's peak-RSS count from its current RSS; false if it could not.
    pub fn reset_peak_rss(&self) -> bool {
        self.server.reset_peak_rss()
    }
}

fn acks(durability: Durability) -> Acks {
    match durability {
        Durability::NoneFsync => Acks::Leader,
        Durability::FsyncPerBatch => Acks::All,
    }
}

async fn connect_as(addr: &str, ca: &std::path::Path, token: Option<String>) -> Result<Client> {
    let mut options = ClientOptions::new(addr, ca);
    options.token = token;
    Client::connect_with(options)
        .await
        .context("connecting to the quiver broker")
}

/// Creates the user the workloads run as: allowed what they do on [`TOPIC`] and every group, with
/// 100 rules of other principals beside (a broker with some tenants, not an empty ACL table).
async fn bench_user(admin: &Client) -> Result<String> {
    let a = admin.admin();
    let token = a.create_user("bench").await?;
    let rule = |principal: String, resource, pattern: String, operations| AclSpec {
        principal,
        resource,
        pattern,
        operations,
        deny: false,
    };
    for i in 0..100 {
        let ops = vec![Operation::Produce, Operation::Consume];
        a.add_acl(rule(
            format!("tenant{i}"),
            ResourceKind::Topic,
            format!("tenant{i}.*"),
            ops,
        ))
        .await?;
    }
    let topic_ops = vec![Operation::Produce, Operation::Consume];
    a.add_acl(rule(
        "bench".into(),
        ResourceKind::Topic,
        TOPIC.into(),
        topic_ops,
    ))
    .await?;
    let group_ops = vec![Operation::Consume, Operation::Commit];
    a.add_acl(rule(
        "bench".into(),
        ResourceKind::Group,
        "*".into(),
        group_ops,
    ))
    .await?;
    Ok(token)
}

async fn spawn_broker(cfg: &DriverConfig) -> Result<(ServerProcess, String, PathBuf)> {
    let flags = [
        cfg.auth.then_some("--auth"),
        cfg.metrics.then_some("--metrics"),
    ];
    spawn_quiver(&cfg.work_dir, flags.into_iter().flatten()).await
}

/// Starts `<this binary> internal-serve` with `flags` and reads its `READY <addr> <ca>` line.
pub async fn spawn_quiver(
    work_dir: &std::path::Path,
    flags: impl IntoIterator<Item = &str>,
) -> Result<(ServerProcess, String, PathBuf)> {
    let dir = server::run_dir(work_dir, "quiver")?;
    let data = dir.path().join("data");
    spawn_quiver_in(dir, &data, flags).await
}

/// Like [`spawn_quiver`] with the broker's data in `data` (which outlives the process; `dir`
/// keeps only its log).
pub async fn spawn_quiver_in(
    dir: tempfile::TempDir,
    data: &std::path::Path,
    flags: impl IntoIterator<Item = &str>,
) -> Result<(ServerProcess, String, PathBuf)> {
    let exe = std::env::current_exe().context("locating the harness binary")?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("internal-serve")
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    let mut proc = ServerProcess::spawn("quiver", cmd, dir)?;
    let stdout = proc
        .child_mut()
        .stdout
        .take()
        .ok_or_else(|| anyhow!("no stdout from the quiver broker"))?;
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(READY_TIMEOUT, lines.next_line()).await;
    let Ok(Ok(Some(line))) = line else {
        bail!("quiver broker not ready:\n{}", proc.log_tail());
    };
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(READY), Some(addr), Some(ca)) => {
            let (addr, ca) = (addr.to_owned(), PathBuf::from(ca));
            Ok((proc, addr, ca))
        }
        _ => bail!("unexpected line from the quiver broker: {line:?}"),
    }
}

impl Driver for QuiverDriver {
    type Producer = QuiverProducer;
    type Consumer = QuiverConsumer;

    fn describe(durability: Durability) -> String {
        let acks = match durability {
            Durability::NoneFsync => "acks=leader (appended to the page cache, no fsync)",
            Durability::FsyncPerBatch => "acks=all (fsync before the reply, group commit)",
        };
        format!(
            "separate process, QUIC + TLS 1.3 on loopback, 1 partition unless titled (then a \
             batch per partition in turn), {acks}; a harness batch is \
             one Quiver batch (batch_bytes = exactly B records), linger 5 ms (0 in e2e), \
             max_in_flight = window"
        )
    }

    fn version() -> String {
        format!("quiver {} (this build)", env!("CARGO_PKG_VERSION"))
    }

    async fn start(cfg: DriverConfig) -> Result<Self> {
        quiver_broker::transport::tls::install_crypto_provider();
        let (server, addr, ca) = spawn_broker(&cfg).await?;
        let admin_token = match cfg.auth {
            // The dev CA is <data-dir>/tls/ca.pem; the admin token sits in <data-dir>.
            true => {
                let data_dir = ca.parent().and_then(|t| t.parent()).unwrap_or(&ca);
                let file = data_dir.join("admin.token");
                let text = std::fs::read_to_string(&file).with_context(|| format!("{file:?}"))?;
                Some(text.trim().to_owned())
            }
            false => None,
        };
        let admin = connect_as(&addr, &ca, admin_token).await?;
        let token = match cfg.auth {
            true => Some(bench_user(&admin).await?),
            false => None,
        };
        Ok(QuiverDriver {
            server,
            addr,
            ca,
            admin,
            cfg,
            token,
        })
    }

    async fn create_topic(&self) -> Result<()> {
        self.create_topic_with(self.cfg.partitions).await
    }

    async fn producer(&self) -> Result<QuiverProducer> {
        self.partitioned_producer(self.cfg.partitions).await
    }

    async fn idle_connection(&self) -> Result<IdleConnection> {
        Ok(Box::new(self.connect().await?))
    }

    async fn consumer(&self, from: StartAt) -> Result<QuiverConsumer> {
        self.filtered_consumer(from, None, None).await
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        self.server.peak_rss_kib()
    }

    fn open_files(&self) -> Option<usize> {
        self.server.open_fds()
    }

    async fn fsyncs(&self) -> Option<u64> {
        // The dev CA is <data-dir>/tls/ca.pem; internal-serve wrote its HTTP address beside it.
        let data_dir = self.ca.parent()?.parent()?;
        let addr = std::fs::read_to_string(data_dir.join(HTTP_ADDR_FILE)).ok()?;
        let metrics = scrape(addr.trim().parse().ok()?).await.ok()?;
        metrics
            .lines()
            .find(|l| l.starts_with(FSYNC_COUNT))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    async fn stop(self) -> Result<()> {
        self.admin.close().await;
        self.server.stop().await
    }
}

pub struct QuiverProducer {
    producer: Producer,
    /// The deliveries of the first and last record of each unacknowledged batch.
    pending: VecDeque<Delivery>,
    window: usize,
    /// Tags given in turn, one per record (see [`QuiverDriver::tagged_producer`]).
    tags: &'static [&'static str],
    /// Records sent so far: picks the next tag.
    sent: u64,
    /// Batches go to the partitions in turn (see [`QuiverDriver::partitioned_producer`]).
    partitions: u32,
    /// Batches sent so far: picks the partition.
    batches: u64,
}

impl ProducerHandle for QuiverProducer {
    async fn send(&mut self, batch: &[Bytes]) -> Result<()> {
        // The first and the last delivery: a batch that linger split in two is still checked.
        let last = batch.len().saturating_sub(1);
        let partition = (self.batches % self.partitions as u64) as u32;
        self.batches += 1;
        for (i, value) in batch.iter().enumerate() {
            let record = self.record(value.clone(), partition);
            let delivery = self.producer.send(record).await?;
            if i == 0 || i == last {
                self.pending.push_back(delivery);
            }
        }
        while self.pending.len() > 2 * self.window {
            if let Some(d) = self.pending.pop_front() {
                d.wait().await.map_err(|e| anyhow!("produce failed: {e}"))?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        self.producer
            .flush()
            .await
            .map_err(|e| anyhow!("produce failed: {e}"))?;
        for d in self.pending.drain(..) {
            d.wait().await.map_err(|e| anyhow!("produce failed: {e}"))?;
        }
        Ok(())
    }
}

impl QuiverProducer {
    fn record(&mut self, value: Bytes, partition: u32) -> ProducerRecord {
        let record = ProducerRecord::new(TOPIC, value).partition(partition);
        let n = self.sent;
        self.sent += 1;
        match self.tags.len() {
            0 => record,
            len => record.tag(self.tags[(n % len as u64) as usize]),
        }
    }
}

pub struct QuiverConsumer {
    consumer: Consumer,
}

impl QuiverConsumer {
    /// Offsets read past in partition 0, kept or not: where the last fetch ended once everything
    /// fetched has been handed over (a read filter's skipped records included).
    pub fn scanned(&self) -> u64 {
        self.consumer.position(0).unwrap_or(0)
    }
}

impl ConsumerHandle for QuiverConsumer {
    async fn poll(&mut self, wait: Duration, sink: &mut Sink<'_>) -> Result<usize> {
        let records = self.consumer.poll(wait).await?;
        for r in &records {
            sink(&r.record.value);
        }
        Ok(records.len())
    }
}
