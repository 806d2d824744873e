//! [`TunnelOptions`]: what to ask the engine for, validated before any I/O.

use std::collections::HashMap;

use crate::error::{code, Error, Result};
use crate::proto::TunnelProperties;

/// Most labels one tunnel may carry: 64. [`TunnelOptions::to_properties`]
/// refuses more (`ERR_RSTREAM_INVALID_TUNNEL`) before anything is sent,
/// and the local engine refuses more with `INVALID_REQUEST`: labels are
/// copied into every event, listing and watch snapshot, so their size is
/// bounded where they enter.
pub const MAX_LABELS: usize = 64;

/// Longest label key, in bytes (UTF-8): 63 (a DNS-label-sized key).
/// Enforced like [`MAX_LABELS`].
pub const MAX_LABEL_KEY_BYTES: usize = 63;

/// Longest label value, in bytes (UTF-8): 255. Enforced like [`MAX_LABELS`].
pub const MAX_LABEL_VALUE_BYTES: usize = 255;

/// Checks labels against [`MAX_LABELS`], [`MAX_LABEL_KEY_BYTES`] and
/// [`MAX_LABEL_VALUE_BYTES`]; the message names the bound that was
/// exceeded (and never echoes the oversized key or value). Shared by
/// [`TunnelOptions`] and the local engine, so both apply the same numbers.
pub(crate) fn check_labels(labels: &HashMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels: at most {MAX_LABELS} labels per tunnel (MAX_LABELS)",
            labels.len()
        ));
    }
    for (key, value) in labels {
        if key.len() > MAX_LABEL_KEY_BYTES {
            return Err(format!(
                "a label key of {} bytes: label keys are at most {MAX_LABEL_KEY_BYTES} bytes (MAX_LABEL_KEY_BYTES)",
                key.len()
            ));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(format!(
                "label {:?} has a value of {} bytes: label values are at most {MAX_LABEL_VALUE_BYTES} bytes (MAX_LABEL_VALUE_BYTES)",
                key,
                value.len()
            ));
        }
    }
    Ok(())
}

/// The downstream protocol of a tunnel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// HTTPS at the edge, plaintext HTTP to the tunnel (the default for web apps).
    Http,
    /// TLS passthrough or termination at the edge.
    Tls,
    /// Raw TCP on a published port.
    Tcp,
    /// DTLS at the edge of a published datagram tunnel: the engine
    /// terminates it and the tunnel carries plaintext datagrams
    /// ([`TunnelOptions::dtls`], `docs/DATAGRAMS.md`).
    Dtls,
    /// QUIC (datagram; not supported yet by this SDK, see `docs/DATAGRAMS.md`).
    Quic,
}

impl Protocol {
    /// The wire value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tls => "tls",
            Protocol::Tcp => "tcp",
            Protocol::Dtls => "dtls",
            Protocol::Quic => "quic",
        }
    }
}

/// The HTTP version the engine speaks to the tunnel (upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HttpVersion {
    /// HTTP/1.1 (the default).
    Http11,
    /// HTTP/2 over plaintext with prior knowledge.
    H2c,
    /// HTTP/2 over TLS to the upstream.
    H2,
    /// HTTP/3: the application serves HTTP/3 on a published datagram
    /// tunnel (`rstream::http3::serve`) and the engine forwards each
    /// downstream HTTPS request to it over HTTP/3. Create it with
    /// [`ControlChannel::create_datagram_tunnel`](crate::ControlChannel::create_datagram_tunnel):
    /// `TunnelOptions::http().http_version(HttpVersion::H3)`
    /// (docs/HTTP3.md).
    H3,
}

impl HttpVersion {
    /// The wire value.
    pub fn as_str(&self) -> &'static str {
        match self {
            HttpVersion::Http11 => "http/1.1",
            HttpVersion::H2c => "h2c",
            HttpVersion::H2 => "h2",
            HttpVersion::H3 => "h3",
        }
    }
}

/// TLS handling at the edge for `tls` tunnels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TlsMode {
    /// The edge forwards the client's TLS bytes untouched.
    Passthrough,
    /// The edge terminates TLS.
    Terminated,
}

impl TlsMode {
    fn as_str(&self) -> &'static str {
        match self {
            TlsMode::Passthrough => "passthrough",
            TlsMode::Terminated => "terminated",
        }
    }
}

/// Options for [`ControlChannel::create_tunnel`](crate::ControlChannel::create_tunnel).
///
/// Only what you set is sent; the engine fills the rest. Validation runs
/// before any I/O, and unsupported combinations fail with an explicit error
/// (`ERR_RSTREAM_UNSUPPORTED_TUNNEL` or `ERR_RSTREAM_INVALID_TUNNEL`).
///
/// ```
/// use rstream::{TunnelOptions, HttpVersion};
/// let web = TunnelOptions::http().name("web").publish().http_version(HttpVersion::H2c);
/// let db = TunnelOptions::tcp().port(15432);
/// let private = TunnelOptions::new().name("private-api");
/// # let _ = (web, db, private);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct TunnelOptions {
    name: Option<String>,
    datagram: bool,
    publish: Option<bool>,
    protocol: Option<Protocol>,
    labels: HashMap<String, String>,
    geoip: Vec<String>,
    trusted_ips: Vec<String>,
    tls_mode: Option<TlsMode>,
    tls_alpns: Vec<String>,
    tls_min_version: Option<String>,
    tls_ciphers: Vec<String>,
    mtls_auth: Option<bool>,
    http_version: Option<HttpVersion>,
    datagram_guaranteed_delivery: Option<bool>,
    token_auth: Option<bool>,
    rstream_auth: Option<bool>,
    challenge_mode: Option<bool>,
    hostname: Option<String>,
    port: Option<u32>,
    upstream_tls: Option<bool>,
    allow_cross_region_routing: Option<bool>,
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.$name = Some(value);
            self
        }
    };
}

impl TunnelOptions {
    /// A bytestream tunnel with nothing set (private unless published).
    pub fn new() -> Self {
        Self::default()
    }

    /// A published `http` tunnel (HTTPS at the edge).
    pub fn http() -> Self {
        Self::new().protocol(Protocol::Http).publish()
    }

    /// A `tcp` tunnel (always published).
    pub fn tcp() -> Self {
        Self::new().protocol(Protocol::Tcp)
    }

    /// A published `tls` tunnel.
    pub fn tls() -> Self {
        Self::new().protocol(Protocol::Tls).publish()
    }

    /// A datagram tunnel (`type = "datagram"`): private unless
    /// [published](Self::publish) (then the engine gives it a UDP address).
    /// Create it with
    /// [`ControlChannel::create_datagram_tunnel`](crate::ControlChannel::create_datagram_tunnel)
    /// and dial it with [`Client::dial_datagram`](crate::Client::dial_datagram);
    /// see [`datagram`](crate::datagram).
    pub fn datagram() -> Self {
        Self {
            datagram: true,
            ..Self::default()
        }
    }

    /// A published DTLS datagram tunnel (`type = "datagram"`, `protocol =
    /// "dtls"`): the engine terminates DTLS on its UDP address with its
    /// certificate, and the application receives and sends plaintext
    /// datagrams through the ordinary
    /// [`DatagramTunnel`](crate::DatagramTunnel), one channel per
    /// downstream DTLS session. Same as
    /// `TunnelOptions::datagram().protocol(Protocol::Dtls).publish()`.
    pub fn dtls() -> Self {
        Self::datagram().protocol(Protocol::Dtls).publish()
    }

    /// Whether these options ask for a datagram tunnel.
    pub fn is_datagram(&self) -> bool {
        self.datagram
    }

    /// The tunnel name (others dial it by this name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Publishes the tunnel (internet-facing address).
    pub fn publish(mut self) -> Self {
        self.publish = Some(true);
        self
    }

    /// Keeps the tunnel private (dial only); sends `publish = false` explicitly.
    pub fn private(mut self) -> Self {
        self.publish = Some(false);
        self
    }

    /// Makes these options ask for a datagram tunnel (what
    /// [`TunnelOptions::datagram`] starts from).
    pub(crate) fn into_datagram(mut self) -> Self {
        self.datagram = true;
        self
    }

    /// Adds a label (at most [`MAX_LABELS`] per tunnel, keys up to
    /// [`MAX_LABEL_KEY_BYTES`] and values up to [`MAX_LABEL_VALUE_BYTES`]
    /// bytes; checked by [`to_properties`](Self::to_properties)).
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Adds a GeoIP country code to the allow-list.
    pub fn geoip(mut self, country: impl Into<String>) -> Self {
        self.geoip.push(country.into());
        self
    }

    /// Adds a CIDR (or single IP) to the allow-list of downstream addresses.
    pub fn trusted_ip(mut self, cidr: impl Into<String>) -> Self {
        self.trusted_ips.push(cidr.into());
        self
    }

    /// Adds an ALPN protocol offered at the edge (`tls` tunnels).
    pub fn tls_alpn(mut self, alpn: impl Into<String>) -> Self {
        self.tls_alpns.push(alpn.into());
        self
    }

    /// Adds a TLS cipher suite allowed at the edge.
    pub fn tls_cipher(mut self, cipher: impl Into<String>) -> Self {
        self.tls_ciphers.push(cipher.into());
        self
    }

    /// Minimum TLS version at the edge (e.g. `"1.3"`).
    pub fn tls_min_version(mut self, version: impl Into<String>) -> Self {
        self.tls_min_version = Some(version.into());
        self
    }

    /// Requested public hostname.
    pub fn hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = Some(hostname.into());
        self
    }

    setter!(
        /// The downstream protocol.
        protocol: Protocol
    );
    setter!(
        /// TLS mode at the edge.
        tls_mode: TlsMode
    );
    setter!(
        /// Downstream clients must present a registered certificate.
        mtls_auth: bool
    );
    setter!(
        /// The HTTP version spoken to this tunnel (`h2c` for HTTP/2 apps).
        http_version: HttpVersion
    );
    setter!(
        /// The edge requires a token on downstream requests.
        token_auth: bool
    );
    setter!(
        /// The edge requires an rstream browser login.
        rstream_auth: bool
    );
    setter!(
        /// The edge shows a challenge page first.
        challenge_mode: bool
    );
    setter!(
        /// Published port (`tcp` tunnels), 1–65535.
        port: u32
    );
    setter!(
        /// TLS between the edge and the tunnel.
        upstream_tls: bool
    );
    setter!(
        /// Datagram tunnels: ask the engine for guaranteed (reliable,
        /// ordered) delivery, that is framed datagrams on a stream (plane B)
        /// even where an unreliable QUIC datagram path exists. Over the TLS
        /// transport every channel is framed anyway.
        datagram_guaranteed_delivery: bool
    );
    setter!(
        /// Allow routing through another region.
        allow_cross_region_routing: bool
    );

    /// The name, if set.
    pub fn get_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The first TLS-edge or HTTP option that is set, by name: none of them
    /// applies to tcp or datagram tunnels, whose bytes the engine does not
    /// terminate.
    fn edge_option_set(&self) -> Option<&'static str> {
        [
            ("tls_mode", self.tls_mode.is_some()),
            ("tls_alpns", !self.tls_alpns.is_empty()),
            ("tls_min_version", self.tls_min_version.is_some()),
            ("tls_ciphers", !self.tls_ciphers.is_empty()),
            ("mtls_auth", self.mtls_auth.is_some()),
            ("http_version", self.http_version.is_some()),
            ("upstream_tls", self.upstream_tls.is_some()),
            ("token_auth", self.token_auth.is_some()),
            ("rstream_auth", self.rstream_auth.is_some()),
            ("challenge_mode", self.challenge_mode.is_some()),
        ]
        .into_iter()
        .find_map(|(name, set)| set.then_some(name))
    }

    /// Validates and converts to wire properties (PROTOCOL.md §6).
    pub fn to_properties(&self) -> Result<TunnelProperties> {
        let invalid = |msg: &str| Error::config(code::INVALID_TUNNEL, msg.to_owned());
        let unsupported = |msg: &str| Error::unsupported(code::UNSUPPORTED_TUNNEL, msg.to_owned());
        if self.protocol == Some(Protocol::Quic) {
            return Err(unsupported(
                "quic tunnels (the engine terminating QUIC and mirroring it to the app) are not supported yet; dtls and plain datagram tunnels are: TunnelOptions::dtls(), TunnelOptions::datagram(), docs/DATAGRAMS.md",
            ));
        }
        if self.protocol == Some(Protocol::Dtls) {
            if !self.datagram {
                return Err(invalid(
                    "dtls is a datagram protocol: TunnelOptions::dtls()",
                ));
            }
            if self.publish != Some(true) {
                // A private datagram tunnel carries DTLS end to end as it is.
                return Err(unsupported(
                    "private dtls tunnels are not supported (the engine terminates DTLS on published ones): TunnelOptions::dtls()",
                ));
            }
            if self.upstream_tls == Some(true) {
                return Err(unsupported(
                    "upstream_tls on dtls tunnels (DTLS re-originated to the app) is not supported: the engine terminates DTLS and the app gets plaintext datagrams",
                ));
            }
        }
        let h3 = self.http_version == Some(HttpVersion::H3);
        if self.datagram && h3 && self.protocol == Some(Protocol::Http) {
            // An HTTP/3 upstream: HTTPS at the engine's edge, HTTP/3 to
            // the application; the edge's HTTP options apply.
            if self.publish != Some(true) {
                return Err(invalid(
                    "http_version h3 tunnels are published (TunnelOptions::http() publishes)",
                ));
            }
            if self.tls_mode.is_some() {
                return Err(invalid(
                    "tls_mode is not allowed with http_version h3: the engine terminates the downstream TLS",
                ));
            }
            if self.upstream_tls.is_some() {
                return Err(invalid(
                    "upstream_tls is not allowed with http_version h3: HTTP/3 to the application is always TLS",
                ));
            }
        } else if self.datagram {
            let forbidden = self
                .protocol
                .filter(|p| *p != Protocol::Dtls)
                .map(|_| "protocol");
            if let Some(name) = forbidden.or_else(|| self.edge_option_set()) {
                return Err(invalid(&format!(
                    "{name} is not allowed on datagram tunnels (except protocol dtls, and protocol http with http_version h3)"
                )));
            }
        } else if h3 {
            return Err(unsupported(
                "http_version h3 tunnels are datagram tunnels: create them with ControlChannel::create_datagram_tunnel (the application serves them with rstream::http3::serve)",
            ));
        } else if self.datagram_guaranteed_delivery.is_some() {
            return Err(invalid(
                "datagram_guaranteed_delivery is only allowed on datagram tunnels",
            ));
        }
        if let Some(port) = self.port {
            if self.protocol != Some(Protocol::Tcp) {
                return Err(invalid("port is only allowed with protocol tcp"));
            }
            if !(1..=65535).contains(&port) {
                return Err(invalid("port must be 1-65535"));
            }
        }
        let mut publish = self.publish;
        if self.protocol == Some(Protocol::Tcp) {
            if publish == Some(false) {
                return Err(invalid("tcp tunnels are always published"));
            }
            publish = Some(true);
            let forbidden = self.hostname.is_some().then_some("hostname");
            if let Some(name) = forbidden.or_else(|| self.edge_option_set()) {
                return Err(invalid(&format!("{name} is not allowed on tcp tunnels")));
            }
        }
        if let Some(name) = &self.name {
            if name.trim().is_empty() {
                return Err(invalid("tunnel name must not be blank"));
            }
        }
        check_labels(&self.labels).map_err(|m| invalid(&m))?;
        let r#type = if self.datagram {
            "datagram"
        } else {
            "bytestream"
        };
        Ok(TunnelProperties {
            r#type: Some(r#type.to_owned()),
            name: self.name.clone(),
            publish,
            protocol: self.protocol.map(|p| p.as_str().to_owned()),
            labels: self.labels.clone(),
            geoip: self.geoip.clone(),
            trusted_ips: self.trusted_ips.clone(),
            tls_mode: self.tls_mode.map(|m| m.as_str().to_owned()),
            tls_alpns: self.tls_alpns.clone(),
            tls_min_version: self.tls_min_version.clone(),
            tls_ciphers: self.tls_ciphers.clone(),
            mtls_auth: self.mtls_auth,
            http_version: self.http_version.map(|v| v.as_str().to_owned()),
            token_auth: self.token_auth,
            rstream_auth: self.rstream_auth,
            challenge_mode: self.challenge_mode,
            hostname: self.hostname.clone(),
            port: self.port,
            upstream_tls: self.upstream_tls,
            datagram_guaranteed_delivery: self.datagram_guaranteed_delivery,
            allow_cross_region_routing: self.allow_cross_region_routing,
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(o: TunnelOptions) -> &'static str {
        o.to_properties().unwrap_err().code()
    }

    #[test]
    fn only_set_fields_are_sent() {
        let p = TunnelOptions::new().to_properties().unwrap();
        assert_eq!(p.r#type.as_deref(), Some("bytestream"));
        assert_eq!(p.publish, None);
        assert_eq!(p.protocol, None);
        let p = TunnelOptions::http()
            .name("web")
            .http_version(HttpVersion::H2c)
            .label("env", "dev")
            .to_properties()
            .unwrap();
        assert_eq!(p.publish, Some(true));
        assert_eq!(p.protocol.as_deref(), Some("http"));
        assert_eq!(p.http_version.as_deref(), Some("h2c"));
        assert_eq!(p.labels["env"], "dev");
    }

    #[test]
    fn tcp_rules() {
        let p = TunnelOptions::tcp().port(5432).to_properties().unwrap();
        assert_eq!(p.publish, Some(true));
        assert_eq!(p.port, Some(5432));
        assert_eq!(code(TunnelOptions::tcp().private()), code::INVALID_TUNNEL);
        assert_eq!(
            code(TunnelOptions::tcp().hostname("x")),
            code::INVALID_TUNNEL
        );
        assert_eq!(
            code(TunnelOptions::tcp().token_auth(false)),
            code::INVALID_TUNNEL
        );
        assert_eq!(code(TunnelOptions::tcp().port(0)), code::INVALID_TUNNEL);
        assert_eq!(code(TunnelOptions::tcp().port(65536)), code::INVALID_TUNNEL);
        assert_eq!(code(TunnelOptions::http().port(80)), code::INVALID_TUNNEL);
    }

    #[test]
    fn unsupported_is_explicit() {
        assert_eq!(
            code(TunnelOptions::datagram().protocol(Protocol::Quic)),
            code::UNSUPPORTED_TUNNEL
        );
        let err = TunnelOptions::http()
            .http_version(HttpVersion::H3)
            .to_properties()
            .unwrap_err();
        assert_eq!(err.code(), code::UNSUPPORTED_TUNNEL);
        assert!(err.to_string().contains("create_datagram_tunnel"), "{err}");
        assert_eq!(
            code(TunnelOptions::new().protocol(Protocol::Quic)),
            code::UNSUPPORTED_TUNNEL
        );
        assert_eq!(code(TunnelOptions::new().name("  ")), code::INVALID_TUNNEL);
    }

    #[test]
    fn datagram_rules() {
        let p = TunnelOptions::datagram()
            .name("udp")
            .to_properties()
            .unwrap();
        assert_eq!(p.r#type.as_deref(), Some("datagram"));
        assert_eq!(p.publish, None);
        let p = TunnelOptions::datagram()
            .publish()
            .datagram_guaranteed_delivery(true)
            .to_properties()
            .unwrap();
        assert_eq!(p.publish, Some(true));
        assert_eq!(p.datagram_guaranteed_delivery, Some(true));
        assert_eq!(
            code(TunnelOptions::datagram().protocol(Protocol::Http)),
            code::INVALID_TUNNEL
        );
        assert_eq!(
            code(TunnelOptions::datagram().token_auth(true)),
            code::INVALID_TUNNEL
        );
        assert_eq!(
            code(TunnelOptions::new().datagram_guaranteed_delivery(true)),
            code::INVALID_TUNNEL
        );
        assert!(TunnelOptions::datagram().is_datagram());
        let p = TunnelOptions::new()
            .into_datagram()
            .to_properties()
            .unwrap();
        assert_eq!(p.r#type.as_deref(), Some("datagram"));
    }

    #[test]
    fn h3_upstream_rules() {
        let h3 = || TunnelOptions::http().http_version(HttpVersion::H3);
        let p = h3()
            .name("web3")
            .token_auth(true)
            .tls_min_version("1.3")
            .trusted_ip("127.0.0.1")
            .into_datagram()
            .to_properties()
            .unwrap();
        assert_eq!(p.r#type.as_deref(), Some("datagram"));
        assert_eq!(p.protocol.as_deref(), Some("http"));
        assert_eq!(p.http_version.as_deref(), Some("h3"));
        assert_eq!(p.publish, Some(true));
        assert_eq!(p.token_auth, Some(true));
        assert_eq!(p.tls_min_version.as_deref(), Some("1.3"));
        assert_eq!(p.trusted_ips, ["127.0.0.1"]);
        // The same from the datagram side.
        let q = TunnelOptions::datagram()
            .protocol(Protocol::Http)
            .http_version(HttpVersion::H3)
            .publish()
            .to_properties()
            .unwrap();
        assert_eq!(q.protocol.as_deref(), Some("http"));
        for (options, what) in [
            (h3().private().into_datagram(), "published"),
            (h3().upstream_tls(true).into_datagram(), "upstream_tls"),
            (
                h3().tls_mode(TlsMode::Passthrough).into_datagram(),
                "tls_mode",
            ),
            (
                TunnelOptions::datagram()
                    .publish()
                    .http_version(HttpVersion::H3),
                "http_version",
            ),
        ] {
            let err = options.to_properties().unwrap_err();
            assert_eq!(err.code(), code::INVALID_TUNNEL, "{what}");
            assert!(err.to_string().contains(what), "{what}: {err}");
        }
        // h2c on a datagram tunnel is still refused.
        assert_eq!(
            code(
                TunnelOptions::http()
                    .http_version(HttpVersion::H2c)
                    .into_datagram()
            ),
            code::INVALID_TUNNEL
        );
    }

    #[test]
    fn dtls_rules() {
        let p = TunnelOptions::dtls().name("d").to_properties().unwrap();
        assert_eq!(p.r#type.as_deref(), Some("datagram"));
        assert_eq!(p.protocol.as_deref(), Some("dtls"));
        assert_eq!(p.publish, Some(true));
        let same = TunnelOptions::datagram()
            .protocol(Protocol::Dtls)
            .publish()
            .name("d")
            .to_properties()
            .unwrap();
        assert_eq!(p, same);
        assert_eq!(
            code(TunnelOptions::new().protocol(Protocol::Dtls).publish()),
            code::INVALID_TUNNEL
        );
        assert_eq!(
            code(TunnelOptions::datagram().protocol(Protocol::Dtls)),
            code::UNSUPPORTED_TUNNEL
        );
        assert_eq!(
            code(TunnelOptions::dtls().tls_min_version("1.2")),
            code::INVALID_TUNNEL
        );
        assert_eq!(
            code(TunnelOptions::dtls().upstream_tls(true)),
            code::UNSUPPORTED_TUNNEL
        );
    }

    #[test]
    fn labels_are_bounded() {
        let full = (0..MAX_LABELS).fold(TunnelOptions::new(), |o, i| o.label(format!("k{i}"), "v"));
        assert_eq!(full.to_properties().unwrap().labels.len(), MAX_LABELS);
        let err = full.label("one-more", "v").to_properties().unwrap_err();
        assert_eq!(err.code(), code::INVALID_TUNNEL);
        assert!(err.to_string().contains("MAX_LABELS"), "{err}");

        let key = "k".repeat(MAX_LABEL_KEY_BYTES);
        let value = "v".repeat(MAX_LABEL_VALUE_BYTES);
        assert!(TunnelOptions::new()
            .label(&key, &value)
            .to_properties()
            .is_ok());
        let err = TunnelOptions::new()
            .label(format!("{key}k"), "v")
            .to_properties()
            .unwrap_err();
        assert!(err.to_string().contains("MAX_LABEL_KEY_BYTES"), "{err}");
        let err = TunnelOptions::new()
            .label("k", format!("{value}v"))
            .to_properties()
            .unwrap_err();
        assert!(err.to_string().contains("MAX_LABEL_VALUE_BYTES"), "{err}");
        // Bytes, not characters: 128 two-byte characters are 256 bytes.
        assert!(TunnelOptions::new()
            .label("k", "é".repeat(128))
            .to_properties()
            .is_err());
    }
}
