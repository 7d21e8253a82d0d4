//! TLS for the links between cluster nodes: mutual TLS 1.3 on both ends, every certificate
//! checked against the cluster's CA, ALPN `quiver-raft/1`. A node dials a peer by the name
//! `quiver-node-<id>`, so a certificate issued to one node cannot stand in for another.

use quinn::crypto::rustls::QuicClientConfig;

use super::*;

/// The protocol of node-to-node links (Raft messages and forwarded admin writes).
pub const PEER_ALPN: &[u8] = b"quiver-raft/1";

/// The server and client configurations of a node's peer endpoint: `cert`/`key` prove this node,
/// `ca` is what every peer's certificate must chain to.
pub fn peer_configs(
    cert: &Path,
    key: &Path,
    ca: &Path,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), TlsError> {
    let paths = TlsPaths {
        cert: cert.to_owned(),
        key: key.to_owned(),
        ca: Some(ca.to_owned()),
        client_cert_optional: false,
    };
    let mut server_tls = rustls_server_config(&paths)?;
    server_tls.alpn_protocols = vec![PEER_ALPN.to_vec()];
    let mut server =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(server_tls)?));
    let transport = Arc::new(peer_transport()?);
    server.transport_config(transport.clone());

    let mut roots = RootCertStore::empty();
    for c in read_certs(ca, "cluster CA certificate")? {
        roots.add(c).map_err(|source| TlsError::ClientCa {
            path: ca.to_owned(),
            source,
        })?;
    }
    let mut client_tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(read_certs(cert, "certificate")?, read_key(key)?)
        .map_err(|source| TlsError::Identity {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    client_tls.alpn_protocols = vec![PEER_ALPN.to_vec()];
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(client_tls)?));
    client.transport_config(transport);
    Ok((server, client))
}

/// Peers notice a dead link within seconds (Raft has its own timeouts on top).
fn peer_transport() -> Result<quinn::TransportConfig, TlsError> {
    transport_config(&TransportOptions {
        max_concurrent_streams: 256,
        idle_timeout: Duration::from_secs(3),
        keep_alive: Duration::from_millis(500),
    })
}
