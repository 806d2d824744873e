//! Application credentials and minting ES512 app tokens (TOKENS.md §2).

use std::fmt;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p521::ecdsa::signature::{Signer as _, Verifier as _};
use p521::ecdsa::{Signature, SigningKey, VerifyingKey};
use p521::pkcs8::{
    DecodePrivateKey as _, DecodePublicKey as _, EncodePrivateKey as _, EncodePublicKey as _,
};
use serde::Serialize;

use super::resources::Resources;
use super::token::Token;
use crate::config::Secret;
use crate::error::{code, Error, ErrorKind, Result};

/// Environment variable holding the application's client id.
pub const CLIENT_ID_ENV: &str = "RSTREAM_CLIENT_ID";
/// Environment variable holding the application's client secret.
pub const CLIENT_SECRET_ENV: &str = "RSTREAM_CLIENT_SECRET";

/// The header of every app token, `{"alg":"ES512","typ":"JWT"}`, encoded.
const APP_HEADER_B64: &str = "eyJhbGciOiJFUzUxMiIsInR5cCI6IkpXVCJ9";
/// Longest client secret accepted, in hex characters (a P-521 PKCS#8 key
/// is 241 bytes; leave room for encoders that add the optional fields).
const MAX_SECRET_HEX: usize = 1024;
/// Longest client id accepted.
const MAX_CLIENT_ID: usize = 256;
/// Default token lifetime, as the JS SDK's.
const DEFAULT_EXPIRES_IN: u32 = 60;
/// Longest token lifetime the SDKs mint.
const MAX_EXPIRES_IN: u32 = 3600;
/// How far `issued_at` may be from now.
const MAX_ISSUED_AT_SKEW: i64 = 300;

fn invalid_credentials(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Config, code::INVALID_CREDENTIALS, message.into())
}

fn invalid_request(message: impl Into<String>) -> Error {
    Error::new(
        ErrorKind::Config,
        code::INVALID_TOKEN_REQUEST,
        message.into(),
    )
}

/// An application's credentials: a client id and its P-521 private key,
/// which mint short-lived, scoped app tokens for agents, browsers and
/// devices without asking any server.
///
/// `Debug` shows the client id only.
///
/// ```
/// use rstream::auth::{AppCredentials, Resources, TokenRequest, TunnelScopes};
///
/// # fn main() -> Result<(), rstream::Error> {
/// let creds = AppCredentials::generate("my-app")?;
/// let token = creds.mint(
///     &TokenRequest::new()
///         .expires_in(std::time::Duration::from_secs(60))
///         .resources(Resources::tunnels(TunnelScopes::new().list_any())),
/// )?;
/// assert_eq!(token.expose().split('.').count(), 3);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AppCredentials {
    client_id: String,
    key: SigningKey,
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .finish()
    }
}

impl AppCredentials {
    /// Credentials from a client id and client secret as the other SDKs
    /// take them: the secret is the lowercase hex of a DER PKCS#8 P-521
    /// private key. Fails with `ERR_RSTREAM_INVALID_CREDENTIALS` (without
    /// echoing the secret).
    pub fn new(client_id: impl Into<String>, client_secret: impl AsRef<str>) -> Result<Self> {
        let client_id = client_id.into();
        let client_id = client_id.trim().to_owned();
        if client_id.is_empty()
            || client_id.len() > MAX_CLIENT_ID
            || client_id.chars().any(char::is_control)
        {
            return Err(invalid_credentials(format!(
                "the client id must be 1 to {MAX_CLIENT_ID} printable characters"
            )));
        }
        let secret = client_secret.as_ref().trim();
        if secret.len() > MAX_SECRET_HEX {
            return Err(invalid_credentials("the client secret is too long"));
        }
        let der = hex::decode(secret)
            .map_err(|_| invalid_credentials("the client secret is not hex (DER PKCS#8, P-521)"))?;
        let secret_key = p521::SecretKey::from_pkcs8_der(&der).map_err(|_| {
            invalid_credentials("the client secret is not a DER PKCS#8 P-521 private key")
        })?;
        let key = SigningKey::from_bytes(&secret_key.to_bytes())
            .map_err(|_| invalid_credentials("the client secret's scalar is not a valid key"))?;
        Ok(AppCredentials { client_id, key })
    }

    /// Credentials from `RSTREAM_CLIENT_ID` and `RSTREAM_CLIENT_SECRET`:
    /// `Ok(None)` when neither is set, an error when only one is, or when
    /// they are invalid.
    pub fn from_env() -> Result<Option<Self>> {
        let read = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match (read(CLIENT_ID_ENV), read(CLIENT_SECRET_ENV)) {
            (None, None) => Ok(None),
            (Some(id), Some(secret)) => Self::new(id, secret).map(Some),
            _ => Err(invalid_credentials(format!(
                "set both {CLIENT_ID_ENV} and {CLIENT_SECRET_ENV}, or neither"
            ))),
        }
    }

    /// Fresh credentials with a random key, for local engines and tests:
    /// register [`public_key_pem`](Self::public_key_pem) with the engine
    /// (`--app ID=FILE.pem`) and hand [`client_secret`](Self::client_secret)
    /// to the backend.
    pub fn generate(client_id: impl Into<String>) -> Result<Self> {
        let key = SigningKey::random(&mut p521::elliptic_curve::rand_core::OsRng);
        let secret = Self::secret_hex(&key)?;
        Self::new(client_id, secret.expose())
    }

    fn secret_hex(key: &SigningKey) -> Result<Secret> {
        let secret_key = p521::SecretKey::from_bytes(&key.to_bytes())
            .map_err(|_| invalid_credentials("the key cannot be exported"))?;
        let der = secret_key
            .to_pkcs8_der()
            .map_err(|_| invalid_credentials("the key cannot be exported as PKCS#8"))?;
        Ok(Secret::new(hex::encode(der.as_bytes())))
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client secret (hex DER PKCS#8), to export. Redacted in `Debug`.
    pub fn client_secret(&self) -> Result<Secret> {
        Self::secret_hex(&self.key)
    }

    /// The public key as a PEM SPKI (`-----BEGIN PUBLIC KEY-----`), what an
    /// engine registers for this client id.
    pub fn public_key_pem(&self) -> Result<String> {
        let public = p521::PublicKey::from_affine(*VerifyingKey::from(&self.key).as_affine())
            .map_err(|_| invalid_credentials("the public key is not on the curve"))?;
        public
            .to_public_key_pem(p521::pkcs8::LineEnding::LF)
            .map_err(|_| invalid_credentials("the public key cannot be exported"))
    }

    /// Mints an app token for `request`, issued now (or at
    /// [`TokenRequest::issued_at`]). Fails with
    /// `ERR_RSTREAM_INVALID_TOKEN_REQUEST` when the request is out of range.
    pub fn mint(&self, request: &TokenRequest) -> Result<Secret> {
        self.mint_at(request, crate::config::jwt::now())
    }

    /// [`mint`](Self::mint) with an explicit "now" (seconds since the Unix
    /// epoch), which `issued_at` is checked against.
    pub fn mint_at(&self, request: &TokenRequest, now: i64) -> Result<Secret> {
        let claims = request.claims_json(&self.client_id, now)?;
        let input = format!("{APP_HEADER_B64}.{}", URL_SAFE_NO_PAD.encode(claims));
        // Random nonces from the OS, as the JS and Go SDKs.
        let signature: Signature = self.key.sign(input.as_bytes());
        Ok(Secret::new(format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )))
    }
}

/// What an app token allows and for how long.
///
/// Defaults: 60 s, `permissions: null` (the credential's), no `resources`,
/// no engine. `expires_in` must be 1..=3600 s.
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use]
pub struct TokenRequest {
    expires_in: Option<Duration>,
    permissions: Option<Vec<String>>,
    resources: Option<Resources>,
    engine: Option<String>,
    issued_at: Option<i64>,
    project_id: Option<String>,
}

/// The claims of an app token, keys in the JS SDK's order.
#[derive(Serialize)]
struct AppClaims<'a> {
    metadata: MetadataOut<'a>,
    permissions: &'a Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<&'a Resources>,
    #[serde(rename = "clientId")]
    client_id: &'a str,
    exp: i64,
    iat: i64,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct MetadataOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    engine: Option<&'a str>,
}

impl TokenRequest {
    /// A request with the defaults.
    pub fn new() -> Self {
        TokenRequest::default()
    }

    /// How long the token lives (whole seconds, 1..=3600; default 60 s).
    pub fn expires_in(mut self, ttl: Duration) -> Self {
        self.expires_in = Some(ttl);
        self
    }

    /// The permissions the token carries (e.g.
    /// `tunnels.resources.read-only`); without this call, `null`: the
    /// credential's own.
    pub fn permissions(mut self, permissions: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.permissions = Some(permissions.into_iter().map(Into::into).collect());
        self
    }

    /// What the token may do to which tunnels.
    pub fn resources(mut self, resources: Resources) -> Self {
        self.resources = Some(resources);
        self
    }

    /// The engine address the token is meant for (`metadata.engine`,
    /// `host[:port]`, lowercased); engines may check it.
    pub fn engine(mut self, engine: impl Into<String>) -> Self {
        self.engine = Some(engine.into().trim().to_ascii_lowercase());
        self
    }

    /// `iat` (seconds since the Unix epoch, within ±300 s of now) instead
    /// of now.
    pub fn issued_at(mut self, seconds: i64) -> Self {
        self.issued_at = Some(seconds);
        self
    }

    /// Gives every scoped leaf without a project or workspace this project,
    /// as the JS SDK does with its `projectId` option.
    pub fn project_id(mut self, project: impl Into<String>) -> Self {
        self.project_id = Some(project.into());
        self
    }

    /// The exact claims JSON for `client_id` at `now`.
    pub(crate) fn claims_json(&self, client_id: &str, now: i64) -> Result<String> {
        let ttl = match self.expires_in {
            None => DEFAULT_EXPIRES_IN,
            Some(d) if d.subsec_nanos() == 0 && (1..=u64::from(MAX_EXPIRES_IN)).contains(&d.as_secs()) => {
                // In range just above, so it fits.
                u32::try_from(d.as_secs()).unwrap_or(MAX_EXPIRES_IN)
            }
            Some(d) => {
                return Err(invalid_request(format!(
                    "expires_in must be a whole number of seconds from 1 to {MAX_EXPIRES_IN}, got {d:?}"
                )))
            }
        };
        let iat = match self.issued_at {
            None => now,
            Some(iat) if iat >= 0 && iat.abs_diff(now) <= MAX_ISSUED_AT_SKEW.unsigned_abs() => iat,
            Some(iat) => {
                return Err(invalid_request(format!(
                "issued_at {iat} is negative or more than {MAX_ISSUED_AT_SKEW} s from now ({now})"
            )))
            }
        };
        if let Some(permissions) = &self.permissions {
            if permissions
                .iter()
                .any(|p| p.trim().is_empty() || p.trim() != p)
            {
                return Err(invalid_request(
                    "permissions are non-empty, trimmed strings",
                ));
            }
        }
        let mut resources = self.resources.clone();
        if let Some(resources) = &mut resources {
            resources.validate()?;
            if let Some(project) = &self.project_id {
                resources.tunnels.scope_to_project(project);
            }
            if !resources.has_explicit_scopes() {
                return Err(Error::new(
                    ErrorKind::Config,
                    code::INVALID_RESOURCES,
                    "Tunnel resources must include explicit scopes.",
                ));
            }
        }
        let claims = AppClaims {
            metadata: MetadataOut {
                engine: self.engine.as_deref(),
            },
            permissions: &self.permissions,
            resources: resources.as_ref(),
            client_id,
            exp: iat + i64::from(ttl),
            iat,
            kind: "app",
        };
        serde_json::to_string(&claims)
            .map_err(|e| invalid_request(format!("token claims do not serialise: {e}")))
    }
}

/// A registered application's public key, which verifies its app tokens
/// (what an engine holds).
#[derive(Clone)]
pub struct AppPublicKey(VerifyingKey);

impl fmt::Debug for AppPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppPublicKey(P-521)")
    }
}

impl AppPublicKey {
    /// From a PEM SPKI (`-----BEGIN PUBLIC KEY-----`) of a P-521 key.
    pub fn from_pem(pem: &str) -> Result<Self> {
        let public = p521::PublicKey::from_public_key_pem(pem.trim())
            .map_err(|_| invalid_credentials("not a PEM P-521 public key (SPKI)"))?;
        Self::from_public(public)
    }

    /// From a DER SPKI of a P-521 key.
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        let public = p521::PublicKey::from_public_key_der(der)
            .map_err(|_| invalid_credentials("not a DER P-521 public key (SPKI)"))?;
        Self::from_public(public)
    }

    fn from_public(public: p521::PublicKey) -> Result<Self> {
        VerifyingKey::from_affine(*public.as_affine())
            .map(AppPublicKey)
            .map_err(|_| invalid_credentials("not a usable P-521 public key"))
    }

    /// Whether `token`'s signature verifies with this key as ES512 (the
    /// header must say `ES512`; `none` and every other algorithm fail).
    /// Only the signature: expiry and scopes are the engine's to judge.
    pub fn verify_signature(&self, token: &Token) -> bool {
        if token.header().alg != "ES512" {
            return false;
        }
        let Ok(signature) = Signature::from_slice(token.signature()) else {
            return false;
        };
        self.0
            .verify(token.signing_input().as_bytes(), &signature)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TOKENS.md §7: same inputs, byte-identical header and claims; the
    /// signature (random nonce) verifies with the vector's public key.
    #[test]
    fn mints_the_vector() {
        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/support/token-vectors.json")).unwrap();
        let v = &v["app_token"];
        let creds = AppCredentials::new("app_test", v["clientSecret"].as_str().unwrap()).unwrap();
        let resources = Resources::from_json(&v["inputs"]["resources"].to_string()).unwrap();
        assert_eq!(
            resources,
            Resources::tunnels(super::super::TunnelScopes::new().list_any())
        );
        let iat = v["inputs"]["iat"].as_i64().unwrap();
        let token = creds
            .mint_at(
                &TokenRequest::new()
                    .expires_in(Duration::from_secs(60))
                    .engine("127.0.0.1:7443")
                    .resources(resources),
                iat,
            )
            .unwrap();
        let parts: Vec<&str> = token.expose().split('.').collect();
        assert_eq!(parts.len(), 3);
        let expected_input = v["signing_input"].as_str().unwrap();
        assert_eq!(format!("{}.{}", parts[0], parts[1]), expected_input);
        let header = URL_SAFE_NO_PAD.decode(parts[0]).unwrap();
        assert_eq!(header, v["header_json"].as_str().unwrap().as_bytes());
        let claims = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
        assert_eq!(claims, v["claims_json"].as_str().unwrap().as_bytes());
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 132);
        let key = AppPublicKey::from_pem(v["public_key_pem"].as_str().unwrap()).unwrap();
        let der = hex::decode(v["public_key_spki_der_hex"].as_str().unwrap()).unwrap();
        let key_der = AppPublicKey::from_spki_der(&der).unwrap();
        let ours = Token::decode(token.expose()).unwrap();
        assert!(key.verify_signature(&ours) && key_der.verify_signature(&ours));
        // The vector's own (RFC 6979) token verifies too, and our PEM export
        // of the vector key is the vector's PEM.
        let theirs = Token::decode(v["token"].as_str().unwrap()).unwrap();
        assert!(key.verify_signature(&theirs));
        assert_eq!(
            creds.public_key_pem().unwrap(),
            v["public_key_pem"].as_str().unwrap()
        );
        assert_eq!(
            creds.client_secret().unwrap().expose(),
            v["clientSecret"].as_str().unwrap()
        );
        // Without `engine`: `"metadata":{}`.
        let bare = creds.mint_at(&TokenRequest::new(), iat).unwrap();
        let claims = URL_SAFE_NO_PAD
            .decode(bare.expose().split('.').nth(1).unwrap())
            .unwrap();
        assert_eq!(
            String::from_utf8(claims).unwrap(),
            r#"{"metadata":{},"permissions":null,"clientId":"app_test","exp":1767225660,"iat":1767225600,"type":"app"}"#
        );
    }

    #[test]
    fn request_ranges() {
        let creds = AppCredentials::generate("app").unwrap();
        for ttl in [0, 3601] {
            let err = creds
                .mint(&TokenRequest::new().expires_in(Duration::from_secs(ttl)))
                .unwrap_err();
            assert_eq!(err.code(), code::INVALID_TOKEN_REQUEST);
        }
        assert!(creds
            .mint(&TokenRequest::new().expires_in(Duration::from_millis(1500)))
            .is_err());
        assert!(creds
            .mint(&TokenRequest::new().expires_in(Duration::from_secs(3600)))
            .is_ok());
        assert!(creds
            .mint_at(&TokenRequest::new().issued_at(1000), 1400)
            .is_err());
        assert!(creds
            .mint_at(&TokenRequest::new().issued_at(1000), 1300)
            .is_ok());
        assert!(creds
            .mint(&TokenRequest::new().permissions([" x"]))
            .is_err());
        let unscoped = Resources::tunnels(super::super::Leaf::new().projects(["p"]));
        let err = creds
            .mint(&TokenRequest::new().resources(unscoped))
            .unwrap_err();
        assert_eq!(err.code(), code::INVALID_RESOURCES);
    }

    #[test]
    fn credentials_are_checked_and_redacted() {
        for bad in ["", "zz", "3081", &"00".repeat(600)] {
            let err = AppCredentials::new("app", bad).unwrap_err();
            assert_eq!(err.code(), code::INVALID_CREDENTIALS);
        }
        assert!(AppCredentials::new(" ", "00").is_err());
        let creds = AppCredentials::generate("app").unwrap();
        let secret = creds.client_secret().unwrap();
        // Node's export of a P-521 PKCS#8 key is 241 bytes; ours too.
        assert_eq!(secret.expose().len(), 241 * 2);
        let again = AppCredentials::new("app", secret.expose()).unwrap();
        assert_eq!(again.key.to_bytes(), creds.key.to_bytes());
        let debug = format!("{creds:?}");
        assert!(!debug.contains(&secret.expose()[..40]), "{debug}");
        assert!(creds
            .public_key_pem()
            .unwrap()
            .starts_with("-----BEGIN PUBLIC KEY-----"));
    }
}

#[cfg(test)]
mod client_options_tests {
    use super::*;
    use crate::config::{AuthKind, Source};
    use crate::ClientOptions;

    fn env(pairs: Vec<(&'static str, String)>) -> ClientOptions {
        ClientOptions::from_env_with(move |k| {
            pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        })
        .engine("127.0.0.1:7443")
    }

    /// CONFIG precedence: a token (any source) or certificate wins over the
    /// environment's app credentials; explicit app credentials stand alone.
    #[test]
    fn app_credentials_resolution() {
        let creds = AppCredentials::generate("env-app").unwrap();
        let secret = creds.client_secret().unwrap().expose().to_owned();
        let r = env(vec![
            (CLIENT_ID_ENV, "env-app".into()),
            (CLIENT_SECRET_ENV, secret.clone()),
        ])
        .resolve()
        .unwrap();
        let (found, source) = r.app_credentials().unwrap();
        assert_eq!(found.client_id(), "env-app");
        assert_eq!(source, Source::Env(CLIENT_SECRET_ENV));
        assert_eq!(r.auth(), AuthKind::Token);
        let bearer = r.bearer("127.0.0.1:7443").unwrap().unwrap();
        let token = Token::decode(bearer.expose()).unwrap();
        assert_eq!(token.claims().client_id.as_deref(), Some("env-app"));
        let engine = token.claims().metadata.as_ref().unwrap().engine.as_deref();
        assert_eq!(engine, Some("127.0.0.1:7443"));
        assert!(!format!("{r:?}").contains(&secret[..40]));

        // A token in the environment wins.
        let r = env(vec![
            (CLIENT_ID_ENV, "env-app".into()),
            (CLIENT_SECRET_ENV, secret.clone()),
            ("RSTREAM_AUTHENTICATION_TOKEN", "static".into()),
        ])
        .resolve()
        .unwrap();
        assert!(r.app_credentials().is_none());
        assert_eq!(r.bearer("x").unwrap().unwrap().expose(), "static");

        // Half of the pair, or a bad secret: errors.
        let err = env(vec![(CLIENT_ID_ENV, "env-app".into())])
            .resolve()
            .unwrap_err();
        assert_eq!(err.code(), code::INVALID_CREDENTIALS);
        let err = env(vec![
            (CLIENT_ID_ENV, "env-app".into()),
            (CLIENT_SECRET_ENV, "zz".into()),
        ])
        .resolve()
        .unwrap_err();
        assert_eq!(err.code(), code::INVALID_CREDENTIALS);

        // Explicit credentials beat the environment's token; with an
        // explicit token they conflict.
        let r = env(vec![("RSTREAM_AUTHENTICATION_TOKEN", "static".into())])
            .app_credentials(creds.clone())
            .resolve()
            .unwrap();
        assert_eq!(r.app_credentials().unwrap().1, Source::Option);
        assert!(r.token().is_none());
        let err = env(vec![])
            .app_credentials(creds)
            .token("explicit")
            .resolve()
            .unwrap_err();
        assert_eq!(err.code(), code::AUTH_CONFLICT);
    }
}
