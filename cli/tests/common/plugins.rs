//! Helpers of the plugin tests: deploying components from `target/plugins/`, attach options, and
//! producing with the per-record outcome (error codes and texts) a test asserts on.

use quiver::{Acks, AttachOptions, Client, Producer, ProducerConfig, ProducerRecord};
use quiver_proto::ErrorCode;

use super::plugin_wasm;

/// A producer that reports every failure as it is (acks=leader, no retries).
fn no_retries(client: &Client) -> Producer {
    Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::Leader,
            retries: 0,
            ..Default::default()
        },
    )
}

/// Sends records and waits for each delivery; returns the per-record outcomes.
pub async fn produce(
    client: &Client,
    records: Vec<ProducerRecord>,
) -> Vec<Result<quiver::RecordMetadata, ErrorCode>> {
    let producer = no_retries(client);
    let mut deliveries = Vec::new();
    for r in records {
        deliveries.push(producer.send(r).await.unwrap());
    }
    let _ = producer.flush().await;
    let mut out = Vec::new();
    for d in deliveries {
        out.push(
            d.wait()
                .await
                .map_err(|e| e.code().unwrap_or(ErrorCode::Unknown)),
        );
    }
    out
}

/// One batch of one record, for tests that need the produce error text.
pub async fn produce_one(client: &Client, topic: &str, value: &str) -> Result<(), String> {
    let producer = no_retries(client);
    let d = producer
        .send(ProducerRecord::new(topic, value.to_owned()))
        .await
        .unwrap();
    let _ = producer.flush().await;
    d.wait().await.map(drop).map_err(|e| e.to_string())
}

pub async fn deploy(client: &Client, name: &str, file: &str, version: Option<&str>) {
    client
        .admin()
        .deploy_plugin(name, version, plugin_wasm(file))
        .await
        .unwrap();
}

pub fn stage(plugin: &str, config: &[(&str, &str)]) -> AttachOptions {
    config
        .iter()
        .fold(AttachOptions::new(plugin), |o, (k, v)| o.config(*k, *v))
}
