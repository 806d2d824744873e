//! Side-by-side load harness for the tunnel path (docs/BENCHMARKS.md).
//!
//! ```text
//! cargo bench --bench tunnel_load -- [--quick] [--duration 10] [--skip-python]
//!     [--rounds N] [--legs ABCDE] [--no-dial] [--no-idle] [--perf DIR]
//!     [--transfer-mib N] [--compare-exe OTHER_BUILD]
//! cargo bench --bench tunnel_load -- --scale [--scale-curves rps,idle,tunnels,clients,dial]
//!     [--scale-conns 1,16,256,4096] [--scale-idle 1000,10000,50000]
//!     [--scale-tunnels 10,100,1000] [--scale-clients 10,100,1000]
//!     [--scale-dials 400] [--scale-out FILE.csv] [--duration S] [--perf DIR]
//! ```
//!
//! One run starts the local engine and measures, against the same
//! hello-world axum router:
//!
//! - A: `axum::serve(tunnel, router)`, in-process through the tunnel;
//! - B: `tunnel.forward_to(..)` to the same router on a loopback TCP port;
//! - C: the router served directly on loopback TCP with TLS (no engine hop);
//! - D: the Python SDK's `rstream.asgi.serve` through the same engine
//!   (skipped with a message when `RSTREAM_PYTHON`/`python3` cannot import
//!   `rstream`);
//!
//! for (1) keep-alive requests on 64 connections, (2) one request per new
//! connection, and (3) a bytestream transfer through a dialed private tunnel
//! vs raw loopback TCP; plus the resident memory of idle proxied
//! connections.
//!
//! Leg E rides along workload (3): the same bytes from the same rustls
//! sender through HAProxy (`haproxy` on the `PATH` or `$HAPROXY`; Debian:
//! `apt-get install haproxy`), TLS frontend + TLS backend to a rustls sink
//! in the same sink process: like the engine, 4 AES-GCM passes, 2 loopback
//! TCP hops, 3 processes. Skipped with a message when HAProxy is not
//! installed, or left out with `--legs ABCD`. `--legs E --no-idle` runs the
//! bytestream workload alone. With E, the *published* paths run too: a TLS
//! sender through the engine's published `http` endpoint (TLS terminated
//! by the engine, like HAProxy's TLS front + TLS back) and through its
//! published `tcp` endpoint (raw splice, the sender's TLS ends in the
//! receiver), the latter beside HAProxy with a plain `mode tcp` front and a
//! TLS back carrying the same end-to-end TLS.
//!
//! `--scale` measures how cost grows instead (module `scale`): keep-alive
//! at 1 to 4,096 connections (legs A and C), RSS per idle proxied
//! connection, per tunnel and per control channel, and dial setup latency
//! (zero-RTT on and off, and the Python SDK's dial); it writes a CSV for
//! `scripts/plot-scale.py`.
//!
//! Modules: `args` (command line), `children` (what each child process
//! runs), `procs` (child processes, CPU and RSS from `/proc`, perf), `load`
//! (the HTTP load generator), `legs` (legs A-D), `dial` (the bytestream
//! workload and leg E), `scale` (`--scale`), `report` (the tables).
//!
//! Every server (and every engine) runs in a child process of its own (this
//! binary re-executed with `--child ..`), so CPU time (`/proc/<pid>/stat`)
//! and peak RSS (`VmHWM`) are per leg. The load generator (this process)
//! is hyper's HTTP/1.1 client over rustls, one connection per worker,
//! reused. Traffic goes to 127.0.0.1 only; every loop is bounded in count
//! and time.

mod args;
mod children;
mod dial;
mod legs;
mod load;
mod procs;
mod report;
mod scale;

pub(crate) use args::*;
pub(crate) use children::*;
pub(crate) use dial::*;
pub(crate) use legs::*;
pub(crate) use load::*;
pub(crate) use procs::*;
pub(crate) use report::*;
pub(crate) use scale::*;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rstream::engine::LocalEngine;
use rstream::transport::TlsOptions;
use rstream::{Client, RstreamStream, TunnelOptions};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// What the router answers (and what the Python app answers too).
pub(crate) const HELLO: &str = "Hello, World!";
/// Connections of workload 1.
pub(crate) const KEEPALIVE_CONNS: usize = 64;
/// Concurrent workers of workload 2 (each opens one connection per request).
pub(crate) const NEW_CONN_WORKERS: usize = 16;
/// Hard cap on a child's life, whatever the parent does.
pub(crate) const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// How long a child may take to print `READY`.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Latency samples kept per worker (more are counted, not stored).
pub(crate) const MAX_SAMPLES_PER_WORKER: usize = 2_000_000;
/// A worker gives up after this many consecutive failures.
pub(crate) const MAX_CONSECUTIVE_ERRORS: u32 = 200;

fn main() {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tunnel_load: {e}");
            std::process::exit(2);
        }
    };
    // `RUST_LOG=rstream=debug` shows what the engine and the SDK children
    // log (on stderr, which the harness passes through).
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match args.child.clone() {
        Some(kind) => match rt.block_on(child(kind, &args)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tunnel_load child: {e}");
                1
            }
        },
        None => match rt.block_on(parent(args)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tunnel_load: {e}");
                1
            }
        },
    };
    // Never wait for a blocking stdin reader: exit now.
    std::process::exit(code);
}

async fn parent(args: Args) -> Result<(), BoxError> {
    let tmp = std::env::temp_dir().join(format!("rstream-tunnel-load-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    if let Some(dir) = &args.perf {
        std::fs::create_dir_all(dir)?;
    }
    if args.scale_on {
        let python = if args.scale.curves.iter().any(|c| c == "dial") {
            find_python(&args)
        } else {
            None
        };
        let ctx = Ctx {
            args: args.clone(),
            tmp: tmp.clone(),
            python,
            haproxy: None,
        };
        let r = run_scale(&ctx).await;
        let _ = std::fs::remove_dir_all(&tmp);
        return r;
    }
    let python = if args.legs.contains(&'D') {
        find_python(&args)
    } else {
        None
    };
    let legs: Vec<char> = args
        .legs
        .iter()
        .copied()
        .filter(|l| *l != 'D' || python.is_some())
        .collect();
    println!(
        "tunnel_load: legs {}, {} round(s), {:?} per workload, {KEEPALIVE_CONNS} keep-alive connections, \
         {NEW_CONN_WORKERS} new-connection workers, {} MiB transfer, {} idle connections, {} cores",
        legs.iter().collect::<String>(),
        args.rounds,
        args.duration,
        args.transfer >> 20,
        args.idle_conns,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let haproxy = find_haproxy(&args);
    let ctx = Ctx {
        args: args.clone(),
        tmp: tmp.clone(),
        python,
        haproxy,
    };
    let mut rounds: Vec<Round> = Vec::new();
    for round in 1..=args.rounds {
        let mut legs_out = HashMap::new();
        // Alternate the order (ABCD, DCBA, ...) so drift in background load
        // does not always favour the same leg.
        let mut order = legs.clone();
        if round % 2 == 0 {
            order.reverse();
        }
        for &leg in &order {
            match run_leg(&ctx, round, leg).await {
                Ok(r) => {
                    legs_out.insert(leg, r);
                }
                Err(e) => println!("[round {round}] leg {leg} failed: {e}"),
            }
        }
        let mut dials = Vec::new();
        if args.dial {
            let mut runs = vec![(exe_for(&ctx, 'A'), String::new())];
            if let Some(other) = &args.compare_exe {
                runs.push((other.clone(), "-cmp".to_owned()));
            }
            if round % 2 == 0 {
                runs.reverse();
            }
            for (exe, label) in runs {
                match run_dial(&ctx, round, &exe, &label).await {
                    Ok(r) => dials.push((label, r)),
                    Err(e) => println!("[round {round}] dial{label} failed: {e}"),
                }
            }
        }
        rounds.push((legs_out, dials));
    }
    summary(&legs, &rounds);
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}
