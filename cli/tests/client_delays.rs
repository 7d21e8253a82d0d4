//! Delayed delivery from the client library over real QUIC: records with a delivery time are held
//! (each answered with its delay id, the others with their offsets, even when both kinds are sent
//! together), show as pending on the topic, can be cancelled once, and arrive when due.

mod common;

use std::time::Duration;

use common::{consume_n, TestBroker};
use quiver::{ErrorCode, NewTopic, Producer, ProducerConfig, ProducerRecord, RecordMetadata};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_records_get_ids_and_can_be_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let client = broker.client().await;
    let admin = client.admin();
    admin.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            linger: Duration::from_millis(50),
            ..Default::default()
        },
    );
    let due = now_ms() + 1000;
    let records = [
        ProducerRecord::new("t", "a"),
        ProducerRecord::new("t", "b").delay(Duration::from_millis(1000)),
        ProducerRecord::new("t", "c"),
        ProducerRecord::new("t", "d").deliver_at(due),
        ProducerRecord::new("t", "e").deliver_at(due),
    ];
    let mut deliveries = Vec::new();
    for r in records {
        deliveries.push(producer.send(r).await.unwrap());
    }
    producer.flush().await.unwrap();
    let mut meta: Vec<RecordMetadata> = Vec::new();
    for d in deliveries {
        meta.push(d.wait().await.unwrap());
    }
    let offsets: Vec<Option<u64>> = meta.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, vec![Some(0), None, Some(1), None, None]);
    let ids: Vec<u64> = meta.iter().filter_map(|m| m.delay_id).collect();
    assert_eq!(ids.len(), 3, "{meta:?}");
    assert_eq!(ids, vec![ids[0], ids[0] + 1, ids[0] + 2], "in send order");
    assert!(meta[0].delay_id.is_none() && meta[2].delay_id.is_none());
    assert_eq!(admin.describe_topic("t").await.unwrap().pending_delayed, 3);

    // "d" is cancelled, once.
    assert_eq!(admin.cancel_delayed(ids[1]).await.unwrap(), "t");
    let again = admin.cancel_delayed(ids[1]).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::UnknownDelayed), "{again}");
    assert_eq!(admin.describe_topic("t").await.unwrap().pending_delayed, 2);

    // The others arrive once due, after the records appended at once.
    let got = consume_n(&client, "t", 4).await;
    let values: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.record.value).into_owned())
        .collect();
    assert_eq!(&values[..2], ["a", "c"]);
    let mut late = values[2..].to_vec();
    late.sort();
    assert_eq!(late, ["b", "e"]);
    assert!(now_ms() >= due - 50, "delivered before due");
    assert_eq!(admin.describe_topic("t").await.unwrap().pending_delayed, 0);
    client.close().await;
    broker.stop().await;
}
