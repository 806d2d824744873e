//! The SOCKS5 client exchange (RFC 1928, with RFC 1929 username/password).

use std::io;
use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{display_target, HttpProxy};
use crate::error::{code, Error, ErrorKind, Result};

impl HttpProxy {
    /// The SOCKS5 exchange (RFC 1928; RFC 1929 when a user is set). Every
    /// read is of a length the protocol fixes, so nothing is unbounded.
    pub(super) async fn socks5<S>(&self, io: &mut S, host: &str, port: u16) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let io_err = |e: io::Error| {
            Error::io(
                format!("SOCKS5 exchange with proxy {}:{}", self.host, self.port),
                e,
            )
        };
        // Greeting: with credentials offer both methods (the server may not
        // require any), without them only "no authentication".
        let greeting: &[u8] = if self.authorization.is_some() {
            &[5, 2, 0x00, 0x02]
        } else {
            &[5, 1, 0x00]
        };
        io.write_all(greeting).await.map_err(io_err)?;
        let mut choice = [0u8; 2];
        io.read_exact(&mut choice).await.map_err(io_err)?;
        if choice[0] != 5 {
            return Err(self.error("is not a SOCKS5 server".into()));
        }
        match (choice[1], &self.user, &self.authorization) {
            (0x00, _, _) => {}
            (0x02, Some(user), Some(pass)) => {
                let pass = pass.expose().as_bytes();
                // Lengths checked at parse time (≤ 255 each).
                let mut auth = Vec::with_capacity(3 + user.len() + pass.len());
                auth.push(1);
                auth.push(user.len() as u8);
                auth.extend_from_slice(user.as_bytes());
                auth.push(pass.len() as u8);
                auth.extend_from_slice(pass);
                io.write_all(&auth).await.map_err(io_err)?;
                let mut status = [0u8; 2];
                io.read_exact(&mut status).await.map_err(io_err)?;
                if status[1] != 0 {
                    return Err(Error::new(
                        ErrorKind::Auth,
                        code::PROXY_AUTH,
                        format!(
                            "SOCKS5 proxy {}:{} refused the credentials",
                            self.host, self.port
                        ),
                    ));
                }
            }
            (0xFF | 0x02, _, _) => {
                return Err(Error::new(
                    ErrorKind::Auth,
                    code::PROXY_AUTH,
                    if self.authorization.is_some() {
                        format!(
                            "SOCKS5 proxy {}:{} accepts none of our authentication methods",
                            self.host, self.port
                        )
                    } else {
                        format!(
                            "SOCKS5 proxy {}:{} requires authentication; put user:password in the proxy URL",
                            self.host, self.port
                        )
                    },
                ))
            }
            (m, _, _) => {
                return Err(self.error(format!(
                    "chose an authentication method we did not offer ({m})"
                )))
            }
        }
        // CONNECT request: IP literals as such, names for the proxy to resolve.
        let mut req = vec![5, 1, 0];
        match host.trim_matches(['[', ']']).parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => {
                req.push(1);
                req.extend_from_slice(&ip.octets());
            }
            Ok(IpAddr::V6(ip)) => {
                req.push(4);
                req.extend_from_slice(&ip.octets());
            }
            Err(_) => {
                let name = host.as_bytes();
                if name.is_empty() || name.len() > 255 {
                    return Err(Error::config(
                        code::INVALID_PROXY,
                        "SOCKS5 destination name must be 1 to 255 bytes",
                    ));
                }
                req.push(3);
                req.push(name.len() as u8);
                req.extend_from_slice(name);
            }
        }
        req.extend_from_slice(&port.to_be_bytes());
        io.write_all(&req).await.map_err(io_err)?;
        io.flush().await.map_err(io_err)?;
        let mut head = [0u8; 4];
        io.read_exact(&mut head).await.map_err(io_err)?;
        if head[0] != 5 {
            return Err(self.error("answered CONNECT with something that is not SOCKS5".into()));
        }
        if head[1] != 0 {
            let why = match head[1] {
                1 => "general failure",
                2 => "connection not allowed by ruleset",
                3 => "network unreachable",
                4 => "host unreachable",
                5 => "connection refused",
                6 => "TTL expired",
                7 => "command not supported",
                8 => "address type not supported",
                _ => "unknown error",
            };
            return Err(self.error(format!(
                "refused the SOCKS5 CONNECT to {}: {why} ({})",
                display_target(host, port),
                head[1]
            )));
        }
        // The bound address, which we do not need: skip exactly its length.
        let rest = match head[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => {
                let mut len = [0u8; 1];
                io.read_exact(&mut len).await.map_err(io_err)?;
                usize::from(len[0]) + 2
            }
            _ => return Err(self.error("answered with an unknown address type".into())),
        };
        let mut skip = [0u8; 257];
        io.read_exact(&mut skip[..rest]).await.map_err(io_err)?;
        tracing::debug!(proxy = %self, "SOCKS5 tunnel established");
        Ok(())
    }
}
