//! Proxies for the engine connection: HTTP CONNECT (`http://`), HTTP
//! CONNECT inside TLS to the proxy (`https://`), and SOCKS5 (RFC 1928, with
//! RFC 1929 username/password).
//!
//! The TLS session with the engine runs *through* the proxy: the proxy only
//! sees the destination `host:port`, never the tunnel's traffic. With an
//! `https://` proxy there are two TLS sessions, one inside the other: to the
//! proxy (verified against the proxy's own CA and name), and to the engine.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{server_name, TlsOptions};
use crate::error::{code, Error, ErrorKind, Result};
use crate::secret::Secret;

mod connect;
mod no_proxy;
mod socks5;

use no_proxy::NoProxy;

/// The longest CONNECT response header we accept from a proxy.
pub const MAX_PROXY_RESPONSE_HEADER: usize = 8 * 1024;

/// A proxy for the engine connection, and the hosts that bypass it:
/// `http://` (CONNECT, optional basic authentication), `https://` (the
/// same inside TLS to the proxy) or `socks5://` / `socks5h://` (optional
/// username/password).
///
/// `Debug` and `Display` never show the password:
///
/// ```
/// let proxy = rstream::transport::HttpProxy::parse("http://me:s3cret@proxy.corp:3128").unwrap();
/// assert_eq!(proxy.to_string(), "http://me:<redacted>@proxy.corp:3128");
/// assert!(!format!("{proxy:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct HttpProxy {
    kind: Kind,
    host: String,
    port: u16,
    user: Option<String>,
    /// HTTP: the whole `Proxy-Authorization` value (`Basic …`); SOCKS5:
    /// the password.
    authorization: Option<Secret>,
    bypass: NoProxy,
}

#[derive(Clone)]
enum Kind {
    Http,
    Https(ProxyTls),
    /// `socks5h` is only remembered for `Display`: both send host names
    /// to the proxy to resolve, as the Go SDK's SOCKS5 dialer does.
    Socks5 {
        h: bool,
    },
}

/// The TLS hop to an `https://` proxy.
#[derive(Clone)]
struct ProxyTls {
    config: Arc<rustls::ClientConfig>,
    /// The name verified in the proxy's certificate (and sent as SNI).
    name: String,
    insecure: bool,
}

impl ProxyTls {
    fn new(options: &TlsOptions, host: &str) -> Result<ProxyTls> {
        let name = options
            .server_name
            .clone()
            .unwrap_or_else(|| host.to_owned());
        server_name(&name)?;
        Ok(ProxyTls {
            config: options.client_config(&[])?,
            name,
            insecure: options.accept_invalid_certs,
        })
    }
}

impl HttpProxy {
    /// Parses `[scheme://][user[:password]@]host[:port][/]`: scheme `http`
    /// (the default; port 80), `https` (port 443; the proxy's certificate
    /// is verified against the webpki roots, see
    /// [`proxy_tls`](Self::proxy_tls) for a private CA), `socks5` or
    /// `socks5h` (port 1080).
    ///
    /// User and password may be percent-encoded. Other schemes fail with
    /// `ERR_RSTREAM_UNSUPPORTED_TRANSPORT`; anything else malformed with
    /// `ERR_RSTREAM_INVALID_PROXY`. Errors never repeat the URL (it may hold
    /// a password).
    pub fn parse(url: &str) -> Result<HttpProxy> {
        let invalid =
            |why: &str| Error::config(code::INVALID_PROXY, format!("invalid proxy URL: {why}"));
        let s = url.trim();
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest))
                if ["http", "https", "socks5", "socks5h"]
                    .iter()
                    .any(|k| scheme.eq_ignore_ascii_case(k)) =>
            {
                (scheme.to_ascii_lowercase(), rest)
            }
            Some((scheme, _)) => {
                let scheme = if scheme.len() <= 16
                    && scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.')
                {
                    scheme.to_ascii_lowercase()
                } else {
                    "?".to_owned()
                };
                return Err(Error::unsupported(
                    code::UNSUPPORTED_TRANSPORT,
                    format!(
                        "proxy scheme {scheme:?} is not supported \
                         (http://, https:// and socks5:// proxies are)"
                    ),
                ));
            }
            None => ("http".to_owned(), s),
        };
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => 1080,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) || rest.chars().any(char::is_whitespace) {
            return Err(invalid(
                "only scheme, credentials, host and port are allowed",
            ));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (host, port) =
            split_host_port(hostport, default_port).ok_or_else(|| invalid("bad host or port"))?;
        let socks = scheme.starts_with("socks");
        let (user, authorization) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, pass) = match info.split_once(':') {
                    Some((u, p)) => (u, p),
                    None => (info, ""),
                };
                let user = percent_decode(user)
                    .ok_or_else(|| invalid("bad percent-encoding in the user name"))?;
                let pass = percent_decode(pass)
                    .ok_or_else(|| invalid("bad percent-encoding in the password"))?;
                if user.is_empty() {
                    return Err(invalid("empty user name"));
                }
                if socks {
                    // RFC 1929: one length byte each.
                    if user.len() > 255 || pass.len() > 255 {
                        return Err(invalid("SOCKS5 user name or password over 255 bytes"));
                    }
                    (Some(user), Some(Secret::new(pass)))
                } else {
                    let basic = STANDARD.encode(format!("{user}:{pass}"));
                    (Some(user), Some(Secret::new(format!("Basic {basic}"))))
                }
            }
        };
        let kind = match scheme.as_str() {
            "http" => Kind::Http,
            "https" => Kind::Https(ProxyTls::new(&TlsOptions::new(), &host)?),
            s => Kind::Socks5 { h: s == "socks5h" },
        };
        Ok(HttpProxy {
            kind,
            host,
            port,
            user,
            authorization,
            bypass: NoProxy::default(),
        })
    }

    /// Hosts that do not go through the proxy, in the conventional
    /// `NO_PROXY` syntax: comma-separated host names (a name also matches
    /// its subdomains; a leading `.` or `*.` is allowed), optional `:port`,
    /// IP addresses, CIDR blocks, or `*` for everything.
    pub fn no_proxy(mut self, list: &str) -> Self {
        self.bypass = self.bypass.extend(list);
        self
    }

    /// TLS settings for the hop to an `https://` proxy: its private CA
    /// ([`TlsOptions::add_ca_file`]), the name to verify
    /// ([`TlsOptions::server_name`], default the proxy's host) or, for
    /// diagnostics only, [`TlsOptions::danger_accept_invalid_certs`]. The
    /// engine's own TLS session inside is verified separately, as always.
    ///
    /// Fails with `ERR_RSTREAM_PROXY_TLS_WITHOUT_HTTPS` for other proxies.
    pub fn proxy_tls(mut self, tls: TlsOptions) -> Result<Self> {
        match &mut self.kind {
            Kind::Https(hop) => {
                *hop = ProxyTls::new(&tls, &self.host)?;
                Ok(self)
            }
            _ => Err(Error::config(
                code::PROXY_TLS_WITHOUT_HTTPS,
                "proxy TLS settings need an https:// proxy",
            )),
        }
    }

    /// Whether this is an `https://` proxy (TLS to the proxy).
    pub fn is_https(&self) -> bool {
        matches!(self.kind, Kind::Https(_))
    }

    /// Whether this is a SOCKS5 proxy.
    pub fn is_socks5(&self) -> bool {
        matches!(self.kind, Kind::Socks5 { .. })
    }

    /// The proxy's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether connections to `host:port` go through this proxy.
    pub fn applies_to(&self, host: &str, port: u16) -> bool {
        !self.bypass.matches(host, port)
    }

    /// Opens a connection to the proxy (TCP, then TLS for an `https://`
    /// proxy) and asks it for a tunnel to `host:port`. The caller bounds the
    /// whole exchange with its timeout.
    pub async fn connect(&self, host: &str, port: u16) -> Result<ProxiedStream> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                Error::io(
                    format!("connecting to proxy {}:{}", self.host, self.port),
                    e,
                )
            })?;
        let _ = tcp.set_nodelay(true);
        let mut io = match &self.kind {
            Kind::Https(hop) => {
                if hop.insecure {
                    tracing::warn!(
                        proxy = %self,
                        "proxy TLS certificate verification is DISABLED (insecureSkipVerify)"
                    );
                }
                // Checked when `hop` was built.
                let name = server_name(&hop.name)?;
                let tls = TlsConnector::from(hop.config.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        let what = format!("TLS handshake with proxy {}:{}", self.host, self.port);
                        if e.kind() == io::ErrorKind::InvalidData {
                            Error::tls(what, e)
                        } else {
                            Error::io(what, e)
                        }
                    })?;
                ProxiedStream(Inner::Tls(Box::new(tls)))
            }
            _ => ProxiedStream(Inner::Tcp(tcp)),
        };
        self.handshake(&mut io, host, port).await?;
        Ok(io)
    }

    /// Asks for a tunnel to `host:port` on `io`, an open connection to the
    /// proxy: `CONNECT` for HTTP(S) proxies (the answer bounded to
    /// [`MAX_PROXY_RESPONSE_HEADER`] bytes), the SOCKS5 exchange otherwise.
    pub async fn handshake<S>(&self, io: &mut S, host: &str, port: u16) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        match self.kind {
            Kind::Socks5 { .. } => self.socks5(io, host, port).await,
            _ => self.http_connect(io, host, port).await,
        }
    }

    fn error(&self, what: String) -> Error {
        Error::new(
            ErrorKind::Http,
            code::PROXY,
            format!("proxy {}:{} {what}", self.host, self.port),
        )
    }
}

impl fmt::Display for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            Kind::Http => "http://",
            Kind::Https(_) => "https://",
            Kind::Socks5 { h: false } => "socks5://",
            Kind::Socks5 { h: true } => "socks5h://",
        })?;
        if let Some(user) = &self.user {
            write!(f, "{user}:<redacted>@")?;
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("HttpProxy");
        d.field("url", &self.to_string());
        if let Kind::Https(hop) = &self.kind {
            d.field("tls_name", &hop.name)
                .field("insecure_skip_verify", &hop.insecure);
        }
        d.field("no_proxy", &self.bypass).finish()
    }
}

fn display_target(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The connection under the engine's TLS session: TCP (direct, or to an
/// `http://` / SOCKS5 proxy), or TLS to an `https://` proxy.
pub struct ProxiedStream(Inner);

enum Inner {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl ProxiedStream {
    /// A direct TCP connection.
    pub(crate) fn direct(tcp: TcpStream) -> Self {
        ProxiedStream(Inner::Tcp(tcp))
    }
}

impl fmt::Debug for ProxiedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Inner::Tcp(_) => "ProxiedStream::Tcp",
            Inner::Tls(_) => "ProxiedStream::Tls",
        })
    }
}

impl AsyncRead for ProxiedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ProxiedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Inner::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Inner::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Inner::Tcp(s) => s.is_write_vectored(),
            Inner::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Tcp(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Inner::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        h.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (h.to_owned(), port)
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (s.to_owned(), None),
        }
    };
    let port = match port {
        None => default_port,
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0)?,
    };
    let valid = !host.is_empty()
        && (host.contains(':')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_'));
    valid.then(|| (host.to_ascii_lowercase(), port))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let out = String::from_utf8(out).ok()?;
    (!out.chars().any(char::is_control)).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::connect::find_header_end;
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn parses_and_redacts() {
        let p = HttpProxy::parse("http://u%40corp:p%3Ass@Proxy.Corp:3128/").unwrap();
        assert_eq!((p.host(), p.port()), ("proxy.corp", 3128));
        assert_eq!(p.to_string(), "http://u@corp:<redacted>@proxy.corp:3128");
        assert_eq!(
            p.authorization.as_ref().unwrap().expose(),
            format!("Basic {}", STANDARD.encode("u@corp:p:ss"))
        );
        assert!(!format!("{p:?}").contains("p:ss"));
        let p = HttpProxy::parse("proxy.corp").unwrap();
        assert_eq!(p.to_string(), "http://proxy.corp:80");
        let p = HttpProxy::parse("http://[::1]:8080").unwrap();
        assert_eq!(p.to_string(), "http://[::1]:8080");
    }

    #[test]
    fn rejects_bad_urls_without_echoing_them() {
        for bad in [
            "",
            "http://",
            "http://host:0",
            "http://host:x",
            "http://host/path",
            "http://:secret@host",
            "http://u:%zz@host",
            "http://ho st",
        ] {
            let e = HttpProxy::parse(bad).unwrap_err();
            assert_eq!(e.code(), code::INVALID_PROXY, "{bad:?}");
            assert!(!e.to_string().contains("secret"));
        }
        for unsupported in ["ftp://proxy:21", "socks4://proxy:1080"] {
            let e = HttpProxy::parse(unsupported).unwrap_err();
            assert_eq!(e.code(), code::UNSUPPORTED_TRANSPORT);
        }
        let p = HttpProxy::parse("HTTPS://proxy.corp").unwrap();
        assert!(p.is_https());
        assert_eq!(p.to_string(), "https://proxy.corp:443");
        let p = HttpProxy::parse("socks5h://u:sekret@[::1]").unwrap();
        assert!(p.is_socks5());
        assert_eq!(p.to_string(), "socks5h://u:<redacted>@[::1]:1080");
        assert!(!format!("{p:?}").contains("sekret"));
        let long = "x".repeat(256);
        let e = HttpProxy::parse(&format!("socks5://u:{long}@p")).unwrap_err();
        assert_eq!(e.code(), code::INVALID_PROXY);
        let e = HttpProxy::parse("p:1")
            .unwrap()
            .proxy_tls(TlsOptions::new())
            .unwrap_err();
        assert_eq!(e.code(), code::PROXY_TLS_WITHOUT_HTTPS);
    }

    #[test]
    fn no_proxy_matching() {
        let p = HttpProxy::parse("proxy:3128")
            .unwrap()
            .no_proxy(" .internal.test, exact.test:8443, 10.0.0.0/8, 192.0.2.1, *.wild.test ");
        assert!(!p.applies_to("a.internal.test", 443));
        assert!(!p.applies_to("internal.test", 443));
        assert!(p.applies_to("notinternal.test", 443));
        assert!(!p.applies_to("exact.test", 8443));
        assert!(p.applies_to("exact.test", 443));
        assert!(!p.applies_to("10.1.2.3", 443));
        assert!(!p.applies_to("192.0.2.1", 1));
        assert!(!p.applies_to("x.wild.test", 1));
        assert!(p.applies_to("engine.example.test", 443));
        assert!(!HttpProxy::parse("p")
            .unwrap()
            .no_proxy("*")
            .applies_to("x", 1));
    }

    async fn answer(response: &'static [u8], auth: Option<&str>) -> Result<String> {
        let url = match auth {
            Some(a) => format!("http://{a}@proxy.test:3128"),
            None => "http://proxy.test:3128".to_owned(),
        };
        let proxy = HttpProxy::parse(&url).unwrap();
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let srv = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while find_header_end(&got).is_none() {
                let n = server.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            server.write_all(response).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        let r = proxy.handshake(&mut client, "engine.test", 443).await;
        let request = srv.await.unwrap();
        r.map(|()| request)
    }

    #[tokio::test]
    async fn connect_handshake() {
        let req = answer(b"HTTP/1.1 200 Connection established\r\n\r\n", Some("u:p"))
            .await
            .unwrap();
        assert!(req.starts_with("CONNECT engine.test:443 HTTP/1.1\r\nHost: engine.test:443\r\n"));
        assert!(req.contains(&format!(
            "Proxy-Authorization: Basic {}\r\n",
            STANDARD.encode("u:p")
        )));
        let e = answer(
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
            Some("u:bad"),
        )
        .await
        .unwrap_err();
        assert_eq!((e.code(), e.kind()), (code::PROXY_AUTH, ErrorKind::Auth));
        assert!(!e.to_string().contains("bad"));
        let e = answer(b"HTTP/1.1 403 Forbidden\r\n\r\n", None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), code::PROXY);
        let e = answer(b"HTTP/1.1 200 OK\r\n\r\nextra", None)
            .await
            .unwrap_err();
        assert_eq!(e.code(), code::PROXY);
        let e = answer(b"SSH-2.0-x\r\n\r\n", None).await.unwrap_err();
        assert_eq!(e.code(), code::PROXY);
        static HUGE: [u8; 9000] = [b'a'; 9000];
        let e = answer(&HUGE, None).await.unwrap_err();
        assert_eq!(e.code(), code::PROXY);
    }

    /// Plays a SOCKS5 server that writes `script` up front, and returns
    /// what the client sent and the handshake's result.
    async fn socks(url: &str, script: Vec<u8>, host: &str) -> (Vec<u8>, Result<()>) {
        let proxy = HttpProxy::parse(url).unwrap();
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let srv = tokio::spawn(async move {
            server.write_all(&script).await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            while let Ok(Ok(n)) =
                tokio::time::timeout(std::time::Duration::from_millis(100), server.read(&mut buf))
                    .await
            {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        let r = proxy.handshake(&mut client, host, 443).await;
        drop(client);
        (srv.await.unwrap(), r)
    }

    #[tokio::test]
    async fn socks5_handshake() {
        // No auth, IPv4 bound address: the request names the host for the
        // proxy to resolve.
        let ok = [vec![5, 0], vec![5, 0, 0, 1, 127, 0, 0, 1, 0, 80]].concat();
        let (sent, r) = socks("socks5://p", ok, "engine.test").await;
        r.unwrap();
        let mut want = vec![5, 1, 0, 5, 1, 0, 3, 11];
        want.extend_from_slice(b"engine.test");
        want.extend_from_slice(&443u16.to_be_bytes());
        assert_eq!(sent, want);
        // Username/password (RFC 1929), IPv6 literal destination.
        let ok = [vec![5, 2, 1, 0], vec![5, 0, 0, 3, 1, b'x', 0, 80]].concat();
        let (sent, r) = socks("socks5://me:pw@p", ok, "::1").await;
        r.unwrap();
        assert_eq!(&sent[..4], &[5, 2, 0, 2]);
        assert_eq!(&sent[4..11], &[1, 2, b'm', b'e', 2, b'p', b'w']);
        assert_eq!(&sent[11..15], &[5, 1, 0, 4]);
        // Refusals and garbage.
        let cases: [(&str, Vec<u8>, &str); 6] = [
            ("socks5://me:pw@p", vec![5, 2, 1, 1], code::PROXY_AUTH),
            ("socks5://p", vec![5, 0xFF], code::PROXY_AUTH),
            ("socks5://p", vec![5, 2], code::PROXY_AUTH),
            ("socks5://p", vec![4, 0], code::PROXY),
            ("socks5://p", vec![5, 0, 5, 5, 0, 1], code::PROXY),
            ("socks5://p", vec![5, 0, 5, 0, 0, 9], code::PROXY),
        ];
        for (url, script, want) in cases {
            let (_, r) = socks(url, script.clone(), "engine.test").await;
            assert_eq!(r.unwrap_err().code(), want, "{script:?}");
        }
        // The server hangs up mid-answer: an I/O error, no panic.
        let (_, r) = socks("socks5://p", vec![5, 0, 5, 0, 0, 1, 1], "engine.test").await;
        assert!(r.is_err());
    }
}
