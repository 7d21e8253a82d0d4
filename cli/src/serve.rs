//! `quiver serve`: load the config, prepare TLS (generating a dev CA on first start), open storage and
//! serve until SIGINT or SIGTERM, then shut down gracefully.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use quiver_broker::config::{ClusterConfig, ClusterMember, LogFormat, TlsFiles};
use quiver_broker::http::HttpServer;
use quiver_broker::transport::tls::{self, TlsPaths, TransportOptions};
use quiver_broker::transport::Server;
use quiver_broker::{Broker, BrokerConfig};
use tokio_util::sync::CancellationToken;

/// How long a graceful stop waits for its partitions to be handed to other nodes.
const HAND_OVER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Where topics, metadata and the dev certificate live [default: ./quiver-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to listen on (UDP) [default: 127.0.0.1:7447].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// HTTP listener for /metrics, /healthz and /readyz (TCP), or `none` [default: 127.0.0.1:7448].
    #[arg(long)]
    http: Option<String>,
    /// Log format on stderr: `text`, or `json` (one object per line, for log shippers)
    /// [default: text].
    #[arg(long, value_name = "text|json")]
    log_format: Option<LogFormat>,
    /// TOML config file; flags override it, it overrides the defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Server certificate chain (PEM); without it a dev CA and certificate are generated.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mTLS). With --auth a certificate is one way
    /// to authenticate (a token the other), so it becomes optional.
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// Authenticate every connection (a token or a client certificate) and enforce ACLs. The
    /// first start creates the user `admin` and writes its token to <data-dir>/admin.token.
    #[arg(long)]
    auth: bool,
    /// Let a listener on a non-loopback address run without authentication (anyone who can
    /// reach it may do anything). Logged as a warning at every start.
    #[arg(long, conflicts_with = "auth")]
    allow_anonymous: bool,
    /// Where a client certificate's principal name comes from: `cn` (subject common name) or
    /// `san` (its first DNS name, e-mail or URI).
    #[arg(long)]
    principal_from: Option<quiver_broker::auth::PrincipalFrom>,
    /// This node's id in a cluster (with --cluster).
    #[arg(long, requires = "cluster")]
    node_id: Option<u64>,
    /// Every member of the cluster, this node included, as ID@HOST:PORT[,...]: the addresses
    /// where the nodes listen for each other (UDP; not the client --listen address).
    #[arg(long, value_delimiter = ',', requires = "node_id")]
    cluster: Vec<ClusterMember>,
    /// A development CA shared by the nodes of a local cluster (created by the first node to
    /// start); each node signs its own certificate with it, and clients use --ca DIR/ca.pem.
    #[arg(long, requires = "cluster")]
    dev_ca: Option<PathBuf>,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let config = build_config(args)?;
    crate::init_tracing(true, config.log_format);
    if !config.listen.ip().is_loopback() && !config.auth.enabled {
        tracing::warn!(listen = %config.listen, "authentication is off on a non-loopback address (--allow-anonymous): anyone who reaches it may do anything");
    }
    tls::install_crypto_provider();
    let paths = tls_paths(&config)?;
    let opts = TransportOptions {
        max_concurrent_streams: config.max_streams_per_connection,
        ..TransportOptions::default()
    };
    let server_config = tls::server_config(&paths, &opts).context("TLS setup")?;
    let (listen, http) = (config.listen, config.http_addr()?);
    let cluster_config = config.cluster.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::open(config))
        .await?
        .context("opening storage")?;
    // Bound before joining (nothing is accepted until it runs): a cluster node announces the
    // address its listener got.
    let server = Server::bind(broker.clone(), listen, server_config)?;
    let cluster = match &cluster_config {
        Some(c) => Some(join_cluster(&broker, c, server.local_addr()?).await?),
        None => None,
    };
    tracing::info!(addr = %server.local_addr()?, "quiver listening (QUIC, ALPN quiver/1)");
    // Mirrors forward this broker's topics to core brokers; they stop before the broker flushes.
    quiver_mirror::start(broker.clone(), server.supervisor());
    let token = server.shutdown_token();
    let stopping = broker.replication().clone();
    let stopping_broker = broker.clone();
    let http = match http {
        Some(addr) => Some(start_http(addr, broker, token.clone()).await?),
        None => None,
    };
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: shutting down gracefully");
        // On a cluster, the partitions this node leads go to other nodes first.
        stopping_broker.hand_over(HAND_OVER_WAIT).await;
        token.cancel();
    });
    server.run().await?;
    if let Some(cluster) = cluster {
        stopping.shutdown();
        cluster.shutdown().await;
    }
    // Answered (not ready) while the broker drained; stopped once it has.
    if let Some((stop, task)) = http {
        stop.cancel();
        task.await??;
    }
    Ok(())
}

/// Joins the cluster's metadata group, its peer links proven by this node's certificates.
async fn join_cluster(
    broker: &std::sync::Arc<Broker>,
    config: &ClusterConfig,
    listening: SocketAddr,
) -> anyhow::Result<std::sync::Arc<quiver_broker::cluster::Cluster>> {
    let (cert, key, ca) = match (&config.peer_tls, &config.dev_ca) {
        (Some(p), _) => (p.cert.clone(), p.key.clone(), p.ca.clone()),
        (None, Some(dir)) => {
            let dev = cluster_dev_certs(dir, &broker.config().data_dir, config.node_id)?;
            (dev.cert_path, dev.key_path, dev.ca_pem_path)
        }
        (None, None) => {
            anyhow::bail!("cluster nodes need certificates: --dev-ca DIR or [cluster.peer_tls]")
        }
    };
    let (server, client) = tls::peer_configs(&cert, &key, &ca).context("peer TLS setup")?;
    broker
        .join_cluster(config, (server, client), listening)
        .await
        .context("joining the cluster")
}

fn cluster_dev_certs(
    dir: &std::path::Path,
    data_dir: &std::path::Path,
    node_id: u64,
) -> anyhow::Result<tls::DevCerts> {
    tls::ensure_cluster_dev_certs(dir, data_dir, node_id).with_context(|| {
        format!(
            "preparing node {node_id}'s certificate from the dev CA in {}",
            dir.display()
        )
    })
}

type HttpTask = tokio::task::JoinHandle<std::io::Result<()>>;

/// Starts the HTTP listener; its token stops it.
async fn start_http(
    addr: SocketAddr,
    broker: std::sync::Arc<Broker>,
    shutting_down: CancellationToken,
) -> anyhow::Result<(CancellationToken, HttpTask)> {
    let http = HttpServer::bind(addr, broker, shutting_down).await?;
    tracing::info!(http = %http.local_addr()?, "HTTP listening: console /, /metrics, /healthz, /readyz");
    let stop = CancellationToken::new();
    let task = tokio::spawn(http.run(stop.clone()));
    Ok((stop, task))
}

fn build_config(args: ServeArgs) -> anyhow::Result<BrokerConfig> {
    let mut config = BrokerConfig::load(args.config.as_deref())?;
    if let Some(d) = args.data_dir {
        config.data_dir = d;
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(h) = args.http {
        config.http = h;
    }
    if let Some(f) = args.log_format {
        config.log_format = f;
    }
    config.auth.enabled |= args.auth;
    config.auth.allow_anonymous |= args.allow_anonymous;
    if let Some(p) = args.principal_from {
        config.auth.principal_from = p;
    }
    if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
        config.tls = Some(TlsFiles {
            cert,
            key,
            client_ca: args.client_ca,
        });
    } else if let (Some(tls), Some(ca)) = (config.tls.as_mut(), args.client_ca) {
        tls.client_ca = Some(ca);
    }
    if let Some(node_id) = args.node_id {
        // Flags name the node and its members; the rest keeps what the file said.
        let mut cluster = config
            .cluster
            .take()
            .unwrap_or_else(|| ClusterConfig::new(node_id, Vec::new()));
        cluster.node_id = node_id;
        cluster.members = args.cluster;
        if args.dev_ca.is_some() {
            cluster.dev_ca = args.dev_ca;
        }
        config.cluster = Some(cluster);
    }
    config.validate()?;
    Ok(config)
}

fn tls_paths(config: &BrokerConfig) -> anyhow::Result<TlsPaths> {
    if let Some(t) = &config.tls {
        return Ok(TlsPaths {
            cert: t.cert.clone(),
            key: t.key.clone(),
            ca: t.client_ca.clone(),
            client_cert_optional: config.auth.enabled,
        });
    }
    // A node of a local cluster serves its clients with its node certificate, so one CA file
    // (the shared dev CA) lets a client talk to any node.
    let dev = match config
        .cluster
        .as_ref()
        .and_then(|c| Some((c.dev_ca.as_ref()?, c.node_id)))
    {
        Some((dir, id)) => cluster_dev_certs(dir, &config.data_dir, id)?,
        None => {
            tls::ensure_dev_certs(&config.data_dir).context("preparing the dev TLS certificate")?
        }
    };
    let verb = if dev.generated { "generated" } else { "using" };
    tracing::info!(ca = %dev.ca_pem_path.display(), "{verb} dev CA: clients verify the broker with --ca {}", dev.ca_pem_path.display());
    // With authentication on, clients may also prove who they are with a certificate the dev
    // CA signed (`quiver cert client NAME`).
    let ca = config.auth.enabled.then(|| dev.ca_pem_path.clone());
    Ok(TlsPaths {
        ca,
        client_cert_optional: true,
        ..dev.tls_paths()
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
