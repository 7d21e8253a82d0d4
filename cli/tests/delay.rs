//! Delayed delivery over real QUIC: held records stay invisible until due and then arrive in due
//! order, `topic describe` counts them, a pending record can be cancelled, producers cannot forge
//! the delay store's own headers, a scheduler plugin
//! delays records by itself, and a broker killed with SIGKILL while records are pending delivers
//! every one of them exactly once to a group consumer that commits.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::serve::Serve;
use common::{plugin_wasm, TestBroker};
use quiver::{
    AttachOptions, Client, CommitMode, Consumer, ConsumerConfig, ErrorCode, GroupConfig,
    GroupConsumer, NewTopic, Producer, ProducerConfig, ProducerRecord, SeekTo,
};

/// Everything in `topic` right now, as (value, delay id header) in log order per partition.
async fn visible(client: &Client, topic: &str) -> Vec<(String, Option<String>)> {
    let mut c = Consumer::new(client.clone(), topic, ConsumerConfig::default());
    c.assign_all(SeekTo::Earliest).await.unwrap();
    c.poll(Duration::from_millis(300))
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let id = r
                .record
                .header("quiver-delay-id")
                .map(|v| String::from_utf8_lossy(v).into_owned());
            (String::from_utf8_lossy(&r.record.value).into_owned(), id)
        })
        .collect()
}

async fn pending(client: &Client, topic: &str) -> u64 {
    client
        .admin()
        .describe_topic(topic)
        .await
        .unwrap()
        .pending_delayed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_records_wait_for_their_due_time_and_arrive_in_due_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("reminders", 1))
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let now_ms = quiver_broker::util::now_ms();
    let sent = Instant::now();
    let mut ids = Vec::new();
    // Produced in this order; due in the order c, a, b (and `now` right away).
    for (value, delay) in [("a", 1200u64), ("b", 1800), ("c", 600)] {
        let rec = ProducerRecord::new("reminders", value).delay(Duration::from_millis(delay));
        let meta = producer.send_now(rec).await.unwrap().wait().await.unwrap();
        assert_eq!(meta.offset, None, "a held record has no offset yet");
        ids.push(meta.delay_id.expect("a held record has a delay id"));
    }
    let cancel_me = ProducerRecord::new("reminders", "cancelled").deliver_at(now_ms + 900);
    let cancel_id = producer
        .send_now(cancel_me)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap()
        .delay_id
        .unwrap();
    producer
        .send_now(ProducerRecord::new("reminders", "now"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();

    assert_eq!(pending(&client, "reminders").await, 4);
    let admin = client.admin();
    assert_eq!(admin.cancel_delayed(cancel_id).await.unwrap(), "reminders");
    let again = admin.cancel_delayed(cancel_id).await.unwrap_err();
    assert!(again.to_string().contains("pending"), "{again}");
    assert_eq!(pending(&client, "reminders").await, 3);

    let early = visible(&client, "reminders").await;
    assert!(sent.elapsed() < Duration::from_millis(600), "test too slow");
    assert_eq!(
        early,
        vec![("now".to_string(), None)],
        "nothing held is visible early"
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    let got = loop {
        let got = visible(&client, "reminders").await;
        if got.len() >= 4 || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(sent.elapsed() >= Duration::from_millis(1800));
    let values: Vec<&str> = got.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(
        values,
        vec!["now", "c", "a", "b"],
        "due order, cancelled one absent"
    );
    let delivered_ids: Vec<u64> = got[1..]
        .iter()
        .map(|(_, id)| id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(delivered_ids, vec![ids[2], ids[0], ids[1]]);
    assert_eq!(pending(&client, "reminders").await, 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        visible(&client, "reminders").await.len(),
        4,
        "nothing twice"
    );

    // A malformed delay header fails the produce; nothing is held or appended.
    let bad = ProducerRecord::new("reminders", "bad").header("quiver-delay-ms", "soon");
    let err = producer
        .send_now(bad)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("quiver-delay-ms"), "{err}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_records_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("later", 2))
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    // The delay store's own header names are not the producer's to set: refused, nothing held.
    for (name, value) in [
        ("quiver-delay-control", "garbage"),
        ("quiver-delay-topic", "elsewhere"),
    ] {
        let forged = ProducerRecord::new("later", "forged")
            .header(name, value)
            .delay(Duration::from_millis(1500));
        let err = producer
            .send(forged)
            .await
            .unwrap()
            .wait()
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidBatch), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("header {name} is reserved")),
            "{err}"
        );
    }
    assert_eq!(pending(&client, "later").await, 0);
    for i in 0..20 {
        let rec = ProducerRecord::new("later", format!("r{i}"))
            .key(format!("k{i}"))
            .delay(Duration::from_millis(1500));
        producer.send(rec).await.unwrap();
    }
    producer.flush().await.unwrap();
    assert_eq!(pending(&client, "later").await, 20);
    drop(client);
    broker.stop().await;

    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    assert_eq!(
        pending(&client, "later").await,
        20,
        "held across the restart"
    );
    let got = common::consume_n(&client, "later", 20).await;
    let mut values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.record.value).into_owned())
        .collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 20);
    let r = &got[0].record;
    assert_eq!(r.header("quiver-delay-control"), None);
    assert!(r.header("quiver-delay-id").is_some());
    assert_eq!(
        r.header("quiver-delay-ms"),
        None,
        "delivered records are not delayed again"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduler_plugin_delays_records_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let admin = client.admin();
    admin
        .create_topic(NewTopic::new("payment-checks", 1))
        .await
        .unwrap();
    admin
        .deploy_plugin("payment-check", None, plugin_wasm("payment-check"))
        .await
        .unwrap();
    let attach = AttachOptions::new("payment-check")
        .config("delay-ms", "1000")
        .config("only-field", "status")
        .config("only-value", "pending");
    let stages = admin.attach_plugin("payment-checks", attach).await.unwrap();
    assert_eq!(stages[0].world, "scheduler");

    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let sent = Instant::now();
    for v in [
        r#"{"order":1,"status":"pending"}"#,
        r#"{"order":2,"status":"paid"}"#,
    ] {
        producer
            .send_now(ProducerRecord::new("payment-checks", v))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    let early = visible(&client, "payment-checks").await;
    if sent.elapsed() < Duration::from_millis(900) {
        assert_eq!(
            early.len(),
            1,
            "only the paid order is visible at once: {early:?}"
        );
        assert!(early[0].0.contains("paid"));
        assert_eq!(pending(&client, "payment-checks").await, 1);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while visible(&client, "payment-checks").await.len() < 2 {
        assert!(Instant::now() < deadline, "the delayed order never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent.elapsed() >= Duration::from_millis(1000));
    broker.stop().await;
}

/// A client of a `quiver serve` child whose data is in `<dir>/data`.
async fn connect(serve: &Serve, dir: &Path) -> Client {
    Client::connect(&serve.addr, &dir.join("data/tls/ca.pem"))
        .await
        .unwrap()
}

/// Polls once and commits; the records count as processed only when the commit succeeded (a
/// failed commit means they come again).
async fn poll_and_commit(member: &mut GroupConsumer, seen: &mut BTreeMap<String, u32>) -> bool {
    let Ok(records) = member.poll(Duration::from_millis(200)).await else {
        return false;
    };
    if member.commit().await.is_err() {
        return false;
    }
    for r in records {
        *seen
            .entry(String::from_utf8_lossy(&r.record.value).into_owned())
            .or_default() += 1;
    }
    true
}

fn member_config() -> GroupConfig {
    let mut c = GroupConfig::new("checker", ["due"]);
    c.commit = CommitMode::Manual;
    c.session_timeout = Duration::from_secs(3);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_delivers_every_pending_record_exactly_once() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    let client = connect(&serve, dir.path()).await;
    client
        .admin()
        .create_topic(NewTopic::new("due", 2))
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..N {
        // Due between 0.3 s and 3.3 s from now, out of produce order.
        let delay = 300 + (i * 7919 % N) as u64 * 10;
        let rec = ProducerRecord::new("due", format!("r{i:03}"))
            .key(format!("k{}", i % 13))
            .delay(Duration::from_millis(delay));
        producer.send(rec).await.unwrap();
    }
    producer.flush().await.unwrap();

    let mut seen = BTreeMap::new();
    let mut member = GroupConsumer::join(client.clone(), member_config())
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_millis(1300);
    while Instant::now() < until {
        poll_and_commit(&mut member, &mut seen).await;
    }
    let before_kill = seen.len();
    drop(serve); // SIGKILL: no flush, no shutdown
    drop(member);
    drop(producer);
    drop(client);
    assert!(
        before_kill > 0 && before_kill < N,
        "the kill should land mid-way ({before_kill} of {N} processed)"
    );

    let serve = Serve::start(dir.path());
    let client = connect(&serve, dir.path()).await;
    let mut member = GroupConsumer::join(client.clone(), member_config())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < N && Instant::now() < deadline {
        poll_and_commit(&mut member, &mut seen).await;
    }
    // Anything delivered twice would come by now.
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle {
        poll_and_commit(&mut member, &mut seen).await;
    }
    assert_eq!(seen.len(), N, "every record delivered");
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let d = client.admin().describe_topic("due").await.unwrap();
    let appended: u64 = d.partitions.iter().map(|p| p.log_end).sum();
    assert_eq!(appended, N as u64, "each record appended exactly once");
    assert_eq!(d.pending_delayed, 0);
}
