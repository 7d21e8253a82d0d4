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
        "{:<6} {:<24} {:<8} {:<8}",
        "NODE", "PEER ADDRESS", "ROLE", "MATCHED"
    );
    for n in &status.nodes {
        let role = match (Some(n.id) == status.leader, n.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "learner",
        };
        let matched = n.matched.map_or_else(|| "-".to_string(), |m| m.to_string());
        println!("{:<6} {:<24} {:<8} {:<8}", n.id, n.addr, role, matched);
    }
    Ok(())
}
