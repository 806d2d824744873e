//! The configuration case table, shared by `tests/client/config.rs` (our
//! resolver) and `tests/interop/config_python.rs` (the same cases through
//! the Python SDK).
//!
//! Each `tests/config_cases/*.yaml` file is a list of cases:
//!
//! ```yaml
//! - name: env engine beats the context
//!   config: |          # optional: the config file (RSTREAM_CONFIG points at it)
//!     contexts: [...]
//!   homeConfig: |      # optional: ~/.rstream/config.yaml (HOME is a temp dir)
//!   env: {RSTREAM_ENGINE: a.test}
//!   options: {engine: .., token: .., context: .., apiUrl: .., projectEndpoint: ..,
//!             region: .., configFile: false, pure: true, mtlsFiles: true,
//!             mtlsInline: true, proxy: URL, noProxy: true, proxyFromEnvironment: true,
//!             headers: {N: V},
//!             connectTimeout: 0, operationTimeout: 0, heartbeatInterval: 0.5,
//!             transport: auto|tls|quic}
//!   expect: {engine: "a.test:443" | "managed:proj[@region]", auth: none|token|mtls,
//!            error: ERR_..., proxy: URL|none, transport: tls|quic}
//!   (`transport: quic` expects ERR_RSTREAM_UNSUPPORTED_TRANSPORT instead
//!   when the `quic` feature is off)
//!   python: same | {skip: reason} | {differs: reason, engine/auth/error: ...}
//! ```
//!
//! Placeholders in strings: `${CASE}` (the case's temp dir), `${CERT}` /
//! `${KEY}` (PEM files of a client certificate), `${CERT_PEM}` /
//! `${KEY_PEM}` (the same PEM as JSON-quoted strings, for inline YAML),
//! `${JWT_EXPIRED}` / `${JWT_VALID}`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rstream::config::{AuthKind, EngineTarget};
use rstream::transport::{ClientIdentity, HttpProxy};
use rstream::ClientOptions;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CaseOptions {
    pub engine: Option<String>,
    pub token: Option<String>,
    pub context: Option<String>,
    pub api_url: Option<String>,
    pub project_endpoint: Option<String>,
    pub region: Option<String>,
    pub config_file: Option<bool>,
    #[serde(default)]
    pub pure: bool,
    #[serde(default)]
    pub mtls_files: bool,
    #[serde(default)]
    pub mtls_inline: bool,
    pub proxy: Option<String>,
    #[serde(default)]
    pub no_proxy: bool,
    #[serde(default)]
    pub proxy_from_environment: bool,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub connect_timeout: Option<f64>,
    pub operation_timeout: Option<f64>,
    pub heartbeat_interval: Option<f64>,
    /// `ClientOptions::transport`: auto | tls | quic (ours only).
    pub transport: Option<String>,
}

/// What a case resolves to. `proxy` is ours only (`None` = not checked).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    #[serde(default)]
    pub engine: Option<String>,
    #[serde(default = "none")]
    pub auth: String,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default, skip_serializing)]
    pub proxy: Option<String>,
    /// The transport actually used: `tls` (also for `auto`, which is TLS
    /// today) or `quic`. Absent means `tls` (Python has only TLS).
    #[serde(default, skip_serializing)]
    pub transport: Option<String>,
}

fn none() -> String {
    "none".to_owned()
}

impl Outcome {
    /// Equal for the purpose of a case: on error only the code counts.
    pub fn matches(&self, other: &Outcome) -> bool {
        match (&self.error, &other.error) {
            (Some(a), Some(b)) => a == b,
            (None, None) => {
                self.engine == other.engine
                    && self.auth == other.auth
                    && self.transport.as_deref().unwrap_or("tls")
                        == other.transport.as_deref().unwrap_or("tls")
                    && (self.proxy.is_none() || other.proxy.is_none() || self.proxy == other.proxy)
            }
            _ => false,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum PythonExpect {
    Same(String),
    Skip {
        skip: String,
    },
    Differs {
        differs: String,
        #[serde(flatten)]
        outcome: Outcome,
    },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub config: Option<String>,
    pub home_config: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub options: CaseOptions,
    pub expect: Outcome,
    pub python: Option<PythonExpect>,
    #[serde(skip)]
    pub file: String,
}

/// Certificates and tokens the placeholders stand for.
pub struct Fixture {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cert_pem: String,
    pub key_pem: String,
    pub jwt_expired: String,
    pub jwt_valid: String,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

impl Fixture {
    pub fn new(tag: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "rstream-{tag}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["agent.example.test".to_owned()]).unwrap();
        let (cert_pem, key_pem) = (ck.cert.pem(), ck.signing_key.serialize_pem());
        let cert = dir.join("client.pem");
        let key = dir.join("client-key.pem");
        std::fs::write(&cert, &cert_pem).unwrap();
        std::fs::write(&key, &key_pem).unwrap();
        let jwt = |exp: u64| {
            format!(
                "{}.{}.c2ln",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
                URL_SAFE_NO_PAD.encode(format!(r#"{{"sub":"agent","exp":{exp}}}"#))
            )
        };
        Fixture {
            dir,
            cert,
            key,
            cert_pem,
            key_pem,
            jwt_expired: jwt(1_000_000_000),
            jwt_valid: jwt(4_102_444_800),
        }
    }

    pub fn substitute(&self, s: &str, case_dir: &Path) -> String {
        s.replace("${CASE}", &case_dir.display().to_string())
            .replace("${CERT}", &self.cert.display().to_string())
            .replace("${KEY}", &self.key.display().to_string())
            .replace(
                "${CERT_PEM}",
                &serde_json::to_string(&self.cert_pem).unwrap(),
            )
            .replace("${KEY_PEM}", &serde_json::to_string(&self.key_pem).unwrap())
            .replace("${JWT_EXPIRED}", &self.jwt_expired)
            .replace("${JWT_VALID}", &self.jwt_valid)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Every case of every `tests/config_cases/*.yaml`, in file order.
pub fn load_cases() -> Vec<Case> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/config_cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut cases = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut list: Vec<Case> =
            serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let fname = file.file_name().unwrap().to_string_lossy().into_owned();
        for c in &mut list {
            c.file = fname.clone();
        }
        cases.extend(list);
    }
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(
            names.insert(c.name.clone()),
            "duplicate case name {:?}",
            c.name
        );
    }
    cases
}

/// A case made concrete: its files written, its environment complete.
pub struct Prepared {
    pub dir: PathBuf,
    /// The whole environment the resolver sees.
    pub env: BTreeMap<String, String>,
    pub options: CaseOptions,
}

pub fn prepare(case: &Case, fx: &Fixture, index: usize) -> Prepared {
    let dir = fx.dir.join(format!("case-{index}"));
    std::fs::create_dir_all(dir.join("home")).unwrap();
    let sub = |s: &str| fx.substitute(s, &dir);
    let mut env = BTreeMap::new();
    env.insert("HOME".to_owned(), dir.join("home").display().to_string());
    let config_path = dir.join("config.yaml");
    if let Some(text) = &case.config {
        std::fs::write(&config_path, sub(text)).unwrap();
    }
    if let Some(text) = &case.home_config {
        std::fs::create_dir_all(dir.join("home/.rstream")).unwrap();
        std::fs::write(dir.join("home/.rstream/config.yaml"), sub(text)).unwrap();
    } else {
        // Without a config (or with one), never fall back to a real file.
        env.insert(
            "RSTREAM_CONFIG".to_owned(),
            config_path.display().to_string(),
        );
    }
    for (k, v) in &case.env {
        env.insert(k.clone(), sub(v));
    }
    let mut options = case.options.clone();
    for field in [
        &mut options.engine,
        &mut options.token,
        &mut options.context,
        &mut options.api_url,
        &mut options.project_endpoint,
        &mut options.region,
        &mut options.proxy,
    ]
    .into_iter()
    .flatten()
    {
        *field = sub(field);
    }
    Prepared { dir, env, options }
}

/// Runs a prepared case through our resolver, checking that no secret
/// shows up in what it prints (errors, `Display`, `Debug`). Case secrets
/// contain the marker `sekret`.
pub fn run_rust(p: &Prepared, fx: &Fixture) -> Outcome {
    resolve_case(p, fx)
}

fn check_no_secret(text: &str, fx: &Fixture) {
    for secret in [
        "sekret",
        fx.key_pem.as_str(),
        &fx.jwt_valid,
        &fx.jwt_expired,
    ] {
        assert!(!text.contains(secret), "a secret leaked into:\n{text}");
    }
}

fn resolve_case(p: &Prepared, fx: &Fixture) -> Outcome {
    let error = |e: rstream::Error| {
        check_no_secret(&format!("{e}\n{e:?}"), fx);
        error(e)
    };
    let o = &p.options;
    let mut opts = if o.pure {
        ClientOptions::new()
    } else {
        let env = p.env.clone();
        ClientOptions::from_env_with(move |k| env.get(k).cloned())
    };
    if let Some(v) = &o.engine {
        opts = opts.engine(v);
    }
    if let Some(v) = &o.token {
        opts = opts.token(v.as_str());
    }
    if let Some(v) = &o.context {
        opts = opts.context(v);
    }
    if let Some(v) = &o.api_url {
        opts = opts.api_url(v);
    }
    if let Some(v) = &o.project_endpoint {
        opts = opts.project_endpoint(v);
    }
    if let Some(v) = &o.region {
        opts = opts.region(v);
    }
    if o.config_file == Some(false) {
        opts = opts.no_config_file();
    }
    if o.mtls_files {
        match ClientIdentity::from_pem_files(&fx.cert, &fx.key) {
            Ok(id) => opts = opts.client_identity(id),
            Err(e) => return error(e),
        }
    }
    if o.mtls_inline {
        match ClientIdentity::from_pem(fx.cert_pem.as_bytes(), fx.key_pem.as_bytes()) {
            Ok(id) => opts = opts.client_identity(id),
            Err(e) => return error(e),
        }
    }
    if let Some(url) = &o.proxy {
        match HttpProxy::parse(url) {
            Ok(p) => opts = opts.proxy(p),
            Err(e) => return error(e),
        }
    }
    if o.no_proxy {
        opts = opts.no_proxy();
    }
    if o.proxy_from_environment {
        opts = opts.proxy_from_environment();
    }
    for (k, v) in &o.headers {
        opts = opts.control_plane_header(k, v);
    }
    if let Some(s) = o.connect_timeout {
        opts = opts.connect_timeout(Duration::from_secs_f64(s));
    }
    if let Some(s) = o.operation_timeout {
        opts = opts.operation_timeout(Duration::from_secs_f64(s));
    }
    if let Some(s) = o.heartbeat_interval {
        opts = opts.heartbeat_interval(Duration::from_secs_f64(s));
    }
    if let Some(t) = &o.transport {
        opts = opts.transport(match t.as_str() {
            "quic" => rstream::Transport::Quic,
            "tls" => rstream::Transport::Tls,
            _ => rstream::Transport::Auto,
        });
    }
    match opts.resolve() {
        Err(e) => error(e),
        Ok(r) => {
            let shown = format!("{r}\n{r:?}");
            check_no_secret(&shown, fx);
            if let Some((t, _)) = r.token() {
                assert!(!shown.contains(t.expose()), "token leaked:\n{shown}");
            }
            Outcome {
                engine: r.engine().map(|e| match e {
                    EngineTarget::Address(a) => a.to_string(),
                    EngineTarget::Managed {
                        project_endpoint,
                        region: None,
                    } => format!("managed:{project_endpoint}"),
                    EngineTarget::Managed {
                        project_endpoint,
                        region: Some(r),
                    } => format!("managed:{project_endpoint}@{r}"),
                    other => format!("{other}"),
                }),
                auth: match r.auth() {
                    AuthKind::Token => "token",
                    AuthKind::Mtls => "mtls",
                    _ => "none",
                }
                .to_owned(),
                error: None,
                proxy: Some(r.proxy().map_or("none".to_owned(), |(p, _)| p.to_string())),
                transport: Some(
                    match r.transport() {
                        rstream::Transport::Quic => "quic",
                        _ => "tls",
                    }
                    .to_owned(),
                ),
            }
        }
    }
}

fn error(e: rstream::Error) -> Outcome {
    Outcome {
        error: Some(e.code().to_owned()),
        auth: none(),
        ..Outcome::default()
    }
}
