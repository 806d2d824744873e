//! [`ControlPlane`]: the hosted control-plane API client.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::http::{self as cp_http, Call, Codes, Http};
use super::models::{
    invalid_response, turn_request_body, Project, ProjectList, TurnCredentials, Whoami,
};
use super::{MAX_RESOLVE_BODY, RESOLVE_TIMEOUT};
use crate::auth::{AppCredentials, Resources, TokenRequest};
use crate::config::{ClientOptions, ResolvedOptions, Secret, DEFAULT_API_URL};
use crate::error::{code, Error, ErrorKind, Result};
use crate::percent::encode_component;
use crate::transport::{HttpProxy, TlsOptions};

/// Default bound on one control-plane call (connect, TLS, answer, body).
pub const DEFAULT_TIMEOUT: Duration = RESOLVE_TIMEOUT;
/// Default largest answer body accepted.
pub const DEFAULT_MAX_BODY: usize = MAX_RESOLVE_BODY;

const CODES: Codes = Codes {
    http: code::API_HTTP,
    too_large: code::API_BODY_TOO_LARGE,
    timeout: code::API_TIMEOUT,
};

/// How control-plane calls (the [`ControlPlane`] client and managed
/// resolution) authenticate.
#[derive(Clone)]
pub(crate) enum Auth {
    None,
    Token(Secret),
    /// A fresh app token per call, `{permissions: null}` only (as the JS
    /// SDK's control-plane client mints them).
    App(Box<AppCredentials>),
}

/// A client of the hosted control-plane API (`https://rstream.io` by
/// default): who am I, projects, tokens and managed TURN credentials.
///
/// Cheap to clone; clones share one connection pool. Every call is bounded
/// in time ([`ControlPlaneBuilder::timeout`]) and size
/// ([`ControlPlaneBuilder::max_body_size`]), redirects are never followed,
/// and the API URL must be `https://` (or `http://` to a loopback host).
/// The token, the app credentials and the control-plane header values
/// never appear in `Debug` output or logs.
///
/// ```no_run
/// # async fn run() -> Result<(), rstream::Error> {
/// use rstream::control_plane::ControlPlane;
///
/// // API URL, token or app credentials, headers, CA and proxy as the CLI
/// // resolves them (config file, RSTREAM_* environment variables).
/// let cp = ControlPlane::from_env()?;
/// let me = cp.whoami().await?;
/// let project = cp.projects().resolve("my-project").await?;
/// println!("{} uses engine {}", me.id, project.engine(None)?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

struct Inner {
    base: String,
    auth: Auth,
    headers: HeaderMap,
    timeout: Duration,
    max_body: usize,
    http: Http,
}

impl Auth {
    /// The credentials of resolved options: app credentials win over a
    /// token.
    pub(crate) fn from_resolved(options: &ResolvedOptions) -> Self {
        match (&options.app, &options.token) {
            (Some((creds, _)), _) => Auth::App(Box::new(creds.clone())),
            (None, Some(token)) => Auth::Token(token.clone()),
            (None, None) => Auth::None,
        }
    }

    /// The `Authorization` value of one call (an app token is minted per
    /// call), if any.
    pub(crate) fn header(&self) -> Result<Option<header::HeaderValue>> {
        match self {
            Auth::None => Ok(None),
            Auth::Token(token) => cp_http::bearer(token).map(Some),
            // TOKENS.md §2: control-plane calls carry `{permissions: null}`
            // only (no engine, no resources), 60 s.
            Auth::App(creds) => cp_http::bearer(&creds.mint(&TokenRequest::new())?).map(Some),
        }
    }

    /// What `Debug` shows: the kind, never the secret.
    fn label(&self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Token(_) => "token",
            Auth::App(_) => "app credentials",
        }
    }
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("url", &self.inner.base)
            .field("auth", &self.inner.auth.label())
            .field(
                "headers",
                &self
                    .inner
                    .headers
                    .keys()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("timeout", &self.inner.timeout)
            .field("max_body", &self.inner.max_body)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ControlPlane`] explicitly. See [`ControlPlane::builder`].
#[derive(Clone)]
#[must_use = "a builder does nothing unless built"]
pub struct ControlPlaneBuilder {
    url: String,
    auth: Auth,
    headers: Vec<(String, String)>,
    tls: TlsOptions,
    proxy: Option<HttpProxy>,
    timeout: Duration,
    max_body: usize,
}

impl fmt::Debug for ControlPlaneBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlaneBuilder")
            .field("url", &self.url)
            .field("auth", &self.auth.label())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for ControlPlaneBuilder {
    fn default() -> Self {
        ControlPlaneBuilder {
            url: DEFAULT_API_URL.to_owned(),
            auth: Auth::None,
            headers: Vec::new(),
            tls: TlsOptions::default(),
            proxy: None,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

impl ControlPlaneBuilder {
    /// A builder preset from resolved options (API URL, token or app
    /// credentials — app credentials win —, control-plane headers, trust
    /// anchors, proxy), to adjust limits before [`build`](Self::build):
    ///
    /// ```no_run
    /// # fn run() -> Result<(), rstream::Error> {
    /// use std::time::Duration;
    /// use rstream::control_plane::ControlPlaneBuilder;
    ///
    /// let options = rstream::ClientOptions::from_env().resolve()?;
    /// let cp = ControlPlaneBuilder::from_resolved(&options)
    ///     .timeout(Duration::from_secs(5))
    ///     .build()?;
    /// # let _ = cp; Ok(()) }
    /// ```
    pub fn from_resolved(options: &ResolvedOptions) -> Self {
        ControlPlaneBuilder {
            url: options.api_url.clone(),
            auth: Auth::from_resolved(options),
            headers: options.control_plane_headers.clone(),
            tls: options.tls.clone(),
            proxy: options.proxy.clone(),
            ..ControlPlaneBuilder::default()
        }
    }

    /// The API URL (default `https://rstream.io`); `http://` only for
    /// loopback hosts.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self
    }

    /// Authenticates with this bearer token (a personal access token or a
    /// user token). Replaces [`app_credentials`](Self::app_credentials).
    pub fn token(mut self, token: impl Into<Secret>) -> Self {
        self.auth = Auth::Token(token.into());
        self
    }

    /// Authenticates with application credentials: each call carries a
    /// fresh 60 s app token with `permissions: null` and no resources.
    /// Replaces [`token`](Self::token).
    pub fn app_credentials(mut self, credentials: AppCredentials) -> Self {
        self.auth = Auth::App(Box::new(credentials));
        self
    }

    /// Adds a header to every call (e.g. a team or tracing header).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Extra trust anchors (a private CA of a self-hosted control plane):
    /// only the roots of `tls` ([`TlsOptions::add_ca_pem`],
    /// [`TlsOptions::add_ca_file`]) are used, never its client identity,
    /// server name or disabled verification.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Sends calls through this proxy (HTTP CONNECT, HTTPS or SOCKS5: any [`HttpProxy`]).
    pub fn proxy(mut self, proxy: HttpProxy) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Bounds each call as a whole (connect, TLS, answer and body);
    /// default [`DEFAULT_TIMEOUT`]. Clamped to 1 ms..=1 h.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.clamp(Duration::from_millis(1), Duration::from_secs(3600));
        self
    }

    /// Largest answer body accepted (default [`DEFAULT_MAX_BODY`], at
    /// least 1 KiB); larger ones fail with `ERR_RSTREAM_API_BODY_TOO_LARGE`.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body = bytes.max(1024);
        self
    }

    /// Checks the URL and headers and builds the client. Does no I/O.
    pub fn build(self) -> Result<ControlPlane> {
        let base = cp_http::check_api_url(&self.url)?;
        let headers = cp_http::header_map(&self.headers)?;
        if let Auth::Token(token) = &self.auth {
            cp_http::bearer(token)?;
        }
        let http = Http::new(&self.tls, self.proxy, self.timeout)?;
        Ok(ControlPlane {
            inner: Arc::new(Inner {
                base,
                auth: self.auth,
                headers,
                timeout: self.timeout,
                max_body: self.max_body,
                http,
            }),
        })
    }
}

impl ControlPlane {
    /// A builder: URL, token or app credentials, headers, TLS, proxy,
    /// limits.
    pub fn builder() -> ControlPlaneBuilder {
        ControlPlaneBuilder::default()
    }

    /// The control plane of resolved options: their API URL, token or app
    /// credentials, control-plane headers, extra trust anchors and proxy,
    /// with the default limits. Does no I/O.
    pub fn from_resolved(options: &ResolvedOptions) -> Result<Self> {
        ControlPlaneBuilder::from_resolved(options).build()
    }

    /// [`from_resolved`](Self::from_resolved) of `options` (config file and
    /// environment as [`ClientOptions`] reads them). No engine is needed.
    pub fn from_options(options: &ClientOptions) -> Result<Self> {
        Self::from_resolved(&options.resolve()?)
    }

    /// [`from_options`](Self::from_options) of [`ClientOptions::from_env`]:
    /// the API URL, credentials and headers the rstream CLI would use.
    pub fn from_env() -> Result<Self> {
        Self::from_options(&ClientOptions::from_env())
    }

    /// The control plane of a client (same API URL, credentials, headers,
    /// trust anchors and proxy as its managed resolution).
    pub fn from_client(client: &crate::Client) -> Result<Self> {
        Self::from_resolved(client.options())
    }

    /// The API URL calls go to (without a trailing `/`).
    pub fn url(&self) -> &str {
        &self.inner.base
    }

    /// `GET /api/whoami`: who the credentials belong to.
    pub async fn whoami(&self) -> Result<Whoami> {
        self.json(Method::GET, "/api/whoami", "", None).await
    }

    /// Projects: list, get, resolve by endpoint, managed TURN.
    pub fn projects(&self) -> Projects<'_> {
        Projects { cp: self }
    }

    /// Tokens minted by the control plane.
    pub fn tokens(&self) -> Tokens<'_> {
        Tokens { cp: self }
    }

    /// One call; the body of a 2xx answer, or the error for the status.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<Vec<u8>>,
        max_body: usize,
    ) -> Result<bytes::Bytes> {
        let uri = cp_http::request_uri(&self.inner.base, path, query)?;
        let mut headers = self.inner.headers.clone();
        if let Some(v) = self.inner.auth.header()? {
            headers.insert(header::AUTHORIZATION, v);
        }
        let what = format!("control-plane {method} {path}");
        let answer = self
            .inner
            .http
            .send(Call {
                method: method.clone(),
                uri,
                headers,
                body,
                max_body,
                timeout: self.inner.timeout,
                codes: CODES,
                what: &what,
            })
            .await?;
        // Method and path only: the query may hold search terms, headers
        // and tokens are secrets.
        tracing::debug!(%method, path, status = answer.status.as_u16(), "control-plane call");
        if answer.status.is_success() {
            return Ok(answer.body);
        }
        Err(status_error(&what, answer.status, &answer.body))
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T> {
        let body = self
            .call(method, path, query, body, self.inner.max_body)
            .await?;
        serde_json::from_slice(&body).map_err(|e| invalid_response(format!("{path}: {e}")))
    }
}

/// The error for a non-2xx answer: 401 and 403 are [`ErrorKind::Auth`]
/// with their own codes, 404 `ERR_RSTREAM_API_NOT_FOUND`, a redirect
/// (never followed) `ERR_RSTREAM_API_REDIRECT`, anything else
/// `ERR_RSTREAM_API_HTTP`.
fn status_error(what: &str, status: StatusCode, body: &[u8]) -> Error {
    let text = cp_http::error_text(body);
    let (kind, code) = match status.as_u16() {
        401 => (ErrorKind::Auth, code::API_UNAUTHENTICATED),
        403 => (ErrorKind::Auth, code::API_FORBIDDEN),
        404 => (ErrorKind::Http, code::API_NOT_FOUND),
        300..=399 => (ErrorKind::Http, code::API_REDIRECT),
        _ => (ErrorKind::Http, code::API_HTTP),
    };
    let text = if status.is_redirection() {
        "redirects are not followed".to_owned()
    } else {
        text
    };
    Error::new(kind, code, format!("{what}: HTTP {status}: {text}"))
}

/// Project calls. See [`ControlPlane::projects`].
#[derive(Clone, Copy, Debug)]
pub struct Projects<'a> {
    cp: &'a ControlPlane,
}

/// Query parameters of [`Projects::list_with`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct ListProjects {
    query: Option<String>,
    page: Option<u32>,
    page_size: Option<u32>,
    sort: Option<String>,
    order: Option<String>,
}

impl ListProjects {
    /// No parameters (the control plane's first page).
    pub fn new() -> Self {
        Self::default()
    }

    /// A search string (`q`).
    pub fn query(mut self, q: impl Into<String>) -> Self {
        self.query = Some(q.into());
        self
    }

    /// The page number (`page`).
    pub fn page(mut self, page: u32) -> Self {
        self.page = Some(page);
        self
    }

    /// The page size (`pageSize`).
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = Some(size);
        self
    }

    /// The sort field (`sort`).
    pub fn sort(mut self, field: impl Into<String>) -> Self {
        self.sort = Some(field.into());
        self
    }

    /// The order (`order`: `asc` or `desc`).
    pub fn order(mut self, order: impl Into<String>) -> Self {
        self.order = Some(order.into());
        self
    }

    fn to_query(&self) -> String {
        let mut parts = Vec::new();
        let mut push = |k: &str, v: &str| parts.push(format!("{k}={}", encode_component(v)));
        if let Some(q) = &self.query {
            push("q", q);
        }
        if let Some(p) = self.page {
            push("page", &p.to_string());
        }
        if let Some(p) = self.page_size {
            push("pageSize", &p.to_string());
        }
        if let Some(s) = &self.sort {
            push("sort", s);
        }
        if let Some(o) = &self.order {
            push("order", o);
        }
        parts.join("&")
    }
}

fn id_segment(what: &str, id: &str) -> Result<String> {
    let id = id.trim();
    if id.is_empty() {
        return Err(Error::config(
            code::INVALID_ID,
            format!("the {what} is empty"),
        ));
    }
    Ok(encode_component(id))
}

impl Projects<'_> {
    /// `GET /api/projects/tunnels`: the first page of the caller's projects.
    pub async fn list(&self) -> Result<ProjectList> {
        self.list_with(ListProjects::new()).await
    }

    /// `GET /api/projects/tunnels?q=…&page=…`: a page of projects.
    pub async fn list_with(&self, params: ListProjects) -> Result<ProjectList> {
        self.cp
            .json(
                Method::GET,
                "/api/projects/tunnels",
                &params.to_query(),
                None,
            )
            .await
    }

    /// `GET /api/projects/tunnels/{id}`: one project by id.
    pub async fn get(&self, id: &str) -> Result<Project> {
        let path = format!("/api/projects/tunnels/{}", id_segment("project id", id)?);
        self.cp.json(Method::GET, &path, "", None).await
    }

    /// `GET /api/projects/tunnels/resolve/{endpoint}`: the project whose
    /// engine is `{endpoint}.…` (what managed resolution uses; see
    /// [`Project::engine`]).
    pub async fn resolve(&self, endpoint: &str) -> Result<Project> {
        let path = format!(
            "/api/projects/tunnels/resolve/{}",
            id_segment("project endpoint", endpoint)?
        );
        self.cp.json(Method::GET, &path, "", None).await
    }

    /// `POST /api/projects/tunnels/resolve/{endpoint}/turn-server/credentials`:
    /// managed TURN credentials for a project (`ttl` whole seconds, 1 s to
    /// 1 h; the control plane's default without one). The answer is
    /// checked as the engine route's is (TOKENS.md §6).
    pub async fn turn_credentials(
        &self,
        endpoint: &str,
        ttl: Option<Duration>,
    ) -> Result<TurnCredentials> {
        let path = format!(
            "/api/projects/tunnels/resolve/{}/turn-server/credentials",
            id_segment("project endpoint", endpoint)?
        );
        let body = self
            .cp
            .call(
                Method::POST,
                &path,
                "",
                Some(turn_request_body(ttl)?),
                super::MAX_TURN_BODY,
            )
            .await?;
        TurnCredentials::from_json(&body, invalid_response)
    }
}

/// Token calls. See [`ControlPlane::tokens`].
#[derive(Clone, Copy, Debug)]
pub struct Tokens<'a> {
    cp: &'a ControlPlane,
}

/// What [`Tokens::create`] asks the control plane for: `{"permissions":
/// [...] | null, "resources"?: {...}}`.
#[derive(Clone, Debug, Default, PartialEq)]
#[must_use]
pub struct CreateToken {
    permissions: Option<Vec<String>>,
    resources: Option<Resources>,
}

#[derive(Serialize)]
struct CreateTokenBody<'a> {
    permissions: &'a Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<&'a Resources>,
}

impl CreateToken {
    /// `permissions: null` (the caller's own), no resources.
    pub fn new() -> Self {
        Self::default()
    }

    /// The permissions the token carries (e.g.
    /// `tunnels.resources.read-only`): non-empty, trimmed strings.
    pub fn permissions(mut self, permissions: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.permissions = Some(permissions.into_iter().map(Into::into).collect());
        self
    }

    /// What the token may do to which tunnels (the same
    /// [`Resources`] builders as app tokens).
    pub fn resources(mut self, resources: Resources) -> Self {
        self.resources = Some(resources);
        self
    }

    fn body(&self) -> Result<Vec<u8>> {
        let invalid = |m: String| Error::new(ErrorKind::Config, code::INVALID_TOKEN_REQUEST, m);
        if let Some(p) = &self.permissions {
            if p.iter().any(|p| p.trim().is_empty() || p.trim() != p) {
                return Err(invalid("permissions are non-empty, trimmed strings".into()));
            }
        }
        if let Some(r) = &self.resources {
            r.validate()?;
            if !r.has_explicit_scopes() {
                return Err(Error::new(
                    ErrorKind::Config,
                    code::INVALID_RESOURCES,
                    "Tunnel resources must include explicit scopes.",
                ));
            }
        }
        serde_json::to_vec(&CreateTokenBody {
            permissions: &self.permissions,
            resources: self.resources.as_ref(),
        })
        .map_err(|e| invalid(format!("the token request does not serialise: {e}")))
    }
}

impl Tokens<'_> {
    /// `POST /api/tokens`: a token minted by the control plane for the
    /// caller, narrowed by `request`. The token is returned as a
    /// [`Secret`].
    pub async fn create(&self, request: &CreateToken) -> Result<Secret> {
        #[derive(serde::Deserialize)]
        struct Created {
            token: String,
        }
        let created: Created = self
            .cp
            .json(Method::POST, "/api/tokens", "", Some(request.body()?))
            .await?;
        if created.token.trim().is_empty() || created.token.len() > crate::auth::MAX_TOKEN_BYTES {
            return Err(invalid_response("/api/tokens: empty or oversized token"));
        }
        Ok(Secret::new(created.token))
    }
}
