//! The QUIC server: accepts connections (up to a limit), runs the Hello handshake, and serves each
//! bidirectional stream as a sequence of request frames. Produce streams pipeline: appends happen in
//! arrival order on the reader side, while `acks=all` waits for the group commit off to the side, so
//! one stream's requests share fsyncs. Shutdown stops accepting, lets in-flight requests finish, then
//! flushes and fsyncs every partition.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quiver_proto::frame::{Frame, FrameKind};
use quiver_proto::messages::{
    Acks, FetchRequest, FetchResponse, Hello, HelloOk, OffsetSpec, PluginRef, ProduceRequest,
    ProduceResponse, PROTOCOL_VERSION,
};
use quiver_proto::ErrorCode;
use quiver_wire::{
    decode_frame, write_error, write_frame, write_request_error, FrameReader, WireError,
};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{admin, groups};
use crate::broker::{Broker, BrokerError, FetchParams, Produced, StartAt};
use crate::filter::Filter;
use crate::plugins::ReadFilter;
use crate::storage::Durability;

/// Errors that stop the server itself (not a single request).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("flushing storage at shutdown failed: {0}")]
    Flush(#[from] BrokerError),
}

/// Produce responses a stream may have outstanding before it stops reading new requests.
const MAX_IN_FLIGHT: usize = 256;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_FETCH_WAIT: Duration = Duration::from_secs(60);

pub struct Server {
    endpoint: quinn::Endpoint,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    connections: Arc<Semaphore>,
}

impl Server {
    /// Binds the QUIC endpoint (port 0 picks a free port).
    pub fn bind(
        broker: Arc<Broker>,
        listen: SocketAddr,
        tls: quinn::ServerConfig,
    ) -> Result<Server, ServerError> {
        let endpoint =
            quinn::Endpoint::server(tls, listen).map_err(|source| ServerError::Bind {
                addr: listen,
                source,
            })?;
        let connections = Arc::new(Semaphore::new(broker.config().max_connections));
        Ok(Server {
            endpoint,
            broker,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            connections,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Cancelling this token starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then drains and flushes.
    pub async fn run(self) -> Result<(), ServerError> {
        self.tracker
            .spawn(retention_loop(self.broker.clone(), self.shutdown.clone()));
        self.tracker
            .spawn(session_loop(self.broker.clone(), self.shutdown.clone()));
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
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
        let (broker, shutdown, tracker) = (
            self.broker.clone(),
            self.shutdown.clone(),
            self.tracker.clone(),
        );
        self.tracker.spawn(async move {
            let conn = match incoming.await {
                Ok(c) => c,
                Err(e) => return tracing::debug!(error = %e, "handshake failed"),
            };
            let Ok(_permit) = permit else {
                tracing::warn!(remote = %conn.remote_address(), "connection limit reached; refusing");
                return conn.close(close_code(ErrorCode::ServerBusy), b"server busy: connection limit reached");
            };
            serve_connection(conn, broker, shutdown, tracker).await;
        });
    }

    async fn drain(self) -> Result<(), ServerError> {
        tracing::info!("shutting down: draining in-flight requests");
        self.tracker.close();
        let grace = Duration::from_millis(self.broker.config().shutdown_grace_ms);
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish within {grace:?}");
        }
        let broker = self.broker.clone();
        tokio::task::spawn_blocking(move || broker.flush())
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))??;
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

/// How often group sessions are checked for expiry (bounds how late a dead member is noticed).
const SESSION_CHECK: Duration = Duration::from_millis(100);

async fn session_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(SESSION_CHECK) => {}
        }
        let expired = broker.groups().coordinator.expire();
        if expired > 0 {
            tracing::info!(
                members = expired,
                "group members expired (no heartbeat within their session)"
            );
        }
    }
}

async fn retention_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let period = Duration::from_millis(broker.config().retention_check_ms.max(100));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        let b = broker.clone();
        match tokio::task::spawn_blocking(move || b.topics().enforce_retention()).await {
            Ok(out) if out.segments_deleted > 0 => {
                tracing::info!(
                    segments = out.segments_deleted,
                    bytes = out.bytes_deleted,
                    "retention removed segments"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
    }
}

async fn serve_connection(
    conn: quinn::Connection,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let remote = conn.remote_address();
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&conn, &broker)).await {
        Ok(Ok(client)) => tracing::debug!(%remote, %client, "client connected"),
        Ok(Err(e)) => {
            tracing::info!(%remote, error = %e, "handshake refused");
            let code = e.remote_code().unwrap_or(ErrorCode::InvalidRequest);
            return conn.close(close_code(code), e.to_string().as_bytes());
        }
        Err(_) => return conn.close(close_code(ErrorCode::Timeout), b"no Hello within 10 s"),
    }
    loop {
        let (send, recv) = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = conn.accept_bi() => match s {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%remote, error = %e, "connection closed");
                    break;
                }
            },
        };
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        tracker.spawn(async move {
            if let Err(e) = serve_stream(send, recv, broker, shutdown).await {
                tracing::debug!(%remote, error = %e, "stream ended with an error");
            }
        });
    }
}

/// Reads the client's Hello on the first stream and answers HelloOk, or an error for a version mismatch.
async fn handshake(conn: &quinn::Connection, broker: &Broker) -> Result<String, WireError> {
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
    let ok = HelloOk {
        protocol_version: PROTOCOL_VERSION,
        server_version: env!("CARGO_PKG_VERSION").to_owned(),
        max_frame: broker.config().max_frame_bytes as u32,
        broker_id: broker_id(broker),
    };
    write_frame(&mut send, FrameKind::HelloOk, &ok, Bytes::new()).await?;
    send.finish()?;
    Ok(hello.client_id)
}

pub(crate) fn broker_id(broker: &Broker) -> String {
    format!("quiver@{}", broker.config().listen)
}

/// Serves one stream: its first frame decides whether it is a produce pipeline, a fetch session or
/// an admin call. Malformed input gets an error frame and ends this stream only.
async fn serve_stream(
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
) -> Result<(), WireError> {
    let mut reader = Requests {
        reader: FrameReader::new(recv, broker.config().max_frame_bytes)
            .with_admin_limit((broker.config().plugins.max_component_mb as usize) << 20),
        shutdown,
    };
    let first = match reader.next().await {
        Ok(Some(f)) => f,
        Ok(None) => return Ok(()),
        Err(e) => return reject_stream(send, &e).await,
    };
    match first.kind {
        FrameKind::Produce => produce_pipeline(first, reader, send, broker).await,
        FrameKind::Fetch => fetch_session(first, reader, send, broker).await,
        FrameKind::Admin => {
            admin::serve(first, &mut send, &broker).await?;
            send.finish()?;
            Ok(())
        }
        FrameKind::Group => {
            groups::serve_group(first, &mut send, &broker).await?;
            send.finish()?;
            Ok(())
        }
        FrameKind::Queue => {
            // A parked long-poll is not in-flight work: shutdown ends it (the client retries).
            tokio::select! {
                r = groups::serve_queue(first, &mut send, &broker) => r?,
                _ = reader.shutdown.cancelled() => {
                    write_error(&mut send, ErrorCode::ShuttingDown, "server shutting down".into()).await?
                }
            }
            send.finish()?;
            Ok(())
        }
        other => {
            let msg = format!("a stream cannot start with a {other:?} frame");
            write_error(&mut send, ErrorCode::InvalidRequest, msg).await?;
            send.finish()?;
            Ok(())
        }
    }
}

/// The request frames of one stream; ends (like a finished stream) once shutdown starts, so idle
/// streams do not hold up a graceful shutdown while in-flight requests still complete.
struct Requests {
    reader: FrameReader<quinn::RecvStream>,
    shutdown: CancellationToken,
}

impl Requests {
    async fn next(&mut self) -> Result<Option<Frame>, WireError> {
        tokio::select! {
            _ = self.shutdown.cancelled() => Ok(None),
            f = self.reader.next() => f,
        }
    }
}

/// Answers unreadable input with an error frame and closes the stream.
async fn reject_stream(mut send: quinn::SendStream, e: &WireError) -> Result<(), WireError> {
    let code = match e {
        WireError::Frame(f) => f.code(),
        _ => ErrorCode::MalformedFrame,
    };
    tracing::info!(error = %e, "rejecting a malformed stream");
    write_error(&mut send, code, e.to_string()).await?;
    send.finish()?;
    Ok(())
}

/// A produce response still to be written, in request order.
enum Pending {
    Ready(Result<ProduceResponse, BrokerError>, u64),
    /// `acks=all`: appended in order, waiting for the fsync that covers it.
    Syncing(
        tokio::task::JoinHandle<Result<ProduceResponse, BrokerError>>,
        u64,
    ),
}

async fn produce_pipeline(
    first: Frame,
    mut reader: Requests,
    send: quinn::SendStream,
    broker: Arc<Broker>,
) -> Result<(), WireError> {
    let (tx, rx) = mpsc::channel::<Pending>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(write_produce_responses(rx, send));
    let mut next = Some(first);
    while let Some(frame) = next.take() {
        if let Some(pending) = produce_one(frame, &broker).await {
            if tx.send(pending).await.is_err() {
                break; // the writer stopped: the client went away
            }
        }
        match reader.next().await {
            Ok(f) => next = f,
            Err(e) => {
                let _ = tx.send(Pending::Ready(Err(wire_error(&e)), 0)).await;
                break;
            }
        }
    }
    drop(tx);
    writer
        .await
        .map_err(|e| WireError::Read(std::io::Error::other(e)))?
}

/// Appends one produce request in arrival order; `None` for acks=none (no reply is sent). A topic
/// with an ingest pipeline runs its plugins on the blocking pool; the stream waits for them, which
/// keeps its batches in order.
async fn produce_one(frame: Frame, broker: &Arc<Broker>) -> Option<Pending> {
    let (req, payload): (ProduceRequest, Bytes) = match decode_frame(frame, FrameKind::Produce) {
        Ok(x) => x,
        Err(e) => return Some(Pending::Ready(Err(wire_error(&e)), 0)),
    };
    let durability = match req.acks {
        Acks::None => Durability::None,
        Acks::Leader => Durability::Leader,
        Acks::All => Durability::All,
    };
    let appended = if req.exchange {
        if req.partition.is_some() {
            let e =
                BrokerError::InvalidRequest("a produce to an exchange names no partition".into());
            return Some(Pending::Ready(Err(e), req.request_id));
        }
        // Routing appends to several topics (and runs their pipelines): on the blocking pool.
        // `acks=all` is waited for inside, so the answer below is ready when it comes.
        let (b, exchange) = (broker.clone(), req.topic.clone());
        let acks = durability;
        tokio::task::spawn_blocking(move || b.produce_to_exchange(&exchange, payload, acks))
            .await
            .unwrap_or_else(|e| Err(BrokerError::Internal(e.to_string())))
    } else if broker.has_pipeline(&req.topic) || holds_records(&payload) {
        // Plugins may run for their whole time limit, and holding delayed records may fsync the
        // delay log: neither on an async worker.
        let (b, topic, partition) = (broker.clone(), req.topic.clone(), req.partition);
        tokio::task::spawn_blocking(move || b.append(&topic, partition, payload, durability))
            .await
            .unwrap_or_else(|e| Err(BrokerError::Internal(e.to_string())))
    } else {
        broker.append_without_plugins(&req.topic, req.partition, payload, durability)
    };
    let respond = move |p: Produced| ProduceResponse {
        request_id: req.request_id,
        partition: p.partition,
        base_offset: p.base_offset,
        last_offset: p.last_offset,
        log_end: p.log_end,
        appended: p.appended,
        transformed: p.transformed,
        duplicate: p.duplicate,
        delayed: p.delayed,
        delay_first_id: p.delay_first_id,
    };
    match (durability, appended) {
        (Durability::None, Err(e)) => {
            tracing::debug!(error = %e, "acks=none produce failed");
            None
        }
        (Durability::None, Ok(_)) => None,
        (Durability::All, Ok(p)) if !req.exchange => {
            let b = broker.clone();
            let handle = tokio::task::spawn_blocking(move || {
                b.sync(&req.topic, p.partition, p.log_end)
                    .map(|()| respond(p))
            });
            Some(Pending::Syncing(handle, req.request_id))
        }
        (_, result) => Some(Pending::Ready(result.map(respond), req.request_id)),
    }
}

async fn write_produce_responses(
    mut rx: mpsc::Receiver<Pending>,
    mut send: quinn::SendStream,
) -> Result<(), WireError> {
    while let Some(p) = rx.recv().await {
        let (result, request_id) = match p {
            Pending::Ready(r, id) => (r, id),
            Pending::Syncing(h, id) => (
                h.await
                    .unwrap_or_else(|e| Err(BrokerError::Internal(e.to_string()))),
                id,
            ),
        };
        match result {
            Ok(resp) => write_frame(&mut send, FrameKind::ProduceOk, &resp, Bytes::new()).await?,
            Err(e) => {
                write_request_error(
                    &mut send,
                    e.code(),
                    with_request(request_id, &e),
                    request_id,
                )
                .await?
            }
        }
    }
    send.finish()?;
    Ok(())
}

/// A stream that could not be read, as the error its pending request gets.
fn wire_error(e: &WireError) -> BrokerError {
    let code = match e {
        WireError::Frame(f) => f.code(),
        WireError::Remote { code, .. } => *code,
        _ => ErrorCode::MalformedFrame,
    };
    BrokerError::Wire(code, e.to_string())
}

fn with_request(request_id: u64, e: &BrokerError) -> String {
    format!("request {request_id}: {e}")
}

async fn fetch_session(
    first: Frame,
    mut reader: Requests,
    mut send: quinn::SendStream,
    broker: Arc<Broker>,
) -> Result<(), WireError> {
    let mut next = Some(first);
    let mut read_filters = ReadFilters::default();
    while let Some(frame) = next.take() {
        let (req, _): (FetchRequest, Bytes) = match decode_frame(frame, FrameKind::Fetch) {
            Ok(x) => x,
            Err(e) => return reject_stream(send, &e).await,
        };
        // A parked long-poll is not in-flight work: shutdown answers it at once (retriable).
        let fetched = tokio::select! {
            r = fetch_one(&req, &broker, &mut read_filters) => r,
            _ = reader.shutdown.cancelled() => Err(BrokerError::ShuttingDown),
        };
        match fetched {
            Ok((resp, bytes)) => write_frame(&mut send, FrameKind::FetchOk, &resp, bytes).await?,
            Err(e) => {
                let msg = with_request(req.request_id, &e);
                write_request_error(&mut send, e.code(), msg, req.request_id).await?
            }
        }
        next = match reader.next().await {
            Ok(f) => f,
            Err(e) => return reject_stream(send, &e).await,
        };
    }
    send.finish()?;
    Ok(())
}

/// The read-filter plugin instance of a fetch session, kept while the session names the same
/// plugin and configuration (a fetch stream reads one partition, usually with one filter).
#[derive(Default)]
struct ReadFilters {
    current: Option<(PluginRef, Arc<ReadFilter>)>,
}

impl ReadFilters {
    async fn get(
        &mut self,
        wanted: Option<&PluginRef>,
        broker: &Arc<Broker>,
    ) -> Result<Option<Arc<ReadFilter>>, BrokerError> {
        let Some(wanted) = wanted else {
            return Ok(None);
        };
        if let Some((r, f)) = &self.current {
            if r == wanted {
                return Ok(Some(f.clone()));
            }
        }
        let (b, w) = (broker.clone(), wanted.clone());
        let filter = tokio::task::spawn_blocking(move || b.read_filter(&w.name, w.config))
            .await
            .map_err(|e| BrokerError::Internal(e.to_string()))??;
        let filter = Arc::new(filter);
        self.current = Some((wanted.clone(), filter.clone()));
        Ok(Some(filter))
    }
}

/// One fetch request: resolve the start, long-poll, filter.
async fn fetch_one(
    req: &FetchRequest,
    broker: &Arc<Broker>,
    read_filters: &mut ReadFilters,
) -> Result<(FetchResponse, Bytes), BrokerError> {
    let filter = match req.filter.as_deref().map(Filter::parse).transpose() {
        Ok(f) => f.map(Arc::new),
        Err(e) => return Err(BrokerError::InvalidRequest(e.to_string())),
    };
    let plugin = read_filters.get(req.plugin.as_ref(), broker).await?;
    let params = FetchParams {
        start: match req.offset {
            OffsetSpec::Earliest => StartAt::Earliest,
            OffsetSpec::Latest => StartAt::Latest,
            OffsetSpec::At(o) => StartAt::Offset(o),
            OffsetSpec::Timestamp(ts) => StartAt::Timestamp(ts),
        },
        max_bytes: (req.max_bytes as usize).clamp(1, broker.config().max_frame_bytes / 2),
        min_bytes: req.min_bytes as usize,
        max_wait: Duration::from_millis(req.max_wait_ms as u64).min(MAX_FETCH_WAIT),
        filter,
        plugin,
    };
    let f = broker.fetch(&req.topic, req.partition, params).await?;
    let resp = FetchResponse {
        request_id: req.request_id,
        partition: req.partition,
        log_start: f.log_start,
        log_end: f.log_end,
        next_offset: f.next_offset,
        records: f.records,
        offset: f.offset,
    };
    Ok((resp, f.bytes))
}

/// Whether a produced batch asks for delayed delivery (its header has the delayed flag).
fn holds_records(payload: &Bytes) -> bool {
    quiver_proto::BatchHeader::parse(payload)
        .is_ok_and(|h| h.flags & quiver_proto::batch::FLAG_DELAYED != 0)
}
