//! Produce records to a local broker: `cargo run --example produce -- [TOPIC] [COUNT]`.
//! Start the broker first with `cargo run --release -- serve` (it writes its dev CA to
//! ./quiver-data/tls/ca.pem, which this example trusts unless QUIVER_CA says otherwise).

use anyhow::Context;
use quiver::{Acks, Client, NewTopic, Producer, ProducerConfig, ProducerRecord};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let topic = args.next().unwrap_or_else(|| "example".to_string());
    let count: u64 = args
        .next()
        .map_or(Ok(10), |c| c.parse())
        .context("COUNT must be a number")?;
    let server = std::env::var("QUIVER_SERVER").unwrap_or_else(|_| "127.0.0.1:7447".into());
    let ca = std::env::var("QUIVER_CA").unwrap_or_else(|_| "./quiver-data/tls/ca.pem".into());
    let client = Client::connect(&server, ca.as_ref()).await?;
    // Creating an existing topic fails with TopicExists, which is fine here.
    let _ = client.admin().create_topic(NewTopic::new(&topic, 3)).await;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: Acks::All,
            ..Default::default()
        },
    );
    let mut deliveries = Vec::new();
    for i in 0..count {
        let rec = ProducerRecord::new(&topic, format!("hello #{i}"))
            .key(format!("user-{}", i % 4))
            .tag("example");
        deliveries.push(producer.send(rec).await?);
    }
    producer.flush().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    for d in deliveries {
        let meta = d.wait().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        println!("partition {} offset {:?}", meta.partition, meta.offset);
    }
    client.close().await;
    Ok(())
}
