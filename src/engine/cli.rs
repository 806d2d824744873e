//! The `rstream-local-engine` command line: its `clap` definition and how
//! it becomes a [`LocalEngineBuilder`]. Not a public API (hidden from the
//! docs): it lives in the library so tests can check that
//! `docs/LOCAL_ENGINE.md` lists every flag ([`flags`]).
//!
//! Every flag has an `RSTREAM_LOCAL_ENGINE_*` environment fallback (used
//! when the flag is absent from the command line). Secrets never need
//! argv, where other local users can read them: tokens also come from
//! `--token-file` or `RSTREAM_LOCAL_ENGINE_TOKEN`, webhook secrets from
//! `--webhook-secret-file`, `RSTREAM_LOCAL_ENGINE_WEBHOOK_SECRET` or
//! `RSTREAM_WEBHOOK_SECRET`.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};

use super::{LocalEngine, LocalEngineBuilder};
use crate::webhook::WebhookSecret;

/// Largest token or webhook secret file read: 1 MiB. A larger file is an
/// error, not a partial read.
pub const MAX_SECRET_FILE_BYTES: u64 = 1 << 20;

/// Longest client-supplied string (e.g. the agent name) written to the
/// log, in characters: 128. Longer ones are cut and marked with `…`.
pub const MAX_LOGGED_CHARS: usize = 128;

/// The environment variable that signs every `--webhook-url` when no
/// other secret is given (kept from earlier versions).
pub const LEGACY_WEBHOOK_SECRET_ENV: &str = "RSTREAM_WEBHOOK_SECRET";

const ABOUT: &str = "Runs a local rstream engine (tunnel protocol + Engine API on one TLS port).";

const AFTER_HELP: &str = "\
Once listening it prints exactly one line to stdout:
  RSTREAM_ENGINE=<host:port> RSTREAM_CA_FILE=<path to the CA PEM>
and runs until SIGINT or SIGTERM. Logs go to stderr (RUST_LOG, default
info); a reader that does not keep up loses log lines, never engine
progress. Every flag also reads the environment variable shown, when the
flag is absent. See docs/LOCAL_ENGINE.md.";

/// The command line (`clap` derive). Not `Debug`: it holds secrets.
#[derive(Parser)]
#[command(
    name = "rstream-local-engine",
    version,
    about = ABOUT,
    after_help = AFTER_HELP
)]
struct Args {
    /// Address to listen on.
    #[arg(
        long,
        value_name = "ADDR",
        env = "RSTREAM_LOCAL_ENGINE_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    listen: SocketAddr,

    /// CA and state directory, reused across restarts; must be owned by
    /// you and not writable by others [default: a fresh temporary directory].
    #[arg(
        long,
        value_name = "DIR",
        env = "RSTREAM_LOCAL_ENGINE_STATE_DIR",
        value_parser = non_empty_path
    )]
    state_dir: Option<PathBuf>,

    /// Accepted agent token (repeatable; without any token, every client
    /// is admitted). Visible to other local users on the command line:
    /// prefer --token-file or the environment.
    #[arg(
        long = "token",
        value_name = "TOKEN",
        env = "RSTREAM_LOCAL_ENGINE_TOKEN",
        hide_env_values = true,
        value_parser = non_blank
    )]
    tokens: Vec<String>,

    /// Read accepted agent tokens from a file, one per line (blank lines
    /// and lines starting with '#' are skipped); adds to --token.
    #[arg(long, value_name = "PATH", env = "RSTREAM_LOCAL_ENGINE_TOKEN_FILE")]
    token_file: Option<PathBuf>,

    /// Register an application: CLIENT_ID=PUBLIC_KEY.pem (PEM SPKI, P-521;
    /// repeatable; the environment takes a comma-separated list). Its app
    /// tokens then authenticate agents and Engine API callers.
    #[arg(
        long = "app",
        value_name = "CLIENT_ID=PEM_FILE",
        env = "RSTREAM_LOCAL_ENGINE_APP",
        value_delimiter = ',',
        value_parser = app_spec
    )]
    apps: Vec<(String, PathBuf)>,

    /// This engine's project id: token resources that target projects must
    /// name it.
    #[arg(
        long,
        value_name = "ID",
        env = "RSTREAM_LOCAL_ENGINE_PROJECT_ID",
        value_parser = non_blank
    )]
    project_id: Option<String>,

    /// Print a new application credential pair for local use and exit:
    /// writes the public key to PEM_FILE (register it with --app) and
    /// prints `export RSTREAM_CLIENT_ID=... RSTREAM_CLIENT_SECRET=...`.
    #[arg(
        long,
        value_name = "CLIENT_ID=PEM_FILE",
        value_parser = app_spec,
        exclusive = true
    )]
    new_app_credentials: Option<(String, PathBuf)>,

    /// Trust this PEM CA to issue agent client certificates (mTLS;
    /// repeatable): a verified certificate authenticates an agent without
    /// a token.
    #[arg(
        long = "client-ca",
        value_name = "FILE",
        env = "RSTREAM_LOCAL_ENGINE_CLIENT_CA",
        value_parser = non_empty_path
    )]
    client_cas: Vec<PathBuf>,

    /// Trust this PEM CA to issue the client certificates of downstream
    /// users of published tunnels created with mtls_auth = true
    /// (repeatable); without it such tunnels are refused.
    #[arg(
        long = "edge-client-ca",
        value_name = "FILE",
        env = "RSTREAM_LOCAL_ENGINE_EDGE_CLIENT_CA",
        value_parser = non_empty_path
    )]
    edge_client_cas: Vec<PathBuf>,

    /// Refuse connections without such a client certificate (needs
    /// --client-ca).
    #[arg(
        long,
        env = "RSTREAM_LOCAL_ENGINE_REQUIRE_CLIENT_CERTIFICATE",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    require_client_certificate: bool,

    /// Liveness timeout answered to clients, 1-900000 [default:
    /// max(3 x interval, 15000)].
    #[arg(
        long,
        value_name = "MS",
        env = "RSTREAM_LOCAL_ENGINE_LIVENESS_TIMEOUT_MS",
        value_parser = clap::value_parser!(u64).range(1..=900_000)
    )]
    liveness_timeout_ms: Option<u64>,

    /// Tunnels per control channel [default: 64].
    #[arg(
        long,
        value_name = "N",
        env = "RSTREAM_LOCAL_ENGINE_MAX_TUNNELS_PER_CLIENT",
        value_parser = positive
    )]
    max_tunnels_per_client: Option<usize>,

    /// Streams per tunnel waiting for their owner [default: 256].
    #[arg(
        long,
        value_name = "N",
        env = "RSTREAM_LOCAL_ENGINE_MAX_PENDING_STREAMS",
        value_parser = positive
    )]
    max_pending_streams: Option<usize>,

    /// Established (authenticated) connections held at once on the engine
    /// port; one more is refused once it authenticates [default: 4096].
    #[arg(
        long,
        value_name = "N",
        env = "RSTREAM_LOCAL_ENGINE_MAX_CONNECTIONS",
        value_parser = positive
    )]
    max_connections: Option<usize>,

    /// Connections on the engine port that have not authenticated yet;
    /// when full, the oldest is closed [default: 512].
    #[arg(
        long,
        value_name = "N",
        env = "RSTREAM_LOCAL_ENGINE_MAX_UNAUTHENTICATED_CONNECTIONS",
        value_parser = positive
    )]
    max_unauthenticated_connections: Option<usize>,

    /// Time a new engine-port connection has to authenticate (TLS
    /// handshake, first frame or request head, and credentials together),
    /// in milliseconds, at most 300000 [default: 10000].
    #[arg(
        long,
        value_name = "MS",
        env = "RSTREAM_LOCAL_ENGINE_ADMISSION_TIMEOUT_MS",
        value_parser = clap::value_parser!(u64).range(1..=300_000)
    )]
    admission_timeout_ms: Option<u64>,

    /// Engine API watches (/api/sse, /api/websocket) served at once; one
    /// more gets 429 [default: 256].
    #[arg(
        long,
        value_name = "N",
        env = "RSTREAM_LOCAL_ENGINE_MAX_WATCHES",
        value_parser = positive
    )]
    max_watches: Option<usize>,

    /// Downstream connections held at once by all published endpoints
    /// [default: 4096].
    #[arg(
        long,
        value_name = "N",
        env = "RSTREAM_LOCAL_ENGINE_MAX_PUBLISHED_CONNECTIONS",
        value_parser = positive
    )]
    max_published_connections: Option<usize>,

    /// Seconds a published datagram tunnel's channel (one downstream UDP
    /// source) may stay silent before it is closed, at most 86400
    /// [default: 60].
    #[arg(
        long,
        value_name = "SECS",
        env = "RSTREAM_LOCAL_ENGINE_DATAGRAM_IDLE_TIMEOUT_SECS",
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    datagram_idle_timeout_secs: Option<u64>,

    /// Channels (downstream UDP sources) held at once per published
    /// datagram tunnel; a new source beyond it is dropped [default: 1024].
    #[arg(
        long,
        value_name = "N",
        env = "RSTREAM_LOCAL_ENGINE_MAX_DATAGRAM_CHANNELS",
        value_parser = positive
    )]
    max_datagram_channels: Option<usize>,

    /// Deliver signed webhooks (client.created, tunnel.created,
    /// tunnel.deleted, client.deleted) to this http(s) URL (repeatable).
    #[arg(
        long = "webhook-url",
        value_name = "URL",
        env = "RSTREAM_LOCAL_ENGINE_WEBHOOK_URL",
        value_parser = http_url
    )]
    webhook_urls: Vec<String>,

    /// Signing secret of the webhook URLs: one signs every URL, else one
    /// per URL, paired in order (repeatable). Visible to other local users
    /// on the command line: prefer --webhook-secret-file or the
    /// environment (also RSTREAM_WEBHOOK_SECRET, for every URL).
    #[arg(
        long = "webhook-secret",
        value_name = "SECRET",
        env = "RSTREAM_LOCAL_ENGINE_WEBHOOK_SECRET",
        hide_env_values = true,
        value_parser = non_blank
    )]
    webhook_secrets: Vec<String>,

    /// Read webhook signing secrets from a file, one per line (blank lines
    /// and lines starting with '#' are skipped); adds to --webhook-secret.
    #[arg(
        long,
        value_name = "PATH",
        env = "RSTREAM_LOCAL_ENGINE_WEBHOOK_SECRET_FILE"
    )]
    webhook_secret_file: Option<PathBuf>,

    /// No event log (client and tunnel events) on stderr.
    #[arg(
        long,
        env = "RSTREAM_LOCAL_ENGINE_QUIET",
        value_parser = clap::builder::FalseyValueParser::new()
    )]
    quiet: bool,
}

/// What the binary runs with.
#[derive(Debug)]
pub struct Settings {
    /// The configured engine (its `Debug` redacts secrets).
    pub builder: LocalEngineBuilder,
    /// No event log.
    pub quiet: bool,
    /// Warnings to log once logging is set up (e.g. a token on argv).
    pub warnings: Vec<String>,
    /// `--new-app-credentials`: print this line (the exports) and exit
    /// instead of running; the public key file is already written.
    pub new_app_credentials: Option<String>,
}

/// `--new-app-credentials ID=FILE`: a fresh key pair, the public key
/// written to FILE (refusing to overwrite), the export line returned.
fn new_app_credentials(client_id: &str, path: &Path) -> Result<String, String> {
    let creds = crate::auth::AppCredentials::generate(client_id).map_err(|e| e.to_string())?;
    let pem = creds.public_key_pem().map_err(|e| e.to_string())?;
    let secret = creds.client_secret().map_err(|e| e.to_string())?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, pem.as_bytes()))
        .map_err(|e| {
            format!(
                "--new-app-credentials: cannot create {}: {e}",
                path.display()
            )
        })?;
    Ok(format!(
        "export {}={} {}={}",
        crate::auth::CLIENT_ID_ENV,
        creds.client_id(),
        crate::auth::CLIENT_SECRET_ENV,
        secret.expose()
    ))
}

/// Parses `argv` (program name first) and the environment. On `--help`,
/// `--version` or a bad argument, returns the `clap` error to
/// [`exit`](clap::Error::exit) with (status 0 or 2, text on stdout or
/// stderr). Files named by flags are read here.
pub fn parse_from<I, T>(argv: I) -> Result<Settings, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let mut command = Args::command();
    let matches = command.try_get_matches_from_mut(argv)?;
    let on_argv = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let mut warnings = Vec::new();
    for (id, flag, instead) in [
        (
            "tokens",
            "--token",
            "--token-file or RSTREAM_LOCAL_ENGINE_TOKEN",
        ),
        (
            "webhook_secrets",
            "--webhook-secret",
            "--webhook-secret-file or RSTREAM_LOCAL_ENGINE_WEBHOOK_SECRET",
        ),
    ] {
        if on_argv(id) {
            warnings.push(format!(
                "{flag} on the command line is visible to other local users; prefer {instead}"
            ));
        }
    }
    let args = Args::from_arg_matches(&matches).map_err(|e| e.format(&mut command))?;
    let invalid = |message: String| {
        command
            .clone()
            .error(clap::error::ErrorKind::ValueValidation, message)
    };
    if let Some((client_id, path)) = &args.new_app_credentials {
        let line = new_app_credentials(client_id, path).map_err(invalid)?;
        return Ok(Settings {
            builder: LocalEngine::builder(),
            quiet: true,
            warnings,
            new_app_credentials: Some(line),
        });
    }
    args.into_settings(warnings).map_err(invalid)
}

impl Args {
    fn into_settings(self, warnings: Vec<String>) -> Result<Settings, String> {
        let mut builder = LocalEngine::builder().listen(self.listen);
        if let Some(dir) = self.state_dir {
            builder = builder.state_dir(dir);
        }
        let mut tokens = self.tokens;
        if let Some(path) = &self.token_file {
            tokens.extend(read_lines(path, "--token-file")?);
        }
        for token in tokens {
            builder = builder.token(token);
        }
        for (client_id, path) in self.apps {
            let pem = read_small(&path, "--app")?;
            let key = crate::auth::AppPublicKey::from_pem(&pem)
                .map_err(|e| format!("--app {client_id}: {}: {e}", path.display()))?;
            builder = builder.app(client_id, key);
        }
        if let Some(project) = self.project_id {
            builder = builder.project_id(project);
        }
        for path in self.client_cas {
            builder = builder.client_ca_file(path);
        }
        for path in self.edge_client_cas {
            builder = builder.edge_client_ca_file(path);
        }
        builder = builder.require_client_certificate(self.require_client_certificate);
        if let Some(ms) = self.liveness_timeout_ms {
            builder = builder.liveness_timeout(Duration::from_millis(ms));
        }
        if let Some(n) = self.max_tunnels_per_client {
            builder = builder.max_tunnels_per_client(n);
        }
        if let Some(n) = self.max_pending_streams {
            builder = builder.max_pending_streams(n);
        }
        if let Some(n) = self.max_connections {
            builder = builder.max_connections(n);
        }
        if let Some(n) = self.max_unauthenticated_connections {
            builder = builder.max_unauthenticated_connections(n);
        }
        if let Some(ms) = self.admission_timeout_ms {
            builder = builder.admission_timeout(Duration::from_millis(ms));
        }
        if let Some(n) = self.max_watches {
            builder = builder.max_watches(n);
        }
        if let Some(n) = self.max_published_connections {
            builder = builder.max_published_connections(n);
        }
        if let Some(secs) = self.datagram_idle_timeout_secs {
            builder = builder.datagram_idle_timeout(Duration::from_secs(secs));
        }
        if let Some(n) = self.max_datagram_channels {
            builder = builder.max_datagram_channels(n);
        }
        let mut secrets = self.webhook_secrets;
        if let Some(path) = &self.webhook_secret_file {
            secrets.extend(read_lines(path, "--webhook-secret-file")?);
        }
        for (url, secret) in pair_webhooks(self.webhook_urls, secrets)? {
            builder = builder.webhook(url, secret);
        }
        Ok(Settings {
            builder,
            quiet: self.quiet,
            warnings,
            new_app_credentials: None,
        })
    }
}

/// Pairs webhook URLs with secrets: one secret signs every URL, else one
/// per URL in order; none: `RSTREAM_WEBHOOK_SECRET` for every URL.
fn pair_webhooks(
    urls: Vec<String>,
    mut secrets: Vec<String>,
) -> Result<Vec<(String, WebhookSecret)>, String> {
    if urls.is_empty() {
        if secrets.is_empty() {
            return Ok(Vec::new());
        }
        return Err(format!(
            "{} webhook secret(s) but no --webhook-url",
            secrets.len()
        ));
    }
    if secrets.is_empty() {
        secrets.extend(
            std::env::var(LEGACY_WEBHOOK_SECRET_ENV)
                .ok()
                .filter(|s| !s.trim().is_empty()),
        );
    }
    let secrets = secrets
        .into_iter()
        .map(|s| WebhookSecret::new(s).map_err(|_| "empty webhook secret".to_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    match secrets.len() {
        0 => Err(format!(
            "--webhook-url needs a signing secret: --webhook-secret-file, \
             RSTREAM_LOCAL_ENGINE_WEBHOOK_SECRET, {LEGACY_WEBHOOK_SECRET_ENV} or --webhook-secret"
        )),
        1 => Ok(urls
            .into_iter()
            .map(|url| (url, secrets[0].clone()))
            .collect()),
        n if n == urls.len() => Ok(urls.into_iter().zip(secrets).collect()),
        n => Err(format!(
            "{} --webhook-url but {n} webhook secrets: give one secret for all, or one per URL",
            urls.len()
        )),
    }
}

/// The non-empty, non-comment lines of a secrets file (trimmed). Fails on
/// an unreadable, non-UTF-8 or oversized file, and on one without any
/// line (a token file without tokens would admit everyone).
fn read_lines(path: &Path, flag: &str) -> Result<Vec<String>, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("{flag}: cannot open {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{flag}: cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "{flag}: {} is larger than {MAX_SECRET_FILE_BYTES} bytes",
            path.display()
        ));
    }
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        return Err(format!("{flag}: {} holds no secret", path.display()));
    }
    Ok(lines)
}

/// `CLIENT_ID=PATH`.
fn app_spec(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((id, path)) if !id.trim().is_empty() && !path.trim().is_empty() => {
            Ok((id.trim().to_owned(), PathBuf::from(path.trim())))
        }
        _ => Err("expected CLIENT_ID=PEM_FILE".into()),
    }
}

/// A small text file (a PEM key), at most [`MAX_SECRET_FILE_BYTES`].
fn read_small(path: &Path, flag: &str) -> Result<String, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("{flag}: cannot open {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{flag}: cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "{flag}: {} is larger than {MAX_SECRET_FILE_BYTES} bytes",
            path.display()
        ));
    }
    Ok(text)
}

fn non_empty_path(s: &str) -> Result<PathBuf, String> {
    if s.trim().is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(s))
}

fn non_blank(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("empty value".into());
    }
    Ok(s.to_owned())
}

fn positive(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a positive number"))
}

fn http_url(s: &str) -> Result<String, String> {
    if s.starts_with("http://") || s.starts_with("https://") {
        Ok(s.to_owned())
    } else {
        Err("must start with http:// or https://".into())
    }
}

/// Every long flag (`--name`, with `--help` and `--version`) and every
/// environment variable of the command line, for the docs check.
pub fn flags() -> Vec<String> {
    let mut command = Args::command();
    command.build();
    let mut out = Vec::new();
    for arg in command.get_arguments() {
        if let Some(long) = arg.get_long() {
            out.push(format!("--{long}"));
        }
        if let Some(env) = arg.get_env() {
            out.push(env.to_string_lossy().into_owned());
        }
    }
    out
}

/// A client-supplied string made safe for a log line: control and other
/// non-printable characters escaped (as in Rust string literals), cut to
/// `max_chars` characters with a trailing `…`. Quotes and backslashes are
/// escaped too, so a value cannot fake `key=value` fields.
pub fn log_safe(s: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max_chars * 4) + 3);
    for (i, c) in s.chars().enumerate() {
        if i == max_chars {
            out.push('…');
            break;
        }
        if c == ' ' {
            out.push(' ');
        } else {
            out.extend(c.escape_debug());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, clap::Error> {
        parse_from(std::iter::once("rstream-local-engine").chain(args.iter().copied()))
    }

    #[test]
    fn log_safe_escapes_and_truncates() {
        assert_eq!(log_safe("rstream-rust/0.1", 128), "rstream-rust/0.1");
        assert_eq!(log_safe("a\nb\x1b[31m\"", 128), "a\\nb\\u{1b}[31m\\\"");
        assert_eq!(log_safe(&"x".repeat(500), 4), "xxxx…");
        assert_eq!(log_safe("été", 2), "ét…");
    }

    #[test]
    fn files_and_pairing() {
        let dir = std::env::temp_dir().join(format!("rstream-cli-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let tokens = dir.join("tokens");
        std::fs::write(&tokens, "# agents\n t1 \r\n\nt2\n").unwrap();
        let s = parse(&["--token-file", tokens.to_str().unwrap()]).unwrap();
        assert!(s.warnings.is_empty());
        assert!(!format!("{:?}", s.builder).contains("t1"));
        let s = parse(&["--token", "argv"]).unwrap();
        assert_eq!(s.warnings.len(), 1);

        let empty = dir.join("empty");
        std::fs::write(&empty, "# nothing\n\n").unwrap();
        let err = parse(&["--token-file", empty.to_str().unwrap()]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(parse(&["--token-file", dir.join("missing").to_str().unwrap()]).is_err());
        let big = dir.join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_FILE_BYTES as usize + 1]).unwrap();
        assert!(parse(&["--token-file", big.to_str().unwrap()]).is_err());

        let url = "http://127.0.0.1:9/a";
        let secrets = dir.join("secrets");
        std::fs::write(&secrets, "whsec_a\nwhsec_b\n").unwrap();
        let file = secrets.to_str().unwrap();
        let both = ["--webhook-url", url, "--webhook-url", url];
        assert!(parse(&[&both[..], &["--webhook-secret-file", file]].concat()).is_ok());
        assert!(parse(&[&both[..], &["--webhook-secret", "whsec_one"]].concat()).is_ok());
        let three = [
            &both[..],
            &["--webhook-url", url, "--webhook-secret-file", file],
        ]
        .concat();
        assert!(parse(&three).is_err());
        assert!(parse(&["--webhook-secret", "whsec_x"]).is_err());
        assert!(parse(&["--webhook-url", "ftp://x/", "--webhook-secret", "s"]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn datagram_bounds() {
        let s = parse(&[
            "--datagram-idle-timeout-secs",
            "5",
            "--max-datagram-channels",
            "16",
        ])
        .unwrap();
        let debug = format!("{:?}", s.builder);
        assert!(debug.contains("datagram_idle_timeout: 5s"), "{debug}");
        assert!(debug.contains("max_datagram_channels: 16"), "{debug}");
        assert!(parse(&["--datagram-idle-timeout-secs", "0"]).is_err());
        assert!(parse(&["--datagram-idle-timeout-secs", "86401"]).is_err());
        assert!(parse(&["--max-datagram-channels", "0"]).is_err());
    }

    #[test]
    fn help_and_version() {
        let help = parse(&["--help"]).unwrap_err();
        assert_eq!(help.exit_code(), 0);
        let text = help.to_string();
        assert!(text.contains("--token-file"), "{text}");
        assert!(text.contains("RSTREAM_LOCAL_ENGINE_TOKEN"), "{text}");
        let version = parse(&["--version"]).unwrap_err();
        assert!(version.to_string().contains(env!("CARGO_PKG_VERSION")));
        assert!(flags().contains(&"--quiet".to_owned()));
        assert!(flags().contains(&"--version".to_owned()));
    }
}
