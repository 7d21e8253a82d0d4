//! Deploy a plugin and use it both ways, from Rust: `cargo run --example plugin -- [TOPIC]` after
//! `bash scripts/build-plugins.sh`. Deploys json-mask and attaches it to TOPIC's ingest pipeline
//! (masking `card`), produces two records, then reads them back through the tag-filter plugin as a
//! read filter. Trusts ./quiver-data/tls/ca.pem unless QUIVER_CA says otherwise.

use std::time::Duration;

use anyhow::Context;
use quiver::{
    AttachOptions, Client, Consumer, ConsumerConfig, NewTopic, PluginRef, Producer, ProducerConfig,
    ProducerRecord, SeekTo,
};

async fn deploy(client: &Client, name: &str) -> anyhow::Result<()> {
    let path = format!("target/plugins/{name}.wasm");
    let wasm =
        std::fs::read(&path).with_context(|| format!("{path} (run scripts/build-plugins.sh)"))?;
    let d = client
        .admin()
        .deploy_plugin(name, None, wasm.into())
        .await?;
    println!(
        "deployed {}@{} ({} world)",
        d.plugin.name, d.plugin.version, d.plugin.world
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let topic = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "payments".to_string());
    let server = std::env::var("QUIVER_SERVER").unwrap_or_else(|_| "127.0.0.1:7447".into());
    let ca = std::env::var("QUIVER_CA").unwrap_or_else(|_| "./quiver-data/tls/ca.pem".into());
    let client = Client::connect(&server, ca.as_ref()).await?;
    deploy(&client, "json-mask").await?;
    deploy(&client, "tag-filter").await?;

    // Ingest: every batch produced to the topic is masked before it is appended.
    if let Err(e) = client.admin().create_topic(NewTopic::new(&topic, 1)).await {
        println!("topic {topic}: {e}");
    }
    let stages = client
        .admin()
        .attach_plugin(
            &topic,
            AttachOptions::new("json-mask").config("fields", "card"),
        )
        .await?;
    println!("{topic} pipeline: {} stage(s)", stages.len());
    let producer = Producer::new(client.clone(), ProducerConfig::default());
    for (card, region) in [("4111-1111", "eu"), ("5500-0000", "us")] {
        let value = format!("{{\"card\":\"{card}\",\"region\":\"{region}\"}}");
        producer
            .send(ProducerRecord::new(&topic, value).tag(region))
            .await?;
    }
    producer.flush().await.map_err(|e| anyhow::anyhow!("{e}"))?;

    // Read filter: only the records tagged `eu` come back.
    let config = ConsumerConfig {
        plugin: Some(PluginRef {
            name: "tag-filter".into(),
            config: vec![("tags".into(), "eu".into())],
        }),
        ..Default::default()
    };
    let mut consumer = Consumer::new(client.clone(), &topic, config);
    consumer.assign_all(SeekTo::Earliest).await?;
    for r in consumer.poll(Duration::from_secs(2)).await? {
        println!(
            "@{} {}",
            r.record.offset,
            String::from_utf8_lossy(&r.record.value)
        );
    }
    client.close().await;
    Ok(())
}
