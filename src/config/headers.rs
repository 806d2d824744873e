//! Control-plane request headers (`RSTREAM_CONTROL_PLANE_HEADERS`, an
//! environment's `headers:`, [`ClientOptions::control_plane_header`]).
//!
//! [`ClientOptions::control_plane_header`]: super::ClientOptions::control_plane_header

use crate::error::{code, Error, Result};

/// Validated headers: canonical name (`X-Team-Id`) and value, in order.
pub(crate) type Headers = Vec<(String, String)>;

/// Headers the SDK sets itself or that would change how the request is
/// routed or authenticated; configuring them is refused.
const RESERVED: &[&str] = &[
    "authorization",
    "connection",
    "content-length",
    "cookie",
    "forwarded",
    "host",
    "keep-alive",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn invalid(message: String) -> Error {
    Error::config(code::INVALID_CONFIG, message)
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `x-team-id` → `X-Team-Id`.
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

/// Validates one source of headers. Errors name the header and `origin`,
/// never the value (it may be a credential).
pub(crate) fn normalize(pairs: Vec<(String, String)>, origin: &str) -> Result<Headers> {
    let mut out: Headers = Vec::with_capacity(pairs.len());
    for (raw_name, value) in pairs {
        let name = raw_name.trim();
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return Err(invalid(format!(
                "{origin}: invalid control-plane header name {raw_name:?}"
            )));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str()) || lower.starts_with("x-forwarded-") {
            return Err(invalid(format!(
                "{origin}: control-plane header {name:?} is reserved"
            )));
        }
        if value.contains('\r') || value.contains('\n') {
            return Err(invalid(format!(
                "{origin}: control-plane header {name:?} has a CR or LF in its value"
            )));
        }
        if http::HeaderValue::from_str(&value).is_err() {
            return Err(invalid(format!(
                "{origin}: control-plane header {name:?} has an invalid character in its value"
            )));
        }
        let name = canonical(name);
        if out.iter().any(|(n, _)| *n == name) {
            return Err(invalid(format!(
                "{origin}: duplicate control-plane header {name:?}"
            )));
        }
        out.push((name, value));
    }
    Ok(out)
}

/// Parses `RSTREAM_CONTROL_PLANE_HEADERS`: a JSON object of string values.
pub(crate) fn from_json(text: &str, origin: &str) -> Result<Headers> {
    let bad = || invalid(format!("{origin} must be a JSON object of string values"));
    let value: serde_json::Value = serde_json::from_str(text).map_err(|_| bad())?;
    let serde_json::Value::Object(map) = value else {
        return Err(bad());
    };
    let mut pairs = Vec::with_capacity(map.len());
    for (k, v) in map {
        let serde_json::Value::String(v) = v else {
            return Err(bad());
        };
        pairs.push((k, v));
    }
    normalize(pairs, origin)
}

/// Merges sources in increasing precedence: a later source's value replaces
/// an earlier one with the same name.
pub(crate) fn merge<'a>(sources: impl IntoIterator<Item = &'a Headers>) -> Headers {
    let mut out: Headers = Vec::new();
    for source in sources {
        for (name, value) in source {
            match out.iter_mut().find(|(n, _)| n == name) {
                Some(slot) => slot.1 = value.clone(),
                None => out.push((name.clone(), value.clone())),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn canonicalizes_and_rejects() {
        let h = normalize(pairs(&[(" x-team-ID ", "a b")]), "t").unwrap();
        assert_eq!(h, pairs(&[("X-Team-Id", "a b")]));
        for bad in [
            vec![("Authorization", "x")],
            vec![("X-Forwarded-For", "x")],
            vec![("Bad Name", "x")],
            vec![("X-A", "a\r\nX-Injected: 1")],
            vec![("X-A", "nul\0")],
            vec![("x-a", "1"), ("X-A", "2")],
        ] {
            let e = normalize(pairs(&bad), "t").unwrap_err();
            assert_eq!(e.code(), code::INVALID_CONFIG);
            assert!(!e.to_string().contains("Injected"), "{e}");
        }
    }

    #[test]
    fn json_and_merge() {
        let env = from_json(r#"{"x-a":"1","X-B":"2"}"#, "env").unwrap();
        assert!(from_json(r#"{"x-a":1}"#, "env").is_err());
        assert!(from_json(r#"["x"]"#, "env").is_err());
        assert!(from_json("nope", "env").is_err());
        let opt = pairs(&[("X-A", "3")]);
        let mut merged = merge([&env, &opt]);
        merged.sort();
        assert_eq!(merged, pairs(&[("X-A", "3"), ("X-B", "2")]));
    }
}
