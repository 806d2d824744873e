use crate::*;

// ---------------------------------------------------------------------------
// Measuring a leg

#[derive(Clone, Debug, Default)]
pub(crate) struct Measured {
    pub(crate) rps: f64,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) reconnects: u64,
    /// CPU seconds per 10k requests: server process, engine, load generator.
    pub(crate) cpu_server: f64,
    pub(crate) cpu_engine: f64,
    pub(crate) cpu_loadgen: f64,
    pub(crate) down_full: u64,
    pub(crate) down_resumed: u64,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct LegResult {
    pub(crate) w1: Option<Measured>,
    pub(crate) w2: Option<Measured>,
    pub(crate) peak_rss_kib: u64,
    pub(crate) engine_peak_rss_kib: u64,
    /// Proxy connections the SDK opened during workload 2: (full, resumed).
    pub(crate) proxy_handshakes: Option<(u64, u64)>,
    pub(crate) idle_kib_per_conn: Option<f64>,
    pub(crate) idle_engine_kib_per_conn: Option<f64>,
    /// SDK alone (raw streams held, no HTTP server), A only.
    pub(crate) idle_sdk_kib_per_conn: Option<f64>,
}

pub(crate) fn measure(
    load: &Load,
    server: (f64, f64),
    engine: (f64, f64),
    loadgen: (f64, f64),
) -> Measured {
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

pub(crate) fn print_measured(round: usize, leg: char, what: &str, m: &Measured) {
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

pub(crate) struct Ctx {
    pub(crate) args: Args,
    pub(crate) tmp: PathBuf,
    pub(crate) python: Option<String>,
    /// The `haproxy` binary of leg E, when installed and wanted.
    pub(crate) haproxy: Option<String>,
}

/// The executable serving `leg`: this one, or `--compare-exe` for lowercase legs.
pub(crate) fn exe_for(ctx: &Ctx, leg: char) -> PathBuf {
    match (&ctx.args.compare_exe, leg.is_ascii_lowercase()) {
        (Some(other), true) => other.clone(),
        _ => std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
    }
}

pub(crate) fn start_engine(ctx: &Ctx, tag: &str, exe: &Path) -> Result<Proc, BoxError> {
    let dir = ctx.tmp.join(format!("engine-{tag}"));
    Proc::self_child(
        exe,
        &format!("engine ({tag})"),
        "engine",
        &[("state-dir", &dir.to_string_lossy())],
    )
}

pub(crate) fn start_server(
    ctx: &Ctx,
    leg: char,
    kind: &str,
    engine: Option<&Proc>,
) -> Result<Proc, BoxError> {
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

pub(crate) fn target_of(server: &Proc, engine: Option<&Proc>) -> Result<Arc<Target>, BoxError> {
    let ca = match server.ready.get("ca") {
        Some(ca) => ca.clone(),
        None => engine.ok_or("no engine")?.field("ca")?.to_owned(),
    };
    Target::new(server.field("url")?, &ca)
}

pub(crate) async fn run_leg(ctx: &Ctx, round: usize, leg: char) -> Result<LegResult, BoxError> {
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

pub(crate) async fn wait_accepted(p: &mut Proc, n: u64) -> bool {
    for _ in 0..200 {
        if p.stats().get("accepted").copied().unwrap_or(0) >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub(crate) fn find_python(args: &Args) -> Option<String> {
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
