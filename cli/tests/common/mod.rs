//! A real broker for integration tests: in-process, QUIC on 127.0.0.1 port 0, a temp data dir and the
//! generated dev CA. Restartable on the same data dir.
#![allow(dead_code)]

pub mod cluster;
pub mod outside;
pub mod plugins;
pub mod python_client;
pub mod serve;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use quiver_proto::frame::FrameKind;
use quiver_proto::messages::{Hello, PROTOCOL_VERSION};

use quiver::{Client, ConsumedRecord, Consumer, ConsumerConfig, SeekTo};
use quiver_broker::transport::tls::{self, TransportOptions};
use quiver_broker::transport::Server;
use quiver_broker::{Broker, BrokerConfig};
use tokio_util::sync::CancellationToken;

pub struct TestBroker {
    pub addr: SocketAddr,
    pub ca: PathBuf,
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl TestBroker {
    pub async fn start(data_dir: &Path) -> TestBroker {
        Self::start_with(data_dir, |_| {}).await
    }

    pub async fn start_with(data_dir: &Path, tweak: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        tls::install_crypto_provider();
        let mut config = BrokerConfig {
            data_dir: data_dir.to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            ..Default::default()
        };
        tweak(&mut config);
        let dev = tls::ensure_dev_certs(data_dir).unwrap();
        // As `quiver serve` does: with authentication on, a dev-CA client certificate is one
        // way to prove who one is.
        let paths = tls::TlsPaths {
            ca: config.auth.enabled.then(|| dev.ca_pem_path.clone()),
            client_cert_optional: true,
            ..dev.tls_paths()
        };
        let server_config = tls::server_config(&paths, &TransportOptions::default()).unwrap();
        let listen = config.listen;
        let broker = Broker::open(config).unwrap();
        let server = Server::bind(broker, listen, server_config).unwrap();
        let addr = server.local_addr().unwrap();
        let shutdown = server.shutdown_token();
        let task = tokio::spawn(async move { server.run().await.unwrap() });
        TestBroker {
            addr,
            ca: dev.ca_pem_path,
            data_dir: data_dir.to_owned(),
            shutdown,
            task,
        }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.addr.to_string(), &self.ca)
            .await
            .unwrap()
    }

    /// A client that authenticates with `token`.
    pub async fn client_with_token(&self, token: &str) -> Result<Client, quiver::ClientError> {
        let mut options = quiver::ClientOptions::new(self.addr.to_string(), &self.ca);
        options.token = Some(token.to_owned());
        Client::connect_with(options).await
    }

    /// The token of the `admin` user a first start with authentication wrote.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Graceful shutdown: drains, flushes, and waits for the server task.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Reads `n` records from all partitions of `topic`, from the start; panics after 20 s.
pub async fn consume_n(client: &Client, topic: &str, n: usize) -> Vec<ConsumedRecord> {
    let mut c = Consumer::new(client.clone(), topic, ConsumerConfig::default());
    c.assign_all(SeekTo::Earliest).await.unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while out.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} records arrived",
            out.len()
        );
        out.extend(c.poll(Duration::from_millis(200)).await.unwrap());
    }
    out
}

/// The bytes of a plugin component from `target/plugins/` (built by scripts/build-plugins.sh,
/// which this runs once per test binary when a component is missing).
pub fn plugin_wasm(name: &str) -> bytes::Bytes {
    static BUILD: std::sync::Once = std::sync::Once::new();
    // The repository root (this is cli/).
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let path = root.join("target/plugins").join(format!("{name}.wasm"));
    if !path.exists() {
        BUILD.call_once(|| {
            let status = std::process::Command::new("bash")
                .arg(root.join("scripts/build-plugins.sh"))
                .status()
                .expect("running scripts/build-plugins.sh");
            assert!(status.success(), "scripts/build-plugins.sh failed");
        });
    }
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-plugins.sh)", path.display()))
        .into()
}

/// A raw connection that has done the Hello handshake, for sending hand-made bytes.
pub async fn raw_connection(broker: &TestBroker) -> quinn::Connection {
    raw_connection_with(broker, None).await
}

/// A raw connection whose Hello carries `token`.
pub async fn raw_connection_with(broker: &TestBroker, token: Option<&str>) -> quinn::Connection {
    let config = quiver::tls::client_config(&broker.ca, None).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    let conn = endpoint
        .connect(broker.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut send, recv) = conn.open_bi().await.unwrap();
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        client_id: "raw".into(),
        token: token.map(str::to_owned),
    };
    quiver::wire::write_frame(&mut send, FrameKind::Hello, &hello, Bytes::new())
        .await
        .unwrap();
    send.finish().unwrap();
    let mut reader = quiver::wire::FrameReader::new(recv, 1 << 20);
    reader.next().await.unwrap().unwrap();
    conn
}

/// Runs `cmd` with `stdin` written to it and its output captured.
pub fn run_with_stdin(mut cmd: std::process::Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// A plain HTTP/1.1 GET; returns (status, body).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}
