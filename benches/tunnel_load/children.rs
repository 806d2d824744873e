use crate::*;

// ---------------------------------------------------------------------------
// Children: the engine and the servers of each leg

pub(crate) fn router() -> Router {
    Router::new().route("/", get(|| async { HELLO }))
}

#[derive(Default)]
pub(crate) struct ChildStats {
    pub(crate) accepted: AtomicU64,
    pub(crate) resumed: AtomicU64,
}

impl ChildStats {
    pub(crate) fn line(&self) -> String {
        let accepted = self.accepted.load(Ordering::Relaxed);
        let resumed = self.resumed.load(Ordering::Relaxed);
        format!(
            "accepted={accepted} resumed={resumed} full={}",
            accepted - resumed
        )
    }

    pub(crate) fn count(&self, stream: &RstreamStream) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        if stream.tls_resumed() {
            self.resumed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The lines of stdin, read by a thread of its own (ends with stdin).
pub(crate) fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Serves `stats` requests on stdin until it closes (or the lifetime cap).
pub(crate) async fn child_control(stats: Arc<ChildStats>) {
    let mut rx = stdin_lines();
    let deadline = tokio::time::Instant::now() + CHILD_MAX_LIFETIME;
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if line.trim() == "stats" {
            println!("STATS {}", stats.line());
        }
    }
}

pub(crate) fn sdk_client(args: &Args) -> Result<Client, BoxError> {
    let tls = TlsOptions::new().add_ca_file(args.get("ca")?)?;
    Ok(Client::builder()
        .engine(args.get("engine")?)
        .tls(tls)
        .build()?)
}

pub(crate) async fn child(kind: String, args: &Args) -> Result<(), BoxError> {
    let stats = Arc::new(ChildStats::default());
    match kind.as_str() {
        "engine" => {
            let mut builder = LocalEngine::builder()
                .state_dir(args.get("state-dir")?)
                .max_pending_streams(1024);
            // --scale: room for the largest point of every curve (50k idle
            // connections, 1,000 tunnels on a channel, 1,000 channels).
            if args.kv.contains_key("big-limits") {
                builder = builder
                    .max_published_connections(200_000)
                    .max_tunnels_per_client(5_000)
                    .max_connections(20_000);
            }
            let engine = builder.start().await?;
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
            // Leg E, published: HAProxy's mirror of a published tcp tunnel
            // carrying end-to-end TLS (TLS to HAProxy's backend, and the
            // sender's own TLS inside it).
            let tls2 = TcpListener::bind("127.0.0.1:0").await?;
            let tls2_addr = tls2.local_addr()?;
            let client = sdk_client(args)?;
            let control = client.connect().await?;
            let name = format!("bench-sink-{}", std::process::id());
            let mut tunnel = control
                .create_tunnel(TunnelOptions::new().name(name.clone()))
                .await?;
            // The published paths: an `http` endpoint (the engine terminates
            // the downstream TLS and splices the plaintext) and a `tcp` one
            // (the engine splices raw bytes: the sender's TLS ends here).
            let mut pub_https = control.create_tunnel(TunnelOptions::http()).await?;
            let mut pub_tcp = control.create_tunnel(TunnelOptions::tcp()).await?;
            let tcp_props = pub_tcp.properties();
            println!(
                "READY tunnel={name} tcp={raw_addr} tls={tls_addr} tls2={tls2_addr} ca={} pem={} \
                 pub_https={} pub_tcp={}:{}",
                ca_file.display(),
                ca_file.with_file_name(DIRECT_LEAF_PEM).display(),
                pub_https.forwarding_address(),
                tcp_props.hostname.as_deref().unwrap_or("127.0.0.1"),
                tcp_props.port.unwrap_or(0),
            );
            let counted = stats.clone();
            tokio::spawn(async move {
                while let Ok(stream) = tunnel.accept().await {
                    counted.count(&stream);
                    tokio::spawn(sink(stream));
                }
            });
            tokio::spawn(async move {
                while let Ok(stream) = pub_https.accept().await {
                    tokio::spawn(sink(stream));
                }
            });
            let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
            let inner = acceptor.clone();
            tokio::spawn(async move {
                while let Ok(stream) = pub_tcp.accept().await {
                    let inner = inner.clone();
                    tokio::spawn(async move {
                        if let Some(s) = tls_accept(&inner, stream).await {
                            sink(s).await;
                        }
                    });
                }
            });
            tokio::spawn(async move {
                while let Ok((tcp, _)) = raw.accept().await {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(sink(tcp));
                }
            });
            let outer = acceptor.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = tls.accept().await {
                    let _ = tcp.set_nodelay(true);
                    let outer = outer.clone();
                    tokio::spawn(async move {
                        if let Some(s) = tls_accept(&outer, tcp).await {
                            sink(s).await;
                        }
                    });
                }
            });
            tokio::spawn(async move {
                while let Ok((tcp, _)) = tls2.accept().await {
                    let _ = tcp.set_nodelay(true);
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        let Some(s) = tls_accept(&acceptor, tcp).await else {
                            return;
                        };
                        if let Some(s) = tls_accept(&acceptor, s).await {
                            sink(s).await;
                        }
                    });
                }
            });
            child_control(stats).await;
        }
        // --scale, tunnels and clients: READY at once, then on stdin
        // `tunnels N` (N published http tunnels on one control channel) or
        // `clients N` (N control channels), each made one after the other
        // and timed; answers `DONE n=.. total_ms=.. first_ms=.. last_ms=..
        // p99_ms=..` and holds them until stdin closes.
        "count" => {
            let client = sdk_client(args)?;
            // Warm-up on a channel of its own (TLS session, allocator,
            // first-use code paths), so that the first point is not
            // mostly one-time costs.
            let warm = client.connect().await?;
            let mut warm_tunnels = Vec::new();
            for _ in 0..4 {
                warm_tunnels.push(warm.create_tunnel(TunnelOptions::http()).await?);
            }
            let mut warm_controls = Vec::new();
            for _ in 0..4 {
                warm_controls.push(client.connect().await?);
            }
            println!("READY");
            let mut lines = stdin_lines();
            let mut held_controls = Vec::new();
            let mut held_tunnels = Vec::new();
            let deadline = tokio::time::Instant::now() + CHILD_MAX_LIFETIME;
            while let Ok(Some(line)) = tokio::time::timeout_at(deadline, lines.recv()).await {
                let mut it = line.split_whitespace();
                let (Some(what), Some(n)) =
                    (it.next(), it.next().and_then(|n| n.parse::<usize>().ok()))
                else {
                    continue;
                };
                let n = n.min(100_000);
                let mut each = Vec::with_capacity(n);
                let start = Instant::now();
                let mut error = None;
                if what == "tunnels" {
                    let control = client.connect().await?;
                    for _ in 0..n {
                        let t0 = Instant::now();
                        match control.create_tunnel(TunnelOptions::http()).await {
                            Ok(t) => held_tunnels.push(t),
                            Err(e) => {
                                error = Some(e.to_string());
                                break;
                            }
                        }
                        each.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                    held_controls.push(control);
                } else {
                    for _ in 0..n {
                        let t0 = Instant::now();
                        match client.connect().await {
                            Ok(c) => held_controls.push(c),
                            Err(e) => {
                                error = Some(e.to_string());
                                break;
                            }
                        }
                        each.push(t0.elapsed().as_secs_f64() * 1e3);
                    }
                }
                let total = start.elapsed().as_secs_f64() * 1e3;
                let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
                let k = each.len().min(10);
                let (first, last) = (mean(&each[..k]), mean(&each[each.len() - k..]));
                let mut sorted = each.clone();
                sorted.sort_by(f64::total_cmp);
                let p99 = sorted
                    .get(
                        ((sorted.len() as f64 * 0.99) as usize).min(sorted.len().saturating_sub(1)),
                    )
                    .copied()
                    .unwrap_or(f64::NAN);
                if let Some(e) = error {
                    eprintln!(
                        "tunnel_load count: {what} stopped after {}: {e}",
                        each.len()
                    );
                }
                println!(
                    "DONE n={} total_ms={total:.3} first_ms={first:.3} last_ms={last:.3} p99_ms={p99:.3}",
                    each.len()
                );
            }
            drop(held_tunnels);
            drop(held_controls);
            drop(warm_tunnels);
            drop(warm_controls);
        }
        // --scale, dial: a private tunnel that echoes every stream.
        "echo" => {
            let client = sdk_client(args)?;
            let control = client.connect().await?;
            let name = format!("bench-echo-{}", std::process::id());
            let mut tunnel = control
                .create_tunnel(TunnelOptions::new().name(name.clone()))
                .await?;
            println!("READY tunnel={name}");
            tokio::spawn(async move {
                while let Ok(stream) = tunnel.accept().await {
                    tokio::spawn(async move {
                        let (mut r, mut w) = tokio::io::split(stream);
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        let _ = w.shutdown().await;
                    });
                }
            });
            child_control(stats).await;
        }
        other => return Err(format!("unknown child kind {other:?}").into()),
    }
    Ok(())
}

/// A TLS handshake as the server, bounded in time.
async fn tls_accept<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    acceptor: &tokio_rustls::TlsAcceptor,
    s: S,
) -> Option<tokio_rustls::server::TlsStream<S>> {
    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(s)).await {
        Ok(Ok(s)) => Some(s),
        _ => None,
    }
}

/// Reads to EOF, answers the byte count (8 bytes, big endian), closes.
pub(crate) async fn sink<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) {
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
pub(crate) const DIRECT_LEAF_PEM: &str = "direct-leaf.pem";

/// A CA and a leaf for 127.0.0.1 (ECDSA P-256, like the engine's), and the
/// server configuration the engine's published endpoints use (TLS 1.2+,
/// `http/1.1`, session cache and tickets). Also writes the leaf and its key
/// to [`DIRECT_LEAF_PEM`], so that HAProxy (leg E) serves the same kind of
/// certificate as the engine.
pub(crate) fn direct_tls(dir: &Path) -> Result<(Arc<rustls::ServerConfig>, PathBuf), BoxError> {
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

pub(crate) async fn serve_tls(listener: TcpListener, config: Arc<rustls::ServerConfig>) {
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
