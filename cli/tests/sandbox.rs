//! Regression tests of the plugin sandbox (issue 20), one per defect found with hostile
//! components, each with the fixture of `plugins/testing/` that does what the defect needs: a
//! large batch dead-lettered, a transform writing invalid delays or broker-only headers, a slow
//! `init` beside other administration, a router chain fanning out past the limit, a huge random
//! request, a replacement instance refusing its `init`, and the broker-wide memory budget.

mod common;

use std::time::Duration;

use common::plugins::{deploy, produce, produce_one, stage};
use common::{consume_n, TestBroker};
use quiver::{
    Acks, Client, ErrorCode, ErrorPolicy, NewTopic, Producer, ProducerConfig, ProducerRecord,
};

async fn create(client: &Client, topic: &str) {
    client
        .admin()
        .create_topic(NewTopic::new(topic, 1))
        .await
        .unwrap();
}

/// Attaches the hostile fixture with `config` (mode first) and `policy` to a new topic.
async fn hostile(client: &Client, topic: &str, config: &[(&str, &str)], policy: ErrorPolicy) {
    create(client, topic).await;
    let mut a = stage("hostile", config);
    a.on_error = policy;
    a.timeout_ms = Some(3_000);
    client.admin().attach_plugin(topic, a).await.unwrap();
}

async fn log_end(client: &Client, topic: &str) -> u64 {
    let d = client.admin().describe_topic(topic).await.unwrap();
    d.partitions.iter().map(|p| p.log_end).sum()
}

async fn stage_of(client: &Client, plugin: &str, topic: &str) -> quiver::AttachmentInfo {
    let (_, stages) = client.admin().describe_plugin(plugin).await.unwrap();
    stages.into_iter().find(|s| s.topic == topic).unwrap()
}

/// Defect 1: the dead-letter copy of a batch that was acceptable on produce always reaches the
/// dead-letter topic, split into several batches when its error headers make it too large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_batch_is_dead_lettered_whole_however_large_its_error_headers_make_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    deploy(&client, "hostile", "hostile", None).await;
    hostile(
        &client,
        "big",
        &[("mode", "panic")],
        ErrorPolicy::DeadLetter,
    )
    .await;

    // One batch of 30,000 small records (under 1 MB); with a few hundred bytes of headers on
    // every record its dead-letter copy is well over the 8 MiB batch limit.
    const N: usize = 30_000;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            retries: 0,
            linger: Duration::from_secs(2),
            batch_bytes: 8 << 20,
            ..Default::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..N {
        let r = ProducerRecord::new("big", format!("r{i}"));
        deliveries.push(producer.send(r).await.unwrap());
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.wait().await.unwrap();
    }
    let dead = consume_n(&client, "big.dlq", N).await;
    assert_eq!(dead.len(), N);
    for (i, r) in dead.iter().enumerate() {
        assert_eq!(r.record.value, format!("r{i}").as_bytes());
        assert_eq!(r.record.header("quiver-plugin").unwrap(), "hostile@1");
    }
    let error = dead[0].record.header("quiver-error").unwrap();
    assert!(error.len() <= 512, "a {}-byte error header", error.len());
    let error = String::from_utf8_lossy(error);
    assert!(
        error.contains("trapped") && error.contains("panicked on purpose"),
        "{error}"
    );
    assert_eq!(log_end(&client, "big").await, 0);
    client.close().await;
    broker.stop().await;
}

/// Defect 2 and the reserved headers: whatever is wrong in a transform's output is the
/// transform's failure (named, under its error policy, counted against its health), never the
/// producer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transforms_invalid_delays_and_forged_headers_are_its_own_failures() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(dir.path(), |c| c.plugins.cooldown_ms = 60_000).await;
    let client = broker.client().await;
    deploy(&client, "hostile", "hostile", None).await;

    for delay in ["far", "text", "negative"] {
        let topic = format!("delay-{delay}");
        let config = [("mode", "bad-delay"), ("delay", delay)];
        hostile(&client, &topic, &config, ErrorPolicy::DeadLetter).await;
        produce_one(&client, &topic, "v").await.unwrap();
        let dead = consume_n(&client, &format!("{topic}.dlq"), 1).await;
        assert_eq!(dead[0].record.value, "v", "{delay}: the record as produced");
        let error = String::from_utf8_lossy(dead[0].record.header("quiver-error").unwrap());
        assert!(error.contains("hostile@1"), "{delay}: {error}");
        assert!(error.contains("quiver-deliver-at"), "{delay}: {error}");
        assert_eq!(log_end(&client, &topic).await, 0, "{delay}");
        let s = stage_of(&client, "hostile", &topic).await;
        assert_eq!((s.calls, s.failures), (1, 1), "{delay}");
    }

    // With `reject` the producer hears that the plugin failed, not that its batch is invalid; and
    // repeated bad output marks the stage unhealthy.
    let config = [("mode", "forge"), ("header", "quiver-error")];
    hostile(&client, "forged", &config, ErrorPolicy::Reject).await;
    for _ in 0..3 {
        let out = produce(&client, vec![ProducerRecord::new("forged", "v")]).await;
        assert_eq!(out[0].as_ref().unwrap_err(), &ErrorCode::PluginFailed);
    }
    let err = produce_one(&client, "forged", "v").await.unwrap_err();
    assert!(
        err.contains("unhealthy after 3 consecutive failures"),
        "{err}"
    );
    assert!(err.contains("header quiver-error is reserved"), "{err}");
    assert!(!stage_of(&client, "hostile", "forged").await.healthy);
    assert_eq!(log_end(&client, "forged").await, 0);

    // A producer may set the request headers, and nothing else of the reserved prefix.
    create(&client, "plain").await;
    let allowed = ProducerRecord::new("plain", "ask")
        .header("quiver-reply-to", "answers")
        .header("quiver-correlation-id", "7");
    let forged = ProducerRecord::new("plain", "forged").header("quiver-plugin", "me@1");
    let out = produce(&client, vec![allowed]).await;
    assert!(out[0].is_ok(), "{out:?}");
    let err = produce_one_record(&client, forged).await;
    assert!(err.contains("header quiver-plugin is reserved"), "{err}");
    assert_eq!(log_end(&client, "plain").await, 1);
    client.close().await;
    broker.stop().await;
}

async fn produce_one_record(client: &Client, record: ProducerRecord) -> String {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            retries: 0,
            ..Default::default()
        },
    );
    let d = producer.send(record).await.unwrap();
    let _ = producer.flush().await;
    let err = d.wait().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidBatch), "{err}");
    err.to_string()
}

/// Defect 3: a plugin whose `init` runs to its time limit holds up no other administration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_init_does_not_hold_up_other_attaches_detaches_or_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    deploy(&client, "hostile", "hostile", None).await;
    hostile(&client, "other", &[("mode", "pass")], ErrorPolicy::Reject).await;
    create(&client, "doomed").await;
    create(&client, "slow").await;

    let attach = {
        let client = client.clone();
        let mut slow = stage("hostile", &[("mode", "init-loop")]);
        slow.timeout_ms = Some(6_000);
        tokio::spawn(async move { client.admin().attach_plugin("slow", slow).await })
    };
    // Give the attach time to reach its `init` (it only has to compile-cache-hit and instantiate).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let admin = client.admin();
    admin.detach_plugin("other", "hostile").await.unwrap();
    admin
        .attach_plugin("other", stage("hostile", &[("mode", "pass")]))
        .await
        .unwrap();
    admin.delete_topic("doomed").await.unwrap();
    assert!(
        !attach.is_finished(),
        "administration waited for the looping init"
    );

    let err = attach.await.unwrap().unwrap_err();
    assert!(err.to_string().contains("time limit exceeded"), "{err}");
    assert!(client
        .admin()
        .describe_plugin("hostile")
        .await
        .unwrap()
        .1
        .iter()
        .all(|s| s.topic != "slow"));
    client.close().await;
    broker.stop().await;
}

/// Defect 4: a produce refused for fanning out too far, or for looping, appends nothing, however
/// often it is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_chain_over_the_fan_out_limit_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    deploy(&client, "fan", "fan-router", None).await;
    // a → b0..b62, each b → c0..c62, each c → d0..d62: 63 + 3,969 + 250,047 batches sent on.
    let mut all = vec!["a".to_owned()];
    create(&client, "a").await;
    fan(&client, "a", "b", 63).await;
    for (layer, next) in [("b", Some("c")), ("c", Some("d")), ("d", None)] {
        for i in 0..63 {
            let t = format!("{layer}{i}");
            create(&client, &t).await;
            if let Some(next) = next {
                fan(&client, &t, next, 63).await;
            }
            all.push(t);
        }
    }
    let records: Vec<ProducerRecord> = (0..100)
        .map(|i| ProducerRecord::new("a", format!("r{i}")))
        .collect();
    for _ in 0..2 {
        let out = produce(&client, records.clone()).await;
        assert!(
            out.iter()
                .all(|r| matches!(r, Err(ErrorCode::InvalidRequest))),
            "{out:?}"
        );
    }
    let err = produce_one(&client, "a", "x").await.unwrap_err();
    assert!(err.contains("more than 10000"), "{err}");
    for t in &all {
        assert_eq!(log_end(&client, t).await, 0, "{t}");
    }

    // Two routers sending records back and forth: refused after 8 hops, nothing appended.
    for t in ["r0", "r1"] {
        create(&client, t).await;
        fan(&client, t, "r", 2).await;
    }
    let err = produce_one(&client, "r0", "x").await.unwrap_err();
    assert!(err.contains("routing loop"), "{err}");
    for t in ["r0", "r1"] {
        assert_eq!(log_end(&client, t).await, 0, "{t}");
    }

    // Fan-out within the limits works: every destination gets the record.
    create(&client, "src").await;
    fan(&client, "src", "d", 3).await;
    produce_one(&client, "src", "spread").await.unwrap();
    for t in ["d0", "d1", "d2"] {
        assert_eq!(log_end(&client, t).await, 1, "{t}");
    }
    client.close().await;
    broker.stop().await;
}

/// Attaches the fan-router to `topic`, sending every record to `{prefix}0..{prefix}{count-1}`.
async fn fan(client: &Client, topic: &str, prefix: &str, count: usize) {
    let count = count.to_string();
    let fan = stage("fan", &[("prefix", prefix), ("count", count.as_str())]);
    client.admin().attach_plugin(topic, fan).await.unwrap();
}

/// Defect 5: a single host call cannot outlast the time limit by much: random bytes are capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_random_request_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    deploy(&client, "hostile", "hostile", None).await;
    create(&client, "rand").await;
    let mut a = stage(
        "hostile",
        &[("mode", "random"), ("random-bytes", "67108864")],
    );
    a.on_error = ErrorPolicy::Reject;
    // Short (a busy machine must still get through `init` in time): the 64 MiB the call asked
    // for took over 200 ms, ten times this, before the cap.
    a.timeout_ms = Some(20);
    client.admin().attach_plugin("rand", a).await.unwrap();
    let err = produce_one(&client, "rand", "x").await.unwrap_err();
    assert!(err.contains("exceeds limit 65536"), "{err}");

    // A modest request is served.
    create(&client, "seeded").await;
    let mut a = stage("hostile", &[("mode", "random"), ("random-bytes", "32")]);
    a.timeout_ms = Some(3_000);
    client.admin().attach_plugin("seeded", a).await.unwrap();
    produce_one(&client, "seeded", "x").await.unwrap();
    assert_eq!(log_end(&client, "seeded").await, 1);
    client.close().await;
    broker.stop().await;
}

/// Defect 6: a replacement instance whose `init` refuses counts against the stage's health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_whose_reinit_fails_becomes_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(dir.path(), |c| c.plugins.cooldown_ms = 60_000).await;
    let client = broker.client().await;
    deploy(&client, "hostile", "hostile", None).await;
    let deadline = quiver_broker::util::now_ms() + 1_500;
    let refuse_after = deadline.to_string();
    let config = [
        ("mode", "panic-then-refuse"),
        ("refuse-after-ms", refuse_after.as_str()),
    ];
    hostile(&client, "phoenix", &config, ErrorPolicy::Reject).await;
    while quiver_broker::util::now_ms() <= deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = produce_one(&client, "phoenix", "x").await.unwrap_err();
    assert!(first.contains("panicked on purpose"), "{first}");
    for _ in 0..2 {
        let err = produce_one(&client, "phoenix", "x").await.unwrap_err();
        assert!(err.contains("refused its init"), "{err}");
        assert!(
            err.contains("hostile init refused after the deadline"),
            "{err}"
        );
    }
    let s = stage_of(&client, "hostile", "phoenix").await;
    assert!(!s.healthy, "{s:?}");
    assert_eq!((s.calls, s.failures), (3, 3));
    let err = produce_one(&client, "phoenix", "x").await.unwrap_err();
    assert!(
        err.contains("unhealthy after 3 consecutive failures"),
        "{err}"
    );
    client.close().await;
    broker.stop().await;
}

/// The broker-wide memory budget: instances together never pass it; a request that would is
/// answered with a retriable `ServerBusy`, and memory given back is available again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_memory_is_bounded_broker_wide_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let broker =
        TestBroker::start_with(dir.path(), |c| c.plugins.max_total_memory_mb = Some(96)).await;
    let client = broker.client().await;
    deploy(&client, "hostile", "hostile", None).await;
    let hoard = |topic: &'static str| {
        let client = client.clone();
        async move {
            let mut a = stage("hostile", &[("mode", "hoard"), ("hoard-mib", "40")]);
            a.memory_mb = Some(64);
            a.timeout_ms = Some(5_000);
            client.admin().attach_plugin(topic, a).await
        }
    };
    for t in ["m1", "m2", "m3"] {
        create(&client, t).await;
    }
    hoard("m1").await.unwrap();
    hoard("m2").await.unwrap();
    let err = hoard("m3").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ServerBusy), "{err}");
    assert!(err.to_string().contains("memory budget"), "{err}");

    let d = client.admin().plugin_description("hostile").await.unwrap();
    assert_eq!(d.memory.budget_bytes, 96 << 20);
    assert!(d.memory.in_use_bytes >= 80 << 20, "{:?}", d.memory);
    assert!(d.memory.in_use_bytes <= 96 << 20, "{:?}", d.memory);
    for s in &d.attachments {
        assert!(s.memory_in_use_bytes >= 40 << 20, "{s:?}");
    }

    // Memory given back is there for the next instance.
    client.admin().detach_plugin("m1", "hostile").await.unwrap();
    hoard("m3").await.unwrap();
    produce_one(&client, "m3", "fits").await.unwrap();
    assert_eq!(log_end(&client, "m3").await, 1);
    client.close().await;
    broker.stop().await;
}
