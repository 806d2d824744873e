//! `rstream-local-engine`: the local rstream engine as a process.
//!
//! ```text
//! rstream-local-engine [--listen ADDR] [--state-dir DIR] [--token T]...
//!                      [--client-ca FILE]... [--require-client-certificate]
//!                      [--webhook-url URL --webhook-secret whsec_...]...
//! ```
//!
//! Prints exactly one line to stdout once it listens,
//! `RSTREAM_ENGINE=<host:port> RSTREAM_CA_FILE=<path>`, then runs until
//! SIGINT or SIGTERM. Client and tunnel events go to stderr (unless
//! `--quiet`). Bad arguments: a message on stderr and exit code 2; a
//! failure to start: exit code 1.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rstream::engine::{EngineEvent, LocalEngine};
use rstream::webhook::WebhookSecret;

const USAGE: &str = "\
usage: rstream-local-engine [OPTIONS]

Runs a local rstream engine (tunnel protocol + Engine API on one TLS port).
Once listening it prints one line to stdout:
  RSTREAM_ENGINE=<host:port> RSTREAM_CA_FILE=<path to the CA PEM>
and runs until SIGINT or SIGTERM.

options:
  --listen ADDR                 address to listen on (default 127.0.0.1:0)
  --state-dir DIR               CA and state directory, reused across restarts
                                (default: a fresh temporary directory)
  --token TOKEN                 accepted agent token (repeatable; without any,
                                every client is admitted)
  --client-ca FILE              trust this PEM CA to issue agent client
                                certificates (mTLS; repeatable): a verified
                                certificate authenticates an agent without
                                a token
  --require-client-certificate  refuse connections without such a
                                certificate (needs --client-ca)
  --liveness-timeout-ms MS      liveness timeout answered to clients
                                (default max(3 x interval, 15000), <= 900000)
  --max-tunnels-per-client N    default 64
  --max-pending-streams N       per tunnel, default 256
  --max-connections N           connections held at once on the engine port
                                (default 4096; beyond: closed at once)
  --max-published-connections N downstream connections held at once by all
                                published endpoints (default 4096)
  --webhook-url URL             deliver signed webhooks (client.created,
                                tunnel.created, tunnel.deleted,
                                client.deleted) to this http(s) URL
                                (repeatable)
  --webhook-secret SECRET       signing secret of the matching --webhook-url
                                (repeatable, paired in order; without any,
                                every URL uses $RSTREAM_WEBHOOK_SECRET)
  --quiet                       no event log on stderr
  -h, --help                    print this help
";

struct Args {
    listen: SocketAddr,
    state_dir: Option<PathBuf>,
    tokens: Vec<String>,
    client_cas: Vec<PathBuf>,
    require_client_certificate: bool,
    liveness_timeout: Option<Duration>,
    max_tunnels_per_client: Option<usize>,
    max_pending_streams: Option<usize>,
    max_connections: Option<usize>,
    max_published_connections: Option<usize>,
    webhooks: Vec<(String, WebhookSecret)>,
    quiet: bool,
}

enum Command {
    Help,
    Run(Box<Args>),
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        state_dir: None,
        tokens: Vec::new(),
        client_cas: Vec::new(),
        require_client_certificate: false,
        liveness_timeout: None,
        max_tunnels_per_client: None,
        max_pending_streams: None,
        max_connections: None,
        max_published_connections: None,
        webhooks: Vec::new(),
        quiet: false,
    };
    let mut webhook_urls = Vec::new();
    let mut webhook_secrets = Vec::new();
    while let Some(arg) = argv.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| argv.next())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--quiet" => args.quiet = true,
            "--listen" => {
                let v = value("--listen")?;
                args.listen = v
                    .parse()
                    .map_err(|_| format!("--listen: {v:?} is not an IP:PORT address"))?;
            }
            "--state-dir" => {
                let v = value("--state-dir")?;
                if v.trim().is_empty() {
                    return Err("--state-dir: empty path".into());
                }
                args.state_dir = Some(PathBuf::from(v));
            }
            "--token" => {
                let v = value("--token")?;
                if v.trim().is_empty() {
                    return Err("--token: empty token".into());
                }
                args.tokens.push(v);
            }
            "--client-ca" => {
                let v = value("--client-ca")?;
                if v.trim().is_empty() {
                    return Err("--client-ca: empty path".into());
                }
                args.client_cas.push(PathBuf::from(v));
            }
            "--require-client-certificate" => args.require_client_certificate = true,
            "--liveness-timeout-ms" => {
                let v = value("--liveness-timeout-ms")?;
                let ms: u64 = v
                    .parse()
                    .ok()
                    .filter(|ms| (1..=900_000).contains(ms))
                    .ok_or_else(|| format!("--liveness-timeout-ms: {v:?} is not 1-900000"))?;
                args.liveness_timeout = Some(Duration::from_millis(ms));
            }
            "--max-tunnels-per-client" => {
                args.max_tunnels_per_client = Some(count(
                    "--max-tunnels-per-client",
                    value("--max-tunnels-per-client")?,
                )?);
            }
            "--max-pending-streams" => {
                args.max_pending_streams = Some(count(
                    "--max-pending-streams",
                    value("--max-pending-streams")?,
                )?);
            }
            "--max-connections" => {
                args.max_connections =
                    Some(count("--max-connections", value("--max-connections")?)?);
            }
            "--max-published-connections" => {
                args.max_published_connections = Some(count(
                    "--max-published-connections",
                    value("--max-published-connections")?,
                )?);
            }
            "--webhook-url" => {
                let v = value("--webhook-url")?;
                if !(v.starts_with("http://") || v.starts_with("https://")) {
                    return Err("--webhook-url: must start with http:// or https://".into());
                }
                webhook_urls.push(v);
            }
            "--webhook-secret" => {
                let v = value("--webhook-secret")?;
                webhook_secrets
                    .push(WebhookSecret::new(v).map_err(|_| "--webhook-secret: empty secret")?);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if webhook_secrets.is_empty() && !webhook_urls.is_empty() {
        let secret = std::env::var("RSTREAM_WEBHOOK_SECRET")
            .ok()
            .and_then(|s| WebhookSecret::new(s).ok())
            .ok_or("--webhook-url needs --webhook-secret (or RSTREAM_WEBHOOK_SECRET)")?;
        webhook_secrets = vec![secret; webhook_urls.len()];
    }
    if webhook_secrets.len() != webhook_urls.len() {
        return Err(format!(
            "{} --webhook-url but {} --webhook-secret: give one secret per URL",
            webhook_urls.len(),
            webhook_secrets.len()
        ));
    }
    args.webhooks = webhook_urls.into_iter().zip(webhook_secrets).collect();
    Ok(Command::Run(Box::new(args)))
}

fn count(name: &str, v: String) -> Result<usize, String> {
    v.parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{name}: {v:?} is not a positive number"))
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Run(args)) => args,
        Err(message) => {
            eprintln!("rstream-local-engine: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rstream-local-engine: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(*args))
}

async fn run(args: Args) -> ExitCode {
    let mut builder = LocalEngine::builder().listen(args.listen);
    if let Some(dir) = args.state_dir {
        builder = builder.state_dir(dir);
    }
    for token in args.tokens {
        builder = builder.token(token);
    }
    for path in args.client_cas {
        builder = builder.client_ca_file(path);
    }
    builder = builder.require_client_certificate(args.require_client_certificate);
    if let Some(t) = args.liveness_timeout {
        builder = builder.liveness_timeout(t);
    }
    if let Some(n) = args.max_tunnels_per_client {
        builder = builder.max_tunnels_per_client(n);
    }
    if let Some(n) = args.max_pending_streams {
        builder = builder.max_pending_streams(n);
    }
    if let Some(n) = args.max_connections {
        builder = builder.max_connections(n);
    }
    if let Some(n) = args.max_published_connections {
        builder = builder.max_published_connections(n);
    }
    for (url, secret) in args.webhooks {
        builder = builder.webhook(url, secret);
    }
    let engine = match builder.start().await {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!("rstream-local-engine: {e}");
            return ExitCode::FAILURE;
        }
    };
    let signal = match shutdown_signal() {
        Ok(signal) => signal,
        Err(e) => {
            eprintln!("rstream-local-engine: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let events = engine.subscribe();
    let line = format!(
        "RSTREAM_ENGINE={} RSTREAM_CA_FILE={}\n",
        engine.engine_address(),
        engine.ca_file().display()
    );
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        // Nobody reads our address: keep serving anyway (tools may not need it).
        eprintln!("rstream-local-engine: could not write the address line to stdout");
    }
    drop(stdout);
    if !args.quiet {
        tokio::spawn(log_events(events));
    }
    signal.await;
    engine.shutdown().await;
    ExitCode::SUCCESS
}

async fn log_events(mut events: tokio::sync::broadcast::Receiver<EngineEvent>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => {
                eprintln!("rstream-local-engine: {n} events not logged");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let what = match &event {
            EngineEvent::ClientCreated { client } | EngineEvent::ClientDeleted { client, .. } => {
                let mut s = format!(
                    "id={} peer={} agent={}",
                    client.id,
                    client.peer_addr,
                    client.details.agent.as_deref().unwrap_or("-")
                );
                if let Some(identity) = &client.identity {
                    s.push_str(&format!(" identity={identity}"));
                }
                s
            }
            EngineEvent::TunnelCreated { tunnel } | EngineEvent::TunnelDeleted { tunnel, .. } => {
                let p = &tunnel.properties;
                let mut s = format!("id={} client={}", tunnel.id, tunnel.client_id);
                if let Some(name) = &p.name {
                    s.push_str(&format!(" name={name}"));
                }
                if let Some(protocol) = &p.protocol {
                    s.push_str(&format!(" protocol={protocol}"));
                }
                if let Some(port) = p.port {
                    s.push_str(&format!(" port={port}"));
                }
                s
            }
            _ => String::new(),
        };
        eprintln!("rstream-local-engine: {} {what}", event.event_type());
    }
}

/// Registers SIGINT/SIGTERM handlers at once (before the address line is
/// printed, so a tool that signals right after reading it is not lost);
/// the returned future resolves on the first of them.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}
