//! The display address of a tunnel (PROTOCOL.md §6).

use crate::error::{Error, Result};
use crate::proto::TunnelProperties;

fn non_blank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Builds the forwarding address from the properties the engine returned:
/// `https://host[:port]`, `host:port (tcp)`, `host:port (udp)` (a
/// published datagram tunnel without a protocol), `rstrm://name
/// (unpublished)`…
pub fn forwarding_address(p: &TunnelProperties) -> Result<String> {
    let protocol = p.protocol.as_deref().map(str::trim);
    let host = if let Some(hostname) = non_blank(&p.hostname) {
        let port = p.port.filter(|p| *p != 0).unwrap_or(443);
        if matches!(protocol, Some("tls" | "tcp")) || port != 443 {
            Some(format!("{hostname}:{port}"))
        } else {
            Some(hostname.to_owned())
        }
    } else {
        non_blank(&p.host).map(str::to_owned)
    };
    Ok(match host {
        Some(host) => match protocol {
            Some("http") => format!("https://{host}"),
            Some(proto @ ("tls" | "tcp" | "dtls" | "quic")) => format!("{host} ({proto})"),
            None if p.r#type.as_deref().map(str::trim) == Some("datagram") => {
                format!("{host} (udp)")
            }
            _ => host,
        },
        None => match non_blank(&p.name).or_else(|| non_blank(&p.id)) {
            Some(n) => format!("rstrm://{n} (unpublished)"),
            None => {
                return Err(Error::protocol(
                    "invalid tunnel: no published host, name or id",
                ))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(f: impl FnOnce(&mut TunnelProperties)) -> TunnelProperties {
        let mut p = TunnelProperties {
            id: Some("t1".into()),
            ..Default::default()
        };
        f(&mut p);
        p
    }

    #[test]
    fn spec_examples() {
        let cases = [
            (
                props(|p| {
                    p.hostname = Some("api.example.test".into());
                    p.protocol = Some("http".into());
                }),
                "https://api.example.test",
            ),
            (
                props(|p| {
                    p.hostname = Some("api.example.test".into());
                    p.protocol = Some("http".into());
                    p.port = Some(8443);
                }),
                "https://api.example.test:8443",
            ),
            (
                props(|p| {
                    p.hostname = Some("tls.example.test".into());
                    p.protocol = Some("tls".into());
                }),
                "tls.example.test:443 (tls)",
            ),
            (
                props(|p| {
                    p.hostname = Some("tcp.example.test".into());
                    p.protocol = Some("tcp".into());
                    p.port = Some(10042);
                }),
                "tcp.example.test:10042 (tcp)",
            ),
            (
                props(|p| {
                    p.name = Some("private-api".into());
                }),
                "rstrm://private-api (unpublished)",
            ),
            (props(|_| {}), "rstrm://t1 (unpublished)"),
            (
                props(|p| {
                    p.host = Some("legacy.test".into());
                    p.protocol = Some("http".into());
                }),
                "https://legacy.test",
            ),
            (
                props(|p| {
                    p.hostname = Some(" ".into());
                    p.host = Some("h.test".into());
                }),
                "h.test",
            ),
            (
                props(|p| {
                    p.hostname = Some("h.test".into());
                    p.port = Some(0);
                }),
                "h.test",
            ),
        ];
        for (p, want) in cases {
            assert_eq!(forwarding_address(&p).unwrap(), want);
        }
        assert!(forwarding_address(&TunnelProperties::default()).is_err());
    }
}
