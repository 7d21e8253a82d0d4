//! `quiver-bench startup`: how long a broker with a large log takes to accept connections, and
//! its memory and open files then (issue 14: 10 GiB in 1,000 partitions, goal ≤ 100 ms to
//! listening). The log is written once through the broker by one producer, batch after batch
//! round the partitions; then the broker is started on it again several times, after graceful
//! stops and after a SIGKILL, each time timed from spawning the process to its READY line (it is
//! printed once the broker has opened its data and bound its QUIC socket). Quiver only.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use bytes::Bytes;
use quiver::{Client, ClientOptions, NewTopic, Producer, ProducerConfig, ProducerRecord};

use crate::cli::{Common, StartupArgs};
use crate::drivers::quiver::spawn_quiver_in;
use crate::server::{self, ServerProcess};

const TOPIC: &str = "startup";

pub async fn run(common: &Common, args: &StartupArgs) -> Result<bool> {
    let work_dir = common.work_dir.clone().unwrap_or_else(std::env::temp_dir);
    let root = server::run_dir(&work_dir, "startup")?;
    let data = args
        .data_dir
        .clone()
        .unwrap_or_else(|| root.path().join("data"));
    let written = data.join("meta").exists();
    let (partitions, bytes) = match common.smoke {
        true => (10, 8 << 20),
        false => (args.partitions, (args.gib * f64::from(1 << 30)) as u64),
    };
    println!("machine: {}", crate::machine::Machine::read().line());
    let ((empty, _, _), empty_ms) = start(&work_dir, &work_dir.join("startup-empty-data")).await?;
    empty.stop().await?;
    let _ = std::fs::remove_dir_all(work_dir.join("startup-empty-data"));
    let (broker, _) = start(&work_dir, &data).await?;
    let records = match written {
        true => stored(&broker.1, &broker.2).await?,
        false => {
            let started = Instant::now();
            let records = fill(&broker.1, &broker.2, partitions, bytes, args.size).await?;
            let secs = started.elapsed().as_secs_f64();
            let written = (records * args.size as u64) as f64;
            println!(
                "filled {partitions} partitions with {records} records of {} B ({:.2} GiB) in {secs:.1} s ({:.0} MB/s)",
                args.size,
                written / f64::from(1 << 30),
                written / secs / 1e6
            );
            records
        }
    };
    broker.0.stop().await?;
    println!("\n| start | after | time to READY, ms | RSS, MiB | open files | records found |");
    println!("|---|---|---|---|---|---|");
    println!("| empty data dir | — | {empty_ms:.1} | | | |");
    let mut after = "a graceful stop";
    for i in 1..=args.restarts + 1 {
        let ((proc, addr, ca), ms) = start(&work_dir, &data).await?;
        let rss = proc.rss_kib().unwrap_or(0) as f64 / 1024.0;
        let fds = proc.open_fds().unwrap_or(0);
        let found = stored(&addr, &ca).await?;
        println!("| {i} | {after} | {ms:.1} | {rss:.1} | {fds} | {found} |");
        if found != records {
            bail!("the restarted broker has {found} records, {records} were written");
        }
        if i == args.restarts {
            after = "SIGKILL";
            proc.kill().await?;
        } else {
            proc.stop().await?;
        }
    }
    root.close()?;
    Ok(true)
}

/// Starts a broker on `data`; answers it and the milliseconds from spawning to READY.
async fn start(
    work_dir: &Path,
    data: &Path,
) -> Result<((ServerProcess, String, std::path::PathBuf), f64)> {
    let log = server::run_dir(work_dir, "quiver")?;
    let started = Instant::now();
    let broker = spawn_quiver_in(log, data, []).await?;
    Ok((broker, started.elapsed().as_secs_f64() * 1e3))
}

async fn connect(addr: &str, ca: &Path) -> Result<Client> {
    Ok(Client::connect_with(ClientOptions::new(addr, ca)).await?)
}

/// Writes `bytes` of `size`-byte records to [`TOPIC`], one batch's worth to each partition in
/// turn; answers the records written.
async fn fill(addr: &str, ca: &Path, partitions: u32, bytes: u64, size: usize) -> Result<u64> {
    let client = connect(addr, ca).await?;
    client
        .admin()
        .create_topic(NewTopic::new(TOPIC, partitions))
        .await?;
    let config = ProducerConfig {
        linger: Duration::from_millis(5),
        max_in_flight: 16,
        ..ProducerConfig::default()
    };
    let per_batch = (config.batch_bytes / (size + 32)).max(1) as u64;
    let producer = Producer::new(client.clone(), config);
    let value = Bytes::from(vec![b'q'; size]);
    let records = bytes / size as u64;
    for i in 0..records {
        let p = ((i / per_batch) % u64::from(partitions)) as u32;
        let rec = ProducerRecord::new(TOPIC, value.clone()).partition(p);
        producer.send(rec).await?;
    }
    producer.flush().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    client.close().await;
    Ok(records)
}

/// Records in [`TOPIC`] as the broker describes it.
async fn stored(addr: &str, ca: &Path) -> Result<u64> {
    let client = connect(addr, ca).await?;
    let d = client.admin().describe_topic(TOPIC).await?;
    client.close().await;
    Ok(d.partitions.iter().map(|p| p.log_end - p.log_start).sum())
}
