//! Connection flags shared by every client command, and the connect step.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use quiver::{Client, ClientOptions};

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
    /// Token to authenticate with (a broker started with --auth; `quiver user create` prints one).
    #[arg(long, env = "QUIVER_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// Client certificate (PEM) for mTLS; its name is the principal (`quiver cert client NAME`).
    #[arg(long, env = "QUIVER_CERT", global = true, requires = "cert_key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert. (`--key` is taken: `produce --key` is the record key.)
    #[arg(long, env = "QUIVER_KEY", global = true, requires = "cert")]
    pub cert_key: Option<PathBuf>,
}

impl ConnectArgs {
    pub async fn connect(&self) -> anyhow::Result<Client> {
        let ca = match &self.ca {
            Some(p) => p.clone(),
            None if std::path::Path::new(DEFAULT_CA).exists() => PathBuf::from(DEFAULT_CA),
            None => bail!("no CA certificate: pass --ca FILE or set QUIVER_CA (a broker started with `quiver serve` writes its dev CA to <data-dir>/tls/ca.pem)"),
        };
        let mut options = ClientOptions::new(&self.server, ca);
        // An empty QUIVER_TOKEN is no token (a script that exports it unset).
        options.token = self.token.clone().filter(|t| !t.trim().is_empty());
        options.client_cert = self.cert.clone().zip(self.cert_key.clone());
        Client::connect_with(options)
            .await
            .with_context(|| format!("connecting to {}", self.server))
    }
}
