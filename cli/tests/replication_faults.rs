//! Replicated partitions under faults, on three real `quiver serve` processes
//! (docs/replication.md "Failures survived"): an idempotent `acks=all` producer and a consumer
//! run through a bounded series of random faults (SIGKILL and restart of any node, SIGSTOP and
//! SIGCONT of any node, a graceful restart), and through a rolling restart of every node. The
//! checker then compares the history of acknowledged writes with every replica's segment files:
//! no acknowledged record lost or written twice, each at the offset its acknowledgement named,
//! per-key order kept, the replicas identical, and the consumer's reading a gap-free prefix of
//! the final log.
//!
//! `QUIVER_CHAOS_FAULTS=N` runs more faults than the test command's few (a longer soak);
//! `QUIVER_CHAOS_SEED=S` replays a run's choice of faults (each run prints its seed).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{eventually, Layout};
use common::serve::Serve;
use quiver::{
    Acks, Client, ClientOptions, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig,
    ProducerRecord, SeekTo,
};

const TOPIC: &str = "chaos";
const PARTITIONS: u32 = 3;
/// Keys, each always sent to the same partition: their order is checked.
const KEYS: u32 = 6;
/// The faults of one random run in the test command (about six seconds each).
const DEFAULT_FAULTS: u32 = 6;

/// The two tests start three nodes each: one at a time on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL, down for the given time, started again.
    Kill(u64, Duration),
    /// SIGSTOP for the given time, then SIGCONT (a lagging or partitioned node).
    Stop(u64, Duration),
    /// SIGTERM (a graceful stop) and started again.
    Restart(u64),
}

/// A small deterministic generator: a printed seed replays a run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn random_faults() -> Vec<Fault> {
    let seed = std::env::var("QUIVER_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos() as u64 | 1);
    let count = std::env::var("QUIVER_CHAOS_FAULTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_FAULTS);
    eprintln!("chaos: seed {seed} (QUIVER_CHAOS_SEED={seed} replays it), {count} faults");
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let node = rng.next(3) + 1;
            let time = Duration::from_millis(1000 + rng.next(2500));
            match rng.next(3) {
                0 => Fault::Kill(node, time),
                1 => Fault::Stop(node, time),
                _ => Fault::Restart(node),
            }
        })
        .collect()
}

/// The three nodes, any of which may be down for a while.
struct Nodes {
    layout: Layout,
    procs: Vec<Option<Serve>>,
}

impl Nodes {
    fn start(layout: Layout) -> Nodes {
        let procs = (1..=3).map(|id| Some(layout.start(id))).collect();
        Nodes { layout, procs }
    }

    fn get(&self, id: u64) -> &Serve {
        self.procs[id as usize - 1].as_ref().unwrap()
    }

    async fn inflict(&mut self, fault: Fault) {
        eprintln!("chaos: {fault:?}");
        match fault {
            Fault::Kill(id, down) => {
                self.procs[id as usize - 1] = None;
                tokio::time::sleep(down).await;
                self.procs[id as usize - 1] = Some(self.layout.start(id));
            }
            Fault::Stop(id, stopped) => {
                self.get(id).signal(libc::SIGSTOP);
                tokio::time::sleep(stopped).await;
                self.get(id).signal(libc::SIGCONT);
            }
            Fault::Restart(id) => {
                if let Some(serve) = self.procs[id as usize - 1].take() {
                    let status = tokio::task::block_in_place(|| serve.terminate());
                    assert!(status.success(), "node {id} stopped with {status}");
                }
                self.procs[id as usize - 1] = Some(self.layout.start(id));
            }
        }
    }

    /// Waits until every partition has a leader and all three replicas in sync, as each node
    /// sees it, and each replica has what its leader had (so no two faults overlap: one node
    /// down at a time keeps `acks=all` going). The ISR may not have noticed a fault yet: the
    /// wait starts after the follower lag time.
    async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let mut clients = Vec::new();
        for id in 1..=3 {
            clients.push(self.layout.client(self.get(id), None).await);
        }
        for c in &clients {
            eventually(
                "every partition led with three in-sync replicas",
                || async {
                    let Ok(s) = c.admin().cluster_status().await else {
                        return false;
                    };
                    let parts: Vec<_> = s.partitions.iter().filter(|p| p.topic == TOPIC).collect();
                    parts.len() == PARTITIONS as usize
                        && parts
                            .iter()
                            .all(|p| p.isr.len() == 3 && p.leader_addr.is_some())
                },
            )
            .await;
        }
        let ends = log_ends(&clients).await;
        for c in &clients {
            eventually("every replica to have its leader's records", || async {
                let Ok(t) = c.admin().describe_topic(TOPIC).await else {
                    return false;
                };
                t.partitions
                    .iter()
                    .all(|p| p.log_end >= ends[p.partition as usize])
            })
            .await;
        }
    }
}

/// Each partition's log end at its leader.
async fn log_ends(clients: &[Client]) -> Vec<u64> {
    let status = clients[0].admin().cluster_status().await.unwrap();
    let mut ends = vec![0; PARTITIONS as usize];
    for p in status.partitions.iter().filter(|p| p.topic == TOPIC) {
        let leader = &clients[p.leader.unwrap() as usize - 1];
        let described = leader.admin().describe_topic(TOPIC).await.unwrap();
        ends[p.partition as usize] = described.partitions[p.partition as usize].log_end;
    }
    ends
}

/// A record the producer sent: its number (the value) and, if acknowledged, its partition and
/// offset (none for a duplicate older than what the leader remembers of the producer: a retry of
/// a batch appended before, acknowledged without its offset, as Kafka does).
type Sent = Vec<(u32, Option<(u32, Option<u64>)>)>;

/// Sends numbered records (key `k{n % KEYS}`, each key to one partition) until `stop`, and
/// returns every record with its acknowledgement.
async fn write_load(producer: Producer, stop: Arc<AtomicBool>) -> Sent {
    let mut deliveries = Vec::new();
    let mut n = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let key = n % KEYS;
        let rec = ProducerRecord::new(TOPIC, n.to_string())
            .key(format!("k{key}"))
            .partition(key % PARTITIONS);
        deliveries.push((n, producer.send(rec).await.unwrap()));
        n += 1;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut sent = Vec::new();
    for (n, d) in deliveries {
        match d.wait().await {
            Ok(meta) => sent.push((n, Some((meta.partition, meta.offset)))),
            Err(e) => {
                eprintln!("record {n} not acknowledged: {e}");
                sent.push((n, None));
            }
        }
    }
    sent
}

/// What the consumer read: per partition, (offset, value) in the order read.
type Read = BTreeMap<u32, Vec<(u64, String)>>;

/// Reads every partition from the start until `stop`, then until it reaches `ends`.
async fn read_load(
    client: Client,
    stop: Arc<AtomicBool>,
    ends: tokio::sync::watch::Receiver<Option<HashMap<u32, u64>>>,
) -> Read {
    let mut consumer = Consumer::new(client, TOPIC, ConsumerConfig::default());
    consumer.assign(&(0..PARTITIONS).collect::<Vec<_>>(), SeekTo::Earliest);
    let mut read = Read::new();
    loop {
        let batch = consumer.poll(Duration::from_millis(200)).await;
        let batch = batch.unwrap_or_else(|e| panic!("the consumer failed: {e}"));
        for r in batch {
            let value = String::from_utf8_lossy(&r.record.value).into_owned();
            read.entry(r.partition)
                .or_default()
                .push((r.record.offset, value));
        }
        if !stop.load(Ordering::Relaxed) {
            continue;
        }
        let Some(ends) = ends.borrow().clone() else {
            continue;
        };
        let done = (0..PARTITIONS).all(|p| {
            let end = ends.get(&p).copied().unwrap_or(0);
            consumer.position(p).unwrap_or(0) >= end
        });
        if done {
            return read;
        }
    }
}

/// Runs the load through `faults` and checks the outcome.
async fn survive(faults: Vec<Fault>) {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = Nodes::start(Layout::tuned(dir.path(), 1500));
    // Clients notice a silent (crashed or stopped) node after a few seconds.
    let connect = |id: u64| {
        let mut opts = ClientOptions::new(nodes.get(id).addr.clone(), nodes.layout.ca());
        opts.idle_timeout = Some(Duration::from_secs(3));
        Client::connect_with(opts)
    };
    let (pc, cc) = (connect(1).await.unwrap(), connect(2).await.unwrap());
    let mut t = NewTopic::new(TOPIC, PARTITIONS);
    t.replication_factor = Some(3);
    t.min_insync = Some(2);
    pc.admin().create_topic(t).await.unwrap();
    nodes.settle().await;

    let stop = Arc::new(AtomicBool::new(false));
    let config = ProducerConfig {
        acks: Acks::All,
        delivery_timeout: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    let writer = tokio::spawn(write_load(Producer::new(pc, config), stop.clone()));
    let (ends_tx, ends_rx) = tokio::sync::watch::channel(None);
    let reader = tokio::spawn(read_load(cc, stop.clone(), ends_rx));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for fault in faults {
        nodes.inflict(fault).await;
        nodes.settle().await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let sent = writer.await.unwrap();
    eprintln!(
        "chaos: {} records sent in {:?}, {} acknowledged",
        sent.len(),
        started.elapsed(),
        sent.iter().filter(|(_, a)| a.is_some()).count()
    );

    let logs = identical_replicas(&nodes).await;
    let ends = logs
        .iter()
        .map(|(p, log)| (*p, log.last().map_or(0, |(o, _)| o + 1)))
        .collect();
    ends_tx.send(Some(ends)).unwrap();
    let read = tokio::time::timeout(common::cluster::SETTLE, reader)
        .await
        .expect("the consumer reached the end of every partition")
        .unwrap();
    check_acknowledged(&sent, &logs);
    check_key_order(&logs);
    check_read(&read, &logs);
}

/// Waits until the three replicas of every partition hold the same records, and returns them.
async fn identical_replicas(nodes: &Nodes) -> BTreeMap<u32, Vec<(u64, String)>> {
    let mut logs = BTreeMap::new();
    for p in 0..PARTITIONS {
        eventually("the replicas to hold the same records", || async {
            let first = nodes.layout.replica_log(1, TOPIC, p);
            (2..=3).all(|id| nodes.layout.replica_log(id, TOPIC, p) == first)
        })
        .await;
        logs.insert(p, nodes.layout.replica_log(1, TOPIC, p));
    }
    logs
}

/// Every acknowledged record is in the log once, at the offset its acknowledgement named; no
/// record is in the log twice (the idempotent producer's retries are not written again).
fn check_acknowledged(sent: &Sent, logs: &BTreeMap<u32, Vec<(u64, String)>>) {
    let mut at: HashMap<String, Vec<(u32, u64)>> = HashMap::new();
    for (p, log) in logs {
        for (o, v) in log {
            at.entry(v.clone()).or_default().push((*p, *o));
        }
    }
    let twice: Vec<_> = at.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(twice.is_empty(), "records written twice: {twice:?}");
    let mut unnamed = 0;
    for (n, ack) in sent {
        let Some((partition, offset)) = *ack else {
            continue;
        };
        let found = at.get(&n.to_string()).map(|w| w[0]);
        match offset {
            Some(o) => assert_eq!(found, Some((partition, o)), "acknowledged record {n}"),
            None => {
                unnamed += 1;
                assert_eq!(
                    found.map(|f| f.0),
                    Some(partition),
                    "acknowledged record {n}"
                );
            }
        }
    }
    eprintln!("chaos: {unnamed} records acknowledged as old duplicates (no offset)");
}

/// The records of each key are in the order they were sent.
fn check_key_order(logs: &BTreeMap<u32, Vec<(u64, String)>>) {
    for (p, log) in logs {
        let mut last: HashMap<u32, u32> = HashMap::new();
        for (o, v) in log {
            let n: u32 = v.parse().unwrap();
            let prev = last.insert(n % KEYS, n);
            assert!(
                prev.is_none_or(|prev| prev < n),
                "partition {p} offset {o}: key k{} has {n} after {prev:?}",
                n % KEYS
            );
        }
    }
}

/// The consumer read each partition from offset 0 without a gap or a repeat, and what it read
/// is what the log holds (it never saw a record a failover then cut).
fn check_read(read: &Read, logs: &BTreeMap<u32, Vec<(u64, String)>>) {
    for (p, log) in logs {
        let got = read.get(p).cloned().unwrap_or_default();
        assert_eq!(got.len(), log.len(), "partition {p}: records read");
        for (i, ((o, v), want)) in got.iter().zip(log).enumerate() {
            assert_eq!(*o, i as u64, "partition {p}: read offsets {o} at {i}");
            assert_eq!((o, v), (&want.0, &want.1), "partition {p}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_random_faults() {
    survive(random_faults()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing() {
    survive((1..=3).map(Fault::Restart).collect()).await;
}
