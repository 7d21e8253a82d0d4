//! The QUIC listener: accepts connections (up to a limit), runs the Hello handshake, and hands each
//! bidirectional stream to `stream.rs`. Every task it starts belongs to the broker's supervisor,
//! so shutdown is one path: stop accepting, let in-flight requests finish, stop background work,
//! then flush and fsync every partition.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quiver_proto::frame::FrameKind;
use quiver_proto::messages::{Hello, HelloOk, PROTOCOL_VERSION};
use quiver_proto::ErrorCode;
use quiver_wire::{write_error, write_frame, FrameReader, WireError};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::allowance::StreamAllowance;
use super::stream;
use crate::auth::Principal;
use crate::broker::Broker;
use crate::error::BrokerError;
use crate::offload;
use crate::supervisor::Supervisor;

/// Errors that stop the server itself (not a single request).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start background work: {0}")]
    Start(BrokerError),
    #[error("flushing storage at shutdown failed: {0}")]
    Flush(BrokerError),
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest wait failed authentication imposes (auth/backoff.rs), twice: before and after.
const MAX_AUTH_WAIT: Duration = Duration::from_secs(20);

pub struct Server {
    endpoint: quinn::Endpoint,
    broker: Arc<Broker>,
    supervisor: Supervisor,
    connections: Arc<Semaphore>,
}

impl Server {
    /// Binds the QUIC endpoint (port 0 picks a free port).
    pub fn bind(
        broker: Arc<Broker>,
        listen: SocketAddr,
        tls: quinn::ServerConfig,
    ) -> Result<Server, ServerError> {
        let bind_err = |source| ServerError::Bind {
            addr: listen,
            source,
        };
        let endpoint = quiver_wire::packets::endpoint(
            listen,
            quinn::EndpointConfig::default(),
            Some(tls),
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(bind_err)?;
        let connections = Arc::new(Semaphore::new(broker.config().max_connections));
        Ok(Server {
            endpoint,
            broker,
            supervisor: Supervisor::new(),
            connections,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Cancelling this token starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.supervisor.token()
    }

    /// The supervisor of the connections and background work: work spawned on it is cancelled and
    /// waited for before the broker flushes at shutdown (the mirrors' forwarding tasks).
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }

    /// Starts the broker's background work, serves until the shutdown token is cancelled, then
    /// drains and flushes.
    pub async fn run(self) -> Result<(), ServerError> {
        self.broker
            .start(&self.supervisor)
            .map_err(ServerError::Start)?;
        let token = self.supervisor.token();
        loop {
            tokio::select! {
                _ = token.cancelled() => break,
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => self.admit(incoming),
                    None => break,
                },
            }
        }
        self.drain().await
    }

    fn admit(&self, incoming: quinn::Incoming) {
        let permit = self.connections.clone().try_acquire_owned();
        let (broker, supervisor) = (self.broker.clone(), self.supervisor.clone());
        self.supervisor.spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => return tracing::debug!(error = %e, "handshake failed"),
            };
            let Ok(_permit) = permit else {
                tracing::warn!(remote = %conn.remote_address(), "connection limit reached; refusing");
                return conn.close(close_code(ErrorCode::ServerBusy), b"server busy: connection limit reached");
            };
            serve_connection(conn, broker, supervisor).await;
        });
    }

    async fn drain(self) -> Result<(), ServerError> {
        tracing::info!("shutting down: draining in-flight requests");
        let grace = Duration::from_millis(self.broker.config().shutdown_grace_ms);
        if !self.supervisor.shutdown(grace).await {
            tracing::warn!("in-flight requests did not finish within {grace:?}");
        }
        let broker = self.broker.clone();
        offload::blocking(move || broker.flush())
            .await
            .map_err(ServerError::Flush)?;
        self.endpoint
            .close(close_code(ErrorCode::ShuttingDown), b"server shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        tracing::info!("shutdown complete: storage flushed");
        Ok(())
    }
}

fn close_code(code: ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u32(code as u32)
}

async fn serve_connection(conn: quinn::Connection, broker: Arc<Broker>, supervisor: Supervisor) {
    let remote = conn.remote_address();
    // The back-off of failed authentication can outlast the Hello timeout; it is bounded itself.
    let principal =
        match tokio::time::timeout(HANDSHAKE_TIMEOUT + MAX_AUTH_WAIT, handshake(&conn, &broker))
            .await
        {
            Ok(Ok((client, principal))) => {
                tracing::debug!(%remote, %client, %principal, "client connected");
                Arc::new(principal)
            }
            Ok(Err(e)) => {
                tracing::info!(%remote, error = %e, "handshake refused");
                let code = e.remote_code().unwrap_or(ErrorCode::InvalidRequest);
                return conn.close(close_code(code), e.to_string().as_bytes());
            }
            Err(_) => return conn.close(close_code(ErrorCode::Timeout), b"no Hello within 10 s"),
        };
    let mut connected = match broker.auth().connected(&principal) {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(%remote, %principal, error = %e, "connection refused");
            return conn.close(close_code(e.code()), e.to_string().as_bytes());
        }
    };
    let _open = broker.telemetry().connection();
    let token = supervisor.token();
    let mut allowance = StreamAllowance::new(broker.config().max_streams_per_connection);
    loop {
        let (send, recv) = tokio::select! {
            _ = token.cancelled() => break,
            _ = connected.revoked() => {
                tracing::info!(target: "quiver::audit", %remote, %principal, "credentials revoked: connection closed");
                conn.close(close_code(ErrorCode::NotAuthorized), b"credentials revoked");
                break;
            }
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "connection closed");
                    break;
                }
            },
        };
        let (grant, counted) = allowance.opened();
        if let Some(limit) = grant {
            conn.set_max_concurrent_bi_streams(limit.into());
        }
        let (broker, token, principal) = (broker.clone(), token.clone(), principal.clone());
        supervisor.spawn(async move {
            let _counted = counted;
            let _open = broker.telemetry().stream();
            if let Err(e) = stream::serve(send, recv, broker, principal, token).await {
                tracing::debug!(%remote, error = %e, "stream ended with an error");
            }
        });
    }
}

/// Reads the client's Hello on the first stream, authenticates it and answers HelloOk, or an
/// error for a version mismatch or failed authentication.
async fn handshake(
    conn: &quinn::Connection,
    broker: &Broker,
) -> Result<(String, Principal), WireError> {
    let (mut send, recv) = conn
        .accept_bi()
        .await
        .map_err(|e| WireError::Read(e.into()))?;
    let mut reader = FrameReader::new(recv, 64 << 10);
    let (hello, _): (Hello, Bytes) = reader.expect(FrameKind::Hello).await?;
    if hello.protocol_version != PROTOCOL_VERSION {
        let message = format!(
            "client speaks protocol {}, this broker speaks {PROTOCOL_VERSION}",
            hello.protocol_version
        );
        write_error(&mut send, ErrorCode::UnsupportedVersion, message.clone()).await?;
        let _ = send.finish();
        return Err(WireError::Remote {
            code: ErrorCode::UnsupportedVersion,
            message,
        });
    }
    let certificate = peer_certificate(conn);
    let authenticated = broker
        .auth()
        .authenticate(
            conn.remote_address().ip(),
            hello.token.as_deref(),
            certificate.as_deref(),
        )
        .await;
    let principal = match authenticated {
        Ok(p) => p,
        Err(e) => {
            write_error(&mut send, e.code(), e.to_string()).await?;
            let _ = send.finish();
            return Err(WireError::Remote {
                code: e.code(),
                message: e.to_string(),
            });
        }
    };
    let ok = HelloOk {
        protocol_version: PROTOCOL_VERSION,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
        max_frame: broker.config().max_frame_bytes as u32,
        broker_id: broker.id().to_owned(),
    };
    write_frame(&mut send, FrameKind::HelloOk, &ok, Bytes::new()).await?;
    send.finish()?;
    Ok((hello.client_id, principal))
}

/// The verified client certificate (its leaf, DER), when the client sent one.
fn peer_certificate(conn: &quinn::Connection) -> Option<Vec<u8>> {
    let identity = conn.peer_identity()?;
    let chain = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    chain.first().map(|c| c.to_vec())
}
