//! The one thing we check about a JWT-shaped token: that it has not expired.
//!
//! No signature check (the engine does that); a token that does not decode
//! as a JWT with an integer `exp` is passed through unchanged.

use crate::error::{code, Error, Result};

/// The payload's integer `exp` claim, if the token is JWT-shaped and has one
/// (decoded by the crate's one JWT decoder, `rstream::auth`).
pub(crate) fn expiry(token: &str) -> Option<i64> {
    match crate::auth::payload_json(token)?.get("exp")? {
        serde_json::Value::Number(n) => n.as_i64().or_else(|| n.as_u64().map(|_| i64::MAX)),
        _ => None,
    }
}

/// Fails with `ERR_RSTREAM_TOKEN_EXPIRED` when the token's `exp` is at or
/// before `now` (seconds since the Unix epoch).
pub(crate) fn check_not_expired(token: &str, now: i64) -> Result<()> {
    match expiry(token) {
        Some(exp) if exp <= now => Err(Error::new(
            crate::error::ErrorKind::Auth,
            code::TOKEN_EXPIRED,
            "the authentication token has expired (its `exp` claim is in the past)",
        )),
        _ => Ok(()),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#),
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn expiry_rules() {
        assert_eq!(
            check_not_expired(&jwt(r#"{"exp":100}"#), 200)
                .unwrap_err()
                .code(),
            code::TOKEN_EXPIRED
        );
        assert!(check_not_expired(&jwt(r#"{"exp":100}"#), 100).is_err());
        assert!(check_not_expired(&jwt(r#"{"exp":300}"#), 200).is_ok());
        // Not JWTs, or no integer exp: passed through.
        for t in [
            "opaque-token".to_owned(),
            "a.%%%.c".to_owned(),
            jwt(r#"{"exp":"100"}"#),
            jwt(r#"{"exp":1.5}"#),
            jwt(r#"{"sub":"x"}"#),
            jwt("[1]"),
        ] {
            assert!(check_not_expired(&t, 200).is_ok(), "{t}");
        }
        // Padded payloads decode too.
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":1}"#)
        );
        assert!(check_not_expired(&padded, 200).is_err());
    }
}
