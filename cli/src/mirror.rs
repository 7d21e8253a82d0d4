//! `quiver mirror add|list|describe|remove`, run against an edge broker: forward its topics to a
//! core broker (docs/mirroring.md). `add` takes the core's address and credentials as `--to`,
//! `--ca`, `--token` / `--cert --key`, so the edge's own connection is named by `--server` and the
//! environment (QUIVER_CA, QUIVER_TOKEN, ...) or the `--edge-*` flags.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use quiver::{MirrorDirection, MirrorInfo, MirrorSpec, MirrorStart, MirrorState};

use crate::args::ConnectArgs;

#[derive(Subcommand, Debug)]
pub enum MirrorCommand {
    /// Forward topics of this (edge) broker to a core broker; replaces a mirror of the same name
    /// (which resumes where it was).
    Add(Box<AddArgs>),
    /// Every mirror with its state and lag.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// A mirror's state, lag and counters per forwarded partition.
    Describe {
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Stop a mirror and forget its positions.
    Remove {
        name: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    name: String,
    /// The core broker (host:port; the host must be the name in its certificate).
    #[arg(long)]
    to: String,
    /// CA certificate (PEM) the core's certificate must chain to.
    #[arg(long)]
    ca: PathBuf,
    /// Token the core knows this edge by (a core started with --auth).
    #[arg(long, conflicts_with = "cert")]
    token: Option<String>,
    /// Client certificate (PEM) for mTLS to the core.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Topics to forward: a name, or a pattern with `*` such as `sensors.*`.
    #[arg(long)]
    topics: String,
    /// Prefix of the topic names on the core (`site-17.`); without it the names are kept and
    /// several edges merge into one topic, told apart by the quiver-mirror-source header.
    #[arg(long = "as", value_name = "PREFIX")]
    prefix: Option<String>,
    /// Where partitions that exist now start: `earliest` (all that is retained) or `latest`.
    /// Topics created later are forwarded from their beginning.
    #[arg(long, default_value = "earliest")]
    from: MirrorStart,
    /// `push` forwards this broker's topics to the core; `pull` the core's topics matching
    /// --topics to this broker (configuration or command topics for the edge), named with --as.
    #[arg(long, default_value = "push")]
    direction: MirrorDirection,
    /// This edge's name in the source header [default: an id the broker generated once].
    #[arg(long)]
    source_id: Option<String>,
    /// The edge broker to configure (host:port).
    #[arg(long, env = "QUIVER_SERVER", default_value = "127.0.0.1:7447")]
    server: String,
    /// CA of the edge broker [default: the dev CA of a broker started in this directory].
    #[arg(long, env = "QUIVER_CA")]
    edge_ca: Option<PathBuf>,
    /// Token for the edge broker.
    #[arg(long, env = "QUIVER_TOKEN", hide_env_values = true)]
    edge_token: Option<String>,
    /// Client certificate for the edge broker.
    #[arg(long, env = "QUIVER_CERT", requires = "edge_cert_key")]
    edge_cert: Option<PathBuf>,
    #[arg(long, env = "QUIVER_KEY", requires = "edge_cert")]
    edge_cert_key: Option<PathBuf>,
}

pub async fn run(cmd: MirrorCommand) -> anyhow::Result<()> {
    match cmd {
        MirrorCommand::Add(a) => add(*a).await,
        MirrorCommand::List { json, conn } => {
            let client = conn.connect().await?;
            let mirrors = client.admin().list_mirrors().await;
            client.close().await;
            let mirrors = mirrors?;
            if json {
                println!("{}", serde_json::to_string_pretty(&mirrors)?);
            } else if mirrors.is_empty() {
                println!("no mirrors");
            }
            for m in mirrors.iter().filter(|_| !json) {
                println!("{}", summary(m));
            }
            Ok(())
        }
        MirrorCommand::Describe { name, json, conn } => {
            let client = conn.connect().await?;
            let info = client.admin().describe_mirror(&name).await;
            client.close().await;
            let info = info?;
            if json {
                println!("{}", serde_json::to_string_pretty(&info)?);
            } else {
                print!("{}", describe(&info));
            }
            Ok(())
        }
        MirrorCommand::Remove { name, conn } => {
            let client = conn.connect().await?;
            let removed = client.admin().remove_mirror(&name).await;
            client.close().await;
            removed?;
            println!("removed mirror {name}");
            Ok(())
        }
    }
}

async fn add(a: AddArgs) -> anyhow::Result<()> {
    let spec = MirrorSpec {
        name: a.name,
        to: a.to,
        topics: a.topics,
        prefix: a.prefix,
        from: a.from,
        direction: a.direction,
        source_id: a.source_id,
        ca_pem: read(&a.ca)?,
        token: a.token,
        cert_pem: a.cert.as_deref().map(read).transpose()?,
        key_pem: a.key.as_deref().map(read).transpose()?,
    };
    let conn = ConnectArgs {
        server: a.server,
        ca: a.edge_ca,
        token: a.edge_token,
        cert: a.edge_cert,
        cert_key: a.edge_cert_key,
    };
    let client = conn.connect().await?;
    let info = client.admin().add_mirror(spec).await;
    client.close().await;
    let info = info?;
    let way = match info.direction {
        MirrorDirection::Push => "forwards",
        MirrorDirection::Pull => "pulls the core's",
    };
    println!(
        "mirror {} {way} {} {} {} as {} (source id {})",
        info.name,
        info.topics,
        if info.direction == MirrorDirection::Pull {
            "from"
        } else {
            "to"
        },
        info.to,
        info.prefix
            .as_deref()
            .map_or("the same names".to_owned(), |p| format!("{p}<topic>")),
        info.source_id
    );
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn state(s: &MirrorState) -> String {
    match s {
        MirrorState::Starting => "starting".into(),
        MirrorState::Connecting => "connecting".into(),
        MirrorState::Connected { .. } => "connected".into(),
        MirrorState::BackingOff {
            error,
            retry_in_ms,
            attempts,
        } => format!("backing off (attempt {attempts}, retry in {retry_in_ms} ms): {error}"),
        MirrorState::Stopped => "stopped".into(),
    }
}

fn summary(m: &MirrorInfo) -> String {
    format!(
        "{}\t{} -> {}\t{}\tlag {} records / {} ms\t{} rec/s\tdropped {}",
        m.name,
        m.topics,
        m.to,
        state(&m.state),
        m.lag_records(),
        m.lag_ms(),
        m.records_per_sec,
        m.dropped_by_retention()
    )
}

fn describe(m: &MirrorInfo) -> String {
    let mut out = format!(
        "mirror {} ({})\n  to:          {} (auth: {}{})\n  topics:      {} -> {}\n  source id:   {}\n  state:       {}\n  sessions:    {}\n  rate:        {} records/s\n  lag:         {} records, {} ms\n  dropped:     {} (removed by retention before they were forwarded)\n",
        m.name,
        match m.direction {
            MirrorDirection::Push => "push: this broker's topics to the core",
            MirrorDirection::Pull => "pull: the core's topics to this broker",
        },
        m.to,
        m.auth,
        if m.from_config { ", from the config file" } else { "" },
        m.topics,
        m.prefix.as_deref().map_or("same names".to_owned(), |p| format!("{p}<topic>")),
        m.source_id,
        state(&m.state),
        m.sessions,
        m.records_per_sec,
        m.lag_records(),
        m.lag_ms(),
        m.dropped_by_retention(),
    );
    out.push_str("  partition\t-> core\tnext\tend\tlag\tlag ms\tforwarded\tbytes\tdropped\n");
    for p in &m.partitions {
        out.push_str(&format!(
            "  {}/{}\t{}/{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            p.topic,
            p.partition,
            p.target_topic,
            p.target_partition,
            p.next_offset,
            p.log_end,
            p.lag_records,
            p.lag_ms,
            p.forwarded_records,
            p.forwarded_bytes,
            p.dropped_by_retention
        ));
    }
    out
}
