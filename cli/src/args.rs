//! Connection flags shared by every client command, and the connect step.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use quiver::Client;

pub const DEFAULT_CA: &str = "./quiver-data/tls/ca.pem";

#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// Broker address (host:port).
    #[arg(
        long,
        env = "QUIVER_SERVER",
        default_value = "127.0.0.1:7447",
        global = true
    )]
    pub server: String,
    /// CA certificate (PEM) the broker's certificate must chain to; defaults to the dev CA of a broker
    /// started in this directory.
    #[arg(long, env = "QUIVER_CA", global = true)]
    pub ca: Option<PathBuf>,
}

impl ConnectArgs {
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let ca = match &self.ca {
            Some(p) => p.clone(),
            None if std::path::Path::new(DEFAULT_CA).exists() => PathBuf::from(DEFAULT_CA),
            None => bail!("no CA certificate: pass --ca FILE or set QUIVER_CA (a broker started with `quiver serve` writes its dev CA to <data-dir>/tls/ca.pem)"),
        };
        Client::connect(&self.server, &ca)
            .await
            .with_context(|| format!("connecting to {}", self.server))
    }
}
