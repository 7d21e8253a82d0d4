//! `quiver-bench mirror`: edge mirroring on loopback, Quiver only (the peers' equivalents, NATS
//! leaf nodes and Redis replication, are not the same job). Three measurements, each with fresh
//! `internal-serve` processes as edge and core:
//!
//! - throughput: N records wait on the edge, then a mirror is added and timed until the core has
//!   them all; beside it, the same records produced straight to the core by one client with the
//!   mirror's producer settings (acks=all, idempotent), the ceiling a forwarder can reach;
//! - lag: records produced to the edge at a fixed rate while the mirror runs, its lag (age of the
//!   oldest record the core has not acknowledged) sampled every 100 ms;
//! - memory: the edge's RSS while N records wait for a core that is not there, beside an edge
//!   without a mirror given the same records.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use quiver::{
    Client, ClientOptions, MirrorSpec, MirrorState, NewTopic, Producer, ProducerConfig,
    ProducerRecord,
};

use crate::cli::{Common, MirrorArgs};
use crate::drivers::quiver::spawn_quiver;
use crate::server::ServerProcess;

const TOPIC: &str = "mirrored";

struct Broker {
    process: ServerProcess,
    addr: String,
    ca: PathBuf,
    client: Client,
}

impl Broker {
    async fn start(work_dir: &Path) -> Result<Broker> {
        let (process, addr, ca) = spawn_quiver(work_dir, []).await?;
        let client = Client::connect_with(ClientOptions::new(&addr, &ca))
            .await
            .context("connecting to a bench broker")?;
        Ok(Broker {
            process,
            addr,
            ca,
            client,
        })
    }

    /// A broker with [`TOPIC`] (one partition) created: the edge of a run.
    async fn edge(work_dir: &Path) -> Result<Broker> {
        let edge = Broker::start(work_dir).await?;
        let topic = NewTopic::new(TOPIC, 1);
        edge.client.admin().create_topic(topic).await?;
        Ok(edge)
    }

    async fn stop(self) -> Result<()> {
        self.client.close().await;
        self.process.stop().await
    }

    /// Adds a mirror of [`TOPIC`] to the broker at `to`, trusting `ca`.
    async fn mirror_to(&self, to: &str, ca: &Path) -> Result<()> {
        let spec = MirrorSpec {
            name: "bench".into(),
            to: to.into(),
            topics: TOPIC.into(),
            prefix: None,
            from: Default::default(),
            direction: Default::default(),
            source_id: Some("bench-edge".into()),
            ca_pem: std::fs::read_to_string(ca)?,
            token: None,
            cert_pem: None,
            key_pem: None,
        };
        self.client.admin().add_mirror(spec).await?;
        Ok(())
    }

    async fn records(&self, topic: &str) -> u64 {
        match self.client.admin().describe_topic(topic).await {
            Ok(d) => d.partitions.iter().map(|p| p.log_end).sum(),
            Err(_) => 0,
        }
    }
}

pub async fn run(common: &Common, args: &MirrorArgs) -> Result<bool> {
    let work_dir = common.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let scale = |n: u64| if common.smoke { (n / 500).max(1000) } else { n };
    let m = crate::machine::Machine::read();
    println!("machine: {}", m.line());
    println!("\n| record | records | mirror rec/s | mirror MB/s | one client straight to the core, rec/s | mirror ÷ client |");
    println!("|---|---|---|---|---|---|");
    for (size, n) in [(100, args.records), (1000, args.records / 4)] {
        let n = scale(n);
        let (mirror, direct) = throughput(&work_dir, size, n).await?;
        println!(
            "| {size} B | {n} | {:.0} | {:.1} | {:.0} | {:.2} |",
            mirror,
            mirror * size as f64 / 1e6,
            direct,
            mirror / direct
        );
    }
    let secs = if common.smoke {
        1.0
    } else {
        common.duration_secs.unwrap_or(10.0)
    };
    println!("\n| offered (100 B) | lag p50 ms | lag p99 ms | lag max ms | most records behind | caught up after the load, ms |");
    println!("|---|---|---|---|---|---|");
    for rate in &args.rates {
        let rate = if common.smoke { rate.min(&2000) } else { rate };
        let l = lag(&work_dir, *rate, secs).await?;
        println!(
            "| {rate} rec/s | {} | {} | {} | {} | {} |",
            l.p50, l.p99, l.max, l.most_behind, l.catch_up_ms
        );
    }
    let n = scale(args.waiting);
    println!(
        "\n| edge (100 B records waiting) | RSS idle MiB | RSS with the records MiB | peak MiB |"
    );
    println!("|---|---|---|---|");
    for with_mirror in [true, false] {
        let (idle, loaded, peak) = memory(&work_dir, n, with_mirror).await?;
        let what = if with_mirror {
            "mirror to a missing core"
        } else {
            "no mirror"
        };
        let mib = |k: u64| k as f64 / 1024.0;
        println!(
            "| {what}, {n} records | {:.1} | {:.1} | {:.1} |",
            mib(idle),
            mib(loaded),
            mib(peak)
        );
    }
    Ok(true)
}

/// Records of `size` bytes to [`TOPIC`], sent as fast as the producer goes.
async fn fill(
    client: &Client,
    topic: &str,
    n: u64,
    size: usize,
    config: ProducerConfig,
) -> Result<()> {
    let producer = Producer::new(client.clone(), config);
    let value = Bytes::from(vec![b'x'; size]);
    for _ in 0..n {
        producer
            .send(ProducerRecord::new(topic, value.clone()))
            .await?;
    }
    producer.flush().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// (mirror records/s, one client straight to the core records/s).
async fn throughput(work_dir: &Path, size: usize, n: u64) -> Result<(f64, f64)> {
    let core = Broker::start(work_dir).await?;
    let edge = Broker::edge(work_dir).await?;
    fill(&edge.client, TOPIC, n, size, ProducerConfig::default()).await?;
    core.client
        .admin()
        .create_topic(NewTopic::new("direct", 1))
        .await?;
    let started = Instant::now();
    fill(
        &core.client,
        "direct",
        n,
        size,
        quiver_mirror::producer_config(),
    )
    .await?;
    let direct = n as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    edge.mirror_to(&core.addr, &core.ca).await?;
    let deadline = started + Duration::from_secs(600);
    while core.records(TOPIC).await < n {
        if Instant::now() > deadline {
            bail!(
                "the mirror forwarded {} of {n} records in 10 minutes",
                core.records(TOPIC).await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mirror = n as f64 / started.elapsed().as_secs_f64();
    edge.stop().await?;
    core.stop().await?;
    Ok((mirror, direct))
}

struct Lag {
    p50: u64,
    p99: u64,
    max: u64,
    most_behind: u64,
    catch_up_ms: u64,
}

async fn lag(work_dir: &Path, rate: u64, secs: f64) -> Result<Lag> {
    let core = Broker::start(work_dir).await?;
    let edge = Broker::edge(work_dir).await?;
    edge.mirror_to(&core.addr, &core.ca).await?;
    let admin = edge.client.admin();
    while !matches!(
        admin.describe_mirror("bench").await?.state,
        MirrorState::Connected { .. }
    ) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let producer = Producer::new(
        edge.client.clone(),
        ProducerConfig {
            linger: Duration::ZERO,
            ..ProducerConfig::default()
        },
    );
    let sampler = {
        let admin = edge.client.admin();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Ok(info) = admin.describe_mirror("bench").await else {
                    break;
                };
                samples.push((info.lag_ms(), info.lag_records()));
                if samples.len() as f64 > secs * 10.0 {
                    break;
                }
            }
            samples
        })
    };
    let value = Bytes::from(vec![b'x'; 100]);
    let started = Instant::now();
    let total = (rate as f64 * secs) as u64;
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
        producer
            .send(ProducerRecord::new(TOPIC, value.clone()))
            .await?;
    }
    producer.flush().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let loaded = Instant::now();
    while core.records(TOPIC).await < total {
        if loaded.elapsed() > Duration::from_secs(120) {
            bail!("the mirror did not catch up within 2 minutes");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let catch_up_ms = loaded.elapsed().as_millis() as u64;
    let mut samples = sampler.await?;
    edge.stop().await?;
    core.stop().await?;
    samples.sort_unstable();
    let pick = |q: f64| {
        samples
            .get(((samples.len() as f64 - 1.0) * q) as usize)
            .map_or(0, |s| s.0)
    };
    Ok(Lag {
        p50: pick(0.5),
        p99: pick(0.99),
        max: pick(1.0),
        most_behind: samples.iter().map(|s| s.1).max().unwrap_or(0),
        catch_up_ms,
    })
}

/// (idle RSS, RSS with `n` records waiting, peak), KiB.
async fn memory(work_dir: &Path, n: u64, with_mirror: bool) -> Result<(u64, u64, u64)> {
    let edge = Broker::edge(work_dir).await?;
    if with_mirror {
        // Nothing listens there: the mirror connects, fails and backs off the whole time.
        let nowhere = std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .to_string();
        edge.mirror_to(&nowhere, &edge.ca).await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = edge.process.rss_kib().unwrap_or(0);
    fill(&edge.client, TOPIC, n, 100, ProducerConfig::default()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let loaded = edge.process.rss_kib().unwrap_or(0);
    let peak = edge.process.peak_rss_kib().unwrap_or(0);
    if with_mirror {
        let info = edge.client.admin().describe_mirror("bench").await?;
        if info.lag_records() != n {
            bail!("{} records wait, expected {n}", info.lag_records());
        }
    }
    edge.stop().await?;
    Ok((idle, loaded, peak))
}
