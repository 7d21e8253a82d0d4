//! The broker's HTTP listener (axum): `/metrics` (Prometheus, OpenMetrics text, see
//! [`metrics`]), `/healthz` (the process is up), `/readyz` (storage is open and the QUIC
//! listener accepts; 503 once a shutdown has begun), for scrapers and orchestrator probes, and the
//! web console at `/` with its JSON API under `/api/` (see [`console`]). A thin driver like the
//! QUIC transport: what it reports is read from the broker on each request. With authentication
//! on, every path but the console's sign-in page and static assets needs a token with `describe`
//! on the cluster ([`console::access`]).

pub mod console;
pub mod metrics;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::Broker;

/// Why the HTTP listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {addr}: {source}")]
pub struct HttpError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// What every handler of the listener reads.
#[derive(Clone)]
pub struct Shared {
    pub(crate) broker: Arc<Broker>,
    metrics: Arc<metrics::Metrics>,
    /// The QUIC server's shutdown token: once cancelled the broker is no longer ready.
    shutting_down: CancellationToken,
}

/// A bound HTTP listener, serving once [`HttpServer::run`] is called.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    shared: Shared,
}

impl HttpServer {
    /// Binds `addr` (port 0 picks a free port). `shutting_down` is the QUIC server's shutdown
    /// token: readiness turns false when it is cancelled, while the listener keeps answering.
    pub async fn bind(
        addr: SocketAddr,
        broker: Arc<Broker>,
        shutting_down: CancellationToken,
    ) -> Result<HttpServer, HttpError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError { addr, source })?;
        let metrics = Arc::new(metrics::Metrics::new(broker.clone()));
        Ok(HttpServer {
            listener,
            shared: Shared {
                broker,
                metrics,
                shutting_down,
            },
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` is cancelled (after the broker has shut down, so `/readyz` can say
    /// so while it drains). Peer addresses are kept for the sign-in back-off.
    pub async fn run(self, stop: CancellationToken) -> std::io::Result<()> {
        let probes = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(scrape));
        let app = console::routes(probes, self.shared.clone()).with_state(self.shared);
        axum::serve(
            self.listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Shared>) -> (StatusCode, &'static str) {
    if s.shutting_down.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n");
    }
    // A cluster node without a leader cannot take admin writes (a majority is down, or an
    // election is running).
    let leaderless = s
        .broker
        .cluster()
        .is_some_and(|c| c.status().leader.is_none());
    match leaderless {
        true => (StatusCode::SERVICE_UNAVAILABLE, "no Raft leader\n"),
        false => (StatusCode::OK, "ready\n"),
    }
}

/// Encodes the metrics on the blocking pool: a scrape reads every partition's stats and every
/// plugin stage, which may wait on their locks.
async fn scrape(State(s): State<Shared>) -> Response {
    let metrics = s.metrics.clone();
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}
