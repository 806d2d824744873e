//! `host[:port]` engine and proxy endpoints.

use std::fmt;

use crate::error::{code, Error, Result};

/// The default engine port.
pub const DEFAULT_PORT: u16 = 443;

/// A validated `host:port` (lower-case host, no scheme, path or user-info).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    host: String,
    port: u16,
}

impl Endpoint {
    /// Parses `host[:port]` (default port 443).
    ///
    /// Refuses a scheme, path, query, fragment, user-info, whitespace, an
    /// IPv6 literal, an invalid host name or a port outside 1–65535, with
    /// `ERR_RSTREAM_INVALID_ENGINE`.
    pub fn parse(input: &str) -> Result<Endpoint> {
        let invalid = |why: &str| {
            Error::config(
                code::INVALID_ENGINE,
                format!("invalid engine address {input:?}: {why}"),
            )
        };
        let s = input.trim();
        if s.is_empty() {
            return Err(invalid("empty"));
        }
        if s.contains("://") {
            return Err(invalid("a scheme is not allowed (use host[:port])"));
        }
        if let Some(c) = s
            .chars()
            .find(|c| c.is_whitespace() || matches!(c, '/' | '?' | '#' | '@' | '\\'))
        {
            return Err(invalid(&format!("character {c:?} is not allowed")));
        }
        if s.starts_with('[') || s.matches(':').count() > 1 {
            return Err(invalid("IPv6 literals are not supported"));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => {
                let port: u16 = p
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid("port must be 1-65535"))?;
                (h, port)
            }
            None => (s, DEFAULT_PORT),
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if !valid_host(&host) {
            return Err(invalid("not a valid host name"));
        }
        Ok(Endpoint { host, port })
    }

    /// The host (lower-case).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

fn valid_host(host: &str) -> bool {
    if host.is_empty() || host.len() > 253 {
        return false;
    }
    host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-')
    })
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl std::str::FromStr for Endpoint {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Endpoint::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalizes() {
        let e = Endpoint::parse(" Engine.Example.TEST ").unwrap();
        assert_eq!(e.to_string(), "engine.example.test:443");
        assert_eq!(Endpoint::parse("127.0.0.1:8443").unwrap().port(), 8443);
        assert_eq!(Endpoint::parse("localhost:1").unwrap().host(), "localhost");
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "",
            "  ",
            "https://x.test",
            "x.test/path",
            "x.test?q",
            "user@x.test",
            "x.test:0",
            "x.test:65536",
            "x.test:abc",
            "[::1]:443",
            "::1",
            "a b.test",
            "-x.test",
            "x..test",
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert_eq!(err.code(), code::INVALID_ENGINE, "{bad:?}");
        }
    }
}
