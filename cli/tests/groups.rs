//! Consumer groups, queue mode and idempotent produce over real QUIC: assignment across members,
//! a killed member's partitions moving within the session timeout with nothing committed lost,
//! partitions that do not move delivering through a rebalance, committed offsets across a restart,
//! queue-mode nack / visibility timeout / dead-lettering, a resent idempotent batch, and
//! request/reply.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{raw_connection, TestBroker};
use quiver::{
    Client, CommitMode, ConsumedRecord, GroupConfig, GroupConsumer, NewTopic, Producer,
    ProducerConfig, ProducerRecord, QueueConfig, QueueConsumer, QueuedRecord, Record, Requester,
    RequesterConfig, ResetTo, Responder, TopicPartition,
};
use quiver_proto::frame::FrameKind;
use quiver_proto::messages::{Acks, ProduceRequest, ProduceResponse};
use quiver_proto::{BatchBuilder, ErrorCode, RecordData};

const SESSION: Duration = Duration::from_millis(1500);

/// Produces records `from..to` to each partition, values `p<partition>-<i>`.
async fn fill(client: &Client, topic: &str, partitions: u32, from: u32, to: u32) {
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in from..to {
        for p in 0..partitions {
            producer
                .send(ProducerRecord::new(topic, format!("p{p}-{i}")).partition(p))
                .await
                .unwrap();
        }
    }
    producer.flush().await.unwrap();
}

fn group_config(group: &str, topic: &str, commit: CommitMode) -> GroupConfig {
    let mut c = GroupConfig::new(group, [topic]);
    c.commit = commit;
    c.session_timeout = SESSION;
    c.heartbeat_interval = Duration::from_millis(200);
    c
}

fn partitions_of(tps: &[TopicPartition]) -> BTreeSet<u32> {
    tps.iter().map(|tp| tp.partition).collect()
}

fn value(r: &ConsumedRecord) -> String {
    String::from_utf8_lossy(&r.record.value).into_owned()
}

/// Polls every member until `done` holds for their assignments; panics after `limit`.
async fn poll_until(
    members: &mut [&mut GroupConsumer],
    limit: Duration,
    seen: &mut Vec<ConsumedRecord>,
    done: impl Fn(&[Vec<TopicPartition>]) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        for m in members.iter_mut() {
            seen.extend(m.poll(Duration::from_millis(20)).await.unwrap());
        }
        let now: Vec<Vec<TopicPartition>> = members.iter().map(|m| m.assignment()).collect();
        if done(&now) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "no balanced assignment after {limit:?}: {now:?}"
        );
    }
}

fn balanced(sizes: &[usize]) -> impl Fn(&[Vec<TopicPartition>]) -> bool + '_ {
    move |now: &[Vec<TopicPartition>]| {
        let all: BTreeSet<&TopicPartition> = now.iter().flatten().collect();
        now.iter().map(Vec::len).collect::<Vec<_>>() == sizes
            && all.len() == sizes.iter().sum::<usize>()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_partitions_and_a_killed_members_partitions_move_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let admin_client = broker.client().await;
    admin_client
        .admin()
        .create_topic(NewTopic::new("orders", 6))
        .await
        .unwrap();
    fill(&admin_client, "orders", 6, 0, 50).await;

    // Each member on its own connection, so "killing" one drops its connection too.
    let manual = CommitMode::Manual;
    let (ca, cb, cc) = (
        broker.client().await,
        broker.client().await,
        broker.client().await,
    );
    let mut a = GroupConsumer::join(ca.clone(), group_config("billing", "orders", manual))
        .await
        .unwrap();
    let mut b = GroupConsumer::join(cb.clone(), group_config("billing", "orders", manual))
        .await
        .unwrap();
    let mut c = GroupConsumer::join(cc.clone(), group_config("billing", "orders", manual))
        .await
        .unwrap();
    let mut seen = Vec::new();
    poll_until(
        &mut [&mut a, &mut b, &mut c],
        Duration::from_secs(10),
        &mut seen,
        balanced(&[2, 2, 2]),
    )
    .await;

    // Consume and commit everything once (process, then commit: at-least-once).
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 300 {
        for m in [&mut a, &mut b, &mut c] {
            seen.extend(m.poll(Duration::from_millis(50)).await.unwrap());
            m.commit().await.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 300 records",
            seen.len()
        );
    }
    // More records arrive; c reads some of them but dies before committing.
    fill(&admin_client, "orders", 6, 50, 60).await;
    let c_parts = partitions_of(&c.assignment());
    let mut lost_by_c = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while lost_by_c.len() < 20 {
        lost_by_c.extend(c.poll(Duration::from_millis(50)).await.unwrap());
        assert!(Instant::now() < deadline);
    }
    let killed = Instant::now();
    drop(c);
    cc.close().await;

    // Within the session timeout (+ margin), a and b own all six partitions, three each.
    let mut after = Vec::new();
    poll_until(
        &mut [&mut a, &mut b],
        SESSION + Duration::from_secs(3),
        &mut after,
        balanced(&[3, 3]),
    )
    .await;
    let moved_in = killed.elapsed();
    assert!(
        moved_in < SESSION + Duration::from_secs(2),
        "rebalance took {moved_in:?}"
    );
    // c's uncommitted records are delivered again to their new owners: nothing committed is lost.
    let deadline = Instant::now() + Duration::from_secs(20);
    let want: HashSet<String> = (0..6)
        .flat_map(|p| (50..60).map(move |i| format!("p{p}-{i}")))
        .collect();
    loop {
        let got: HashSet<String> = after.iter().map(value).collect();
        if want.is_subset(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing {:?}",
            want.difference(&got).collect::<Vec<_>>()
        );
        for m in [&mut a, &mut b] {
            after.extend(m.poll(Duration::from_millis(50)).await.unwrap());
            m.commit().await.unwrap();
        }
    }
    for m in [&mut a, &mut b] {
        m.commit().await.unwrap();
    }
    let redelivered: HashSet<String> = after
        .iter()
        .filter(|r| c_parts.contains(&r.partition))
        .map(value)
        .collect();
    assert!(lost_by_c.iter().all(|r| redelivered.contains(&value(r))));

    // describe: two members, every partition committed up to the log end, lag 0.
    let d = admin_client
        .admin()
        .describe_group("billing")
        .await
        .unwrap();
    assert_eq!(d.members.len(), 2);
    assert_eq!(d.partitions.len(), 6);
    for p in &d.partitions {
        assert_eq!((p.committed, p.lag), (Some(60), 0), "{p:?}");
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_that_stay_keep_delivering_while_others_move() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("clicks", 6))
        .await
        .unwrap();
    let auto = CommitMode::Auto {
        interval: Duration::from_millis(200),
    };
    let mut a = GroupConsumer::join(client.clone(), group_config("ui", "clicks", auto))
        .await
        .unwrap();
    let mut b = GroupConsumer::join(client.clone(), group_config("ui", "clicks", auto))
        .await
        .unwrap();
    let mut seen = Vec::new();
    poll_until(
        &mut [&mut a, &mut b],
        Duration::from_secs(10),
        &mut seen,
        balanced(&[3, 3]),
    )
    .await;
    let a_before = partitions_of(&a.assignment());

    // A steady stream to every partition while the group changes.
    let producing = {
        let client = client.clone();
        tokio::spawn(async move {
            let producer = Producer::new(client, ProducerConfig::default());
            for i in 0..400 {
                for p in 0..6 {
                    let rec = ProducerRecord::new("clicks", format!("p{p}-{i}")).partition(p);
                    producer.send(rec).await.unwrap();
                }
                producer.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // c joins. b is busy (not polling) for a while, so the partition it must give up stays in
    // flight: during that time, a's partitions that do not move must keep delivering.
    let mut c = GroupConsumer::join(client.clone(), group_config("ui", "clicks", auto))
        .await
        .unwrap();
    let joined = Instant::now();
    let mut a_during: Vec<ConsumedRecord> = Vec::new();
    let mut assignments = Vec::new();
    while joined.elapsed() < Duration::from_millis(1200) {
        a_during.extend(a.poll(Duration::from_millis(20)).await.unwrap());
        c.poll(Duration::from_millis(5)).await.unwrap();
        assignments.push(partitions_of(&a.assignment()));
    }
    let a_kept = partitions_of(&a.assignment());
    assert_eq!(a_kept.len(), 2, "a gave up one partition to c");
    assert!(
        a_kept.is_subset(&a_before),
        "a's kept partitions are its own: {a_kept:?}"
    );
    assert!(
        assignments.iter().all(|s| a_kept.is_subset(s)),
        "a's kept partitions were never paused"
    );
    let late: BTreeMap<u32, usize> = a_during
        .iter()
        .filter(|r| a_kept.contains(&r.partition))
        .fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r.partition).or_default() += 1;
            m
        });
    assert_eq!(
        late.len(),
        2,
        "records kept flowing on both kept partitions: {late:?}"
    );
    assert!(late.values().all(|n| *n >= 10), "{late:?}");
    for p in &a_kept {
        let offsets: Vec<u64> = a_during
            .iter()
            .filter(|r| r.partition == *p)
            .map(|r| r.record.offset)
            .collect();
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "partition {p} read on without a restart or a gap: {offsets:?}"
        );
    }
    // b still holds what it must give up until it polls; then c gets its second partition.
    assert!(
        c.assignment().len() < 2,
        "c got b's partition before b released it"
    );
    let mut rest = Vec::new();
    poll_until(
        &mut [&mut a, &mut b, &mut c],
        Duration::from_secs(10),
        &mut rest,
        balanced(&[2, 2, 2]),
    )
    .await;
    producing.await.unwrap();
    for m in [a, b, c] {
        m.close().await.unwrap();
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_restart_and_reset_moves_them() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("audit", 2))
        .await
        .unwrap();
    fill(&client, "audit", 2, 0, 30).await;
    let mut m = GroupConsumer::join(
        client.clone(),
        group_config("auditors", "audit", CommitMode::Manual),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 60 {
        got.extend(m.poll(Duration::from_millis(100)).await.unwrap());
        assert!(Instant::now() < deadline);
    }
    m.commit().await.unwrap();
    m.close().await.unwrap();
    client.close().await;
    broker.stop().await;

    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let d = client.admin().describe_group("auditors").await.unwrap();
    assert_eq!(
        d.partitions.iter().map(|p| p.committed).collect::<Vec<_>>(),
        vec![Some(30), Some(30)]
    );
    // A new member starts where the group left off: only new records arrive.
    fill(&client, "audit", 2, 30, 35).await;
    let mut m = GroupConsumer::join(
        client.clone(),
        group_config("auditors", "audit", CommitMode::Manual),
    )
    .await
    .unwrap();
    let mut again = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while again.len() < 10 {
        again.extend(m.poll(Duration::from_millis(100)).await.unwrap());
        assert!(Instant::now() < deadline);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    again.extend(m.poll(Duration::from_millis(100)).await.unwrap());
    assert_eq!(again.len(), 10);
    assert!(again.iter().all(|r| r.record.offset >= 30));
    // A reset is refused while a member consumes the topic, and works once it left.
    let err = client
        .admin()
        .reset_group("auditors", "audit", ResetTo::Earliest)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("live members"), "{err}");
    m.close().await.unwrap();
    let offsets = client
        .admin()
        .reset_group("auditors", "audit", ResetTo::Offset(3))
        .await
        .unwrap();
    assert_eq!(
        offsets.iter().map(|o| o.offset).collect::<Vec<_>>(),
        vec![3, 3]
    );
    let groups = client.admin().list_groups().await.unwrap();
    assert!(groups
        .iter()
        .any(|g| g.name == "auditors" && g.committed_partitions == 2));
    broker.stop().await;
}

fn queue_config(visibility: Duration, max_deliveries: u32) -> QueueConfig {
    QueueConfig {
        max_records: 100,
        max_wait: Duration::from_millis(200),
        visibility_timeout: visibility,
        max_deliveries,
        consumer_id: None,
    }
}

async fn poll_some(q: &QueueConsumer, n: usize) -> Vec<QueuedRecord> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        out.extend(q.poll().await.unwrap());
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records leased",
            out.len()
        );
    }
    out
}

/// A header of a record as text.
fn header_text(rec: &Record, name: &str) -> Option<String> {
    rec.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Produces one record to a partition and waits until it is stored.
async fn send_one(producer: &Producer, topic: &str, value: &str, partition: u32) {
    let rec = ProducerRecord::new(topic, value.to_owned()).partition(partition);
    producer.send(rec).await.unwrap();
    producer.flush().await.unwrap();
}

fn text(r: &QueuedRecord) -> String {
    String::from_utf8_lossy(&r.record.value).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_mode_redelivers_on_nack_and_timeout_and_dead_letters_a_poison_record() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("jobs", 2))
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..10 {
        let v = if i == 3 {
            "poison".to_string()
        } else {
            format!("job-{i}")
        };
        producer
            .send(ProducerRecord::new("jobs", v).partition(i % 2))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();

    // Two consumers share the records: each record leased to one of them at a time.
    let q1 = QueueConsumer::new(
        client.clone(),
        "workers",
        "jobs",
        QueueConfig {
            max_records: 4,
            ..queue_config(Duration::from_secs(30), 3)
        },
    );
    let q2 = QueueConsumer::new(
        client.clone(),
        "workers",
        "jobs",
        queue_config(Duration::from_secs(30), 3),
    );
    let first = poll_some(&q1, 4).await;
    let second = poll_some(&q2, 10 - first.len()).await;
    assert_eq!(first.len(), 4, "q1 asks for 4 at most");
    assert_eq!(first.len() + second.len(), 10);
    let all: HashSet<(u32, u64)> = first
        .iter()
        .chain(&second)
        .map(|r| (r.partition, r.record.offset))
        .collect();
    assert_eq!(all.len(), 10, "every record leased exactly once");
    assert!(first.iter().chain(&second).all(|r| r.delivery_count == 1));

    // Ack everything but the poison record; nack it until it is dead-lettered, while the
    // others (already acked) are not held back.
    let (poison, fine): (Vec<QueuedRecord>, Vec<QueuedRecord>) = first
        .iter()
        .chain(&second)
        .cloned()
        .partition(|r| text(r) == "poison");
    for q in [&q1, &q2] {
        let mine: Vec<QueuedRecord> = fine
            .iter()
            .filter(|r| first.contains(r) == std::ptr::eq(q, &q1))
            .cloned()
            .collect();
        assert_eq!(q.ack(&mine).await.unwrap().settled, mine.len() as u64);
    }
    let holder = if first.iter().any(|r| text(r) == "poison") {
        &q1
    } else {
        &q2
    };
    let mut p = poison[0].clone();
    for delivery in 1..=3 {
        assert_eq!(p.delivery_count, delivery);
        assert_eq!(
            holder
                .nack(&[p.clone()], Duration::ZERO)
                .await
                .unwrap()
                .settled,
            1
        );
        if delivery < 3 {
            let again = poll_some(holder, 1).await;
            assert_eq!(text(&again[0]), "poison");
            p = again[0].clone();
        }
    }
    let dlq = common::consume_n(&client, "jobs.dlq", 1).await;
    let rec = &dlq[0].record;
    assert_eq!(rec.value.as_ref(), b"poison");
    let header = |k: &str| header_text(rec, k);
    assert!(
        header("quiver-error").unwrap().contains("nack"),
        "{:?}",
        rec.headers
    );
    assert_eq!(header("quiver-delivery-count").as_deref(), Some("3"));
    assert_eq!(header("quiver-source-topic").as_deref(), Some("jobs"));

    // Visibility timeout: q1 leases a record and goes silent; q2 gets it after the timeout with
    // a higher delivery count, and q1's late ack is stale.
    send_one(&producer, "jobs", "slow", 0).await;
    let short = QueueConsumer::new(
        client.clone(),
        "workers",
        "jobs",
        queue_config(Duration::from_millis(300), 3),
    );
    let leased = poll_some(&short, 1).await;
    assert_eq!(text(&leased[0]), "slow");
    assert!(
        q2.poll().await.unwrap().is_empty(),
        "leased to another consumer"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let again = poll_some(&q2, 1).await;
    assert_eq!(
        (text(&again[0]), again[0].delivery_count),
        ("slow".into(), 2)
    );
    let late = short.ack(&leased).await.unwrap();
    assert_eq!((late.settled, late.stale), (0, 1));
    q2.ack(&again).await.unwrap();

    // A lease that runs out on the last allowed delivery dead-letters the record too.
    send_one(&producer, "jobs", "stuck", 1).await;
    let once = QueueConsumer::new(
        client.clone(),
        "workers",
        "jobs",
        queue_config(Duration::from_millis(200), 1),
    );
    let stuck = poll_some(&once, 1).await;
    assert_eq!(text(&stuck[0]), "stuck");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        once.poll().await.unwrap().is_empty(),
        "dead, not redelivered"
    );
    let dlq = common::consume_n(&client, "jobs.dlq", 2).await;
    let rec = &dlq[1].record;
    let header = |k: &str| header_text(rec, k);
    assert_eq!(rec.value.as_ref(), b"stuck");
    assert!(header("quiver-error")
        .unwrap()
        .contains("visibility timeout"));
    assert_eq!(header("quiver-source-partition").as_deref(), Some("1"));
    assert_eq!(
        header("quiver-source-offset"),
        Some(stuck[0].record.offset.to_string())
    );
    assert_eq!(header("quiver-group").as_deref(), Some("workers"));

    let d = client.admin().describe_group("workers").await.unwrap();
    let settled: u64 = d.queues.iter().map(|q| q.start).sum();
    assert_eq!(settled, 12, "{:?}", d.queues);
    assert_eq!(d.queues.iter().map(|q| q.dead_lettered).sum::<u64>(), 2);
    broker.stop().await;
}

/// A produce frame for `batch`, sent on a fresh stream of `conn`; the reply is returned unless
/// `wait` is false (the connection is then dropped with the reply in flight).
async fn send_raw(conn: &quinn::Connection, batch: Bytes, wait: bool) -> Option<ProduceResponse> {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let req = ProduceRequest {
        request_id: 1,
        topic: "payments".into(),
        partition: Some(0),
        acks: Acks::All,
        exchange: false,
    };
    quiver::wire::write_frame(&mut send, FrameKind::Produce, &req, batch)
        .await
        .unwrap();
    send.finish().unwrap();
    if !wait {
        return None;
    }
    let mut reader = quiver::wire::FrameReader::new(recv, 1 << 20);
    let (resp, _): (ProduceResponse, Bytes) = reader.expect(FrameKind::ProduceOk).await.unwrap();
    Some(resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_idempotent_batch_is_acknowledged_but_not_appended_twice() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("payments", 1))
        .await
        .unwrap();
    let pid = client.admin().init_producer().await.unwrap();
    let batch = |seq: u32, values: &[&str]| {
        let mut b = BatchBuilder::new().producer(pid, seq);
        for v in values {
            b.push(&RecordData {
                timestamp: 1,
                key: None,
                value: v.as_bytes(),
                headers: &[],
                tags: &[],
            })
            .unwrap();
        }
        b.finish().unwrap()
    };
    // The first send's connection dies before the reply arrives; the producer sends again on a
    // new connection, as a retry after a lost connection does.
    let lost = raw_connection(&broker).await;
    send_raw(&lost, batch(0, &["a", "b"]), false).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    lost.close(0u32.into(), b"gone");
    let conn = raw_connection(&broker).await;
    let resent = send_raw(&conn, batch(0, &["a", "b"]), true).await.unwrap();
    assert!(resent.duplicate, "{resent:?}");
    assert_eq!((resent.base_offset, resent.last_offset), (0, 1));
    let next = send_raw(&conn, batch(2, &["c"]), true).await.unwrap();
    assert!(!next.duplicate);
    assert_eq!(next.base_offset, 2);
    // A gap is refused with a retriable error rather than appended out of order.
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let req = ProduceRequest {
        request_id: 9,
        topic: "payments".into(),
        partition: Some(0),
        acks: Acks::Leader,
        exchange: false,
    };
    quiver::wire::write_frame(&mut send, FrameKind::Produce, &req, batch(7, &["x"]))
        .await
        .unwrap();
    let mut reader = quiver::wire::FrameReader::new(recv, 1 << 20);
    let err = reader
        .expect::<ProduceResponse>(FrameKind::ProduceOk)
        .await
        .unwrap_err();
    assert_eq!(
        err.remote_code(),
        Some(quiver_proto::ErrorCode::OutOfOrderSequence)
    );

    let got = common::consume_n(&client, "payments", 3).await;
    let values: Vec<&[u8]> = got.iter().map(|r| r.record.value.as_ref()).collect();
    assert_eq!(values, vec![&b"a"[..], b"b", b"c"]);
    let d = client.admin().describe_topic("payments").await.unwrap();
    assert_eq!(d.partitions[0].log_end, 3);

    // The client's producer is idempotent by default and sees the same thing end to end.
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let sent = producer
        .send(ProducerRecord::new("payments", "d").partition(0))
        .await
        .unwrap();
    producer.flush().await.unwrap();
    assert_eq!(sent.wait().await.unwrap().offset, Some(3));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_fenced_by_a_newer_one_of_its_key_writes_nothing_more() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(dir.path(), |c| c.auth.enabled = true).await;
    let admin = broker
        .client_with_token(&broker.admin_token())
        .await
        .unwrap();
    admin
        .admin()
        .create_topic(NewTopic::new("ledger", 1))
        .await
        .unwrap();
    let fenced = |client: &Client| {
        let config = ProducerConfig {
            fencing_key: Some("ledger-writer".into()),
            ..ProducerConfig::default()
        };
        Producer::new(client.clone(), config)
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
    let old = fenced(&admin);
    old.init().await.unwrap();
    send(&old, "old-1").await.unwrap();

    // Another principal's producer with the same key fences nothing of this one.
    let token = admin.admin().create_user("someone").await.unwrap();
    let someone = broker.client_with_token(&token).await.unwrap();
    fenced(&someone).init().await.unwrap();
    send(&old, "old-2").await.unwrap();

    // A newer producer of the principal and key: the old one is refused from now on, for good.
    let new = fenced(
        &broker
            .client_with_token(&broker.admin_token())
            .await
            .unwrap(),
    );
    new.init().await.unwrap();
    let err = send(&old, "old-3").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProducerFenced), "{err}");
    let err = send(&old, "old-4").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProducerFenced), "{err}");
    send(&new, "new-1").await.unwrap();

    // A batch that fails for good makes the producer take a new id: it replaces only itself.
    let lost = new
        .send_now(ProducerRecord::new("no-such-topic", "x").partition(0))
        .await
        .unwrap();
    assert_eq!(
        lost.wait().await.unwrap_err().code(),
        Some(ErrorCode::UnknownTopic)
    );
    send(&new, "new-2").await.unwrap();

    let got = common::consume_n(&admin, "ledger", 4).await;
    let values: Vec<&[u8]> = got.iter().map(|r| r.record.value.as_ref()).collect();
    assert_eq!(values, vec![&b"old-1"[..], b"old-2", b"new-1", b"new-2"]);
    let d = admin.admin().describe_topic("ledger").await.unwrap();
    assert_eq!(d.partitions[0].log_end, 4);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_round_trips_and_times_out_without_a_responder() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("rpc", 2))
        .await
        .unwrap();
    let requester = Requester::new(client.clone(), RequesterConfig::default())
        .await
        .unwrap();
    // No responder yet: a clear timeout.
    let err = requester
        .request("rpc", "early", Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("reply"), "{err}");
    // A responder on its own connection upper-cases requests (including the early one).
    let responder_client = broker.client().await;
    let responder = tokio::spawn(async move {
        let config = QueueConfig {
            max_wait: Duration::from_millis(100),
            ..QueueConfig::default()
        };
        let r = Responder::new(responder_client, "rpc-servers", "rpc", config);
        r.serve(|req: Record| async move { Bytes::from(req.value.to_ascii_uppercase()) })
            .await
    });
    for word in ["ping", "quiver", "reply"] {
        let reply = requester
            .request("rpc", word, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(reply.value.as_ref(), word.to_uppercase().as_bytes());
    }
    let reply_topic = requester.reply_topic().to_owned();
    requester.close().await.unwrap();
    let gone = client
        .admin()
        .describe_topic(&reply_topic)
        .await
        .unwrap_err();
    assert!(gone.to_string().contains("unknown topic"), "{gone}");
    responder.abort();
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_consumes_several_topics_and_an_unknown_topic_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    for (t, n) in [("left", 2), ("right", 3)] {
        client
            .admin()
            .create_topic(NewTopic::new(t, n))
            .await
            .unwrap();
        fill(&client, t, n, 0, 4).await;
    }
    let mut config = GroupConfig::new("both", ["left", "right"]);
    config.session_timeout = SESSION;
    let mut m = GroupConsumer::join(client.clone(), config).await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 20 {
        got.extend(m.poll(Duration::from_millis(100)).await.unwrap());
        assert!(Instant::now() < deadline, "only {} of 20", got.len());
    }
    let topics: BTreeSet<&str> = got.iter().map(|r| &*r.topic).collect();
    assert_eq!(topics, BTreeSet::from(["left", "right"]));
    assert_eq!(m.assignment().len(), 5);
    m.close().await.unwrap();
    let d = client.admin().describe_group("both").await.unwrap();
    assert!(
        d.partitions.iter().all(|p| p.lag == 0),
        "{:?}",
        d.partitions
    );

    let err = GroupConsumer::join(client.clone(), GroupConfig::new("both", ["nope"]))
        .await
        .err()
        .expect("unknown topic refused");
    assert!(err.to_string().contains("unknown topic"), "{err}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_polling_gives_its_partitions_up_and_rejoins_when_it_polls() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("events", 4))
        .await
        .unwrap();
    let mut config = group_config("stuck", "events", CommitMode::Manual);
    config.max_poll_interval = Duration::from_millis(600);
    let mut a = GroupConsumer::join(client.clone(), config.clone())
        .await
        .unwrap();
    let mut b = GroupConsumer::join(client.clone(), config).await.unwrap();
    let mut seen = Vec::new();
    poll_until(
        &mut [&mut a, &mut b],
        Duration::from_secs(10),
        &mut seen,
        balanced(&[2, 2]),
    )
    .await;
    // a's application hangs: b gets everything although a keeps heartbeating.
    let started = Instant::now();
    poll_until(
        &mut [&mut b],
        Duration::from_secs(5),
        &mut seen,
        balanced(&[4]),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // a comes back: it rejoins and the group balances again.
    poll_until(
        &mut [&mut a, &mut b],
        Duration::from_secs(10),
        &mut seen,
        balanced(&[2, 2]),
    )
    .await;
    a.close().await.unwrap();
    b.close().await.unwrap();
    broker.stop().await;
}
