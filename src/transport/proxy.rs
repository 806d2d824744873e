//! HTTP CONNECT proxies for the engine connection.
//!
//! The TLS session with the engine runs *through* the proxy: the proxy only
//! sees `CONNECT host:port`, never the tunnel's traffic.

use std::fmt;
use std::net::IpAddr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::{code, Error, ErrorKind, Result};
use crate::secret::Secret;

/// The longest CONNECT response header we accept from a proxy.
pub const MAX_PROXY_RESPONSE_HEADER: usize = 8 * 1024;

/// An HTTP proxy reached with `CONNECT`, optionally with basic
/// authentication, and the hosts that bypass it.
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
    host: String,
    port: u16,
    user: Option<String>,
    /// The whole `Proxy-Authorization` value (`Basic …`).
    authorization: Option<Secret>,
    bypass: NoProxy,
}

impl HttpProxy {
    /// Parses `[http://][user[:password]@]host[:port][/]` (default port 80).
    ///
    /// User and password may be percent-encoded. Other schemes (`https://`,
    /// `socks5://`) fail with `ERR_RSTREAM_UNSUPPORTED_TRANSPORT`; anything
    /// else malformed with `ERR_RSTREAM_INVALID_PROXY`. Errors never repeat
    /// the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<HttpProxy> {
        let invalid =
            |why: &str| Error::config(code::INVALID_PROXY, format!("invalid proxy URL: {why}"));
        let s = url.trim();
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        let rest = match s.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
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
                        "proxy scheme {scheme:?} is not supported (only http:// CONNECT proxies)"
                    ),
                ));
            }
            None => s,
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
        let (host, port) = split_host_port(hostport).ok_or_else(|| invalid("bad host or port"))?;
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
                let basic = STANDARD.encode(format!("{user}:{pass}"));
                (Some(user), Some(Secret::new(format!("Basic {basic}"))))
            }
        };
        Ok(HttpProxy {
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

    /// Opens a TCP connection to the proxy and asks it to `CONNECT` to
    /// `host:port`. The caller bounds the whole exchange with its timeout.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream> {
        let mut tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                Error::io(
                    format!("connecting to proxy {}:{}", self.host, self.port),
                    e,
                )
            })?;
        let _ = tcp.set_nodelay(true);
        self.handshake(&mut tcp, host, port).await?;
        Ok(tcp)
    }

    /// Sends `CONNECT host:port` on `io` and reads the proxy's answer
    /// (bounded to [`MAX_PROXY_RESPONSE_HEADER`] bytes).
    pub async fn handshake<S>(&self, io: &mut S, host: &str, port: u16) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        if target.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(Error::config(
                code::INVALID_PROXY,
                "CONNECT target contains a control character or a space",
            ));
        }
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(auth) = &self.authorization {
            request.push_str("Proxy-Authorization: ");
            request.push_str(auth.expose());
            request.push_str("\r\n");
        }
        request.push_str("\r\n");
        let io_err = |what: &str, e: std::io::Error| {
            Error::io(format!("{what} proxy {}:{}", self.host, self.port), e)
        };
        io.write_all(request.as_bytes())
            .await
            .map_err(|e| io_err("writing CONNECT to", e))?;
        io.flush()
            .await
            .map_err(|e| io_err("writing CONNECT to", e))?;

        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        let end = loop {
            if let Some(pos) = find_header_end(&buf) {
                break pos;
            }
            if buf.len() >= MAX_PROXY_RESPONSE_HEADER {
                return Err(self.error(format!(
                    "CONNECT response header longer than {MAX_PROXY_RESPONSE_HEADER} bytes"
                )));
            }
            let room = (MAX_PROXY_RESPONSE_HEADER + 4 - buf.len()).min(chunk.len());
            let n = io
                .read(&mut chunk[..room])
                .await
                .map_err(|e| io_err("reading the CONNECT answer from", e))?;
            if n == 0 {
                return Err(self.error("closed the connection before answering CONNECT".into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        if end != buf.len() {
            // TLS servers never speak first, so nothing may follow the header.
            return Err(self.error("sent data after its CONNECT answer".into()));
        }
        let head = String::from_utf8_lossy(&buf[..end]);
        let status_line = head.lines().next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        let status: Option<u16> = parts.next().and_then(|s| s.parse().ok());
        let reason: String = parts
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect();
        match status {
            _ if !version.starts_with("HTTP/1.") => {
                Err(self.error("answered CONNECT with something that is not HTTP/1.x".into()))
            }
            Some(s @ 200..=299) => {
                tracing::debug!(proxy = %self, status = s, "CONNECT tunnel established");
                Ok(())
            }
            Some(407) => Err(Error::new(
                ErrorKind::Auth,
                code::PROXY_AUTH,
                if self.authorization.is_some() {
                    format!(
                        "proxy {}:{} refused the credentials (407 {reason})",
                        self.host, self.port
                    )
                } else {
                    format!(
                        "proxy {}:{} requires authentication (407 {reason}); put user:password in the proxy URL",
                        self.host, self.port
                    )
                },
            )),
            Some(s) => Err(self.error(format!("refused CONNECT to {target}: {s} {reason}"))),
            None => Err(self.error("sent a malformed CONNECT status line".into())),
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
        f.write_str("http://")?;
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
        f.debug_struct("HttpProxy")
            .field("url", &self.to_string())
            .field("no_proxy", &self.bypass)
            .finish()
    }
}

fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn split_host_port(s: &str) -> Option<(String, u16)> {
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
        None => 80,
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

/// A `NO_PROXY` list.
#[derive(Clone, Debug, Default)]
struct NoProxy {
    all: bool,
    entries: Vec<Bypass>,
}

#[derive(Clone, Debug)]
enum Bypass {
    Domain(String, Option<u16>),
    Ip(IpAddr, Option<u16>),
    Net(IpNet),
}

impl NoProxy {
    fn extend(mut self, list: &str) -> Self {
        for raw in list.split(',') {
            let item = raw.trim().to_ascii_lowercase();
            if item.is_empty() {
                continue;
            }
            if item == "*" {
                self.all = true;
                continue;
            }
            if let Ok(net) = item.parse::<IpNet>() {
                self.entries.push(Bypass::Net(net));
                continue;
            }
            if let Ok(ip) = item.trim_matches(['[', ']']).parse::<IpAddr>() {
                self.entries.push(Bypass::Ip(ip, None));
                continue;
            }
            let (host, port) = match split_host_port(&item) {
                Some((h, p)) if item.contains(':') => (h, Some(p)),
                _ => (item.clone(), None),
            };
            if let Ok(ip) = host.parse::<IpAddr>() {
                self.entries.push(Bypass::Ip(ip, port));
                continue;
            }
            let domain = host
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_owned();
            if !domain.is_empty() {
                self.entries.push(Bypass::Domain(domain, port));
            }
        }
        self
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = host.trim_matches(['[', ']']).parse::<IpAddr>().ok();
        self.entries.iter().any(|entry| match entry {
            Bypass::Net(net) => ip.is_some_and(|ip| net.contains(&ip)),
            Bypass::Ip(want, p) => ip == Some(*want) && p.is_none_or(|p| p == port),
            Bypass::Domain(d, p) => {
                (host == *d || host.ends_with(&format!(".{d}"))) && p.is_none_or(|p| p == port)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for unsupported in ["https://proxy:443", "socks5://proxy:1080"] {
            let e = HttpProxy::parse(unsupported).unwrap_err();
            assert_eq!(e.code(), code::UNSUPPORTED_TRANSPORT);
        }
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
}
