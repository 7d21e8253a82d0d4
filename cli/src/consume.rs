//! `quiver consume TOPIC`: prints records one per line until `--count` records were printed or nothing
//! arrived for `--timeout-ms`; alone (`--partition`, `--from`), as a consumer-group member (`--group`,
//! committing automatically or after each printed poll with `--commit manual`), or in queue mode
//! (`--queue`, acknowledging each record once printed).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::ProgressBar;
use quiver::{
    Client, CommitMode, ConsumedRecord, Consumer, ConsumerConfig, GroupConfig, GroupConsumer,
    PluginRef, QueueConfig, QueueConsumer, QueuedRecord, Record, SeekTo,
};
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
    /// Consume as a member of this consumer group (partitions split across members; `--from`
    /// applies where the group has committed nothing).
    #[arg(long, conflicts_with_all = ["queue", "partition"])]
    group: Option<String>,
    /// With `--group`: `auto` commits in the background, `manual` commits after each printed poll.
    #[arg(long, default_value = "auto", value_parser = ["auto", "manual"], requires = "group")]
    commit: String,
    /// Consume in queue mode under this share group: records are leased one by one across all
    /// consumers of the group and acknowledged once printed.
    #[arg(long, conflicts_with = "partition")]
    queue: Option<String>,
    /// With `--queue`: deliveries before a record goes to `<topic>.dlq`.
    #[arg(long, default_value_t = 5, requires = "queue")]
    max_deliveries: u32,
    /// With `--queue`: how long a lease lasts before the record is delivered again.
    #[arg(long, default_value_t = 30_000, requires = "queue")]
    visibility_timeout_ms: u64,
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
    let mut source = Source::open(&client, &args, config).await?;
    let printed = print_records(&mut source, &args).await;
    let closed = source.close().await;
    client.close().await;
    printed.and(closed)
}

/// Where records come from (one per process, so variant sizes do not matter).
#[allow(clippy::large_enum_variant)]
enum Source {
    Plain(Consumer),
    Group {
        consumer: GroupConsumer,
        manual: bool,
    },
    Queue(QueueConsumer),
}

/// A record to print, and for queue mode the lease to settle.
enum Item {
    Consumed(ConsumedRecord),
    Queued(QueuedRecord),
}

impl Item {
    fn parts(&self) -> (u32, &Record, Option<u32>) {
        match self {
            Item::Consumed(r) => (r.partition, &r.record, None),
            Item::Queued(q) => (q.partition, &q.record, Some(q.delivery_count)),
        }
    }
}

impl Source {
    async fn open(
        client: &Client,
        args: &ConsumeArgs,
        config: ConsumerConfig,
    ) -> anyhow::Result<Source> {
        if let Some(group) = &args.group {
            let mut gc = GroupConfig::new(group.clone(), [args.topic.clone()]);
            let manual = args.commit == "manual";
            if manual {
                gc.commit = CommitMode::Manual;
            }
            if args.from == SeekTo::Latest {
                gc.reset = SeekTo::Latest;
            }
            gc.consumer = config;
            let consumer = GroupConsumer::join(client.clone(), gc)
                .await
                .with_context(|| format!("joining group {group}"))?;
            return Ok(Source::Group { consumer, manual });
        }
        if let Some(group) = &args.queue {
            let qc = QueueConfig {
                max_deliveries: args.max_deliveries,
                visibility_timeout: Duration::from_millis(args.visibility_timeout_ms),
                max_wait: Duration::from_millis(args.timeout_ms.unwrap_or(1000).clamp(1, 1000)),
                ..QueueConfig::default()
            };
            // Fail early on an unknown topic rather than polling it forever.
            client
                .admin()
                .describe_topic(&args.topic)
                .await
                .with_context(|| format!("reading topic {}", args.topic))?;
            let q = QueueConsumer::new(client.clone(), group.clone(), args.topic.clone(), qc);
            return Ok(Source::Queue(q));
        }
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
        Ok(Source::Plain(consumer))
    }

    async fn poll(&mut self, wait: Duration) -> anyhow::Result<Vec<Item>> {
        Ok(match self {
            Source::Plain(c) => c
                .poll(wait)
                .await?
                .into_iter()
                .map(Item::Consumed)
                .collect(),
            Source::Group { consumer, .. } => consumer
                .poll(wait)
                .await?
                .into_iter()
                .map(Item::Consumed)
                .collect(),
            // Not cut short by `wait`: a poll abandoned in flight would leave its records
            // leased until the visibility timeout. Its own max_wait is at most `--timeout-ms`.
            Source::Queue(q) => q.poll().await?.into_iter().map(Item::Queued).collect(),
        })
    }

    /// After printing `printed` (and not `rest`): commit (manual group mode), or ack the printed
    /// records and give the others back (queue mode).
    async fn printed(&mut self, printed: &[Item], rest: &[Item]) -> anyhow::Result<()> {
        match self {
            Source::Group {
                consumer,
                manual: true,
            } if !printed.is_empty() => consumer.commit().await?,
            Source::Queue(q) => {
                let leases = |items: &[Item]| -> Vec<QueuedRecord> {
                    items
                        .iter()
                        .filter_map(|i| match i {
                            Item::Queued(q) => Some(q.clone()),
                            Item::Consumed(_) => None,
                        })
                        .collect()
                };
                if !printed.is_empty() {
                    q.ack(&leases(printed)).await?;
                }
                if !rest.is_empty() {
                    q.release(&leases(rest)).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        if let Source::Group { consumer, .. } = self {
            consumer.close().await?;
        }
        Ok(())
    }
}

async fn print_records(source: &mut Source, args: &ConsumeArgs) -> anyhow::Result<()> {
    let progress = match args.count {
        Some(n) => crate::progress::consume(n),
        None => ProgressBar::hidden(),
    };
    let result = print_until_done(source, args, &progress).await;
    progress.finish_and_clear();
    result
}

async fn print_until_done(
    source: &mut Source,
    args: &ConsumeArgs,
    progress: &ProgressBar,
) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    let mut printed = 0u64;
    let mut last_arrival = Instant::now();
    let idle = args.timeout_ms.map(Duration::from_millis);
    if args.count == Some(0) {
        bail!("--count 0 prints nothing");
    }
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
        let items = source.poll(wait).await?;
        if !items.is_empty() {
            last_arrival = Instant::now();
        }
        let room = args.count.map_or(items.len(), |c| (c - printed) as usize);
        let n = items.len().min(room);
        let text: String = items[..n]
            .iter()
            .map(|item| format_record(item, &args.format))
            .collect();
        if progress.is_hidden() {
            out.write_all(text.as_bytes()).await?;
            out.flush().await?;
        } else {
            // The bar is on the terminal too: lift it while the records go out.
            progress.suspend(|| write_stdout(&text))?;
            progress.inc(n as u64);
        }
        printed += n as u64;
        source.printed(&items[..n], &items[n..]).await?;
    }
}

fn write_stdout(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

fn format_record(item: &Item, format: &str) -> String {
    let (partition, rec, deliveries) = item.parts();
    if format == "value" {
        return format!("{}\n", String::from_utf8_lossy(&rec.value));
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let headers: serde_json::Map<String, serde_json::Value> = rec
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(text(v))))
        .collect();
    let mut json = serde_json::json!({
        "partition": partition,
        "offset": rec.offset,
        "timestamp": rec.timestamp,
        "key": rec.key.as_ref().map(|k| text(k)),
        "value": text(&rec.value),
        "tags": rec.tags,
        "headers": headers,
    });
    if let Some(n) = deliveries {
        json["delivery_count"] = n.into();
    }
    format!("{json}\n")
}
