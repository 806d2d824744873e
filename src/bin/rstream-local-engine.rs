//! `rstream-local-engine`: the local rstream engine as a process.
//!
//! ```text
//! rstream-local-engine [--listen ADDR] [--state-dir DIR] [--token-file PATH]
//!                      [--client-ca FILE]... [--require-client-certificate]
//!                      [--webhook-url URL]... [--webhook-secret-file PATH] ...
//! ```
//!
//! Every flag also reads an `RSTREAM_LOCAL_ENGINE_*` environment variable
//! (`--help` lists them; `docs/LOCAL_ENGINE.md` describes them). Prints
//! exactly one line to stdout once it listens,
//! `RSTREAM_ENGINE=<host:port> RSTREAM_CA_FILE=<path>`, then runs until
//! SIGINT or SIGTERM. Logs (client and tunnel events unless `--quiet`) go
//! to stderr through `tracing` (`RUST_LOG`, default `info`) and a lossy,
//! non-blocking writer: a parent that never reads stderr loses log lines,
//! never engine progress. Bad arguments: a message on stderr and exit
//! code 2; a failure to start: exit code 1.

use std::io::Write;
use std::process::ExitCode;

use rstream::engine::cli::{self, log_safe, MAX_LOGGED_CHARS};
use rstream::engine::EngineEvent;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Log lines queued for stderr at most: 8,192. Beyond (a reader that does
/// not keep up, or none), new lines are dropped instead of blocking.
const LOG_QUEUE_LINES: usize = 8192;

/// The filter when `RUST_LOG` is unset or invalid.
const DEFAULT_LOG: &str = "info";

fn main() -> ExitCode {
    let settings = match cli::parse_from(std::env::args_os()) {
        Ok(settings) => settings,
        // --help / --version (exit 0, stdout) or a bad argument (exit 2).
        Err(e) => e.exit(),
    };
    if let Some(line) = &settings.new_app_credentials {
        // `--new-app-credentials`: the public key file is written; the
        // exports go to stdout for `eval` and nothing else runs.
        println!("{line}");
        return ExitCode::SUCCESS;
    }
    let _log = init_logging();
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
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
    runtime.block_on(run(settings))
}

/// Logs to stderr through a bounded queue and a writer thread: when the
/// queue is full (stderr not drained), lines are dropped, never waited on.
/// The guard flushes what is queued on exit (bounded wait).
fn init_logging() -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE_LINES)
        .thread_name("rstream-local-engine-log")
        .finish(std::io::stderr());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .init();
    guard
}

async fn run(settings: cli::Settings) -> ExitCode {
    let engine = match settings.builder.start().await {
        Ok(engine) => engine,
        Err(e) => {
            // Nothing has been logged yet: stderr cannot be full.
            // `Error`'s message leaves the cause to `source()`: print the chain.
            let mut text = e.to_string();
            let mut next = std::error::Error::source(&e);
            while let Some(cause) = next {
                text = format!("{text}: {cause}");
                next = cause.source();
            }
            eprintln!("rstream-local-engine: {text}");
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
    // One short write before anything else: the pipe has room for it.
    let mut stdout = std::io::stdout().lock();
    if stdout
        .write_all(line.as_bytes())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        // Nobody reads our address: keep serving anyway (tools may not need it).
        tracing::warn!("could not write the address line to stdout");
    }
    drop(stdout);
    tracing::info!(
        address = %engine.engine_address(),
        ca_file = %engine.ca_file().display(),
        "listening"
    );
    if !settings.quiet {
        tokio::spawn(log_events(events));
    }
    signal.await;
    engine.shutdown().await;
    ExitCode::SUCCESS
}

/// The event log: one `info` line per client and tunnel event (target
/// `rstream_local_engine::events`). Client-supplied strings go through
/// [`log_safe`].
async fn log_events(mut events: tokio::sync::broadcast::Receiver<EngineEvent>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(target: "rstream_local_engine::events", "{n} events not logged");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let kind = event.event_type();
        match &event {
            EngineEvent::ClientCreated { client } | EngineEvent::ClientDeleted { client, .. } => {
                let agent = client.details.agent.as_deref().unwrap_or("-");
                tracing::info!(
                    target: "rstream_local_engine::events",
                    id = %client.id,
                    peer = %client.peer_addr,
                    agent = %log_safe(agent, MAX_LOGGED_CHARS),
                    identity = client.identity.as_deref(),
                    "{kind}"
                );
            }
            EngineEvent::TunnelCreated { tunnel } | EngineEvent::TunnelDeleted { tunnel, .. } => {
                let p = &tunnel.properties;
                tracing::info!(
                    target: "rstream_local_engine::events",
                    id = %tunnel.id,
                    client = %tunnel.client_id,
                    name = p.name.as_deref().map(|n| log_safe(n, MAX_LOGGED_CHARS)),
                    protocol = p.protocol.as_deref(),
                    port = p.port,
                    "{kind}"
                );
            }
            _ => tracing::info!(target: "rstream_local_engine::events", "{kind}"),
        }
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
