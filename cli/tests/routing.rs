//! Exchanges over real QUIC: each kind routes records to the bound topics it matches (one copy per
//! topic), unroutable records go to the alternate topic or fail the produce, definitions survive a
//! restart, and a key keeps one partition of a destination topic.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{consume_n, TestBroker};
use quiver::{
    AttachOptions, Binding, Client, Consumer, ConsumerConfig, ExchangeKind, HeaderMatch, NewTopic,
    Producer, ProducerConfig, ProducerRecord, SeekTo,
};

fn bind(topic: &str, key: &str) -> Binding {
    Binding {
        topic: topic.into(),
        key: key.into(),
        headers: Vec::new(),
        header_match: HeaderMatch::All,
    }
}

async fn topics(client: &Client, names: &[(&str, u32)]) {
    for (n, p) in names {
        client
            .admin()
            .create_topic(NewTopic::new(*n, *p))
            .await
            .unwrap();
    }
}

/// Values of everything in `topic` (all partitions) after a short wait.
async fn values(client: &Client, topic: &str) -> Vec<String> {
    let mut c = Consumer::new(client.clone(), topic, ConsumerConfig::default());
    c.assign_all(SeekTo::Earliest).await.unwrap();
    let mut out: Vec<String> = c
        .poll(Duration::from_millis(500))
        .await
        .unwrap()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.record.value).into_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchanges_route_by_kind_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    topics(
        &client,
        &[("eu", 3), ("audit", 1), ("other", 1), ("pay", 1)],
    )
    .await;
    let admin = client.admin();
    admin
        .create_exchange("orders", ExchangeKind::Topic, Some("other".into()))
        .await
        .unwrap();
    admin
        .bind_exchange("orders", bind("eu", "orders.*.eu"))
        .await
        .unwrap();
    admin
        .bind_exchange("orders", bind("audit", "#"))
        .await
        .unwrap();
    admin
        .bind_exchange("orders", bind("audit", "orders.#"))
        .await
        .unwrap();
    admin
        .create_exchange("direct", ExchangeKind::Direct, None)
        .await
        .unwrap();
    admin
        .bind_exchange("direct", bind("pay", "payment"))
        .await
        .unwrap();
    let err = admin
        .bind_exchange("direct", bind("missing", "x"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown topic"), "{err}");

    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for (key, v) in [("orders.new.eu", "a"), ("orders.new.us", "b"), ("x", "c")] {
        producer
            .send(ProducerRecord::to_exchange("orders", v).key(Bytes::from(key)))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    assert_eq!(values(&client, "eu").await, vec!["a"]);
    assert_eq!(
        values(&client, "audit").await,
        vec!["a", "b", "c"],
        "one copy per topic"
    );
    assert!(
        values(&client, "other").await.is_empty(),
        "'#' matched everything"
    );

    // A direct exchange without an alternate refuses what matches nothing, clearly.
    let d = producer
        .send(ProducerRecord::to_exchange("direct", "lost").key(Bytes::from("nope")))
        .await
        .unwrap();
    producer.flush().await.ok();
    let err = d.wait().await.unwrap_err();
    assert!(err.to_string().contains("match no binding"), "{err}");
    assert!(values(&client, "pay").await.is_empty());

    // A key keeps one partition of a multi-partition destination.
    for i in 0..20 {
        let rec = ProducerRecord::to_exchange("orders", format!("k{i}"))
            .key(Bytes::from("orders.same.eu"));
        producer.send(rec).await.unwrap();
    }
    producer.flush().await.unwrap();
    let got = consume_n(&client, "eu", 21).await;
    let partitions: std::collections::BTreeSet<u32> = got
        .iter()
        .filter(|r| r.record.value.starts_with(b"k"))
        .map(|r| r.partition)
        .collect();
    assert_eq!(partitions.len(), 1, "{partitions:?}");

    client.close().await;
    broker.stop().await;
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let listed = client.admin().list_exchanges().await.unwrap();
    let names: Vec<&str> = listed.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, vec!["direct", "orders"]);
    assert_eq!(listed[1].bindings.len(), 3);
    assert_eq!(listed[1].alternate.as_deref(), Some("other"));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_and_fanout_exchanges() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    topics(&client, &[("eu", 1), ("vip", 1), ("a", 1), ("b", 1)]).await;
    let admin = client.admin();
    admin
        .create_exchange("by-header", ExchangeKind::Headers, None)
        .await
        .unwrap();
    let cond = |topic: &str, pairs: &[(&str, &str)], how| Binding {
        topic: topic.into(),
        key: String::new(),
        headers: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        header_match: how,
    };
    admin
        .bind_exchange(
            "by-header",
            cond("eu", &[("region", "eu")], HeaderMatch::All),
        )
        .await
        .unwrap();
    let vip = cond(
        "vip",
        &[("tier", "gold"), ("tier2", "gold")],
        HeaderMatch::Any,
    );
    admin.bind_exchange("by-header", vip).await.unwrap();
    admin
        .create_exchange("all", ExchangeKind::Fanout, None)
        .await
        .unwrap();
    admin.bind_exchange("all", bind("a", "")).await.unwrap();
    admin.bind_exchange("all", bind("b", "")).await.unwrap();
    let exists = admin
        .create_exchange("all", ExchangeKind::Direct, None)
        .await
        .unwrap_err();
    assert!(exists.to_string().contains("already exists"), "{exists}");

    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let rec = ProducerRecord::to_exchange("by-header", "gold-eu")
        .header("region", "eu")
        .header("tier", "gold");
    producer.send(rec).await.unwrap();
    let rec = ProducerRecord::to_exchange("by-header", "us")
        .header("region", "us")
        .header("tier2", "gold");
    producer.send(rec).await.unwrap();
    producer
        .send(ProducerRecord::to_exchange("all", "x"))
        .await
        .unwrap();
    producer.flush().await.unwrap();
    assert_eq!(values(&client, "eu").await, vec!["gold-eu"]);
    assert_eq!(values(&client, "vip").await, vec!["gold-eu", "us"]);
    assert_eq!(values(&client, "a").await, vec!["x"]);
    assert_eq!(values(&client, "b").await, vec!["x"]);
    let unknown = producer
        .send(ProducerRecord::to_exchange("nope", "x"))
        .await
        .unwrap();
    producer.flush().await.ok();
    assert!(unknown
        .wait()
        .await
        .unwrap_err()
        .to_string()
        .contains("unknown exchange"));
    broker.stop().await;
}

fn json_router(config: &[(&str, &str)]) -> Vec<(String, String)> {
    config
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_plugin_fans_one_record_out_to_two_topics() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    topics(
        &client,
        &[
            ("orders", 1),
            ("orders.eu", 2),
            ("orders.us", 1),
            ("unrouted", 1),
        ],
    )
    .await;
    let admin = client.admin();
    admin
        .deploy_plugin("json-router", None, common::plugin_wasm("json-router"))
        .await
        .unwrap();
    let config = json_router(&[("field", "region"), ("prefix", "orders.")]);
    // On the ingest pipeline of `orders`: records leave it for the topics the plugin names.
    let stages = admin
        .attach_plugin(
            "orders",
            AttachOptions {
                config: config.clone(),
                ..AttachOptions::new("json-router")
            },
        )
        .await
        .unwrap();
    assert_eq!(stages[0].world, "router");
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for v in [
        r#"{"id":1,"region":["eu","us"]}"#,
        r#"{"id":2,"region":"eu"}"#,
        r#"{"id":3}"#,
    ] {
        producer
            .send_now(ProducerRecord::new("orders", v))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    assert_eq!(
        values(&client, "orders.eu").await,
        vec![
            r#"{"id":1,"region":["eu","us"]}"#,
            r#"{"id":2,"region":"eu"}"#
        ]
    );
    assert_eq!(
        values(&client, "orders.us").await,
        vec![r#"{"id":1,"region":["eu","us"]}"#]
    );
    assert!(
        values(&client, "orders").await.is_empty(),
        "routed away or dropped"
    );

    // A destination that does not exist fails the batch under the error policy (dead letter).
    producer
        .send_now(ProducerRecord::new("orders", r#"{"region":"apac"}"#))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    let dead = consume_n(&client, "orders.dlq", 1).await;
    let why = String::from_utf8_lossy(dead[0].record.header("quiver-error").unwrap()).into_owned();
    assert!(why.contains("orders.apac"), "{why}");

    // On an exchange: the router replaces the bindings.
    admin
        .create_exchange("regions", ExchangeKind::Fanout, None)
        .await
        .unwrap();
    admin
        .bind_exchange("regions", bind("unrouted", ""))
        .await
        .unwrap();
    let ex = admin
        .attach_exchange_router(
            "regions",
            AttachOptions {
                config,
                ..AttachOptions::new("json-router")
            },
        )
        .await
        .unwrap();
    assert_eq!(ex.router.as_ref().unwrap().plugin, "json-router");
    producer
        .send_now(ProducerRecord::to_exchange(
            "regions",
            r#"{"id":4,"region":["us","eu"]}"#,
        ))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(values(&client, "orders.us").await.len(), 2);
    assert_eq!(values(&client, "orders.eu").await.len(), 3);
    assert!(
        values(&client, "unrouted").await.is_empty(),
        "bindings not used"
    );
    let listed = admin.list_exchanges().await.unwrap();
    assert_eq!(listed[0].router.as_ref().unwrap().calls, 1);

    // Detached: the bindings route again.
    admin.detach_exchange_router("regions").await.unwrap();
    producer
        .send_now(ProducerRecord::to_exchange(
            "regions",
            r#"{"id":5,"region":"eu"}"#,
        ))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(values(&client, "unrouted").await.len(), 1);

    // Two topics whose routers send everything to each other: the produce fails, it does not loop.
    topics(&client, &[("ping", 1), ("pong", 1)]).await;
    for (topic, other) in [("ping", "pong"), ("pong", "ping")] {
        admin
            .attach_plugin(
                topic,
                AttachOptions {
                    config: json_router(&[("also", other)]),
                    ..AttachOptions::new("json-router").on_error(quiver::ErrorPolicy::Reject)
                },
            )
            .await
            .unwrap();
    }
    let err = producer
        .send_now(ProducerRecord::new("ping", "{}"))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("routing loop"), "{err}");
    broker.stop().await;
}
