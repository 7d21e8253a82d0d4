//! `quiver consume TOPIC`: prints records one per line until `--count` records were printed or nothing
//! arrived for `--timeout-ms`.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use quiver_client::{ConsumedRecord, Consumer, ConsumerConfig, PluginRef, SeekTo};
use tokio::io::AsyncWriteExt;

use crate::args::ConnectArgs;

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    topic: String,
    /// Read only this partition (default: all).
    #[arg(long)]
    partition: Option<u32>,
    /// earliest, latest, an offset, or @TIMESTAMP_MS.
    #[arg(long, default_value = "earliest", value_parser = parse_from)]
    from: SeekTo,
    /// Exit after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Exit when nothing arrived for this long (default: wait forever).
    #[arg(long)]
    timeout_ms: Option<u64>,
    #[arg(long, default_value = "value", value_parser = ["value", "json"])]
    format: String,
    /// Only records matching this expression (docs/filters.md), e.g. `tag:eu`, `tag:any(a,b) & !tag:test`.
    #[arg(long)]
    filter: Option<String>,
    /// A deployed filter plugin (NAME or NAME@VERSION) the broker runs on the records it sends.
    #[arg(long)]
    plugin: Option<String>,
    /// Configuration of `--plugin`, KEY=VALUE (repeatable).
    #[arg(long = "plugin-config", value_name = "K=V", requires = "plugin")]
    plugin_config: Vec<String>,
    #[command(flatten)]
    conn: ConnectArgs,
}

fn parse_from(s: &str) -> Result<SeekTo, String> {
    match s {
        "earliest" => Ok(SeekTo::Earliest),
        "latest" => Ok(SeekTo::Latest),
        _ if s.starts_with('@') => s[1..]
            .parse()
            .map(SeekTo::Timestamp)
            .map_err(|_| format!("bad timestamp in {s:?}")),
        _ => s
            .parse()
            .map(SeekTo::Offset)
            .map_err(|_| format!("expected earliest, latest, OFFSET or @TIMESTAMP_MS, got {s:?}")),
    }
}

pub async fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let plugin = match &args.plugin {
        Some(name) => Some(PluginRef {
            name: name.clone(),
            config: crate::plugin::parse_config(&args.plugin_config)?,
        }),
        None => None,
    };
    let client = args.conn.connect().await?;
    let config = ConsumerConfig {
        filter: args.filter.clone(),
        plugin,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(client.clone(), args.topic.clone(), config);
    match args.partition {
        Some(p) => consumer.assign(&[p], args.from),
        None => {
            consumer
                .assign_all(args.from)
                .await
                .with_context(|| format!("reading topic {}", args.topic))?;
        }
    }
    let printed = print_records(&mut consumer, &args).await;
    client.close().await;
    printed
}

async fn print_records(consumer: &mut Consumer, args: &ConsumeArgs) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    let mut printed = 0u64;
    let mut last_arrival = Instant::now();
    let idle = args.timeout_ms.map(Duration::from_millis);
    loop {
        if args.count.is_some_and(|c| printed >= c) {
            return Ok(());
        }
        let wait = match idle {
            Some(limit) => match limit.checked_sub(last_arrival.elapsed()) {
                Some(left) => left,
                None => return Ok(()),
            },
            None => Duration::from_secs(3600),
        };
        let records = consumer.poll(wait).await?;
        if !records.is_empty() {
            last_arrival = Instant::now();
        }
        for r in records {
            if args.count.is_some_and(|c| printed >= c) {
                break;
            }
            let line = format_record(&r, &args.format);
            out.write_all(line.as_bytes()).await?;
            printed += 1;
        }
        out.flush().await?;
        if printed == 0 && idle.is_some() && last_arrival.elapsed() >= idle.unwrap_or_default() {
            return Ok(());
        }
        if args.count == Some(0) {
            bail!("--count 0 prints nothing");
        }
    }
}

fn format_record(r: &ConsumedRecord, format: &str) -> String {
    let rec = &r.record;
    if format == "value" {
        return format!("{}\n", String::from_utf8_lossy(&rec.value));
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let headers: serde_json::Map<String, serde_json::Value> = rec
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(text(v))))
        .collect();
    let json = serde_json::json!({
        "partition": r.partition,
        "offset": rec.offset,
        "timestamp": rec.timestamp,
        "key": rec.key.as_ref().map(|k| text(k)),
        "value": text(&rec.value),
        "tags": rec.tags,
        "headers": headers,
    });
    format!("{json}\n")
}
