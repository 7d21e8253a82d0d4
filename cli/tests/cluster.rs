//! Clusters of three real `quiver serve` processes on 127.0.0.1 sharing a dev CA: metadata
//! written on any node is on every node (topics, users), the Raft leader killed with SIGKILL is
//! replaced and admin writes go on, a restarted node catches up (from the log, or from a snapshot
//! when the leader has dropped the entries it missed).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::{eventually, Layout};
use common::serve::Serve;
use quiver::proto::messages::ClusterStatus;
use quiver::{Client, ClientOptions, NewTopic};

async fn status(client: &Client) -> ClusterStatus {
    client.admin().cluster_status().await.unwrap()
}

/// The leader all the given clients' nodes agree on.
async fn agreed_leader(clients: &[&Client]) -> u64 {
    let mut leader = None;
    eventually("the nodes to agree on a Raft leader", || {
        let mut seen = Vec::new();
        let clients = clients.to_vec();
        async move {
            for c in clients {
                seen.push(c.admin().cluster_status().await.ok().and_then(|s| s.leader));
            }
            let first = seen[0];
            first.is_some() && seen.iter().all(|l| *l == first)
        }
    })
    .await;
    for c in clients {
        leader = leader.or(status(c).await.leader);
    }
    leader.unwrap()
}

async fn topic_names(client: &Client) -> Vec<String> {
    match client.admin().list_topics().await {
        Ok(topics) => topics.into_iter().map(|t| t.name).collect(),
        Err(_) => Vec::new(),
    }
}

async fn has_topic(client: &Client, name: &str) -> bool {
    topic_names(client).await.iter().any(|t| t == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_written_on_any_node_is_on_all_and_survives_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path(), &["--auth"]);
    let mut nodes: Vec<Option<Serve>> = (1..=3).map(|id| Some(layout.start(id))).collect();
    let mut clients = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let token = layout.token(i as u64 + 1);
        clients.push(layout.client(node.as_ref().unwrap(), Some(token)).await);
    }
    // One admin token for the whole cluster: drawn by the first node, kept with the dev CA.
    let shared = std::fs::read_to_string(dir.path().join("ca/admin.token")).unwrap();
    for id in 1..=3 {
        assert_eq!(layout.token(id), shared.trim());
    }
    let all: Vec<&Client> = clients.iter().collect();
    let leader = agreed_leader(&all).await;
    let s = status(&clients[0]).await;
    // The command line shows the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["cluster", "status"])
        .env("QUIVER_SERVER", &nodes[2].as_ref().unwrap().addr)
        .env("QUIVER_CA", layout.ca())
        .env("QUIVER_TOKEN", shared.trim())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("node 3: Raft leader {leader}, term")),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l
                .split_whitespace()
                .next()
                .is_some_and(|w| w.parse::<u64>().is_ok()))
            .count(),
        3,
        "{text}"
    );
    assert_eq!(s.nodes.len(), 3, "{s:?}");
    assert!(s.nodes.iter().all(|n| n.voter), "{s:?}");

    // A topic created on a follower is on every node.
    let follower = (1..=3).find(|id| *id != leader).unwrap() as usize - 1;
    let created = clients[follower]
        .admin()
        .create_topic(NewTopic::new("orders", 3))
        .await
        .unwrap();
    assert_eq!(created, 3);
    for c in &clients {
        eventually("orders on every node", || has_topic(c, "orders")).await;
        assert_eq!(
            c.admin()
                .describe_topic("orders")
                .await
                .unwrap()
                .partitions
                .len(),
            3
        );
    }
    // Creating it again fails the same way wherever it is asked.
    let again = clients[leader as usize - 1]
        .admin()
        .create_topic(NewTopic::new("orders", 1))
        .await
        .unwrap_err();
    assert_eq!(
        again.code(),
        Some(quiver::ErrorCode::TopicExists),
        "{again}"
    );

    // A user created through one node authenticates on every node: the token was drawn once.
    let token = clients[follower]
        .admin()
        .create_user("alice")
        .await
        .unwrap();
    for node in nodes.iter().flatten() {
        let mut ok = false;
        for _ in 0..100 {
            let c = layout.client(node, Some(token.clone())).await;
            if let Ok((who, _)) = c.admin().whoami().await {
                assert_eq!(who, "alice");
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "alice's token is refused by {}", node.addr);
    }

    // A client certificate signed with the shared dev CA (`cert client --dev-ca`) is accepted
    // by every node, as the principal it names (no token).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args(["cert", "client", "bob", "--dev-ca"])
        .arg(dir.path().join("ca"))
        .arg("--out")
        .arg(dir.path().join("bob"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for node in nodes.iter().flatten() {
        let mut opts = ClientOptions::new(node.addr.clone(), layout.ca());
        opts.client_cert = Some((
            dir.path().join("bob/bob.pem"),
            dir.path().join("bob/bob.key"),
        ));
        let bob = Client::connect_with(opts).await.unwrap();
        assert_eq!(bob.admin().whoami().await.unwrap().0, "bob");
    }

    // SIGKILL the Raft leader: the others elect a new one and admin writes go on.
    let killed_at = Instant::now();
    drop(nodes[leader as usize - 1].take());
    let survivor = follower;
    clients[survivor]
        .admin()
        .create_topic(NewTopic::new("payments", 1))
        .await
        .unwrap();
    let failover = killed_at.elapsed();
    println!("leader {leader} killed: the next admin write was acknowledged after {failover:?}");
    let survivors: Vec<&Client> = (0..3)
        .filter(|i| *i != leader as usize - 1)
        .map(|i| &clients[i])
        .collect();
    let new_leader = agreed_leader(&survivors).await;
    assert_ne!(new_leader, leader);
    assert!(status(survivors[0]).await.term > s.term);

    // The killed node restarts and catches up with what it missed.
    let restarted = layout.start(leader);
    let c = layout.client(&restarted, Some(layout.token(leader))).await;
    eventually("the restarted node to have payments", || {
        has_topic(&c, "payments")
    })
    .await;
    assert!(has_topic(&c, "orders").await);
    nodes[leader as usize - 1] = Some(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_the_leaders_snapshot_catches_up_from_it() {
    let dir = tempfile::tempdir().unwrap();
    // A snapshot every 5 entries, and the log before it dropped: a node down for 20 writes can
    // only catch up from a snapshot.
    let layout = Layout::new(dir.path(), &[]);
    let members: Vec<String> = layout
        .members
        .split(',')
        .map(|m| format!("{m:?}"))
        .collect();
    let ca_dir = dir.path().join("ca");
    let mut nodes: Vec<Serve> = Vec::new();
    for id in 1..=3u64 {
        // One config file per node, with the cluster table (its node id) in it.
        let file = dir.path().join(format!("node{id}.toml"));
        std::fs::write(
            &file,
            format!(
                "[cluster]\nnode_id = {id}\nmembers = [{}]\ndev_ca = {:?}\nsnapshot_logs = 5\n",
                members.join(", "),
                ca_dir
            ),
        )
        .unwrap();
        nodes.push(Serve::start_in(
            &layout.data(id),
            &["--config", file.to_str().unwrap()],
        ));
    }
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(layout.client(node, None).await);
    }
    let all: Vec<&Client> = clients.iter().collect();
    let leader = agreed_leader(&all).await;
    // The leader says so in its metrics, and every node with a leader is ready.
    let (code, metrics) = common::http_get(&nodes[leader as usize - 1].http, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("quiver_cluster_is_leader{} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("quiver_cluster_leader{{}} {leader}")),
        "{metrics}"
    );
    for node in &nodes {
        assert_eq!(common::http_get(&node.http, "/readyz").0, 200);
    }
    let behind = (1..=3).find(|id| *id != leader).unwrap();
    let behind_file = dir.path().join(format!("node{behind}.toml"));
    drop(nodes.remove(behind as usize - 1));
    let writer = &clients[leader as usize - 1];
    for i in 0..20 {
        // One copy each: a topic placed on the stopped node waits for it (no other replica).
        let mut topic = NewTopic::new(format!("t{i}"), 1);
        topic.replication_factor = Some(1);
        writer.admin().create_topic(topic).await.unwrap();
    }
    let placed = status(writer).await.partitions;
    let mine = placed
        .iter()
        .find(|p| p.replicas == [behind])
        .map(|p| p.topic.clone())
        .expect("a topic placed on the stopped node");
    // A real component, deployed and attached while the node is down: its bytes reach it in
    // the snapshot.
    common::plugins::deploy(writer, "mask", "json-mask", Some("1")).await;
    writer
        .admin()
        .attach_plugin(&mine, common::plugins::stage("mask", &[("fields", "card")]))
        .await
        .unwrap();
    let restarted = Serve::start_in(
        &layout.data(behind),
        &["--config", behind_file.to_str().unwrap()],
    );
    let c = layout.client(&restarted, None).await;
    // Its log was purged on the leader: it catches up from the snapshot (which applies the
    // missed commands one by one, then says so).
    eventually("the restarted node to install a snapshot", || {
        let log = restarted.log_text();
        async move { log.contains("installed a metadata snapshot") }
    })
    .await;
    eventually(
        "the restarted node to have all 20 topics, lead its own and run the attachment",
        || {
            let (c, mine) = (&c, &mine);
            async move {
                let attached = c
                    .admin()
                    .describe_topic(mine)
                    .await
                    .is_ok_and(|t| t.pipeline.len() == 1);
                let leads = c.admin().cluster_status().await.is_ok_and(|s| {
                    s.partitions
                        .iter()
                        .any(|p| p.topic == *mine && p.leader == Some(behind))
                });
                attached && leads && topic_names(c).await.len() == 20
            }
        },
    )
    .await;
    // The plugin runs there: a record produced to that node (the topic's leader) is masked by
    // its pipeline.
    common::plugins::produce_one(&c, &mine, r#"{"card":"4111","amount":5}"#)
        .await
        .unwrap();
    let got = common::consume_n(&c, &mine, 1).await;
    let value = String::from_utf8_lossy(&got[0].record.value).to_string();
    assert!(value.contains("***") && !value.contains("4111"), "{value}");
}

/// Connects to a node's peer address with `cert`/`key` (trusting the cluster CA), sends bytes
/// that are no request, and says whether the node answered (it answers a node's link with a
/// refusal to read them; any other link is closed before that).
async fn peer_answers(peer: &str, cert: &Path, key: &Path, ca: &Path) -> bool {
    use quiver_broker::transport::tls;
    tls::install_crypto_provider();
    let (_, client) = tls::peer_configs(cert, key, ca).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(client);
    let exchange = async {
        let conn = endpoint
            .connect(peer.parse().unwrap(), "quiver-node-1")
            .ok()?
            .await
            .ok()?;
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        send.write_all(b"not a request").await.ok()?;
        send.finish().ok()?;
        recv.read_to_end(1 << 20).await.ok()
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten();
    endpoint.close(0u32.into(), b"");
    answer.is_some_and(|a| !a.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_peer_address_admits_only_node_certificates_of_the_cluster_ca() {
    use quiver_broker::transport::tls;
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::new(dir.path(), &[]);
    // One node of three is enough: its peer listener runs without a quorum.
    let _node = layout.start(1);
    let peer = layout
        .members
        .split(',')
        .next()
        .unwrap()
        .split('@')
        .nth(1)
        .unwrap();
    let ca_dir = dir.path().join("ca");

    // Another node's certificate from the cluster CA: answered.
    let node2 = tls::ensure_cluster_dev_certs(&ca_dir, &dir.path().join("n2"), 2).unwrap();
    assert!(peer_answers(peer, &node2.cert_path, &node2.key_path, &layout.ca()).await);

    // A person's client certificate from the same CA: the link is closed unanswered.
    let (alice, alice_key) =
        tls::generate_client_cert(&ca_dir, "alice", &dir.path().join("alice")).unwrap();
    assert!(!peer_answers(peer, &alice, &alice_key, &layout.ca()).await);

    // A node certificate from another CA: refused at the handshake.
    let other =
        tls::ensure_cluster_dev_certs(&dir.path().join("other-ca"), &dir.path().join("other"), 2)
            .unwrap();
    assert!(!peer_answers(peer, &other.cert_path, &other.key_path, &layout.ca()).await);
}
