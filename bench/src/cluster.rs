//! `quiver-bench cluster`: three `quiver serve` nodes on loopback (the `quiver` binary next to
//! this one), Quiver only. Two measurements:
//!
//! - produce throughput and latency with replication factor 3 and `acks=all` against factor 1,
//!   in the same run: one idempotent producer connected to a node that leads neither partition
//!   (it routes to the leader), N records of a size; latency from one record at a time;
//! - failover: one record at a time with `acks=all` to a factor-3 partition while its leader is
//!   killed with SIGKILL; the time from the kill to the first acknowledged produce, per trial;
//!   then the same with SIGTERM (the leader hands the partition over before it stops).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use quiver::{Acks, Client, ClientOptions, NewTopic, Producer, ProducerConfig, ProducerRecord};

use crate::cli::{ClusterArgs, Common};
use crate::server::{self, ServerProcess};

/// How long a node may take to listen.
const READY: Duration = Duration::from_secs(30);

struct Node {
    process: Option<ServerProcess>,
    addr: String,
}

struct Cluster {
    dir: tempfile::TempDir,
    members: String,
    nodes: Vec<Node>,
    ca: PathBuf,
}

impl Cluster {
    async fn start(work_dir: &Path) -> Result<Cluster> {
        let dir = server::run_dir(work_dir, "cluster")?;
        let peers: Vec<String> = (1..=3)
            .map(|id| Ok(format!("{id}@127.0.0.1:{}", server::free_tcp_port()?)))
            .collect::<Result<_>>()?;
        let config = dir.path().join("cluster.toml");
        std::fs::write(
            &config,
            "[cluster]\nheartbeat_ms = 100\nreplica_lag_ms = 5000\nnode_timeout_ms = 1000\n",
        )?;
        let mut cluster = Cluster {
            ca: dir.path().join("ca/ca.pem"),
            members: peers.join(","),
            nodes: Vec::new(),
            dir,
        };
        for id in 1..=3 {
            let addr = format!("127.0.0.1:{}", server::free_tcp_port()?);
            cluster.nodes.push(Node {
                process: None,
                addr,
            });
            cluster.spawn(id).await?;
        }
        Ok(cluster)
    }

    /// Starts (or restarts) node `id` and waits until it takes clients.
    async fn spawn(&mut self, id: u64) -> Result<()> {
        let bin = std::env::current_exe()?.with_file_name("quiver");
        let root = self.dir.path();
        let node = &mut self.nodes[id as usize - 1];
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.arg("serve")
            .args(["--listen", &node.addr, "--http", "none", "--data-dir"])
            .arg(root.join(format!("node{id}")))
            .args(["--node-id", &id.to_string(), "--cluster", &self.members])
            .arg("--dev-ca")
            .arg(root.join("ca"))
            .arg("--config")
            .arg(root.join("cluster.toml"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null());
        let log = tempfile::Builder::new()
            .prefix(&format!("node{id}-"))
            .tempdir_in(root)?;
        node.process = Some(ServerProcess::spawn("quiver", cmd, log).with_context(|| {
            format!(
                "starting {} (build it: cargo build --release -p quiver-cli)",
                bin.display()
            )
        })?);
        let deadline = Instant::now() + READY;
        while self.client(id).await.is_err() {
            if Instant::now() > deadline {
                bail!("node {id} did not take clients within {READY:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    async fn client(&self, id: u64) -> Result<Client> {
        let mut opts = ClientOptions::new(&self.nodes[id as usize - 1].addr, &self.ca);
        opts.idle_timeout = Some(Duration::from_secs(3));
        Ok(Client::connect_with(opts).await?)
    }

    async fn kill(&mut self, id: u64) -> Result<()> {
        match self.nodes[id as usize - 1].process.take() {
            Some(p) => p.kill().await,
            None => Ok(()),
        }
    }

    /// Creates a one-partition topic and waits until every replica is in sync; answers its
    /// leader.
    async fn topic(&self, via: &Client, name: &str, rf: u32) -> Result<u64> {
        let mut t = NewTopic::new(name, 1);
        t.replication_factor = Some(rf);
        t.min_insync = Some(rf.min(2));
        via.admin().create_topic(t).await?;
        self.settled(via, name, rf as usize).await
    }

    /// Waits until `name`'s ISR has `isr` members and a leader with an address; answers it.
    async fn settled(&self, via: &Client, name: &str, isr: usize) -> Result<u64> {
        let deadline = Instant::now() + READY;
        loop {
            let status = via.admin().cluster_status().await?;
            let p = status.partitions.iter().find(|p| p.topic == name);
            if let Some(p) = p.filter(|p| p.isr.len() == isr && p.leader_addr.is_some()) {
                return p.leader.ok_or_else(|| anyhow!("no leader"));
            }
            if Instant::now() > deadline {
                bail!("{name} did not settle: {p:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub async fn run(common: &Common, args: &ClusterArgs) -> Result<bool> {
    quiver_broker::transport::tls::install_crypto_provider();
    let work_dir = common.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let (records, trials) = match common.smoke {
        true => (2_000, 1),
        false => (args.records, args.trials),
    };
    println!("machine: {}", crate::machine::Machine::read().line());
    let mut cluster = Cluster::start(&work_dir).await?;
    for &size in &args.sizes {
        let n = if size >= 1000 { records / 4 } else { records };
        throughput(&cluster, size, n).await?;
    }
    held(&cluster, records / 4).await?;
    for graceful in [false, true] {
        let mut times = Vec::new();
        for trial in 0..trials {
            times.push(failover(&mut cluster, trial, graceful).await?);
        }
        times.sort_by(f64::total_cmp);
        let how = match graceful {
            false => "failover (leader SIGKILL",
            true => "hand-over (leader SIGTERM",
        };
        if let (Some(min), Some(max)) = (times.first(), times.last()) {
            println!(
                "{how} -> longest wait for an acks=all acknowledgement), {} trials: median {:.2} s, min {min:.2} s, max {max:.2} s",
                times.len(),
                times[times.len() / 2],
            );
        }
    }
    for id in 1..=3 {
        cluster.kill(id).await?;
    }
    Ok(true)
}

/// Factor 1 and factor 3 side by side: throughput of `n` records, then latency one at a time.
async fn throughput(cluster: &Cluster, size: usize, n: u64) -> Result<()> {
    let first = cluster.client(1).await?;
    for rf in [1u32, 3] {
        let name = format!("rf{rf}-{size}");
        let leader = cluster.topic(&first, &name, rf).await?;
        // Connected to a node that does not lead the partition: the producer routes.
        let via = if leader == 1 { 2 } else { 1 };
        let client = cluster.client(via).await?;
        let value = Bytes::from(vec![b'x'; size]);
        let send = Send {
            client: &client,
            topic: &name,
            value: &value,
            delay: None,
        };
        let rate = send.rate(n).await?;
        let latencies = send.latency((n / 10).clamp(100, 2000)).await?;
        println!(
            "replication factor {rf}, acks=all, {size} B: {rate:.0} records/s ({:.1} MB/s); one at a time: p50 {:.2} ms, p99 {:.2} ms",
            rate * size as f64 / 1e6,
            latencies.0,
            latencies.1
        );
    }
    Ok(())
}

/// Delayed records (due in an hour: held, not delivered during the run) against the same
/// records sent plainly, factor 3, 100 B, acks=all: what holding them in a replicated delay
/// shard costs (the shard may be led by another node than the partition: a forward).
async fn held(cluster: &Cluster, n: u64) -> Result<()> {
    let first = cluster.client(1).await?;
    let leader = cluster.topic(&first, "held", 3).await?;
    let client = cluster.client(if leader == 1 { 2 } else { 1 }).await?;
    let value = Bytes::from(vec![b'x'; 100]);
    for delay in [None, Some(Duration::from_secs(3600))] {
        let send = Send {
            client: &client,
            topic: "held",
            value: &value,
            delay,
        };
        let rate = send.rate(n).await?;
        let (p50, p99) = send.latency((n / 10).clamp(100, 2000)).await?;
        let what = if delay.is_some() {
            "delayed (held in a delay shard)"
        } else {
            "not delayed"
        };
        println!(
            "replication factor 3, acks=all, 100 B, {what}: {rate:.0} records/s; one at a time: p50 {p50:.2} ms, p99 {p99:.2} ms"
        );
    }
    Ok(())
}

/// Records of one shape sent to partition 0 of a topic, `acks=all`.
struct Send<'a> {
    client: &'a Client,
    topic: &'a str,
    value: &'a Bytes,
    /// Delivery this long after sending (`None`: at once).
    delay: Option<Duration>,
}

impl Send<'_> {
    fn record(&self) -> ProducerRecord {
        let rec = ProducerRecord::new(self.topic, self.value.clone()).partition(0);
        match self.delay {
            Some(d) => rec.delay(d),
            None => rec,
        }
    }

    /// Records per second over `n` records, batched.
    async fn rate(&self, n: u64) -> Result<f64> {
        let config = ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(self.client.clone(), config);
        let started = Instant::now();
        let mut last = None;
        for _ in 0..n {
            last = Some(producer.send(self.record()).await?);
        }
        producer.flush().await.map_err(|e| anyhow!("{e}"))?;
        drop(last);
        Ok(n as f64 / started.elapsed().as_secs_f64())
    }

    /// p50 and p99 (ms) of `count` produces sent one at a time.
    async fn latency(&self, count: u64) -> Result<(f64, f64)> {
        let config = ProducerConfig {
            acks: Acks::All,
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(self.client.clone(), config);
        let mut samples = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let started = Instant::now();
            producer
                .send_now(self.record())
                .await?
                .wait()
                .await
                .map_err(|e| anyhow!("{e}"))?;
            samples.push(started.elapsed().as_secs_f64() * 1e3);
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        Ok((at(0.5), at(0.99)))
    }
}

/// How long after the signal a failover trial keeps sending.
const AFTER_SIGNAL: Duration = Duration::from_secs(2);

/// One trial: the partition's leader is killed (or, `graceful`, stopped with SIGTERM: it hands
/// the partition over) while a producer sends one record at a time; answers the longest wait
/// for an acknowledgement from the signal on (over [`AFTER_SIGNAL`]). The node is restarted
/// and the partition settles before the next trial.
async fn failover(cluster: &mut Cluster, trial: u32, graceful: bool) -> Result<f64> {
    let name = format!("failover-{trial}-{graceful}");
    let first = cluster.client(1).await?;
    let leader = cluster.topic(&first, &name, 3).await?;
    let via = if leader == 1 { 2 } else { 1 };
    let client = cluster.client(via).await?;
    let config = ProducerConfig {
        acks: Acks::All,
        linger: Duration::ZERO,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    let send = |i: u32| {
        let rec = ProducerRecord::new(&name, i.to_string()).partition(0);
        let producer = producer.clone();
        async move {
            producer
                .send_now(rec)
                .await?
                .wait()
                .await
                .map_err(|e| anyhow!("{e}"))
        }
    };
    for i in 0..20 {
        send(i).await?;
    }
    let stopping = match graceful {
        false => {
            cluster.kill(leader).await?;
            None
        }
        true => cluster.nodes[leader as usize - 1]
            .process
            .take()
            .map(|p| tokio::spawn(p.stop())),
    };
    // The longest wait for an acknowledgement while records go one at a time for the next
    // two seconds (the first one, after a kill).
    let signalled = Instant::now();
    let (mut last, mut worst, mut i) = (signalled, Duration::ZERO, 20);
    while signalled.elapsed() < AFTER_SIGNAL {
        send(i).await?;
        i += 1;
        worst = worst.max(last.elapsed());
        last = Instant::now();
    }
    let secs = worst.as_secs_f64();
    if let Some(stopping) = stopping {
        stopping.await??;
    }
    let how = if graceful {
        "stopped (SIGTERM)"
    } else {
        "killed"
    };
    println!(
        "trial {trial}: leader node {leader} {how}; longest wait for an acknowledgement {secs:.2} s"
    );
    cluster.spawn(leader).await?;
    cluster.settled(&client, &name, 3).await?;
    Ok(secs)
}
