//! Replicated partitions on three real `quiver serve` processes (docs/replication.md): a
//! follower stopped with SIGSTOP leaves the in-sync replicas and `acks=all` goes on with the
//! others (a topic needing all three refuses it with NotEnoughReplicas), then rejoins; the
//! partition leader killed with SIGKILL is replaced by an in-sync replica and produces go on;
//! a returning leader cuts the tail no in-sync replica acknowledged (leader epochs); consumers
//! read each partition from its leader, wherever they connected; leaders go back to their
//! preferred nodes after a restart; a fencing key fences a producer wherever its partitions
//! are led. The
//! checker reads every node's segment files: the replicas must hold the same records.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{eventually, Layout};
use common::serve::Serve;
use quiver::{
    Acks, Client, ClientError, Consumer, ConsumerConfig, ErrorCode, NewTopic, PartitionReplicas,
    Producer, ProducerConfig, ProducerRecord, SeekTo,
};

/// Short timeouts so that lag and death are noticed within a test's patience.
fn layout(dir: &Path) -> Layout {
    Layout::tuned(dir, 1500)
}

/// A partition's replicas as `client`'s node sees them.
async fn replicas(client: &Client, topic: &str) -> Option<PartitionReplicas> {
    let status = client.admin().cluster_status().await.ok()?;
    status.partitions.into_iter().find(|p| p.topic == topic)
}

/// Waits until `client`'s node sees `topic`/0 as `check` wants, and returns it.
async fn wait_for(
    client: &Client,
    topic: &str,
    what: &str,
    check: impl Fn(&PartitionReplicas) -> bool,
) -> PartitionReplicas {
    let deadline = std::time::Instant::now() + common::cluster::SETTLE;
    loop {
        let seen = replicas(client, topic).await;
        match seen {
            Some(p) if check(&p) => return p,
            _ if std::time::Instant::now() > deadline => {
                panic!("timed out waiting for {what}; last seen: {seen:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn create(client: &Client, name: &str, min_insync: u32) {
    let mut t = NewTopic::new(name, 1);
    t.replication_factor = Some(3);
    t.min_insync = Some(min_insync);
    // A forwarded create whose answer was lost (a busy start) is proposed again, and then
    // answers that the topic exists (docs/replication.md): it was created.
    match client.admin().create_topic(t).await {
        Ok(_) => {}
        Err(e) if e.code() == Some(ErrorCode::TopicExists) => {}
        Err(e) => panic!("creating {name}: {e}"),
    }
}

/// Sends `values` to partition 0 of `topic` and waits for every acknowledgement (the
/// producer finds the partition's leader from whichever node `client` is connected to).
async fn produce(
    client: &Client,
    topic: &str,
    values: impl Iterator<Item = u32>,
    acks: Acks,
) -> Result<(), ClientError> {
    let config = ProducerConfig {
        acks,
        retries: 0,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    let mut deliveries = Vec::new();
    for v in values {
        let rec = ProducerRecord::new(topic, v.to_string()).partition(0);
        deliveries.push(producer.send(rec).await?);
    }
    for d in deliveries {
        if let Err(e) = d.wait().await {
            return Err(ClientError::Protocol(format!("{e}: {:?}", e.code())));
        }
    }
    Ok(())
}

/// What a produce failed with.
async fn produce_code(client: &Client, topic: &str, acks: Acks) -> Option<ErrorCode> {
    let config = ProducerConfig {
        acks,
        retries: 0,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    let rec = ProducerRecord::new(topic, "x").partition(0);
    let delivery = producer.send(rec).await.ok()?;
    delivery.wait().await.err().and_then(|e| e.code())
}

/// The values of partition 0 of `topic` as node `id`'s segment files hold them.
fn replica_values(layout: &Layout, id: u64, topic: &str) -> Vec<String> {
    let log = layout.replica_log(id, topic, 0);
    log.into_iter().map(|(_, v)| v).collect()
}

/// Everything a consumer of partition 0 reads, up to the first empty poll.
async fn read_all(client: &Client, topic: &str) -> Vec<String> {
    let mut consumer = Consumer::new(client.clone(), topic, ConsumerConfig::default());
    consumer.assign(&[0], SeekTo::Earliest);
    let mut out = Vec::new();
    loop {
        // The first poll may have to find the partition's leader.
        let wait = if out.is_empty() { 5000 } else { 500 };
        let batch = consumer.poll(Duration::from_millis(wait)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        out.extend(
            batch
                .iter()
                .map(|r| String::from_utf8_lossy(&r.record.value).into_owned()),
        );
    }
    out
}

fn strings(values: impl Iterator<Item = u32>) -> Vec<String> {
    values.map(|v| v.to_string()).collect()
}

fn node(nodes: &[Option<Serve>], id: u64) -> &Serve {
    nodes[id as usize - 1].as_ref().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_survives_a_lagging_follower_and_its_leaders_death() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout(dir.path());
    let mut nodes: Vec<Option<Serve>> = (1..=3).map(|id| Some(layout.start(id))).collect();
    let first = layout.client(node(&nodes, 1), None).await;
    create(&first, "r", 2).await;
    create(&first, "strict", 3).await;
    let all_in = |p: &PartitionReplicas| p.isr.len() == 3 && p.leader_addr.is_some();
    let r = wait_for(&first, "r", "r placed, all in sync", all_in).await;
    let s = wait_for(&first, "strict", "strict placed", all_in).await;
    let leader = r.leader.unwrap();
    // The follower to stop leads neither partition.
    let lagger = (1..=3)
        .find(|n| *n != leader && Some(*n) != s.leader)
        .unwrap();
    let lc = layout.client(node(&nodes, leader), None).await;
    produce(&lc, "r", 0..50, Acks::All).await.unwrap();
    let sc = layout.client(node(&nodes, s.leader.unwrap()), None).await;
    produce(&sc, "strict", 0..5, Acks::All).await.unwrap();

    // A stopped follower leaves the ISR; acks=all goes on with the two others.
    node(&nodes, lagger).signal(libc::SIGSTOP);
    let lags = |p: &PartitionReplicas| !p.isr.contains(&lagger);
    wait_for(&lc, "r", "the stopped follower out of r's ISR", lags).await;
    produce(&lc, "r", 50..100, Acks::All).await.unwrap();
    // A topic that wants all three copies refuses acks=all, clearly, and takes acks=leader.
    wait_for(
        &sc,
        "strict",
        "the stopped follower out of strict's ISR",
        lags,
    )
    .await;
    assert_eq!(
        produce_code(&sc, "strict", Acks::All).await,
        Some(ErrorCode::NotEnoughReplicas)
    );
    produce(&sc, "strict", 5..6, Acks::Leader).await.unwrap();

    // Resumed, it catches up and rejoins.
    node(&nodes, lagger).signal(libc::SIGCONT);
    wait_for(&lc, "r", "the follower back in r's ISR", |p| {
        p.isr.len() == 3
    })
    .await;
    wait_for(&sc, "strict", "the follower back in strict's ISR", |p| {
        p.isr.len() == 3
    })
    .await;
    produce(&sc, "strict", 6..7, Acks::All).await.unwrap();

    // The leader dies: an in-sync replica takes over in a later epoch and produces go on.
    nodes[leader as usize - 1] = None;
    let other = layout.client(node(&nodes, lagger), None).await;
    let moved = |p: &PartitionReplicas| {
        p.leader.is_some_and(|l| l != leader) && p.epoch > r.epoch && p.leader_addr.is_some()
    };
    let after = wait_for(&other, "r", "a new leader of r", moved).await;
    let new_leader = after.leader.unwrap();
    let nc = layout.client(node(&nodes, new_leader), None).await;
    produce(&nc, "r", 100..150, Acks::All).await.unwrap();
    // A consumer connected to a follower is refused with NotLeader and reads from the leader.
    let follower = (1..=3).find(|n| *n != leader && *n != new_leader).unwrap();
    let fc = layout.client(node(&nodes, follower), None).await;
    assert_eq!(read_all(&fc, "r").await, strings(0..150));

    // The old leader comes back as a follower, catches up and rejoins.
    nodes[leader as usize - 1] = Some(layout.start(leader));
    wait_for(&nc, "r", "the old leader back in sync", |p| {
        p.isr.len() == 3 && p.high_watermark == Some(150)
    })
    .await;
    let want = strings(0..150);
    assert_eq!(read_all(&nc, "r").await, want);
    for id in 1..=3 {
        eventually("every replica to hold the same records", || async {
            replica_values(&layout, id, "r") == want
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_leader_cuts_the_tail_no_in_sync_replica_had() {
    let dir = tempfile::tempdir().unwrap();
    // The followers stay in the ISR while they are stopped: a shrink the leader asked for
    // then could commit once they resume (its request waits in a stopped node's socket), and
    // leave the dead leader alone in the ISR, the partition offline until it returns.
    let layout = Layout::tuned(dir.path(), 20_000);
    let mut nodes: Vec<Option<Serve>> = (1..=3).map(|id| Some(layout.start(id))).collect();
    let first = layout.client(node(&nodes, 1), None).await;
    create(&first, "t", 2).await;
    let all_in = |p: &PartitionReplicas| p.isr.len() == 3 && p.leader_addr.is_some();
    let t = wait_for(&first, "t", "t placed, all in sync", all_in).await;
    let leader = t.leader.unwrap();
    let followers: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();
    let lc = layout.client(node(&nodes, leader), None).await;
    produce(&lc, "t", 0..10, Acks::All).await.unwrap();

    // Both followers stop; the leader appends five records nobody copies (acks=leader), and
    // consumers do not see them (they are past the high watermark).
    for f in &followers {
        node(&nodes, *f).signal(libc::SIGSTOP);
    }
    // A fetch they sent before stopping is answered (empty) within its long-poll: only then
    // can nothing reach them (an answer waiting in a stopped process's socket is read later).
    tokio::time::sleep(Duration::from_secs(1)).await;
    produce(&lc, "t", 10..15, Acks::Leader).await.unwrap();
    let described = lc.admin().describe_topic("t").await.unwrap();
    assert_eq!(described.partitions[0].log_end, 15);
    assert_eq!(read_all(&lc, "t").await, strings(0..10));

    // It dies; the followers resume and one of them is elected.
    nodes[leader as usize - 1] = None;
    for f in &followers {
        node(&nodes, *f).signal(libc::SIGCONT);
    }
    let fc = layout.client(node(&nodes, followers[0]), None).await;
    let after = wait_for(&fc, "t", "a new leader of t", |p| {
        p.leader.is_some_and(|l| l != leader) && p.leader_addr.is_some()
    })
    .await;
    let nc = layout
        .client(node(&nodes, after.leader.unwrap()), None)
        .await;
    produce(&nc, "t", 100..105, Acks::All).await.unwrap();

    // Back, the old leader cuts its five unreplicated records and copies the new leader's.
    nodes[leader as usize - 1] = Some(layout.start(leader));
    wait_for(&nc, "t", "the old leader back in sync", |p| {
        p.isr.len() == 3 && p.high_watermark == Some(15)
    })
    .await;
    let want: Vec<String> = strings((0..10).chain(100..105));
    assert_eq!(read_all(&nc, "t").await, want);
    for id in 1..=3 {
        eventually("every replica to hold the new leader's records", || async {
            replica_values(&layout, id, "t") == want
        })
        .await;
    }
    let log = node(&nodes, leader).log_text();
    assert!(log.contains("cut the log to its leader's"), "{log}");
}

/// Every record of a topic's partition `p`, read from its leader.
async fn read_partition(
    layout: &Layout,
    nodes: &[Option<Serve>],
    topic: &str,
    p: u32,
) -> Vec<String> {
    let any = nodes.iter().flatten().next().unwrap();
    let c = layout.client(any, None).await;
    let status = c.admin().cluster_status().await.unwrap();
    let leader = status
        .partitions
        .iter()
        .find(|r| r.topic == topic && r.partition == p)
        .and_then(|r| r.leader)
        .unwrap();
    let lc = layout.client(node(nodes, leader), None).await;
    let mut consumer = Consumer::new(lc, topic, ConsumerConfig::default());
    consumer.assign(&[p], SeekTo::Earliest);
    let mut out = Vec::new();
    loop {
        let batch = consumer.poll(Duration::from_millis(500)).await.unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(
            batch
                .iter()
                .map(|r| String::from_utf8_lossy(&r.record.value).into_owned()),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_follows_its_partitions_leaders_through_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout(dir.path());
    let mut nodes: Vec<Option<Serve>> = (1..=3).map(|id| Some(layout.start(id))).collect();
    // A cluster client notices a silent (crashed) node after a few seconds.
    let mut opts = quiver::ClientOptions::new(node(&nodes, 1).addr.clone(), layout.ca());
    opts.idle_timeout = Some(Duration::from_secs(3));
    let first = Client::connect_with(opts).await.unwrap();
    let mut t = NewTopic::new("f", 3);
    t.replication_factor = Some(3);
    t.min_insync = Some(2);
    first.admin().create_topic(t).await.unwrap();
    eventually("f placed, all in sync", || async {
        let s = first.admin().cluster_status().await.unwrap();
        let f: Vec<_> = s.partitions.iter().filter(|p| p.topic == "f").collect();
        f.len() == 3
            && f.iter()
                .all(|p| p.isr.len() == 3 && p.leader_addr.is_some())
    })
    .await;
    // One idempotent acks=all producer, connected to node 1 only: it finds each partition's
    // leader itself.
    let config = ProducerConfig {
        acks: Acks::All,
        linger: Duration::ZERO,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(first.clone(), config);
    let total = 600u32;
    let mut deliveries = Vec::new();
    let mut killed = None;
    let started = std::time::Instant::now();
    for i in 0..total {
        let rec = ProducerRecord::new("f", i.to_string()).partition(i % 3);
        deliveries.push(producer.send(rec).await.unwrap());
        if i == total / 4 {
            // The leader of partition 0 crashes mid-stream.
            let s = first.admin().cluster_status().await.unwrap();
            let leader = s
                .partitions
                .iter()
                .find(|p| p.topic == "f" && p.partition == 0);
            let leader = leader.and_then(|p| p.leader).unwrap();
            nodes[leader as usize - 1] = None;
            killed = Some(leader);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut acked = Vec::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let meta = d.wait().await;
        assert!(meta.is_ok(), "record {i}: {meta:?}");
        acked.push(i as u32);
    }
    eprintln!(
        "{total} acks=all records through a leader crash (node {killed:?}) in {:?}",
        started.elapsed()
    );
    // Every acknowledged record exactly once, in order per partition.
    let mut seen = Vec::new();
    for p in 0..3 {
        let values: Vec<u32> = read_partition(&layout, &nodes, "f", p)
            .await
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "partition {p}: {values:?}"
        );
        assert!(
            values.iter().all(|v| v % 3 == p),
            "partition {p}: {values:?}"
        );
        seen.extend(values);
    }
    seen.sort_unstable();
    assert_eq!(seen, acked);
}

/// Whether every partition of the cluster (the delay shards too) is led by its preferred
/// replica, with all three in sync.
async fn all_preferred(client: &Client) -> bool {
    let Ok(status) = client.admin().cluster_status().await else {
        return false;
    };
    !status.partitions.is_empty()
        && status
            .partitions
            .iter()
            .all(|p| p.leader == p.replicas.first().copied() && p.isr.len() == 3)
}

/// Leaders go back to their preferred nodes (`leader_rebalance_ms`): the preferred leader of a
/// partition, stopped gracefully, hands it over; started again and back in sync, it leads it
/// again, and every record acknowledged before, between and after the moves is there once, on
/// every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaders_return_to_their_preferred_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::tuned_with(dir.path(), 1500, "leader_rebalance_ms = 1000\n");
    let mut nodes: Vec<Option<Serve>> = (1..=3).map(|id| Some(layout.start(id))).collect();
    let first = layout.client(node(&nodes, 1), None).await;
    create(&first, "spread", 1).await;
    let p = wait_for(&first, "spread", "placed, all in sync", |p| {
        p.isr.len() == 3
    })
    .await;
    let preferred = p.replicas[0];
    eventually("every partition led by its preferred node", || {
        all_preferred(&first)
    })
    .await;
    produce(&first, "spread", 0..10, Acks::All).await.unwrap();

    let other = (1..=3).find(|n| *n != preferred).unwrap();
    let watcher = layout.client(node(&nodes, other), None).await;
    let stopped = nodes[preferred as usize - 1].take().unwrap();
    let status = tokio::task::block_in_place(|| stopped.terminate());
    assert!(status.success(), "{status}");
    wait_for(&watcher, "spread", "led elsewhere", |p| {
        p.leader.is_some_and(|l| l != preferred)
    })
    .await;
    produce(&watcher, "spread", 10..20, Acks::All)
        .await
        .unwrap();

    nodes[preferred as usize - 1] = Some(layout.start(preferred));
    eventually("every partition led by its preferred node again", || {
        all_preferred(&watcher)
    })
    .await;
    produce(&watcher, "spread", 20..30, Acks::All)
        .await
        .unwrap();
    assert_eq!(read_all(&watcher, "spread").await, strings(0..30));
    // Every replica holds the same records (followers copy within a fetch or two).
    eventually("the replicas identical", || async {
        (1..=3).all(|id| replica_values(&layout, id, "spread") == strings(0..30))
    })
    .await;
}

/// A client that notices a crashed node after a few seconds.
async fn quick_client(layout: &Layout, node: &Serve) -> Client {
    let mut opts = quiver::ClientOptions::new(node.addr.clone(), layout.ca());
    opts.idle_timeout = Some(Duration::from_secs(3));
    Client::connect_with(opts).await.unwrap()
}

/// Fencing keys hold across the cluster: a producer's id taken under a key through one node
/// fences the key's earlier producer, which took its id through another node, at whichever
/// node leads the partition after its leader (on a third node) dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fencing_key_fences_across_nodes_and_failovers() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout(dir.path());
    let mut nodes: Vec<Option<Serve>> = (1..=3).map(|id| Some(layout.start(id))).collect();
    let first = layout.client(node(&nodes, 1), None).await;
    create(&first, "ledger", 2).await;
    let p = wait_for(&first, "ledger", "placed, all in sync", |p| {
        p.isr.len() == 3
    })
    .await;
    let leader = p.leader.unwrap();
    let others: Vec<u64> = (1..=3).filter(|n| *n != leader).collect();
    let fenced = |client: Client| {
        let config = ProducerConfig {
            fencing_key: Some("ledger-writer".into()),
            acks: Acks::All,
            ..ProducerConfig::default()
        };
        Producer::new(client, config)
    };
    let send = |p: &Producer, v: &'static str| {
        let p = p.clone();
        async move {
            let d = p
                .send_now(ProducerRecord::new("ledger", v).partition(0))
                .await?;
            d.wait().await.map(|_| ())
        }
    };
    let old = fenced(quick_client(&layout, node(&nodes, others[0])).await);
    old.init().await.unwrap();
    send(&old, "old-1").await.unwrap();
    let new = fenced(quick_client(&layout, node(&nodes, others[1])).await);
    new.init().await.unwrap();

    // The leader dies before the old producer sends again: the partition's next leader, which
    // applied the fence before the election that made it leader (both go through Raft, in
    // order), refuses the old producer's batch itself.
    drop(nodes[leader as usize - 1].take());
    let err = send(&old, "old-2").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProducerFenced), "{err}");
    send(&new, "new-1").await.unwrap();
    let reader = quick_client(&layout, node(&nodes, others[0])).await;
    assert_eq!(read_all(&reader, "ledger").await, ["old-1", "new-1"]);
}
