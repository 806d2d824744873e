//! The CLI's YAML config file (`~/.rstream/config.yaml`).
//!
//! The document is parsed leniently into a [`serde_yaml_ng::Value`] and then
//! checked key by key, so that a value of the wrong type fails with
//! `ERR_RSTREAM_INVALID_CONFIG` naming the key (`contexts[0].engine`), never
//! silently. Unknown keys are ignored (the CLI may write more than we read).
//! A missing, empty or non-mapping document is "no config".

use serde_yaml_ng::{Mapping, Value};

use super::headers::{self, Headers};
use super::normalize_api_url;
use super::yaml_bound::{self, Count, MAX_CONFIG_NODES};
use crate::error::{code, Error, Result};

/// Largest config file we read: 256 KiB (it is a few hundred bytes in
/// practice). Parsing holds the document's YAML events in memory, ~75 bytes
/// per byte of text at worst (measured: a 1 MiB flat list peaks at 77 MB),
/// so this cap also bounds the parser's memory (~20 MB at 256 KiB).
pub(crate) const MAX_CONFIG_FILE_BYTES: usize = 256 * 1024;

/// The parts of the config file the SDK uses.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConfigFile {
    pub(crate) default_context: Option<String>,
    pub(crate) contexts: Vec<ContextCfg>,
    pub(crate) environments: Vec<EnvironmentCfg>,
}

/// One `contexts[]` entry (entries without a name are dropped).
#[derive(Clone, Debug)]
pub(crate) struct ContextCfg {
    pub(crate) name: String,
    pub(crate) api_url: Option<String>,
    pub(crate) engine: Option<String>,
    pub(crate) project_endpoint: Option<String>,
    pub(crate) region: Option<String>,
    /// `noToken: true`: never read or send a stored token (Node runtime).
    pub(crate) no_token: bool,
    pub(crate) auth: AuthCfg,
    pub(crate) transport: TransportCfg,
}

/// One `environments[]` entry (entries without an `apiUrl` are dropped).
#[derive(Clone, Debug)]
pub(crate) struct EnvironmentCfg {
    pub(crate) api_url: String,
    pub(crate) auth: AuthCfg,
    pub(crate) headers: Headers,
    pub(crate) transport: TransportCfg,
}

/// `auth:` of a context or environment.
#[derive(Clone, Debug, Default)]
pub(crate) struct AuthCfg {
    pub(crate) token: Option<TokenCfg>,
    pub(crate) mtls: Option<MtlsCfg>,
}

/// `auth.token.storage`.
#[derive(Clone, Debug)]
pub(crate) struct TokenCfg {
    pub(crate) path: String,
    /// `provider`, or else `kind`.
    pub(crate) provider: Option<String>,
    pub(crate) value: Option<String>,
}

/// `auth.mtls`.
#[derive(Clone, Debug)]
pub(crate) struct MtlsCfg {
    pub(crate) path: String,
    pub(crate) certificate_file: Option<String>,
    pub(crate) key_file: Option<String>,
    pub(crate) certificate: Option<String>,
    pub(crate) key: Option<String>,
    /// `Some(label)` when a non-empty `storage` mapping is configured.
    pub(crate) storage: Option<String>,
}

/// `transport:` of a context or environment. Values are checked when the
/// context or environment is selected, not when the file is read.
#[derive(Clone, Debug, Default)]
pub(crate) struct TransportCfg {
    pub(crate) path: String,
    /// Raw `mode` (checked later: must be a string `auto`/`tls`/`quic`).
    pub(crate) mode: Option<Value>,
    /// Raw `useQuic` (checked later: must be a boolean).
    pub(crate) use_quic: Option<Value>,
    /// `proxy:`, as the documented mapping or the older URL string.
    pub(crate) proxy: Option<ProxyCfg>,
    /// Keys we do not support, present with a value that asks for something.
    pub(crate) unsupported: Vec<&'static str>,
}

/// `transport.proxy`: the mapping the CLI and the Node runtime write
/// (`http`, `socks5`, `fromEnvironment`, `tls.*`), or a bare URL string
/// (this crate's older form, kept so existing files keep working).
#[derive(Clone, Debug, Default)]
pub(crate) struct ProxyCfg {
    /// `transport.proxy` itself, for error messages.
    pub(crate) path: String,
    /// `http` (an `http://` or `https://` proxy URL), or the string form.
    pub(crate) http: Option<String>,
    /// `socks5` (a `socks5://` / `socks5h://` URL; Go SDK).
    pub(crate) socks5: Option<String>,
    /// `fromEnvironment: true`: read `HTTPS_PROXY` & co.
    pub(crate) from_environment: bool,
    /// `tls.caFile`.
    pub(crate) ca_file: Option<String>,
    /// `tls.serverName`.
    pub(crate) server_name: Option<String>,
    /// `tls.insecureSkipVerify`.
    pub(crate) insecure_skip_verify: bool,
}

impl ProxyCfg {
    /// Whether any `tls.*` key asks for something.
    pub(crate) fn has_tls(&self) -> bool {
        self.ca_file.is_some() || self.server_name.is_some() || self.insecure_skip_verify
    }

    fn parse(t: &Mapping, parent: &str) -> Result<Option<ProxyCfg>> {
        let path = join(parent, "proxy");
        let p = match get(t, "proxy") {
            None => return Ok(None),
            Some(Value::String(url)) => {
                // The older form: one URL of any supported scheme.
                return Ok(non_blank(url).map(|url| {
                    let socks = url.to_ascii_lowercase().starts_with("socks");
                    ProxyCfg {
                        http: (!socks).then(|| url.clone()),
                        socks5: socks.then_some(url),
                        path,
                        ..ProxyCfg::default()
                    }
                }));
            }
            Some(Value::Mapping(m)) => m,
            Some(_) => {
                return Err(invalid(format!(
                    "{path} must be a mapping (http, socks5, fromEnvironment, tls) or a URL string"
                )))
            }
        };
        let mut out = ProxyCfg {
            http: string(p, "http", &path)?.and_then(|s| non_blank(&s)),
            socks5: string(p, "socks5", &path)?.and_then(|s| non_blank(&s)),
            from_environment: boolean(p, "fromEnvironment", &path)?.unwrap_or(false),
            ..ProxyCfg::default()
        };
        if let Some(tls) = mapping(p, "tls", &path)? {
            let tpath = join(&path, "tls");
            out.ca_file = string(tls, "caFile", &tpath)?.and_then(|s| non_blank(&s));
            out.server_name = string(tls, "serverName", &tpath)?.and_then(|s| non_blank(&s));
            out.insecure_skip_verify = boolean(tls, "insecureSkipVerify", &tpath)?.unwrap_or(false);
        }
        out.path = path;
        Ok(Some(out))
    }
}

impl ConfigFile {
    /// Parses the file's text. `origin` names the file in error messages.
    pub(crate) fn parse(text: &str, origin: &str) -> Result<Option<ConfigFile>> {
        if text.len() > MAX_CONFIG_FILE_BYTES {
            return Err(invalid(format!(
                "config file {origin} is larger than {MAX_CONFIG_FILE_BYTES} bytes"
            )));
        }
        if text.trim().is_empty() {
            return Ok(None);
        }
        let not_yaml =
            |e| invalid(format!("config file {origin} is not valid YAML")).with_source(e);
        // First pass: bound what the parse below builds (see yaml_bound).
        match yaml_bound::count_nodes(text, MAX_CONFIG_NODES) {
            Count::Within => {}
            Count::TooMany => {
                return Err(Error::config(
                    code::CONFIG_TOO_MANY_NODES,
                    format!(
                        "config file {origin} has more than {MAX_CONFIG_NODES} YAML nodes \
                         (after expanding aliases)"
                    ),
                ))
            }
            Count::Invalid(e) => return Err(not_yaml(e)),
        }
        let mut value: Value = serde_yaml_ng::from_str(text).map_err(not_yaml)?;
        value.apply_merge().map_err(|e| {
            invalid(format!("config file {origin}: invalid YAML merge key")).with_source(e)
        })?;
        let Value::Mapping(root) = value else {
            return Ok(None);
        };
        let mut file = ConfigFile::default();
        if let Some(defaults) = mapping(&root, "defaults", "")? {
            if let Some(ctx) = mapping(defaults, "context", "defaults")? {
                file.default_context =
                    string(ctx, "name", "defaults.context")?.and_then(|s| non_blank(&s));
            }
        }
        for (i, item) in sequence(&root, "contexts", "")?.iter().enumerate() {
            let path = format!("contexts[{i}]");
            if let Some(ctx) = ContextCfg::parse(as_mapping(item, &path)?, path)? {
                file.contexts.push(ctx);
            }
        }
        for (i, item) in sequence(&root, "environments", "")?.iter().enumerate() {
            let path = format!("environments[{i}]");
            if let Some(env) = EnvironmentCfg::parse(as_mapping(item, &path)?, path)? {
                file.environments.push(env);
            }
        }
        Ok(Some(file))
    }
}

impl ContextCfg {
    fn parse(map: &Mapping, path: String) -> Result<Option<ContextCfg>> {
        let Some(name) = string(map, "name", &path)?.filter(|n| !n.is_empty()) else {
            return Ok(None);
        };
        let api_url = match string(map, "apiUrl", &path)? {
            Some(url) => normalize_api_url(&url, &format!("{path}.apiUrl"))?,
            None => None,
        };
        Ok(Some(ContextCfg {
            name,
            api_url,
            engine: string(map, "engine", &path)?.and_then(|s| non_blank(&s)),
            project_endpoint: string(map, "projectEndpoint", &path)?.and_then(|s| non_blank(&s)),
            region: string(map, "region", &path)?.and_then(|s| non_blank(&s)),
            no_token: boolean(map, "noToken", &path)?.unwrap_or(false),
            auth: AuthCfg::parse(map, &path)?,
            transport: TransportCfg::parse(map, &path)?,
        }))
    }
}

impl EnvironmentCfg {
    fn parse(map: &Mapping, path: String) -> Result<Option<EnvironmentCfg>> {
        let api_url = match string(map, "apiUrl", &path)? {
            Some(url) => normalize_api_url(&url, &format!("{path}.apiUrl"))?,
            None => None,
        };
        let Some(api_url) = api_url else {
            return Ok(None);
        };
        let headers = match mapping(map, "headers", &path)? {
            Some(h) => {
                let hpath = format!("{path}.headers");
                let mut pairs = Vec::with_capacity(h.len());
                for (k, v) in h {
                    let (Value::String(name), Value::String(value)) = (k, v) else {
                        return Err(invalid(format!(
                            "{hpath} must map header names to string values"
                        )));
                    };
                    pairs.push((name.clone(), value.clone()));
                }
                headers::normalize(pairs, &hpath)?
            }
            None => Headers::default(),
        };
        Ok(Some(EnvironmentCfg {
            api_url,
            auth: AuthCfg::parse(map, &path)?,
            headers,
            transport: TransportCfg::parse(map, &path)?,
        }))
    }
}

impl AuthCfg {
    fn parse(parent: &Mapping, parent_path: &str) -> Result<AuthCfg> {
        let Some(auth) = mapping(parent, "auth", parent_path)? else {
            return Ok(AuthCfg::default());
        };
        let path = join(parent_path, "auth");
        let mut out = AuthCfg::default();
        if let Some(token) = mapping(auth, "token", &path)? {
            let tpath = join(&path, "token");
            if let Some(storage) = mapping(token, "storage", &tpath)? {
                let spath = join(&tpath, "storage");
                let provider = string(storage, "provider", &spath)?.and_then(|s| non_blank(&s));
                let kind = string(storage, "kind", &spath)?.and_then(|s| non_blank(&s));
                // Read for type checking; keychain-style fields are unused.
                string(storage, "service", &spath)?;
                string(storage, "account", &spath)?;
                out.token = Some(TokenCfg {
                    provider: provider.or(kind),
                    value: string(storage, "value", &spath)?,
                    path: spath,
                });
            }
        }
        if let Some(mtls) = mapping(auth, "mtls", &path)? {
            let mpath = join(&path, "mtls");
            let storage = match get(mtls, "storage") {
                None => None,
                Some(Value::Mapping(s)) if s.is_empty() => None,
                Some(Value::Mapping(s)) => {
                    let label = ["provider", "kind"]
                        .iter()
                        .find_map(|k| match get(s, k) {
                            Some(Value::String(v)) => non_blank(v),
                            _ => None,
                        })
                        .unwrap_or_else(|| "configured".to_owned());
                    Some(label)
                }
                Some(_) => {
                    return Err(invalid(format!(
                        "{} must be a mapping",
                        join(&mpath, "storage")
                    )))
                }
            };
            out.mtls = Some(MtlsCfg {
                certificate_file: string(mtls, "certificateFile", &mpath)?
                    .and_then(|s| non_blank(&s)),
                key_file: string(mtls, "keyFile", &mpath)?.and_then(|s| non_blank(&s)),
                certificate: string(mtls, "certificate", &mpath)?.filter(|s| !s.trim().is_empty()),
                key: string(mtls, "key", &mpath)?.filter(|s| !s.trim().is_empty()),
                storage,
                path: mpath,
            });
        }
        Ok(out)
    }
}

impl TransportCfg {
    fn parse(parent: &Mapping, parent_path: &str) -> Result<TransportCfg> {
        let path = join(parent_path, "transport");
        let Some(t) = mapping(parent, "transport", parent_path)? else {
            return Ok(TransportCfg {
                path,
                ..TransportCfg::default()
            });
        };
        let mut unsupported = Vec::new();
        for key in ["bind", "dns", "ipFamily", "mptcp"] {
            match get(t, key) {
                None => {}
                // Turning MPTCP off asks for nothing we do not already do.
                Some(Value::Bool(false)) if key == "mptcp" => {}
                Some(_) => unsupported.push(key),
            }
        }
        Ok(TransportCfg {
            mode: get(t, "mode").cloned(),
            use_quic: get(t, "useQuic").cloned(),
            proxy: ProxyCfg::parse(t, &path)?,
            unsupported,
            path,
        })
    }
}

fn invalid(message: String) -> Error {
    Error::config(code::INVALID_CONFIG, message)
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

pub(crate) fn non_blank(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_owned())
}

/// The value at `key`; a YAML `null` counts as absent.
fn get<'a>(map: &'a Mapping, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn string(map: &Mapping, key: &str, parent: &str) -> Result<Option<String>> {
    match get(map, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{} must be a string", join(parent, key)))),
    }
}

fn boolean(map: &Mapping, key: &str, parent: &str) -> Result<Option<bool>> {
    match get(map, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(format!("{} must be a boolean", join(parent, key)))),
    }
}

fn mapping<'a>(map: &'a Mapping, key: &str, parent: &str) -> Result<Option<&'a Mapping>> {
    match get(map, key) {
        None => Ok(None),
        Some(Value::Mapping(m)) => Ok(Some(m)),
        Some(_) => Err(invalid(format!("{} must be a mapping", join(parent, key)))),
    }
}

fn sequence<'a>(map: &'a Mapping, key: &str, parent: &str) -> Result<&'a [Value]> {
    match get(map, key) {
        None => Ok(&[]),
        Some(Value::Sequence(s)) => Ok(s),
        Some(_) => Err(invalid(format!("{} must be a list", join(parent, key)))),
    }
}

fn as_mapping<'a>(value: &'a Value, path: &str) -> Result<&'a Mapping> {
    match value {
        Value::Mapping(m) => Ok(m),
        _ => Err(invalid(format!("{path} must be a mapping"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> &'static str {
        ConfigFile::parse(text, "test").unwrap_err().code()
    }

    #[test]
    fn empty_and_non_mapping_documents_are_no_config() {
        for text in [
            "",
            "  \n",
            "# only a comment\n",
            "- a\n- b\n",
            "hello\n",
            "~\n",
        ] {
            assert!(ConfigFile::parse(text, "t").unwrap().is_none(), "{text:?}");
        }
    }

    #[test]
    fn malformed_yaml_and_wrong_types() {
        assert_eq!(code("contexts: [\n"), code::INVALID_CONFIG);
        assert_eq!(code("a: 1\n---\nb: 2\n"), code::INVALID_CONFIG);
        assert_eq!(code("contexts: {}\n"), code::INVALID_CONFIG);
        assert_eq!(code("contexts: [1]\n"), code::INVALID_CONFIG);
        let e = ConfigFile::parse("contexts:\n  - name: a\n    engine: 42\n", "t").unwrap_err();
        assert!(e.message().contains("contexts[0].engine"), "{e}");
        assert_eq!(
            code("contexts:\n  - name: a\n    apiUrl: ftp://x\n"),
            code::INVALID_API_URL
        );
    }

    #[test]
    fn nameless_contexts_and_urlless_environments_are_ignored() {
        let f = ConfigFile::parse(
            "contexts:\n  - engine: a.test\n  - name: b\n    engine: b.test\nenvironments:\n  - headers: {X-A: b}\n",
            "t",
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.contexts.len(), 1);
        assert_eq!(f.contexts[0].name, "b");
        assert!(f.environments.is_empty());
    }

    #[test]
    fn merge_keys_are_applied() {
        let f = ConfigFile::parse(
            "base: &b {engine: m.test}\ncontexts:\n  - <<: *b\n    name: m\n",
            "t",
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.contexts[0].engine.as_deref(), Some("m.test"));
    }
}
