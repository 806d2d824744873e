//! The engine's certificate authority and server certificate.
//!
//! The CA (`ca.pem`, `ca-key.pem` with mode 0600) lives in the state
//! directory (mode 0700 when the engine creates it; see `state_dir` for
//! what an existing one must satisfy) and is reused on restart; a fresh server certificate for
//! `localhost`, `127.0.0.1` and `::1` is issued from it at every start.
//! Both are shaped for strict verifiers (OpenSSL/Python, webpki): the CA
//! has `basicConstraints CA:true, pathlen:0` (critical), `keyUsage
//! keyCertSign, cRLSign`, a subject key identifier and name constraints
//! limiting it to `localhost` and loopback addresses; the leaf has SANs,
//! `extendedKeyUsage serverAuth`, `CA:false` and an authority key
//! identifier.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use super::dates;
use crate::error::{code, Error, ErrorKind, Result};
use crate::transport::provider;

const CA_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca-key.pem";

fn ca_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, code::LOCAL_ENGINE_CA, message.into())
}

fn cert_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Tls,
        code::LOCAL_ENGINE_CA,
        format!("{what}: {e}"),
    )
}

/// The CA and the server certificate of one engine run.
pub(crate) struct EngineTls {
    pub(crate) ca_pem: String,
    pub(crate) ca_file: PathBuf,
    leaf: CertificateDer<'static>,
    leaf_key: PrivateKeyDer<'static>,
}

/// The `rustls` server configurations the engine needs.
pub(crate) struct ServerConfigs {
    /// The engine port: `rstrm/1`, then the Engine API's `h2`, `http/1.1`.
    pub(crate) engine: Arc<ServerConfig>,
    /// Published `http` tunnels: `[http/1.1]` or `[h2, http/1.1]`, each
    /// with TLS 1.2+ or TLS 1.3 only.
    https: [Arc<ServerConfig>; 4],
    /// The same for `mtls_auth` tunnels: a client certificate issued by
    /// the edge client CA is required. `None` without an edge CA.
    mtls_https: Option<[Arc<ServerConfig>; 4]>,
}

impl ServerConfigs {
    /// The configuration for a published `http` tunnel.
    pub(crate) fn https(&self, h2: bool, tls13_only: bool) -> Arc<ServerConfig> {
        self.https[usize::from(h2) * 2 + usize::from(tls13_only)].clone()
    }

    /// The configuration for a published `http` tunnel with `mtls_auth`:
    /// `None` when the engine has no edge client CA.
    pub(crate) fn mtls_https(&self, h2: bool, tls13_only: bool) -> Option<Arc<ServerConfig>> {
        self.mtls_https
            .as_ref()
            .map(|c| c[usize::from(h2) * 2 + usize::from(tls13_only)].clone())
    }
}

impl EngineTls {
    /// Loads the CA from `dir` (creating it, and `dir`, when absent) and
    /// issues this run's server certificate. An existing `dir` and CA
    /// files must pass the `state_dir` checks (owner and mode).
    pub(crate) fn load_or_create(dir: &Path) -> Result<Self> {
        super::state_dir::prepare(dir)?;
        let ca_file = dir.join(CA_FILE);
        let key_file = dir.join(CA_KEY_FILE);
        let (ca_pem, ca_key) = match (ca_file.exists(), key_file.exists()) {
            (true, true) => {
                super::state_dir::check_key(&key_file)?;
                super::state_dir::check_certificate(&ca_file)?;
                load_ca(&ca_file, &key_file)?
            }
            (false, false) => create_ca(&ca_file, &key_file)?,
            _ => {
                return Err(ca_error(format!(
                    "{} holds only one of {CA_FILE} and {CA_KEY_FILE}; remove the other or use a fresh state directory",
                    dir.display()
                )))
            }
        };
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| ca_error(format!("{}: malformed PEM ({e})", ca_file.display())))?;
        let issuer = Issuer::new(ca_params(&ca_key)?, ca_key);

        let leaf_key = KeyPair::generate().map_err(|e| cert_error("generating a key", e))?;
        let leaf = leaf_params()?
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| cert_error("issuing the server certificate", e))?;
        let leaf = leaf.der().clone();
        check_chain(&ca_der, &leaf).map_err(|e| {
            ca_error(format!(
                "{} does not match {CA_KEY_FILE} ({e}); use a fresh state directory",
                ca_file.display()
            ))
        })?;
        Ok(EngineTls {
            ca_pem,
            ca_file,
            leaf,
            leaf_key: PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        })
    }

    /// Builds every server configuration (each with its own session cache
    /// and ticketer, so clients resume sessions). With `client_ca`, the
    /// engine port (only) asks for client certificates issued by it. With
    /// `edge_ca`, the `mtls_auth` configurations require client
    /// certificates issued by that one (a separate trust: agents and
    /// downstream users are different populations).
    pub(crate) fn server_configs(
        &self,
        client_ca: Option<&ClientCa>,
        edge_ca: Option<&ClientCa>,
    ) -> Result<ServerConfigs> {
        let h1: &[&[u8]] = &[b"http/1.1"];
        let h2: &[&[u8]] = &[b"h2", b"http/1.1"];
        let engine_auth = client_ca.map(ClientCa::verifier).transpose()?;
        let mtls_https = match edge_ca {
            None => None,
            Some(ca) => {
                let verifier = ca.verifier()?;
                Some([
                    self.server_config(h1, false, Some(verifier.clone()))?,
                    self.server_config(h1, true, Some(verifier.clone()))?,
                    self.server_config(h2, false, Some(verifier.clone()))?,
                    self.server_config(h2, true, Some(verifier))?,
                ])
            }
        };
        Ok(ServerConfigs {
            engine: self.server_config(
                &[crate::proto::ALPN, b"h2", b"http/1.1"],
                false,
                engine_auth,
            )?,
            https: [
                self.server_config(h1, false, None)?,
                self.server_config(h1, true, None)?,
                self.server_config(h2, false, None)?,
                self.server_config(h2, true, None)?,
            ],
            mtls_https,
        })
    }

    fn server_config(
        &self,
        alpn: &[&[u8]],
        tls13_only: bool,
        client_auth: Option<Arc<dyn ClientCertVerifier>>,
    ) -> Result<Arc<ServerConfig>> {
        let builder = ServerConfig::builder_with_provider(provider());
        let builder = if tls13_only {
            builder.with_protocol_versions(&[&rustls::version::TLS13])
        } else {
            builder.with_safe_default_protocol_versions()
        }
        .map_err(|e| Error::tls("local engine TLS configuration", e))?;
        let builder = match client_auth {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(vec![self.leaf.clone()], self.leaf_key.clone_key())
            .map_err(|e| Error::tls("local engine TLS configuration", e))?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
        config.ticketer = rustls::crypto::ring::Ticketer::new()
            .map_err(|e| Error::tls("local engine TLS session tickets", e))?;
        Ok(Arc::new(config))
    }
}

#[cfg(feature = "dtls")]
impl EngineTls {
    /// The DTLS server of published `dtls` tunnels: the same certificate
    /// and key as published `http` endpoints (ECDSA P-256, from
    /// `KeyPair::generate`), so downstream clients trust it with the same
    /// CA file.
    pub(crate) fn dtls_server(
        &self,
        handshake_timeout: std::time::Duration,
    ) -> Result<super::dtls::Server> {
        super::dtls::Server::new(
            self.leaf.to_vec(),
            self.leaf_key.secret_der().to_vec(),
            handshake_timeout,
        )
    }
}

/// The CA(s) whose client certificates authenticate agents (mTLS).
pub(crate) struct ClientCa {
    roots: Arc<RootCertStore>,
    /// Refuse TLS handshakes without a (verified) client certificate.
    required: bool,
}

impl ClientCa {
    /// Trusts every certificate of the PEM bundles (`what` names each one
    /// in errors). Fails when a bundle holds no usable certificate.
    pub(crate) fn from_pems<'a>(
        pems: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        required: bool,
    ) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        for (what, pem) in pems {
            let mut found = false;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|e| client_ca_error(format!("{what}: malformed PEM ({e})")))?;
                roots.add(cert).map_err(|e| {
                    client_ca_error(format!("{what}: not a usable CA certificate ({e})"))
                })?;
                found = true;
            }
            if !found {
                return Err(client_ca_error(format!("{what}: no PEM certificate")));
            }
        }
        if roots.is_empty() {
            return Err(client_ca_error("no client CA certificate".into()));
        }
        Ok(ClientCa {
            roots: Arc::new(roots),
            required,
        })
    }

    fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>> {
        let builder = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider());
        let builder = if self.required {
            builder
        } else {
            builder.allow_unauthenticated()
        };
        builder
            .build()
            .map_err(|e| client_ca_error(format!("client certificate verifier: {e}")))
    }
}

fn client_ca_error(message: String) -> Error {
    Error::config(
        code::INVALID_CONFIG,
        format!("local engine client CA: {message}"),
    )
}

/// How an engine connection's verified client certificate identifies the
/// agent: `sha256:<hex>` of the leaf's DER, and its subject common name.
pub(crate) fn client_identity(leaf: &CertificateDer<'_>) -> (String, Option<String>) {
    let fingerprint = format!("sha256:{}", hex::encode(Sha256::digest(leaf.as_ref())));
    (fingerprint, subject_common_name(leaf.as_ref()))
}

/// One DER element: (tag, contents, rest). `None` on malformed input.
fn der_next(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject CN of an X.509 certificate, by a minimal DER walk
/// (`None` when absent, not a string, or the DER is malformed).
fn subject_common_name(der: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const CN_OID: &[u8] = &[0x55, 0x04, 0x03];
    let (tag, cert, _) = der_next(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = der_next(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut fields = tbs;
    // [0] version (optional), serial, signature, issuer, validity, subject.
    if fields.first() == Some(&0xa0) {
        fields = der_next(fields)?.2;
    }
    for _ in 0..4 {
        fields = der_next(fields)?.2;
    }
    let (tag, mut rdns, _) = der_next(fields)?;
    if tag != SEQUENCE {
        return None;
    }
    while !rdns.is_empty() {
        let (tag, mut set, rest) = der_next(rdns)?;
        rdns = rest;
        if tag != SET {
            return None;
        }
        while !set.is_empty() {
            let (_, attr, rest) = der_next(set)?;
            set = rest;
            let (tag, oid, value) = der_next(attr)?;
            if tag != 0x06 || oid != CN_OID {
                continue;
            }
            let (tag, value, _) = der_next(value)?;
            // UTF8String, PrintableString, IA5String, T61String (as Latin-1 is
            // not worth it: only when ASCII).
            return match tag {
                0x0c | 0x13 | 0x16 | 0x14 => std::str::from_utf8(value)
                    .ok()
                    .filter(|s| !s.chars().any(char::is_control))
                    .map(str::to_owned),
                _ => None,
            };
        }
    }
    None
}

fn load_ca(ca_file: &Path, key_file: &Path) -> Result<(String, KeyPair)> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| Error::io(format!("reading {}", p.display()), e))
    };
    let ca_pem = read(ca_file)?;
    let key = KeyPair::from_pem(&read(key_file)?).map_err(|e| {
        ca_error(format!(
            "{}: not a usable private key ({e})",
            key_file.display()
        ))
    })?;
    Ok((ca_pem, key))
}

fn create_ca(ca_file: &Path, key_file: &Path) -> Result<(String, KeyPair)> {
    let key = KeyPair::generate().map_err(|e| cert_error("generating the CA key", e))?;
    let mut params = ca_params(&key)?;
    params.serial_number = Some(random_serial());
    params.not_before = dates::midnight_in_days(-1);
    params.not_after = dates::midnight_in_days(3650);
    let cert = params
        .self_signed(&key)
        .map_err(|e| cert_error("creating the CA certificate", e))?;
    let ca_pem = cert.pem();
    // Key first: a crash in between leaves a key without a CA, which is
    // reported rather than silently replaced.
    write_file(key_file, key.serialize_pem().as_bytes(), true)?;
    write_file(ca_file, ca_pem.as_bytes(), false)?;
    Ok((ca_pem, key))
}

/// Writes `path` atomically (temp file + rename); `secret` files get mode 0600.
fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret;
    let result = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(contents).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(format!("writing {}", path.display()), e));
    }
    Ok(())
}

/// The CA's parameters. Everything the leaf's issuer field and authority
/// key identifier depend on is derived from the key, so a reloaded key
/// yields the same issuer as the one that signed `ca.pem`.
fn ca_params(key: &KeyPair) -> Result<CertificateParams> {
    let fingerprint = hex::encode(&Sha256::digest(key.public_key_raw())[..4]);
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "rstream local engine");
    dn.push(
        DnType::CommonName,
        format!("rstream local engine CA {fingerprint}"),
    );
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![
            GeneralSubtree::DnsName("localhost".into()),
            GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix([127, 0, 0, 0], 8)),
            GeneralSubtree::IpAddress(CidrSubnet::from_v6_prefix(
                std::net::Ipv6Addr::LOCALHOST.octets(),
                128,
            )),
        ],
        excluded_subtrees: Vec::new(),
    });
    Ok(params)
}

fn leaf_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::DnsName(
            "localhost"
                .try_into()
                .map_err(|e| cert_error("server certificate name", e))?,
        ),
        SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()),
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    params.not_before = dates::midnight_in_days(-1);
    params.not_after = dates::midnight_in_days(365);
    Ok(params)
}

/// Verifies the fresh leaf against the CA as a client would (webpki).
fn check_chain(ca: &CertificateDer<'static>, leaf: &CertificateDer<'static>) -> Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| cert_error("CA certificate", e))?;
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| cert_error("verifier", e))?;
    for name in ["localhost", "127.0.0.1"] {
        let name = ServerName::try_from(name).map_err(|e| cert_error("server name", e))?;
        verifier
            .verify_server_cert(leaf, &[], &name, &[], UnixTime::now())
            .map_err(|e| cert_error("certificate check", e))?;
    }
    Ok(())
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01; // positive, and no leading zero byte to strip
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_identities() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "org");
        dn.push(DnType::CommonName, "agent-7");
        params.distinguished_name = dn;
        let cert = params.self_signed(&key).unwrap();
        let (fingerprint, cn) = client_identity(cert.der());
        assert_eq!(fingerprint.len(), "sha256:".len() + 64);
        assert!(fingerprint.starts_with("sha256:"));
        assert_eq!(cn.as_deref(), Some("agent-7"));
        // No CN, and malformed DER at every length: no name, no panic.
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "org");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(subject_common_name(cert.der()), None);
        let der = cert.der().as_ref();
        for n in 0..der.len() {
            let _ = subject_common_name(&der[..n]);
        }
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }

    #[test]
    fn creates_then_reuses_the_ca() {
        let dir = std::env::temp_dir().join(format!(
            "rstream-engine-certs-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let first = EngineTls::load_or_create(&dir).unwrap();
        let second = EngineTls::load_or_create(&dir).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_ne!(first.leaf, second.leaf);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(CA_KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        first.server_configs(None, None).unwrap();
        std::fs::remove_file(dir.join(CA_FILE)).unwrap();
        assert!(EngineTls::load_or_create(&dir).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
