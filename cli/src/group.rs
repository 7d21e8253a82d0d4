//! `quiver group list|describe|reset`: consumer groups (members, assignment, committed offsets and
//! lag) and queue-mode groups.

use anyhow::bail;
use clap::Subcommand;
use quiver::{GroupDescription, ResetTo};

use crate::args::ConnectArgs;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List groups: live consumer groups, groups with committed offsets, queue-mode groups.
    List {
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Show a group's members, their partitions, and per partition the committed offset and lag.
    Describe {
        group: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Move a group's committed offsets on every partition of a topic (no member may be
    /// consuming the topic).
    Reset {
        group: String,
        #[arg(long)]
        topic: String,
        /// earliest, latest or an offset.
        #[arg(long, value_parser = parse_reset)]
        to: ResetTo,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

fn parse_reset(s: &str) -> Result<ResetTo, String> {
    match s {
        "earliest" => Ok(ResetTo::Earliest),
        "latest" => Ok(ResetTo::Latest),
        _ => s
            .parse()
            .map(ResetTo::Offset)
            .map_err(|_| format!("expected earliest, latest or an offset, got {s:?}")),
    }
}

pub async fn run(cmd: GroupCommand) -> anyhow::Result<()> {
    match cmd {
        GroupCommand::List { conn } => {
            let client = conn.connect().await?;
            let groups = client.admin().list_groups().await?;
            println!(
                "{:<32} {:>8} {:>10}  QUEUE TOPICS",
                "GROUP", "MEMBERS", "COMMITTED"
            );
            for g in groups {
                println!(
                    "{:<32} {:>8} {:>10}  {}",
                    g.name,
                    g.members,
                    g.committed_partitions,
                    g.queue_topics.join(",")
                );
            }
            client.close().await;
        }
        GroupCommand::Describe { group, conn } => {
            let client = conn.connect().await?;
            let d = client.admin().describe_group(&group).await?;
            if d.members.is_empty() && d.partitions.is_empty() && d.queues.is_empty() {
                bail!("group {group:?} has no members, committed offsets or queue state");
            }
            print_description(&d);
            client.close().await;
        }
        GroupCommand::Reset {
            group,
            topic,
            to,
            conn,
        } => {
            let client = conn.connect().await?;
            let offsets = client.admin().reset_group(&group, &topic, to).await?;
            for o in offsets {
                println!("{}/{} -> {}", o.topic, o.partition, o.offset);
            }
            client.close().await;
        }
    }
    Ok(())
}

fn print_description(d: &GroupDescription) {
    println!("group {} (epoch {})", d.name, d.epoch);
    println!("members: {}", d.members.len());
    for m in &d.members {
        let parts: Vec<String> = m.assigned.iter().map(|tp| tp.to_string()).collect();
        println!(
            "  {} client={} topics={} partitions=[{}] last-heartbeat={}ms",
            m.member_id,
            m.client_id,
            m.topics.join(","),
            parts.join(", "),
            m.last_heartbeat_ms_ago
        );
    }
    if !d.partitions.is_empty() {
        println!(
            "{:<24} {:>9} {:>12} {:>12} {:>10}  OWNER",
            "TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG"
        );
        for p in &d.partitions {
            let committed = p.committed.map_or("-".to_string(), |c| c.to_string());
            println!(
                "{:<24} {:>9} {:>12} {:>12} {:>10}  {}",
                p.topic,
                p.partition,
                committed,
                p.log_end,
                p.lag,
                p.owner.as_deref().unwrap_or("-")
            );
        }
    }
    if !d.queues.is_empty() {
        println!(
            "{:<24} {:>9} {:>12} {:>12} {:>8} {:>9} {:>6}  (queue mode)",
            "TOPIC", "PARTITION", "SETTLED-TO", "LOG-END", "LEASED", "WAITING", "DLQ"
        );
        for q in &d.queues {
            println!(
                "{:<24} {:>9} {:>12} {:>12} {:>8} {:>9} {:>6}",
                q.topic, q.partition, q.start, q.log_end, q.leased, q.available, q.dead_lettered
            );
        }
    }
}
