//! TLS settings and the client-side `rustls` configuration.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::error::{code, Error, ErrorKind, Result};

/// The crypto provider used everywhere in this crate: ring (feature `ring`,
/// the default: pure Rust + asm, no cmake), or aws-lc-rs (feature
/// `aws-lc-rs`, when `ring` is off).
///
/// The provider's suites, AES-128-GCM first: the TLS 1.3 mandatory suite, as strong
/// as any in practice, about a third cheaper per byte than AES-256-GCM, and
/// its SHA-256 key schedule runs on the SHA extensions most CPUs have
/// (SHA-384 has no such path): resumed handshakes and bulk transfer are
/// both measurably cheaper (docs/BENCHMARKS.md). Peers that insist on the
/// other suites still get them.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    use rustls::CipherSuite as S;
    let mut provider = default_provider();
    // Stable: otherwise the provider's order (TLS 1.3 before TLS 1.2) is kept.
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            S::TLS13_AES_128_GCM_SHA256 => 0,
            S::TLS13_AES_256_GCM_SHA384 | S::TLS13_CHACHA20_POLY1305_SHA256 => 1,
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 2,
            _ => 3,
        });
    Arc::new(provider)
}

/// The selected provider with its own suite order (ring wins when both
/// features are on, as the default feature set plus `aws-lc-rs` would be;
/// `local-engine` compiles ring anyway, so alone it means ring).
#[cfg(any(
    feature = "ring",
    all(feature = "local-engine", not(feature = "aws-lc-rs"))
))]
fn default_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The selected provider with its own suite order (`aws-lc-rs` without `ring`).
#[cfg(all(feature = "aws-lc-rs", not(feature = "ring")))]
fn default_provider() -> CryptoProvider {
    rustls::crypto::aws_lc_rs::default_provider()
}

#[cfg(not(any(feature = "ring", feature = "aws-lc-rs", feature = "local-engine")))]
compile_error!(
    "rstream needs a TLS crypto provider: enable the `ring` feature (a default \
     feature) or `aws-lc-rs` (e.g. `default-features = false, features = [\"axum\", \"aws-lc-rs\"]`)"
);

/// TLS settings shared by every connection a client makes (control channel,
/// private dials and proxy connections).
///
/// Server certificates are verified against the webpki roots (plus the
/// operating system's roots with the `native-roots` feature) and any extra
/// trust anchors added here. Verification can only be turned off with the
/// loudly named [`danger_accept_invalid_certs`](TlsOptions::danger_accept_invalid_certs).
#[derive(Clone, Default)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct TlsOptions {
    pub(crate) extra_roots: Vec<CertificateDer<'static>>,
    pub(crate) accept_invalid_certs: bool,
    pub(crate) identity: Option<ClientIdentity>,
    pub(crate) server_name: Option<String>,
}

/// A client certificate chain and its private key (mTLS).
#[derive(Clone)]
pub struct ClientIdentity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: Arc<PrivateKeyDer<'static>>,
}

impl ClientIdentity {
    /// Parses a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        let chain = parse_certs(cert_pem, "client certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            Error::config(
                code::INVALID_CONFIG,
                "client key: no usable PEM private key",
            )
            .with_source(e)
        })?;
        Ok(ClientIdentity {
            chain,
            key: Arc::new(key),
        })
    }

    /// Reads [`from_pem`](Self::from_pem) input from two files.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self> {
        let cert_pem = read_file(cert.as_ref(), "client certificate")?;
        let key_pem = read_file(key.as_ref(), "client key")?;
        Self::from_pem(&cert_pem, &key_pem)
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("certificates", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("extra_roots", &self.extra_roots.len())
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("identity", &self.identity)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl TlsOptions {
    /// Default settings: webpki roots, verification on, no client certificate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every certificate of a PEM bundle as an extra trust anchor.
    pub fn add_ca_pem(mut self, pem: &[u8]) -> Result<Self> {
        self.extra_roots.extend(parse_certs(pem, "CA file")?);
        Ok(self)
    }

    /// Adds the certificates of a PEM file as extra trust anchors
    /// (what `RSTREAM_CA_FILE` does).
    pub fn add_ca_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let pem = read_file(path.as_ref(), "CA file")?;
        self.add_ca_pem(&pem)
    }

    /// Presents a client certificate (mTLS agent authentication).
    pub fn client_identity(mut self, identity: ClientIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Overrides the TLS server name (SNI and certificate name) used for the engine.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// **Disables server certificate verification** (chain and host name).
    /// Anyone on the path can then impersonate the engine. For tests only.
    pub fn danger_accept_invalid_certs(mut self, yes: bool) -> Self {
        self.accept_invalid_certs = yes;
        self
    }

    /// Whether a client certificate is configured.
    pub fn has_client_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// Builds a `rustls` client configuration offering the given ALPN protocols.
    ///
    /// Build it once and share it: its session cache is what lets the many
    /// proxy connections resume TLS sessions.
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::tls("TLS configuration", e))?;
        let builder = if self.accept_invalid_certs {
            tracing::warn!(
                "TLS certificate verification is DISABLED (danger_accept_invalid_certs)"
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            #[cfg(feature = "native-roots")]
            add_native_roots(&mut roots);
            for cert in &self.extra_roots {
                roots.add(cert.clone()).map_err(|e| {
                    Error::new(
                        ErrorKind::Config,
                        code::INVALID_CONFIG,
                        "CA certificate rejected",
                    )
                    .with_source(e)
                })?;
            }
            builder.with_root_certificates(roots)
        };
        let mut config = match &self.identity {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| {
                    Error::config(
                        code::INVALID_CONFIG,
                        "client certificate and key do not match",
                    )
                    .with_source(e)
                })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config.resumption = rustls::client::Resumption::store(Arc::new(SessionStore::default()));
        Ok(Arc::new(config))
    }
}

/// Adds the operating system's trust anchors (feature `native-roots`).
///
/// A store that cannot be read, or a certificate in it that rustls refuses,
/// costs only that anchor: the bundled webpki roots and the extra anchors
/// still apply, and the failure is logged once per configuration built.
#[cfg(feature = "native-roots")]
fn add_native_roots(roots: &mut rustls::RootCertStore) {
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "could not read part of the system's root certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(added, ignored, "system root certificates");
}

/// TLS 1.3 tickets kept per server. Every downstream connection opens a
/// proxy connection, and each TLS 1.3 resumption consumes one ticket (the
/// engine sends two fresh ones once the handshake is over). rustls's
/// default store keeps 8 per server, so a burst of more than 8 concurrent
/// proxy connections falls back to full handshakes (certificate chain
/// verification, several ECDSA operations); 64 covers the default limit of
/// concurrent proxy handshakes.
const TICKETS_PER_SERVER: usize = 64;
/// Servers remembered (the engine, plus `proxy_endpoint`s it names).
const MAX_SERVERS: usize = 32;

/// The client session store behind [`TlsOptions::client_config`]: rustls's
/// in-memory store, with room for [`TICKETS_PER_SERVER`] tickets.
#[derive(Default)]
struct SessionStore {
    /// Keyed by the server name's text (`ServerName::to_str`).
    servers: std::sync::Mutex<std::collections::HashMap<String, ServerSessions>>,
}

#[derive(Default)]
struct ServerSessions {
    kx_hint: Option<rustls::NamedGroup>,
    tls12: Option<rustls::client::Tls12ClientSessionValue>,
    /// Oldest first; the newest is used first (least likely to expire).
    tls13: std::collections::VecDeque<rustls::client::Tls13ClientSessionValue>,
}

impl SessionStore {
    fn with<R>(
        &self,
        name: &ServerName<'_>,
        f: impl FnOnce(&mut ServerSessions) -> R,
    ) -> Option<R> {
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.get_mut(name.to_str().as_ref()).map(f)
    }

    fn edit(&self, name: ServerName<'static>, f: impl FnOnce(&mut ServerSessions)) {
        let name = name.to_str().into_owned();
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if !servers.contains_key(&name) && servers.len() >= MAX_SERVERS {
            // Evict an arbitrary server: a client talks to very few.
            if let Some(victim) = servers.keys().next().cloned() {
                servers.remove(&victim);
            }
        }
        f(servers.entry(name).or_default());
    }
}

impl fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the sessions themselves: they hold secrets.
        f.debug_struct("SessionStore").finish_non_exhaustive()
    }
}

impl rustls::client::ClientSessionStore for SessionStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        self.edit(server_name, |s| s.kx_hint = Some(group));
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.with(server_name, |s| s.kx_hint).flatten()
    }

    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.edit(server_name, |s| s.tls12 = Some(value));
    }

    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.with(server_name, |s| s.tls12.clone()).flatten()
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.with(server_name, |s| s.tls12 = None);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.edit(server_name, |s| {
            if s.tls13.len() >= TICKETS_PER_SERVER {
                s.tls13.pop_front();
            }
            s.tls13.push_back(value);
        });
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        self.with(server_name, |s| s.tls13.pop_back()).flatten()
    }
}

/// Parses a server name for SNI and verification (DNS name or IP literal).
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>> {
    ServerName::try_from(name.to_owned()).map_err(|_| {
        Error::config(
            code::INVALID_CONFIG,
            format!("{name:?} is not a valid TLS server name"),
        )
    })
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::config(
            code::INVALID_CONFIG,
            format!("cannot read {what} {}", path.display()),
        )
        .with_source(e)
    })
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::config(code::INVALID_CONFIG, format!("{what}: malformed PEM")).with_source(e)
        })?;
    if certs.is_empty() {
        return Err(Error::config(
            code::INVALID_CONFIG,
            format!("{what}: no PEM certificate found"),
        ));
    }
    Ok(certs)
}

/// Accepts any server certificate but still checks handshake signatures
/// (so the session keys are at least bound to the presented key). Used by
/// `danger_accept_invalid_certs` and by the local engine's upstream TLS to
/// an application, which brings its own (often self-signed) certificate.
#[derive(Debug)]
pub(crate) struct NoVerification(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rustls::CipherSuite as S;

    /// `native-roots` reads the system store the way OpenSSL does, so
    /// `SSL_CERT_FILE` names it: a CA written there becomes a trust anchor.
    #[cfg(feature = "native-roots")]
    #[test]
    fn native_roots_adds_the_system_store() {
        let key = rcgen::KeyPair::generate().expect("test key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "rstream native-roots test CA");
        let ca = params.self_signed(&key).expect("self-signed CA");
        let dir = std::env::temp_dir().join(format!("rstream-native-roots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("ca.pem");
        std::fs::write(&file, ca.pem()).expect("write CA");
        // Only this test reads SSL_CERT_FILE in this binary.
        std::env::set_var("SSL_CERT_FILE", &file);
        let mut roots = rustls::RootCertStore::empty();
        super::add_native_roots(&mut roots);
        std::env::remove_var("SSL_CERT_FILE");
        let _ = std::fs::remove_dir_all(&dir);
        let cn = b"rstream native-roots test CA";
        assert!(
            roots.roots.iter().any(|anchor| anchor
                .subject
                .as_ref()
                .windows(cn.len())
                .any(|w| w == cn)),
            "the CA from SSL_CERT_FILE is a trust anchor ({} anchors)",
            roots.len()
        );
    }

    #[test]
    fn provider_is_the_one_the_features_choose() {
        // rustls' providers name themselves only through `Debug` of their
        // key provider (`Ring` / `AwsLcRs`).
        let name = format!("{:?}", super::provider().key_provider);
        let expected = if cfg!(feature = "ring") {
            "Ring"
        } else {
            "AwsLcRs"
        };
        assert_eq!(name, expected);
    }

    #[test]
    fn provider_prefers_aes_128_gcm_and_keeps_every_suite() {
        let ours: Vec<S> = super::provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours[0], S::TLS13_AES_128_GCM_SHA256);
        // TLS 1.3 suites before TLS 1.2 ones, AES-128-GCM first in each.
        let tls12_at = ours
            .iter()
            .position(|s| *s == S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
            .expect("the provider offers ECDHE-ECDSA-AES128-GCM");
        assert!(ours[..tls12_at].iter().all(|s| matches!(
            s,
            S::TLS13_AES_128_GCM_SHA256
                | S::TLS13_AES_256_GCM_SHA384
                | S::TLS13_CHACHA20_POLY1305_SHA256
        )));
        let mut theirs: Vec<S> = super::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut sorted = ours.clone();
        theirs.sort_by_key(|s| u16::from(*s));
        sorted.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted, theirs, "reordered, nothing added or dropped");
    }
}
