//! The development CA kept in `<data-dir>/tls/`: generated once and reused across restarts, the
//! server certificate it signs (reissued when missing, expiring or signed by another CA), and
//! client certificates for mTLS. Strict DER throughout, so every TLS stack accepts the chain.

use super::files::*;
use super::*;
use crate::cluster::node_name;

/// Makes sure `<data_dir>/tls/` holds a dev CA and a server certificate signed by it, reusing
/// what is there. A broken CA is an error rather than silently replaced, because clients have
/// already been told to trust it; a missing, broken or expiring server certificate is reissued.
pub fn ensure_dev_certs(data_dir: &Path) -> Result<DevCerts, TlsError> {
    let dir = data_dir.join("tls");
    create_dir(&dir)?;
    let (ca, ca_generated) = load_or_create_ca(&dir)?;
    let certs = DevCerts {
        ca_pem_path: dir.join(CA_CERT_FILE),
        cert_path: dir.join(SERVER_CERT_FILE),
        key_path: dir.join(SERVER_KEY_FILE),
        generated: true,
    };
    if !ca_generated && server_cert_reusable(&certs, &ca) {
        return Ok(DevCerts {
            generated: false,
            ..certs
        });
    }
    issue_server_cert(&ca, &certs)?;
    Ok(certs)
}

/// How long a node waits for another node that is creating the shared CA.
const CA_LOCK_WAIT: Duration = Duration::from_secs(30);

/// A cluster node's certificates from the development CA shared by the nodes of a local cluster
/// (`--dev-ca DIR`): the first node to start creates `DIR/ca.pem` and `DIR/ca.key` under an
/// exclusive lock file (so nodes started together agree on one CA), and a start issues this
/// node a certificate for both ends of a TLS link, named `quiver-node-<id>` and the loopback names
/// (its peers and its clients check it), kept in `<data_dir>/tls/` and reused while it is good.
pub fn ensure_cluster_dev_certs(
    ca_dir: &Path,
    data_dir: &Path,
    node_id: u64,
) -> Result<DevCerts, TlsError> {
    create_dir(ca_dir)?;
    let ca = {
        let lock = ca_dir.join("ca.lock");
        let _lock = crate::util::LockFile::take(&lock, CA_LOCK_WAIT)
            .map_err(|source| TlsError::Write { path: lock, source })?;
        load_or_create_ca(ca_dir)?.0
    };
    let dir = data_dir.join("tls");
    create_dir(&dir)?;
    let certs = DevCerts {
        ca_pem_path: ca_dir.join(CA_CERT_FILE),
        cert_path: dir.join(format!("node-{node_id}.pem")),
        key_path: dir.join(format!("node-{node_id}.key")),
        generated: true,
    };
    // Issued at an earlier start (or a moment ago, for the client listener) and still good.
    if server_cert_reusable(&certs, &ca) {
        return Ok(DevCerts {
            generated: false,
            ..certs
        });
    }
    let key = new_key("node key")?;
    let cert = node_params(node_id)?
        .signed_by(&key, &ca.issuer, &ca.key)
        .map_err(generate_err("node certificate"))?;
    ca.check_server(cert.der(), UnixTime::now())?;
    ca.self_check_client(cert.der())?;
    write_file(&certs.key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&certs.cert_path, cert.pem().as_bytes(), false)?;
    Ok(certs)
}

fn node_params(node_id: u64) -> Result<CertificateParams, TlsError> {
    let mut sans: Vec<String> = SERVER_SANS.iter().map(|s| s.to_string()).collect();
    sans.push(node_name(node_id));
    let mut params = CertificateParams::new(sans).map_err(generate_err("node names"))?;
    params.distinguished_name = common_name(&node_name(node_id));
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    leaf_defaults(&mut params);
    Ok(params)
}

/// Signs a client certificate (CN = `name`, ClientAuth) with the dev CA in `ca_dir` (the folder
/// holding `ca.pem` and `ca.key`, i.e. `<data-dir>/tls`). Writes `<out_dir>/<name>.pem` and
/// `<out_dir>/<name>.key` and returns those paths.
pub fn generate_client_cert(
    ca_dir: &Path,
    name: &str,
    out_dir: &Path,
) -> Result<(PathBuf, PathBuf), TlsError> {
    check_name(name)?;
    let ca = DevCa::load(ca_dir)?;
    let key = new_key("client key")?;
    let cert = client_params(name)
        .signed_by(&key, &ca.issuer, &ca.key)
        .map_err(generate_err("client certificate"))?;
    ca.self_check_client(cert.der())?;
    create_dir(out_dir)?;
    let cert_path = out_dir.join(format!("{name}.pem"));
    let key_path = out_dir.join(format!("{name}.key"));
    write_file(&key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&cert_path, cert.pem().as_bytes(), false)?;
    Ok((cert_path, key_path))
}

/// The name becomes a file name, so it must not be able to escape `out_dir`.
fn check_name(name: &str) -> Result<(), TlsError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.starts_with('.') || !name.chars().all(allowed) {
        return Err(TlsError::InvalidName(name.to_owned()));
    }
    Ok(())
}

/// A loaded or fresh CA: rcgen needs a `Certificate` describing the issuer to sign with it.
struct DevCa {
    issuer: Certificate,
    key: KeyPair,
    der: CertificateDer<'static>,
    pem_path: PathBuf,
}

impl DevCa {
    fn generate(dir: &Path) -> Result<Self, TlsError> {
        let key = new_key("CA key")?;
        let issuer = ca_params()
            .self_signed(&key)
            .map_err(generate_err("CA certificate"))?;
        let der = issuer.der().clone();
        let pem_path = dir.join(CA_CERT_FILE);
        Ok(DevCa {
            issuer,
            key,
            der,
            pem_path,
        })
    }

    fn load(dir: &Path) -> Result<Self, TlsError> {
        let pem_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let der = first_cert(&pem_path, "CA certificate")?;
        let key_pem = read_string(&key_path, "CA key")?;
        let key = KeyPair::from_pem(&key_pem).map_err(parse_err("CA key", &key_path))?;
        // Rebuilding the issuer from the file (not from our constants) keeps its exact subject
        // and key identifier, which webpki compares byte for byte when building the chain.
        let issuer = CertificateParams::from_ca_cert_der(&der)
            .and_then(|params| params.self_signed(&key))
            .map_err(parse_err("CA certificate", &pem_path))?;
        Ok(DevCa {
            issuer,
            key,
            der,
            pem_path,
        })
    }

    fn save(&self, dir: &Path) -> Result<(), TlsError> {
        write_file(
            &dir.join(CA_KEY_FILE),
            self.key.serialize_pem().as_bytes(),
            true,
        )?;
        write_file(&self.pem_path, self.issuer.pem().as_bytes(), false)
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.der.clone())
            .map_err(|source| self.self_check_err(source))?;
        Ok(Arc::new(roots))
    }

    /// Verifies a server certificate the way a client would, at `now` (later than the real now
    /// when checking that a reused certificate is not about to expire).
    fn check_server(&self, leaf: &CertificateDer<'_>, now: UnixTime) -> Result<(), TlsError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .map_err(|e| self.self_check_err(rustls::Error::General(e.to_string())))?;
        // An IP name needs no parsing; the SAN list always carries 127.0.0.1 next to localhost.
        let name = ServerName::IpAddress(IpAddr::from(Ipv4Addr::LOCALHOST).into());
        verifier
            .verify_server_cert(leaf, &[], &name, &[], now)
            .map(drop)
            .map_err(|source| self.self_check_err(source))
    }

    /// Catches a `ca.key` that does not belong to `ca.pem` before handing out a useless cert.
    fn self_check_client(&self, leaf: &CertificateDer<'_>) -> Result<(), TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .map_err(|e| self.self_check_err(rustls::Error::General(e.to_string())))?;
        verifier
            .verify_client_cert(leaf, &[], UnixTime::now())
            .map(drop)
            .map_err(|source| self.self_check_err(source))
    }

    fn self_check_err(&self, source: rustls::Error) -> TlsError {
        TlsError::SelfCheck {
            ca: self.pem_path.clone(),
            source,
        }
    }
}

fn load_or_create_ca(dir: &Path) -> Result<(DevCa, bool), TlsError> {
    if dir.join(CA_CERT_FILE).exists() && dir.join(CA_KEY_FILE).exists() {
        return Ok((DevCa::load(dir)?, false));
    }
    let ca = DevCa::generate(dir)?;
    ca.save(dir)?;
    tracing::info!(ca = %ca.pem_path.display(), "generated a development CA");
    Ok((ca, true))
}

/// True when the server pair on disk matches, chains to `ca` and outlives the renewal margin.
/// Any failure only means "reissue", so it is logged rather than returned.
fn server_cert_reusable(certs: &DevCerts, ca: &DevCa) -> bool {
    if !certs.cert_path.exists() || !certs.key_path.exists() {
        return false;
    }
    let check = || -> Result<(), TlsError> {
        let chain = read_certs(&certs.cert_path, "certificate")?;
        let key = read_key(&certs.key_path)?;
        let leaf = first_cert(&certs.cert_path, "certificate")?;
        if encodes_default_ca_flag(&leaf) {
            let path = certs.cert_path.clone();
            return Err(TlsError::NotDer { path });
        }
        CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Identity {
            cert: certs.cert_path.clone(),
            key: certs.key_path.clone(),
            source,
        })?;
        let later = SystemTime::now() + RENEW_MARGIN;
        ca.check_server(&leaf, UnixTime::since_unix_epoch(unix_secs(later)))
    };
    match check() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "reissuing the development server certificate");
            false
        }
    }
}

/// The OID of the BasicConstraints extension (2.5.29.19).
const BASIC_CONSTRAINTS_OID: &[u64] = &[2, 5, 29, 19];

/// Whether `cert` carries the critical BasicConstraints `cA: FALSE` that older builds wrote
/// (extension OID, critical TRUE, then the value `SEQUENCE { BOOLEAN FALSE }`): not DER.
fn encodes_default_ca_flag(cert: &[u8]) -> bool {
    const EXPLICIT_FALSE: [u8; 15] = [
        0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x05, 0x30, 0x03, 0x01, 0x01, 0x00,
    ];
    cert.windows(EXPLICIT_FALSE.len())
        .any(|w| w == EXPLICIT_FALSE)
}

fn unix_secs(t: SystemTime) -> Duration {
    // A clock before 1970 only makes the check stricter; it cannot make it pass wrongly.
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
}

fn issue_server_cert(ca: &DevCa, certs: &DevCerts) -> Result<(), TlsError> {
    let key = new_key("server key")?;
    let cert = server_params()?
        .signed_by(&key, &ca.issuer, &ca.key)
        .map_err(generate_err("server certificate"))?;
    ca.check_server(cert.der(), UnixTime::now())?;
    write_file(&certs.key_path, key.serialize_pem().as_bytes(), true)?;
    write_file(&certs.cert_path, cert.pem().as_bytes(), false)?;
    tracing::info!(cert = %certs.cert_path.display(), "issued a development server certificate");
    Ok(())
}

fn new_key(what: &'static str) -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate_err(what))
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_VALIDITY_DAYS);
    params
}

fn server_params() -> Result<CertificateParams, TlsError> {
    let sans: Vec<String> = SERVER_SANS.iter().map(|s| s.to_string()).collect();
    let mut params = CertificateParams::new(sans).map_err(generate_err("server names"))?;
    params.distinguished_name = common_name(SERVER_COMMON_NAME);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_defaults(&mut params);
    Ok(params)
}

fn client_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf_defaults(&mut params);
    params
}

/// What every leaf needs for strict stacks: an explicit "not a CA", a signature key usage and
/// an authority key identifier so OpenSSL-style chain building finds the issuer directly.
///
/// "Not a CA" is a critical BasicConstraints extension holding an empty SEQUENCE: `cA` is
/// DEFAULT FALSE, and DER forbids encoding a default, so rcgen's `IsCa::ExplicitNoCa` (which
/// writes `cA: FALSE`) is refused by strict parsers (Python's `cryptography`, hence aioquic).
fn leaf_defaults(params: &mut CertificateParams) {
    params.is_ca = IsCa::NoCa;
    let mut not_a_ca = CustomExtension::from_oid_content(BASIC_CONSTRAINTS_OID, vec![0x30, 0x00]);
    not_a_ca.set_criticality(true);
    params.custom_extensions.push(not_a_ca);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(params, LEAF_VALIDITY_DAYS);
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn set_validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // Backdated a day so a peer whose clock is slightly behind still accepts a fresh cert.
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
}

fn generate_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |source| TlsError::Generate { what, source }
}

fn parse_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(rcgen::Error) -> TlsError + 'a {
    move |source| TlsError::Parse {
        what,
        path: path.to_owned(),
        source,
    }
}

// ---------------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_der(path: &Path) -> Vec<u8> {
        first_cert(path, "certificate").unwrap().to_vec()
    }

    #[test]
    fn leaves_say_not_a_ca_in_strict_der() {
        let dir = tempfile::tempdir().unwrap();
        let certs = ensure_dev_certs(dir.path()).unwrap();
        let (client, _) = generate_client_cert(&dir.path().join("tls"), "bob", dir.path()).unwrap();
        for leaf in [leaf_der(&certs.cert_path), leaf_der(&client)] {
            assert!(!encodes_default_ca_flag(&leaf));
            // The critical BasicConstraints with an empty SEQUENCE: "not a CA", encoded as DER.
            let empty = [
                0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x02, 0x30, 0x00,
            ];
            assert!(leaf.windows(empty.len()).any(|w| w == empty));
        }
    }

    #[test]
    fn a_server_cert_of_an_older_build_is_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let certs = ensure_dev_certs(dir.path()).unwrap();
        // What builds before the fix wrote: `cA: FALSE` encoded explicitly.
        let ca = DevCa::load(&dir.path().join("tls")).unwrap();
        let key = KeyPair::from_pem(&fs::read_to_string(&certs.key_path).unwrap()).unwrap();
        let mut params = server_params().unwrap();
        params.custom_extensions.clear();
        params.is_ca = IsCa::ExplicitNoCa;
        let old = params.signed_by(&key, &ca.issuer, &ca.key).unwrap();
        assert!(encodes_default_ca_flag(old.der()));
        fs::write(&certs.cert_path, old.pem()).unwrap();

        let again = ensure_dev_certs(dir.path()).unwrap();
        assert!(again.generated);
        assert!(!encodes_default_ca_flag(&leaf_der(&again.cert_path)));
    }
}
