//! Consume a topic from the beginning: `cargo run --example consume -- [TOPIC]`; stops after 2 s of
//! silence. Trusts ./quiver-data/tls/ca.pem unless QUIVER_CA says otherwise.

use std::time::Duration;

use quiver::{Client, Consumer, ConsumerConfig, SeekTo};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let topic = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "example".to_string());
    let server = std::env::var("QUIVER_SERVER").unwrap_or_else(|_| "127.0.0.1:7447".into());
    let ca = std::env::var("QUIVER_CA").unwrap_or_else(|_| "./quiver-data/tls/ca.pem".into());
    let client = Client::connect(&server, ca.as_ref()).await?;
    let mut consumer = Consumer::new(client.clone(), &topic, ConsumerConfig::default());
    let partitions = consumer.assign_all(SeekTo::Earliest).await?;
    println!("reading {topic} partitions {partitions:?}");
    loop {
        let records = consumer.poll(Duration::from_secs(2)).await?;
        if records.is_empty() {
            break;
        }
        for r in records {
            println!(
                "p{} @{} {}",
                r.partition,
                r.record.offset,
                String::from_utf8_lossy(&r.record.value)
            );
        }
    }
    client.close().await;
    Ok(())
}
