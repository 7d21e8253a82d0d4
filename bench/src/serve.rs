//! `internal-serve`: the Quiver broker as its own process, so that its peak RSS is the broker's alone
//! (read from /proc like the peers'). The harness re-executes its own binary with this hidden
//! subcommand; it prints one `READY <addr> <ca.pem>` line on stdout once it accepts connections, then
//! serves until SIGTERM, on which it drains and flushes like `quiver serve` (a graceful stop: the
//! start-up workload restarts on the data), or SIGKILL.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use quiver_broker::http::HttpServer;
use quiver_broker::transport::tls::{self, TransportOptions};
use quiver_broker::transport::Server;
use quiver_broker::{Broker, BrokerConfig};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// The line prefix the harness waits for.
pub const READY: &str = "READY";

pub async fn run(data_dir: &Path, listen: SocketAddr, auth: bool, metrics: bool) -> Result<()> {
    tls::install_crypto_provider();
    let mut config = BrokerConfig {
        data_dir: data_dir.to_owned(),
        listen,
        ..BrokerConfig::default()
    };
    // With auth, the admin token is in <data-dir>/admin.token for the harness to read.
    config.auth.enabled = auth;
    config.validate()?;
    let dev = tls::ensure_dev_certs(data_dir).context("dev TLS certificate")?;
    let options = TransportOptions {
        max_concurrent_streams: config.max_streams_per_connection,
        ..TransportOptions::default()
    };
    let server_config = tls::server_config(&dev.tls_paths(), &options).context("TLS setup")?;
    let broker = tokio::task::spawn_blocking(move || Broker::open(config))
        .await?
        .context("opening storage")?;
    // The HTTP listener always runs (idle unless scraped): the driver reads the fsync count
    // from /metrics after an acks=all run. Its address goes to a file beside the data.
    let stop = CancellationToken::new();
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let http = HttpServer::bind(loopback, broker.clone(), stop.clone()).await?;
    let http_addr = http.local_addr()?;
    std::fs::write(data_dir.join(HTTP_ADDR_FILE), http_addr.to_string())?;
    tokio::spawn(http.run(stop));
    if metrics {
        scrape_every_second(http_addr);
    }
    let server = Server::bind(broker.clone(), listen, server_config)?;
    // An edge broker of the mirror workload forwards to its core.
    quiver_mirror::start(broker, server.supervisor());
    let addr = server.local_addr()?;
    let token = server.shutdown_token();
    tokio::spawn(async move {
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            term.recv().await;
            token.cancel();
        }
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY} {addr} {}", dev.ca_pem_path.display())?;
    out.flush()?;
    drop(out);
    server.run().await?;
    Ok(())
}

/// Where `internal-serve` writes its HTTP listener's address, in its data directory.
pub const HTTP_ADDR_FILE: &str = "bench-http.addr";

/// Reads `/metrics` every second in this process, for `--metrics` (its small client-side cost is
/// counted against Quiver, not for it).
fn scrape_every_second(addr: SocketAddr) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Err(e) = scrape(addr).await {
                eprintln!("scrape failed: {e}");
            }
        }
    });
}

/// One `GET /metrics`, read to the end: the response, headers included.
pub async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    s.write_all(request.as_bytes()).await?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}
