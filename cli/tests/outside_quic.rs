//! An outside QUIC stack against a real broker: aioquic (Python, from PyPI; TLS through
//! `cryptography`, a strict DER parser) must parse the generated dev certificates and complete a
//! handshake with ALPN `quiver/1` trusting only the dev CA, and must be refused by a broker whose
//! certificate another CA signed. The client is `tests/outside/aioquic_handshake.py`, run in the
//! virtualenv of [`common::outside`].

mod common;

use std::path::Path;
use std::process::Command;

use common::outside::{python, root};
use common::TestBroker;
use quiver_broker::transport::tls::{ensure_dev_certs, generate_client_cert};

/// Runs the aioquic client; returns (success, stdout + stderr).
fn aioquic(port: u16, ca: &Path, parse: &[&Path]) -> (bool, String) {
    let script = root().join("cli/tests/outside/aioquic_handshake.py");
    let out = Command::new(python())
        .arg(script)
        .args(["--port", &port.to_string(), "--ca"])
        .arg(ca)
        .arg("--parse")
        .args(parse)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_parses_the_dev_certificates_and_completes_a_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path()).await;
    let tls = dir.path().join("tls");
    let (client_cert, _) = generate_client_cert(&tls, "outsider", dir.path()).unwrap();
    let ca = tls.join("ca.pem");
    let server = tls.join("server.pem");
    let port = broker.addr.port();

    let (ok, out) =
        tokio::task::spawn_blocking(move || aioquic(port, &ca, &[&ca, &server, &client_cert]))
            .await
            .unwrap();
    assert!(ok, "{out}");
    assert!(out.contains("handshake ok: alpn quiver/1"), "{out}");
    // Both leaves say "not a CA", critically, and parse.
    assert_eq!(out.matches("ca=False critical=True").count(), 2, "{out}");

    // A client that trusts another CA is refused, and says why.
    let other = tempfile::tempdir().unwrap();
    let other_ca = ensure_dev_certs(other.path()).unwrap().ca_pem_path;
    let (ok, out) = tokio::task::spawn_blocking(move || aioquic(port, &other_ca, &[]))
        .await
        .unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains("failed:"), "{out}");
    broker.stop().await;
}
