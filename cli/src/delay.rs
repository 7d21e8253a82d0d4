//! `quiver delay cancel ID`: records produced with `--delay-ms` or `--deliver-at` are held by the
//! broker until due; `produce` prints their ids.

use clap::Subcommand;

use crate::args::ConnectArgs;

#[derive(Subcommand, Debug)]
pub enum DelayCommand {
    /// Cancel a record held for delayed delivery (fails if it was delivered or cancelled already).
    Cancel {
        /// The id `quiver produce` printed.
        id: u64,
        #[command(flatten)]
        conn: ConnectArgs,
    },
}

pub async fn run(cmd: DelayCommand) -> anyhow::Result<()> {
    match cmd {
        DelayCommand::Cancel { id, conn } => {
            let client = conn.connect().await?;
            let topic = client.admin().cancel_delayed(id).await?;
            println!("cancelled delayed record {id} (for topic {topic})");
            client.close().await;
        }
    }
    Ok(())
}
