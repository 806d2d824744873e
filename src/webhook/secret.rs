//! Signing secrets.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;

use crate::error::{code, Error, ErrorKind};

/// The prefix of every secret made by [`generate_signing_secret`].
pub const SECRET_PREFIX: &str = "whsec_";

/// A webhook signing secret.
///
/// The whole string (including the `whsec_` prefix) is the HMAC key, used
/// verbatim: it is not trimmed and not base64-decoded. The only requirement
/// is that it is not blank.
///
/// `Debug` prints `WebhookSecret(<redacted>)`, and the type has no `Display`,
/// so a secret cannot end up in a log line or an error message by accident.
/// Call [`expose_secret`](WebhookSecret::expose_secret) when you really need
/// the string (to store it or hand it to the sender).
///
/// ```
/// use rstream::webhook::WebhookSecret;
///
/// let secret = WebhookSecret::new("whsec_example")?;
/// assert_eq!(format!("{secret:?}"), "WebhookSecret(<redacted>)");
/// assert!(WebhookSecret::new("   ").is_err());
/// # Ok::<(), rstream::Error>(())
/// ```
#[derive(Clone)]
pub struct WebhookSecret(Box<str>);

impl WebhookSecret {
    /// Wraps a secret string.
    ///
    /// # Errors
    ///
    /// `ERR_RSTREAM_WEBHOOK_SECRET_REQUIRED` when the string is empty or
    /// only whitespace.
    pub fn new(secret: impl Into<String>) -> Result<Self, Error> {
        let secret = secret.into();
        if secret.trim().is_empty() {
            return Err(Error::new(
                ErrorKind::Webhook,
                code::WEBHOOK_SECRET_REQUIRED,
                "webhook signing secret is required",
            ));
        }
        Ok(WebhookSecret(secret.into_boxed_str()))
    }

    /// Generates a fresh secret: `whsec_` followed by the unpadded URL-safe
    /// base64 encoding of 32 random bytes (43 characters).
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        let mut text = String::with_capacity(SECRET_PREFIX.len() + 43);
        text.push_str(SECRET_PREFIX);
        URL_SAFE_NO_PAD.encode_string(bytes, &mut text);
        WebhookSecret(text.into_boxed_str())
    }

    /// The secret string. Handle with care: do not log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The HMAC key bytes.
    pub(crate) fn key(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Generates a fresh signing secret; see [`WebhookSecret::generate`].
pub fn generate_signing_secret() -> WebhookSecret {
    WebhookSecret::generate()
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

impl FromStr for WebhookSecret {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        WebhookSecret::new(s)
    }
}

impl TryFrom<String> for WebhookSecret {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        WebhookSecret::new(s)
    }
}

impl TryFrom<&str> for WebhookSecret {
    type Error = Error;

    fn try_from(s: &str) -> Result<Self, Error> {
        WebhookSecret::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_the_documented_shape() {
        let a = generate_signing_secret();
        let b = generate_signing_secret();
        assert_ne!(a.expose_secret(), b.expose_secret());
        let body = a.expose_secret().strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(body.len(), 43);
        assert_eq!(URL_SAFE_NO_PAD.decode(body).unwrap().len(), 32);
    }

    #[test]
    fn blank_secrets_are_refused_without_echoing_them() {
        for blank in ["", " ", "\t\n"] {
            let err = WebhookSecret::new(blank).unwrap_err();
            assert_eq!(err.code(), code::WEBHOOK_SECRET_REQUIRED);
            assert_eq!(err.kind(), ErrorKind::Webhook);
        }
        // Used verbatim: surrounding whitespace is part of the key.
        let s = WebhookSecret::new(" whsec_x ").unwrap();
        assert_eq!(s.expose_secret(), " whsec_x ");
    }

    #[test]
    fn debug_is_redacted() {
        let s = WebhookSecret::new("whsec_top_secret").unwrap();
        assert!(!format!("{s:?}").contains("top_secret"));
    }
}
