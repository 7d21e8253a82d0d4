//! End-to-end tests over real QUIC + TLS 1.3: produce and consume round trips, ordering, long-poll,
//! restarts, and bad input (unknown topics, oversized records, garbage frames, the wrong CA, too many
//! connections) — each gets a clear error while the broker keeps serving others.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{consume_n, raw_connection, TestBroker};
use quiver::{
    Acks, Client, Consumer, ConsumerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
    SeekTo,
};
use quiver_proto::frame::FrameKind;
use quiver_proto::messages::ErrorBody;
use quiver_proto::ErrorCode;

async fn produce_values(
    client: &Client,
    topic: &str,
    acks: Acks,
    values: impl IntoIterator<Item = (Option<String>, String)>,
) {
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks,
            ..Default::default()
        },
    );
    let mut deliveries = Vec::new();
    for (key, value) in values {
        let mut rec = ProducerRecord::new(topic, value);
        rec.key = key.map(Bytes::from);
        deliveries.push(producer.send(rec).await.unwrap());
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.wait().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_round_trip_keeps_per_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    assert_eq!(
        client
            .admin()
            .create_topic(NewTopic::new("orders", 3))
            .await
            .unwrap(),
        3
    );
    let values = (0..3000).map(|i| (Some(format!("key-{}", i % 7)), format!("{}:{i}", i % 7)));
    produce_values(&client, "orders", Acks::Leader, values).await;
    let got = consume_n(&client, "orders", 3000).await;
    assert_eq!(got.len(), 3000);
    // Every key stays in one partition, and within it the records keep their order.
    let mut last_seen = std::collections::HashMap::new();
    for r in &got {
        let v = String::from_utf8(r.record.value.to_vec()).unwrap();
        let (key, seq) = v.split_once(':').unwrap();
        let seq: u64 = seq.parse().unwrap();
        let (p, prev) = last_seen
            .entry(key.to_owned())
            .or_insert((r.partition, None));
        assert_eq!(*p, r.partition, "key {key} moved partitions");
        assert!(prev.is_none_or(|x: u64| x < seq), "key {key} out of order");
        *prev = Some(seq);
        assert_eq!(
            r.record.key.as_deref(),
            Some(format!("key-{key}").as_bytes())
        );
    }
    let desc = client.admin().describe_topic("orders").await.unwrap();
    assert_eq!(desc.partitions.iter().map(|p| p.log_end).sum::<u64>(), 3000);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_up_on_new_data() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("events", 1))
        .await
        .unwrap();
    let config = ConsumerConfig {
        max_wait: Duration::from_secs(30),
        ..Default::default()
    };
    let mut consumer = Consumer::new(client.clone(), "events", config);
    consumer.assign(&[0], SeekTo::Latest);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = Instant::now();
    produce_values(
        &client,
        "events",
        Acks::Leader,
        [(None, "wake".to_string())],
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("long-poll did not wake")
        .unwrap();
    assert_eq!(&r.record.value[..], b"wake");
    // Woken by the append, not by the 30 s poll timeout.
    assert!(sent.elapsed() < Duration::from_secs(10));
    broker.stop().await;
}

/// A connection starts with a small stream allowance that grows as it is used: one client with a
/// long poll parked on each of 600 partitions (a stream each) still gets its produce through and
/// the record to the last partition delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_parked_fetch_streams_on_one_connection_all_work() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let partitions = 600u32;
    client
        .admin()
        .create_topic(NewTopic::new("wide", partitions))
        .await
        .unwrap();
    let config = ConsumerConfig {
        max_wait: Duration::from_secs(30),
        ..Default::default()
    };
    let mut consumer = Consumer::new(client.clone(), "wide", config);
    let all: Vec<u32> = (0..partitions).collect();
    consumer.assign(&all, SeekTo::Latest);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    let record = ProducerRecord::new("wide", Bytes::from_static(b"last")).partition(partitions - 1);
    let produce = async {
        let delivery = producer.send(record).await.unwrap();
        producer.flush().await.unwrap();
        delivery.wait().await.unwrap();
    };
    tokio::time::timeout(Duration::from_secs(10), produce)
        .await
        .expect("produce blocked behind the parked fetch streams");
    let r = tokio::time::timeout(Duration::from_secs(10), consumer.next())
        .await
        .expect("the last partition's long poll never saw the record")
        .unwrap();
    assert_eq!(
        (r.partition, &r.record.value[..]),
        (partitions - 1, &b"last"[..])
    );
    broker.stop().await;
}

/// A consumer whose application stops polling holds fetched answers in its prefetch buffer, never
/// on the connection: a fetch task asks ahead only once its answer has room there. Asked-ahead
/// answers left unread would hold the connection's 64 MiB receive window (96 partitions x ~1 MiB
/// here), which every other stream of the connection shares, so admin calls and produce replies
/// on the same client would stall. Then every record still arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_not_polled_leaves_its_connection_usable() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let (partitions, per_partition) = (96u32, 10u32);
    client
        .admin()
        .create_topic(NewTopic::new("backlog", partitions))
        .await
        .unwrap();
    // ~2 MiB per partition: a 1 MiB answer (five records) in hand and as much again behind it.
    let value = Bytes::from(vec![7u8; 200 << 10]);
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for p in 0..partitions {
        for _ in 0..per_partition {
            let record = ProducerRecord::new("backlog", value.clone()).partition(p);
            producer.send(record).await.unwrap();
        }
    }
    producer.flush().await.unwrap();
    let config = ConsumerConfig {
        prefetch: 1,
        ..Default::default()
    };
    let mut consumer = Consumer::new(client.clone(), "backlog", config);
    let all: Vec<u32> = (0..partitions).collect();
    consumer.assign(&all, SeekTo::Earliest);
    // Every fetch task reads its first answer and waits for room in the buffer.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let admin = tokio::time::timeout(Duration::from_secs(10), client.admin().list_topics()).await;
    assert!(
        matches!(admin, Ok(Ok(_))),
        "an admin call on the consumer's connection stalled: {admin:?}"
    );
    let mut seen = std::collections::HashSet::new();
    let total = (partitions * per_partition) as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < total && Instant::now() < deadline {
        for r in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            assert!(
                seen.insert((r.partition, r.record.offset)),
                "delivered twice: {}/{}",
                r.partition,
                r.record.offset
            );
        }
    }
    assert_eq!(seen.len(), total);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_serves_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("durable", 2))
        .await
        .unwrap();
    produce_values(
        &client,
        "durable",
        Acks::All,
        (0..500).map(|i| (None, format!("v{i}"))),
    )
    .await;
    client.close().await;
    broker.stop().await;

    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let mut got: Vec<String> = consume_n(&client, "durable", 500)
        .await
        .iter()
        .map(|r| String::from_utf8(r.record.value.to_vec()).unwrap())
        .collect();
    got.sort_by_key(|v| v[1..].parse::<u32>().unwrap());
    assert_eq!(got, (0..500).map(|i| format!("v{i}")).collect::<Vec<_>>());
    // Seeking by timestamp and by offset works after the restart too.
    let mut c = Consumer::new(client.clone(), "durable", ConsumerConfig::default());
    c.assign(&[0], SeekTo::Offset(10));
    assert_eq!(c.next().await.unwrap().record.offset, 10);
    c.seek(0, SeekTo::Timestamp(0));
    assert_eq!(c.next().await.unwrap().record.offset, 0);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_and_oversized_records_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(dir.path(), |c| c.log.max_batch_bytes = 64 << 10).await;
    let client = broker.client().await;
    let err = client.admin().describe_topic("missing").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownTopic), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");

    client
        .admin()
        .create_topic(NewTopic::new("small", 1))
        .await
        .unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            batch_bytes: 1 << 20,
            ..Default::default()
        },
    );
    let big = producer
        .send(ProducerRecord::new("small", vec![0u8; 200 << 10]).partition(0))
        .await
        .unwrap();
    let err = big.wait().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RecordTooLarge), "{err}");
    let err = producer
        .send(ProducerRecord::new("small", "x").partition(5))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownPartition), "{err}");
    // The same connection still works.
    produce_values(&client, "small", Acks::All, [(None, "ok".to_string())]).await;
    assert_eq!(
        &consume_n(&client, "small", 1).await[0].record.value[..],
        b"ok"
    );
    broker.stop().await;
}

async fn error_reply(conn: &quinn::Connection, bytes: &[u8]) -> ErrorBody {
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    let mut reader = quiver::wire::FrameReader::new(recv, 1 << 20);
    let frame = reader.next().await.unwrap().expect("an error frame");
    assert_eq!(frame.kind, FrameKind::Error);
    quiver_proto::messages::decode_header(&frame.header).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_stream_is_refused_and_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("t", 1))
        .await
        .unwrap();
    let conn = raw_connection(&broker).await;

    let garbage = error_reply(&conn, b"\x05\x00\x00\x00\xEEhello world").await;
    assert_eq!(garbage.error_code(), ErrorCode::MalformedFrame, "{garbage}");
    let huge = error_reply(&conn, &u32::MAX.to_le_bytes()).await;
    assert_eq!(huge.error_code(), ErrorCode::FrameTooLarge, "{huge}");
    // A produce frame whose payload is not a valid batch.
    let req = quiver_proto::messages::ProduceRequest {
        request_id: 9,
        topic: "t".into(),
        partition: Some(0),
        acks: Acks::Leader,
        exchange: false,
    };
    let header = quiver_proto::messages::encode_header(&req).unwrap();
    let mut frame = Frame::encoded_header(FrameKind::Produce, header.len(), 8).to_vec();
    frame.extend_from_slice(&header);
    frame.extend_from_slice(b"notabtch");
    let bad_batch = error_reply(&conn, &frame).await;
    assert_eq!(
        bad_batch.error_code(),
        ErrorCode::InvalidBatch,
        "{bad_batch}"
    );
    assert_eq!(
        bad_batch.request_id,
        Some(9),
        "the error names the pipelined request"
    );
    // Garbage after a valid produce frame: the pending request is answered, then the framing error.
    let mut two = frame.clone();
    two.extend_from_slice(b"\x05\x00\x00\x00\xEEjunk");
    let (mut send, recv) = conn.open_bi().await.unwrap();
    send.write_all(&two).await.unwrap();
    let _ = send.finish();
    let mut reader = quiver::wire::FrameReader::new(recv, 1 << 20);
    let mut codes = Vec::new();
    while let Some(f) = reader.next().await.unwrap() {
        let body: ErrorBody = quiver_proto::messages::decode_header(&f.header).unwrap();
        codes.push(body.error_code());
    }
    assert_eq!(
        codes,
        vec![ErrorCode::InvalidBatch, ErrorCode::MalformedFrame]
    );

    // The raw connection, the other client and the log are all fine.
    assert!(conn.open_bi().await.is_ok());
    produce_values(&client, "t", Acks::Leader, [(None, "fine".to_string())]).await;
    assert_eq!(consume_n(&client, "t", 1).await.len(), 1);
    assert_eq!(
        client.admin().describe_topic("t").await.unwrap().partitions[0].log_end,
        1
    );
    broker.stop().await;
}

use quiver_proto::frame::Frame;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_another_ca_is_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let foreign_ca = quiver_broker::transport::tls::ensure_dev_certs(other.path())
        .unwrap()
        .ca_pem_path;
    let err = Client::connect(&broker.addr.to_string(), &foreign_ca)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid peer certificate") && err.contains("--ca"),
        "{err}"
    );
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("after", 1))
        .await
        .unwrap();
    assert_eq!(client.admin().list_topics().await.unwrap().len(), 1);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_as_busy() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(dir.path(), |c| c.max_connections = 1).await;
    let first = broker.client().await;
    let err = Client::connect(&broker.addr.to_string(), &broker.ca)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("server busy"), "{err}");
    first
        .admin()
        .create_topic(NewTopic::new("still-up", 1))
        .await
        .unwrap();
    first.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = broker.client().await;
    assert_eq!(second.admin().list_topics().await.unwrap().len(), 1);
    broker.stop().await;
}

/// Linger 0 sends each record's batch with the record, with no timer: a delivery completes
/// without `flush`, and records sent one after another each get their own batch (offsets in
/// send order). Linger of an hour holds a record until `flush`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linger_zero_sends_at_once_and_a_long_linger_waits_for_flush() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("now", 1))
        .await
        .unwrap();
    let config = |linger| ProducerConfig {
        linger,
        ..Default::default()
    };
    let eager = Producer::new(client.clone(), config(Duration::ZERO));
    for i in 0..3u64 {
        let d = eager.send(ProducerRecord::new("now", "x")).await.unwrap();
        let sent = tokio::time::timeout(Duration::from_secs(30), d.wait()).await;
        assert_eq!(
            sent.expect("delivered without a flush").unwrap().offset,
            Some(i)
        );
    }
    let lazy = Producer::new(client.clone(), config(Duration::from_secs(3600)));
    let held = lazy.send(ProducerRecord::new("now", "y")).await.unwrap();
    let mut waiting = Box::pin(held.wait());
    let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
    assert!(early.is_err(), "held for its linger");
    lazy.flush().await.unwrap();
    assert_eq!(waiting.await.unwrap().offset, Some(3));
    broker.stop().await;
}

/// Linger 0 under a burst: records beyond a short pipeline wait in open batches (sealed by later
/// sends, replies coming back or the 1-ms tick, never by a flush here), and every one arrives once, in send order, from
/// two tasks sending at once on one idempotent producer (the seal order is the send order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linger_zero_bursts_batch_and_keep_order_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("burst", 1))
        .await
        .unwrap();
    let config = ProducerConfig {
        linger: Duration::ZERO,
        max_in_flight: 4,
        ..Default::default()
    };
    let producer = Producer::new(client.clone(), config);
    let mut tasks = Vec::new();
    for task in 0..2u32 {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            let mut deliveries = Vec::new();
            for i in 0..5_000u32 {
                let value = format!("{task}-{i}");
                deliveries.push(
                    producer
                        .send(ProducerRecord::new("burst", value))
                        .await
                        .unwrap(),
                );
            }
            let mut offsets = Vec::new();
            for d in deliveries {
                let sent = tokio::time::timeout(Duration::from_secs(60), d.wait()).await;
                offsets.push(
                    sent.expect("delivered without a flush")
                        .unwrap()
                        .offset
                        .unwrap(),
                );
            }
            offsets
        }));
    }
    for task in tasks {
        let offsets = task.await.unwrap();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "one task's records in order"
        );
    }
    let records = consume_n(&client, "burst", 10_000).await;
    let mut next = [0u32; 2];
    for r in &records {
        let value = String::from_utf8(r.record.value.to_vec()).unwrap();
        let (task, i) = value.split_once('-').unwrap();
        let task: usize = task.parse().unwrap();
        assert_eq!(
            i.parse::<u32>().unwrap(),
            next[task],
            "each task's records once, in order"
        );
        next[task] += 1;
    }
    assert_eq!(next, [5_000, 5_000]);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_none_and_all_both_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("modes", 1))
        .await
        .unwrap();
    produce_values(
        &client,
        "modes",
        Acks::None,
        (0..100).map(|i| (None, format!("n{i}"))),
    )
    .await;
    produce_values(
        &client,
        "modes",
        Acks::All,
        (0..100).map(|i| (None, format!("a{i}"))),
    )
    .await;
    let got = consume_n(&client, "modes", 200).await;
    assert_eq!(got.len(), 200);
    assert!(got
        .iter()
        .enumerate()
        .all(|(i, r)| r.record.offset == i as u64));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_filters_return_matching_records_and_move_past_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("regions", 1))
        .await
        .unwrap();
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for i in 0..300u32 {
        let region = ["eu", "us", "apac"][(i % 3) as usize];
        let mut rec = ProducerRecord::new("regions", format!("{region}-{i}"))
            .partition(0)
            .tag(region);
        if i % 10 == 0 {
            rec = rec.tag("vip").header("lang", "en");
        }
        drop(producer.send(rec).await.unwrap());
    }
    producer.flush().await.unwrap();

    let read = |filter: &'static str| {
        let client = client.clone();
        async move {
            let config = ConsumerConfig {
                filter: Some(filter.to_string()),
                max_wait: Duration::from_millis(200),
                ..Default::default()
            };
            let mut c = Consumer::new(client, "regions", config);
            c.assign(&[0], SeekTo::Earliest);
            let mut got = Vec::new();
            loop {
                let batch = c.poll(Duration::from_millis(500)).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                got.extend(batch.into_iter().map(|r| r.record.offset));
            }
            got
        }
    };
    assert_eq!(
        read("tag:eu").await,
        (0..300).step_by(3).collect::<Vec<u64>>()
    );
    assert_eq!(
        read("tag:vip & !tag:eu").await,
        vec![
            10, 20, 40, 50, 70, 80, 100, 110, 130, 140, 160, 170, 190, 200, 220, 230, 250, 260,
            280, 290
        ]
    );
    assert_eq!(read("header:lang=en").await.len(), 30);
    assert_eq!(read("tag:any(us,apac)").await.len(), 200);

    // A filter that matches nothing still moves the position to the end of the log.
    let mut c = Consumer::new(
        client.clone(),
        "regions",
        ConsumerConfig {
            filter: Some("tag:none".into()),
            ..Default::default()
        },
    );
    c.assign(&[0], SeekTo::Earliest);
    assert!(c.poll(Duration::from_millis(500)).await.unwrap().is_empty());
    assert_eq!(
        c.position(0),
        Some(300),
        "the position moved past the skipped records"
    );

    let config = ConsumerConfig {
        filter: Some("tag:eu &".into()),
        ..Default::default()
    };
    let mut bad = Consumer::new(client.clone(), "regions", config);
    bad.assign(&[0], SeekTo::Earliest);
    let err = bad.next().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    assert!(
        err.to_string().contains("invalid filter expression"),
        "{err}"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_past_the_log_resets_or_reports() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    client
        .admin()
        .create_topic(NewTopic::new("short", 1))
        .await
        .unwrap();
    produce_values(
        &client,
        "short",
        Acks::Leader,
        (0..5).map(|i| (None, format!("r{i}"))),
    )
    .await;
    // Offset 50 is not in the log: by default the consumer resets to the earliest record.
    let mut c = Consumer::new(client.clone(), "short", ConsumerConfig::default());
    c.assign(&[0], SeekTo::Offset(50));
    assert_eq!(c.next().await.unwrap().record.offset, 0);
    // Without a reset policy the error reaches the application.
    let mut strict = Consumer::new(
        client.clone(),
        "short",
        ConsumerConfig {
            reset: None,
            ..Default::default()
        },
    );
    strict.assign(&[0], SeekTo::Offset(50));
    let err = strict.next().await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::OffsetOutOfRange), "{err}");
    broker.stop().await;
}
