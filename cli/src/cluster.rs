//! `quiver cluster status`: a cluster node's view of its cluster (members, Raft leader, term).

use clap::Subcommand;

use crate::args::ConnectArgs;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Members, the Raft leader and term, and how far each member has the metadata log.
    Status {
        #[command(flatten)]
        conn: ConnectArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Status { conn, json } = cmd;
    let client = conn.connect().await?;
    let status = client.admin().cluster_status().await?;
    client.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let leader = status.leader.map_or_else(
        || "none (election in progress)".to_string(),
        |l| l.to_string(),
    );
    println!(
        "node {}: Raft leader {leader}, term {}, metadata applied up to {}",
        status.node_id, status.term, status.applied
    );
    println!(
        "{:<6} {:<24} {:<24} {:<8} {:<8}",
        "NODE", "PEER ADDRESS", "CLIENT ADDRESS", "ROLE", "MATCHED"
    );
    for n in &status.nodes {
        let role = match (Some(n.id) == status.leader, n.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        let matched = n.matched.map_or_else(|| "-".to_string(), |m| m.to_string());
        let client = n.client_addr.as_deref().unwrap_or("-");
        println!(
            "{:<6} {:<24} {:<24} {:<8} {:<8}",
            n.id, n.addr, client, role, matched
        );
    }
    print_partitions(&status.partitions);
    Ok(())
}

/// Each replicated partition's leader, epoch, replicas and in-sync replicas.
fn print_partitions(partitions: &[quiver::PartitionReplicas]) {
    if partitions.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<24} {:<5} {:<7} {:<6} {:<12} {:<12} {:<4} HW",
        "TOPIC", "PART", "LEADER", "EPOCH", "REPLICAS", "ISR", "MIN"
    );
    let ids = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    for p in partitions {
        let leader = p
            .leader
            .map_or_else(|| "none".to_string(), |l| l.to_string());
        let hw = p
            .high_watermark
            .map_or_else(|| "-".to_string(), |h| h.to_string());
        println!(
            "{:<24} {:<5} {:<7} {:<6} {:<12} {:<12} {:<4} {hw}",
            p.topic,
            p.partition,
            leader,
            p.epoch,
            ids(&p.replicas),
            ids(&p.isr),
            p.min_insync
        );
    }
}
