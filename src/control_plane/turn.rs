//! TURN credentials from the engine: `POST /api/turn-server/credentials`
//! on [`EngineApi`], authenticated as every Engine API call (the client's
//! token, a fresh app token minted for the engine, or mTLS discovery).
//!
//! It lives on the Engine API handle because it is an engine route: same
//! address, TLS (server-name override, client certificate), proxy and
//! credentials as `client.api()`'s other calls. The code sits here, next
//! to the control plane's managed TURN route, because both share the
//! request stack and the answer's checks (TOKENS.md §6).

use std::time::Duration;

use http::{header, HeaderMap, Method};

use super::http::{self as cp_http, Call, Codes, Http};
use super::models::{turn_request_body, TurnCredentials, MAX_TURN_BODY};
use crate::api::{ApiError, EngineApi};
use crate::error::{code, Error, ErrorKind, Result};

/// Bound on the engine TURN call (connect, TLS, answer and body).
pub const TURN_TIMEOUT: Duration = Duration::from_secs(10);

const PATH: &str = "/api/turn-server/credentials";

impl EngineApi {
    /// `POST /api/turn-server/credentials` on the engine: short-lived TURN
    /// credentials, valid `ttl` (whole seconds, 1 s to 1 h; the engine's
    /// default without one).
    ///
    /// The answer is checked (TOKENS.md §6): at most 16 KiB, username of at
    /// most 512 bytes, credential of at most 1024, 1 to 16 `turn:` /
    /// `turns:` / `stun:` / `stuns:` URLs, ttl 1..=3600; otherwise
    /// `ERR_RSTREAM_ENGINE_API_PAYLOAD` or `…_BODY_TOO_LARGE`. HTTP
    /// statuses map as for the other Engine API calls (401 →
    /// `ERR_RSTREAM_ENGINE_API_UNAUTHENTICATED`, …). The whole call is
    /// bounded by [`TURN_TIMEOUT`]. The local engine does not serve this
    /// route.
    ///
    /// ```no_run
    /// # async fn run(client: rstream::Client) -> Result<(), rstream::Error> {
    /// use std::time::Duration;
    ///
    /// let turn = client.api().turn_credentials(Some(Duration::from_secs(600))).await?;
    /// println!("{} {:?}", turn.username(), turn.urls());
    /// # Ok(()) }
    /// ```
    pub async fn turn_credentials(&self, ttl: Option<Duration>) -> Result<TurnCredentials> {
        let body = turn_request_body(ttl)?;
        let target = self.target().await?;
        // The Engine API's own connector: its TLS (client certificate,
        // server-name override registered by `target`) and proxy.
        let http = Http::with_connector(self.http()?.connector.clone());
        let uri = cp_http::request_uri(&format!("https://{}", target.authority), PATH, "")
            .map_err(|_| {
                Error::config(
                    code::INVALID_ENGINE,
                    format!("cannot form an Engine API URL for {PATH}"),
                )
            })?;
        let mut headers = HeaderMap::new();
        if let Some(token) = &target.token {
            headers.insert(header::AUTHORIZATION, cp_http::bearer(token)?);
        }
        let what = format!("engine API POST {PATH}");
        let answer = http
            .send(Call {
                method: Method::POST,
                uri,
                headers,
                body: Some(body),
                max_body: MAX_TURN_BODY,
                timeout: TURN_TIMEOUT,
                codes: Codes {
                    http: code::ENGINE_API_TRANSPORT,
                    too_large: code::ENGINE_API_BODY_TOO_LARGE,
                    timeout: code::ENGINE_API_TIMEOUT,
                },
                what: &what,
            })
            .await?;
        if !answer.status.is_success() {
            if answer.status.is_redirection() {
                return Err(Error::new(
                    ErrorKind::Http,
                    code::ENGINE_API_HTTP,
                    format!("{what}: HTTP {}: redirects are not followed", answer.status),
                ));
            }
            return Err(
                ApiError::new(Method::POST, PATH, answer.status, &answer.body).into_error(),
            );
        }
        TurnCredentials::from_json(&answer.body, |m| {
            Error::new(
                ErrorKind::Protocol,
                code::ENGINE_API_PAYLOAD,
                format!("{what}: {m}"),
            )
        })
    }
}
