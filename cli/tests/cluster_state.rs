//! Consumers' state on three real `quiver serve` processes (docs/replication.md "Consumer
//! groups", "Queue mode", "Delayed delivery"): consumer-group members connected to different
//! nodes form one group (the Raft leader coordinates it, the other nodes forward, the web
//! console of any node shows its members), committed
//! offsets reach every node through Raft, and when the coordinator's node is killed (a
//! member's connection with it) the group resumes on the new one from its committed offsets.
//! Queue consumers lease from every partition leader wherever they connected, and a
//! partition's new leader resumes from the settled points its previous one replicated. A
//! delayed record held by a leader that stops gracefully reaches the partition's new leader,
//! once; delayed records whose delay shard's leader is killed reach their topic from the
//! shard's new leader, and a cancel made through another node holds. A queue's dead-letter
//! topic is created and replicated through the cluster.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{eventually, Layout, SETTLE};
use common::serve::Serve;
use quiver::{
    Acks, Client, ClientOptions, CommitMode, Consumer, ConsumerConfig, GroupConfig, GroupConsumer,
    NewTopic, Producer, ProducerConfig, ProducerRecord, QueueConfig, QueueConsumer, SeekTo,
    TopicPartition,
};

const TOPIC: &str = "orders";

async fn produce(client: &Client, values: std::ops::Range<u32>) {
    produce_to(client, TOPIC, values).await
}

/// Sends `values` round robin over three partitions of `topic`, `acks=all`, and waits.
async fn produce_to(client: &Client, topic: &str, values: std::ops::Range<u32>) {
    let config = ProducerConfig {
        acks: Acks::All,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    let mut deliveries = Vec::new();
    for v in values {
        let rec = ProducerRecord::new(topic, v.to_string()).partition(v % 3);
        deliveries.push(producer.send(rec).await.unwrap());
    }
    for d in deliveries {
        d.wait().await.unwrap();
    }
}

/// A client that notices a killed node within a few seconds.
async fn connect(layout: &Layout, node: &Serve) -> Client {
    let mut opts = ClientOptions::new(node.addr.clone(), layout.ca());
    opts.idle_timeout = Some(Duration::from_secs(3));
    Client::connect_with(opts).await.unwrap()
}

fn config() -> GroupConfig {
    GroupConfig {
        commit: CommitMode::Manual,
        heartbeat_interval: Duration::from_millis(200),
        ..GroupConfig::new("billing", [TOPIC])
    }
}

/// The numbers the records carry.
fn numbers(records: &[quiver::ConsumedRecord]) -> Vec<u32> {
    let number = |r: &quiver::ConsumedRecord| String::from_utf8_lossy(&r.record.value).parse();
    records.iter().map(|r| number(r).unwrap()).collect()
}

/// Polls `members` (round robin) until `want` distinct values are read or the time is up;
/// commits. Returns every value read, repeats included.
async fn consume(members: &mut [GroupConsumer], want: usize) -> Vec<u32> {
    let deadline = Instant::now() + SETTLE;
    let mut got = Vec::new();
    let distinct = |got: &[u32]| got.iter().collect::<BTreeSet<_>>().len();
    while distinct(&got) < want && Instant::now() < deadline {
        for m in members.iter_mut() {
            let records = m.poll(Duration::from_millis(100)).await.unwrap();
            got.extend(numbers(&records));
        }
    }
    for m in members.iter_mut() {
        commit(m).await;
    }
    got
}

/// Commits, again while the group settles on a new coordinator (a member may be joining
/// again right after it moved).
async fn commit(member: &mut GroupConsumer) {
    let deadline = Instant::now() + SETTLE;
    loop {
        match member.commit().await {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("commit failed ({e}); polling and committing again");
                let _ = member.poll(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("commit: {e}"),
        }
    }
}

/// Polls the two members until the group has settled (the second one's join may still be
/// going on when the first has read everything): their assignments split the three partitions
/// and each has read its partitions to the end (a round of polls brings nothing). Returns what
/// they read meanwhile.
async fn settled_split(members: &mut [GroupConsumer]) -> Vec<u32> {
    let mut read = Vec::new();
    let owned = |m: &GroupConsumer| m.assignment().into_iter().collect::<BTreeSet<_>>();
    let all: BTreeSet<TopicPartition> = (0..3).map(|p| TopicPartition::new(TOPIC, p)).collect();
    let deadline = Instant::now() + SETTLE;
    let mut drained = false;
    loop {
        let (a, b) = (owned(&members[0]), owned(&members[1]));
        let union: BTreeSet<_> = a.union(&b).cloned().collect();
        let split = a.is_disjoint(&b) && union == all && !a.is_empty() && !b.is_empty();
        if split && drained {
            return read;
        }
        assert!(Instant::now() < deadline, "never split: {a:?} and {b:?}");
        drained = true;
        for m in members.iter_mut() {
            let records = m.poll(Duration::from_millis(300)).await.unwrap();
            drained &= records.is_empty();
            read.extend(numbers(&records));
        }
    }
}

/// Waits until `client`'s node has the group's commits at `want` on the three partitions
/// (a follower applies them a heartbeat after the coordinator).
async fn committed_at(client: &Client, want: u64) {
    eventually("the group's commits on the node", || async {
        let Ok(d) = client.admin().describe_group("billing").await else {
            return false;
        };
        let committed: Vec<_> = d.partitions.iter().map(|p| p.committed).collect();
        committed == vec![Some(want); 3]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_spans_nodes_and_survives_its_coordinators_death() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::tuned(dir.path(), 1500);
    let mut nodes: Vec<Option<Serve>> = (1..=3).map(|id| Some(layout.start(id))).collect();
    let first = layout.client(nodes[0].as_ref().unwrap(), None).await;
    create_placed(&first, TOPIC, 3).await;
    let coordinator = first
        .admin()
        .cluster_status()
        .await
        .unwrap()
        .leader
        .unwrap();
    let other = (1..=3).find(|n| *n != coordinator).unwrap();
    let serve = |id: u64| nodes[id as usize - 1].as_ref().unwrap();
    let clients = [
        connect(&layout, serve(other)).await,
        connect(&layout, serve(coordinator)).await,
    ];
    produce(&clients[0], 0..300).await;

    // Two members on two nodes, one of which forwards to the other: one group, the partitions
    // split.
    let mut members = Vec::new();
    for c in &clients {
        members.push(GroupConsumer::join(c.clone(), config()).await.unwrap());
    }
    let mut got = consume(&mut members, 300).await;
    got.extend(settled_split(&mut members).await);
    // Committed as settled (a commit made before covered the partitions a member held then).
    for m in members.iter_mut() {
        commit(m).await;
    }
    // At least once: a member may read again what one that lost its partition in the second
    // one's join had read but not committed.
    got.sort_unstable();
    got.dedup();
    assert_eq!(got, (0..300).collect::<Vec<_>>());
    // Every node holds the commits.
    for id in 1..=3 {
        let c = layout.client(serve(id), None).await;
        committed_at(&c, 100).await;
    }
    // The web console of a node that does not coordinate shows the group as its coordinator
    // does: both members.
    let addr = serve(other).http.clone();
    let (status, body) =
        tokio::task::spawn_blocking(move || common::http_get(&addr, "/api/groups"))
            .await
            .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"member_count\":2"), "{body}");

    // The coordinator's node dies, and with it the second member's connection: a new Raft
    // leader coordinates, both members reach it through the live nodes, join it again and go
    // on from the committed offsets.
    nodes[coordinator as usize - 1] = None;
    produce(&clients[0], 300..330).await;
    let more = consume(&mut members, 30).await;
    let mut more: Vec<u32> = more.into_iter().filter(|v| *v >= 300).collect();
    more.sort_unstable();
    more.dedup();
    assert_eq!(more, (300..330).collect::<Vec<_>>());
    for m in members {
        m.close().await.unwrap();
    }
    committed_at(&clients[0], 110).await;
}

/// Leases and acks with `consumers` until `want` distinct values came (or the time is up);
/// returns every delivery, repeats included.
async fn drain(consumers: &[QueueConsumer], want: usize) -> Vec<u32> {
    let deadline = Instant::now() + SETTLE;
    let (mut all, mut distinct) = (Vec::new(), BTreeSet::new());
    while distinct.len() < want && Instant::now() < deadline {
        for q in consumers {
            let records = q.poll().await.unwrap();
            q.ack(&records).await.unwrap();
            for r in &records {
                let v: u32 = String::from_utf8_lossy(&r.record.value).parse().unwrap();
                all.push(v);
                distinct.insert(v);
            }
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_consumers_lease_from_every_leader_and_resume_after_a_failover() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::tuned(dir.path(), 1500);
    let mut nodes: Vec<Option<Serve>> = (1..=3).map(|id| Some(layout.start(id))).collect();
    let first = layout.client(nodes[0].as_ref().unwrap(), None).await;
    create_placed(&first, "jobs", 3).await;
    let status = first.admin().cluster_status().await.unwrap();
    let p0 = status
        .partitions
        .iter()
        .find(|p| p.topic == "jobs" && p.partition == 0);
    let doomed = p0.and_then(|p| p.leader).unwrap();
    let survivor = (1..=3).find(|n| *n != doomed).unwrap();
    let serve = |id: u64| nodes[id as usize - 1].as_ref().unwrap();
    // One consumer on the node that will die, one on another: each leases from every leader.
    let clients = [
        connect(&layout, serve(doomed)).await,
        connect(&layout, serve(survivor)).await,
    ];
    let config = QueueConfig {
        max_wait: Duration::from_millis(300),
        ..QueueConfig::default()
    };
    let consumers: Vec<QueueConsumer> = clients
        .iter()
        .map(|c| QueueConsumer::new(c.clone(), "workers", "jobs", config.clone()))
        .collect();
    produce_to(&clients[1], "jobs", 0..300).await;
    let mut got = drain(&consumers, 300).await;
    got.sort_unstable();
    assert_eq!(got, (0..300).collect::<Vec<_>>(), "each record leased once");

    // The settled points reach every node; partition 0's leader dies; its new leader resumes
    // from them: only the new records come.
    tokio::time::sleep(Duration::from_secs(1)).await;
    nodes[doomed as usize - 1] = None;
    produce_to(&clients[1], "jobs", 300..330).await;
    let more = drain(&consumers, 30).await;
    let old: Vec<_> = more.iter().filter(|v| **v < 300).collect();
    assert!(
        old.is_empty(),
        "acknowledged records delivered again: {old:?}"
    );
    let distinct: BTreeSet<u32> = more.into_iter().collect();
    assert_eq!(distinct, (300..330).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_record_held_by_a_stopped_leader_reaches_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::tuned(dir.path(), 1500);
    let mut nodes: Vec<Option<Serve>> = (1..=3).map(|id| Some(layout.start(id))).collect();
    let first = layout.client(nodes[0].as_ref().unwrap(), None).await;
    create_placed(&first, "later", 1).await;
    let leader = eventually_led(&first, "later").await;
    let holder = connect(&layout, nodes[leader as usize - 1].as_ref().unwrap()).await;
    let config = ProducerConfig {
        acks: Acks::All,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(holder, config);
    let rec = ProducerRecord::new("later", "due soon")
        .partition(0)
        .delay(Duration::from_secs(4));
    let meta = producer.send(rec).await.unwrap().wait().await.unwrap();
    assert!(meta.delay_id.is_some(), "{meta:?}");

    // The leader holding it stops gracefully (the partition goes to another node) and comes
    // back as a follower: it delivers the record at the new leader, once.
    let other = (1..=3).find(|n| *n != leader).unwrap();
    let watcher = layout
        .client(nodes[other as usize - 1].as_ref().unwrap(), None)
        .await;
    let serve = nodes[leader as usize - 1].take().unwrap();
    let log = serve.log.clone();
    let status = tokio::task::block_in_place(|| serve.terminate());
    assert!(status.success(), "{status}");
    // Handed over before it stopped: another node leads within a heartbeat or so, sooner than
    // the controller could notice a silent node (node_timeout_ms = 2000).
    let deadline = Instant::now() + Duration::from_millis(1000);
    loop {
        let s = watcher.admin().cluster_status().await.unwrap();
        let p = s.partitions.iter().find(|p| p.topic == "later").unwrap();
        if p.leader.is_some_and(|l| l != leader) {
            break;
        }
        let log = log.lock().unwrap().clone();
        assert!(Instant::now() < deadline, "not handed over: {p:?}\n{log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nodes[leader as usize - 1] = Some(layout.start(leader));
    let reader = connect(&layout, nodes[other as usize - 1].as_ref().unwrap()).await;
    let mut consumer = Consumer::new(reader, "later", ConsumerConfig::default());
    consumer.assign(&[0], SeekTo::Earliest);
    let deadline = Instant::now() + SETTLE;
    let mut got = Vec::new();
    while Instant::now() < deadline && got.is_empty() {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            got.push(String::from_utf8_lossy(&r.record.value).into_owned());
        }
    }
    // Nothing more comes (delivered once).
    for r in consumer.poll(Duration::from_secs(2)).await.unwrap() {
        got.push(String::from_utf8_lossy(&r.record.value).into_owned());
    }
    assert_eq!(got, vec!["due soon".to_string()]);
}

/// A record out of queue deliveries goes to `T.dlq`, created through the cluster (every node
/// lists it, replicated three times) and written at its leader: it is still there after the
/// node that buried it dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_is_created_and_replicated_through_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::tuned(dir.path(), 1500);
    let mut nodes: Vec<Option<Serve>> = (1..=3).map(|id| Some(layout.start(id))).collect();
    let first = layout.client(nodes[0].as_ref().unwrap(), None).await;
    create_placed(&first, "chores", 1).await;
    let burier = eventually_led(&first, "chores").await;
    let other = (1..=3).find(|n| *n != burier).unwrap();
    let client = connect(&layout, nodes[other as usize - 1].as_ref().unwrap()).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let rec = ProducerRecord::new("chores", "poison").partition(0);
    producer.send(rec).await.unwrap().wait().await.unwrap();
    let config = QueueConfig {
        max_wait: Duration::from_millis(300),
        max_deliveries: 1,
        ..QueueConfig::default()
    };
    let consumer = QueueConsumer::new(client.clone(), "workers", "chores", config);
    let deadline = Instant::now() + SETTLE;
    let records = loop {
        let records = consumer.poll().await.unwrap();
        if !records.is_empty() {
            break records;
        }
        assert!(Instant::now() < deadline, "never leased");
    };
    consumer.nack(&records, Duration::ZERO).await.unwrap();

    let dlq = eventually_led(&first, "chores.dlq").await;
    for node in nodes.iter().flatten() {
        let c = layout.client(node, None).await;
        eventually("every node lists the dead-letter topic", || async {
            let topics = c.admin().list_topics().await.unwrap();
            topics.iter().any(|t| t.name == "chores.dlq")
        })
        .await;
    }
    // The burying node dies (and the dead-letter topic's leader, if that is another node,
    // stays): the dead letter is read from whichever node leads it now.
    drop(nodes[burier as usize - 1].take());
    let survivor = (1..=3).find(|n| *n != burier).unwrap();
    let reader = connect(&layout, nodes[survivor as usize - 1].as_ref().unwrap()).await;
    let mut dead = Consumer::new(reader, "chores.dlq", ConsumerConfig::default());
    dead.assign(&[0], SeekTo::Earliest);
    let deadline = Instant::now() + SETTLE;
    let mut got = Vec::new();
    while got.is_empty() && Instant::now() < deadline {
        got = dead.poll(Duration::from_millis(500)).await.unwrap();
    }
    assert_eq!(got.len(), 1, "dead-letter topic led by {dlq}");
    assert_eq!(&got[0].record.value[..], b"poison");
}

/// Delayed records live in the replicated delay shards: when the node leading the shard that
/// holds them is killed (SIGKILL, before they are due), the shard's new leader delivers every
/// acknowledged one, once; a record cancelled through a node that does not lead its shard
/// stays cancelled after the failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_records_survive_the_death_of_their_shards_leader() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::tuned(dir.path(), 1500);
    let mut nodes: Vec<Option<Serve>> = (1..=3).map(|id| Some(layout.start(id))).collect();
    let first = layout.client(nodes[0].as_ref().unwrap(), None).await;
    create_placed(&first, "later", 3).await;
    for k in 0..3 {
        eventually_led_partition(&first, SHARDS, k).await;
    }
    let producer = Producer::new(
        connect(&layout, nodes[0].as_ref().unwrap()).await,
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let mut ids = Vec::new();
    for v in 0..30u32 {
        let rec = ProducerRecord::new("later", v.to_string())
            .partition(v % 3)
            .delay(Duration::from_secs(6));
        let meta = producer.send(rec).await.unwrap().wait().await.unwrap();
        ids.push(meta.delay_id.expect("held"));
    }
    // Record 0's shard, from its id (the shard's number is in the high bits), and its leader.
    let shard = (ids[0] >> 48) as u32 - 1;
    let status = first.admin().cluster_status().await.unwrap();
    let victim = status
        .partitions
        .iter()
        .find(|p| p.topic == SHARDS && p.partition == shard)
        .and_then(|p| p.leader)
        .unwrap();
    // Cancelled through a node that does not lead the shard: handed to its leader.
    let other = (1..=3).find(|n| *n != victim).unwrap();
    let canceller = layout
        .client(nodes[other as usize - 1].as_ref().unwrap(), None)
        .await;
    assert_eq!(
        canceller.admin().cancel_delayed(ids[0]).await.unwrap(),
        "later"
    );
    assert!(
        canceller.admin().cancel_delayed(ids[0]).await.is_err(),
        "cancelled twice"
    );
    // Counted in every shard, whichever node is asked.
    let described = canceller.admin().describe_topic("later").await.unwrap();
    assert_eq!(described.pending_delayed, 29);

    drop(nodes[victim as usize - 1].take()); // SIGKILL
    let reader = connect(&layout, nodes[other as usize - 1].as_ref().unwrap()).await;
    let mut consumer = Consumer::new(reader, "later", ConsumerConfig::default());
    consumer.assign(&[0, 1, 2], SeekTo::Earliest);
    let deadline = Instant::now() + SETTLE + Duration::from_secs(6);
    let mut got: Vec<u32> = Vec::new();
    while Instant::now() < deadline && got.len() < 29 {
        let records = consumer.poll(Duration::from_millis(500)).await.unwrap();
        got.extend(with_ids(records, &ids));
    }
    // Nothing more comes (once each; the cancelled one never).
    let records = consumer.poll(Duration::from_secs(2)).await.unwrap();
    got.extend(with_ids(records, &ids));
    got.sort_unstable();
    assert_eq!(got, (1..30).collect::<Vec<_>>());
}

/// The numbers the records carry, each checked to carry the delay id its producer was given
/// (`ids`, by number) in its `quiver-delay-id` header.
fn with_ids(records: Vec<quiver::ConsumedRecord>, ids: &[u64]) -> Vec<u32> {
    records
        .iter()
        .map(|r| {
            let v: u32 = String::from_utf8_lossy(&r.record.value).parse().unwrap();
            let id = r.record.header("quiver-delay-id").map(|h| h.to_vec());
            let want = ids[v as usize].to_string().into_bytes();
            assert_eq!(id, Some(want), "record {v}");
            v
        })
        .collect()
}

/// The internal topic of the delay shards (one partition per node).
const SHARDS: &str = "__quiver.delay";

/// Waits until `topic`'s partition 0 has a leader and three in-sync replicas; returns the leader.
async fn eventually_led(client: &Client, topic: &str) -> u64 {
    eventually_led_partition(client, topic, 0).await
}

/// Waits until `topic`'s partition `partition` has a leader and three in-sync replicas;
/// returns the leader.
async fn eventually_led_partition(client: &Client, topic: &str, partition: u32) -> u64 {
    let deadline = Instant::now() + SETTLE;
    loop {
        let s = client.admin().cluster_status().await.unwrap();
        let p = s
            .partitions
            .iter()
            .find(|p| p.topic == topic && p.partition == partition);
        if let Some(p) = p.filter(|p| p.isr.len() == 3 && p.leader_addr.is_some()) {
            return p.leader.unwrap();
        }
        assert!(Instant::now() < deadline, "{topic} never led: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates `topic` with `partitions` partitions, three copies each (two needed in sync), and
/// waits until the metadata group has a leader and every partition a leader and three in-sync
/// replicas.
async fn create_placed(client: &Client, topic: &str, partitions: usize) {
    let mut t = NewTopic::new(topic, partitions as u32);
    t.replication_factor = Some(3);
    t.min_insync = Some(2);
    client.admin().create_topic(t).await.unwrap();
    eventually("the topic placed, all in sync", || async {
        let s = client.admin().cluster_status().await.unwrap();
        let parts: Vec<_> = s.partitions.iter().filter(|p| p.topic == topic).collect();
        s.leader.is_some()
            && parts.len() == partitions
            && parts
                .iter()
                .all(|p| p.isr.len() == 3 && p.leader_addr.is_some())
    })
    .await;
}
