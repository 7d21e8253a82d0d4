//! Authentication and ACLs against a real broker over QUIC: every request kind of the protocol is
//! refused to a principal without rules and accepted once it has exactly what the request table
//! says it needs; ACL changes and revocations reach open connections; client certificates are
//! principals; failed authentication is slowed.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::TestBroker;
use quiver::{AclSpec, Client, Operation, Producer, ProducerConfig, ProducerRecord, ResourceKind};
use quiver_broker::auth::table::{self, Access, Request};
use quiver_proto::frame::FrameKind;
use quiver_proto::groups::{
    GroupRequest, OffsetRange, PartitionOffset, QueueRequest, ResetTo, TopicPartition,
};
use quiver_proto::messages::{
    Acks, AdminRequest, AttachOptions, ErrorBody, FetchRequest, OffsetSpec, ProduceRequest,
};
use quiver_proto::routing::{Binding, ExchangeKind};
use quiver_proto::ErrorCode;

/// One request as a test sends it.
enum Sample {
    Produce(ProduceRequest),
    Fetch(FetchRequest),
    Admin(AdminRequest),
    Group(GroupRequest),
    Queue(QueueRequest),
}

impl Sample {
    fn request(&self) -> Request<'_> {
        match self {
            Sample::Produce(r) => Request::Produce(r),
            Sample::Fetch(r) => Request::Fetch(r),
            Sample::Admin(r) => Request::Admin(r),
            Sample::Group(r) => Request::Group(r),
            Sample::Queue(r) => Request::Queue(r),
        }
    }

    /// Which request kind this is. Exhaustive: a new request kind does not compile until it is
    /// named here, and the test then fails until a sample of it is in `samples`.
    fn kind(&self) -> &'static str {
        use AdminRequest as A;
        use GroupRequest as G;
        use QueueRequest as Q;
        match self {
            Sample::Produce(p) if p.exchange => "produce-exchange",
            Sample::Produce(_) => "produce",
            Sample::Fetch(_) => "fetch",
            Sample::Admin(a) => match a {
                A::CreateTopic { .. } => "create-topic",
                A::DeleteTopic { .. } => "delete-topic",
                A::ListTopics => "list-topics",
                A::DescribeTopic { .. } => "describe-topic",
                A::AddPartitions { .. } => "add-partitions",
                A::Metadata => "metadata",
                A::DeployPlugin { .. } => "deploy-plugin",
                A::ListPlugins => "list-plugins",
                A::DescribePlugin { .. } => "describe-plugin",
                A::ListPluginLogs { .. } => "list-plugin-logs",
                A::RemovePlugin { .. } => "remove-plugin",
                A::AttachPlugin { .. } => "attach-plugin",
                A::DetachPlugin { .. } => "detach-plugin",
                A::InitProducer { .. } => "init-producer",
                A::CreateExchange { .. } => "create-exchange",
                A::BindExchange { .. } => "bind-exchange",
                A::ListExchanges => "list-exchanges",
                A::DeleteExchange { .. } => "delete-exchange",
                A::AttachExchangeRouter { .. } => "attach-exchange-router",
                A::DetachExchangeRouter { .. } => "detach-exchange-router",
                A::CancelDelayed { .. } => "cancel-delayed",
                A::CreateUser { .. } => "create-user",
                A::DeleteUser { .. } => "delete-user",
                A::ListUsers => "list-users",
                A::AddAcl { .. } => "add-acl",
                A::ListAcls => "list-acls",
                A::RemoveAcl { .. } => "remove-acl",
                A::WhoAmI => "whoami",
                A::ClusterStatus => "cluster-status",
                A::SetQuota { .. } => "set-quota",
                A::ListQuotas => "list-quotas",
                A::RemoveQuota { .. } => "remove-quota",
                A::AddMirror { .. } => "add-mirror",
                A::ListMirrors => "list-mirrors",
                A::DescribeMirror { .. } => "describe-mirror",
                A::RemoveMirror { .. } => "remove-mirror",
            },
            Sample::Group(g) => match g {
                G::Heartbeat { .. } => "group-heartbeat",
                G::Leave { .. } => "group-leave",
                G::Commit { .. } => "group-commit",
                G::FetchOffsets { .. } => "group-fetch-offsets",
                G::List => "group-list",
                G::Describe { .. } => "group-describe",
                G::Reset { .. } => "group-reset",
            },
            Sample::Queue(q) => match q {
                Q::Poll { .. } => "queue-poll",
                Q::Ack { .. } => "queue-ack",
                Q::Nack { .. } => "queue-nack",
                Q::Release { .. } => "queue-release",
            },
        }
    }

    /// Sends the request on a new stream of `conn`; returns the error code of the answer, if it
    /// was an error.
    async fn send(&self, conn: &quinn::Connection) -> Option<ErrorCode> {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        let write = |kind, payload| (kind, payload);
        let (kind, payload) = match self {
            Sample::Produce(_) => write(FrameKind::Produce, Bytes::new()),
            Sample::Fetch(_) => write(FrameKind::Fetch, Bytes::new()),
            Sample::Admin(_) => write(FrameKind::Admin, Bytes::new()),
            Sample::Group(_) => write(FrameKind::Group, Bytes::new()),
            Sample::Queue(_) => write(FrameKind::Queue, Bytes::new()),
        };
        let w = &mut send;
        match self {
            Sample::Produce(r) => quiver::wire::write_frame(w, kind, r, payload).await,
            Sample::Fetch(r) => quiver::wire::write_frame(w, kind, r, payload).await,
            Sample::Admin(r) => quiver::wire::write_frame(w, kind, r, payload).await,
            Sample::Group(r) => quiver::wire::write_frame(w, kind, r, payload).await,
            Sample::Queue(r) => quiver::wire::write_frame(w, kind, r, payload).await,
        }
        .unwrap();
        send.finish().unwrap();
        let mut reader = quiver::wire::FrameReader::new(recv, 16 << 20);
        let frame = tokio::time::timeout(Duration::from_secs(20), reader.next())
            .await
            .expect("an answer")
            .unwrap()
            .expect("a frame");
        (frame.kind == FrameKind::Error).then(|| frame.decode::<ErrorBody>().unwrap().error_code())
    }
}

fn samples(delayed: u64) -> Vec<Sample> {
    use AdminRequest as A;
    use GroupRequest as G;
    use QueueRequest as Q;
    let produce = |topic: &str, exchange| ProduceRequest {
        request_id: 1,
        topic: topic.into(),
        partition: None,
        acks: Acks::Leader,
        exchange,
    };
    let ranges = vec![OffsetRange {
        partition: 0,
        first: 0,
        last: 0,
    }];
    let (g, t, c) = ("g1".to_string(), "t1".to_string(), "consumer".to_string());
    let attach = |name: &str| AttachOptions::new(name);
    vec![
        Sample::Produce(produce("t1", false)),
        Sample::Produce(produce("x1", true)),
        Sample::Fetch(FetchRequest {
            request_id: 2,
            topic: t.clone(),
            partition: 0,
            offset: OffsetSpec::Earliest,
            max_bytes: 1 << 20,
            max_wait_ms: 0,
            min_bytes: 0,
            filter: None,
            plugin: None,
        }),
        Sample::Admin(A::CreateTopic {
            name: "t2".into(),
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
            replication_factor: None,
            min_insync: None,
        }),
        Sample::Admin(A::AddPartitions {
            name: "t2".into(),
            count: 1,
        }),
        Sample::Admin(A::DeleteTopic { name: "t2".into() }),
        Sample::Admin(A::ListTopics),
        Sample::Admin(A::DescribeTopic { name: t.clone() }),
        Sample::Admin(A::Metadata),
        Sample::Admin(A::DeployPlugin {
            name: "p1".into(),
            version: None,
        }),
        Sample::Admin(A::ListPlugins),
        Sample::Admin(A::DescribePlugin {
            name: "p1@1".into(),
        }),
        Sample::Admin(A::ListPluginLogs {
            name: "p1".into(),
            version: Some("1".into()),
            after: None,
            max_wait_ms: 0,
        }),
        Sample::Admin(A::RemovePlugin { name: "p1".into() }),
        Sample::Admin(A::AttachPlugin {
            topic: t.clone(),
            options: attach("p1"),
        }),
        Sample::Admin(A::DetachPlugin {
            topic: t.clone(),
            plugin: "p1".into(),
        }),
        Sample::Admin(A::InitProducer {
            fencing_key: None,
            current_id: None,
        }),
        Sample::Admin(A::CreateExchange {
            name: "x2".into(),
            kind: ExchangeKind::Fanout,
            alternate: Some(t.clone()),
        }),
        Sample::Admin(A::BindExchange {
            exchange: "x2".into(),
            binding: Binding {
                topic: t.clone(),
                key: String::new(),
                headers: vec![],
                header_match: Default::default(),
            },
        }),
        Sample::Admin(A::ListExchanges),
        Sample::Admin(A::AttachExchangeRouter {
            exchange: "x2".into(),
            options: attach("p1"),
        }),
        Sample::Admin(A::DetachExchangeRouter {
            exchange: "x2".into(),
        }),
        Sample::Admin(A::DeleteExchange { name: "x2".into() }),
        Sample::Admin(A::CancelDelayed { id: delayed }),
        Sample::Admin(A::CreateUser { name: "u2".into() }),
        Sample::Admin(A::ListUsers),
        Sample::Admin(A::DeleteUser { name: "u2".into() }),
        Sample::Admin(A::AddAcl {
            rule: rule("u3", ResourceKind::Topic, "t1", &[Operation::Describe]),
        }),
        Sample::Admin(A::ListAcls),
        Sample::Admin(A::RemoveAcl { id: 999_999 }),
        Sample::Admin(A::WhoAmI),
        Sample::Admin(A::ClusterStatus),
        Sample::Admin(A::SetQuota {
            principal: "u3".into(),
            quota: Default::default(),
        }),
        Sample::Admin(A::ListQuotas),
        Sample::Admin(A::RemoveQuota {
            principal: "u3".into(),
        }),
        Sample::Admin(A::AddMirror {
            spec: quiver::MirrorSpec {
                name: "m1".into(),
                to: "127.0.0.1:9".into(),
                topics: "t*".into(),
                prefix: None,
                from: Default::default(),
                direction: Default::default(),
                source_id: None,
                ca_pem: "not a certificate".into(),
                token: None,
                cert_pem: None,
                key_pem: None,
            },
        }),
        Sample::Admin(A::ListMirrors),
        Sample::Admin(A::DescribeMirror { name: "m1".into() }),
        Sample::Admin(A::RemoveMirror { name: "m1".into() }),
        Sample::Group(G::Heartbeat {
            group: g.clone(),
            member_id: None,
            client_id: c.clone(),
            topics: vec![t.clone()],
            session_timeout_ms: 10_000,
            owned: vec![],
        }),
        Sample::Group(G::Commit {
            group: g.clone(),
            member_id: None,
            offsets: vec![PartitionOffset {
                topic: t.clone(),
                partition: 0,
                offset: 0,
            }],
        }),
        Sample::Group(G::FetchOffsets {
            group: g.clone(),
            partitions: vec![TopicPartition {
                topic: t.clone(),
                partition: 0,
            }],
        }),
        Sample::Group(G::List),
        Sample::Group(G::Describe { group: g.clone() }),
        Sample::Group(G::Leave {
            group: g.clone(),
            member_id: "m".into(),
        }),
        Sample::Group(G::Reset {
            group: "g2".into(),
            topic: t.clone(),
            to: ResetTo::Earliest,
        }),
        Sample::Queue(Q::Poll {
            group: "q1".into(),
            topic: t.clone(),
            consumer_id: c.clone(),
            max_records: 1,
            max_wait_ms: 0,
            visibility_timeout_ms: 1000,
            max_deliveries: 3,
        }),
        Sample::Queue(Q::Ack {
            group: "q1".into(),
            topic: t.clone(),
            consumer_id: c.clone(),
            records: ranges.clone(),
        }),
        Sample::Queue(Q::Nack {
            group: "q1".into(),
            topic: t.clone(),
            consumer_id: c.clone(),
            records: ranges.clone(),
            delay_ms: 0,
        }),
        Sample::Queue(Q::Release {
            group: "q1".into(),
            topic: t,
            consumer_id: c,
            records: ranges,
        }),
    ]
}

fn rule(principal: &str, resource: ResourceKind, pattern: &str, ops: &[Operation]) -> AclSpec {
    AclSpec {
        principal: principal.into(),
        resource,
        pattern: pattern.into(),
        operations: ops.to_vec(),
        deny: false,
    }
}

/// A raw QUIC connection that authenticated with `token`.
async fn connection(broker: &TestBroker, token: &str) -> quinn::Connection {
    common::raw_connection_with(broker, Some(token)).await
}

async fn auth_broker(dir: &std::path::Path) -> TestBroker {
    TestBroker::start_with(dir, |c| c.auth.enabled = true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_kind_is_checked_and_needs_exactly_its_table_entry() {
    let dir = tempfile::tempdir().unwrap();
    let broker = auth_broker(dir.path()).await;
    let admin = broker
        .client_with_token(&broker.admin_token())
        .await
        .unwrap();
    admin
        .admin()
        .create_topic(quiver::NewTopic::new("t1", 1))
        .await
        .unwrap();
    admin
        .admin()
        .create_exchange("x1", ExchangeKind::Fanout, None)
        .await
        .unwrap();
    let held = Producer::new(admin.clone(), ProducerConfig::default())
        .send_now(ProducerRecord::new("t1", "later").delay(Duration::from_secs(3600)))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap()
        .delay_id
        .unwrap();
    let nobody = connection(&broker, &admin.admin().create_user("nobody").await.unwrap()).await;
    let granted = connection(
        &broker,
        &admin.admin().create_user("granted").await.unwrap(),
    )
    .await;
    let samples = samples(held);
    let kinds: BTreeSet<&str> = samples.iter().map(Sample::kind).collect();
    assert_eq!(
        kinds.len(),
        50,
        "one sample of every request kind: {kinds:?}"
    );
    let delayed_topic = |id| (id == held).then(|| "t1".to_string());
    for sample in &samples {
        let kind = sample.kind();
        let needs = match table::access(sample.request(), &delayed_topic) {
            Access::All(needs) => needs,
            Access::Filtered(_) | Access::Authenticated => vec![],
        };
        let refused = sample.send(&nobody).await;
        if needs.is_empty() {
            assert_ne!(
                refused,
                Some(ErrorCode::NotAuthorized),
                "{kind} needs no rule"
            );
        } else {
            assert_eq!(
                refused,
                Some(ErrorCode::NotAuthorized),
                "{kind} without rules"
            );
        }
        let mut ids = Vec::new();
        for n in &needs {
            let r = admin
                .admin()
                .add_acl(rule("granted", n.resource, &n.name, &[n.op]))
                .await
                .unwrap();
            ids.push(r.id);
        }
        let answered = sample.send(&granted).await;
        assert_ne!(
            answered,
            Some(ErrorCode::NotAuthorized),
            "{kind} with {needs:?}"
        );
        for id in ids {
            admin.admin().remove_acl(id).await.unwrap();
        }
    }
    // Lists answer everyone, with only what the principal may see.
    let nobody_client = broker
        .client_with_token(&admin.admin().create_user("viewer").await.unwrap())
        .await
        .unwrap();
    assert!(nobody_client
        .admin()
        .list_topics()
        .await
        .unwrap()
        .is_empty());
    admin
        .admin()
        .add_acl(rule(
            "viewer",
            ResourceKind::Topic,
            "t*",
            &[Operation::Describe],
        ))
        .await
        .unwrap();
    let names: Vec<String> = nobody_client
        .admin()
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["t1"]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_changes_and_revocation_reach_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let broker = auth_broker(dir.path()).await;
    let admin = broker
        .client_with_token(&broker.admin_token())
        .await
        .unwrap();
    let a = admin.admin();
    a.create_topic(quiver::NewTopic::new("orders.eu", 1))
        .await
        .unwrap();
    a.create_topic(quiver::NewTopic::new("orders.secret", 1))
        .await
        .unwrap();
    let token = a.create_user("alice").await.unwrap();
    let alice = broker.client_with_token(&token).await.unwrap();
    let producer = Producer::new(alice.clone(), ProducerConfig::default());
    let send = |topic: &'static str| {
        let p = producer.clone();
        async move {
            let d = p
                .send_now(ProducerRecord::new(topic, "v"))
                .await
                .map_err(std::sync::Arc::new)?;
            d.wait().await.map(|_| ())
        }
    };
    let code = |r: Result<(), std::sync::Arc<quiver::ClientError>>| r.err().and_then(|e| e.code());
    assert_eq!(
        code(send("orders.eu").await),
        Some(ErrorCode::NotAuthorized)
    );
    a.add_acl(rule(
        "alice",
        ResourceKind::Topic,
        "orders.*",
        &[Operation::Produce],
    ))
    .await
    .unwrap();
    send("orders.eu")
        .await
        .expect("allowed at once on the open connection");
    let deny = AclSpec {
        deny: true,
        ..rule(
            "alice",
            ResourceKind::Topic,
            "orders.secret",
            &[Operation::Produce],
        )
    };
    a.add_acl(deny).await.unwrap();
    assert_eq!(
        code(send("orders.secret").await),
        Some(ErrorCode::NotAuthorized),
        "deny wins"
    );
    send("orders.eu").await.unwrap();
    let (who, auth) = alice.admin().whoami().await.unwrap();
    assert_eq!((who.as_str(), auth), ("alice", true));

    let started = Instant::now();
    assert_eq!(
        a.delete_user("alice").await.unwrap(),
        1,
        "alice's one connection"
    );
    let closed = tokio::time::timeout(Duration::from_secs(1), alice.closed()).await;
    let reason = closed.expect("closed within a second of the revocation");
    assert!(reason.to_string().contains("revoked"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let again = broker.client_with_token(&token).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::NotAuthorized), "{again}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_principals_and_anonymous_and_bad_tokens_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = auth_broker(dir.path()).await;
    let anonymous = Client::connect(&broker.addr.to_string(), &broker.ca)
        .await
        .unwrap_err();
    assert_eq!(
        anonymous.code(),
        Some(ErrorCode::NotAuthorized),
        "{anonymous}"
    );
    assert!(
        anonymous.to_string().contains("credentials required"),
        "{anonymous}"
    );

    let (cert, key) = quiver_broker::transport::tls::generate_client_cert(
        &dir.path().join("tls"),
        "carol",
        &dir.path().join("clients"),
    )
    .unwrap();
    let mut options = quiver::ClientOptions::new(broker.addr.to_string(), &broker.ca);
    options.client_cert = Some((cert, key));
    let carol = Client::connect_with(options).await.unwrap();
    assert_eq!(carol.admin().whoami().await.unwrap().0, "carol");
    let err = carol
        .admin()
        .create_topic(quiver::NewTopic::new("c", 1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotAuthorized), "{err}");
    assert!(
        err.to_string().contains("create topic \"c\""),
        "names the operation: {err}"
    );

    // The same answer for an unknown user and a wrong secret, each slower than the last.
    let admin = broker
        .client_with_token(&broker.admin_token())
        .await
        .unwrap();
    let real = admin.admin().create_user("dave").await.unwrap();
    let wrong_secret = format!("{}0", &real[..real.len() - 1]);
    let wrong_secret = if wrong_secret == real {
        format!("{}1", &real[..real.len() - 1])
    } else {
        wrong_secret
    };
    let mut answers = Vec::new();
    let mut waits = Vec::new();
    for token in ["qvt_0123456789abcdef_00", wrong_secret.as_str(), "garbage"] {
        let started = Instant::now();
        let err = broker.client_with_token(token).await.unwrap_err();
        waits.push(started.elapsed());
        assert_eq!(err.code(), Some(ErrorCode::NotAuthorized));
        answers.push(err.to_string().replace(token, ""));
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert!(
        !answers[0].contains("dave") && !answers[0].contains(&real),
        "{answers:?}"
    );
    assert!(
        waits[2] >= Duration::from_millis(300),
        "the third failure waits 100+200 ms or more: {waits:?}"
    );
    broker.stop().await;
}

/// The command line: `serve --auth` writes the admin token, `user` and `acl` manage access, and
/// a non-loopback listener needs `--auth` or `--allow-anonymous`.
#[test]
fn the_command_line_manages_users_and_acls_and_guards_public_listeners() {
    use common::serve::Serve;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_with(dir.path(), &["--auth"]);
    let token_file = dir.path().join("data/admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let admin = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    let run = |token: &str, args: &[&str], stdin: &str| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"));
        cmd.args(args)
            .env("QUIVER_SERVER", &serve.addr)
            .env("QUIVER_CA", dir.path().join("data/tls/ca.pem"))
            .env("QUIVER_TOKEN", token);
        let out = common::run_with_stdin(cmd, stdin);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, _, err) = run("", &["topic", "list"], "");
    assert!(!ok && err.contains("credentials required"), "{err}");
    assert!(run(&admin, &["topic", "create", "orders.eu"], "").0);
    assert!(run(&admin, &["topic", "create", "secret"], "").0);
    let (ok, out, err) = run(&admin, &["user", "create", "alice"], "");
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 1, "the token alone on stdout: {out}");
    let alice = out.trim().to_owned();
    assert!(!err.contains(&alice), "the token is printed once");
    let (ok, out, _) = run(
        &admin,
        &[
            "acl",
            "add",
            "--principal",
            "alice",
            "--topic",
            "orders.*",
            "--op",
            "produce,consume",
        ],
        "",
    );
    assert!(
        ok && out.contains("allow alice produce,consume on topic orders.*"),
        "{out}"
    );
    let id = out.split('\t').next().unwrap().to_owned();
    assert!(run(&alice, &["produce", "orders.eu"], "hello\n").0);
    let (ok, _, err) = run(&alice, &["produce", "secret"], "hello\n");
    assert!(!ok && err.contains("not authorized"), "{err}");
    let (ok, out, _) = run(
        &alice,
        &["consume", "orders.eu", "--from", "earliest", "--count", "1"],
        "",
    );
    assert!(ok && out.trim() == "hello", "{out}");
    let (_, out, _) = run(&admin, &["acl", "list"], "");
    assert!(out.contains(&format!("{id}\tallow alice")), "{out}");
    assert!(run(&admin, &["acl", "remove", &id], "").0);
    let (ok, _, err) = run(&alice, &["produce", "orders.eu"], "again\n");
    assert!(
        !ok && err.contains("not authorized"),
        "the removed rule no longer allows: {err}"
    );
    let (_, out, _) = run(&admin, &["user", "list"], "");
    assert!(
        out.contains("alice") && out.contains("admin") && !out.contains("qvt_"),
        "{out}"
    );
    let (ok, out, err) = run(
        &admin,
        &[
            "quota",
            "set",
            "--principal",
            "alice",
            "--produce-bytes-per-sec",
            "1000",
        ],
        "",
    );
    assert!(
        ok && out.contains("alice\tproduce 1000 B/s\tfetch unlimited B/s"),
        "{out}{err}"
    );
    let (_, out, _) = run(&alice, &["quota", "list"], "");
    assert!(out.is_empty(), "quotas are for cluster admins: {out}");
    let (ok, out, _) = run(&admin, &["quota", "remove", "--principal", "alice"], "");
    assert!(
        ok && !out.contains("alice") && out.contains("*\tproduce unlimited"),
        "{out}"
    );
    assert!(run(&admin, &["user", "delete", "alice"], "").0);
    let (ok, _, err) = run(&alice, &["whoami"], "");
    assert!(!ok && err.contains("invalid credentials"), "{err}");
    drop(serve);

    // A public address without authentication refuses to start; --allow-anonymous starts it.
    let public = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--http",
            "none",
            "--data-dir",
        ])
        .arg(dir.path().join("public"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&public.stderr);
    assert!(
        !public.status.success() && err.contains("needs authentication"),
        "{err}"
    );
    let mut open = std::process::Command::new(env!("CARGO_BIN_EXE_quiver"))
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            "--http",
            "none",
            "--allow-anonymous",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("public"))
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(open.stderr.take().unwrap());
    let mut warned = false;
    for line in std::io::BufRead::lines(stderr).map_while(Result::ok) {
        warned |= line.contains("authentication is off on a non-loopback address");
        if line.contains("quiver listening") {
            break;
        }
    }
    let _ = open.kill();
    let _ = open.wait();
    assert!(warned, "--allow-anonymous is logged as a warning at start");
}

/// No confused deputy: a produce through an exchange writes only where the producer may produce,
/// whoever set up the bindings; a refused produce appends nothing anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_writes_only_where_the_producer_may() {
    let dir = tempfile::tempdir().unwrap();
    let broker = auth_broker(dir.path()).await;
    let admin = broker
        .client_with_token(&broker.admin_token())
        .await
        .unwrap();
    let a = admin.admin();
    for t in ["open", "closed"] {
        a.create_topic(quiver::NewTopic::new(t, 1)).await.unwrap();
    }
    a.create_exchange("fan", ExchangeKind::Fanout, None)
        .await
        .unwrap();
    for t in ["open", "closed"] {
        let binding = Binding {
            topic: t.into(),
            key: String::new(),
            headers: vec![],
            header_match: Default::default(),
        };
        a.bind_exchange("fan", binding).await.unwrap();
    }
    let bob = broker
        .client_with_token(&a.create_user("bob").await.unwrap())
        .await
        .unwrap();
    a.add_acl(rule(
        "bob",
        ResourceKind::Exchange,
        "fan",
        &[Operation::Produce],
    ))
    .await
    .unwrap();
    a.add_acl(rule(
        "bob",
        ResourceKind::Topic,
        "open",
        &[Operation::Produce],
    ))
    .await
    .unwrap();
    let producer = Producer::new(bob.clone(), ProducerConfig::default());
    let send = || async {
        let d = producer
            .send_now(ProducerRecord::to_exchange("fan", "v"))
            .await
            .map_err(std::sync::Arc::new)?;
        d.wait().await.map(|_| ())
    };
    let err = send().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::NotAuthorized), "{err}");
    assert!(
        err.to_string().contains("produce topic \"closed\""),
        "{err}"
    );
    for t in ["open", "closed"] {
        let desc = a.describe_topic(t).await.unwrap();
        assert_eq!(desc.partitions[0].log_end, 0, "{t}: nothing appended");
    }
    a.add_acl(rule(
        "bob",
        ResourceKind::Topic,
        "closed",
        &[Operation::Produce],
    ))
    .await
    .unwrap();
    send().await.expect("allowed on every destination");
    broker.stop().await;
}

/// Quotas throttle, they do not fail: a producer over its byte rate gets its answers late (and
/// told so in them), while another principal's producer runs at full speed beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_producer_does_not_slow_another_principal() {
    use quiver_broker::auth::Quota;
    let dir = tempfile::tempdir().unwrap();
    let slow_rate = 200_000u64;
    let broker = TestBroker::start_with(dir.path(), |c| {
        c.auth.enabled = true;
        c.quotas.principals.insert(
            "slow".into(),
            Quota {
                produce_bytes_per_sec: Some(slow_rate),
                ..Quota::default()
            },
        );
        c.quotas.principals.insert(
            "limited".into(),
            Quota {
                connections: Some(1),
                ..Quota::default()
            },
        );
    })
    .await;
    let admin = broker
        .client_with_token(&broker.admin_token())
        .await
        .unwrap();
    let a = admin.admin();
    a.create_topic(quiver::NewTopic::new("load", 1))
        .await
        .unwrap();
    let mut tokens = Vec::new();
    for name in ["slow", "fast"] {
        tokens.push(a.create_user(name).await.unwrap());
        a.add_acl(rule(
            name,
            ResourceKind::Topic,
            "load",
            &[Operation::Produce],
        ))
        .await
        .unwrap();
    }
    // 600 KB each in 10 KB records: `slow` has one second of burst (200 KB), then 2 s of debt.
    let run = |token: String| {
        let broker_addr = broker.addr.to_string();
        let ca = broker.ca.clone();
        async move {
            let mut options = quiver::ClientOptions::new(broker_addr, &ca);
            options.token = Some(token);
            let client = Client::connect_with(options).await.unwrap();
            let producer = Producer::new(client, ProducerConfig::default());
            let started = Instant::now();
            let mut pending = Vec::new();
            for _ in 0..60 {
                let rec = ProducerRecord::new("load", vec![7u8; 10_000]);
                pending.push(producer.send(rec).await.unwrap());
            }
            for d in pending {
                d.wait().await.unwrap();
            }
            started.elapsed()
        }
    };
    let (slow, fast) = tokio::join!(run(tokens[0].clone()), run(tokens[1].clone()));
    assert!(
        slow >= Duration::from_millis(1500),
        "slow was throttled: {slow:?}"
    );
    assert!(
        fast * 2 < slow,
        "fast ran beside it unslowed: fast {fast:?}, slow {slow:?}"
    );
    let desc = a.describe_topic("load").await.unwrap();
    assert_eq!(desc.partitions[0].log_end, 120, "throttled, not dropped");

    // The answer says it was held back.
    let conn = connection(&broker, &tokens[0]).await;
    let mut builder = quiver_proto::BatchBuilder::new();
    let value = vec![1u8; 300_000];
    let record = quiver_proto::RecordData {
        timestamp: 0,
        key: None,
        value: &value,
        headers: &[],
        tags: &[],
    };
    builder.push(&record).unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let req = ProduceRequest {
        request_id: 9,
        topic: "load".into(),
        partition: Some(0),
        acks: Acks::Leader,
        exchange: false,
    };
    let batch = builder.finish().unwrap();
    quiver::wire::write_frame(&mut send, FrameKind::Produce, &req, batch)
        .await
        .unwrap();
    send.finish().unwrap();
    let mut reader = quiver::wire::FrameReader::new(recv, 1 << 20);
    let frame = reader.next().await.unwrap().unwrap();
    let ok: quiver_proto::ProduceResponse = frame.decode().unwrap();
    assert!(ok.throttle_ms > 0, "{ok:?}");

    // The connection quota: `limited` may hold one connection open, not two.
    let limited = a.create_user("limited").await.unwrap();
    let _first = broker.client_with_token(&limited).await.unwrap();
    let second = broker.client_with_token(&limited).await.unwrap_err();
    assert_eq!(second.code(), Some(ErrorCode::ServerBusy), "{second}");
    assert!(
        second.to_string().contains("quota of 1 connections"),
        "{second}"
    );
    broker.stop().await;
}

/// Queue polls count against the fetch quota: a throttled reader's polls are held back before
/// they lease (so no lease time is spent waiting), told so in the answer, and lose nothing; a
/// reader without a quota drains the same records beside it at full speed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_polls_count_against_the_fetch_quota() {
    use quiver::{QueueConfig, QueueConsumer};
    use quiver_broker::auth::Quota;
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(dir.path(), |c| {
        c.auth.enabled = true;
        c.quotas.principals.insert(
            "slow".into(),
            Quota {
                fetch_bytes_per_sec: Some(50_000),
                ..Quota::default()
            },
        );
    })
    .await;
    let admin = broker
        .client_with_token(&broker.admin_token())
        .await
        .unwrap();
    let a = admin.admin();
    a.create_topic(quiver::NewTopic::new("jobs", 1))
        .await
        .unwrap();
    let producer = Producer::new(admin.clone(), ProducerConfig::default());
    for _ in 0..40 {
        let d = producer
            .send(ProducerRecord::new("jobs", vec![3u8; 5_000]))
            .await
            .unwrap();
        d.wait().await.unwrap();
    }
    let mut tokens = Vec::new();
    for name in ["slow", "fast"] {
        tokens.push(a.create_user(name).await.unwrap());
        let needs = [
            (ResourceKind::Topic, "jobs", vec![Operation::Consume]),
            (
                ResourceKind::Group,
                name,
                vec![Operation::Consume, Operation::Commit],
            ),
        ];
        for (kind, pattern, ops) in needs {
            a.add_acl(rule(name, kind, pattern, &ops)).await.unwrap();
        }
    }
    // 200 KB each in polls of 10 records (50 KB): `slow` has one second of burst; each later
    // poll first pays the second of debt the one before it ran up (the last one's debt is left
    // for a poll that never comes): at least 2 s in all.
    let drain = |name: &'static str, token: String| {
        let broker = &broker;
        async move {
            let client = broker.client_with_token(&token).await.unwrap();
            let config = QueueConfig {
                max_records: 10,
                max_wait: Duration::from_millis(100),
                ..QueueConfig::default()
            };
            let queue = QueueConsumer::new(client, name, "jobs", config);
            let started = Instant::now();
            let mut got = 0;
            while got < 40 {
                let leased = queue.poll().await.unwrap();
                let held = leased.iter().map(|r| r.lease_deadline_ms).min();
                if let Some(deadline) = held {
                    assert!(
                        deadline > quiver_broker::util::now_ms(),
                        "a lease is not spent waiting out the quota"
                    );
                }
                queue.ack(&leased).await.unwrap();
                got += leased.len();
            }
            (got, started.elapsed())
        }
    };
    let ((slow_n, slow), (fast_n, fast)) = tokio::join!(
        drain("slow", tokens[0].clone()),
        drain("fast", tokens[1].clone())
    );
    assert_eq!((slow_n, fast_n), (40, 40), "throttled, not dropped");
    assert!(
        slow >= Duration::from_millis(1900),
        "slow was throttled: {slow:?}"
    );
    assert!(
        fast * 2 < slow,
        "fast ran beside it: fast {fast:?}, slow {slow:?}"
    );

    // The answer says how long the next poll will wait.
    let conn = connection(&broker, &tokens[0]).await;
    let poll = QueueRequest::Poll {
        group: "slow".into(),
        topic: "jobs".into(),
        consumer_id: "raw".into(),
        max_records: 10,
        max_wait_ms: 0,
        visibility_timeout_ms: 30_000,
        max_deliveries: 5,
    };
    // Everything is acked: produce more so the raw poll leases something.
    for _ in 0..20 {
        let d = producer
            .send(ProducerRecord::new("jobs", vec![3u8; 5_000]))
            .await
            .unwrap();
        d.wait().await.unwrap();
    }
    let (mut send, recv) = conn.open_bi().await.unwrap();
    quiver::wire::write_frame(&mut send, FrameKind::Queue, &poll, Bytes::new())
        .await
        .unwrap();
    send.finish().unwrap();
    let mut reader = quiver::wire::FrameReader::new(recv, 1 << 20);
    let frame = reader.next().await.unwrap().unwrap();
    match frame.decode().unwrap() {
        quiver_proto::groups::QueueResponse::Leased {
            parts, throttle_ms, ..
        } => {
            assert!(!parts.is_empty());
            assert!(throttle_ms > 0, "over quota: {throttle_ms}");
        }
        other => panic!("{other:?}"),
    }
    broker.stop().await;
}
