//! WebAssembly plugins end to end, over real QUIC against a real broker, with the real components
//! built from `plugins/`: the registry (deploy, list, describe, remove, restart), ingest pipelines
//! (filter + transform, error policies, hot swap), read filters (Rust, JavaScript and Python, against the
//! native filter), and hostile components that must be stopped while other topics keep serving.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::plugins::{deploy, produce, produce_one, stage};
use common::{consume_n, plugin_wasm, TestBroker};
use quiver::{
    Client, ConsumedRecord, Consumer, ConsumerConfig, ErrorPolicy, NewTopic, PluginRef,
    ProducerRecord, SeekTo,
};
use quiver_proto::ErrorCode;

fn tagged(topic: &str, i: usize, tags: &[&str]) -> ProducerRecord {
    tags.iter().fold(
        ProducerRecord::new(
            topic,
            format!("{{\"i\":{i},\"card\":\"4111\",\"ssn\":\"078\"}}"),
        ),
        |r, t| r.tag(*t),
    )
}

fn values(records: &[ConsumedRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.record.value).into_owned())
        .collect()
}

/// Reads everything currently in `topic` (all partitions) with `config`, stopping after a quiet
/// half second.
async fn read_all(client: &Client, topic: &str, config: ConsumerConfig) -> Vec<ConsumedRecord> {
    let mut c = Consumer::new(client.clone(), topic, config);
    c.assign_all(SeekTo::Earliest).await.unwrap();
    let mut out = Vec::new();
    loop {
        let got = c.poll(Duration::from_millis(500)).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_validates_versions_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let admin = client.admin();

    let first = admin
        .deploy_plugin("tags", None, plugin_wasm("tag-filter"))
        .await
        .unwrap();
    assert_eq!(
        (first.plugin.version.as_str(), first.plugin.world.as_str()),
        ("1", "filter")
    );
    assert!(!first.cached);
    // The same bytes again are the same version; other bytes get the next number.
    let again = admin
        .deploy_plugin("tags", None, plugin_wasm("tag-filter"))
        .await
        .unwrap();
    assert_eq!(again.plugin.version, "1");
    let masked = admin
        .deploy_plugin("tags", None, plugin_wasm("json-mask"))
        .await
        .unwrap();
    assert_eq!(
        (masked.plugin.version.as_str(), masked.plugin.world.as_str()),
        ("2", "transform")
    );
    let clash = admin
        .deploy_plugin("tags", Some("1"), plugin_wasm("json-mask"))
        .await
        .unwrap_err();
    assert!(clash.to_string().contains("already deployed"), "{clash}");

    // What is not a component of a known world is refused with the reason.
    let cases: [(&[u8], &str); 3] = [
        (b"hello", "not a WebAssembly binary"),
        (b"\0asm\x01\0\0\0", "core WebAssembly module"),
        (b"\0asm\x0d\0\x01\0\xff\xff", ""),
    ];
    for (bytes, why) in cases {
        let err = admin
            .deploy_plugin("bad", None, Bytes::from_static(bytes))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidPlugin), "{err}");
        assert!(err.to_string().contains(why), "{err}");
    }
    let bad_name = admin
        .deploy_plugin("no/slash", None, plugin_wasm("tag-filter"))
        .await
        .unwrap_err();
    assert_eq!(bad_name.code(), Some(ErrorCode::InvalidRequest));

    admin.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let refused = admin
        .attach_plugin("t", stage("tags@1", &[]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::PluginInitFailed));
    assert!(
        refused
            .to_string()
            .contains("missing required config `tags`"),
        "{refused}"
    );
    admin
        .attach_plugin("t", stage("tags@1", &[("tags", "keep")]))
        .await
        .unwrap();
    let in_use = admin.remove_plugin("tags").await.unwrap_err();
    assert_eq!(in_use.code(), Some(ErrorCode::PluginInUse), "{in_use}");
    assert_eq!(admin.remove_plugin("tags@2").await.unwrap(), vec!["2"]);
    let unknown = admin.describe_plugin("nope").await.unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::UnknownPlugin));
    client.close().await;
    broker.stop().await;
    // Damaged compiled code in the cache is detected (checksum) and compiled again, never loaded.
    let compiled = dir.path().join("plugins/compiled");
    let mut damaged = 0;
    for entry in std::fs::read_dir(&compiled).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "cwasm") {
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(
        damaged > 0,
        "no compiled code cached in {}",
        compiled.display()
    );

    // After a restart the plugin, its attachment and the compiled-code cache are all still there.
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let admin = client.admin();
    let listed = admin.list_plugins().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].name.as_str(), listed[0].version.as_str()),
        ("tags", "1")
    );
    let (_, attachments) = admin.describe_plugin("tags").await.unwrap();
    assert_eq!(attachments.len(), 1);
    assert_eq!(attachments[0].topic, "t");
    let sent = produce(
        &client,
        vec![tagged("t", 0, &["keep"]), tagged("t", 1, &["drop"])],
    )
    .await;
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    let got = consume_n(&client, "t", 1).await;
    assert!(values(&got)[0].contains("\"i\":0"));
    let cached = admin
        .deploy_plugin("tags", Some("1"), plugin_wasm("tag-filter"))
        .await
        .unwrap();
    assert!(cached.cached);
    client.close().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_pipeline_filters_then_masks_and_hot_swaps() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let admin = client.admin();
    deploy(&client, "tags", "tag-filter", None).await;
    deploy(&client, "mask", "json-mask", Some("1")).await;
    admin.create_topic(NewTopic::new("pay", 2)).await.unwrap();
    admin
        .attach_plugin("pay", stage("tags", &[("tags", "eu")]))
        .await
        .unwrap();
    let stages = admin
        .attach_plugin("pay", stage("mask@1", &[("fields", "card")]))
        .await
        .unwrap();
    assert_eq!(stages.len(), 2);

    let batch: Vec<_> = (0..100)
        .map(|i| tagged("pay", i, if i % 2 == 0 { &["eu"] } else { &["us"] }))
        .collect();
    let sent = produce(&client, batch).await;
    // The pipeline changed the batches: offsets no longer map to the records sent.
    assert!(sent.iter().all(|r| r.as_ref().unwrap().offset.is_none()));
    let got = read_all(&client, "pay", ConsumerConfig::default()).await;
    assert_eq!(got.len(), 50);
    for v in values(&got) {
        assert!(
            v.contains("\"card\":\"***\"") && v.contains("\"ssn\":\"078\""),
            "{v}"
        );
    }
    assert!(got.iter().all(|r| r.record.tags == ["eu"]));

    // Hot swap: version 2 of `mask`, attached with another config, replaces stage 1 in place.
    deploy(&client, "mask", "json-mask", Some("2")).await;
    let stages = admin
        .attach_plugin("pay", stage("mask@2", &[("fields", "ssn")]))
        .await
        .unwrap();
    let names: Vec<_> = stages
        .iter()
        .map(|s| format!("{}@{}", s.plugin, s.version))
        .collect();
    assert_eq!(names, ["tags@1", "mask@2"]);
    produce(&client, vec![tagged("pay", 1000, &["eu"])]).await;
    let got = read_all(&client, "pay", ConsumerConfig::default()).await;
    let last = values(&got)
        .into_iter()
        .find(|v| v.contains("1000"))
        .unwrap();
    assert!(
        last.contains("\"card\":\"4111\"") && last.contains("\"ssn\":\"***\""),
        "{last}"
    );

    // Detached, records pass untouched.
    admin.detach_plugin("pay", "tags").await.unwrap();
    admin.detach_plugin("pay", "mask").await.unwrap();
    let sent = produce(&client, vec![tagged("pay", 2000, &["us"])]).await;
    assert!(sent[0].as_ref().unwrap().offset.is_some());
    let described = admin.describe_topic("pay").await.unwrap();
    assert!(described.pipeline.is_empty());
    client.close().await;
    broker.stop().await;
}

/// Reads `topic` with a plugin read filter and with the native filter; both must agree.
async fn compare_with_native(client: &Client, topic: &str, plugin: &str) -> usize {
    let with_plugin = ConsumerConfig {
        plugin: Some(PluginRef {
            name: plugin.into(),
            config: vec![("tags".into(), "b,c".into())],
        }),
        ..Default::default()
    };
    let native = ConsumerConfig {
        filter: Some("tag:any(b,c)".into()),
        ..Default::default()
    };
    // Per partition in offset order: how the partitions interleave depends on fetch timing.
    let by_partition = |records: &[ConsumedRecord]| {
        let mut out: Vec<_> = records
            .iter()
            .map(|r| (r.partition, r.record.offset, r.record.value.clone()))
            .collect();
        out.sort();
        out
    };
    let a = read_all(client, topic, with_plugin).await;
    let b = read_all(client, topic, native).await;
    assert_eq!(by_partition(&a), by_partition(&b));
    a.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_filters_in_rust_javascript_and_python_match_the_native_filter() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let admin = client.admin();
    deploy(&client, "rs", "tag-filter", None).await;
    deploy(&client, "js", "tag-filter-js", None).await;
    admin.create_topic(NewTopic::new("ev", 2)).await.unwrap();
    let tags: [&[&str]; 4] = [&["a"], &["b"], &["a", "c"], &[]];
    let batch = (0..2000).map(|i| tagged("ev", i, tags[i % 4])).collect();
    produce(&client, batch).await;

    assert_eq!(compare_with_native(&client, "ev", "rs").await, 1000);
    assert_eq!(compare_with_native(&client, "ev", "js@1").await, 1000);
    // The Python component (~18 MB) is larger than a produce frame: deploys have their own limit.
    deploy(&client, "py", "tag-filter-py", None).await;
    assert_eq!(compare_with_native(&client, "ev", "py").await, 1000);

    // The position moves past skipped records: a consumer at the end sees only new matches.
    let mut c = Consumer::new(
        client.clone(),
        "ev",
        ConsumerConfig {
            plugin: Some(PluginRef {
                name: "rs".into(),
                config: vec![("tags".into(), "zzz".into())],
            }),
            ..Default::default()
        },
    );
    c.assign(&[0], SeekTo::Earliest);
    assert!(c.poll(Duration::from_millis(700)).await.unwrap().is_empty());
    let end = admin.describe_topic("ev").await.unwrap().partitions[0].log_end;
    assert_eq!(c.position(0), Some(end));

    // A transform is not a read filter, and a bad config is the plugin's own message.
    deploy(&client, "mask", "json-mask", None).await;
    for (name, config, code) in [
        ("mask", vec![], ErrorCode::InvalidRequest),
        ("rs", vec![], ErrorCode::PluginInitFailed),
        ("ghost", vec![], ErrorCode::UnknownPlugin),
    ] {
        let mut c = Consumer::new(
            client.clone(),
            "ev",
            ConsumerConfig {
                plugin: Some(PluginRef {
                    name: name.into(),
                    config,
                }),
                ..Default::default()
            },
        );
        c.assign(&[0], SeekTo::Earliest);
        let err = c.poll(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(err.code(), Some(code), "{name}: {err}");
    }
    client.close().await;
    broker.stop().await;
}

/// Attaches the hostile fixture in `mode` to a new topic with `policy`.
async fn hostile_topic(client: &Client, topic: &str, mode: &str, policy: ErrorPolicy) {
    client
        .admin()
        .create_topic(NewTopic::new(topic, 1))
        .await
        .unwrap();
    let mut a = stage("hostile", &[("mode", mode), ("huge-mib", "12")]);
    a.on_error = policy;
    // Short for the endless loop; generous for the rest, which do real work (12 MiB of output)
    // on a debug-built, busy test machine.
    a.timeout_ms = Some(if mode == "loop" { 100 } else { 3_000 });
    a.memory_mb = Some(64);
    client.admin().attach_plugin(topic, a).await.unwrap();
}

/// The healthy topic still takes and serves records.
async fn still_serving(client: &Client, n: usize) {
    let out = produce(client, vec![ProducerRecord::new("ok", format!("r{n}"))]).await;
    assert!(out[0].is_ok());
    assert_eq!(consume_n(client, "ok", n).await.len(), n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_plugins_are_stopped_within_their_limits_while_others_keep_serving() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(dir.path(), |c| c.plugins.cooldown_ms = 60_000).await;
    let client = broker.client().await;
    deploy(&client, "hostile", "hostile", None).await;
    client
        .admin()
        .create_topic(NewTopic::new("ok", 1))
        .await
        .unwrap();

    let cases = [
        ("loop", "time limit exceeded"),
        ("grow", "memory limit exceeded"),
        ("panic", "hostile plugin panicked on purpose"),
        ("huge", "exceeds the limit"),
        ("fs", "filesystem denied"),
        ("net", "network denied"),
        ("sleep", "plugins may not sleep or wait"),
        ("shout", "AAAA"),
    ];
    for (i, (mode, expected)) in cases.iter().enumerate() {
        let topic = format!("h-{mode}");
        hostile_topic(&client, &topic, mode, ErrorPolicy::Reject).await;
        let started = std::time::Instant::now();
        let err = produce_one(&client, &topic, "x").await.unwrap_err();
        assert!(
            err.contains(expected),
            "{mode}: {}",
            &err[..err.len().min(300)]
        );
        assert!(err.contains("plugin failed"), "{mode}: {err}");
        // A plugin's own message is cut short: it must not flood errors, headers or logs.
        assert!(err.len() < 4096, "{mode}: a {}-byte error", err.len());
        assert!(started.elapsed() < Duration::from_secs(10), "{mode}");
        still_serving(&client, i + 1).await;
        // Nothing reached the log.
        let end = client
            .admin()
            .describe_topic(&topic)
            .await
            .unwrap()
            .partitions[0]
            .log_end;
        assert_eq!(end, 0, "{mode}");
    }

    // Repeated timeouts mark the attachment unhealthy; it then fails fast without being called.
    for _ in 0..2 {
        produce_one(&client, "h-loop", "x").await.unwrap_err();
    }
    let (_, stages) = client.admin().describe_plugin("hostile").await.unwrap();
    let looping = stages.iter().find(|s| s.topic == "h-loop").unwrap();
    assert!(!looping.healthy);
    assert_eq!((looping.calls, looping.failures), (3, 3));
    let started = std::time::Instant::now();
    let err = produce_one(&client, "h-loop", "x").await.unwrap_err();
    assert!(
        err.contains("unhealthy after 3 consecutive failures"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_millis(100));
    still_serving(&client, cases.len() + 1).await;
    client.close().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_policies_dead_letter_skip_or_reject() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    deploy(&client, "hostile", "hostile", None).await;
    hostile_topic(&client, "dl", "panic", ErrorPolicy::DeadLetter).await;
    hostile_topic(&client, "sk", "panic", ErrorPolicy::Skip).await;
    // A plugin whose init refuses is refused at attach time, before any record is affected.
    client
        .admin()
        .create_topic(NewTopic::new("rj", 1))
        .await
        .unwrap();
    let refused = client
        .admin()
        .attach_plugin("rj", stage("hostile", &[("mode", "init-fail")]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::PluginInitFailed));
    assert!(refused
        .to_string()
        .contains("hostile init refused on purpose"));

    let sent = produce(
        &client,
        vec![
            ProducerRecord::new("dl", "a").header("h", "1"),
            ProducerRecord::new("dl", "b"),
        ],
    )
    .await;
    assert!(sent.iter().all(Result::is_ok), "{sent:?}");
    let dead = consume_n(&client, "dl.dlq", 2).await;
    assert_eq!(values(&dead), ["a", "b"]);
    let error = dead[0].record.header("quiver-error").unwrap();
    assert!(String::from_utf8_lossy(error).contains("panicked on purpose"));
    assert_eq!(dead[0].record.header("quiver-plugin").unwrap(), "hostile@1");
    assert_eq!(dead[0].record.header("h").unwrap(), "1");
    assert_eq!(
        client
            .admin()
            .describe_topic("dl")
            .await
            .unwrap()
            .partitions[0]
            .log_end,
        0
    );

    let sent = produce(&client, vec![ProducerRecord::new("sk", "gone")]).await;
    assert!(sent[0].is_ok());
    assert_eq!(
        client
            .admin()
            .describe_topic("sk")
            .await
            .unwrap()
            .partitions[0]
            .log_end,
        0
    );
    let dlqs: Vec<_> = client
        .admin()
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .filter(|n| n.ends_with(".dlq"))
        .collect();
    assert_eq!(dlqs, ["dl.dlq"]);
    client.close().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_stage_is_tried_again_after_its_cooldown_and_can_be_swapped() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(dir.path(), |c| c.plugins.cooldown_ms = 400).await;
    let client = broker.client().await;
    deploy(&client, "hostile", "hostile", None).await;
    hostile_topic(&client, "h", "loop", ErrorPolicy::Reject).await;
    for _ in 0..3 {
        let err = produce_one(&client, "h", "x").await.unwrap_err();
        assert!(err.contains("time limit exceeded"), "{err}");
    }
    let err = produce_one(&client, "h", "x").await.unwrap_err();
    assert!(err.contains("unhealthy"), "{err}");

    // After the cool-down the next batch is a real call again (and fails again).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = produce_one(&client, "h", "x").await.unwrap_err();
    assert!(err.contains("time limit exceeded"), "{err}");

    // Swapping in a working configuration replaces the stage, health and all.
    let mut fixed = stage("hostile", &[("mode", "pass")]);
    fixed.on_error = ErrorPolicy::Reject;
    let stages = client.admin().attach_plugin("h", fixed).await.unwrap();
    assert!(stages[0].healthy && stages[0].failures == 0);
    produce_one(&client, "h", "fine").await.unwrap();
    assert_eq!(values(&consume_n(&client, "h", 1).await), ["fine"]);
    client.close().await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_over_the_deploy_limit_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // The admin limit is never below max_frame_bytes (16 MiB): the ~18 MB Python component is over.
    let broker = TestBroker::start_with(dir.path(), |c| c.plugins.max_component_mb = 1).await;
    let client = broker.client().await;
    let err = client
        .admin()
        .deploy_plugin("big", None, plugin_wasm("tag-filter-py"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::FrameTooLarge), "{err}");
    assert!(err.to_string().contains("exceeds the limit"), "{err}");
    // The connection and the broker carry on.
    deploy(&client, "small", "tag-filter", None).await;
    client.close().await;
    broker.stop().await;
}
