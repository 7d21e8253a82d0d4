//! `quiver topic create|list|describe|delete|attach|detach`.

use clap::Subcommand;
use quiver::{NewTopic, TopicDescription};

use crate::args::ConnectArgs;
use crate::plugin::{print_stages, StageArgs};

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        #[arg(long)]
        partitions: Option<u32>,
        #[arg(long)]
        retention_ms: Option<u64>,
        #[arg(long)]
        retention_bytes: Option<u64>,
        #[arg(long)]
        segment_bytes: Option<u64>,
        /// Copies of each partition, on different nodes of a cluster (default: the cluster's
        /// `replication_factor`; a single broker keeps 1).
        #[arg(long)]
        replication_factor: Option<u32>,
        /// In-sync copies an `acks=all` produce needs (default 1).
        #[arg(long)]
        min_insync: Option<u32>,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// List topics (name and partition count).
    List {
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Show a topic's settings, each partition's offsets and size, the records held for delayed
    /// delivery and the ingest pipeline.
    Describe {
        name: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Delete a topic and its data.
    Delete {
        name: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Add a plugin to the topic's ingest pipeline, or swap the stage of the same plugin name in
    /// place (hot swap, e.g. to a new version).
    Attach {
        topic: String,
        // The PLUGIN argument (after TOPIC) and the stage flags.
        #[command(flatten)]
        stage: StageArgs,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Remove a plugin's stage from the topic's ingest pipeline.
    Detach {
        topic: String,
        plugin: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

pub async fn run(cmd: TopicCommand) -> anyhow::Result<()> {
    match cmd {
        TopicCommand::Create {
            name,
            partitions,
            retention_ms,
            retention_bytes,
            segment_bytes,
            replication_factor,
            min_insync,
            conn,
        } => {
            let client = conn.connect().await?;
            let topic = NewTopic {
                name: name.clone(),
                partitions: partitions.unwrap_or(0),
                retention_ms,
                retention_bytes,
                segment_bytes,
                replication_factor,
                min_insync,
            };
            let n = client.admin().create_topic(topic).await?;
            println!("created topic {name} with {n} partition(s)");
            client.close().await;
        }
        TopicCommand::List { conn } => {
            let client = conn.connect().await?;
            for t in client.admin().list_topics().await? {
                println!("{}\t{}", t.name, t.partitions);
            }
            client.close().await;
        }
        TopicCommand::Describe { name, conn } => {
            let client = conn.connect().await?;
            print_description(&client.admin().describe_topic(&name).await?);
            client.close().await;
        }
        TopicCommand::Attach { topic, stage, conn } => {
            let options = stage.try_into()?;
            let client = conn.connect().await?;
            let stages = client.admin().attach_plugin(&topic, options).await?;
            print_stages(&stages);
            client.close().await;
        }
        TopicCommand::Detach {
            topic,
            plugin,
            conn,
        } => {
            let client = conn.connect().await?;
            let stages = client.admin().detach_plugin(&topic, &plugin).await?;
            if stages.is_empty() {
                println!("topic {topic} has no ingest pipeline now");
            } else {
                print_stages(&stages);
            }
            client.close().await;
        }
        TopicCommand::Delete { name, conn } => {
            let client = conn.connect().await?;
            client.admin().delete_topic(&name).await?;
            println!("deleted topic {name}");
            client.close().await;
        }
    }
    Ok(())
}

/// A topic's settings, its partitions' offsets and sizes, records held and the ingest pipeline.
fn print_description(t: &TopicDescription) {
    let opt = |v: Option<u64>| v.map_or("none".to_string(), |v| v.to_string());
    println!(
        "topic {}  partitions {}  retention_ms {}  retention_bytes {}  segment_bytes {}",
        t.name,
        t.partitions.len(),
        opt(t.retention_ms),
        opt(t.retention_bytes),
        t.segment_bytes
    );
    println!("partition\tstart\tend\tsize_bytes\tsegments");
    for p in &t.partitions {
        println!(
            "{}\t{}\t{}\t{}\t{}",
            p.partition, p.log_start, p.log_end, p.size_bytes, p.segments
        );
    }
    if t.pending_delayed > 0 {
        println!("pending delayed: {}", t.pending_delayed);
    }
    if !t.pipeline.is_empty() {
        println!("ingest pipeline:");
        print_stages(&t.pipeline);
    }
}
