//! The one resolver. Pure: it sees the options, the already-read
//! environment and the already-parsed config file, and decides. Reading
//! certificate/CA files happens afterwards in [`Plan::load`].
//!
//! The order of the checks follows the other SDKs, so that a configuration
//! with several problems reports the same one first.
//!
//! Why one file of ~670 lines: [`resolve`] is one long function on
//! purpose, its checks in that shared order; split into pieces, the order
//! would be spread over files and drift. The helpers below it (contexts,
//! stored credentials, modes, regions) exist only for it.

use std::path::PathBuf;

use super::env::EnvSettings;
use super::file::{
    non_blank, AuthCfg, ConfigFile, ContextCfg, EnvironmentCfg, MtlsCfg, ProxyCfg, TransportCfg,
};
use super::headers::{self, Headers};
use super::resolved::{ClientCertificate, EngineTarget, ResolvedOptions, Source};
use super::{jwt, normalize_api_url, ClientOptions, Secret, DEFAULT_API_URL};
use crate::error::{code, Error, Result};
use crate::transport::{ClientIdentity, Endpoint, HttpProxy};

pub(crate) struct Inputs<'a> {
    pub(crate) options: &'a ClientOptions,
    /// The proxy option: `Some(None)` = explicitly direct.
    pub(crate) proxy: Option<Option<HttpProxy>>,
    /// `ClientOptions::proxy_from_environment()`.
    pub(crate) proxy_from_env: bool,
    pub(crate) env: &'a EnvSettings,
    pub(crate) file: Option<&'a ConfigFile>,
    pub(crate) file_enabled: bool,
    pub(crate) file_path: Option<PathBuf>,
    /// Seconds since the Unix epoch, for the token expiry check.
    pub(crate) now: i64,
}

/// The decision, before certificate and CA files are read.
pub(crate) struct Plan {
    resolved: ResolvedOptions,
    mtls: Option<Material>,
    ca_files: Vec<PathBuf>,
    /// `transport.proxy.tls` for an `https://` proxy, applied once its
    /// `caFile` is read.
    proxy_tls: Option<crate::transport::TlsOptions>,
    proxy_ca: Option<PathBuf>,
}

/// Client certificate material still to be loaded.
enum Material {
    Files { cert: PathBuf, key: PathBuf },
    Inline { cert: Secret, key: Secret },
}

impl Plan {
    /// Reads the CA files and the client certificate.
    pub(crate) fn load(self) -> Result<ResolvedOptions> {
        let mut resolved = self.resolved;
        for path in &self.ca_files {
            resolved.tls = resolved.tls.add_ca_file(path)?;
        }
        if let Some(material) = self.mtls {
            let identity = match material {
                Material::Files { cert, key } => ClientIdentity::from_pem_files(cert, key)?,
                Material::Inline { cert, key } => {
                    ClientIdentity::from_pem(cert.expose().as_bytes(), key.expose().as_bytes())?
                }
            };
            resolved.tls = resolved.tls.client_identity(identity);
        }
        if let Some(mut tls) = self.proxy_tls {
            if let Some(ca) = &self.proxy_ca {
                tls = tls.add_ca_file(ca)?;
            }
            if let Some(proxy) = resolved.proxy.take() {
                resolved.proxy = Some(proxy.proxy_tls(tls)?);
            }
        }
        Ok(resolved)
    }
}

fn config_error(code: &'static str, message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::config(code, message)
}

fn blank_to_none(s: &Option<String>) -> Option<String> {
    s.as_deref().and_then(non_blank)
}

pub(crate) fn resolve(input: Inputs<'_>) -> Result<Plan> {
    let o = input.options;
    let env = input.env;

    // --- context and environment entry -----------------------------------
    let option_api_url = match &o.api_url {
        Some(url) => normalize_api_url(url, "the api_url option")?,
        None => None,
    };
    let explicit_api_url = option_api_url.clone().or_else(|| env.api_url.clone());
    let option_context = blank_to_none(&o.context);
    let empty = ConfigFile::default();
    let (context, environment) = if input.file_enabled {
        let file = input.file.unwrap_or(&empty);
        let name = option_context
            .clone()
            .or_else(|| env.context.clone())
            .or_else(|| file.default_context.clone());
        let context = match &name {
            Some(name) => Some(find_context(file, name, explicit_api_url.as_deref())?),
            None => None,
        };
        let environment = match context.and_then(|c| c.api_url.as_ref()) {
            Some(ctx_url) => {
                let api_url = explicit_api_url.as_deref().unwrap_or(ctx_url);
                file.environments.iter().find(|e| e.api_url == api_url)
            }
            None => None,
        };
        (context, environment)
    } else {
        if let Some(name) = option_context {
            return Err(config_error(
                code::CONTEXT_NOT_FOUND,
                format!("context {name:?} was selected but reading the config file is disabled"),
            ));
        }
        (None, None)
    };

    // --- token ----------------------------------------------------------
    let option_token = o.token.as_ref().filter(|t| !t.expose().trim().is_empty());
    let option_identity = o.tls.has_client_identity();
    let explicit_mtls = env.has_mtls() || option_identity;
    let option_engine = blank_to_none(&o.engine);
    let explicit_engine = option_engine
        .clone()
        .map(|e| (e, Source::Option))
        .or_else(|| env.engine.clone().map(|(e, var)| (e, Source::Env(var))));
    let (mut token, mut token_source) = if let Some(t) = option_token {
        (Some(t.clone()), Some(Source::Option))
    } else if let Some(t) = &env.token {
        (
            Some(Secret::new(t.clone())),
            Some(Source::Env("RSTREAM_AUTHENTICATION_TOKEN")),
        )
    } else if explicit_mtls || o.no_token || context.is_some_and(|c| c.no_token) {
        // `noToken: true` (Node runtime) or `.no_token()`: the stored token
        // is neither read nor sent; an explicit one (option, environment)
        // still is.
        (None, None)
    } else {
        match stored_token(context, environment)? {
            Some((value, source)) => {
                if let Some((engine, _)) = &explicit_engine {
                    if override_differs(engine, context)? {
                        return Err(config_error(
                            code::STORED_TOKEN_ENGINE_OVERRIDE,
                            "refusing to send the stored token to an explicitly overridden engine \
                             (it differs from the context's engine); pass the token explicitly \
                             (RSTREAM_AUTHENTICATION_TOKEN) or drop the engine override",
                        ));
                    }
                }
                (Some(Secret::new(value)), Some(source))
            }
            None => (None, None),
        }
    };

    // --- mTLS -----------------------------------------------------------
    let (mtls, client_certificate) = if option_identity {
        (None, Some((ClientCertificate::Provided, Source::Option)))
    } else if env.has_mtls() {
        let (Some(cert), Some(key)) = (&env.mtls_cert, &env.mtls_key) else {
            return Err(config_error(
                code::MTLS_INCOMPLETE,
                "RSTREAM_MTLS_CERT_FILE and RSTREAM_MTLS_KEY_FILE must be set together",
            ));
        };
        let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
        (
            Some(Material::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            Some((
                ClientCertificate::Files { cert, key },
                Source::Env("RSTREAM_MTLS_CERT_FILE"),
            )),
        )
    } else {
        match stored_mtls(context, environment)? {
            Some((material, cert, source)) => {
                if let Some((engine, _)) = &explicit_engine {
                    if override_differs(engine, context)? {
                        return Err(config_error(
                            code::STORED_MTLS_ENGINE_OVERRIDE,
                            "refusing to present the stored client certificate to an explicitly \
                             overridden engine (it differs from the context's engine)",
                        ));
                    }
                }
                (Some(material), Some((cert, source)))
            }
            None => (None, None),
        }
    };

    // --- transport in the file --------------------------------------------
    let env_transport = environment.map(|e| &e.transport);
    let ctx_transport = context.map(|c| &c.transport);
    for t in [env_transport, ctx_transport].into_iter().flatten() {
        if let Some(mode) = &t.mode {
            parse_mode_value(mode, &format!("{}.mode", t.path))?;
        }
        if !t.unsupported.is_empty() {
            return Err(Error::unsupported(
                code::UNSUPPORTED_TRANSPORT,
                format!(
                    "{}: transport option(s) not supported by rstream-rust: {}",
                    t.path,
                    t.unsupported.join(", ")
                ),
            ));
        }
    }
    let file_mode = match ctx_transport.map(file_mode).transpose()?.flatten() {
        Some(m) => Some((m, Source::Context)),
        None => env_transport
            .map(file_mode)
            .transpose()?
            .flatten()
            .map(|m| (m, Source::Environment)),
    };

    // --- control-plane headers ------------------------------------------
    let option_headers = headers::normalize(
        o.control_plane_headers.clone(),
        "control_plane_header option",
    )?;
    let empty = Headers::new();
    let control_plane_headers = headers::merge([
        environment.map(|e| &e.headers).unwrap_or(&empty),
        &env.headers,
        &option_headers,
    ]);

    // --- auth conflict and expiry -----------------------------------------
    if token.is_some() && client_certificate.is_some() {
        return Err(Error::new(
            crate::error::ErrorKind::Auth,
            code::AUTH_CONFLICT,
            "a token and a client certificate were both configured; use one",
        ));
    }
    if let Some(t) = &token {
        jwt::check_not_expired(t.expose(), input.now)?;
    }
    // App credentials: explicit ones must stand alone; the environment's
    // apply only when nothing else authenticates (a token from any source
    // or a client certificate wins).
    let app = if let Some(creds) = &o.app_credentials {
        if option_token.is_some() || client_certificate.is_some() {
            return Err(Error::new(
                crate::error::ErrorKind::Auth,
                code::AUTH_CONFLICT,
                "app credentials were combined with a token or a client certificate; use one",
            ));
        }
        token = None;
        token_source = None;
        Some((creds.clone(), Source::Option))
    } else if token.is_none() && client_certificate.is_none() {
        match (&env.client_id, &env.client_secret) {
            (Some(id), Some(secret)) => Some((
                crate::auth::AppCredentials::new(id.clone(), secret)?,
                Source::Env(crate::auth::CLIENT_SECRET_ENV),
            )),
            (None, None) => None,
            _ => {
                return Err(Error::new(
                    crate::error::ErrorKind::Config,
                    code::INVALID_CREDENTIALS,
                    "set both RSTREAM_CLIENT_ID and RSTREAM_CLIENT_SECRET, or neither",
                ))
            }
        }
    } else {
        None
    };

    // --- tunnel transport -------------------------------------------------
    // Option > RSTREAM_TUNNEL_TRANSPORT > RSTREAM_QUIC_TRANSPORT > context
    // `transport` > environment entry `transport` > auto (the Go SDK's order,
    // an explicit option first as everywhere here).
    let (mode, mode_source) = match (o.transport, &env.tunnel_transport) {
        (Some(m), _) => (m, Source::Option),
        (None, Some(v)) => (
            parse_mode(v, "RSTREAM_TUNNEL_TRANSPORT")?,
            Source::Env("RSTREAM_TUNNEL_TRANSPORT"),
        ),
        (None, None) => match env.use_quic {
            Some(true) => (Mode::Quic, Source::Env("RSTREAM_QUIC_TRANSPORT")),
            Some(false) => (Mode::Tls, Source::Env("RSTREAM_QUIC_TRANSPORT")),
            None => file_mode.unwrap_or((Mode::Auto, Source::Default)),
        },
    };
    if mode == Mode::Quic && !cfg!(feature = "quic") {
        return Err(Error::unsupported(
            code::UNSUPPORTED_TRANSPORT,
            "the QUIC tunnel transport needs rstream's `quic` feature; use tls",
        ));
    }

    // --- timeouts ---------------------------------------------------------
    for (what, t) in [
        ("connect timeout", o.connect_timeout),
        ("operation timeout", o.operation_timeout),
    ] {
        if t.is_zero() {
            return Err(config_error(
                code::INVALID_TIMEOUT,
                format!("{what} must be greater than zero"),
            ));
        }
        // Deadlines are `now + timeout`; a bound keeps that arithmetic (and
        // everything derived from it) far from overflow.
        if t > super::MAX_TIMEOUT {
            return Err(config_error(
                code::INVALID_TIMEOUT,
                format!("{what} must be at most {} s", super::MAX_TIMEOUT.as_secs()),
            ));
        }
    }
    let heartbeat_interval_ms = match o.heartbeat_interval {
        None => None,
        Some(d) => {
            let ms = d.as_millis();
            if d.subsec_nanos() % 1_000_000 != 0 || !(1_000..=300_000).contains(&ms) {
                return Err(config_error(
                    code::INVALID_CONFIG,
                    "heartbeat interval must be 1-300 s in whole milliseconds",
                ));
            }
            u32::try_from(ms).ok()
        }
    };

    // --- region, project endpoint, engine ---------------------------------
    let region = match blank_to_none(&o.region)
        .map(|r| (r, "the region option"))
        .or_else(|| env.region.clone().map(|r| (r, "RSTREAM_REGION")))
        .or_else(|| {
            context
                .and_then(|c| c.region.clone())
                .map(|r| (r, "context region"))
        }) {
        Some((r, what)) => normalize_region(&r, what)?,
        None => None,
    };
    let project_endpoint = blank_to_none(&o.project_endpoint)
        .map(|p| (p, Source::Option))
        .or_else(|| {
            context
                .and_then(|c| c.project_endpoint.clone())
                .map(|p| (p, Source::Context))
        });
    if region.is_some() && explicit_engine.is_some() {
        return Err(config_error(
            code::REGION_ENGINE_CONFLICT,
            "a region cannot be combined with an explicit engine",
        ));
    }
    if region.is_some() && project_endpoint.is_none() {
        return Err(config_error(
            code::PROJECT_ENDPOINT_REQUIRED,
            "selecting a region needs a managed project endpoint",
        ));
    }
    let api_url_source;
    let api_url = match (
        &option_api_url,
        &env.api_url,
        context.and_then(|c| c.api_url.clone()),
    ) {
        (Some(u), _, _) => {
            api_url_source = Source::Option;
            u.clone()
        }
        (None, Some(u), _) => {
            api_url_source = Source::Env("RSTREAM_API_URL");
            u.clone()
        }
        (None, None, Some(u)) => {
            api_url_source = Source::Context;
            u
        }
        (None, None, None) => {
            api_url_source = Source::Default;
            DEFAULT_API_URL.to_owned()
        }
    };
    let engine_address = match explicit_engine.clone().or_else(|| {
        context
            .and_then(|c| c.engine.clone())
            .map(|e| (e, Source::Context))
    }) {
        Some((e, src)) => Some((Endpoint::parse(&e)?, src)),
        None => None,
    };
    let (engine, engine_source) = match (engine_address, &region, project_endpoint) {
        (Some((addr, src)), None, _) => (Some(EngineTarget::Address(addr)), src),
        (_, region, Some((project_endpoint, src))) => (
            Some(EngineTarget::Managed {
                project_endpoint,
                region: region.clone(),
            }),
            src,
        ),
        (_, _, None) => (None, Source::Default),
    };

    // --- proxy ------------------------------------------------------------
    let mut hop = None;
    let (proxy, proxy_source) = match input.proxy {
        Some(choice) => {
            let src = choice.as_ref().map(|_| Source::Option);
            (choice, src)
        }
        None => {
            // The context's `transport.proxy` wins over its environment
            // entry's; the builder's `proxy_from_environment()` acts as
            // `fromEnvironment: true` when neither sets a proxy.
            let from_file = ctx_transport
                .and_then(|t| t.proxy.as_ref().map(|p| (p, Source::Context)))
                .or_else(|| {
                    env_transport.and_then(|t| t.proxy.as_ref().map(|p| (p, Source::Environment)))
                });
            match from_file {
                Some((cfg, src)) => {
                    let (proxy, src) = file_proxy(cfg, src, env)?;
                    if proxy.as_ref().is_some_and(HttpProxy::is_https) && cfg.has_tls() {
                        hop = Some(cfg);
                    }
                    (proxy, src)
                }
                None if input.proxy_from_env => env_proxy(env)?,
                None => (None, None),
            }
        }
    };

    if mode == Mode::Quic && proxy.is_some() {
        // The Go SDK tunnels QUIC through MASQUE or SOCKS5 UDP; we do neither yet.
        return Err(Error::unsupported(
            code::UNSUPPORTED_TRANSPORT,
            "the QUIC tunnel transport cannot go through a proxy yet; use tls or no proxy",
        ));
    }

    let mut ca_files = o.ca_files.clone();
    if let Some(ca) = &env.ca_file {
        ca_files.push(PathBuf::from(ca));
    }

    Ok(Plan {
        resolved: ResolvedOptions {
            engine,
            engine_source,
            api_url,
            api_url_source,
            config_file: input.file.and(input.file_path),
            context: context.map(|c| c.name.clone()),
            control_plane_headers,
            token,
            token_source,
            app,
            client_certificate,
            tls: o.tls.clone(),
            proxy,
            proxy_source,
            connect_timeout: o.connect_timeout,
            operation_timeout: o.operation_timeout,
            heartbeat_interval_ms,
            zero_rtt: o.zero_rtt,
            max_concurrent_handshakes: o.max_concurrent_handshakes,
            handshake_queue: o.handshake_queue,
            accept_backlog: o.accept_backlog,
            transport: mode,
            transport_source: mode_source,
        },
        mtls,
        ca_files,
        proxy_tls: hop.map(|cfg| {
            let mut tls = crate::transport::TlsOptions::new()
                .danger_accept_invalid_certs(cfg.insecure_skip_verify);
            if let Some(name) = &cfg.server_name {
                tls = tls.server_name(name);
            }
            tls
        }),
        proxy_ca: hop.and_then(|cfg| cfg.ca_file.as_ref().map(PathBuf::from)),
    })
}

/// The proxy `transport.proxy` asks for (Node runtime rules; `socks5` from
/// the Go SDK). Every contradictory combination has its own code.
fn file_proxy(
    cfg: &ProxyCfg,
    src: Source,
    env: &EnvSettings,
) -> Result<(Option<HttpProxy>, Option<Source>)> {
    let path = &cfg.path;
    if cfg.http.is_some() && cfg.socks5.is_some() {
        return Err(config_error(
            code::PROXY_CONFLICT,
            format!("{path}: set either http or socks5, not both"),
        ));
    }
    if cfg.ca_file.is_some() && cfg.insecure_skip_verify {
        return Err(config_error(
            code::PROXY_TLS_CONFLICT,
            format!("{path}.tls: caFile and insecureSkipVerify: true contradict each other"),
        ));
    }
    let explicit = match (&cfg.http, &cfg.socks5) {
        (Some(url), _) => {
            if is_socks(url) {
                return Err(config_error(
                    code::PROXY_SCHEME_MISMATCH,
                    format!("{path}.http holds a socks5:// URL (put it under {path}.socks5)"),
                ));
            }
            Some((url, "http"))
        }
        (None, Some(url)) => {
            if !is_socks(url) {
                return Err(config_error(
                    code::PROXY_SCHEME_MISMATCH,
                    format!("{path}.socks5 must be a socks5:// URL"),
                ));
            }
            Some((url, "socks5"))
        }
        (None, None) => None,
    };
    let proxy = match explicit {
        Some((url, key)) => {
            let p =
                HttpProxy::parse(url).map_err(|e| name_proxy_error(e, &format!("{path}.{key}")))?;
            (Some(p), Some(src))
        }
        None if cfg.from_environment => env_proxy(env)?,
        None => (None, None),
    };
    if let (Some(p), _) = &proxy {
        check_proxy_tls(p, cfg, explicit.is_some())?;
    }
    Ok(proxy)
}

/// Checks `transport.proxy.tls` against the proxy (applied in
/// [`Plan::load`], which reads `caFile`). The settings only make sense for
/// an `https://` proxy: beside an explicit `http://` or `socks5://` URL
/// they are refused; beside `fromEnvironment` they apply when the variable
/// names an `https://` proxy (the same file serves machines with different
/// proxies).
fn check_proxy_tls(proxy: &HttpProxy, cfg: &ProxyCfg, explicit: bool) -> Result<()> {
    if cfg.has_tls() && explicit && !proxy.is_https() {
        return Err(config_error(
            code::PROXY_TLS_WITHOUT_HTTPS,
            format!(
                "{}.tls is set but the proxy is not an https:// proxy",
                cfg.path
            ),
        ));
    }
    Ok(())
}

/// `https_proxy`/`HTTPS_PROXY`/`all_proxy`/`ALL_PROXY` with `NO_PROXY`;
/// loopback always bypasses it.
fn env_proxy(env: &EnvSettings) -> Result<(Option<HttpProxy>, Option<Source>)> {
    let Some((url, var)) = &env.https_proxy else {
        return Ok((None, None));
    };
    let mut bypass = String::from("localhost,127.0.0.0/8,::1");
    if let Some(np) = &env.no_proxy {
        bypass.push(',');
        bypass.push_str(np);
    }
    let proxy = HttpProxy::parse(url)
        .map_err(|e| name_proxy_error(e, var))?
        .no_proxy(&bypass);
    Ok((Some(proxy), Some(Source::Env(var))))
}

fn is_socks(url: &str) -> bool {
    url.trim()
        .split_once("://")
        .is_some_and(|(scheme, _)| scheme.to_ascii_lowercase().starts_with("socks"))
}

/// Adds which key or variable held a bad proxy URL to the error.
fn name_proxy_error(e: Error, what: &str) -> Error {
    Error::new(e.kind(), e.code(), format!("{what}: {}", e.message()))
}

fn find_context<'a>(
    file: &'a ConfigFile,
    name: &str,
    api_url: Option<&str>,
) -> Result<&'a ContextCfg> {
    let matches: Vec<&ContextCfg> = file
        .contexts
        .iter()
        .filter(|c| {
            c.name == name && api_url.is_none_or(|u| c.api_url.as_deref().is_none_or(|cu| cu == u))
        })
        .collect();
    match matches.as_slice() {
        [] => Err(config_error(
            code::CONTEXT_NOT_FOUND,
            match api_url {
                Some(u) => format!("context {name:?} was not found for API URL {u}"),
                None => format!("context {name:?} was not found"),
            },
        )),
        [one] => Ok(one),
        _ => Err(config_error(
            code::CONTEXT_AMBIGUOUS,
            format!("context {name:?} matches several contexts; select an API URL"),
        )),
    }
}

fn auth_of<'a>(
    context: Option<&'a ContextCfg>,
    environment: Option<&'a EnvironmentCfg>,
) -> [(Option<&'a AuthCfg>, Source); 2] {
    [
        (context.map(|c| &c.auth), Source::Context),
        (environment.map(|e| &e.auth), Source::Environment),
    ]
}

/// Context token, else environment token.
fn stored_token(
    context: Option<&ContextCfg>,
    environment: Option<&EnvironmentCfg>,
) -> Result<Option<(String, Source)>> {
    let Some((token, source)) = auth_of(context, environment)
        .into_iter()
        .find_map(|(auth, src)| auth.and_then(|a| a.token.as_ref()).map(|t| (t, src)))
    else {
        return Ok(None);
    };
    if let Some(provider) = &token.provider {
        if provider != "inline" && provider != "env" {
            return Err(Error::unsupported(
                code::UNSUPPORTED_TOKEN_STORAGE,
                format!(
                    "{}: token storage provider {provider:?} is not supported by rstream-rust (use inline or env)",
                    token.path
                ),
            ));
        }
    }
    Ok(token
        .value
        .as_deref()
        .and_then(non_blank)
        .map(|v| (v, source)))
}

/// Context mTLS, else environment mTLS.
fn stored_mtls(
    context: Option<&ContextCfg>,
    environment: Option<&EnvironmentCfg>,
) -> Result<Option<(Material, ClientCertificate, Source)>> {
    let Some((m, source)) = auth_of(context, environment)
        .into_iter()
        .find_map(|(auth, src)| auth.and_then(|a| a.mtls.as_ref()).map(|m| (m, src)))
    else {
        return Ok(None);
    };
    let MtlsCfg {
        path,
        certificate_file,
        key_file,
        certificate,
        key,
        storage,
    } = m;
    if let Some(label) = storage {
        return Err(Error::unsupported(
            code::UNSUPPORTED_MTLS_STORAGE,
            format!(
                "{path}.storage: mTLS storage provider {label:?} is not supported by rstream-rust"
            ),
        ));
    }
    if certificate_file.is_some() || key_file.is_some() {
        let (Some(cert), Some(key)) = (certificate_file, key_file) else {
            return Err(config_error(
                code::MTLS_INCOMPLETE,
                format!("{path}: certificateFile and keyFile must be set together"),
            ));
        };
        let (cert, key) = (PathBuf::from(cert), PathBuf::from(key));
        return Ok(Some((
            Material::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            ClientCertificate::Files { cert, key },
            source,
        )));
    }
    if certificate.is_some() || key.is_some() {
        let (Some(cert), Some(key)) = (certificate, key) else {
            return Err(config_error(
                code::MTLS_INCOMPLETE,
                format!("{path}: certificate and key must be set together"),
            ));
        };
        return Ok(Some((
            Material::Inline {
                cert: Secret::new(cert.clone()),
                key: Secret::new(key.clone()),
            },
            ClientCertificate::Inline,
            source,
        )));
    }
    Ok(None)
}

/// Whether an explicit engine is not the context's own engine (so stored
/// credentials must not follow it). No context, or a context without an
/// engine, counts as different.
fn override_differs(explicit: &str, context: Option<&ContextCfg>) -> Result<bool> {
    let Some(ctx_engine) = context.and_then(|c| c.engine.as_deref()) else {
        return Ok(true);
    };
    Ok(Endpoint::parse(ctx_engine)? != Endpoint::parse(explicit)?)
}

use crate::transport::Transport as Mode;

fn parse_mode(value: &str, what: &str) -> Result<Mode> {
    match value.trim().to_ascii_lowercase().as_str() {
        "auto" => Ok(Mode::Auto),
        "tls" => Ok(Mode::Tls),
        "quic" => Ok(Mode::Quic),
        _ => Err(config_error(
            code::INVALID_CONFIG,
            format!("{what} must be one of auto, tls, quic"),
        )),
    }
}

fn parse_mode_value(value: &serde_yaml_ng::Value, what: &str) -> Result<Mode> {
    match value {
        serde_yaml_ng::Value::String(s) => parse_mode(s, what),
        _ => Err(config_error(
            code::INVALID_CONFIG,
            format!("{what} must be a string"),
        )),
    }
}

/// `mode`, else `useQuic` (a boolean).
fn file_mode(t: &TransportCfg) -> Result<Option<Mode>> {
    if let Some(mode) = &t.mode {
        return parse_mode_value(mode, &format!("{}.mode", t.path)).map(Some);
    }
    match &t.use_quic {
        None => Ok(None),
        Some(serde_yaml_ng::Value::Bool(true)) => Ok(Some(Mode::Quic)),
        Some(serde_yaml_ng::Value::Bool(false)) => Ok(Some(Mode::Tls)),
        Some(_) => Err(config_error(
            code::INVALID_CONFIG,
            format!("{}.useQuic must be a boolean", t.path),
        )),
    }
}

/// Lower-cases and checks a region; `auto` means none.
fn normalize_region(region: &str, what: &str) -> Result<Option<String>> {
    let r = region.trim().to_ascii_lowercase();
    if r.is_empty() || r == "auto" {
        return Ok(None);
    }
    let bytes = r.as_bytes();
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let valid = bytes.len() <= 64
        && bytes.first().copied().is_some_and(edge)
        && bytes.last().copied().is_some_and(edge)
        && bytes
            .iter()
            .all(|&b| edge(b) || b == b'.' || b == b'_' || b == b'-');
    if !valid {
        return Err(config_error(
            code::INVALID_REGION,
            format!("{what}: a region is letters, digits, '.', '_' or '-' (at most 64)"),
        ));
    }
    Ok(Some(r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions() {
        assert_eq!(
            normalize_region(" EU-West ", "t").unwrap().as_deref(),
            Some("eu-west")
        );
        assert_eq!(normalize_region("Auto", "t").unwrap(), None);
        for bad in ["-eu", "eu-", "e u", "eu/1", &"a".repeat(65)] {
            assert_eq!(
                normalize_region(bad, "t").unwrap_err().code(),
                code::INVALID_REGION,
                "{bad}"
            );
        }
        assert!(normalize_region("a", "t").is_ok());
    }
}
