//! `quiver cert client NAME`: signs a client certificate with the dev CA of a data directory, for
//! mTLS against a broker that uses its dev certificates with `--auth` (the name is the principal).
//! Offline: it reads `<data-dir>/tls/ca.key` (or, for the nodes of a local cluster, the shared
//! `--dev-ca DIR`) and needs no running broker.

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
        /// Sign with the dev CA a local cluster shares (`quiver serve --dev-ca DIR`) instead of a
        /// data directory's; every node of the cluster then accepts the certificate.
        #[arg(long)]
        dev_ca: Option<PathBuf>,
    },
}

pub fn run(cmd: CertCommand) -> anyhow::Result<()> {
    match cmd {
        CertCommand::Client {
            name,
            data_dir,
            out,
            dev_ca,
        } => {
            let out = out.unwrap_or_else(|| data_dir.join("clients"));
            let ca_dir = dev_ca.unwrap_or_else(|| data_dir.join("tls"));
            let (cert, key) = generate_client_cert(&ca_dir, &name, &out).with_context(|| {
                format!(
                    "signing a client certificate with the dev CA in {}",
                    ca_dir.display()
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
