//! Client-side TLS for QUIC: trusts only the CA certificates the caller names (the broker's dev
//! CA or an operator's own), TLS 1.3 only, ALPN `quiver/1`, optional client certificate for mTLS.
//!
//! Invariant: there are no system roots and no "skip verification" switch; a broker is trusted
//! only through a CA file the user chose.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;

/// The application protocol the broker speaks.
pub const ALPN: &[u8] = b"quiver/1";

// Same windows as the broker (DESIGN.md measured ~830 MB/s with them); the client receives the
// fetch direction, so its receive windows matter as much as the broker's.
const STREAM_RECEIVE_WINDOW: u32 = 16 << 20;
const RECEIVE_WINDOW: u32 = 64 << 20;
const SEND_WINDOW: u64 = 32 << 20;
const KEEP_ALIVE: Duration = Duration::from_secs(5);
const IDLE_TIMEOUT: u32 = 30_000; // milliseconds

/// Where the PEM came from, for error messages only.
const IN_MEMORY: &str = "<in-memory PEM>";

/// Why a client TLS configuration could not be built; file-related variants name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read CA file {path}: {source} (hint: start the broker once, or pass --ca / QUIVER_CA)")]
    ReadCa { path: PathBuf, source: io::Error },
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("invalid PEM in {origin}: {source}")]
    Pem { origin: String, source: pem::Error },
    #[error("no certificate found in {origin}")]
    NoCertificate { origin: String },
    #[error("no private key found in {origin}")]
    NoPrivateKey { origin: String },
    #[error("cannot trust the CA certificate in {origin}: {source}")]
    BadCa {
        origin: String,
        source: rustls::Error,
    },
    #[error("client certificate {cert} and key {key} cannot be used together: {source}")]
    Identity {
        cert: String,
        key: String,
        source: rustls::Error,
    },
    #[error("invalid TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("TLS configuration unusable for QUIC: {0}")]
    Quic(#[from] NoInitialCipherSuite),
}

/// A client certificate chain and its key, with their origins for error messages.
struct Identity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_origin: String,
    key_origin: String,
}

/// Builds a quinn client configuration that trusts only the certificates in `ca_pem`, presenting
/// `client_cert` = (certificate chain PEM, private key PEM) when the broker requires mTLS.
pub fn client_config(
    ca_pem: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<quinn::ClientConfig, TlsError> {
    let ca_bytes = std::fs::read(ca_pem).map_err(|source| TlsError::ReadCa {
        path: ca_pem.to_owned(),
        source,
    })?;
    let roots = roots(&ca_bytes, &ca_pem.display().to_string())?;
    let identity = client_cert.map(identity_from_files).transpose()?;
    build(roots, identity)
}

/// Like [`client_config`] with the PEM contents given directly (tests, embedded CAs).
pub fn client_config_from_pem(
    ca_pem: &[u8],
    client_cert: Option<(&[u8], &[u8])>,
) -> Result<quinn::ClientConfig, TlsError> {
    let roots = roots(ca_pem, IN_MEMORY)?;
    let identity = client_cert
        .map(|(cert, key)| identity_from_pem(cert, IN_MEMORY, key, IN_MEMORY))
        .transpose()?;
    build(roots, identity)
}

fn identity_from_files((cert, key): (&Path, &Path)) -> Result<Identity, TlsError> {
    let cert_bytes = read(cert, "client certificate")?;
    let key_bytes = read(key, "client key")?;
    identity_from_pem(
        &cert_bytes,
        &cert.display().to_string(),
        &key_bytes,
        &key.display().to_string(),
    )
}

fn identity_from_pem(
    cert: &[u8],
    cert_origin: &str,
    key: &[u8],
    key_origin: &str,
) -> Result<Identity, TlsError> {
    Ok(Identity {
        certs: certs(cert, cert_origin)?,
        key: private_key(key, key_origin)?,
        cert_origin: cert_origin.to_owned(),
        key_origin: key_origin.to_owned(),
    })
}

fn build(
    roots: RootCertStore,
    identity: Option<Identity>,
) -> Result<quinn::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut tls = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(id.certs, id.key)
            .map_err(|source| TlsError::Identity {
                cert: id.cert_origin,
                key: id.key_origin,
                source,
            })?,
    };
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

fn transport_config() -> quinn::TransportConfig {
    transport_config_with(Duration::from_millis(IDLE_TIMEOUT.into()))
}

/// The client transport with another idle timeout (keep-alives at a third of it, at most 5 s).
pub(crate) fn transport_config_with(idle: Duration) -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    let idle_ms = u32::try_from(idle.as_millis()).unwrap_or(u32::MAX).max(300);
    transport
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(RECEIVE_WINDOW.into())
        .send_window(SEND_WINDOW)
        .mtu_discovery_config(Some(quiver_wire::packets::mtu_discovery()))
        // The broker never opens streams towards a client; quinn keeps state for each allowed.
        .max_concurrent_bidi_streams(0u8.into())
        .max_concurrent_uni_streams(0u8.into())
        .keep_alive_interval(Some(KEEP_ALIVE.min(idle / 3)))
        .max_idle_timeout(Some(quinn::VarInt::from_u32(idle_ms).into()));
    transport
}

/// Every certificate in the PEM becomes a trust anchor; one that cannot is an error rather than
/// silently skipped, so a bad CA file is reported here and not as a confusing handshake failure.
fn roots(pem: &[u8], origin: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(pem, origin)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            origin: origin.to_owned(),
            source,
        })?;
    }
    Ok(roots)
}

fn certs(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            origin: origin.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            origin: origin.to_owned(),
        });
    }
    Ok(certs)
}

fn private_key(pem: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|source| match source {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            origin: origin.to_owned(),
        },
        source => TlsError::Pem {
            origin: origin.to_owned(),
            source,
        },
    })
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_names_it_and_hints() {
        let path = Path::new("./quiver-data/tls/does-not-exist.pem");
        let text = client_config(path, None).unwrap_err().to_string();
        assert!(
            text.starts_with("cannot read CA file ./quiver-data/tls/does-not-exist.pem: "),
            "{text}"
        );
        assert!(text.contains("hint: start the broker once"), "{text}");
    }

    #[test]
    fn pem_without_certificates_is_rejected() {
        let err = client_config_from_pem(b"nothing here\n", None).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    }
}
