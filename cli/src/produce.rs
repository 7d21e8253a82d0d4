//! `quiver produce TOPIC` / `quiver produce --exchange NAME`: one record per line of standard input
//! (to a topic, or routed by an exchange with `--key` as the routing key); exits 0 only when every
//! record was acknowledged. With `--delay-ms` or `--deliver-at` the broker holds the records and
//! appends them when due; the command then prints how many were held and their ids (for
//! `quiver delay cancel`).

use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use quiver::{Acks, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
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
    /// Delayed delivery: the broker holds every record and appends it MS milliseconds after it
    /// received it.
    #[arg(long, value_name = "MS", conflicts_with = "deliver_at")]
    delay_ms: Option<u64>,
    /// Delayed delivery: the broker holds every record and appends it at this time (ms since the
    /// Unix epoch).
    #[arg(long, value_name = "MS")]
    deliver_at: Option<i64>,
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
    let started_ms = now_ms();
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
    let input_bytes = crate::progress::stdin_file_len();
    let progress = crate::progress::produce(input_bytes);
    while let Some(line) = lines.next_line().await.context("reading standard input")? {
        match input_bytes {
            Some(_) => progress.inc(line.len() as u64 + 1),
            None => progress.inc(1),
        }
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
        if let Some(ms) = args.delay_ms {
            rec = rec.delay(Duration::from_millis(ms));
        } else if let Some(at) = args.deliver_at {
            rec = rec.deliver_at(at);
        }
        deliveries.push(
            producer
                .send(rec)
                .await
                .with_context(|| format!("producing to {target}"))?,
        );
    }
    progress.set_message("waiting for acknowledgements");
    let flushed = producer.flush().await;
    let total = deliveries.len();
    let mut failed = 0usize;
    let mut first_error = None;
    let mut acked = Vec::new();
    for d in deliveries {
        match d.wait().await {
            Ok(m) => acked.push(m),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    progress.finish_and_clear();
    if let Some(due) = due(&args, started_ms) {
        report_held(&acked, &due);
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

/// When the held records are due, as printed: `at TIME` or `in MS ms (at about TIME)`.
fn due(args: &ProduceArgs, now: i64) -> Option<String> {
    match (args.delay_ms, args.deliver_at) {
        (Some(ms), _) => {
            let at = now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX));
            Some(format!("in {ms} ms (at about {})", format_ms(at)))
        }
        (None, Some(at)) => Some(format!("at {}", format_ms(at))),
        (None, None) => None,
    }
}

/// Prints, on stdout, `held N record(s) for delayed delivery (ids A..B), due DUE`, and a second
/// line for acknowledged records the broker reported no id for.
fn report_held(acked: &[RecordMetadata], due: &str) {
    let mut ids: Vec<u64> = acked.iter().filter_map(|m| m.delay_id).collect();
    let unknown = acked.len() - ids.len();
    ids.sort_unstable();
    if !ids.is_empty() {
        let (noun, label) = if ids.len() == 1 {
            ("record", "id")
        } else {
            ("records", "ids")
        };
        println!(
            "held {} {noun} for delayed delivery ({label} {}), due {due}",
            ids.len(),
            id_ranges(&ids)
        );
    }
    if unknown > 0 {
        let noun = if unknown == 1 { "record" } else { "records" };
        println!(
            "{unknown} {noun} sent for delayed delivery, due {due}, without a delay id (acks=none, \
             or the records were transformed by an ingest pipeline or routed by an exchange)"
        );
    }
}

/// Sorted ids as inclusive ranges: `17..19, 25`.
fn id_ranges(ids: &[u64]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}..{end}")
        });
        i += 1;
    }
    out.join(", ")
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Ms since the epoch as UTC RFC 3339 with milliseconds (`2025-01-31T12:00:00.000Z`).
pub fn format_ms(ms: i64) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_formatted_in_utc() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(format_ms(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
        assert_eq!(format_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn ids_are_printed_as_ranges() {
        assert_eq!(id_ranges(&[17, 18, 19]), "17..19");
        assert_eq!(id_ranges(&[4]), "4");
        assert_eq!(id_ranges(&[1, 2, 5, 7, 8]), "1..2, 5, 7..8");
    }
}
