//! Edge mirroring between real `quiver serve` processes on 127.0.0.1: an edge forwards through
//! core crashes (SIGKILL) and its own, exactly once and in order; three edges feed one core with
//! authentication on, each under its own principal's ACLs.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::serve::Serve;
use quiver::proto::auth::{AclSpec, Operation, ResourceKind};
use quiver::proto::mirror::{parse_source, SOURCE_HEADER};
use quiver::{
    Acks, Client, ClientOptions, ConsumedRecord, Consumer, ConsumerConfig, ErrorCode, MirrorState,
    NewTopic, Producer, ProducerConfig, ProducerRecord, SeekTo,
};

const TOTAL: u64 = 100_000;

fn free_udp_port() -> String {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    format!("127.0.0.1:{}", s.local_addr().unwrap().port())
}

async fn connect(addr: &str, ca: &Path, token: Option<&str>) -> Client {
    let mut opts = ClientOptions::new(addr, ca);
    opts.token = token.map(str::to_owned);
    Client::connect_with(opts).await.unwrap()
}

/// `quiver mirror add` against the edge at `edge` (its CA `edge_ca`), with `args` after the name.
fn mirror_add(edge: &Serve, edge_ca: &Path, name: &str, args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["mirror", "add", name])
        .args(args)
        .env("QUIVER_SERVER", &edge.addr)
        .env("QUIVER_CA", edge_ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mirror add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends records `from..to` to the edge with acks=all, at most about 20 k records/s, and waits for
/// every acknowledgement: none may fail, whatever the core is doing.
async fn produce(client: &Client, from: u64, to: u64) {
    let config = ProducerConfig {
        acks: Acks::All,
        linger: Duration::from_millis(2),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(client.clone(), config);
    let mut deliveries = Vec::new();
    for i in from..to {
        let rec = ProducerRecord::new("orders", format!("value-{i}"))
            .key(format!("key-{}", i % 64))
            .header("n", i.to_string())
            .tag(format!("t{}", i % 3));
        deliveries.push(producer.send(rec).await.unwrap());
        if i % 1000 == 999 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for d in deliveries {
        d.wait().await.expect("the edge acknowledged every record");
    }
}

/// Every record of every partition of `topic`, from the start (panics after `within`).
async fn read_all(client: &Client, topic: &str, n: u64, within: Duration) -> Vec<ConsumedRecord> {
    let config = ConsumerConfig {
        max_wait: Duration::from_millis(100),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), topic, config);
    consumer.assign_all(SeekTo::Earliest).await.unwrap();
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while (out.len() as u64) < n {
        assert!(
            Instant::now() < deadline,
            "read {} of {n} from {topic}",
            out.len()
        );
        out.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    // Nothing beyond n: a duplicate would show up here.
    out.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    out
}

/// The records in `topic` on the broker at `addr`, summed over its partitions.
async fn log_ends(client: &Client, topic: &str) -> u64 {
    match client.admin().describe_topic(topic).await {
        Ok(d) => d.partitions.iter().map(|p| p.log_end).sum(),
        Err(_) => 0,
    }
}

async fn wait_for_records(core: &Client, topic: &str, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while log_ends(core, topic).await < n {
        assert!(
            Instant::now() < deadline,
            "the core has {} of {n} records in {topic}",
            log_ends(core, topic).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_forwards_exactly_once_through_core_crashes_and_its_own_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (core_data, edge_data) = (dir.path().join("core"), dir.path().join("edge"));
    let core_addr = free_udp_port();
    let mut core = Some(Serve::start_at(&core_data, &core_addr, &[]));
    let core_ca = core_data.join("tls/ca.pem");
    let edge_ca = edge_data.join("tls/ca.pem");
    let mut edge = Serve::start_in(&edge_data, &[]);
    let mut client = connect(&edge.addr, &edge_ca, None).await;
    client
        .admin()
        .create_topic(NewTopic::new("orders", 3))
        .await
        .unwrap();
    let ca = core_ca.to_str().unwrap();
    mirror_add(
        &edge,
        &edge_ca,
        "to-core",
        &[
            "--to", &core_addr, "--ca", ca, "--topics", "ord*", "--as", "site-1.",
        ],
    );

    // The core dies a second into this part and stays down: the edge keeps taking records.
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(core.take()); // SIGKILL
        core
    });
    produce(&client, 0, 40_000).await;
    let _ = killer.await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let core = Serve::start_at(&core_data, &core_addr, &[]);

    // Second crash while records flow, down for three seconds, restarted.
    let (addr, data) = (core_addr.clone(), core_data.clone());
    let crasher = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(core);
        tokio::time::sleep(Duration::from_secs(3)).await;
        Serve::start_at(&data, &addr, &[])
    });
    produce(&client, 40_000, 70_000).await;
    let core = crasher.await.unwrap();

    // The edge itself crashes while it forwards the backlog of the outage, and comes back on a
    // new port.
    wait_until_forwarding(&client, "to-core").await;
    client.close().await;
    drop(edge);
    edge = Serve::start_in(&edge_data, &[]);
    client = connect(&edge.addr, &edge_ca, None).await;
    produce(&client, 70_000, TOTAL).await;

    let core_client = connect(&core.addr, &core_ca, None).await;
    wait_for_records(
        &core_client,
        "site-1.orders",
        TOTAL,
        Duration::from_secs(180),
    )
    .await;
    let mirrored = read_all(
        &core_client,
        "site-1.orders",
        TOTAL,
        Duration::from_secs(120),
    )
    .await;
    let local = read_all(&client, "orders", TOTAL, Duration::from_secs(120)).await;
    check_exactly_once_in_order(&local, &mirrored);
    // Nothing arrived after the read either.
    let info = client.admin().describe_mirror("to-core").await.unwrap();
    assert_eq!(info.lag_records(), 0);
    assert_eq!(log_ends(&core_client, "site-1.orders").await, TOTAL);

    let info = client.admin().describe_mirror("to-core").await.unwrap();
    assert!(
        matches!(info.state, MirrorState::Connected { .. }),
        "{info:?}"
    );
    assert_eq!(info.lag_records(), 0);
    assert_eq!(info.dropped_by_retention(), 0);
    let listed = edge.cli(
        dir.path(),
        &["mirror", "list", "--ca", edge_ca.to_str().unwrap()],
        "",
    );
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("to-core") && text.contains("connected"),
        "{text}"
    );
}

/// Waits until the mirror is connected and its lag is going down (records are in flight), or,
/// on a machine fast enough to drain the backlog between two looks, until it caught up.
async fn wait_until_forwarding(client: &Client, mirror: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        let info = client.admin().describe_mirror(mirror).await.unwrap();
        let lag = info.lag_records();
        let connected = matches!(info.state, MirrorState::Connected { .. });
        if connected && last.is_some_and(|l| lag < l) {
            if lag == 0 {
                eprintln!("the mirror caught up between two looks: the edge crashes idle");
            }
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the mirror never forwarded: {info:?}"
        );
        last = connected.then_some(lag);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every edge record is on the core once, with its key, value, headers, tags and timestamp and a
/// source header naming it, and each edge partition's records are in edge order.
fn check_exactly_once_in_order(local: &[ConsumedRecord], mirrored: &[ConsumedRecord]) {
    assert_eq!(
        local.len() as u64,
        TOTAL,
        "the edge holds every record once"
    );
    assert_eq!(
        mirrored.len() as u64,
        TOTAL,
        "the core holds every record once; {}",
        describe_copies(mirrored)
    );
    let by_source: HashMap<(u32, u64), &ConsumedRecord> = local
        .iter()
        .map(|r| ((r.partition, r.record.offset), r))
        .collect();
    let mut seen = HashSet::new();
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for m in mirrored {
        let header = m.record.header(SOURCE_HEADER).expect("a source header");
        let (_, topic, p, offset) = parse_source(header).expect("a valid source header");
        assert_eq!(topic, "orders");
        assert_eq!(m.partition, p, "edge partition p goes to core partition p");
        assert!(seen.insert((p, offset)), "edge record {p}/{offset} twice");
        if let Some(prev) = last.insert(p, offset) {
            assert!(offset > prev, "partition {p}: {offset} after {prev}");
        }
        let e = &by_source[&(p, offset)].record;
        assert_eq!(m.record.value, e.value);
        assert_eq!(m.record.key, e.key);
        assert_eq!(m.record.timestamp, e.timestamp);
        assert_eq!(m.record.tags, e.tags);
        assert_eq!(m.record.header("n"), e.header("n"));
    }
}

/// Where the second copies of edge records sit on the core: per core partition, runs of
/// consecutive core offsets holding records already seen, with the edge offsets they repeat and
/// where the first copies were (a failed run says which session wrote what).
fn describe_copies(mirrored: &[ConsumedRecord]) -> String {
    let mut first: HashMap<(u32, u64), u64> = HashMap::new();
    let mut runs: Vec<(u32, u64, u64, u64, u64, u64)> = Vec::new(); // p, core from/to, edge from/to, first at
    for m in mirrored {
        let Some((_, _, p, offset)) = m.record.header(SOURCE_HEADER).and_then(|h| parse_source(h))
        else {
            continue;
        };
        let at = m.record.offset;
        let Some(&was) = first.get(&(p, offset)) else {
            first.insert((p, offset), at);
            continue;
        };
        match runs.last_mut() {
            Some(r) if r.0 == m.partition && r.2 + 1 == at => (r.2, r.4) = (at, offset),
            _ => runs.push((m.partition, at, at, offset, offset, was)),
        }
    }
    let mut text = format!("{} records were copies:", mirrored.len() - first.len());
    for (p, from, to, efrom, eto, was) in runs.iter().take(20) {
        text += &format!(
            "\n  core {p}/{from}..={to} repeats edge {efrom}..={eto} (first at core {was})"
        );
    }
    text
}

/// A token user on the core allowed what a mirror does with topics matching `pattern`.
async fn edge_user(admin: &Client, name: &str, pattern: &str) -> String {
    let token = admin.admin().create_user(name).await.unwrap();
    let ops = [
        Operation::Produce,
        Operation::Consume,
        Operation::Create,
        Operation::Describe,
    ];
    let rule = AclSpec {
        principal: name.into(),
        resource: ResourceKind::Topic,
        pattern: pattern.into(),
        operations: ops.to_vec(),
        deny: false,
    };
    admin.admin().add_acl(rule).await.unwrap();
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_edges_merge_into_one_core_topic_under_their_own_acls() {
    const EACH: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let core_data = dir.path().join("core");
    let core = Serve::start_at(&core_data, &free_udp_port(), &["--auth"]);
    let core_ca = core_data.join("tls/ca.pem");
    let admin_token = std::fs::read_to_string(core_data.join("admin.token")).unwrap();
    let admin = connect(&core.addr, &core_ca, Some(admin_token.trim())).await;
    let mut edges = Vec::new();
    for i in 1..=3 {
        let token = edge_user(&admin, &format!("edge-{i}"), "events").await;
        let data = dir.path().join(format!("edge-{i}"));
        let (ca, id) = (core_ca.to_str().unwrap(), format!("shop-{i}"));
        // Edges 1 and 2 get their mirror from the command line, edge 3 from its config file.
        // Each forwards every topic: `secret` too, which the core refuses its principal.
        let edge = if i == 3 {
            let token_file = dir.path().join("edge-3.token");
            std::fs::write(&token_file, &token).unwrap();
            let config = dir.path().join("edge-3.toml");
            let text = format!(
                "[[mirror]]\nname = \"all\"\nto = \"{}\"\nca = {ca:?}\ntoken_file = {:?}\ntopics = \"*\"\nsource_id = \"{id}\"\n",
                core.addr,
                token_file.to_str().unwrap()
            );
            std::fs::write(&config, text).unwrap();
            Serve::start_in(&data, &["--config", config.to_str().unwrap()])
        } else {
            Serve::start_in(&data, &[])
        };
        let edge_ca = data.join("tls/ca.pem");
        let client = connect(&edge.addr, &edge_ca, None).await;
        for topic in ["events", "secret"] {
            client
                .admin()
                .create_topic(NewTopic::new(topic, 2))
                .await
                .unwrap();
        }
        if i < 3 {
            let args = [
                "--to",
                &core.addr,
                "--ca",
                ca,
                "--token",
                &token,
                "--source-id",
                &id,
                "--topics",
                "*",
            ];
            mirror_add(&edge, &edge_ca, "all", &args);
        }
        edges.push((edge, client));
    }
    let mut sends = tokio::task::JoinSet::new();
    for (_, client) in &edges {
        let client = client.clone();
        sends.spawn(async move {
            let producer = Producer::new(client, ProducerConfig::default());
            for topic in ["events", "secret"] {
                for i in 0..EACH {
                    let rec = ProducerRecord::new(topic, format!("{i}")).key(format!("{}", i % 10));
                    producer.send(rec).await.unwrap();
                }
            }
            producer.flush().await.unwrap();
        });
    }
    while let Some(done) = sends.join_next().await {
        done.unwrap();
    }

    wait_for_records(&admin, "events", 3 * EACH, Duration::from_secs(120)).await;
    let records = read_all(&admin, "events", 3 * EACH, Duration::from_secs(60)).await;
    assert_eq!(records.len() as u64, 3 * EACH, "each record once");
    let mut per_source: HashMap<String, HashSet<(u32, u64)>> = HashMap::new();
    for r in &records {
        let (source, topic, p, offset) =
            parse_source(r.record.header(SOURCE_HEADER).unwrap()).unwrap();
        assert_eq!(topic, "events");
        assert!(per_source
            .entry(source.to_owned())
            .or_default()
            .insert((p, offset)));
    }
    let mut sources: Vec<_> = per_source
        .iter()
        .map(|(s, set)| (s.as_str(), set.len() as u64))
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        [("shop-1", EACH), ("shop-2", EACH), ("shop-3", EACH)]
    );

    let refused = admin.admin().describe_topic("secret").await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::UnknownTopic),
        "no edge may create `secret`"
    );
    for (edge, client) in &edges {
        // The refused topic waits with its error; the mirror itself stays connected.
        let deadline = Instant::now() + Duration::from_secs(20);
        let info = loop {
            let info = client.admin().describe_mirror("all").await.unwrap();
            let waiting = info.partitions.iter().filter(|p| p.topic == "secret");
            if waiting.clone().all(|p| p.error.is_some()) || Instant::now() > deadline {
                break info;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            matches!(info.state, MirrorState::Connected { .. }),
            "{info:?}"
        );
        for p in &info.partitions {
            if p.topic == "secret" {
                let error = p.error.as_deref().unwrap_or_default().to_lowercase();
                assert!(error.contains("not authorized"), "{p:?}");
            } else {
                assert_eq!((p.lag_records, p.error.as_deref()), (0, None), "{p:?}");
            }
        }
        assert_eq!(
            info.lag_records(),
            EACH,
            "the refused records wait on the edge"
        );
        assert_eq!(info.from_config, edge.addr == edges[2].0.addr);
        let removed = client.admin().remove_mirror("all").await;
        assert_eq!(
            removed.is_err(),
            info.from_config,
            "a config file's mirror stays"
        );
    }
}

/// The values of `topic` on the core, in partition and offset order, with their records.
async fn values(core: &Client, topic: &str, n: u64) -> Vec<(String, ConsumedRecord)> {
    wait_for_records(core, topic, n, Duration::from_secs(60)).await;
    let mut records = read_all(core, topic, n, Duration::from_secs(30)).await;
    records.sort_by_key(|r| (r.partition, r.record.offset));
    records
        .into_iter()
        .map(|r| (String::from_utf8_lossy(&r.record.value).into_owned(), r))
        .collect()
}

async fn send(client: &Client, rec: ProducerRecord) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    producer.send(rec).await.unwrap();
    producer.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_from_latest_follows_new_deleted_and_grown_topics() {
    let dir = tempfile::tempdir().unwrap();
    let core = Serve::start_in(&dir.path().join("core"), &[]);
    let core_ca = dir.path().join("core/tls/ca.pem");
    let edge_data = dir.path().join("edge");
    let edge = Serve::start_in(&edge_data, &[]);
    let edge_ca = edge_data.join("tls/ca.pem");
    let edge_client = connect(&edge.addr, &edge_ca, None).await;
    let core_client = connect(&core.addr, &core_ca, None).await;
    let admin = edge_client.admin();
    admin.create_topic(NewTopic::new("a", 1)).await.unwrap();
    for i in 0..5 {
        send(
            &edge_client,
            ProducerRecord::new("a", format!("before-{i}")),
        )
        .await;
    }
    // Added while the core is up; `latest` holds for what exists now, whatever the link does.
    let ca = core_ca.to_str().unwrap();
    let args = [
        "--to", &core.addr, "--ca", ca, "--topics", "*", "--as", "c.", "--from", "latest",
    ];
    mirror_add(&edge, &edge_ca, "m", &args);
    send(&edge_client, ProducerRecord::new("a", "after-0")).await;
    // A record the edge held for delayed delivery carries the edge broker's own headers.
    let delayed = ProducerRecord::new("a", "delayed").delay(Duration::from_millis(10));
    send(&edge_client, delayed).await;
    let got = values(&core_client, "c.a", 2).await;
    let names: Vec<&str> = got.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(names, ["after-0", "delayed"]);
    let delayed = &got[1].1.record;
    assert!(
        delayed.header("edge-quiver-delay-id").is_some(),
        "{delayed:?}"
    );
    assert!(delayed.header("quiver-delay-id").is_none());

    // A partition added on the edge: the core topic has one, so it lands there too.
    admin.add_partitions("a", 1).await.unwrap();
    send(&edge_client, ProducerRecord::new("a", "p1").partition(1)).await;
    let got = values(&core_client, "c.a", 3).await;
    assert_eq!(got[2].0, "p1");
    let source = parse_source(got[2].1.record.header(SOURCE_HEADER).unwrap()).unwrap();
    assert_eq!((source.1, source.2, source.3), ("a", 1, 0));

    // A topic created after the mirror is forwarded from its start; deleted and created again,
    // it is a new log whose records are forwarded too.
    admin.create_topic(NewTopic::new("b", 1)).await.unwrap();
    send(&edge_client, ProducerRecord::new("b", "b-old")).await;
    values(&core_client, "c.b", 1).await;
    admin.delete_topic("b").await.unwrap();
    admin.create_topic(NewTopic::new("b", 1)).await.unwrap();
    send(&edge_client, ProducerRecord::new("b", "b-new")).await;
    let got = values(&core_client, "c.b", 2).await;
    let names: Vec<&str> = got.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(names, ["b-old", "b-new"]);
    let info = admin.describe_mirror("m").await.unwrap();
    assert_eq!((info.lag_records(), info.dropped_by_retention()), (0, 0));
}

async fn produce_to(client: &Client, topic: &str, from: u64, to: u64) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in from..to {
        let rec = ProducerRecord::new(topic, format!("cmd-{i}"))
            .key(format!("device-{}", i % 7))
            .header("n", i.to_string());
        producer.send(rec).await.unwrap();
    }
    producer.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pulling_mirror_brings_core_topics_to_the_edge_once_across_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let (core_data, edge_data) = (dir.path().join("core"), dir.path().join("edge"));
    let core_addr = free_udp_port();
    let core = Serve::start_at(&core_data, &core_addr, &[]);
    let core_ca = core_data.join("tls/ca.pem");
    let edge_ca = edge_data.join("tls/ca.pem");
    let core_client = connect(&core_addr, &core_ca, None).await;
    core_client
        .admin()
        .create_topic(NewTopic::new("commands", 2))
        .await
        .unwrap();
    produce_to(&core_client, "commands", 0, 200).await;
    let edge = Serve::start_in(&edge_data, &[]);
    let ca = core_ca.to_str().unwrap();
    let args = [
        "--to",
        &core_addr,
        "--ca",
        ca,
        "--topics",
        "command*",
        "--as",
        "from-core.",
        "--direction",
        "pull",
    ];
    mirror_add(&edge, &edge_ca, "in", &args);
    let edge_client = connect(&edge.addr, &edge_ca, None).await;
    wait_for_records(
        &edge_client,
        "from-core.commands",
        200,
        Duration::from_secs(60),
    )
    .await;

    // The edge crashes and comes back; then the core crashes and comes back.
    edge_client.close().await;
    drop(edge);
    let edge = Serve::start_in(&edge_data, &[]);
    produce_to(&core_client, "commands", 200, 400).await;
    core_client.close().await;
    drop(core);
    let _core = Serve::start_at(&core_data, &core_addr, &[]);
    let core_client = connect(&core_addr, &core_ca, None).await;
    produce_to(&core_client, "commands", 400, 600).await;

    let edge_client = connect(&edge.addr, &edge_ca, None).await;
    wait_for_records(
        &edge_client,
        "from-core.commands",
        600,
        Duration::from_secs(60),
    )
    .await;
    let pulled = read_all(
        &edge_client,
        "from-core.commands",
        600,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(pulled.len(), 600, "each record once");
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for r in &pulled {
        let (source, topic, p, offset) =
            parse_source(r.record.header(SOURCE_HEADER).unwrap()).unwrap();
        assert_eq!(
            (source, topic, p),
            (core_addr.as_str(), "commands", r.partition)
        );
        if let Some(prev) = last.insert(p, offset) {
            assert!(offset > prev, "partition {p}: {offset} after {prev}");
        }
        let n = String::from_utf8_lossy(r.record.header("n").unwrap()).into_owned();
        assert_eq!(r.record.value, format!("cmd-{n}").into_bytes());
    }
    let info = edge_client.admin().describe_mirror("in").await.unwrap();
    assert_eq!(info.direction, quiver::MirrorDirection::Pull);
    assert_eq!(info.partitions.len(), 2, "{info:?}");
    assert_eq!(info.lag_records(), 0, "{info:?}");
}
