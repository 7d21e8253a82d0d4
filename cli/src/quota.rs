//! `quiver quota set|list|remove`: byte-rate and connection quotas per principal, set at runtime
//! over the config file's `[quotas]` (docs/security.md). Over a byte rate the broker throttles.

use clap::{Args, Subcommand};
use quiver::{PrincipalQuota, Quota};

use crate::args::ConnectArgs;

#[derive(Subcommand, Debug)]
pub enum QuotaCommand {
    /// Set (replace) a principal's quota; unset limits are unlimited. `--principal '*'` sets the
    /// default for every principal without a quota of its own.
    Set(SetArgs),
    /// Every quota in force (the config file's and those set here; `*` is the default).
    List {
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Remove a quota set here: the config file's, or the default, applies again.
    Remove {
        #[arg(long)]
        principal: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

#[derive(Args, Debug)]
pub struct SetArgs {
    #[arg(long)]
    principal: String,
    /// Produce bytes per second (request payloads).
    #[arg(long)]
    produce_bytes_per_sec: Option<u64>,
    /// Fetch bytes per second (record bytes answered).
    #[arg(long)]
    fetch_bytes_per_sec: Option<u64>,
    /// Connections open at once.
    #[arg(long)]
    connections: Option<u32>,
    #[command(flatten)]
    conn: ConnectArgs,
}

pub async fn run(cmd: QuotaCommand) -> anyhow::Result<()> {
    let (conn, quotas) = match cmd {
        QuotaCommand::Set(a) => {
            let quota = Quota {
                produce_bytes_per_sec: a.produce_bytes_per_sec,
                fetch_bytes_per_sec: a.fetch_bytes_per_sec,
                connections: a.connections,
            };
            let client = a.conn.connect().await?;
            let quotas = client.admin().set_quota(&a.principal, quota).await;
            (client, quotas)
        }
        QuotaCommand::List { conn } => {
            let client = conn.connect().await?;
            let quotas = client.admin().list_quotas().await;
            (client, quotas)
        }
        QuotaCommand::Remove { principal, conn } => {
            let client = conn.connect().await?;
            let quotas = client.admin().remove_quota(&principal).await;
            (client, quotas)
        }
    };
    conn.close().await;
    for q in quotas? {
        println!("{}", line(&q));
    }
    Ok(())
}

fn line(q: &PrincipalQuota) -> String {
    let show = |v: Option<u64>| v.map_or("unlimited".to_owned(), |n| n.to_string());
    format!(
        "{}\tproduce {} B/s\tfetch {} B/s\tconnections {}",
        q.principal,
        show(q.quota.produce_bytes_per_sec),
        show(q.quota.fetch_bytes_per_sec),
        show(q.quota.connections.map(u64::from)),
    )
}
