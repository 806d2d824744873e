//! Reading a token: the one JWT decoder of the crate.
//!
//! [`Token::decode`] splits and decodes a JWT for diagnostics (claims,
//! expiry). It checks no signature: only an engine, which holds the keys,
//! can say whether a token is genuine.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;
use serde::Deserialize;

use super::resources::{json_depth, Resources, MAX_RESOURCES_DEPTH};
use crate::error::{code, Error, ErrorKind, Result};

/// Largest token [`Token::decode`] reads: 16 KiB.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// base64url, with or without padding (tokens from other tools pad).
const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn malformed(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Auth, code::TOKEN_MALFORMED, message.into())
}

/// Decodes one base64url JWT part.
pub(crate) fn decode_part(part: &str) -> Option<Vec<u8>> {
    URL_SAFE_ANY_PADDING.decode(part.trim()).ok()
}

/// The decoded JSON payload of a JWT-shaped token (second part), if any;
/// the header and signature are not looked at.
pub(crate) fn payload_json(token: &str) -> Option<serde_json::Value> {
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let _header = parts.next()?;
    let bytes = decode_part(parts.next()?)?;
    if json_depth(&bytes) > MAX_RESOURCES_DEPTH + 4 {
        return None;
    }
    serde_json::from_slice(&bytes).ok()
}

/// A JWT's header.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Header {
    /// The signing algorithm (`ES512` for app tokens; never trust `none`).
    pub alg: String,
    /// `JWT` when present.
    #[serde(default)]
    pub typ: Option<String>,
    /// The key id, when present.
    #[serde(default)]
    pub kid: Option<String>,
}

/// `metadata` of a token: only `engine` is defined.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// The engine address the token was minted for (`host[:port]`).
    #[serde(default)]
    pub engine: Option<String>,
}

/// The claims of an rstream token (TOKENS.md §1). Unknown claims are
/// ignored here; `resources` is parsed strictly.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Claims {
    /// `auth`, `pat` or `app`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// The application's client id (`app` tokens).
    #[serde(default, rename = "clientId")]
    pub client_id: Option<String>,
    /// The user id (`auth` tokens).
    #[serde(default, rename = "userId")]
    pub user_id: Option<String>,
    /// Permission names; `None` (null or absent) inherits the credential's.
    #[serde(default)]
    pub permissions: Option<Vec<String>>,
    /// Which tunnels the token may create, connect to and list.
    #[serde(default)]
    pub resources: Option<Resources>,
    /// `metadata` (`engine`).
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, deserialize_with = "seconds")]
    pub exp: Option<i64>,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, deserialize_with = "seconds")]
    pub iat: Option<i64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, deserialize_with = "seconds")]
    pub nbf: Option<i64>,
    /// The PAT's endpoint (`pat` tokens; old spelling `tokendpoint`).
    #[serde(default, alias = "tokendpoint")]
    pub token_endpoint: Option<String>,
}

/// An integer number of seconds; a larger-than-i64 value saturates, a
/// fraction is refused (the JS schema wants integers).
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<i64>, D::Error> {
    let n = Option::<serde_json::Number>::deserialize(d)?;
    Ok(match n {
        None => None,
        Some(n) => Some(match (n.as_i64(), n.as_u64()) {
            (Some(v), _) => v,
            (None, Some(_)) => i64::MAX,
            _ => return Err(serde::de::Error::custom("time claims are integers")),
        }),
    })
}

/// A decoded, **unverified** JWT: what it claims, for diagnostics and for
/// the engine's verifier (which checks the signature before trusting it).
///
/// ```
/// use rstream::auth::Token;
///
/// let token = "eyJhbGciOiJFUzUxMiIsInR5cCI6IkpXVCJ9.eyJleHAiOjEwLCJ0eXBlIjoiYXBwIn0.c2ln";
/// let decoded = Token::decode(token).unwrap();
/// assert_eq!(decoded.header().alg, "ES512");
/// assert_eq!(decoded.claims().kind.as_deref(), Some("app"));
/// assert_eq!(decoded.claims().exp, Some(10));
/// ```
#[derive(Clone)]
pub struct Token {
    header: Header,
    claims: Claims,
    signing_input: String,
    signature: Vec<u8>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Claims are not secret; the signature makes the token usable, so
        // it stays out.
        f.debug_struct("Token")
            .field("header", &self.header)
            .field("claims", &self.claims)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Splits and decodes `token` (three base64url parts, JSON header and
    /// claims, at most [`MAX_TOKEN_BYTES`]). **Does not verify the
    /// signature.** Fails with `ERR_RSTREAM_TOKEN_MALFORMED` (or
    /// `ERR_RSTREAM_INVALID_RESOURCES` for a bad `resources` claim).
    pub fn decode(token: &str) -> Result<Token> {
        let token = token.trim();
        if token.len() > MAX_TOKEN_BYTES {
            return Err(malformed(format!(
                "token is larger than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("a token has three dot-separated parts"));
        };
        let header_bytes =
            decode_part(header_b64).ok_or_else(|| malformed("token header is not base64url"))?;
        let header: Header = serde_json::from_slice(&header_bytes)
            .map_err(|e| malformed(format!("token header is not a JWT header: {e}")))?;
        let payload_bytes =
            decode_part(payload).ok_or_else(|| malformed("token claims are not base64url"))?;
        if json_depth(&payload_bytes) > MAX_RESOURCES_DEPTH + 2 {
            return Err(malformed("token claims nest too deep"));
        }
        let claims: Claims = serde_json::from_slice(&payload_bytes)
            .map_err(|e| malformed(format!("token claims are invalid: {e}")))?;
        if let Some(resources) = &claims.resources {
            resources.validate()?;
        }
        let signature =
            decode_part(signature).ok_or_else(|| malformed("token signature is not base64url"))?;
        Ok(Token {
            signing_input: format!("{header_b64}.{payload}"),
            header,
            claims,
            signature,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The claims (unverified).
    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    /// When the token expires (`exp`), if it says.
    pub fn expires_at(&self) -> Option<SystemTime> {
        let exp = u64::try_from(self.claims.exp?).ok()?;
        UNIX_EPOCH.checked_add(Duration::from_secs(exp))
    }

    /// Whether `exp` is at or before `now` (a token without `exp` never
    /// expires by this test).
    pub fn is_expired_at(&self, now: SystemTime) -> bool {
        self.expires_at().is_some_and(|exp| exp <= now)
    }

    /// `header.payload`, the bytes the signature covers.
    pub(crate) fn signing_input(&self) -> &str {
        &self.signing_input
    }

    /// The raw signature bytes.
    pub(crate) fn signature(&self) -> &[u8] {
        &self.signature
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_tokens() {
        for t in [
            "",
            "a.b",
            "a.b.c.d",
            "%%.e30.",
            "e30.%%.",
            "bm90IGpzb24.e30.",
            "e30.e30.",
            "eyJhbGciOiJFUzUxMiJ9.WzFd.",
        ] {
            let err = Token::decode(t).unwrap_err();
            assert_eq!(err.code(), code::TOKEN_MALFORMED, "{t}: {err}");
        }
        let big = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            Token::decode(&big).unwrap_err().code(),
            code::TOKEN_MALFORMED
        );
    }

    #[test]
    fn debug_hides_signature() {
        let t = Token::decode("eyJhbGciOiJFUzUxMiJ9.e30.c2VjcmV0LXNpZw").unwrap();
        assert_eq!(t.signature(), b"secret-sig");
        assert!(!format!("{t:?}").contains("c2VjcmV0"));
    }
}

#[cfg(test)]
mod hostile {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Tokens and resources come from the network: any text decodes
        /// or fails cleanly, never panics.
        #[test]
        fn arbitrary_tokens_never_panic(header in ".{0,64}", claims in ".{0,256}", sig in ".{0,32}") {
            let enc = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
            let _ = Token::decode(&format!("{}.{}.{}", enc(&header), enc(&claims), enc(&sig)));
            let _ = Token::decode(&format!("{header}.{claims}.{sig}"));
            let _ = Resources::from_json(&claims);
        }

        #[test]
        fn json_shaped_resources_never_panic(doc in r#"[\{\}\[\]",:a-zA-Z0-9 ]{0,200}"#) {
            let _ = Resources::from_json(&doc);
            let _ = Resources::from_json(&format!(r#"{{"tunnels":{doc}}}"#));
        }
    }
}
