//! Side-by-side load harness for the tunnel path (docs/BENCHMARKS.md).
//!
//! ```text
//! cargo bench --bench tunnel_load -- [--quick] [--duration 10] [--skip-python]
//!     [--rounds N] [--legs ABCDE] [--no-dial] [--no-idle] [--perf DIR]
//!     [--transfer-mib N]
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
//! bytestream workload alone.
//!
//! Every server (and every engine) runs in a child process of its own (this
//! binary re-executed with `--child ..`), so CPU time (`/proc/<pid>/stat`)
//! and peak RSS (`VmHWM`) are per leg. The load generator (this process)
//! is hyper's HTTP/1.1 client over rustls, one connection per worker,
//! reused. Traffic goes to 127.0.0.1 only; every loop is bounded in count
//! and time.

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

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type ClientTls = tokio_rustls::client::TlsStream<TcpStream>;

/// What the router answers (and what the Python app answers too).
const HELLO: &str = "Hello, World!";
/// Connections of workload 1.
const KEEPALIVE_CONNS: usize = 64;
/// Concurrent workers of workload 2 (each opens one connection per request).
const NEW_CONN_WORKERS: usize = 16;
/// Hard cap on a child's life, whatever the parent does.
const CHILD_MAX_LIFETIME: Duration = Duration::from_secs(3600);
/// How long a child may take to print `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Latency samples kept per worker (more are counted, not stored).
const MAX_SAMPLES_PER_WORKER: usize = 2_000_000;
/// A worker gives up after this many consecutive failures.
const MAX_CONSECUTIVE_ERRORS: u32 = 200;

// ---------------------------------------------------------------------------
// Arguments

#[derive(Clone, Debug)]
struct Args {
    quick: bool,
    duration: Duration,
    skip_python: bool,
    rounds: usize,
    legs: Vec<char>,
    dial: bool,
    /// Leg E (`E` in `--legs`): the bytestream through HAProxy too.
    haproxy: bool,
    idle: bool,
    transfer: u64,
    idle_conns: usize,
    perf: Option<PathBuf>,
    /// Another build of this harness: lowercase legs (and a second dial
    /// run) use its engine and servers, side by side with this build's.
    compare_exe: Option<PathBuf>,
    child: Option<String>,
    kv: HashMap<String, String>,
}

impl Args {
    fn parse() -> Result<Args, BoxError> {
        let mut args = Args {
            quick: false,
            duration: Duration::from_secs(10),
            skip_python: false,
            rounds: 1,
            legs: vec!['A', 'B', 'C', 'D', 'E'],
            dial: true,
            haproxy: true,
            idle: true,
            transfer: 1 << 30,
            idle_conns: 256,
            perf: None,
            compare_exe: None,
            child: None,
            kv: HashMap::new(),
        };
        let mut duration_set = false;
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
            match a.as_str() {
                "--quick" => args.quick = true,
                "--duration" => {
                    args.duration = Duration::from_secs_f64(value("--duration")?.parse()?);
                    duration_set = true;
                }
                "--skip-python" => args.skip_python = true,
                "--rounds" => args.rounds = value("--rounds")?.parse::<usize>()?.clamp(1, 20),
                "--legs" => {
                    args.legs = value("--legs")?
                        .chars()
                        .filter(|c| "ABCDEabc".contains(*c))
                        .collect()
                }
                "--compare-exe" => args.compare_exe = Some(PathBuf::from(value("--compare-exe")?)),
                "--no-dial" => args.dial = false,
                "--no-idle" => args.idle = false,
                "--transfer-mib" => args.transfer = value("--transfer-mib")?.parse::<u64>()? << 20,
                "--idle-conns" => {
                    args.idle_conns = value("--idle-conns")?.parse::<usize>()?.clamp(1, 4096)
                }
                "--perf" => args.perf = Some(PathBuf::from(value("--perf")?)),
                "--child" => args.child = Some(value("--child")?),
                // `--key value` pairs for children (--engine, --ca, ...).
                k if args.child.is_some() && k.starts_with("--") => {
                    args.kv
                        .insert(k.trim_start_matches("--").to_owned(), value(k)?);
                }
                // `cargo bench` passes `--bench`; filters are meaningless here.
                _ => {}
            }
        }
        if args.quick {
            if !duration_set {
                args.duration = Duration::from_secs(3);
            }
            args.transfer = args.transfer.min(256 << 20);
            args.idle_conns = args.idle_conns.min(64);
        }
        args.duration = args
            .duration
            .clamp(Duration::from_millis(500), Duration::from_secs(600));
        if args.compare_exe.is_none() {
            args.legs.retain(char::is_ascii_uppercase);
        }
        // E is not an HTTP leg: it rides along the bytestream workload.
        args.haproxy = args.legs.contains(&'E');
        args.legs.retain(|c| *c != 'E');
        Ok(args)
    }

    fn get(&self, key: &str) -> Result<&str, BoxError> {
        self.kv
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("--{key} is required").into())
    }
}

fn main() {
    let args = match Args::parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tunnel_load: {e}");
            std::process::exit(2);
        }
    };
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

// ---------------------------------------------------------------------------
// Children: the engine and the servers of each leg

fn router() -> Router {
    Router::new().route("/", get(|| async { HELLO }))
}

#[derive(Default)]
struct ChildStats {
    accepted: AtomicU64,
    resumed: AtomicU64,
}

impl ChildStats {
    fn line(&self) -> String {
        let accepted = self.accepted.load(Ordering::Relaxed);
        let resumed = self.resumed.load(Ordering::Relaxed);
        format!(
            "accepted={accepted} resumed={resumed} full={}",
            accepted - resumed
        )
    }

    fn count(&self, stream: &RstreamStream) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        if stream.tls_resumed() {
            self.resumed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Serves `stats` requests on stdin until it closes (or the lifetime cap).
async fn child_control(stats: Arc<ChildStats>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let deadline = tokio::time::Instant::now() + CHILD_MAX_LIFETIME;
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if line.trim() == "stats" {
            println!("STATS {}", stats.line());
        }
    }
}

fn sdk_client(args: &Args) -> Result<Client, BoxError> {
    let tls = TlsOptions::new().add_ca_file(args.get("ca")?)?;
    Ok(Client::builder()
        .engine(args.get("engine")?)
        .tls(tls)
        .build()?)
}

async fn child(kind: String, args: &Args) -> Result<(), BoxError> {
    let stats = Arc::new(ChildStats::default());
    match kind.as_str() {
        "engine" => {
            let engine = LocalEngine::builder()
                .state_dir(args.get("state-dir")?)
                .max_pending_streams(1024)
                .start()
                .await?;
            println!(
                "READY engine={} ca={}",
                engine.engine_address(),
                engine.ca_file().display()
            );
            child_control(stats).await;
            engine.shutdown().await;
        }
        // A: axum::serve(tunnel, router); `tap_io` only counts resumed handshakes.
        "A" => {
            let client = sdk_client(args)?;
            let control = client.connect().await?;
            let tunnel = control.create_tunnel(TunnelOptions::http()).await?;
            println!("READY url={}", tunnel.forwarding_address());
            let counted = stats.clone();
            let listener = tunnel.tap_io(move |io: &mut RstreamStream| counted.count(io));
            tokio::spawn(async move { axum::serve(listener, router()).await });
            child_control(stats).await;
        }
        // A, SDK only: accept streams and hold them, each read by a task (an
        // idle connection as the SDK alone keeps it). Memory test only.
        "hold" => {
            let client = sdk_client(args)?;
            let control = client.connect().await?;
            let mut tunnel = control.create_tunnel(TunnelOptions::http()).await?;
            println!("READY url={}", tunnel.forwarding_address());
            let counted = stats.clone();
            tokio::spawn(async move {
                while let Ok(mut stream) = tunnel.accept().await {
                    counted.count(&stream);
                    tokio::spawn(async move {
                        let mut buf = [0u8; 512];
                        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
                    });
                }
            });
            child_control(stats).await;
        }
        // B: the router on a loopback port, and forward_to it.
        "B" => {
            let local = TcpListener::bind("127.0.0.1:0").await?;
            let addr = local.local_addr()?;
            let local = local.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move { axum::serve(local, router()).await });
            let client = sdk_client(args)?;
            let control = client.connect().await?;
            let tunnel = control.create_tunnel(TunnelOptions::http()).await?;
            println!("READY url={}", tunnel.forwarding_address());
            tokio::spawn(tunnel.forward_to(addr.to_string()));
            child_control(stats).await;
        }
        // C: the router on loopback TCP with TLS, as axum::serve would run it.
        "C" => {
            let dir = PathBuf::from(args.get("state-dir")?);
            let (config, ca_file) = direct_tls(&dir)?;
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            println!("READY url=https://{addr} ca={}", ca_file.display());
            tokio::spawn(serve_tls(listener, config));
            child_control(stats).await;
        }
        // Workload 3: a private tunnel, a raw TCP port and a TLS port (the
        // backend of leg E's HAProxy), all sinks.
        "sink" => {
            let raw = TcpListener::bind("127.0.0.1:0").await?;
            let raw_addr = raw.local_addr()?;
            let (tls_config, ca_file) = direct_tls(Path::new(args.get("state-dir")?))?;
            let tls = TcpListener::bind("127.0.0.1:0").await?;
            let tls_addr = tls.local_addr()?;
            let client = sdk_client(args)?;
            let control = client.connect().await?;
            let name = format!("bench-sink-{}", std::process::id());
            let mut tunnel = control
                .create_tunnel(TunnelOptions::new().name(name.clone()))
                .await?;
            println!(
                "READY tunnel={name} tcp={raw_addr} tls={tls_addr} ca={} pem={}",
                ca_file.display(),
                ca_file.with_file_name(DIRECT_LEAF_PEM).display()
            );
            let counted = stats.clone();
            tokio::spawn(async move {
                while let Ok(stream) = tunnel.accept().await {
                    counted.count(&stream);
                    tokio::spawn(sink(stream));
                }
            });
            tokio::spawn(async move {
                while let Ok((tcp, _)) = raw.accept().await {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(sink(tcp));
                }
            });
            let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
            tokio::spawn(async move {
                while let Ok((tcp, _)) = tls.accept().await {
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let handshake = acceptor.accept(tcp);
                        if let Ok(Ok(s)) =
                            tokio::time::timeout(Duration::from_secs(10), handshake).await
                        {
                            sink(s).await;
                        }
                    });
                }
            });
            child_control(stats).await;
        }
        other => return Err(format!("unknown child kind {other:?}").into()),
    }
    Ok(())
}

/// Reads to EOF, answers the byte count (8 bytes, big endian), closes.
async fn sink<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(_) => return,
        }
    }
    let _ = s.write_all(&total.to_be_bytes()).await;
    let _ = s.shutdown().await;
}

/// The leaf certificate and its key in one PEM file, next to the CA file of
/// [`direct_tls`] (HAProxy's `crt` format).
const DIRECT_LEAF_PEM: &str = "direct-leaf.pem";

/// A CA and a leaf for 127.0.0.1 (ECDSA P-256, like the engine's), and the
/// server configuration the engine's published endpoints use (TLS 1.2+,
/// `http/1.1`, session cache and tickets). Also writes the leaf and its key
/// to [`DIRECT_LEAF_PEM`], so that HAProxy (leg E) serves the same kind of
/// certificate as the engine.
fn direct_tls(dir: &Path) -> Result<(Arc<rustls::ServerConfig>, PathBuf), BoxError> {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "tunnel_load direct CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&leaf_key, &issuer)?;
    let ca_file = dir.join("direct-ca.pem");
    std::fs::write(&ca_file, ca.pem())?;
    std::fs::write(
        dir.join(DIRECT_LEAF_PEM),
        format!("{}{}", leaf.pem(), leaf_key.serialize_pem()),
    )?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
    config.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok((Arc::new(config), ca_file))
}

async fn serve_tls(listener: TcpListener, config: Arc<rustls::ServerConfig>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let service = hyper_util::service::TowerToHyperService::new(router());
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await;
        });
    }
}

// ---------------------------------------------------------------------------
// Process bookkeeping

/// A child process: its `READY` fields, its stdout lines, its stdin.
struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std_mpsc::Receiver<String>,
    ready: HashMap<String, String>,
    perf: Option<Child>,
}

impl Proc {
    fn spawn(name: &str, mut cmd: Command) -> Result<Proc, BoxError> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| format!("starting {name}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stdin = child.stdin.take();
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            ready: HashMap::new(),
            perf: None,
        };
        let line = p.wait_line("READY", READY_TIMEOUT)?;
        p.ready = line
            .split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(p)
    }

    fn self_child(
        exe: &Path,
        name: &str,
        kind: &str,
        extra: &[(&str, &str)],
    ) -> Result<Proc, BoxError> {
        let mut cmd = Command::new(exe);
        cmd.arg("--child").arg(kind);
        for (k, v) in extra {
            cmd.arg(format!("--{k}")).arg(v);
        }
        Proc::spawn(name, cmd)
    }

    fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(_) => {
                    return Err(
                        format!("{}: no {prefix} line within {timeout:?}", self.name).into(),
                    )
                }
            }
        }
    }

    fn field(&self, key: &str) -> Result<&str, BoxError> {
        self.ready
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("{}: READY has no {key}", self.name).into())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn cpu(&self) -> f64 {
        cpu_seconds(self.pid()).unwrap_or(f64::NAN)
    }

    fn status_kib(&self, key: &str) -> u64 {
        status_kib(self.pid(), key).unwrap_or(0)
    }

    /// Asks the child for its counters (`STATS k=v ...`).
    fn stats(&mut self) -> HashMap<String, u64> {
        let Some(stdin) = self.stdin.as_mut() else {
            return HashMap::new();
        };
        if stdin
            .write_all(b"stats\n")
            .and_then(|()| stdin.flush())
            .is_err()
        {
            return HashMap::new();
        }
        match self.wait_line("STATS", Duration::from_secs(5)) {
            Ok(line) => line
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                .collect(),
            Err(_) => HashMap::new(),
        }
    }

    fn start_perf(&mut self, dir: &Path, tag: &str) {
        self.perf = perf_record(self.pid(), dir, tag);
    }

    fn stop_perf(&mut self) {
        perf_stop(&mut self.perf);
    }
}

/// `perf record` of process `pid` into `dir/<tag>.perf.data`.
fn perf_record(pid: u32, dir: &Path, tag: &str) -> Option<Child> {
    let out = dir.join(format!("{tag}.perf.data"));
    let perf = Command::new("perf")
        .args([
            "record",
            "-F",
            "1999",
            "-g",
            "--call-graph",
            "dwarf,16384",
            "-o",
        ])
        .arg(&out)
        .arg("-p")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match perf {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("perf not started ({e})");
            None
        }
    }
}

fn perf_stop(perf: &mut Option<Child>) {
    if let Some(mut perf) = perf.take() {
        // SIGINT makes perf write its file; `kill -INT <its pid>`.
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(perf.id().to_string())
            .status();
        wait_bounded(&mut perf, Duration::from_secs(60));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_perf();
        // EOF on stdin ends the child; kill it if it lingers.
        drop(self.stdin.take());
        wait_bounded(&mut self.child, Duration::from_secs(10));
    }
}

fn wait_bounded(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads, dead ones included), in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn self_cpu() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(f64::NAN)
}

/// A `VmRSS`/`VmHWM`-style line of `/proc/<pid>/status`, in KiB.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------
// The load generator

/// Where a leg answers HTTPS.
struct Target {
    addr: SocketAddr,
    host: String,
    tls: TlsConnector,
}

impl Target {
    fn new(url: &str, ca_file: &str) -> Result<Arc<Target>, BoxError> {
        let hostport = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("not an https address: {url}"))?
            .trim_end_matches('/');
        let addr: SocketAddr = hostport.parse()?;
        // One shared client configuration: downstream TLS sessions resume,
        // as a browser's would.
        let config = TlsOptions::new()
            .add_ca_file(ca_file)?
            .client_config(&[b"http/1.1"])?;
        Ok(Arc::new(Target {
            addr,
            host: hostport.to_owned(),
            tls: TlsConnector::from(config),
        }))
    }

    async fn tls(&self) -> Result<(ClientTls, bool), BoxError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(self.addr.ip().to_string())?;
        let tls = self.tls.connect(name, tcp).await?;
        let resumed = matches!(
            tls.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        );
        Ok((tls, resumed))
    }

    async fn http(&self) -> Result<(Conn, bool), BoxError> {
        let (tls, resumed) = self.tls().await?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((
            Conn {
                sender,
                task,
                served: 0,
            },
            resumed,
        ))
    }

    async fn get(&self, conn: &mut Conn) -> Result<(), BoxError> {
        conn.sender.ready().await?;
        let req = http::Request::get("/")
            .header(http::header::HOST, &self.host)
            .body(Empty::<Bytes>::new())?;
        let rsp = conn.sender.send_request(req).await?;
        let status = rsp.status();
        let body = rsp.into_body().collect().await?.to_bytes();
        if status != http::StatusCode::OK || body != HELLO.as_bytes() {
            return Err(format!(
                "unexpected answer {status} {:?}",
                String::from_utf8_lossy(&body)
            )
            .into());
        }
        conn.served += 1;
        Ok(())
    }
}

struct Conn {
    sender: http1::SendRequest<Empty<Bytes>>,
    task: tokio::task::JoinHandle<()>,
    served: u64,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
struct Load {
    requests: u64,
    errors: u64,
    /// Keep-alive connections the server closed (the next request went on a new one).
    reconnects: u64,
    full: u64,
    resumed: u64,
    samples: Vec<u32>,
    elapsed: Duration,
    first_error: Option<String>,
}

impl Load {
    fn merge(&mut self, o: Load) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.reconnects += o.reconnects;
        self.full += o.full;
        self.resumed += o.resumed;
        self.samples.extend(o.samples);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    fn record(&mut self, start: Instant) {
        self.requests += 1;
        if self.samples.len() < MAX_SAMPLES_PER_WORKER {
            self.samples
                .push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }

    fn handshake(&mut self, resumed: bool) {
        if resumed {
            self.resumed += 1;
        } else {
            self.full += 1;
        }
    }

    fn error(&mut self, e: BoxError) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        let i = ((self.samples.len() as f64 * p) as usize).min(self.samples.len() - 1);
        f64::from(self.samples[i]) / 1000.0
    }
}

/// Workload 1: `conns` keep-alive connections, each sending requests back
/// to back for `duration`. A connection the server closes is replaced (and
/// the request retried once on the new one; the latency includes it).
async fn keepalive(target: Arc<Target>, conns: usize, duration: Duration) -> Load {
    let barrier = Arc::new(tokio::sync::Barrier::new(conns + 1));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let target = target.clone();
        let barrier = barrier.clone();
        workers.spawn(async move {
            let mut load = Load::default();
            let mut conn = match target.http().await {
                Ok((c, resumed)) => {
                    load.handshake(resumed);
                    Some(c)
                }
                Err(e) => {
                    load.error(e);
                    None
                }
            };
            barrier.wait().await;
            let deadline = Instant::now() + duration;
            let mut consecutive = 0;
            while Instant::now() < deadline && consecutive < MAX_CONSECUTIVE_ERRORS {
                let start = Instant::now();
                let mut ok = false;
                for _attempt in 0..2 {
                    let mut c = match conn.take() {
                        Some(c) => c,
                        None => match target.http().await {
                            Ok((c, resumed)) => {
                                load.handshake(resumed);
                                c
                            }
                            Err(e) => {
                                load.error(e);
                                break;
                            }
                        },
                    };
                    match target.get(&mut c).await {
                        Ok(()) => {
                            ok = true;
                            conn = Some(c);
                            break;
                        }
                        // The server closed a used connection: retry on a new one.
                        Err(_) if c.served > 0 => load.reconnects += 1,
                        Err(e) => {
                            load.error(e);
                            break;
                        }
                    }
                }
                if ok {
                    consecutive = 0;
                    load.record(start);
                } else {
                    consecutive += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            load
        });
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut total = Load::default();
    while let Some(r) = workers.join_next().await {
        if let Ok(load) = r {
            total.merge(load);
        }
    }
    total.elapsed = start.elapsed();
    total.samples.sort_unstable();
    total
}

/// Workload 2: `workers` loops of connect + TLS + one request + close.
async fn new_connections(target: Arc<Target>, workers: usize, duration: Duration) -> Load {
    let start = Instant::now();
    let deadline = start + duration;
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let target = target.clone();
        set.spawn(async move {
            let mut load = Load::default();
            let mut consecutive = 0;
            while Instant::now() < deadline && consecutive < MAX_CONSECUTIVE_ERRORS {
                let t0 = Instant::now();
                let r = async {
                    let (mut c, resumed) = target.http().await?;
                    target.get(&mut c).await?;
                    Ok::<_, BoxError>(resumed)
                }
                .await;
                match r {
                    Ok(resumed) => {
                        load.handshake(resumed);
                        load.record(t0);
                        consecutive = 0;
                    }
                    Err(e) => {
                        load.error(e);
                        consecutive += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            load
        });
    }
    let mut total = Load::default();
    while let Some(r) = set.join_next().await {
        if let Ok(load) = r {
            total.merge(load);
        }
    }
    total.elapsed = start.elapsed();
    total.samples.sort_unstable();
    total
}

/// Opens `n` connections, one request on each when `request`, and keeps them.
async fn open_idle(
    target: Arc<Target>,
    n: usize,
    request: bool,
) -> Result<Vec<IdleConn>, BoxError> {
    let mut out = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut opened = 0;
    while out.len() < n {
        while opened < n && set.len() < 16 {
            opened += 1;
            let target = target.clone();
            set.spawn(async move {
                if request {
                    let (mut c, _) = target.http().await?;
                    target.get(&mut c).await?;
                    Ok::<_, BoxError>(IdleConn::Http(c))
                } else {
                    Ok(IdleConn::Tls(Box::new(target.tls().await?.0)))
                }
            });
        }
        match set.join_next().await {
            Some(Ok(Ok(c))) => out.push(c),
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    Ok(out)
}

#[allow(dead_code)] // held only to keep the connections open
enum IdleConn {
    Http(Conn),
    Tls(Box<ClientTls>),
}

// ---------------------------------------------------------------------------
// Measuring a leg

#[derive(Clone, Debug, Default)]
struct Measured {
    rps: f64,
    p50: f64,
    p99: f64,
    requests: u64,
    errors: u64,
    reconnects: u64,
    /// CPU seconds per 10k requests: server process, engine, load generator.
    cpu_server: f64,
    cpu_engine: f64,
    cpu_loadgen: f64,
    down_full: u64,
    down_resumed: u64,
}

#[derive(Clone, Debug, Default)]
struct LegResult {
    w1: Option<Measured>,
    w2: Option<Measured>,
    peak_rss_kib: u64,
    engine_peak_rss_kib: u64,
    /// Proxy connections the SDK opened during workload 2: (full, resumed).
    proxy_handshakes: Option<(u64, u64)>,
    idle_kib_per_conn: Option<f64>,
    idle_engine_kib_per_conn: Option<f64>,
    /// SDK alone (raw streams held, no HTTP server), A only.
    idle_sdk_kib_per_conn: Option<f64>,
}

#[derive(Clone, Debug, Default)]
struct DialResult {
    dial_mbps: f64,
    raw_mbps: f64,
    dial_cpu_sink: f64,
    dial_cpu_engine: f64,
    dial_cpu_loadgen: f64,
    raw_cpu_sink: f64,
    raw_cpu_loadgen: f64,
    dial_resumed: bool,
    sink_peak_rss_kib: u64,
    /// Leg E, when HAProxy ran in this round.
    haproxy: Option<HaproxyResult>,
}

/// Leg E: the same bytestream, sender → HAProxy (TLS) → sink (TLS).
#[derive(Clone, Debug, Default)]
struct HaproxyResult {
    mbps: f64,
    cpu_sink: f64,
    cpu_proxy: f64,
    cpu_sender: f64,
    /// The cipher suite the sender negotiated with HAProxy.
    suite: String,
}

fn measure(load: &Load, server: (f64, f64), engine: (f64, f64), loadgen: (f64, f64)) -> Measured {
    let per10k = |(a, b): (f64, f64)| {
        if load.requests == 0 {
            f64::NAN
        } else {
            (b - a) * 10_000.0 / load.requests as f64
        }
    };
    Measured {
        rps: load.rps(),
        p50: load.percentile_ms(0.50),
        p99: load.percentile_ms(0.99),
        requests: load.requests,
        errors: load.errors,
        reconnects: load.reconnects,
        cpu_server: per10k(server),
        cpu_engine: per10k(engine),
        cpu_loadgen: per10k(loadgen),
        down_full: load.full,
        down_resumed: load.resumed,
    }
}

fn print_measured(round: usize, leg: char, what: &str, m: &Measured) {
    println!(
        "[round {round}] {leg} {what:<10} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  \
         CPU s/10k: server {:.3} engine {:.3} loadgen {:.3}  (n={}, errors {}, reconnects {}, \
         downstream TLS full/resumed {}/{})",
        m.rps,
        m.p50,
        m.p99,
        m.cpu_server,
        m.cpu_engine,
        m.cpu_loadgen,
        m.requests,
        m.errors,
        m.reconnects,
        m.down_full,
        m.down_resumed
    );
}

struct Ctx {
    args: Args,
    tmp: PathBuf,
    python: Option<String>,
    /// The `haproxy` binary of leg E, when installed and wanted.
    haproxy: Option<String>,
}

/// The executable serving `leg`: this one, or `--compare-exe` for lowercase legs.
fn exe_for(ctx: &Ctx, leg: char) -> PathBuf {
    match (&ctx.args.compare_exe, leg.is_ascii_lowercase()) {
        (Some(other), true) => other.clone(),
        _ => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
    }
}

fn start_engine(ctx: &Ctx, tag: &str, exe: &Path) -> Result<Proc, BoxError> {
    let dir = ctx.tmp.join(format!("engine-{tag}"));
    Proc::self_child(
        exe,
        &format!("engine ({tag})"),
        "engine",
        &[("state-dir", &dir.to_string_lossy())],
    )
}

fn start_server(ctx: &Ctx, leg: char, kind: &str, engine: Option<&Proc>) -> Result<Proc, BoxError> {
    let name = format!("leg {leg} server ({kind})");
    let exe = exe_for(ctx, leg);
    let leg = leg.to_ascii_uppercase();
    if leg == 'C' {
        let dir = ctx.tmp.join("direct");
        return Proc::self_child(&exe, &name, "C", &[("state-dir", &dir.to_string_lossy())]);
    }
    let engine = engine.ok_or("no engine")?;
    let (addr, ca) = (engine.field("engine")?, engine.field("ca")?);
    if leg == 'D' {
        let python = ctx.python.as_deref().ok_or("no python")?;
        let mut cmd = Command::new(python);
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/benches/tunnel_load_asgi.py"
        ))
        .args(["--engine", addr, "--ca", ca]);
        return Proc::spawn(&name, cmd);
    }
    Proc::self_child(&exe, &name, kind, &[("engine", addr), ("ca", ca)])
}

fn target_of(server: &Proc, engine: Option<&Proc>) -> Result<Arc<Target>, BoxError> {
    let ca = match server.ready.get("ca") {
        Some(ca) => ca.clone(),
        None => engine.ok_or("no engine")?.field("ca")?.to_owned(),
    };
    Target::new(server.field("url")?, &ca)
}

async fn run_leg(ctx: &Ctx, round: usize, leg: char) -> Result<LegResult, BoxError> {
    let args = &ctx.args;
    let upper = leg.to_ascii_uppercase();
    let engine = if upper == 'C' {
        None
    } else {
        Some(start_engine(
            ctx,
            &format!("{leg}{round}"),
            &exe_for(ctx, leg),
        )?)
    };
    let kind = upper.to_string();
    let mut result = LegResult::default();

    // Idle connections, each in a fresh server process (so the allocator
    // has nothing freed to reuse): RSS growth per connection.
    if args.idle && upper != 'D' {
        let n = args.idle_conns;
        let server = start_server(ctx, leg, &kind, engine.as_ref())?;
        let target = target_of(&server, engine.as_ref())?;
        drop(open_idle(target.clone(), 4, true).await?);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (s0, e0) = (
            server.status_kib("VmRSS"),
            engine.as_ref().map_or(0, |e| e.status_kib("VmRSS")),
        );
        let held = open_idle(target, n, true).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (s1, e1) = (
            server.status_kib("VmRSS"),
            engine.as_ref().map_or(0, |e| e.status_kib("VmRSS")),
        );
        drop(held);
        let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / n as f64;
        result.idle_kib_per_conn = Some(per(s0, s1));
        if engine.is_some() {
            result.idle_engine_kib_per_conn = Some(per(e0, e1));
        }
        println!(
            "[round {round}] {leg} idle       {n} connections: server +{:.1} KiB/conn, engine +{:.1} KiB/conn",
            per(s0, s1),
            per(e0, e1)
        );
        drop(server);
        if upper == 'A' {
            let mut hold = start_server(ctx, leg, "hold", engine.as_ref())?;
            let target = target_of(&hold, engine.as_ref())?;
            drop(open_idle(target.clone(), 4, false).await?);
            wait_accepted(&mut hold, 4).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let s0 = hold.status_kib("VmRSS");
            let held = open_idle(target, n, false).await?;
            let all = wait_accepted(&mut hold, 4 + n as u64).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let s1 = hold.status_kib("VmRSS");
            drop(held);
            let v = s1.saturating_sub(s0) as f64 / n as f64;
            result.idle_sdk_kib_per_conn = Some(v);
            println!(
                "[round {round}] {leg} idle-sdk   {n} raw streams held by the SDK alone: +{v:.1} KiB/conn{}",
                if all { "" } else { " (not all accepted!)" }
            );
        }
    }

    // Workloads 1 and 2 on one server process.
    let mut server = start_server(ctx, leg, &kind, engine.as_ref())?;
    let target = target_of(&server, engine.as_ref())?;
    let warm = keepalive(
        target.clone(),
        16,
        Duration::from_millis(if args.quick { 300 } else { 1000 }),
    )
    .await;
    if warm.requests == 0 {
        return Err(format!(
            "leg {leg}: warm-up failed: {}",
            warm.first_error.unwrap_or_default()
        )
        .into());
    }
    let cpu = |server: &Proc, engine: &Option<Proc>| {
        (
            server.cpu(),
            engine.as_ref().map_or(0.0, Proc::cpu),
            self_cpu(),
        )
    };

    let mut engine = engine;
    if let Some(dir) = &args.perf {
        server.start_perf(dir, &format!("{leg}-server"));
        if let Some(e) = engine.as_mut() {
            e.start_perf(dir, &format!("{leg}-engine"));
        }
    }
    let c0 = cpu(&server, &engine);
    let w1 = keepalive(target.clone(), KEEPALIVE_CONNS, args.duration).await;
    let c1 = cpu(&server, &engine);
    server.stop_perf();
    if let Some(e) = engine.as_mut() {
        e.stop_perf();
    }
    let m1 = measure(&w1, (c0.0, c1.0), (c0.1, c1.1), (c0.2, c1.2));
    print_measured(round, leg, "keep-alive", &m1);
    if let Some(e) = &w1.first_error {
        println!("    first error: {e}");
    }
    result.w1 = Some(m1);

    let before = server.stats();
    if let Some(dir) = &args.perf {
        server.start_perf(dir, &format!("{leg}-server-newconn"));
        if let Some(e) = engine.as_mut() {
            e.start_perf(dir, &format!("{leg}-engine-newconn"));
        }
    }
    let c0 = cpu(&server, &engine);
    let w2 = new_connections(target.clone(), NEW_CONN_WORKERS, args.duration).await;
    let c1 = cpu(&server, &engine);
    server.stop_perf();
    if let Some(e) = engine.as_mut() {
        e.stop_perf();
    }
    let after = server.stats();
    let m2 = measure(&w2, (c0.0, c1.0), (c0.1, c1.1), (c0.2, c1.2));
    print_measured(round, leg, "new-conn", &m2);
    if let Some(e) = &w2.first_error {
        println!("    first error: {e}");
    }
    // Only leg A's server sees its proxy connections (`tap_io`); B's live
    // inside `forward_to` and C has none, so their counters stay at zero.
    if let (true, Some(a0), Some(a1), Some(r0), Some(r1)) = (
        leg.eq_ignore_ascii_case(&'A'),
        before.get("accepted"),
        after.get("accepted"),
        before.get("resumed"),
        after.get("resumed"),
    ) {
        let (accepted, resumed) = (a1 - a0, r1 - r0);
        result.proxy_handshakes = Some((accepted - resumed, resumed));
        println!(
            "[round {round}] {leg} proxy TLS  {} connections to the engine: {} full, {} resumed",
            accepted,
            accepted - resumed,
            resumed
        );
    }
    result.w2 = Some(m2);
    result.peak_rss_kib = server.status_kib("VmHWM");
    result.engine_peak_rss_kib = engine.as_ref().map_or(0, |e| e.status_kib("VmHWM"));
    println!(
        "[round {round}] {leg} peak RSS   server {:.1} MiB, engine {:.1} MiB",
        result.peak_rss_kib as f64 / 1024.0,
        result.engine_peak_rss_kib as f64 / 1024.0
    );
    drop(server);
    drop(engine);
    Ok(result)
}

async fn wait_accepted(p: &mut Proc, n: u64) -> bool {
    for _ in 0..200 {
        if p.stats().get("accepted").copied().unwrap_or(0) >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Writes `total` bytes, half-closes, reads the sink's 8-byte count.
async fn transfer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: &mut S,
    total: u64,
) -> Result<Duration, BoxError> {
    let chunk = vec![0xA5u8; 256 * 1024];
    let start = Instant::now();
    let fut = async {
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        s.shutdown().await?;
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack).await?;
        Ok::<_, std::io::Error>(u64::from_be_bytes(ack))
    };
    let got = tokio::time::timeout(Duration::from_secs(600), fut)
        .await
        .map_err(|_| "transfer timed out")??;
    if got != total {
        return Err(format!("sink counted {got} bytes, sent {total}").into());
    }
    Ok(start.elapsed())
}

async fn run_dial(
    ctx: &Ctx,
    round: usize,
    exe: &Path,
    label: &str,
) -> Result<DialResult, BoxError> {
    let total = ctx.args.transfer;
    let mut engine = start_engine(ctx, &format!("dial{label}{round}"), exe)?;
    let sink_dir = ctx.tmp.join(format!("sink{label}{round}"));
    let mut sink = Proc::self_child(
        exe,
        "dial sink",
        "sink",
        &[
            ("engine", engine.field("engine")?),
            ("ca", engine.field("ca")?),
            ("state-dir", &sink_dir.to_string_lossy()),
        ],
    )?;
    let client = Client::builder()
        .engine(engine.field("engine")?)
        .tls(TlsOptions::new().add_ca_file(engine.field("ca")?)?)
        .build()?;
    let tunnel = sink.field("tunnel")?.to_owned();
    let raw: SocketAddr = sink.field("tcp")?.parse()?;
    // Warm-up (and a TLS session to resume).
    let mut s = client.dial(&tunnel).await?;
    transfer(&mut s, 1 << 20).await?;
    let mut s = TcpStream::connect(raw).await?;
    transfer(&mut s, 1 << 20).await?;

    let mut r = DialResult::default();
    let mb = total as f64 / 1e6;
    if let Some(dir) = &ctx.args.perf {
        sink.start_perf(dir, &format!("dial{label}-sink"));
        engine.start_perf(dir, &format!("dial{label}-engine"));
    }
    let haproxy = match (ctx.haproxy.as_deref(), sink.ready.contains_key("tls")) {
        (Some(bin), true) => {
            let dir = ctx.tmp.join(format!("haproxy{label}{round}"));
            match Haproxy::start(bin, &dir, &sink) {
                Ok(h) => Some(h),
                Err(e) => {
                    println!("[round {round}] leg E (HAProxy) not started: {e}");
                    None
                }
            }
        }
        (Some(_), false) => {
            println!("[round {round}] leg E skipped: this sink has no TLS port (older --compare-exe build)");
            None
        }
        (None, _) => None,
    };
    let sink_ca = sink.ready.get("ca").cloned().unwrap_or_default();
    // Alternate which relay goes first, so that drift in background load
    // does not always favour the same one.
    let mut hap_result = None;
    if let (Some(h), true) = (&haproxy, round.is_multiple_of(2)) {
        hap_result = h.measure(ctx, round, label, &mut sink, &sink_ca).await;
    }

    let c0 = (sink.cpu(), engine.cpu(), self_cpu());
    let mut s = client.dial(&tunnel).await?;
    r.dial_resumed = s.tls_resumed();
    let t = transfer(&mut s, total).await?;
    let c1 = (sink.cpu(), engine.cpu(), self_cpu());
    sink.stop_perf();
    engine.stop_perf();
    r.dial_mbps = mb / t.as_secs_f64();
    let per_gib = |a: f64, b: f64| (b - a) * (1u64 << 30) as f64 / total as f64;
    r.dial_cpu_sink = per_gib(c0.0, c1.0);
    r.dial_cpu_engine = per_gib(c0.1, c1.1);
    r.dial_cpu_loadgen = per_gib(c0.2, c1.2);

    let c0 = (sink.cpu(), self_cpu());
    let mut s = TcpStream::connect(raw).await?;
    s.set_nodelay(true)?;
    let t = transfer(&mut s, total).await?;
    let c1 = (sink.cpu(), self_cpu());
    r.raw_mbps = mb / t.as_secs_f64();
    r.raw_cpu_sink = per_gib(c0.0, c1.0);
    r.raw_cpu_loadgen = per_gib(c0.1, c1.1);
    if let (Some(h), false) = (&haproxy, round.is_multiple_of(2)) {
        hap_result = h.measure(ctx, round, label, &mut sink, &sink_ca).await;
    }
    drop(haproxy);
    r.haproxy = hap_result;
    r.sink_peak_rss_kib = sink.status_kib("VmHWM");
    println!(
        "[round {round}] dial{label:<7}{:.0} MB/s (CPU s/GiB: sink {:.2} engine {:.2} dialer {:.2}; TLS resumed: {})  \
         raw TCP {:.0} MB/s (CPU s/GiB: sink {:.2} writer {:.2})  dial/raw {:.2}",
        r.dial_mbps,
        r.dial_cpu_sink,
        r.dial_cpu_engine,
        r.dial_cpu_loadgen,
        r.dial_resumed,
        r.raw_mbps,
        r.raw_cpu_sink,
        r.raw_cpu_loadgen,
        r.dial_mbps / r.raw_mbps
    );
    Ok(r)
}

// ---------------------------------------------------------------------------
// Leg E: HAProxy

/// `haproxy` on the `PATH` (or `$HAPROXY`), and its version line; `None`
/// (leg E skipped, with a message) when it is not installed.
fn find_haproxy(args: &Args) -> Option<String> {
    if !args.dial || !args.haproxy {
        return None;
    }
    let bin = std::env::var("HAPROXY")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "haproxy".to_owned());
    match Command::new(&bin).arg("-v").output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            println!(
                "leg E: {}",
                version.lines().next().unwrap_or("haproxy").trim()
            );
            Some(bin)
        }
        _ => {
            println!(
                "leg E skipped: {bin:?} not found (install HAProxy, e.g. `apt-get install haproxy`, \
                 or set HAPROXY to its path)"
            );
            None
        }
    }
}

/// TLS 1.3 suites in the SDK's order (`transport::provider`: AES-128-GCM
/// first). OpenSSL's own order starts with AES-256-GCM and HAProxy's
/// frontend picks by its order, so without this leg E would pay 14 AES
/// rounds per block to the engine's 10.
const SUITES: &str = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/// HAProxy in the foreground (`-db`: one process, so `/proc/<pid>/stat`
/// counts all its threads), terminating TLS from the sender and opening TLS
/// to the sink: the same 4 AES-GCM passes, 2 loopback TCP hops and 3
/// processes as the dialed private tunnel. Default tuning (2.6: 16 KiB
/// buffers, one thread per core), `mode tcp`, verified backend.
struct Haproxy {
    child: Child,
    addr: SocketAddr,
}

impl Haproxy {
    fn start(bin: &str, dir: &Path, sink: &Proc) -> Result<Haproxy, BoxError> {
        std::fs::create_dir_all(dir)?;
        // A free port for the frontend (HAProxy cannot report one it picked).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let config = format!(
            "global\n\
             \x20   maxconn 1024\n\
             \x20   ssl-default-bind-ciphersuites {SUITES}\n\
             \x20   ssl-default-server-ciphersuites {SUITES}\n\
             defaults\n\
             \x20   mode tcp\n\
             \x20   timeout connect 10s\n\
             \x20   timeout client 600s\n\
             \x20   timeout server 600s\n\
             frontend leg_e\n\
             \x20   bind {addr} ssl crt {pem}\n\
             \x20   default_backend sink\n\
             backend sink\n\
             \x20   server sink {backend} ssl verify required ca-file {ca} sni str(localhost) verifyhost localhost\n",
            pem = sink.field("pem")?,
            backend = sink.field("tls")?,
            ca = sink.field("ca")?,
        );
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config)?;
        let mut child = Command::new(bin)
            .arg("-db")
            .arg("-q")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting {bin}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("haproxy exited: {status}").into());
            }
            if std::net::TcpStream::connect(addr).is_ok() {
                return Ok(Haproxy { child, addr });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("haproxy did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn connect(&self, tls: &TlsConnector) -> Result<ClientTls, BoxError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(self.addr.ip().to_string())?;
        Ok(tls.connect(name, tcp).await?)
    }

    /// A warm-up MiB, then `--transfer-mib` through HAProxy; prints the line.
    async fn measure(
        &self,
        ctx: &Ctx,
        round: usize,
        label: &str,
        sink: &mut Proc,
        ca: &str,
    ) -> Option<HaproxyResult> {
        match self.transfer(ctx, label, sink, ca).await {
            Ok(r) => {
                println!(
                    "[round {round}] haproxy{label:<4}{:.0} MB/s (CPU s/GiB: sink {:.2} haproxy {:.2} sender {:.2}; {})",
                    r.mbps, r.cpu_sink, r.cpu_proxy, r.cpu_sender, r.suite
                );
                Some(r)
            }
            Err(e) => {
                println!("[round {round}] leg E (HAProxy) failed: {e}");
                None
            }
        }
    }

    async fn transfer(
        &self,
        ctx: &Ctx,
        label: &str,
        sink: &mut Proc,
        ca: &str,
    ) -> Result<HaproxyResult, BoxError> {
        let total = ctx.args.transfer;
        // The same rustls client stack as the SDK's dial (ring, TLS 1.2+).
        let tls = TlsConnector::from(TlsOptions::new().add_ca_file(ca)?.client_config(&[])?);
        let mut s = self.connect(&tls).await?;
        transfer(&mut s, 1 << 20).await?;

        let mut perf = None;
        if let Some(dir) = &ctx.args.perf {
            sink.start_perf(dir, &format!("haproxy{label}-sink"));
            perf = perf_record(self.pid(), dir, &format!("haproxy{label}-haproxy"));
        }
        let c0 = (sink.cpu(), self.cpu(), self_cpu());
        let mut s = self.connect(&tls).await?;
        let suite = s
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .map_or_else(|| "?".to_owned(), |cs| format!("{:?}", cs.suite()));
        let t = transfer(&mut s, total).await?;
        let c1 = (sink.cpu(), self.cpu(), self_cpu());
        sink.stop_perf();
        perf_stop(&mut perf);
        let per_gib = |a: f64, b: f64| (b - a) * (1u64 << 30) as f64 / total as f64;
        Ok(HaproxyResult {
            mbps: total as f64 / 1e6 / t.as_secs_f64(),
            cpu_sink: per_gib(c0.0, c1.0),
            cpu_proxy: per_gib(c0.1, c1.1),
            cpu_sender: per_gib(c0.2, c1.2),
            suite,
        })
    }

    fn cpu(&self) -> f64 {
        cpu_seconds(self.pid()).unwrap_or(f64::NAN)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        // Our own child, by its id: SIGKILL is fine, it holds no state.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_python(args: &Args) -> Option<String> {
    if args.skip_python {
        println!("leg D skipped (--skip-python)");
        return None;
    }
    let python = std::env::var("RSTREAM_PYTHON")
        .ok()
        .filter(|p| !p.trim().is_empty())
        .unwrap_or_else(|| "python3".to_owned());
    let ok = Command::new(&python)
        .args(["-c", "import rstream, rstream.asgi"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Some(python)
    } else {
        println!(
            "leg D skipped: {python:?} cannot import the Python SDK (set RSTREAM_PYTHON to a \
             python with rstreamlabs-rstream 0.7.x installed)"
        );
        None
    }
}

async fn parent(args: Args) -> Result<(), BoxError> {
    let tmp = std::env::temp_dir().join(format!("rstream-tunnel-load-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    if let Some(dir) = &args.perf {
        std::fs::create_dir_all(dir)?;
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

// ---------------------------------------------------------------------------
// Summary

/// `median [min–max]` over rounds (just the value for one round).
fn spread(values: &[f64], decimals: usize) -> String {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "–".to_owned();
    }
    v.sort_by(f64::total_cmp);
    let med = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    if v.len() == 1 {
        format!("{med:.decimals$}")
    } else {
        format!(
            "{med:.decimals$} [{:.decimals$}–{:.decimals$}]",
            v[0],
            v[v.len() - 1]
        )
    }
}

/// One round: the legs' results, and the dial runs (label, result).
type Round = (HashMap<char, LegResult>, Vec<(String, DialResult)>);
type Rounds = [Round];

fn collect(rounds: &Rounds, leg: char, f: impl Fn(&LegResult) -> Option<f64>) -> Vec<f64> {
    rounds
        .iter()
        .filter_map(|(m, _)| m.get(&leg).and_then(&f))
        .collect()
}

fn summary(legs: &[char], rounds: &Rounds) {
    if !legs.is_empty() {
        summary_http(legs, rounds);
    }
    summary_bytestream(rounds);
}

/// The HTTP legs' table, their ratios and the proxy handshakes.
fn summary_http(legs: &[char], rounds: &Rounds) {
    println!();
    println!(
        "## Results (median [min–max] over {} round(s))",
        rounds.len()
    );
    println!();
    println!("| leg | keep-alive req/s | p50 ms | p99 ms | CPU s/10k server (engine) | new-conn req/s | p50 ms | p99 ms | CPU s/10k server (engine) | peak RSS MiB | idle KiB/conn |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &leg in legs {
        let w = |f: fn(&Measured) -> f64, w2: bool| {
            collect(rounds, leg, move |r| {
                if w2 { r.w2.as_ref() } else { r.w1.as_ref() }.map(f)
            })
        };
        let what = match leg.to_ascii_uppercase() {
            'A' => "axum::serve(tunnel)",
            'B' => "forward_to(loopback)",
            'C' => "direct TLS (ceiling)",
            _ => "Python asgi.serve",
        };
        let cmp = if leg.is_ascii_lowercase() {
            " [--compare-exe]"
        } else {
            ""
        };
        let name = format!("{leg} {what}{cmp}");
        let mut idle = spread(&collect(rounds, leg, |r| r.idle_kib_per_conn), 1);
        let sdk = collect(rounds, leg, |r| r.idle_sdk_kib_per_conn);
        if !sdk.is_empty() {
            idle = format!("{idle} (SDK alone {})", spread(&sdk, 1));
        }
        println!(
            "| {name} | {} | {} | {} | {} ({}) | {} | {} | {} | {} ({}) | {} | {idle} |",
            spread(&w(|m| m.rps, false), 0),
            spread(&w(|m| m.p50, false), 2),
            spread(&w(|m| m.p99, false), 2),
            spread(&w(|m| m.cpu_server, false), 3),
            spread(&w(|m| m.cpu_engine, false), 3),
            spread(&w(|m| m.rps, true), 0),
            spread(&w(|m| m.p50, true), 2),
            spread(&w(|m| m.p99, true), 2),
            spread(&w(|m| m.cpu_server, true), 3),
            spread(&w(|m| m.cpu_engine, true), 3),
            spread(
                &collect(rounds, leg, |r| Some(r.peak_rss_kib as f64 / 1024.0)),
                1
            ),
        );
    }
    println!();
    println!("### Ratios (per round, side by side; median [min–max])");
    println!();
    let ratio = |a: char, b: char, f: fn(&LegResult) -> Option<f64>| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|(m, _)| Some(f(m.get(&a)?)? / f(m.get(&b)?)?))
            .collect()
    };
    println!("| ratio | keep-alive req/s | keep-alive p99 | new-conn req/s | new-conn p99 | CPU/10k keep-alive (server) |");
    println!("|---|---|---|---|---|---|");
    for (a, b) in [
        ('A', 'B'),
        ('A', 'C'),
        ('A', 'D'),
        ('A', 'a'),
        ('B', 'b'),
        ('a', 'b'),
    ] {
        if !legs.contains(&a) || !legs.contains(&b) {
            continue;
        }
        println!(
            "| {a}/{b} | {} | {} | {} | {} | {} |",
            spread(&ratio(a, b, |r| r.w1.as_ref().map(|m| m.rps)), 2),
            spread(&ratio(a, b, |r| r.w1.as_ref().map(|m| m.p99)), 2),
            spread(&ratio(a, b, |r| r.w2.as_ref().map(|m| m.rps)), 2),
            spread(&ratio(a, b, |r| r.w2.as_ref().map(|m| m.p99)), 2),
            spread(&ratio(a, b, |r| r.w1.as_ref().map(|m| m.cpu_server)), 2),
        );
    }
    let proxy: Vec<(u64, u64)> = rounds
        .iter()
        .filter_map(|(m, _)| m.get(&'A').and_then(|r| r.proxy_handshakes))
        .collect();
    if !proxy.is_empty() {
        let (full, resumed) = proxy.iter().fold((0, 0), |(f, r), (a, b)| (f + a, r + b));
        println!();
        println!("Proxy connections opened by the SDK during new-conn (leg A, all rounds): {full} full TLS handshakes, {resumed} resumed.");
    }
}

/// Workload 3: the dialed tunnel, raw TCP and leg E, per build.
fn summary_bytestream(rounds: &Rounds) {
    let labels: Vec<&str> = {
        let mut l: Vec<&str> = rounds
            .iter()
            .flat_map(|(_, d)| d.iter().map(|(l, _)| l.as_str()))
            .collect();
        l.sort_unstable();
        l.dedup();
        l
    };
    if labels.is_empty() {
        return;
    }
    println!();
    println!("| bytestream | MB/s | CPU s/GiB receiver | CPU s/GiB engine | CPU s/GiB sender | dial/raw |");
    println!("|---|---|---|---|---|---|");
    for label in labels {
        let dials: Vec<&DialResult> = rounds
            .iter()
            .flat_map(|(_, d)| d.iter().filter(|(l, _)| l == label).map(|(_, r)| r))
            .collect();
        let v =
            |f: fn(&DialResult) -> f64| spread(&dials.iter().map(|d| f(d)).collect::<Vec<_>>(), 2);
        let which = if label.is_empty() {
            ""
        } else {
            " [--compare-exe]"
        };
        println!(
            "| dialed private tunnel{which} | {} | {} | {} | {} | {} |",
            v(|d| d.dial_mbps),
            v(|d| d.dial_cpu_sink),
            v(|d| d.dial_cpu_engine),
            v(|d| d.dial_cpu_loadgen),
            v(|d| d.dial_mbps / d.raw_mbps)
        );
        println!(
            "| raw loopback TCP{which} | {} | {} | – | {} | |",
            v(|d| d.raw_mbps),
            v(|d| d.raw_cpu_sink),
            v(|d| d.raw_cpu_loadgen)
        );
        let haps: Vec<(&DialResult, &HaproxyResult)> = dials
            .iter()
            .filter_map(|d| Some((*d, d.haproxy.as_ref()?)))
            .collect();
        if !haps.is_empty() {
            let h = |f: fn(&DialResult, &HaproxyResult) -> f64| {
                spread(&haps.iter().map(|(d, h)| f(d, h)).collect::<Vec<_>>(), 2)
            };
            println!(
                "| E HAProxy TLS relay{which} | {} | {} | {} (haproxy) | {} | {} |",
                h(|_, h| h.mbps),
                h(|_, h| h.cpu_sink),
                h(|_, h| h.cpu_proxy),
                h(|_, h| h.cpu_sender),
                h(|d, h| h.mbps / d.raw_mbps)
            );
        }
        println!(
            "(sink peak RSS {} MiB; dial TLS resumed: {})",
            v(|d| d.sink_peak_rss_kib as f64 / 1024.0),
            dials.iter().all(|d| d.dial_resumed)
        );
        if !haps.is_empty() {
            // Per round, side by side: > 1 means the engine does better.
            let h = |f: fn(&DialResult, &HaproxyResult) -> f64| {
                spread(&haps.iter().map(|(d, h)| f(d, h)).collect::<Vec<_>>(), 2)
            };
            println!();
            println!("| engine / HAProxy{which} (per round; > 1: engine better) | MB/s | relay CPU s/GiB (HAProxy / engine) | all 3 processes CPU s/GiB (HAProxy / engine) |");
            println!("|---|---|---|---|");
            println!(
                "| dialed private tunnel / leg E | {} | {} | {} |",
                h(|d, h| d.dial_mbps / h.mbps),
                h(|d, h| h.cpu_proxy / d.dial_cpu_engine),
                h(|d, h| (h.cpu_sink + h.cpu_proxy + h.cpu_sender)
                    / (d.dial_cpu_sink + d.dial_cpu_engine + d.dial_cpu_loadgen)),
            );
            let mut suites: Vec<&str> = haps.iter().map(|(_, h)| h.suite.as_str()).collect();
            suites.sort_unstable();
            suites.dedup();
            println!("(sender ↔ HAProxy cipher suite: {})", suites.join(", "));
        }
    }
}
