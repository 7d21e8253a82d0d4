//! TLS for the broker's QUIC endpoint: the rustls/quinn server configuration (TLS 1.3 only, ALPN
//! `quiver/1`, large flow-control windows, optional mTLS); the development CA kept in
//! `<data-dir>/tls/` is `dev_ca.rs`, the PEM file handling `files.rs`.
//!
//! Invariants: private keys are written with mode 0600; every I/O or PEM error names its file;
//! there is no way to turn certificate verification off.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime};

use super::allowance::StreamAllowance;
use quinn::crypto::rustls::{NoInitialCipherSuite, QuicServerConfig};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

mod dev_ca;
mod files;
mod peer;

pub use dev_ca::{ensure_cluster_dev_certs, ensure_dev_certs, generate_client_cert};
use files::*;
pub use peer::{peer_configs, PEER_ALPN};

/// The one application protocol the broker speaks; a client offering anything else is refused.
pub const ALPN: &[u8] = b"quiver/1";

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const SERVER_CERT_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server.key";
const CA_COMMON_NAME: &str = "Quiver development CA";
const SERVER_COMMON_NAME: &str = "quiver dev server";
const SERVER_SANS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Clients pin this CA, so it lives long; ten years outlasts any dev setup.
const CA_VALIDITY_DAYS: i64 = 3650;
/// 825 days is the longest leaf lifetime Apple's TLS stack accepts, even under a private CA.
const LEAF_VALIDITY_DAYS: i64 = 825;
/// A reused server certificate that expires within this window is reissued at startup, so a
/// long-running dev broker does not start failing handshakes mid-run.
const RENEW_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);

// Flow-control windows measured in DESIGN.md (~830 MB/s on loopback); quinn's defaults are
// several times smaller and cap one connection well below that.
const STREAM_RECEIVE_WINDOW: u32 = 16 << 20;
const RECEIVE_WINDOW: u32 = 64 << 20;
const SEND_WINDOW: u64 = 32 << 20;

/// Why TLS material could not be produced or loaded; file-related variants name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("invalid PEM in {what} {path}: {source}")]
    Pem {
        what: &'static str,
        path: PathBuf,
        source: pem::Error,
    },
    #[error("no certificate found in {path}")]
    NoCertificate { path: PathBuf },
    #[error("no private key found in {path}")]
    NoPrivateKey { path: PathBuf },
    #[error("cannot use {what} {path}: {source}")]
    Parse {
        what: &'static str,
        path: PathBuf,
        source: rcgen::Error,
    },
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("certificate issued by {ca} does not verify against it ({source}); do ca.pem and ca.key belong together?")]
    SelfCheck { ca: PathBuf, source: rustls::Error },
    #[error("certificate {cert} and key {key} cannot be used together: {source}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot trust client CA {path}: {source}")]
    ClientCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot verify client certificates against {path}: {source}")]
    ClientVerifier {
        path: PathBuf,
        source: VerifierBuilderError,
    },
    #[error("{path}: issued by an older build, with a BasicConstraints encoding (cA: FALSE) strict parsers refuse")]
    NotDer { path: PathBuf },
    #[error("invalid client certificate name {0:?}: use letters, digits, '-', '_' or '.', not starting with '.'")]
    InvalidName(String),
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(#[from] NoInitialCipherSuite),
    #[error("invalid transport option: {0}")]
    Option(String),
}

/// Where the server's certificate chain and key live, and optionally the CA that client
/// certificates must chain to (mTLS is on exactly when `ca` is set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    /// With `ca` set: a client may also connect without a certificate (and authenticate with a
    /// token instead). Without it, a certificate is required.
    pub client_cert_optional: bool,
}

/// The development certificates in `<data-dir>/tls/`; `generated` says whether this call wrote
/// anything new (clients must then be given `ca_pem_path` again only if the CA itself changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevCerts {
    pub ca_pem_path: PathBuf,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub generated: bool,
}

impl DevCerts {
    /// Server paths for these certificates, without client authentication.
    pub fn tls_paths(&self) -> TlsPaths {
        TlsPaths {
            cert: self.cert_path.clone(),
            key: self.key_path.clone(),
            ca: None,
            client_cert_optional: false,
        }
    }
}

/// QUIC transport limits that operators may tune; the windows are fixed (see DESIGN.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportOptions {
    /// Concurrent bidirectional streams a client may open (one per admin request or session).
    pub max_concurrent_streams: u32,
    /// A connection silent for this long is dropped; zero disables the idle timeout.
    pub idle_timeout: Duration,
    /// Ping interval that keeps idle-but-healthy connections (and NAT bindings) alive; zero disables.
    pub keep_alive: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            max_concurrent_streams: 1024,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
        }
    }
}

/// Installs ring as the process-wide rustls provider. Our own configs name ring explicitly, but
/// other code (and quinn helpers) may ask for the default, which panics when none is installed
/// and more than one provider is compiled in.
pub fn install_crypto_provider() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err means another provider was installed first; that one serves just as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// ---------------------------------------------------------------------------------------------
// Development certificates
// ---------------------------------------------------------------------------------------------

/// The quinn server configuration: TLS 1.3 only, ALPN `quiver/1`, client certificates required
/// and verified against `paths.ca` when it is set, and the transport limits from `opts`.
pub fn server_config(
    paths: &TlsPaths,
    opts: &TransportOptions,
) -> Result<quinn::ServerConfig, TlsError> {
    let mut tls = rustls_server_config(paths)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config(opts)?));
    Ok(config)
}

fn rustls_server_config(paths: &TlsPaths) -> Result<rustls::ServerConfig, TlsError> {
    let chain = read_certs(&paths.cert, "certificate")?;
    let key = read_key(&paths.key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match &paths.ca {
        Some(ca) => {
            builder.with_client_cert_verifier(client_verifier(ca, paths.client_cert_optional)?)
        }
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Identity {
            cert: paths.cert.clone(),
            key: paths.key.clone(),
            source,
        })
}

fn client_verifier(ca: &Path, optional: bool) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca, "client CA certificate")? {
        roots.add(cert).map_err(|source| TlsError::ClientCa {
            path: ca.to_owned(),
            source,
        })?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let builder = if optional {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    builder.build().map_err(|source| TlsError::ClientVerifier {
        path: ca.to_owned(),
        source,
    })
}

fn transport_config(opts: &TransportOptions) -> Result<quinn::TransportConfig, TlsError> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(RECEIVE_WINDOW.into())
        .send_window(SEND_WINDOW)
        .mtu_discovery_config(Some(quiver_wire::packets::mtu_discovery()))
        // The allowance grows with use up to the maximum (transport/allowance.rs); clients open
        // no unidirectional streams, so none are allowed (quinn keeps state for each allowed).
        .max_concurrent_bidi_streams(StreamAllowance::initial(opts.max_concurrent_streams).into())
        .max_concurrent_uni_streams(0u8.into())
        .keep_alive_interval(nonzero(opts.keep_alive))
        .max_idle_timeout(idle_timeout(opts)?);
    Ok(transport)
}

fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn idle_timeout(opts: &TransportOptions) -> Result<Option<quinn::IdleTimeout>, TlsError> {
    let Some(idle) = nonzero(opts.idle_timeout) else {
        return Ok(None);
    };
    // Keep-alives at or beyond the idle timeout would let healthy idle connections be dropped.
    if !opts.keep_alive.is_zero() && opts.keep_alive >= idle {
        return Err(TlsError::Option(format!(
            "keep_alive ({:?}) must be shorter than idle_timeout ({idle:?})",
            opts.keep_alive
        )));
    }
    quinn::IdleTimeout::try_from(idle)
        .map(Some)
        .map_err(|e| TlsError::Option(format!("idle_timeout {idle:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use std::process::Command;

    const PAYLOAD: &[u8] = b"hello over quic";

    fn dev_certs() -> (tempfile::TempDir, DevCerts) {
        let dir = tempfile::tempdir().unwrap();
        let certs = ensure_dev_certs(dir.path()).unwrap();
        (dir, certs)
    }

    fn openssl(args: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("the openssl binary is needed to check the chain against OpenSSL");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "openssl {args:?} failed: {text}");
        text
    }

    fn path_str(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    #[test]
    fn dev_certs_are_reused_across_calls() {
        let (dir, first) = dev_certs();
        assert!(first.generated);
        let bytes = |c: &DevCerts| {
            [&c.ca_pem_path, &c.cert_path, &c.key_path].map(|p| fs::read(p).unwrap())
        };
        let before = bytes(&first);
        let second = ensure_dev_certs(dir.path()).unwrap();
        assert!(!second.generated);
        assert_eq!(before, bytes(&second));
    }

    #[test]
    fn missing_server_cert_is_reissued_under_the_same_ca() {
        let (dir, first) = dev_certs();
        let ca = fs::read(&first.ca_pem_path).unwrap();
        fs::remove_file(&first.cert_path).unwrap();
        let second = ensure_dev_certs(dir.path()).unwrap();
        assert!(second.generated);
        assert_eq!(ca, fs::read(&second.ca_pem_path).unwrap());
        openssl(&[
            "verify",
            "-CAfile",
            path_str(&second.ca_pem_path),
            path_str(&second.cert_path),
        ]);
    }

    #[cfg(unix)]
    #[test]
    fn private_keys_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, certs) = dev_certs();
        for key in [
            certs.key_path.clone(),
            dir.path().join("tls").join(CA_KEY_FILE),
        ] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }

    #[test]
    fn openssl_accepts_the_dev_chain() {
        let (dir, certs) = dev_certs();
        let ca = path_str(&certs.ca_pem_path);
        let server = path_str(&certs.cert_path);
        openssl(&["verify", "-CAfile", ca, server]);
        openssl(&["verify", "-purpose", "sslserver", "-CAfile", ca, server]);
        let sans = openssl(&["x509", "-in", server, "-noout", "-ext", "subjectAltName"]);
        for name in ["localhost", "127.0.0.1", "0:0:0:0:0:0:0:1"] {
            assert!(sans.contains(name), "{name} missing from {sans}");
        }
        let ca_ext = openssl(&[
            "x509",
            "-in",
            ca,
            "-noout",
            "-ext",
            "basicConstraints,keyUsage",
        ]);
        assert!(
            ca_ext.contains("CA:TRUE") && ca_ext.contains("Certificate Sign"),
            "{ca_ext}"
        );

        let (client, _) =
            generate_client_cert(&dir.path().join("tls"), "alice", dir.path()).unwrap();
        openssl(&[
            "verify",
            "-purpose",
            "sslclient",
            "-CAfile",
            ca,
            path_str(&client),
        ]);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let paths = TlsPaths {
            cert: missing.clone(),
            key: missing.clone(),
            ca: None,
            client_cert_optional: false,
        };
        let err = server_config(&paths, &TransportOptions::default()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot read certificate ") && text.contains("nope.pem"),
            "{text}"
        );

        let (_keep, certs) = dev_certs();
        let empty = dir.path().join("key.pem");
        fs::write(&empty, "not pem at all\n").unwrap();
        let paths = TlsPaths {
            key: empty.clone(),
            ..certs.tls_paths()
        };
        let text = server_config(&paths, &TransportOptions::default())
            .unwrap_err()
            .to_string();
        assert_eq!(text, format!("no private key found in {}", empty.display()));
    }

    #[test]
    fn client_cert_names_cannot_escape_the_output_dir() {
        let (dir, _certs) = dev_certs();
        for name in ["", "../x", "a/b", ".hidden"] {
            let err = generate_client_cert(&dir.path().join("tls"), name, dir.path()).unwrap_err();
            assert!(matches!(err, TlsError::InvalidName(_)), "{name}: {err}");
        }
    }

    #[test]
    fn keep_alive_must_be_shorter_than_idle_timeout() {
        let opts = TransportOptions {
            keep_alive: Duration::from_secs(30),
            ..Default::default()
        };
        assert!(matches!(transport_config(&opts), Err(TlsError::Option(_))));
    }

    // --- real QUIC over loopback -------------------------------------------------------------

    fn start_server(paths: &TlsPaths) -> (quinn::Endpoint, SocketAddr) {
        let config = server_config(paths, &TransportOptions::default()).unwrap();
        let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let accepting = endpoint.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                tokio::spawn(echo_connection(incoming));
            }
        });
        (endpoint, addr)
    }

    /// Echoes every bidirectional stream; failed handshakes just end this task, not the server.
    async fn echo_connection(incoming: quinn::Incoming) {
        let Ok(conn) = incoming.await else { return };
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let Ok(data) = recv.read_to_end(64 * 1024).await else {
                return;
            };
            let _ = send.write_all(&data).await;
            let _ = send.finish();
        }
    }

    /// Connects, echoes `PAYLOAD` and returns the bytes read back, or the error text.
    async fn echo(
        config: quinn::ClientConfig,
        addr: SocketAddr,
        name: &str,
    ) -> Result<Vec<u8>, String> {
        let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let result = async {
            let conn = endpoint
                .connect_with(config, addr, name)
                .map_err(|e| e.to_string())?
                .await;
            let conn = conn.map_err(|e| e.to_string())?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send.write_all(PAYLOAD).await.map_err(|e| e.to_string())?;
            send.finish().map_err(|e| e.to_string())?;
            let data = recv
                .read_to_end(64 * 1024)
                .await
                .map_err(|e| e.to_string())?;
            conn.close(0u32.into(), b"done");
            Ok(data)
        }
        .await;
        endpoint.wait_idle().await;
        result
    }

    fn client(ca: &Path) -> quinn::ClientConfig {
        quiver::tls::client_config(ca, None).unwrap()
    }

    #[tokio::test]
    async fn client_trusting_the_dev_ca_connects_by_name_and_ip() {
        let (_dir, certs) = dev_certs();
        let (_server, addr) = start_server(&certs.tls_paths());
        for name in ["localhost", "127.0.0.1"] {
            let got = echo(client(&certs.ca_pem_path), addr, name).await;
            assert_eq!(got.as_deref(), Ok(PAYLOAD), "server name {name}");
        }
    }

    #[tokio::test]
    async fn client_trusting_another_ca_is_refused_and_server_survives() {
        let (_dir, certs) = dev_certs();
        let (_other_dir, other) = dev_certs();
        let (_server, addr) = start_server(&certs.tls_paths());

        let err = echo(client(&other.ca_pem_path), addr, "localhost")
            .await
            .unwrap_err();
        let lower = err.to_lowercase();
        assert!(
            lower.contains("certificate") || lower.contains("unknownissuer"),
            "{err}"
        );

        let got = echo(client(&certs.ca_pem_path), addr, "localhost").await;
        assert_eq!(got.as_deref(), Ok(PAYLOAD));
    }

    #[tokio::test]
    async fn mtls_requires_a_client_certificate_from_the_ca() {
        let (dir, certs) = dev_certs();
        let paths = TlsPaths {
            ca: Some(certs.ca_pem_path.clone()),
            ..certs.tls_paths()
        };
        let (_server, addr) = start_server(&paths);

        let anonymous = echo(client(&certs.ca_pem_path), addr, "localhost").await;
        assert!(
            anonymous.is_err(),
            "a client without a certificate got through"
        );

        let (cert, key) = generate_client_cert(&dir.path().join("tls"), "bob", dir.path()).unwrap();
        let config = quiver::tls::client_config(&certs.ca_pem_path, Some((&cert, &key))).unwrap();
        let got = echo(config, addr, "localhost").await;
        assert_eq!(got.as_deref(), Ok(PAYLOAD));
    }

    #[tokio::test]
    async fn mtls_refuses_a_client_certificate_from_another_ca() {
        let (_dir, certs) = dev_certs();
        let (other_dir, _other) = dev_certs();
        let paths = TlsPaths {
            ca: Some(certs.ca_pem_path.clone()),
            ..certs.tls_paths()
        };
        let (_server, addr) = start_server(&paths);

        let tls = other_dir.path().join("tls");
        let (cert, key) = generate_client_cert(&tls, "mallory", other_dir.path()).unwrap();
        let config = quiver::tls::client_config(&certs.ca_pem_path, Some((&cert, &key))).unwrap();
        assert!(echo(config, addr, "localhost").await.is_err());
    }
}
