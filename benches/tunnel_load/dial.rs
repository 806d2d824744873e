use crate::*;

#[derive(Clone, Debug, Default)]
pub(crate) struct DialResult {
    pub(crate) dial_mbps: f64,
    pub(crate) raw_mbps: f64,
    pub(crate) dial_cpu_sink: f64,
    pub(crate) dial_cpu_engine: f64,
    pub(crate) dial_cpu_loadgen: f64,
    pub(crate) raw_cpu_sink: f64,
    pub(crate) raw_cpu_loadgen: f64,
    pub(crate) dial_resumed: bool,
    pub(crate) sink_peak_rss_kib: u64,
    /// Leg E, when HAProxy ran in this round.
    pub(crate) haproxy: Option<HaproxyResult>,
    /// Leg E, published paths (with `E` in `--legs`).
    pub(crate) published: Option<PublishedResult>,
}

/// One bytestream over a TLS connection the sender opens itself: MB/s and
/// CPU s/GiB of the receiver (sink process), the relay and the sender.
#[derive(Clone, Debug, Default)]
pub(crate) struct PathRun {
    pub(crate) mbps: f64,
    pub(crate) cpu_sink: f64,
    pub(crate) cpu_relay: f64,
    pub(crate) cpu_sender: f64,
}

/// Leg E, the published paths (the path internet traffic takes), each
/// beside its HAProxy mirror.
#[derive(Clone, Debug, Default)]
pub(crate) struct PublishedResult {
    /// Sender TLS → the engine's published `http` endpoint (TLS terminated
    /// there, plaintext spliced) → proxy TLS → the SDK's `accept` → sink.
    /// Its mirror is leg E's HAProxy (TLS front, TLS back).
    pub(crate) https: Option<PathRun>,
    /// Sender TLS → the engine's published `tcp` endpoint (raw splice) →
    /// proxy TLS → the SDK's `accept` → the sink's own TLS, end to end.
    pub(crate) tcp: Option<PathRun>,
    /// The mirror of `tcp`: sender TLS → HAProxy (plain `mode tcp` front,
    /// TLS back) → the sink's TLS, and the sender's TLS inside it.
    pub(crate) haproxy_tcp: Option<PathRun>,
}

/// Leg E: the same bytestream, sender → HAProxy (TLS) → sink (TLS).
#[derive(Clone, Debug, Default)]
pub(crate) struct HaproxyResult {
    pub(crate) mbps: f64,
    pub(crate) cpu_sink: f64,
    pub(crate) cpu_proxy: f64,
    pub(crate) cpu_sender: f64,
    /// The cipher suite the sender negotiated with HAProxy.
    pub(crate) suite: String,
}

/// Writes `total` bytes, half-closes, reads the sink's 8-byte count.
pub(crate) async fn transfer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
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

pub(crate) async fn run_dial(
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
    if ctx.args.published {
        r.published = run_published(ctx, round, label, &mut sink, &engine, haproxy.as_ref()).await;
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
pub(crate) fn find_haproxy(args: &Args) -> Option<String> {
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
pub(crate) const SUITES: &str =
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";

/// HAProxy in the foreground (`-db`: one process, so `/proc/<pid>/stat`
/// counts all its threads), terminating TLS from the sender and opening TLS
/// to the sink: the same 4 AES-GCM passes, 2 loopback TCP hops and 3
/// processes as the dialed private tunnel. Default tuning (2.6: 16 KiB
/// buffers, one thread per core), `mode tcp`, verified backend.
pub(crate) struct Haproxy {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    /// The published-tcp mirror: plain front, TLS back to the sink's
    /// TLS-in-TLS port (when the sink has one).
    pub(crate) addr_tcp: Option<SocketAddr>,
}

impl Haproxy {
    pub(crate) fn start(bin: &str, dir: &Path, sink: &Proc) -> Result<Haproxy, BoxError> {
        std::fs::create_dir_all(dir)?;
        // A free port for the frontend (HAProxy cannot report one it picked).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let addr_tcp = match sink.ready.get("tls2") {
            Some(_) => Some(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?),
            None => None,
        };
        let mut config = format!(
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
        if let Some(front) = addr_tcp {
            config.push_str(&format!(
                "frontend leg_e_tcp\n\
                 \x20   bind {front}\n\
                 \x20   default_backend sink_tls2\n\
                 backend sink_tls2\n\
                 \x20   server sink2 {backend} ssl verify required ca-file {ca} sni str(localhost) verifyhost localhost\n",
                backend = sink.field("tls2")?,
                ca = sink.field("ca")?,
            ));
        }
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
                return Ok(Haproxy {
                    child,
                    addr,
                    addr_tcp,
                });
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("haproxy did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) async fn connect(&self, tls: &TlsConnector) -> Result<ClientTls, BoxError> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from(self.addr.ip().to_string())?;
        Ok(tls.connect(name, tcp).await?)
    }

    /// A warm-up MiB, then `--transfer-mib` through HAProxy; prints the line.
    pub(crate) async fn measure(
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

    pub(crate) async fn transfer(
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

    pub(crate) fn cpu(&self) -> f64 {
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

// ---------------------------------------------------------------------------
// Leg E, published: the engine's published endpoints against HAProxy

/// A TLS connection to `addr` (server name: its IP address).
async fn tls_connect(addr: SocketAddr, tls: &TlsConnector) -> Result<ClientTls, BoxError> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(addr.ip().to_string())?;
    Ok(tls.connect(name, tcp).await?)
}

/// A warm-up MiB, then `--transfer-mib` over a fresh TLS connection to
/// `addr`, with the CPU time of the sink, the relay and this process.
async fn path_run(
    ctx: &Ctx,
    addr: SocketAddr,
    tls: &TlsConnector,
    sink: &mut Proc,
    relay_pid: u32,
    tag: &str,
) -> Result<PathRun, BoxError> {
    let total = ctx.args.transfer;
    let mut s = tls_connect(addr, tls).await?;
    transfer(&mut s, 1 << 20).await?;
    let mut perf = None;
    if let Some(dir) = &ctx.args.perf {
        sink.start_perf(dir, &format!("{tag}-sink"));
        perf = perf_record(relay_pid, dir, &format!("{tag}-relay"));
    }
    let relay = || cpu_seconds(relay_pid).unwrap_or(f64::NAN);
    let c0 = (sink.cpu(), relay(), self_cpu());
    let mut s = tls_connect(addr, tls).await?;
    let t = transfer(&mut s, total).await?;
    let c1 = (sink.cpu(), relay(), self_cpu());
    sink.stop_perf();
    perf_stop(&mut perf);
    let per_gib = |a: f64, b: f64| (b - a) * (1u64 << 30) as f64 / total as f64;
    Ok(PathRun {
        mbps: total as f64 / 1e6 / t.as_secs_f64(),
        cpu_sink: per_gib(c0.0, c1.0),
        cpu_relay: per_gib(c0.1, c1.1),
        cpu_sender: per_gib(c0.2, c1.2),
    })
}

/// The published paths of leg E, in an order that alternates by round.
async fn run_published(
    ctx: &Ctx,
    round: usize,
    label: &str,
    sink: &mut Proc,
    engine: &Proc,
    haproxy: Option<&Haproxy>,
) -> Option<PublishedResult> {
    let (Some(https), Some(tcp)) = (sink.ready.get("pub_https"), sink.ready.get("pub_tcp")) else {
        println!("[round {round}] leg E published skipped: this sink has no published tunnels (older --compare-exe build)");
        return None;
    };
    let parse = |a: &str| -> Option<SocketAddr> {
        a.trim_start_matches("https://")
            .trim_end_matches('/')
            .parse()
            .ok()
    };
    let (Some(https), Some(tcp)) = (parse(https), parse(tcp)) else {
        println!("[round {round}] leg E published skipped: unexpected addresses {https} {tcp}");
        return None;
    };
    let connector = |ca: &str| -> Result<TlsConnector, BoxError> {
        Ok(TlsConnector::from(
            TlsOptions::new().add_ca_file(ca)?.client_config(&[])?,
        ))
    };
    // The engine's certificate on its published endpoint; the sink's own
    // certificate for the end-to-end TLS through the tcp paths.
    let (engine_tls, sink_tls) = match (
        engine
            .field("ca")
            .map_err(|e| e.to_string())
            .and_then(|ca| connector(ca).map_err(|e| e.to_string())),
        sink.field("ca")
            .map_err(|e| e.to_string())
            .and_then(|ca| connector(ca).map_err(|e| e.to_string())),
    ) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            println!("[round {round}] leg E published skipped: {e}");
            return None;
        }
    };
    let mut out = PublishedResult::default();
    let mut steps = vec!["https", "tcp", "haproxy_tcp"];
    if !round.is_multiple_of(2) {
        steps.reverse();
    }
    for step in steps {
        let run = match step {
            "https" => {
                path_run(
                    ctx,
                    https,
                    &engine_tls,
                    sink,
                    engine.pid(),
                    &format!("pub{label}-https"),
                )
                .await
            }
            "tcp" => {
                path_run(
                    ctx,
                    tcp,
                    &sink_tls,
                    sink,
                    engine.pid(),
                    &format!("pub{label}-tcp"),
                )
                .await
            }
            _ => match haproxy.and_then(|h| Some((h.addr_tcp?, h.pid()))) {
                Some((addr, pid)) => {
                    path_run(
                        ctx,
                        addr,
                        &sink_tls,
                        sink,
                        pid,
                        &format!("haproxy{label}-tcp"),
                    )
                    .await
                }
                None => continue,
            },
        };
        let what = match step {
            "https" => "engine published https (TLS terminated by the engine)",
            "tcp" => "engine published tcp (end-to-end TLS)",
            _ => "HAProxy tcp front + TLS back (end-to-end TLS)",
        };
        match run {
            Ok(r) => {
                println!(
                    "[round {round}] {what}: {:.0} MB/s (CPU s/GiB: sink {:.2} relay {:.2} sender {:.2})",
                    r.mbps, r.cpu_sink, r.cpu_relay, r.cpu_sender
                );
                match step {
                    "https" => out.https = Some(r),
                    "tcp" => out.tcp = Some(r),
                    _ => out.haproxy_tcp = Some(r),
                }
            }
            Err(e) => println!("[round {round}] {what} failed: {e}"),
        }
    }
    Some(out)
}
