//! `quiver produce TOPIC` / `quiver produce --exchange NAME`: one record per line of standard input
//! (to a topic, or routed by an exchange with `--key` as the routing key); exits 0 only when every
//! record was acknowledged.

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use quiver_client::{Acks, Producer, ProducerConfig, ProducerRecord};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::args::ConnectArgs;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The topic (omit with `--exchange`).
    #[arg(required_unless_present = "exchange", conflicts_with = "exchange")]
    topic: Option<String>,
    /// Send through this exchange instead of to a topic; `--key` is the routing key.
    #[arg(long, conflicts_with = "partition")]
    exchange: Option<String>,
    /// Key of every record (records with one key stay in one partition); the routing key with
    /// `--exchange`.
    #[arg(long)]
    key: Option<String>,
    #[arg(long)]
    partition: Option<u32>,
    /// A tag on every record (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// A header K=V on every record (repeatable).
    #[arg(long = "header", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    #[arg(long, default_value = "leader", value_parser = parse_acks)]
    acks: Acks,
    #[command(flatten)]
    conn: ConnectArgs,
}

pub fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected K=V, got {s:?}"))
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    match s {
        "none" => Ok(Acks::None),
        "leader" => Ok(Acks::Leader),
        "all" => Ok(Acks::All),
        _ => Err(format!("expected none, leader or all, got {s:?}")),
    }
}

pub async fn run(args: ProduceArgs) -> anyhow::Result<()> {
    let client = args.conn.connect().await?;
    let producer = Producer::new(
        client.clone(),
        ProducerConfig {
            acks: args.acks,
            ..ProducerConfig::default()
        },
    );
    let (target, exchange) = match (&args.topic, &args.exchange) {
        (_, Some(e)) => (e.clone(), true),
        (Some(t), None) => (t.clone(), false),
        (None, None) => bail!("name a topic, or an exchange with --exchange"),
    };
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut deliveries = Vec::new();
    while let Some(line) = lines.next_line().await.context("reading standard input")? {
        let mut rec = ProducerRecord::new(target.clone(), Bytes::from(line));
        rec.exchange = exchange;
        rec.partition = args.partition;
        rec.key = args.key.clone().map(Bytes::from);
        rec.tags = args.tags.clone();
        rec.headers = args
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Bytes::from(v.clone())))
            .collect();
        deliveries.push(
            producer
                .send(rec)
                .await
                .with_context(|| format!("producing to {target}"))?,
        );
    }
    let flushed = producer.flush().await;
    let total = deliveries.len();
    let mut failed = 0usize;
    let mut first_error = None;
    for d in deliveries {
        if let Err(e) = d.wait().await {
            failed += 1;
            first_error.get_or_insert(e);
        }
    }
    client.close().await;
    if let Some(e) = first_error
        .map(|e| e.to_string())
        .or_else(|| flushed.err().map(|e| e.to_string()))
    {
        bail!("{failed} of {total} record(s) were not acknowledged: {e}");
    }
    Ok(())
}
