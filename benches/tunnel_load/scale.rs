//! `--scale`: how cost grows with the work (docs/BENCHMARKS.md, "Scaling").
//!
//! Five curves, each measured in one run against fresh engines started with
//! limits large enough for the largest point (`--child engine --scale 1`):
//!
//! - `rps`: keep-alive req/s, p50/p99 and CPU per request through one
//!   tunnel (leg A) and direct TLS (leg C) at 1, 16, 256, 4,096 connections;
//! - `idle`: RSS growth of the SDK process (`hold`: raw streams) and of the
//!   engine per idle proxied connection at 1k, 10k, 50k;
//! - `tunnels`: time to create and RSS per tunnel, 10, 100, 1,000 published
//!   `http` tunnels on one control channel;
//! - `clients`: time to connect and RSS per control channel, 10, 100, 1,000
//!   control channels on one engine;
//! - `dial`: setup latency (dial to the first echoed byte) of private dials,
//!   zero-RTT on and off, and the Python SDK's dial on the same engine.
//!
//! Every point is a row `curve,series,x,metric,value` of a CSV
//! (`--scale-out`, default `$TMPDIR/rstream-scale.csv`) that
//! `scripts/plot-scale.py` draws.

use crate::*;

/// Opening connections: at most this many handshakes in flight (the
/// engine's per-tunnel pending-stream cap and unauthenticated-connection
/// cap stay far away).
const OPEN_CONCURRENCY: usize = 64;
/// Source addresses for the load generator's idle connections: this many
/// connections per `127.0.0.x`, so that 50k downstream connections do not
/// exhaust one source address's ephemeral ports.
const CONNS_PER_SOURCE_IP: usize = 10_000;
/// File descriptors the harness asks for (it and its children).
const WANTED_NOFILE: u64 = 262_144;

/// The sizes of each curve, and where the rows go.
#[derive(Clone, Debug)]
pub(crate) struct ScaleArgs {
    pub(crate) curves: Vec<String>,
    pub(crate) conns: Vec<usize>,
    pub(crate) idle: Vec<usize>,
    pub(crate) tunnels: Vec<usize>,
    pub(crate) clients: Vec<usize>,
    pub(crate) dials: usize,
    pub(crate) out: Option<PathBuf>,
}

impl Default for ScaleArgs {
    fn default() -> Self {
        ScaleArgs {
            curves: ["rps", "idle", "tunnels", "clients", "dial"]
                .map(str::to_owned)
                .to_vec(),
            conns: vec![1, 16, 256, 4096],
            idle: vec![1_000, 10_000, 50_000],
            tunnels: vec![10, 100, 1_000],
            clients: vec![10, 100, 1_000],
            dials: 400,
            out: None,
        }
    }
}

/// `1,16,256` → sizes, each within `1..=max`.
pub(crate) fn parse_sizes(s: &str, max: usize) -> Result<Vec<usize>, BoxError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| Ok(p.trim().parse::<usize>()?.clamp(1, max)))
        .collect()
}

/// One measured point.
struct Row {
    curve: &'static str,
    series: String,
    x: usize,
    metric: &'static str,
    value: f64,
}

#[derive(Default)]
struct Rows(Vec<Row>);

impl Rows {
    fn add(
        &mut self,
        curve: &'static str,
        series: &str,
        x: usize,
        metric: &'static str,
        value: f64,
    ) {
        self.0.push(Row {
            curve,
            series: series.to_owned(),
            x,
            metric,
            value,
        });
    }

    fn get(&self, curve: &str, series: &str, x: usize, metric: &str) -> Option<f64> {
        self.0
            .iter()
            .find(|r| r.curve == curve && r.series == series && r.x == x && r.metric == metric)
            .map(|r| r.value)
    }

    fn csv(&self) -> String {
        let mut s = String::from("curve,series,x,metric,value\n");
        for r in &self.0 {
            s.push_str(&format!(
                "{},{},{},{},{}\n",
                r.curve, r.series, r.x, r.metric, r.value
            ));
        }
        s
    }
}

/// Raises `RLIMIT_NOFILE` (inherited by the children) as far as allowed;
/// returns the soft limit now in force.
fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let want = Rlimit {
        current: Some(WANTED_NOFILE),
        maximum: Some(WANTED_NOFILE.max(now.maximum.unwrap_or(0))),
    };
    if setrlimit(Resource::Nofile, want).is_err() {
        // Not privileged: as far as the hard limit goes.
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: now.maximum,
                maximum: now.maximum,
            },
        );
    }
    getrlimit(Resource::Nofile).current.unwrap_or(1024)
}

/// Ephemeral ports on this machine (`net.ipv4.ip_local_port_range`).
fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<usize>().ok());
            Some(it.next()??..=it.next()??)
        })
        .map_or(28_000, |r| r.count())
}

/// `--scale`: every curve asked for, then the tables and the CSV.
pub(crate) async fn run_scale(ctx: &Ctx) -> Result<(), BoxError> {
    let sc = &ctx.args.scale;
    let nofile = raise_nofile();
    println!(
        "tunnel_load --scale: curves {}, {:?} per rps point, RLIMIT_NOFILE {nofile}, {} ephemeral ports, {} cores",
        sc.curves.join(","),
        ctx.args.duration,
        ephemeral_ports(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rows = Rows::default();
    let want = |c: &str| sc.curves.iter().any(|x| x == c);
    if want("rps") {
        if let Err(e) = rps_curve(ctx, &mut rows).await {
            println!("scale rps failed: {e}");
        }
    }
    if want("idle") {
        if let Err(e) = idle_curve(ctx, &mut rows, nofile).await {
            println!("scale idle failed: {e}");
        }
    }
    if want("tunnels") {
        if let Err(e) = count_curve(ctx, &mut rows, "tunnels").await {
            println!("scale tunnels failed: {e}");
        }
    }
    if want("clients") {
        if let Err(e) = count_curve(ctx, &mut rows, "clients").await {
            println!("scale clients failed: {e}");
        }
    }
    if want("dial") {
        if let Err(e) = dial_curve(ctx, &mut rows).await {
            println!("scale dial failed: {e}");
        }
    }
    scale_tables(sc, &rows);
    let out = sc
        .out
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join("rstream-scale.csv"));
    std::fs::write(&out, rows.csv())?;
    println!();
    println!(
        "rows written to {} (plot: python3 scripts/plot-scale.py {} docs/scaling.svg)",
        out.display(),
        out.display()
    );
    Ok(())
}

fn scale_engine(ctx: &Ctx, tag: &str) -> Result<Proc, BoxError> {
    let dir = ctx.tmp.join(format!("engine-{tag}"));
    Proc::self_child(
        &exe_for(ctx, 'A'),
        &format!("engine ({tag})"),
        "engine",
        &[("state-dir", &dir.to_string_lossy()), ("big-limits", "1")],
    )
}

// ---------------------------------------------------------------------------
// rps: keep-alive at 1 .. 4,096 connections, legs A and C

async fn rps_curve(ctx: &Ctx, rows: &mut Rows) -> Result<(), BoxError> {
    let sc = &ctx.args.scale;
    let engine = scale_engine(ctx, "scale-rps")?;
    let mut engine = engine;
    let mut a = start_server(ctx, 'A', "A", Some(&engine))?;
    let mut c = start_server(ctx, 'C', "C", None)?;
    let ta = target_of(&a, Some(&engine))?;
    let tc = target_of(&c, None)?;
    for t in [&ta, &tc] {
        let warm = keepalive(t.clone(), 16, Duration::from_millis(500)).await;
        if warm.requests == 0 {
            return Err(format!("warm-up failed: {}", warm.first_error.unwrap_or_default()).into());
        }
    }
    for (i, &n) in sc.conns.iter().enumerate() {
        let order = if i % 2 == 0 { ['A', 'C'] } else { ['C', 'A'] };
        for leg in order {
            let (target, server) = if leg == 'A' {
                (&ta, &mut a)
            } else {
                (&tc, &mut c)
            };
            // CPU (and `--perf DIR` profiles) from when every connection is
            // open: opening 4,096 costs more than the requests.
            let (load, c0) = keepalive_with(target.clone(), n, ctx.args.duration, true, || {
                if let Some(dir) = &ctx.args.perf {
                    server.start_perf(dir, &format!("scale-{leg}{n}-server"));
                    if leg == 'A' {
                        engine.start_perf(dir, &format!("scale-{leg}{n}-engine"));
                    }
                }
                (server.cpu(), engine.cpu(), self_cpu())
            })
            .await;
            let c1 = (server.cpu(), engine.cpu(), self_cpu());
            server.stop_perf();
            engine.stop_perf();
            let engine_cpu = if leg == 'A' { (c0.1, c1.1) } else { (0.0, 0.0) };
            let m = measure(&load, (c0.0, c1.0), engine_cpu, (c0.2, c1.2));
            print_measured(0, leg, &format!("{n} conns"), &m);
            if let Some(e) = &load.first_error {
                println!("    first error: {e}");
            }
            let s = leg.to_string();
            rows.add("rps", &s, n, "req_s", m.rps);
            rows.add("rps", &s, n, "p50_ms", m.p50);
            rows.add("rps", &s, n, "p99_ms", m.p99);
            rows.add("rps", &s, n, "cpu_server_10k", m.cpu_server);
            if leg == 'A' {
                rows.add("rps", &s, n, "cpu_engine_10k", m.cpu_engine);
            }
            rows.add("rps", &s, n, "errors", m.errors as f64);
            // Let the closed connections go before the next point.
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    rows.add(
        "rps",
        "A",
        0,
        "server_peak_rss_mib",
        a.status_kib("VmHWM") as f64 / 1024.0,
    );
    rows.add(
        "rps",
        "A",
        0,
        "engine_peak_rss_mib",
        engine.status_kib("VmHWM") as f64 / 1024.0,
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// idle: RSS per idle proxied connection at 1k .. 50k

/// A TLS connection to `target` from source address `127.0.0.<2 + i / CONNS_PER_SOURCE_IP>`.
async fn tls_from(target: &Target, i: usize) -> Result<ClientTls, BoxError> {
    let last = 2 + i / CONNS_PER_SOURCE_IP;
    let src = std::net::Ipv4Addr::new(
        127,
        0,
        0,
        u8::try_from(last).map_err(|_| "too many sources")?,
    );
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src.into(), 0))?;
    let tcp = socket.connect(target.addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(target.addr.ip().to_string())?;
    Ok(target.tls.connect(name, tcp).await?)
}

/// Opens `n` idle TLS connections (no request), `OPEN_CONCURRENCY` at a
/// time; `base` numbers them (it picks their source addresses).
async fn open_many(target: Arc<Target>, base: usize, n: usize) -> Result<Vec<ClientTls>, BoxError> {
    let mut out = Vec::with_capacity(n);
    let mut set = tokio::task::JoinSet::new();
    let mut opened = 0;
    while out.len() < n {
        while opened < n && set.len() < OPEN_CONCURRENCY {
            let target = target.clone();
            let i = base + opened;
            opened += 1;
            set.spawn(async move {
                tokio::time::timeout(Duration::from_secs(30), tls_from(&target, i))
                    .await
                    .map_err(|_| BoxError::from("connect timed out"))?
            });
        }
        match set.join_next().await {
            Some(Ok(Ok(c))) => out.push(c),
            Some(Ok(Err(e))) => return Err(format!("connection {}: {e}", out.len()).into()),
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    Ok(out)
}

async fn idle_curve(ctx: &Ctx, rows: &mut Rows, nofile: u64) -> Result<(), BoxError> {
    // Each idle connection holds 2 descriptors in the engine, and the SDK's
    // proxy connections all go to the engine's one port.
    let max_fd = (nofile as usize).saturating_sub(1000) / 2;
    let max_ports = ephemeral_ports().saturating_sub(3000);
    let mut done = Vec::new();
    for &asked in &ctx.args.scale.idle {
        let n = asked.min(max_fd).min(max_ports);
        if done.contains(&n) {
            println!("scale idle: {asked} connections capped at {n}, measured already");
            continue;
        }
        done.push(n);
        if n < asked {
            println!(
                "scale idle: {asked} connections capped at {n}: the engine holds 2 descriptors per idle \
                 connection and RLIMIT_NOFILE is {nofile} (raising the hard limit needs CAP_SYS_RESOURCE); \
                 the SDK's proxy connections share {} ephemeral ports (net.ipv4.ip_local_port_range)",
                ephemeral_ports()
            );
        }
        let engine = scale_engine(ctx, &format!("scale-idle-{asked}"))?;
        let mut hold = start_server(ctx, 'A', "hold", Some(&engine))?;
        let target = target_of(&hold, Some(&engine))?;
        drop(open_many(target.clone(), 0, 4).await?);
        wait_accepted_for(&mut hold, 4, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (s0, e0) = (hold.status_kib("VmRSS"), engine.status_kib("VmRSS"));
        // In chunks, each accepted by the SDK before the next: never more
        // than a chunk of proxy handshakes pending on its control channel
        // (beyond 64 + 256 it would fail the channel: PROTOCOL.md).
        let t0 = Instant::now();
        let mut held = Vec::with_capacity(n);
        let mut all = true;
        while held.len() < n {
            let chunk = (n - held.len()).min(256);
            held.extend(open_many(target.clone(), held.len(), chunk).await?);
            all &=
                wait_accepted_for(&mut hold, 4 + held.len() as u64, Duration::from_secs(60)).await;
        }
        let opened = t0.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (s1, e1) = (hold.status_kib("VmRSS"), engine.status_kib("VmRSS"));
        let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / n as f64;
        println!(
            "scale idle {n:>6} connections (opened in {:.1} s, {:.0}/s): SDK +{:.1} KiB/conn ({:.0} MiB), \
             engine +{:.1} KiB/conn ({:.0} MiB){}",
            opened.as_secs_f64(),
            n as f64 / opened.as_secs_f64(),
            per(s0, s1),
            s1 as f64 / 1024.0,
            per(e0, e1),
            e1 as f64 / 1024.0,
            if all { "" } else { " (not all accepted!)" }
        );
        rows.add("idle", "SDK", n, "kib_per_conn", per(s0, s1));
        rows.add("idle", "engine", n, "kib_per_conn", per(e0, e1));
        rows.add("idle", "SDK", n, "rss_mib", s1 as f64 / 1024.0);
        rows.add("idle", "engine", n, "rss_mib", e1 as f64 / 1024.0);
        rows.add(
            "idle",
            "open",
            n,
            "conns_per_s",
            n as f64 / opened.as_secs_f64(),
        );
        drop(held);
        drop(hold);
        drop(engine);
    }
    Ok(())
}

async fn wait_accepted_for(p: &mut Proc, n: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if p.stats().get("accepted").copied().unwrap_or(0) >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

// ---------------------------------------------------------------------------
// tunnels / clients: time and RSS per tunnel, per control channel

/// `what` is `tunnels` (n published tunnels on one control channel) or
/// `clients` (n control channels on one engine).
async fn count_curve(ctx: &Ctx, rows: &mut Rows, what: &'static str) -> Result<(), BoxError> {
    let sizes = if what == "tunnels" {
        &ctx.args.scale.tunnels
    } else {
        &ctx.args.scale.clients
    };
    for &n in sizes {
        let engine = scale_engine(ctx, &format!("scale-{what}-{n}"))?;
        let mut owner = Proc::self_child(
            &exe_for(ctx, 'A'),
            &format!("{what} owner"),
            "count",
            &[
                ("engine", engine.field("engine")?),
                ("ca", engine.field("ca")?),
            ],
        )?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (s0, e0) = (owner.status_kib("VmRSS"), engine.status_kib("VmRSS"));
        let line = owner.command(&format!("{what} {n}"), "DONE", Duration::from_secs(600))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (s1, e1) = (owner.status_kib("VmRSS"), engine.status_kib("VmRSS"));
        let f = |k: &str| -> f64 {
            line.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .find(|(key, _)| *key == k)
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(f64::NAN)
        };
        let done = f("n") as usize;
        if done != n {
            println!("scale {what} {n}: only {done} made ({line})");
        }
        let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / n as f64;
        println!(
            "scale {what} {n:>5}: {:.2} ms each (total {:.0} ms; first 10 {:.2} ms, last 10 {:.2} ms, p99 {:.2} ms), \
             SDK +{:.1} KiB each, engine +{:.1} KiB each",
            f("total_ms") / n as f64,
            f("total_ms"),
            f("first_ms"),
            f("last_ms"),
            f("p99_ms"),
            per(s0, s1),
            per(e0, e1)
        );
        rows.add(what, "SDK", n, "kib_each", per(s0, s1));
        rows.add(what, "engine", n, "kib_each", per(e0, e1));
        rows.add(what, "create", n, "ms_each", f("total_ms") / n as f64);
        rows.add(what, "create", n, "first10_ms", f("first_ms"));
        rows.add(what, "create", n, "last10_ms", f("last_ms"));
        rows.add(what, "create", n, "p99_ms", f("p99_ms"));
        drop(owner);
        drop(engine);
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// dial: setup latency, zero-RTT on and off, Rust and Python

/// Dial, one byte out, the same byte back: the setup latency a dialer sees
/// before its first answer.
async fn one_dial(client: &Client, tunnel: &str, zero_rtt: bool) -> Result<(f64, f64), BoxError> {
    let t0 = Instant::now();
    let mut s = client
        .dial_with(tunnel, rstream::DialOptions::new().zero_rtt(zero_rtt))
        .await?;
    let dialed = t0.elapsed();
    s.write_all(b"x").await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Ok((dialed.as_secs_f64() * 1e3, t0.elapsed().as_secs_f64() * 1e3))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

async fn dial_curve(ctx: &Ctx, rows: &mut Rows) -> Result<(), BoxError> {
    let n = ctx.args.scale.dials;
    let engine = scale_engine(ctx, "scale-dial")?;
    let echo = Proc::self_child(
        &exe_for(ctx, 'A'),
        "echo owner",
        "echo",
        &[
            ("engine", engine.field("engine")?),
            ("ca", engine.field("ca")?),
        ],
    )?;
    let tunnel = echo.field("tunnel")?.to_owned();
    let client = Client::builder()
        .engine(engine.field("engine")?)
        .tls(TlsOptions::new().add_ca_file(engine.field("ca")?)?)
        .build()?;
    // Warm-up: a TLS session to resume, the engine's and owner's code paths.
    for z in [true, false, true, false] {
        one_dial(&client, &tunnel, z).await?;
    }
    let mut lat: HashMap<bool, (Vec<f64>, Vec<f64>)> = HashMap::new();
    for i in 0..2 * n {
        // Alternate, so that drift in background load hits both alike.
        let z = i % 2 == 0;
        let (d, rtt) = one_dial(&client, &tunnel, z).await?;
        let e = lat.entry(z).or_default();
        e.0.push(d);
        e.1.push(rtt);
    }
    for z in [true, false] {
        let Some((mut d, mut rtt)) = lat.remove(&z) else {
            continue;
        };
        d.sort_by(f64::total_cmp);
        rtt.sort_by(f64::total_cmp);
        let series = if z { "Rust 0-RTT on" } else { "Rust 0-RTT off" };
        add_dial(rows, series, &d, &rtt);
    }
    match &ctx.python {
        None => println!("scale dial: Python SDK skipped (RSTREAM_PYTHON cannot import rstream)"),
        Some(py) => {
            let out = Command::new(py)
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/benches/tunnel_load_dial.py"
                ))
                .args([
                    "--engine",
                    engine.field("engine")?,
                    "--ca",
                    engine.field("ca")?,
                ])
                .args(["--tunnel", &tunnel, "--n", &n.to_string()])
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            for line in text.lines().filter(|l| l.starts_with("DIAL ")) {
                // DIAL on|off dial_ms,rtt_ms dial_ms,rtt_ms ...
                let mut it = line.split_whitespace().skip(1);
                let mode = it.next().unwrap_or("?");
                let (mut d, mut rtt): (Vec<f64>, Vec<f64>) = it
                    .filter_map(|p| {
                        let (a, b) = p.split_once(',')?;
                        Some((a.parse::<f64>().ok()?, b.parse::<f64>().ok()?))
                    })
                    .unzip();
                d.sort_by(f64::total_cmp);
                rtt.sort_by(f64::total_cmp);
                let series = if mode == "on" {
                    "Python 0-RTT on"
                } else {
                    "Python 0-RTT off"
                };
                add_dial(rows, series, &d, &rtt);
            }
            if !out.status.success() {
                println!("scale dial: the Python dialer exited with {}", out.status);
            }
        }
    }
    drop(echo);
    drop(engine);
    Ok(())
}

fn add_dial(rows: &mut Rows, series: &str, d: &[f64], rtt: &[f64]) {
    println!(
        "scale dial {series:<17} n={:<4} dial() returns p50 {:.2} ms p99 {:.2} ms; first echoed byte p50 {:.2} ms p99 {:.2} ms",
        rtt.len(),
        pct(d, 0.5),
        pct(d, 0.99),
        pct(rtt, 0.5),
        pct(rtt, 0.99)
    );
    rows.add("dial", series, rtt.len(), "dial_p50_ms", pct(d, 0.5));
    rows.add("dial", series, rtt.len(), "dial_p99_ms", pct(d, 0.99));
    rows.add("dial", series, rtt.len(), "rtt_p50_ms", pct(rtt, 0.5));
    rows.add("dial", series, rtt.len(), "rtt_p99_ms", pct(rtt, 0.99));
}

// ---------------------------------------------------------------------------
// Tables

fn scale_tables(sc: &ScaleArgs, rows: &Rows) {
    let v = |curve: &str, series: &str, x: usize, metric: &str, d: usize| {
        rows.get(curve, series, x, metric)
            .filter(|v| v.is_finite())
            .map_or_else(|| "–".to_owned(), |v| format!("{v:.d$}"))
    };
    println!();
    println!("## Scaling");
    if sc.curves.iter().any(|c| c == "rps") {
        println!();
        println!("| connections | A req/s | C req/s | A/C | A p50 / p99 ms | C p50 / p99 ms | CPU s/10k A server (engine) | C server |");
        println!("|---|---|---|---|---|---|---|---|");
        for &n in &sc.conns {
            let ratio = match (
                rows.get("rps", "A", n, "req_s"),
                rows.get("rps", "C", n, "req_s"),
            ) {
                (Some(a), Some(c)) if c > 0.0 => format!("{:.2}", a / c),
                _ => "–".to_owned(),
            };
            println!(
                "| {n} | {} | {} | {ratio} | {} / {} | {} / {} | {} ({}) | {} |",
                v("rps", "A", n, "req_s", 0),
                v("rps", "C", n, "req_s", 0),
                v("rps", "A", n, "p50_ms", 2),
                v("rps", "A", n, "p99_ms", 2),
                v("rps", "C", n, "p50_ms", 2),
                v("rps", "C", n, "p99_ms", 2),
                v("rps", "A", n, "cpu_server_10k", 3),
                v("rps", "A", n, "cpu_engine_10k", 3),
                v("rps", "C", n, "cpu_server_10k", 3),
            );
        }
    }
    let xs = |curve: &str| -> Vec<usize> {
        let mut x: Vec<usize> = rows
            .0
            .iter()
            .filter(|r| r.curve == curve)
            .map(|r| r.x)
            .collect();
        x.sort_unstable();
        x.dedup();
        x
    };
    if sc.curves.iter().any(|c| c == "idle") {
        println!();
        println!("| idle connections | SDK KiB/conn | engine KiB/conn | SDK RSS MiB | engine RSS MiB | opened/s |");
        println!("|---|---|---|---|---|---|");
        for n in xs("idle") {
            println!(
                "| {n} | {} | {} | {} | {} | {} |",
                v("idle", "SDK", n, "kib_per_conn", 1),
                v("idle", "engine", n, "kib_per_conn", 1),
                v("idle", "SDK", n, "rss_mib", 0),
                v("idle", "engine", n, "rss_mib", 0),
                v("idle", "open", n, "conns_per_s", 0),
            );
        }
    }
    for what in ["tunnels", "clients"] {
        if !sc.curves.iter().any(|c| c == what) {
            continue;
        }
        println!();
        println!("| {what} | ms each | first 10 ms | last 10 ms | p99 ms | SDK KiB each | engine KiB each |");
        println!("|---|---|---|---|---|---|---|");
        for n in xs(what) {
            println!(
                "| {n} | {} | {} | {} | {} | {} | {} |",
                v(what, "create", n, "ms_each", 2),
                v(what, "create", n, "first10_ms", 2),
                v(what, "create", n, "last10_ms", 2),
                v(what, "create", n, "p99_ms", 2),
                v(what, "SDK", n, "kib_each", 1),
                v(what, "engine", n, "kib_each", 1),
            );
        }
    }
    if sc.curves.iter().any(|c| c == "dial") {
        println!();
        println!("| dialer | n | dial() p50 ms | p99 ms | first echoed byte p50 ms | p99 ms |");
        println!("|---|---|---|---|---|---|");
        let mut series: Vec<(&str, usize)> = rows
            .0
            .iter()
            .filter(|r| r.curve == "dial")
            .map(|r| (r.series.as_str(), r.x))
            .collect();
        series.dedup();
        for (s, n) in series {
            println!(
                "| {s} | {n} | {} | {} | {} | {} |",
                v("dial", s, n, "dial_p50_ms", 2),
                v("dial", s, n, "dial_p99_ms", 2),
                v("dial", s, n, "rtt_p50_ms", 2),
                v("dial", s, n, "rtt_p99_ms", 2),
            );
        }
    }
}
