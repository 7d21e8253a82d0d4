//! `quiver cert client NAME`: signs a client certificate with the dev CA of a data directory, for
//! mTLS against a broker that uses its dev certificates with `--auth` (the name is the principal).
//! Offline: it reads `<data-dir>/tls/ca.key` and needs no running broker.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use quiver_broker::transport::tls::generate_client_cert;

#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Write NAME.pem and NAME.key (CN = NAME, signed by the dev CA) into --out.
    Client {
        name: String,
        /// The broker's data directory (its dev CA is in tls/).
        #[arg(long, default_value = "./quiver-data")]
        data_dir: PathBuf,
        /// Where to write the certificate and key [default: <data-dir>/clients].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Client {
            name,
            data_dir,
            out,
        } => {
            let out = out.unwrap_or_else(|| data_dir.join("clients"));
            let (cert, key) = generate_client_cert(&data_dir.join("tls"), &name, &out)
                .with_context(|| {
                    format!(
                        "signing a client certificate with the dev CA in {}",
                        data_dir.join("tls").display()
                    )
                })?;
            println!("{}\n{}", cert.display(), key.display());
            eprintln!(
                "connect with --cert {} --key {}",
                cert.display(),
                key.display()
            );
        }
    }
    Ok(())
}
