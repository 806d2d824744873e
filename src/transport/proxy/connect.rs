//! HTTP CONNECT through an `http://` or `https://` proxy.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{HttpProxy, MAX_PROXY_RESPONSE_HEADER};
use crate::error::{code, Error, ErrorKind, Result};

impl HttpProxy {
    /// `CONNECT host:port` on `io`, an open connection to an HTTP(S) proxy;
    /// the answer is bounded to [`MAX_PROXY_RESPONSE_HEADER`] bytes.
    pub(super) async fn http_connect<S>(&self, io: &mut S, host: &str, port: u16) -> Result<()>
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
}

pub(super) fn find_header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}
