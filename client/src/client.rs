//! A connection to a broker: QUIC with TLS 1.3 verified against the given CA, the Hello handshake,
//! and helpers to open request streams.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use quiver_proto::frame::{FrameKind, DEFAULT_MAX_FRAME};
use quiver_proto::messages::{Hello, HelloOk, PROTOCOL_VERSION};
use quiver_proto::ErrorCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ClientError;
use crate::wire::{write_frame, FrameReader};

/// How to reach and trust a broker. Its `Debug` never shows the token.
#[derive(Clone)]
pub struct ClientOptions {
    /// `host:port`; the host is also the name the certificate must carry.
    pub server: String,
    /// PEM file with the CA certificate(s) the broker's certificate must chain to.
    pub ca: PathBuf,
    /// Client certificate and key for mTLS.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    pub client_id: String,
    pub token: Option<String>,
    /// How long a silent broker is given before the connection counts as lost (keep-alives go
    /// out at a third of it); `None` is 30 s. A link that must notice a dead peer fast (a mirror)
    /// sets a few seconds.
    pub idle_timeout: Option<Duration>,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("server", &self.server)
            .field("ca", &self.ca)
            .field("client_cert", &self.client_cert)
            .field("client_id", &self.client_id)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("idle_timeout", &self.idle_timeout)
            .finish()
    }
}

impl ClientOptions {
    pub fn new(server: impl Into<String>, ca: impl Into<PathBuf>) -> Self {
        ClientOptions {
            server: server.into(),
            ca: ca.into(),
            client_cert: None,
            client_id: format!("quiver-client-{}", std::process::id()),
            token: None,
            idle_timeout: None,
        }
    }
}

struct Inner {
    /// How this connection was made (another node of a cluster is reached the same way).
    opts: ClientOptions,
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    server: HelloOk,
    client_id: String,
    next_request: AtomicU64,
}

/// A connection to one broker; cheap to clone (all clones share the QUIC connection).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("remote", &self.inner.conn.remote_address())
            .finish()
    }
}

impl Client {
    /// Connects to `server` (host:port), trusting only the CA in `ca`.
    pub async fn connect(server: &str, ca: &Path) -> Result<Client, ClientError> {
        Self::connect_with(ClientOptions::new(server, ca)).await
    }

    pub async fn connect_with(opts: ClientOptions) -> Result<Client, ClientError> {
        let (host, addr) = resolve(&opts.server).await?;
        let cert = opts
            .client_cert
            .as_ref()
            .map(|(c, k)| (c.as_path(), k.as_path()));
        let mut config = crate::tls::client_config(&opts.ca, cert)?;
        if let Some(idle) = opts.idle_timeout {
            config.transport_config(Arc::new(crate::tls::transport_config_with(idle)));
        }
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::]:0".parse()
        } else {
            "0.0.0.0:0".parse()
        }
        .map_err(|e: std::net::AddrParseError| ClientError::Address {
            addr: opts.server.clone(),
            reason: e.to_string(),
        })?;
        let connect_err = |reason: String| ClientError::Connect {
            addr: opts.server.clone(),
            reason,
        };
        let mut endpoint = quiver_wire::packets::endpoint(
            bind,
            quinn::EndpointConfig::default(),
            None,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| connect_err(e.to_string()))?;
        endpoint.set_default_client_config(config);
        let connecting = endpoint
            .connect(addr, &host)
            .map_err(|e| connect_err(e.to_string()))?;
        let conn = connecting
            .await
            .map_err(|e| connect_err(describe_connect_error(&e)))?;
        // A broker that refuses us (busy, wrong version) closes the connection with a reason, which
        // says more than the stream error the handshake sees.
        let server = hello(&conn, &opts)
            .await
            .map_err(|e| refused(&opts.server, &conn, e))?;
        let inner = Inner {
            client_id: opts.client_id.clone(),
            opts,
            endpoint,
            conn,
            server,
            next_request: AtomicU64::new(1),
        };
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    /// A connection to another broker (a node of the same cluster) with this one's options:
    /// the same CA, credentials and client id.
    pub async fn connect_to(&self, server: &str) -> Result<Client, ClientError> {
        let mut opts = self.inner.opts.clone();
        opts.server = server.to_owned();
        Self::connect_with(opts).await
    }

    /// The options this connection was made with.
    pub(crate) fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// The `host:port` this client connected to.
    pub fn server(&self) -> &str {
        &self.inner.opts.server
    }

    /// Whether the connection has ended (closed or lost).
    pub fn is_closed(&self) -> bool {
        self.inner.conn.close_reason().is_some()
    }

    /// What the broker said about itself in the handshake.
    pub fn server_info(&self) -> &HelloOk {
        &self.inner.server
    }

    /// The id this client introduced itself with (group members report it).
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    pub fn max_frame(&self) -> usize {
        (self.inner.server.max_frame as usize).min(DEFAULT_MAX_FRAME)
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.inner.next_request.fetch_add(1, Ordering::Relaxed)
    }

    /// Opens a request stream.
    pub(crate) async fn open(
        &self,
    ) -> Result<(quinn::SendStream, FrameReader<quinn::RecvStream>), ClientError> {
        let (send, recv) = self.inner.conn.open_bi().await?;
        Ok((send, FrameReader::new(recv, DEFAULT_MAX_FRAME)))
    }

    /// One request on its own stream, one reply.
    pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: FrameKind,
        req: &Req,
        reply: FrameKind,
    ) -> Result<Resp, ClientError> {
        self.call_with_payload(kind, req, Bytes::new(), reply).await
    }

    /// A one-request stream whose frame carries `payload` (e.g. a component to deploy).
    pub(crate) async fn call_with_payload<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: FrameKind,
        req: &Req,
        payload: Bytes,
        reply: FrameKind,
    ) -> Result<Resp, ClientError> {
        let (resp, _) = self.exchange(kind, req, payload, reply).await?;
        Ok(resp)
    }

    /// A one-request stream; the reply and its payload (e.g. a queue poll's batches).
    pub(crate) async fn exchange<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        kind: FrameKind,
        req: &Req,
        payload: Bytes,
        reply: FrameKind,
    ) -> Result<(Resp, Bytes), ClientError> {
        let (mut send, mut reader) = self.open().await?;
        if let Err(e) = write_frame(&mut send, kind, req, payload).await {
            // The broker may have refused the request part-way (e.g. a component over its size
            // limit): its error frame says why, which "sending stopped by peer" does not.
            return match reader.expect::<Resp>(reply).await {
                Err(remote @ crate::wire::WireError::Remote { .. }) => Err(remote.into()),
                _ => Err(e.into()),
            };
        }
        send.finish().map_err(crate::wire::WireError::from)?;
        Ok(reader.expect(reply).await?)
    }

    /// Resolves when the connection ends (closed by either side, or lost), with why.
    pub async fn closed(&self) -> ClientError {
        ClientError::Connection(self.inner.conn.closed().await)
    }

    /// Closes the connection and waits briefly for the close to reach the broker.
    pub async fn close(&self) {
        self.inner.conn.close(0u32.into(), b"client closed");
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            self.inner.endpoint.wait_idle(),
        )
        .await;
    }
}

async fn hello(conn: &quinn::Connection, opts: &ClientOptions) -> Result<HelloOk, ClientError> {
    let (mut send, recv) = conn.open_bi().await?;
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        client_id: opts.client_id.clone(),
        token: opts.token.clone(),
    };
    write_frame(&mut send, FrameKind::Hello, &hello, Bytes::new()).await?;
    send.finish().map_err(crate::wire::WireError::from)?;
    let (ok, _) = FrameReader::new(recv, 64 << 10)
        .expect::<HelloOk>(FrameKind::HelloOk)
        .await?;
    Ok(ok)
}

/// Splits `host:port` and resolves it; the host is the TLS server name.
async fn resolve(server: &str) -> Result<(String, SocketAddr), ClientError> {
    let bad = |reason: &str| ClientError::Address {
        addr: server.to_owned(),
        reason: reason.to_owned(),
    };
    let (host, _port) = server
        .rsplit_once(':')
        .ok_or_else(|| bad("expected host:port"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let addr = tokio::net::lookup_host(server)
        .await
        .map_err(|e| bad(&e.to_string()))?
        .next()
        .ok_or_else(|| bad("the name resolves to no address"))?;
    Ok((host, addr))
}

/// Turns TLS failures into a message that says what to check.
/// Why the broker refused the handshake: its error frame, or (when the close overtook the frame)
/// the code and reason it closed the connection with.
fn refused(addr: &str, conn: &quinn::Connection, e: ClientError) -> ClientError {
    let refusal = |code, message| ClientError::Refused {
        addr: addr.to_owned(),
        code,
        message,
    };
    if let Some(code) = e.code() {
        return refusal(code, e.to_string());
    }
    match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close)) => {
            let code = u16::try_from(close.error_code.into_inner()).unwrap_or(0);
            let message = String::from_utf8_lossy(&close.reason).into_owned();
            refusal(ErrorCode::from(code), message)
        }
        reason => ClientError::Connect {
            addr: addr.to_owned(),
            reason: reason.map_or(e.to_string(), |r| r.to_string()),
        },
    }
}

fn describe_connect_error(e: &quinn::ConnectionError) -> String {
    let text = e.to_string();
    if text.contains("UnknownIssuer") || text.to_lowercase().contains("certificate") {
        format!(
            "{text} (the broker's certificate is not signed by the CA given with --ca / QUIVER_CA)"
        )
    } else {
        text
    }
}
