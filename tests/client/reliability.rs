//! Fault injection against the local engine (and a scripted one): engine
//! restarts under load, frozen engines, reset control connections, slow
//! handshakes, permanent refusals, full backlogs. See docs/RELIABILITY.md.

use crate::support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rstream::engine::LocalEngine;
use rstream::proto::{self, message::Payload, open_tunnel_rsp};
use rstream::{
    ConnectionStatus, DialOptions, ErrorKind, ReconnectPolicy, RstreamStream, TunnelOptions,
};
use support::flood::{self, Flood, Idle};
use support::scripted::Scripted;
use support::{echo_round_trip, options, spawn_echo, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

fn temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rstream-{tag}-{}", uuid::Uuid::new_v4().simple()))
}

/// A quick policy for tests that restart engines many times.
fn quick() -> ReconnectPolicy {
    ReconnectPolicy::new()
        .initial_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(500))
}

async fn start_engine(dir: &std::path::Path, addr: SocketAddr) -> LocalEngine {
    support::init_tracing();
    LocalEngine::builder()
        .state_dir(dir)
        .listen(addr)
        .start()
        .await
        .expect("engine starts")
}

/// Waits until `status` satisfies `pred`.
async fn wait_status(
    status: &mut watch::Receiver<ConnectionStatus>,
    what: &str,
    pred: impl FnMut(&ConnectionStatus) -> bool,
) -> ConnectionStatus {
    within(what, status.wait_for(pred))
        .await
        .expect("status sender alive")
        .clone()
}

/// One HTTPS GET on a fresh connection; errors instead of panics (the
/// engine may be down).
async fn try_get(url: &str, ca_pem: &str, path: &str) -> Result<String, String> {
    let fut = async {
        let authority = support::authority(url);
        let tcp = TcpStream::connect(&authority)
            .await
            .map_err(|e| e.to_string())?;
        let name =
            rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(support::tls_config(ca_pem, &[b"http/1.1"]))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::get(path)
            .header("host", authority)
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let rsp = send.send_request(req).await.map_err(|e| e.to_string())?;
        if !rsp.status().is_success() {
            return Err(format!("status {}", rsp.status()));
        }
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

/// Requests `url` until one succeeds; returns how long that took.
async fn until_ok(url: &str, ca_pem: &str) -> Duration {
    let started = Instant::now();
    within("requests succeed again", async {
        loop {
            if try_get(url, ca_pem, "/").await.is_ok() {
                return started.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

fn app() -> Router {
    Router::new().route("/", get(|| async { "up" }))
}

/// Background load: `n` workers requesting `url` in a loop, counting
/// successes and failures, until dropped.
struct Load {
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    tasks: Vec<AbortHandle>,
}

impl Load {
    fn start(url: &str, ca_pem: &str, n: usize) -> Load {
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..n)
            .map(|_| {
                let (url, ca, ok, failed) = (
                    url.to_owned(),
                    ca_pem.to_owned(),
                    ok.clone(),
                    failed.clone(),
                );
                tokio::spawn(async move {
                    loop {
                        match try_get(&url, &ca, "/").await {
                            Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(_) => {
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                })
                .abort_handle()
            })
            .collect();
        Load { ok, failed, tasks }
    }
}

impl Load {
    /// Whether more than `than` requests succeed within 10 s. A bounded
    /// wait, not a fixed sleep: on two loaded cores a handful of new TLS
    /// connections can take longer than any short fixed pause.
    async fn progressed(&self, than: usize) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if self.ok.load(Ordering::Relaxed) > than {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

// ---------------------------------------------------------------------------
// Engine restarts

/// Kill the engine while `axum::serve(tunnel, …)` runs under load, restart
/// it on the same port with the same CA: requests succeed again within the
/// backoff window, at the same address, served by the same `Tunnel`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_restart_under_load_keeps_the_same_tunnel_serving() {
    let dir = temp_dir("restart");
    let engine = start_engine(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let addr = engine.local_addr();
    let ca = engine.ca_pem().to_owned();
    let client = options(&engine).build().unwrap();
    let control = client.connect().await.unwrap(); // the default policy
    let tunnel = control
        .create_tunnel(TunnelOptions::http().name("web"))
        .await
        .unwrap();
    let url = tunnel.forwarding_address();
    let first_id = tunnel.id();
    let serve = tokio::spawn(async move { axum::serve(tunnel, app()).await });
    assert_eq!(try_get(&url, &ca, "/").await.as_deref(), Ok("up"));

    let load = Load::start(&url, &ca, 4);
    assert!(load.progressed(0).await, "no request succeeded under load");

    let mut status = control.status();
    engine.shutdown().await;
    let down = wait_status(&mut status, "reconnecting", |s| {
        matches!(s, ConnectionStatus::Reconnecting { .. })
    })
    .await;
    assert!(down.error().is_some());
    let engine = start_engine(&dir, addr).await;
    let recovered = until_ok(&url, &ca).await;
    // Default policy: the first attempts wait 100–200 ms, then 200–400 ms…
    assert!(
        recovered < Duration::from_secs(5),
        "recovered after {recovered:?}"
    );
    wait_status(&mut status, "connected", ConnectionStatus::is_connected).await;
    let after = load.ok.load(Ordering::Relaxed);
    assert!(
        load.progressed(after).await,
        "load does not flow after the restart"
    );
    drop(load);

    assert!(!serve.is_finished(), "axum::serve stopped");
    // The engine knows one tunnel, named "web", at the same port.
    let tunnels = engine.tunnels();
    assert_eq!(tunnels.len(), 1);
    assert_eq!(tunnels[0].properties.name.as_deref(), Some("web"));
    assert_ne!(tunnels[0].id, first_id, "a new engine assigns a new id");
    assert_eq!(
        rstream::tunnel::forwarding_address(&tunnels[0].properties).unwrap(),
        url
    );
    serve.abort();
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Twenty restarts in a row: every time, requests come back at the same
/// address, through the same `Tunnel` (axum::serve never stops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_restarts_in_a_row() {
    let dir = temp_dir("restarts");
    let mut engine = start_engine(&dir, "127.0.0.1:0".parse().unwrap()).await;
    let addr = engine.local_addr();
    let ca = engine.ca_pem().to_owned();
    let client = options(&engine).build().unwrap();
    let control = client.connect_with(quick()).await.unwrap();
    let tunnel = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    let url = tunnel.forwarding_address();
    let serve = tokio::spawn(async move { axum::serve(tunnel, app()).await });
    let load = Load::start(&url, &ca, 2);
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    for round in 0..20 {
        engine.shutdown().await;
        engine = start_engine(&dir, addr).await;
        let took = until_ok(&url, &ca).await;
        worst = worst.max(took);
        assert!(!serve.is_finished(), "axum::serve stopped in round {round}");
        assert!(!control.is_closed());
    }
    let failed = load.failed.load(Ordering::Relaxed);
    drop(load);
    eprintln!(
        "20 restarts in {:?}, worst recovery {worst:?}, {failed} failed requests during downtime",
        started.elapsed()
    );
    assert!(worst < Duration::from_secs(3), "worst recovery {worst:?}");
    assert_eq!(engine.tunnels().len(), 1);
    serve.abort();
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A restarted engine that refuses the agent's token: the reopen fails with
/// UNAUTHORIZED, which is permanent: the channel and its tunnels close with
/// that error instead of retrying forever.
#[tokio::test]
async fn unauthorized_after_restart_is_permanent() {
    let dir = temp_dir("unauthorized");
    support::init_tracing();
    let engine = LocalEngine::builder()
        .state_dir(&dir)
        .token("old-token")
        .start()
        .await
        .unwrap();
    let addr = engine.local_addr();
    let client = options(&engine).token("old-token").build().unwrap();
    let control = client.connect_with(quick()).await.unwrap();
    let mut tunnel = control
        .create_tunnel(TunnelOptions::new().name("auth"))
        .await
        .unwrap();
    engine.shutdown().await;
    let engine = LocalEngine::builder()
        .state_dir(&dir)
        .listen(addr)
        .token("new-token")
        .start()
        .await
        .unwrap();
    let err = within("closed", control.closed()).await;
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert_eq!(err.engine_code(), Some(1000));
    let err = within("accept", tunnel.accept()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(matches!(
        &*control.status().borrow(),
        ConnectionStatus::Closed { error: Some(_) }
    ));
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `max_attempts` bounds the retries; `disabled()` does not retry at all.
#[tokio::test]
async fn attempt_limit_and_opt_out() {
    let engine = support::engine().await;
    let client = options(&engine).build().unwrap();
    let limited = client.connect_with(quick().max_attempts(3)).await.unwrap();
    let mut t1 = limited
        .create_tunnel(TunnelOptions::new().name("limited"))
        .await
        .unwrap();
    let off = client
        .connect_with(ReconnectPolicy::disabled())
        .await
        .unwrap();
    let mut t2 = off
        .create_tunnel(TunnelOptions::new().name("off"))
        .await
        .unwrap();
    let mut attempts = Vec::new();
    let mut status = limited.status();
    let watcher = tokio::spawn(async move {
        while status.changed().await.is_ok() {
            if let ConnectionStatus::Reconnecting { attempt, .. } = &*status.borrow_and_update() {
                attempts.push(*attempt);
            }
        }
        attempts
    });
    engine.shutdown().await;

    let err = within("opt-out closes", off.closed()).await;
    assert_eq!(err.kind(), ErrorKind::Io, "{err}");
    assert_eq!(
        within("t2", t2.accept()).await.unwrap_err().kind(),
        ErrorKind::Io
    );

    let err = within("gives up", limited.closed()).await;
    assert_eq!(err.code(), "ERR_RSTREAM_RECONNECT_GAVE_UP", "{err}");
    assert!(
        std::error::Error::source(&err).is_some(),
        "the last error is attached"
    );
    // A transport loss: relays of forward_to would survive it.
    assert_eq!(err.kind(), ErrorKind::Io);
    assert_eq!(
        within("t1", t1.accept()).await.unwrap_err().code(),
        "ERR_RSTREAM_RECONNECT_GAVE_UP"
    );
    let attempts = within("watcher", watcher).await.unwrap();
    assert_eq!(attempts, [1, 2, 3]);
}

/// Closing while reconnecting ends the channel at once, cleanly.
#[tokio::test]
async fn close_while_reconnecting() {
    let engine = support::engine().await;
    let client = options(&engine).build().unwrap();
    let control = client.connect().await.unwrap();
    let mut tunnel = control
        .create_tunnel(TunnelOptions::new().name("bye"))
        .await
        .unwrap();
    let mut status = control.status();
    engine.shutdown().await;
    wait_status(&mut status, "reconnecting", |s| {
        matches!(s, ConnectionStatus::Reconnecting { .. })
    })
    .await;
    // A create_tunnel issued meanwhile waits for the connection, and fails
    // when the channel closes.
    let pending = tokio::spawn({
        let control = control.clone();
        async move { control.create_tunnel(TunnelOptions::new()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    within("close", control.close()).await.unwrap();
    assert!(control.is_closed());
    assert!(matches!(
        &*control.status().borrow(),
        ConnectionStatus::Closed { error: None }
    ));
    assert_eq!(
        within("accept", tunnel.accept()).await.unwrap_err().kind(),
        ErrorKind::Closed
    );
    assert_eq!(
        within("pending create", pending)
            .await
            .unwrap()
            .unwrap_err()
            .kind(),
        ErrorKind::Closed
    );
}

// ---------------------------------------------------------------------------
// A fault-injecting TCP proxy between the client and the engine

struct FaultProxy {
    addr: SocketAddr,
    conns: Arc<Mutex<Vec<ProxyConn>>>,
    accept: AbortHandle,
}

struct ProxyConn {
    frozen: watch::Sender<bool>,
    pumps: [AbortHandle; 2],
}

impl FaultProxy {
    async fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<ProxyConn>>> = Arc::default();
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let _ = (down.set_nodelay(true), up.set_nodelay(true));
                let (frozen, rx) = watch::channel(false);
                let (dr, dw) = down.into_split();
                let (ur, uw) = up.into_split();
                let a = tokio::spawn(pump(dr, uw, rx.clone())).abort_handle();
                let b = tokio::spawn(pump(ur, dw, rx)).abort_handle();
                list.lock().unwrap().push(ProxyConn {
                    frozen,
                    pumps: [a, b],
                });
            }
        })
        .abort_handle();
        FaultProxy {
            addr,
            conns,
            accept,
        }
    }

    /// Existing connections stop forwarding in both directions; their
    /// sockets stay open (nothing is read any more). New ones pass.
    fn freeze_all(&self) {
        for c in self.conns.lock().unwrap().iter() {
            c.frozen.send_replace(true);
        }
    }

    /// Closes connection `index` abruptly (both sockets, no TLS close_notify).
    fn reset(&self, index: usize) {
        for p in &self.conns.lock().unwrap()[index].pumps {
            p.abort();
        }
    }

    fn count(&self) -> usize {
        self.conns.lock().unwrap().len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().iter() {
            for p in &c.pumps {
                p.abort();
            }
        }
    }
}

async fn pump(
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            () = async { drop(frozen.wait_for(|f| *f).await) } => {
                // Frozen: hold both sockets open, never read or write again.
                std::future::pending::<()>().await;
                return;
            }
        };
        let is_frozen = *frozen.borrow();
        if is_frozen {
            std::future::pending::<()>().await;
        }
        if wr.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

/// Options for a client that reaches `engine` through `proxy`.
fn via(proxy: &FaultProxy, engine: &LocalEngine) -> rstream::ClientOptions {
    options(engine).engine(proxy.addr.to_string())
}

/// A frozen engine (stops reading, keeps the socket open) expires the
/// client's liveness, which reconnects; the named tunnel is re-created once
/// the engine has reaped the old connection, and serves again.
#[tokio::test]
async fn liveness_expiry_on_a_frozen_engine_reconnects() {
    support::init_tracing();
    let engine = LocalEngine::builder()
        .liveness_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let proxy = FaultProxy::start(engine.local_addr()).await;
    let client = via(&proxy, &engine)
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .unwrap();
    let control = client.connect_with(quick()).await.unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("frozen"))
        .await
        .unwrap();
    let first_id = tunnel.id();
    let echo = spawn_echo(tunnel);
    assert_eq!(
        echo_round_trip(client.dial("frozen").await.unwrap(), b"before").await,
        b"before"
    );

    let mut status = control.status();
    let frozen_at = Instant::now();
    proxy.freeze_all();
    let lost = wait_status(&mut status, "liveness expiry", |s| {
        matches!(s, ConnectionStatus::Reconnecting { .. })
    })
    .await;
    let waited = frozen_at.elapsed();
    assert_eq!(
        lost.error().unwrap().code(),
        "ERR_RSTREAM_CONTROL_LIVENESS",
        "{lost:?}"
    );
    assert!(
        waited >= Duration::from_millis(1_500) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    // The engine still holds the old tunnel ("frozen") until its own
    // liveness timeout: re-creation is retried until the name is free.
    wait_status(&mut status, "reconnected", ConnectionStatus::is_connected).await;
    let back = within("dial after reconnect", client.dial("frozen"))
        .await
        .unwrap();
    assert_eq!(echo_round_trip(back, b"after").await, b"after");
    assert!(!echo.is_finished(), "the same Tunnel keeps accepting");
    let tunnels = engine.tunnels();
    assert_eq!(tunnels.len(), 1);
    assert_ne!(tunnels[0].id, first_id);
}

/// Resetting the control connection does not touch streams already
/// accepted: they keep flowing while the channel reconnects.
#[tokio::test]
async fn accepted_streams_keep_flowing_while_the_control_channel_is_down() {
    let engine = support::engine().await;
    let proxy = FaultProxy::start(engine.local_addr()).await;
    let client = via(&proxy, &engine).build().unwrap();
    let control = client.connect_with(quick()).await.unwrap();
    assert_eq!(proxy.count(), 1, "connection 0 is the control channel");
    let _echo = spawn_echo(
        control
            .create_tunnel(TunnelOptions::new().name("keep"))
            .await
            .unwrap(),
    );
    let mut stream: RstreamStream = client
        .dial_with("keep", DialOptions::new().zero_rtt(false))
        .await
        .unwrap();
    let mut buf = [0u8; 5];
    stream.write_all(b"one..").await.unwrap();
    stream.read_exact(&mut buf).await.unwrap();

    let mut status = control.status();
    proxy.reset(0);
    let lost = wait_status(&mut status, "lost", |s| {
        matches!(s, ConnectionStatus::Reconnecting { .. })
    })
    .await;
    assert_eq!(lost.error().unwrap().kind(), ErrorKind::Io, "{lost:?}");
    // While reconnecting (and after), the accepted stream still works.
    stream.write_all(b"two..").await.unwrap();
    within("read", stream.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"two..");
    wait_status(&mut status, "reconnected", ConnectionStatus::is_connected).await;
    stream.write_all(b"three").await.unwrap();
    within("read", stream.read_exact(&mut buf)).await.unwrap();
    assert_eq!(&buf, b"three");
    let again = within("new dial", client.dial("keep")).await.unwrap();
    assert_eq!(echo_round_trip(again, b"new").await, b"new");
}

/// Accepts `n` control connections, answers each handshake and then holds
/// it for `hold` before dropping it (a flapping engine or load balancer);
/// returns when each connection was accepted.
async fn flapping(engine: &Scripted, n: usize, hold: Duration) -> Vec<Instant> {
    let mut accepted = Vec::with_capacity(n);
    for _ in 0..n {
        let mut peer = engine.accept().await;
        accepted.push(Instant::now());
        peer.open_ok(None).await;
        tokio::time::sleep(hold).await;
        drop(peer);
    }
    accepted
}

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// An engine that accepts and drops right after the handshake: the
/// backoff does not reset (the connection did not stay up for
/// `stable_after`), so delays double (50, 100, 200, 400 ms, ...) instead of
/// a reconnect every 50 ms. A connection that stayed up longer than
/// `stable_after` does reset it.
#[tokio::test]
async fn a_flapping_engine_gets_growing_reconnect_delays() {
    let policy = ReconnectPolicy::new()
        .initial_delay(Duration::from_millis(50))
        .max_delay(Duration::from_secs(5))
        .jitter(rstream::control::Jitter::None)
        .stable_after(Duration::from_millis(300));

    let engine = Scripted::start().await;
    let client = engine.client().build().unwrap();
    let (control, accepted) = tokio::join!(client.connect_with(policy.clone()), async {
        within("flapping", flapping(&engine, 6, Duration::ZERO)).await
    });
    let control = control.unwrap();
    let flap = gaps(&accepted);
    eprintln!("flapping engine, gaps between connections: {flap:?}");
    // 50, 100, 200, 400, 800 ms (plus handshakes): growing, not constant.
    for pair in flap.windows(2) {
        assert!(pair[1] > pair[0], "delays do not grow: {flap:?}");
    }
    assert!(flap[4] >= Duration::from_millis(750), "{flap:?}");
    assert!(flap[4] >= flap[0] * 8, "{flap:?}");
    drop(control);

    // Connections that stay up past `stable_after` reset the backoff:
    // every reconnect comes after the initial 50 ms.
    let engine = Scripted::start().await;
    let client = engine.client().build().unwrap();
    let (control, accepted) = tokio::join!(client.connect_with(policy), async {
        within("stable", flapping(&engine, 4, Duration::from_millis(400))).await
    });
    let control = control.unwrap();
    let stable = gaps(&accepted);
    eprintln!("engine holding each connection 400 ms, gaps: {stable:?}");
    for gap in &stable {
        let delay = *gap - Duration::from_millis(400);
        assert!(
            delay < Duration::from_millis(300),
            "backoff not reset: {stable:?}"
        );
    }
    drop(control);
}

// ---------------------------------------------------------------------------
// Scripted engine: exact frames

fn tunnel_ok(request_id: String, props: proto::TunnelProperties) -> Payload {
    Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
        request_id,
        payload: Some(open_tunnel_rsp::Payload::TunnelProperties(props)),
    })
}

fn tunnel_err(request_id: String, code: proto::ErrorCode) -> Payload {
    Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
        request_id,
        payload: Some(open_tunnel_rsp::Payload::Error(proto::Error::new(
            code,
            "scripted refusal",
        ))),
    })
}

async fn next_open(peer: &mut support::scripted::Peer) -> proto::OpenTunnelReq {
    match within("OpenTunnelReq", peer.recv_skip_heartbeats()).await {
        Some(Payload::OpenTunnelReq(r)) => r,
        other => panic!("expected OpenTunnelReq, got {:?}", other.map(|p| p.name())),
    }
}

/// Re-creation asks for the assigned hostname (and non-default port); an
/// engine that does not honour it gets the original request instead; an
/// UNAUTHORIZED refusal closes that tunnel with the error.
#[tokio::test]
async fn recreation_requests_and_refusals() {
    support::init_tracing();
    let engine = Scripted::start().await;
    let client = engine.client().disable_heartbeats().build().unwrap();
    let (control, mut peer) = engine.open(client.connect_with(quick()), None).await;
    let control = control.unwrap();
    let script = async {
        for _ in 0..2 {
            let r = next_open(&mut peer).await;
            let mut p = r.tunnel_properties.unwrap();
            let name = p.name.clone().unwrap();
            p.id = Some(format!("{name}-1"));
            p.hostname = Some(format!("{name}.example.test"));
            p.port = (name == "b").then_some(8443);
            peer.send(tunnel_ok(r.request_id, p)).await;
        }
    };
    let (a, b, ()) = tokio::join!(
        control.create_tunnel(TunnelOptions::http().name("a")),
        control.create_tunnel(TunnelOptions::http().name("b")),
        script
    );
    let (a, mut b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.forwarding_address(), "https://a.example.test");
    assert_eq!(b.forwarding_address(), "https://b.example.test:8443");

    // The engine goes away; the client comes back.
    drop(peer);
    let mut peer = within("reconnect", engine.accept()).await;
    peer.open_ok(None).await;
    let mut asked = std::collections::HashMap::new();
    for _ in 0..2 {
        let r = next_open(&mut peer).await;
        let p = r.tunnel_properties.clone().unwrap();
        asked.insert(p.name.clone().unwrap(), (r.request_id, p));
    }
    let (rid_a, pa) = asked.remove("a").unwrap();
    assert_eq!(pa.hostname.as_deref(), Some("a.example.test"));
    assert_eq!(pa.port, None, "443 is not sticky");
    let (rid_b, pb) = asked.remove("b").unwrap();
    assert_eq!(pb.hostname.as_deref(), Some("b.example.test"));
    assert_eq!(pb.port, Some(8443));
    // "a": the engine does not do custom hostnames, so the client retries
    // with the original properties at once.
    peer.send(tunnel_err(rid_a, proto::ErrorCode::FeatureNotAvailable))
        .await;
    let r = next_open(&mut peer).await;
    let mut p = r.tunnel_properties.unwrap();
    assert_eq!(p.name.as_deref(), Some("a"));
    assert_eq!(p.hostname, None);
    p.id = Some("a-2".into());
    p.hostname = Some("a2.example.test".into());
    peer.send(tunnel_ok(r.request_id, p)).await;
    // "b": UNAUTHORIZED is permanent.
    peer.send(tunnel_err(rid_b, proto::ErrorCode::Unauthorized))
        .await;

    let mut status = control.status();
    wait_status(&mut status, "connected", ConnectionStatus::is_connected).await;
    assert_eq!(a.id(), "a-2");
    assert_eq!(a.forwarding_address(), "https://a2.example.test");
    let err = within("b closed", b.accept()).await.unwrap_err();
    assert_eq!(err.engine_code(), Some(1000), "{err}");
    assert!(!a.is_closed());
    drop(a);
    // Dropping "a" closes it on the engine under its new id.
    match within("close", peer.recv_skip_heartbeats()).await {
        Some(Payload::CloseTunnelReq(c)) => assert_eq!(c.tunnel_id, "a-2"),
        other => panic!("expected CloseTunnelReq, got {:?}", other.map(|p| p.name())),
    }
}

/// A proxy handshake that hangs (its endpoint never answers TLS) neither
/// delays heartbeats nor the liveness bookkeeping; its connect timeout
/// fires and the engine gets an INVALID_STREAM answer.
#[tokio::test]
async fn a_slow_handshake_does_not_delay_heartbeats() {
    support::init_tracing();
    let engine = Scripted::start().await;
    // Accepts TCP and then says nothing, ever.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let client = engine
        .client()
        .heartbeat_interval(Duration::from_secs(1))
        .connect_timeout(Duration::from_millis(2_500))
        .build()
        .unwrap();
    let (control, mut peer) = engine.open(client.connect_with(quick()), Some(3_000)).await;
    let control = control.unwrap();
    let (tunnel, ()) = tokio::join!(
        control.create_tunnel(TunnelOptions::new().name("h")),
        async {
            let r = next_open(&mut peer).await;
            let mut p = r.tunnel_properties.unwrap();
            p.id = Some("h-1".into());
            peer.send(tunnel_ok(r.request_id, p)).await;
        }
    );
    let _tunnel = tunnel.unwrap();
    peer.send(Payload::ProxyConnReq(proto::ProxyConnReq {
        tunnel_id: "h-1".into(),
        stream_id: "slow-stream".into(),
        secret: Some("per-stream-secret".into()),
        source_ip: None,
        proxy_endpoint: Some(silent_addr.to_string()),
    }))
    .await;
    let started = Instant::now();
    let mut last = Instant::now();
    let mut worst_gap = Duration::ZERO;
    let mut refusal = None;
    while started.elapsed() < Duration::from_secs(4) {
        match within("frame", peer.recv()).await {
            Some(Payload::Heartbeat(hb)) => {
                worst_gap = worst_gap.max(last.elapsed());
                last = Instant::now();
                peer.send(Payload::Heartbeat(proto::Heartbeat {
                    sequence: 0,
                    acknowledgement: hb.sequence,
                }))
                .await;
            }
            Some(Payload::ProxyConnRsp(rsp)) => refusal = Some((rsp, started.elapsed())),
            other => panic!("unexpected {:?}", other.map(|p| p.name())),
        }
    }
    assert!(
        worst_gap < Duration::from_millis(1_500),
        "heartbeat gap {worst_gap:?}"
    );
    let (rsp, after) = refusal.expect("the hung handshake was answered");
    assert_eq!(rsp.stream_id, "slow-stream");
    assert_eq!(
        rsp.error.unwrap().code,
        proto::ErrorCode::InvalidStream as i32
    );
    assert!(
        after >= Duration::from_secs(2) && after < Duration::from_secs(4),
        "{after:?}"
    );
    assert!(control.status().borrow().is_connected());
}

// ---------------------------------------------------------------------------
// Bounds

/// A tunnel whose application does not accept holds at most
/// `accept_backlog` connections; further ones are refused at once with a
/// clear reason, and the channel stays healthy.
#[tokio::test]
async fn a_full_accept_backlog_refuses_at_once() {
    let engine = support::engine().await;
    let client = options(&engine).accept_backlog(2).build().unwrap();
    let control = client.connect().await.unwrap();
    let mut tunnel = control
        .create_tunnel(TunnelOptions::new().name("slow-app"))
        .await
        .unwrap();
    let strict = DialOptions::new().zero_rtt(false);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(
            within("dial", client.dial_with("slow-app", strict.clone()))
                .await
                .unwrap(),
        );
    }
    let started = Instant::now();
    let err = within("refused", client.dial_with("slow-app", strict.clone()))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused only after {:?}",
        started.elapsed()
    );
    assert_eq!(
        err.engine_code(),
        Some(proto::ErrorCode::InvalidStream as i32),
        "{err}"
    );
    assert!(err.to_string().contains("backlog"), "{err}");
    // The application catches up: room again.
    for _ in 0..2 {
        within("accept", tunnel.accept()).await.unwrap();
    }
    within("dial", client.dial_with("slow-app", strict))
        .await
        .unwrap();
    assert!(control.status().borrow().is_connected());
}

/// The local engine's own limits answer with clear errors.
#[tokio::test]
async fn engine_limits_are_clear_errors() {
    support::init_tracing();
    let engine = LocalEngine::builder()
        .max_tunnels_per_client(2)
        .start()
        .await
        .unwrap();
    let control = options(&engine).build().unwrap().connect().await.unwrap();
    let _a = control.create_tunnel(TunnelOptions::new()).await.unwrap();
    let _b = control.create_tunnel(TunnelOptions::new()).await.unwrap();
    let err = control
        .create_tunnel(TunnelOptions::new())
        .await
        .unwrap_err();
    assert_eq!(
        err.engine_code(),
        Some(proto::ErrorCode::CapacityExhausted as i32),
        "{err}"
    );
    assert!(err.is_transient());
    assert!(!control.is_closed());
}

/// Right after a loss the engine may still hold the previous connection's
/// tunnel (same name): such refusals are retried within the grace period,
/// with the same (sticky) properties, until the name is free.
#[tokio::test]
async fn name_conflicts_right_after_a_loss_are_retried() {
    support::init_tracing();
    let engine = Scripted::start().await;
    let client = engine.client().disable_heartbeats().build().unwrap();
    let (control, mut peer) = engine.open(client.connect_with(quick()), None).await;
    let control = control.unwrap();
    let (tunnel, ()) = tokio::join!(
        control.create_tunnel(TunnelOptions::new().name("ghost")),
        async {
            let r = next_open(&mut peer).await;
            let mut p = r.tunnel_properties.unwrap();
            p.id = Some("ghost-1".into());
            peer.send(tunnel_ok(r.request_id, p)).await;
        }
    );
    let tunnel = tunnel.unwrap();
    drop(peer);
    let mut peer = within("reconnect", engine.accept()).await;
    peer.open_ok(None).await;
    for _ in 0..2 {
        let r = next_open(&mut peer).await;
        assert_eq!(r.tunnel_properties.unwrap().name.as_deref(), Some("ghost"));
        peer.send(tunnel_err(r.request_id, proto::ErrorCode::InvalidRequest))
            .await;
        assert!(matches!(
            &*control.status().borrow(),
            ConnectionStatus::Reconnecting { .. }
        ));
    }
    let r = next_open(&mut peer).await;
    let mut p = r.tunnel_properties.unwrap();
    p.id = Some("ghost-2".into());
    peer.send(tunnel_ok(r.request_id, p)).await;
    let mut status = control.status();
    wait_status(&mut status, "connected", ConnectionStatus::is_connected).await;
    assert_eq!(tunnel.id(), "ghost-2");
    assert!(!tunnel.is_closed());
}

/// Waits until a fresh strict dial of `tunnel` succeeds (refused ones are
/// retried: the engine notices released connections asynchronously).
async fn dial_until_served(client: &rstream::Client, tunnel: &str) -> RstreamStream {
    within("served again", async {
        loop {
            match client
                .dial_with(tunnel, DialOptions::new().zero_rtt(false))
                .await
            {
                Ok(stream) => break stream,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await
}

/// Whether the engine closes `tcp` at once: EOF (or a reset) well before
/// the 10 s TLS-handshake timeout an admitted idle connection gets.
async fn closed_at_once(tcp: &mut TcpStream) {
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let read = within("refused connection closed", tcp.read(&mut buf)).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed only after {:?}",
        started.elapsed()
    );
}

/// The engine port holds at most `max_connections` *established*
/// connections at once: with 3 held (two control channels and a dial),
/// another control channel is refused with `CAPACITY_EXHAUSTED` and a dial
/// fails fast, while idle sockets that never authenticate take none of
/// them and the held ones stay up; once the dial closes, dials are served
/// again.
#[tokio::test]
async fn the_engine_port_bounds_concurrent_connections() {
    support::init_tracing();
    let engine = LocalEngine::builder()
        .max_connections(3)
        .start()
        .await
        .unwrap();
    let client = options(&engine).build().unwrap();
    let control = client.connect().await.unwrap();
    let _echo = spawn_echo(
        control
            .create_tunnel(TunnelOptions::new().name("bounded"))
            .await
            .unwrap(),
    );
    // Unauthenticated: counted apart, not under `max_connections`.
    let mut idle = Vec::new();
    for _ in 0..7 {
        idle.push(TcpStream::connect(engine.local_addr()).await.unwrap());
    }
    let second = client.connect().await.unwrap();
    let held = dial_until_served(&client, "bounded").await;

    let started = Instant::now();
    let err = within("control channel refused", client.connect())
        .await
        .unwrap_err();
    assert_eq!(
        err.engine_code(),
        Some(proto::ErrorCode::CapacityExhausted as i32),
        "{err}"
    );
    let err = within(
        "dial refused",
        client.dial_with("bounded", DialOptions::new().zero_rtt(false)),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.engine_code(),
        Some(proto::ErrorCode::CapacityExhausted as i32),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused only after {:?}: {err}",
        started.elapsed()
    );
    // The idle ones are untouched (still within their admission deadline).
    let mut buf = [0u8; 1];
    let open = tokio::time::timeout(Duration::from_millis(300), idle[0].read(&mut buf)).await;
    assert!(open.is_err(), "an idle connection was closed: {open:?}");
    assert!(control.status().borrow().is_connected());
    assert!(second.status().borrow().is_connected());

    // Room again once the dial closes.
    drop(held);
    let stream = dial_until_served(&client, "bounded").await;
    assert_eq!(echo_round_trip(stream, b"again").await, b"again");
    assert!(control.status().borrow().is_connected());
    assert_eq!(engine.clients().len(), 2);
}

/// All published endpoints together hold at most
/// `max_published_connections` downstream connections: with 4 held, the
/// fifth is closed at once (its owner never hears of it) while the held
/// ones keep flowing; once two close, new ones are served again.
#[tokio::test]
async fn published_endpoints_bound_concurrent_connections() {
    async fn echoed(tcp: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
        tcp.write_all(msg).await?;
        let mut back = vec![0u8; msg.len()];
        tcp.read_exact(&mut back).await?;
        assert_eq!(back, msg);
        Ok(())
    }
    support::init_tracing();
    let engine = LocalEngine::builder()
        .max_published_connections(4)
        .start()
        .await
        .unwrap();
    let control = options(&engine).build().unwrap().connect().await.unwrap();
    let tunnel = control.create_tunnel(TunnelOptions::tcp()).await.unwrap();
    let addr = tunnel
        .forwarding_address()
        .trim_end_matches(" (tcp)")
        .to_owned();
    let _echo = spawn_echo(tunnel);
    let mut held = Vec::new();
    for i in 0..4 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        within(
            "held echo",
            echoed(&mut tcp, format!("held {i}").as_bytes()),
        )
        .await
        .unwrap();
        held.push(tcp);
    }
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    closed_at_once(&mut fifth).await;
    within("still flowing", echoed(&mut held[3], b"still"))
        .await
        .unwrap();

    held.truncate(2);
    within("served again", async {
        loop {
            let mut tcp = TcpStream::connect(&addr).await.unwrap();
            match echoed(&mut tcp, b"again").await {
                Ok(()) => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
    .await;
    assert!(control.status().borrow().is_connected());
}

/// A proxy-connection flood beyond `proxy_handshake_limits` (here the
/// smallest: 1 running + 0 queued), with handshakes that hang: the
/// connection is dropped with `ERR_RSTREAM_CONTROL_OVERLOAD` (seen in the
/// status), the channel reconnects and re-creates its tunnel; without
/// reconnect, the channel and the tunnel close with that error.
#[tokio::test]
async fn a_proxy_connection_flood_overloads_the_control_channel() {
    const OVERLOAD: &str = "ERR_RSTREAM_CONTROL_OVERLOAD";
    support::init_tracing();
    // Accepts TCP and then says nothing: every proxy handshake hangs.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let flood = |stream: usize| {
        Payload::ProxyConnReq(proto::ProxyConnReq {
            tunnel_id: "flood-1".into(),
            stream_id: format!("stream-{stream}"),
            secret: Some("per-stream-secret".into()),
            source_ip: None,
            proxy_endpoint: Some(silent_addr.to_string()),
        })
    };
    let answer_open = |r: proto::OpenTunnelReq, id: &str| {
        let mut p = r.tunnel_properties.unwrap();
        assert_eq!(p.name.as_deref(), Some("flood"));
        p.id = Some(id.into());
        tunnel_ok(r.request_id, p)
    };

    for policy in [quick(), ReconnectPolicy::disabled()] {
        let reconnects = policy.is_enabled();
        let engine = Scripted::start().await;
        let client = engine
            .client()
            .disable_heartbeats()
            .proxy_handshake_limits(1, 0)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let (control, mut peer) = engine.open(client.connect_with(policy), None).await;
        let control = control.unwrap();
        let (tunnel, ()) = tokio::join!(
            control.create_tunnel(TunnelOptions::new().name("flood")),
            async {
                let r = next_open(&mut peer).await;
                peer.send(answer_open(r, "flood-1")).await;
            }
        );
        let mut tunnel = tunnel.unwrap();
        let mut status = control.status();
        // The first handshake hangs (running); the second is one too many.
        peer.send(flood(1)).await;
        peer.send(flood(2)).await;
        // The client drops the connection.
        within("connection dropped", async {
            while let Ok(Some(m)) = proto::read_frame(&mut peer.io).await {
                assert!(
                    !matches!(m.payload, Some(Payload::ProxyConnRsp(_))),
                    "a hung handshake was answered"
                );
            }
        })
        .await;

        if reconnects {
            let lost = wait_status(&mut status, "reconnecting", |s| {
                matches!(s, ConnectionStatus::Reconnecting { .. })
            })
            .await;
            let ConnectionStatus::Reconnecting { last_error, .. } = lost else {
                unreachable!()
            };
            assert_eq!(last_error.code(), OVERLOAD, "{last_error}");
            assert!(
                last_error.to_string().contains("overloaded"),
                "{last_error}"
            );
            // Back, with the tunnel re-created.
            let mut peer = within("reconnect", engine.accept()).await;
            peer.open_ok(None).await;
            let r = next_open(&mut peer).await;
            peer.send(answer_open(r, "flood-2")).await;
            wait_status(&mut status, "connected", ConnectionStatus::is_connected).await;
            assert_eq!(tunnel.id(), "flood-2");
            assert!(!tunnel.is_closed());
        } else {
            let err = within("closed", control.closed()).await;
            assert_eq!(err.code(), OVERLOAD, "{err}");
            let err = within("tunnel closed", tunnel.accept()).await.unwrap_err();
            assert_eq!(err.code(), OVERLOAD, "{err}");
            assert!(matches!(
                &*status.borrow(),
                ConnectionStatus::Closed { error: Some(_) }
            ));
        }
    }
}

/// After the grace period, INVALID_REQUEST on re-creation is no longer
/// taken for the previous connection's ghost: the request that carried
/// the previous address is retried once at once without it, then the
/// tunnel closes with the error. The channel (and its other tunnels) carry
/// on. Grace here: operation timeout 1 s + 5 s.
#[tokio::test]
async fn invalid_request_after_the_grace_period_closes_the_tunnel() {
    support::init_tracing();
    let engine = Scripted::start().await;
    let client = engine
        .client()
        .disable_heartbeats()
        .operation_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let (control, mut peer) = engine.open(client.connect_with(quick()), None).await;
    let control = control.unwrap();
    let script = async {
        for _ in 0..2 {
            let r = next_open(&mut peer).await;
            let mut p = r.tunnel_properties.unwrap();
            let name = p.name.clone().unwrap();
            p.id = Some(format!("{name}-1"));
            p.hostname = Some(format!("{name}.example.test"));
            peer.send(tunnel_ok(r.request_id, p)).await;
        }
    };
    let (doomed, kept, ()) = tokio::join!(
        control.create_tunnel(TunnelOptions::http().name("doomed")),
        control.create_tunnel(TunnelOptions::http().name("kept")),
        script
    );
    let (mut doomed, kept) = (doomed.unwrap(), kept.unwrap());

    drop(peer);
    let lost_at = Instant::now();
    let mut peer = within("reconnect", engine.accept()).await;
    peer.open_ok(None).await;
    // "kept" is re-created; "doomed" is refused, every time.
    let mut refused = Vec::new();
    let script = async {
        loop {
            let r = next_open(&mut peer).await;
            let mut p = r.tunnel_properties.unwrap();
            if p.name.as_deref() == Some("kept") {
                p.id = Some("kept-2".into());
                peer.send(tunnel_ok(r.request_id, p)).await;
            } else {
                refused.push((lost_at.elapsed(), p.hostname.clone()));
                peer.send(tunnel_err(r.request_id, proto::ErrorCode::InvalidRequest))
                    .await;
            }
        }
    };
    let err = tokio::select! {
        r = within("doomed closed", doomed.accept()) => r.unwrap_err(),
        () = script => unreachable!(),
    };
    let closed_after = lost_at.elapsed();
    assert_eq!(
        err.engine_code(),
        Some(proto::ErrorCode::InvalidRequest as i32),
        "{err}"
    );
    assert!(
        closed_after >= Duration::from_secs(5) && closed_after < Duration::from_secs(9),
        "closed after {closed_after:?}"
    );
    // Retried during the grace period with the previous address, then
    // once without it, then given up.
    let (last_at, last_hostname) = refused.pop().expect("refusals");
    assert_eq!(last_hostname, None, "the last try dropped the address");
    assert!(last_at >= Duration::from_secs(5), "{last_at:?}");
    assert!(refused.len() >= 3, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|(_, h)| h.as_deref() == Some("doomed.example.test")),
        "{refused:?}"
    );
    let mut status = control.status();
    wait_status(&mut status, "connected", ConnectionStatus::is_connected).await;
    assert!(!control.is_closed());
    assert_eq!(kept.id(), "kept-2");
    assert!(!kept.is_closed());
}

// ---------------------------------------------------------------------------
// Admission on the engine port

/// The admission deadline the tests below give their engine.
const ADMISSION: Duration = Duration::from_secs(1);

/// Asserts the engine closed a connection at its admission deadline: not
/// before half of it (measured from after the client's TLS handshake),
/// not later than it plus 1 s of slack.
fn at_the_deadline(what: &str, after: Duration) {
    assert!(
        after >= ADMISSION / 2 && after <= ADMISSION + Duration::from_secs(1),
        "{what}: closed after {after:?}, admission deadline {ADMISSION:?}"
    );
}

/// Idle sockets on every ALPN (none, `rstrm/1`, `http/1.1`, `h2`, and one
/// that never starts TLS) are closed at the admission deadline, while an
/// established control channel stays; an agent then connects and dials.
#[tokio::test]
async fn idle_sockets_on_every_alpn_are_closed_at_the_admission_deadline() {
    support::init_tracing();
    let engine = LocalEngine::builder()
        .admission_timeout(ADMISSION)
        .start()
        .await
        .unwrap();
    let client = options(&engine).build().unwrap();
    let control = client.connect().await.unwrap();
    let before = engine.clients();

    let alpns: [&[&[u8]]; 4] = [&[], &[proto::ALPN], &[b"http/1.1"], &[b"h2"]];
    let tls_idle = alpns.map(|alpn| {
        let engine = &engine;
        async move {
            let mut tls = flood::engine_tls(engine, alpn).await;
            let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            assert_eq!(negotiated.as_deref(), alpn.first().copied());
            (alpn, flood::closed_after(&mut tls, support::LIMIT).await)
        }
    });
    let tcp_idle = async {
        let mut tcp = TcpStream::connect(engine.local_addr()).await.unwrap();
        flood::closed_after(&mut tcp, support::LIMIT).await
    };
    let (closed, tcp_closed) = tokio::join!(futures_util::future::join_all(tls_idle), tcp_idle);
    for (alpn, after) in closed {
        let alpn: Vec<_> = alpn.iter().map(|p| String::from_utf8_lossy(p)).collect();
        at_the_deadline(&format!("TLS with ALPN {alpn:?}"), after);
    }
    at_the_deadline("TCP without TLS", tcp_closed);

    // The authenticated channel is not subject to the deadline.
    assert_eq!(engine.clients(), before);
    assert!(control.status().borrow().is_connected());
    let _echo = spawn_echo(
        control
            .create_tunnel(TunnelOptions::new().name("after-idle"))
            .await
            .unwrap(),
    );
    let stream = within("dial", client.dial("after-idle")).await.unwrap();
    assert_eq!(echo_round_trip(stream, b"in").await, b"in");
}

/// Engine API: an `http/1.1` connection that sends half a request head
/// and stops is closed at the admission deadline; one whose request was
/// authorized stays open (keep-alive) past it, while one whose request was
/// refused (401) is closed at the deadline.
#[tokio::test]
async fn engine_api_half_request_head_is_closed_at_the_admission_deadline() {
    /// Sends `head` and reads one response head (bodies are empty here).
    async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        io: &mut S,
        head: &str,
    ) -> String {
        io.write_all(head.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            let n = within("response", io.read(&mut byte)).await.unwrap();
            assert_eq!(
                n,
                1,
                "closed mid-response: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.push(byte[0]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }
    support::init_tracing();
    let engine = LocalEngine::builder()
        .token("api-token")
        .admission_timeout(ADMISSION)
        .start()
        .await
        .unwrap();
    let authorized = "GET /api/auth HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer api-token\r\n\r\n";

    let half = async {
        let mut tls = flood::engine_tls(&engine, &[b"http/1.1"]).await;
        tls.write_all(b"GET /api/tunnels HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        flood::closed_after(&mut tls, support::LIMIT).await
    };
    let refused = async {
        let mut tls = flood::engine_tls(&engine, &[b"http/1.1"]).await;
        let rsp = exchange(&mut tls, "GET /api/auth HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(rsp.starts_with("HTTP/1.1 401"), "{rsp}");
        flood::closed_after(&mut tls, support::LIMIT).await
    };
    let kept = async {
        let mut tls = flood::engine_tls(&engine, &[b"http/1.1"]).await;
        let rsp = exchange(&mut tls, authorized).await;
        assert!(rsp.starts_with("HTTP/1.1 204"), "{rsp}");
        tokio::time::sleep(ADMISSION * 2).await;
        let rsp = exchange(&mut tls, authorized).await;
        assert!(rsp.starts_with("HTTP/1.1 204"), "{rsp}");
    };
    let (half, refused, ()) = tokio::join!(half, refused, kept);
    at_the_deadline("half a request head", half);
    at_the_deadline("a refused request", refused);
}

/// With `max_unauthenticated_connections` (16) filled by idle sockets that
/// are reopened as soon as the engine closes them (every ALPN, and with
/// tokens configured, control-channel requests without a token), an
/// authenticated agent still connects, creates a tunnel and dials it: its
/// fresh connection evicts the oldest idle one, and stays until the flood
/// has opened 16 more. The flood holds 24 sockets for 16 places, so it
/// churns on its own all along (each reopened socket evicts another).
/// `max_connections` (8) is not touched by the flood.
#[tokio::test]
async fn a_reconnecting_flood_of_unauthenticated_sockets_does_not_lock_agents_out() {
    support::init_tracing();
    for token in [None, Some("agent-token")] {
        let mut builder = LocalEngine::builder()
            .max_unauthenticated_connections(16)
            .max_connections(8);
        if let Some(token) = token {
            builder = builder.token(token);
        }
        let engine = builder.start().await.unwrap();
        let mut agent = options(&engine);
        if let Some(token) = token {
            agent = agent.token(token);
        }
        let client = agent.build().unwrap();

        let (count, time) = (20_000, Duration::from_secs(30));
        let mut floods = vec![
            Flood::start(&engine, 8, Idle::Tcp, count, time).await,
            Flood::start(&engine, 4, Idle::Tls(&[]), count, time).await,
            Flood::start(&engine, 4, Idle::Tls(&[proto::ALPN]), count, time).await,
            Flood::start(&engine, 2, Idle::Tls(&[b"http/1.1"]), count, time).await,
            Flood::start(&engine, 2, Idle::Tls(&[b"h2"]), count, time).await,
        ];
        // Refused at once, reopened at once: a churning flood that has no
        // token to present (without tokens, such requests would be agents).
        let extra = if token.is_some() {
            Idle::NoToken
        } else {
            Idle::Tls(&[])
        };
        floods.push(Flood::start(&engine, 4, extra, count, time).await);
        let in_place: usize = floods.iter().map(Flood::opened).sum();

        // Each of the agent's connections (control channel, dial, the
        // owner's proxy connection) has the time the flood takes to open
        // 16 sockets to prove itself; one that loses that race is retried,
        // as any client would.
        let started = Instant::now();
        let mut attempts = 0;
        let control = within("agent connects", async {
            loop {
                attempts += 1;
                match client.connect().await {
                    Ok(control) => break control,
                    Err(e) => eprintln!("connect attempt {attempts} failed: {e}"),
                }
            }
        })
        .await;
        let _echo = spawn_echo(
            control
                .create_tunnel(TunnelOptions::new().name("through-the-flood"))
                .await
                .unwrap(),
        );
        within("dial", async {
            loop {
                attempts += 1;
                let dialed = client
                    .dial_with("through-the-flood", DialOptions::new().zero_rtt(false))
                    .await;
                let mut stream = match dialed {
                    Ok(stream) => stream,
                    Err(e) => {
                        eprintln!("dial attempt {attempts} failed: {e}");
                        continue;
                    }
                };
                let mut back = [0u8; 7];
                let echoed = async {
                    stream.write_all(b"through").await?;
                    stream.read_exact(&mut back).await
                };
                match echoed.await {
                    Ok(_) if &back == b"through" => break,
                    other => eprintln!("dial attempt {attempts}: no echo: {other:?}"),
                }
            }
        })
        .await;
        let took = started.elapsed();
        let opened: usize = floods.iter().map(Flood::opened).sum();
        for f in &floods {
            f.stop();
        }
        eprintln!(
            "token {token:?}: agent in after {took:?} and {attempts} connections, while the flood opened {} connections",
            opened - in_place
        );
        // The flood kept reopening sockets all along.
        assert!(opened > in_place + 16, "{opened} <= {in_place} + 16");
        assert!(control.status().borrow().is_connected());
    }
}

/// With `max_connections` (8) smaller than the published downstreams held
/// at once (24, each echoed through its own proxy connection), the owner
/// still opens a new control channel and dials a private tunnel: proxy
/// connections ride on their downstream's permit, not on the engine port's.
#[tokio::test]
async fn held_published_downstreams_do_not_lock_the_owner_out() {
    support::init_tracing();
    let engine = LocalEngine::builder()
        .max_connections(8)
        .start()
        .await
        .unwrap();
    let client = options(&engine).build().unwrap();
    let control = client.connect().await.unwrap();
    let tunnel = control.create_tunnel(TunnelOptions::tcp()).await.unwrap();
    let addr = tunnel
        .forwarding_address()
        .trim_end_matches(" (tcp)")
        .to_owned();
    let _echo = spawn_echo(tunnel);
    let mut held = Vec::new();
    for i in 0..24 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let msg = format!("held {i}");
        tcp.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        within("held echo", tcp.read_exact(&mut back))
            .await
            .unwrap();
        assert_eq!(back, msg.as_bytes());
        held.push(tcp);
    }

    let again = within("new control channel", client.connect())
        .await
        .unwrap();
    let _private = spawn_echo(
        again
            .create_tunnel(TunnelOptions::new().name("owner-private"))
            .await
            .unwrap(),
    );
    let stream = within("dial", client.dial("owner-private")).await.unwrap();
    assert_eq!(echo_round_trip(stream, b"owner").await, b"owner");
    // Every held downstream still flows.
    for tcp in &mut held {
        tcp.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        within("still flowing", tcp.read_exact(&mut back))
            .await
            .unwrap();
        assert_eq!(&back, b"ping");
    }
    assert!(control.status().borrow().is_connected());
    assert_eq!(engine.clients().len(), 2);
}

// ---------------------------------------------------------------------------
// forward_to bounds

/// A loopback listener that never accepts and whose accept queue is full
/// (backlog 0 plus fillers): further connects get no SYN-ACK and hang,
/// like a local service that is wedged. Returns it with the fillers.
async fn wedged_listener() -> (tokio::net::TcpListener, Vec<TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let probe = tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await;
    assert!(probe.is_err(), "the listener still completes connects");
    (listener, fillers)
}

/// `forward_to` to a local service that never completes the TCP handshake
/// gives up on that connection after its connect timeout (shortened to
/// 300 ms here; default `DEFAULT_FORWARD_CONNECT_TIMEOUT`, 10 s) and closes
/// the downstream, instead of holding it forever.
#[tokio::test]
async fn forward_to_gives_up_on_a_wedged_local_service() {
    use rstream::tunnel::{ForwardOptions, DEFAULT_FORWARD_CONNECT_TIMEOUT};
    assert_eq!(DEFAULT_FORWARD_CONNECT_TIMEOUT, Duration::from_secs(10));
    let engine = support::engine().await;
    let client = options(&engine).build().unwrap();
    let control = client.connect().await.unwrap();
    let (wedged, _fillers) = wedged_listener().await;
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("fwd-wedged"))
        .await
        .unwrap();
    let timeout = Duration::from_millis(300);
    let target = wedged.local_addr().unwrap().to_string();
    tokio::spawn(tunnel.forward_to_with(target, ForwardOptions::new().connect_timeout(timeout)));
    for _ in 0..2 {
        let mut s = client.dial("fwd-wedged").await.unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        let _ = within("closed after the connect timeout", s.read_to_end(&mut buf)).await;
        let took = started.elapsed();
        assert!(buf.is_empty());
        assert!(
            took >= timeout - Duration::from_millis(50),
            "closed after {took:?}"
        );
        assert!(took < timeout * 5, "closed after {took:?}");
    }
    drop(wedged);
}

/// With `max_relays(2)`, a third downstream waits (it is not relayed) until
/// one of the first two ends, then it is served; nothing is dropped.
#[tokio::test]
async fn forward_to_caps_concurrent_relays() {
    use rstream::tunnel::{ForwardOptions, DEFAULT_MAX_RELAYS};
    assert_eq!(DEFAULT_MAX_RELAYS, 1024);
    let engine = support::engine().await;
    let client = options(&engine).build().unwrap();
    let control = client.connect().await.unwrap();
    let local = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_addr = local.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        // An echo service that holds every connection until the peer ends it.
        loop {
            let (mut sock, _) = local.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = sock.read(&mut buf).await {
                    if sock.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("fwd-capped"))
        .await
        .unwrap();
    tokio::spawn(
        tunnel.forward_to_with(local_addr.to_string(), ForwardOptions::new().max_relays(2)),
    );

    async fn echo(s: &mut RstreamStream, msg: &[u8]) {
        s.write_all(msg).await.unwrap();
        let mut back = vec![0; msg.len()];
        within("echo", s.read_exact(&mut back)).await.unwrap();
        assert_eq!(back, msg);
    }
    let mut first = client.dial("fwd-capped").await.unwrap();
    echo(&mut first, b"one").await;
    let mut second = client.dial("fwd-capped").await.unwrap();
    echo(&mut second, b"two").await;
    let mut third = client.dial("fwd-capped").await.unwrap();
    third.write_all(b"three").await.unwrap();
    let mut back = [0u8; 5];
    let waited =
        tokio::time::timeout(Duration::from_millis(500), third.read_exact(&mut back)).await;
    assert!(waited.is_err(), "a third relay ran past the cap");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // One relay ends: the third downstream is accepted and relayed.
    first.shutdown().await.unwrap();
    drop(first);
    within("third relayed", third.read_exact(&mut back))
        .await
        .unwrap();
    assert_eq!(&back, b"three");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    echo(&mut second, b"still").await;
}
