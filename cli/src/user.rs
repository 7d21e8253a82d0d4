//! `quiver user create|list|delete` and `quiver whoami`: token users of a broker started with
//! `--auth` (docs/security.md).

use clap::Subcommand;

use crate::args::ConnectArgs;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create a user; prints its token on one line of stdout, the only time it is shown.
    Create {
        /// The principal name ACL rules use.
        name: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// List the token users (names and creation times; never tokens).
    List {
        #[command(flatten)]
        conn: ConnectArgs,
    },
    /// Delete a user: its token stops working and its open connections are closed.
    Delete {
        name: String,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

pub async fn run(cmd: UserCommand) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Create { name, conn } => {
            let client = conn.connect().await?;
            let token = client.admin().create_user(&name).await?;
            println!("{token}");
            eprintln!("created user {name}: keep the token above, it is not shown again");
            client.close().await;
        }
        UserCommand::List { conn } => {
            let client = conn.connect().await?;
            for u in client.admin().list_users().await? {
                println!("{}\tcreated {}", u.name, u.created_ms);
            }
            client.close().await;
        }
        UserCommand::Delete { name, conn } => {
            let client = conn.connect().await?;
            let closed = client.admin().delete_user(&name).await?;
            println!("deleted user {name} ({closed} open connections closed)");
            client.close().await;
        }
    }
    Ok(())
}

/// `quiver whoami`: the principal the broker sees for these credentials.
pub async fn whoami(conn: ConnectArgs) -> anyhow::Result<()> {
    let client = conn.connect().await?;
    let (principal, auth) = client.admin().whoami().await?;
    let checks = if auth {
        "ACLs enforced"
    } else {
        "authentication off"
    };
    println!("{principal} ({checks})");
    client.close().await;
    Ok(())
}
