use crate::*;

// ---------------------------------------------------------------------------
// The load generator

/// Where a leg answers HTTPS.
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) host: String,
    pub(crate) tls: TlsConnector,
}

impl Target {
    pub(crate) fn new(url: &str, ca_file: &str) -> Result<Arc<Target>, BoxError> {
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

    pub(crate) async fn tls(&self) -> Result<(ClientTls, bool), BoxError> {
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

    pub(crate) async fn http(&self) -> Result<(Conn, bool), BoxError> {
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

    pub(crate) async fn get(&self, conn: &mut Conn) -> Result<(), BoxError> {
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

pub(crate) struct Conn {
    pub(crate) sender: http1::SendRequest<Empty<Bytes>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
    pub(crate) served: u64,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Default)]
pub(crate) struct Load {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    /// Keep-alive connections the server closed (the next request went on a new one).
    pub(crate) reconnects: u64,
    pub(crate) full: u64,
    pub(crate) resumed: u64,
    pub(crate) samples: Vec<u32>,
    pub(crate) elapsed: Duration,
    pub(crate) first_error: Option<String>,
}

impl Load {
    pub(crate) fn merge(&mut self, o: Load) {
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

    pub(crate) fn record(&mut self, start: Instant) {
        self.requests += 1;
        if self.samples.len() < MAX_SAMPLES_PER_WORKER {
            self.samples
                .push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
        }
    }

    pub(crate) fn handshake(&mut self, resumed: bool) {
        if resumed {
            self.resumed += 1;
        } else {
            self.full += 1;
        }
    }

    pub(crate) fn error(&mut self, e: BoxError) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }

    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn percentile_ms(&self, p: f64) -> f64 {
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
pub(crate) async fn keepalive(target: Arc<Target>, conns: usize, duration: Duration) -> Load {
    keepalive_with(target, conns, duration, false, || ())
        .await
        .0
}

/// [`keepalive`]; with `establish`, each connection also answers one
/// request (not counted) before the next one opens, so that the whole path
/// (the engine's stream and the SDK's proxy connection) exists before the
/// next handshake starts: `--scale` opens thousands, and the SDK fails its
/// control channel when more than 64 + 256 proxy handshakes are pending
/// (`ERR_RSTREAM_CONTROL_OVERLOAD`, PROTOCOL.md). `at_start` runs once
/// every connection is open, as the timed part starts (CPU snapshots,
/// profilers): opening thousands of connections costs more than seconds
/// of requests.
pub(crate) async fn keepalive_with<T>(
    target: Arc<Target>,
    conns: usize,
    duration: Duration,
    establish: bool,
    at_start: impl FnOnce() -> T,
) -> (Load, T) {
    let barrier = Arc::new(tokio::sync::Barrier::new(conns + 1));
    // At most this many handshakes at once (thousands of connections would
    // otherwise hit the engine's caps on pending streams and
    // unauthenticated connections while they open).
    let opening = Arc::new(tokio::sync::Semaphore::new(KEEPALIVE_CONNS));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let target = target.clone();
        let barrier = barrier.clone();
        let opening = opening.clone();
        workers.spawn(async move {
            let mut load = Load::default();
            let permit = opening.acquire().await;
            let mut first = target.http().await;
            if let (true, Ok((c, _))) = (establish, first.as_mut()) {
                if let Err(e) = target.get(c).await {
                    first = Err(e);
                }
            }
            drop(permit);
            let mut conn = match first {
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
    let started = at_start();
    let start = Instant::now();
    let mut total = Load::default();
    while let Some(r) = workers.join_next().await {
        if let Ok(load) = r {
            total.merge(load);
        }
    }
    total.elapsed = start.elapsed();
    total.samples.sort_unstable();
    (total, started)
}

/// Workload 2: `workers` loops of connect + TLS + one request + close.
pub(crate) async fn new_connections(
    target: Arc<Target>,
    workers: usize,
    duration: Duration,
) -> Load {
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
pub(crate) async fn open_idle(
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
pub(crate) enum IdleConn {
    Http(Conn),
    Tls(Box<ClientTls>),
}
