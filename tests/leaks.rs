//! No leaks: after thousands of proxied HTTP connections and a thousand
//! private dials, open file descriptors and live tasks return to their
//! baseline (client and engine share this process and runtime, so both are
//! counted).
//!
//! 10,000 HTTP connections (each a new downstream TLS connection and a new
//! proxy connection) and 1,000 dials; `RSTREAM_LEAK_QUICK=1` runs 2,000
//! connections instead, for quick local runs. The only test in this
//! binary, so that nothing else moves the counters.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rstream::TunnelOptions;
use support::{echo_round_trip, spawn_echo};
use tokio::net::TcpStream;

const CONCURRENCY: usize = 16;
/// Slack for runtime-internal descriptors and tasks (timers, the blocking pool).
const TOLERANCE: usize = 4;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// Waits (up to 10 s) for both counters to come back near `baseline`.
async fn settle(baseline: (usize, usize)) -> (usize, usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = (open_fds(), alive_tasks());
        if (now.0 <= baseline.0 + TOLERANCE && now.1 <= baseline.1 + TOLERANCE)
            || Instant::now() > deadline
        {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One request on a new HTTPS connection, closed afterwards.
async fn get_once(authority: &str, tls: &tokio_rustls::TlsConnector) {
    let tcp = TcpStream::connect(authority).await.expect("tcp");
    tcp.set_nodelay(true).ok();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let io = tls.connect(name, tcp).await.expect("tls");
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("handshake");
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", authority)
        .header("connection", "close")
        .body(Empty::<Bytes>::new())
        .expect("request");
    let rsp = send.send_request(req).await.expect("response");
    assert!(rsp.status().is_success());
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"ok");
    drop(send);
    let _ = conn.await;
}

/// Runs `n` jobs, `CONCURRENCY` at a time.
async fn run<F, Fut>(n: usize, job: F)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (next, job) = (next.clone(), job.clone());
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                job().await;
            }
        });
    }
    while let Some(r) = workers.join_next().await {
        r.expect("worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptors_and_tasks_return_to_baseline() {
    let quick = std::env::var_os("RSTREAM_LEAK_QUICK").is_some_and(|v| v != "0");
    let (connections, dials) = if quick {
        (2_000, 1_000)
    } else {
        (10_000, 1_000)
    };
    let engine = support::engine().await;
    let client = support::client(&engine);
    let control = client.connect().await.unwrap();
    let web = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    let authority = support::authority(&web.forwarding_address());
    let serve = tokio::spawn(async move {
        axum::serve(web, Router::new().route("/", get(|| async { "ok" }))).await
    });
    let _echo = spawn_echo(
        control
            .create_tunnel(TunnelOptions::new().name("echo"))
            .await
            .unwrap(),
    );
    let tls =
        tokio_rustls::TlsConnector::from(support::tls_config(engine.ca_pem(), &[b"http/1.1"]));

    // Warm up (TLS session caches, lazily created runtime resources).
    for _ in 0..20 {
        get_once(&authority, &tls).await;
        assert_eq!(
            echo_round_trip(client.dial("echo").await.unwrap(), b"w").await,
            b"w"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = (open_fds(), alive_tasks());

    let started = Instant::now();
    let (a, t) = (authority.clone(), tls.clone());
    // Hang guards, not performance bounds (those live in benches/): on a
    // loaded 2-core machine 10,000 connections have taken over 120 s.
    tokio::time::timeout(
        Duration::from_secs(600),
        run(connections, move || {
            let (a, t) = (a.clone(), t.clone());
            async move { get_once(&a, &t).await }
        }),
    )
    .await
    .expect("connections within 600 s");
    let http_time = started.elapsed();
    let started = Instant::now();
    let c = client.clone();
    tokio::time::timeout(
        Duration::from_secs(300),
        run(dials, move || {
            let c = c.clone();
            async move {
                let back = echo_round_trip(c.dial("echo").await.expect("dial"), b"leak?").await;
                assert_eq!(back, b"leak?");
            }
        }),
    )
    .await
    .expect("dials within 300 s");
    let dial_time = started.elapsed();

    let after = settle(baseline).await;
    eprintln!(
        "{connections} HTTP connections in {http_time:?}, {dials} dials in {dial_time:?}; \
         fds {} -> {}, tasks {} -> {}",
        baseline.0, after.0, baseline.1, after.1
    );
    assert!(
        after.0 <= baseline.0 + TOLERANCE,
        "fds: {} -> {}",
        baseline.0,
        after.0
    );
    assert!(
        after.1 <= baseline.1 + TOLERANCE,
        "tasks: {} -> {}",
        baseline.1,
        after.1
    );
    assert!(!serve.is_finished());
    assert!(control.status().borrow().is_connected());
}
