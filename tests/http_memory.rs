//! Bounded memory: a 100 MiB upload and a 100 MiB download stream through a
//! published tunnel (hyper over rustls to the local engine's HTTPS address,
//! `axum::serve(tunnel, router)` in the app) while the process's peak
//! resident memory grows by far less than the bytes transferred.
//!
//! Client, engine and app share this process, so the bound covers all three.
//! The size is always 100 MiB (no environment override): the test exists to
//! prove that claim. Memory comes from `/proc/self/status` (Linux); without
//! it the test fails rather than skips. The only test in this binary, so
//! nothing else moves the counters.

mod support;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rstream::TunnelOptions;
use support::{authority, client, engine, tls_connect};

/// Bytes each way in the measured transfer.
const MIB: usize = 100;
/// Bytes each way in the warm-up transfer (allocator pools, TLS buffers,
/// flow-control windows all exist before the baseline is taken).
const WARM_UP_MIB: usize = 4;
/// Allowed growth of peak resident memory over the baseline, for client,
/// engine and app together, while 200 MiB go through. Measured: 1-3 MiB
/// (debug build, Linux); a server that buffers the upload grows ~200 MiB.
const BOUND_MIB: u64 = 16;
/// The receiving side (the app on upload, the client on download) pauses
/// for [`PAUSE`] after every `PAUSE_EVERY` bytes, so the sender runs ahead
/// and every buffer on the path (TLS, engine, tunnel stream) fills to
/// whatever limit it has: backpressure, not a fast reader, must bound memory.
const PAUSE_EVERY: usize = 4 << 20;
const PAUSE: Duration = Duration::from_millis(40);
/// Upper bound on each transfer, so a stall fails instead of hanging CI.
const TRANSFER_LIMIT: Duration = Duration::from_secs(120);

fn app() -> Router {
    Router::new()
        .route(
            "/upload",
            post(|body: axum::body::Body| async move {
                let mut stream = body.into_data_stream();
                let mut n = 0usize;
                while let Some(chunk) = stream.next().await {
                    let len = chunk.expect("upload chunk").len();
                    slow_reader(n, len).await;
                    n += len;
                }
                n.to_string()
            }),
        )
        .route(
            "/download/{mib}",
            get(
                |axum::extract::Path(mib): axum::extract::Path<usize>| async move {
                    let chunk = Bytes::from(vec![7u8; 1 << 20]);
                    let stream = futures_util::stream::iter(
                        (0..mib).map(move |_| Ok::<_, Infallible>(chunk.clone())),
                    );
                    axum::body::Body::from_stream(stream)
                },
            ),
        )
}

/// Pauses when a chunk of `len` bytes after `seen` crosses a `PAUSE_EVERY`
/// boundary.
async fn slow_reader(seen: usize, len: usize) {
    if (seen + len) / PAUSE_EVERY > seen / PAUSE_EVERY {
        tokio::time::sleep(PAUSE).await;
    }
}

/// One field of `/proc/self/status`, in KiB. Panics (never skips) when the
/// file or the field is missing.
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status is required to measure memory (Linux only)");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{field} missing from /proc/self/status"))
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{field} in /proc/self/status: {e}"))
}

/// Resets VmHWM to the current VmRSS (Linux >= 4.0). Returns false when the
/// kernel refuses; VmHWM then still holds the peak since process start, which
/// only overstates the growth measured against the current VmRSS.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Uploads `mib` MiB, streamed from a generator that reuses one 1 MiB chunk.
async fn upload(url: &str, ca_pem: &str, mib: usize) {
    let tls = tls_connect(url, ca_pem, &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let chunk = Bytes::from(vec![1u8; 1 << 20]);
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(
        (0..mib).map(move |_| Ok::<_, Infallible>(hyper::body::Frame::data(chunk.clone()))),
    ));
    let req = http::Request::post("/upload")
        .header("host", authority(url))
        .body(body)
        .expect("request");
    let text = tokio::time::timeout(TRANSFER_LIMIT, async {
        let rsp = send.send_request(req).await.expect("upload response");
        assert_eq!(rsp.status(), 200);
        rsp.into_body().collect().await.expect("body").to_bytes()
    })
    .await
    .expect("upload within the limit");
    assert_eq!(text, (mib << 20).to_string());
}

/// Downloads `mib` MiB, counting frame by frame (never buffering the body).
async fn download(url: &str, ca_pem: &str, mib: usize) {
    let tls = tls_connect(url, ca_pem, &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(format!("/download/{mib}"))
        .header("host", authority(url))
        .body(Empty::<Bytes>::new())
        .expect("request");
    let n = tokio::time::timeout(TRANSFER_LIMIT, async {
        let rsp = send.send_request(req).await.expect("download response");
        assert_eq!(rsp.status(), 200);
        let mut body = rsp.into_body();
        let mut n = 0usize;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("download frame").into_data() {
                slow_reader(n, data.len()).await;
                n += data.len();
            }
        }
        n
    })
    .await
    .expect("download within the limit");
    assert_eq!(n, mib << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_each_way_with_bounded_peak_memory() {
    // Fail loudly before doing any work if the meter is unavailable.
    let _ = status_kib("VmHWM");

    let engine = engine().await;
    let control = client(&engine).connect().await.expect("connect");
    let tunnel = control
        .create_tunnel(TunnelOptions::http())
        .await
        .expect("tunnel");
    let url = tunnel.forwarding_address().to_owned();
    let server = support::serve_axum(tunnel, app());
    let ca = engine.ca_pem().to_owned();

    // Warm-up, then the baseline.
    let started = Instant::now();
    upload(&url, &ca, WARM_UP_MIB).await;
    download(&url, &ca, WARM_UP_MIB).await;
    let warm_up = started.elapsed();
    let warm_up_hwm = status_kib("VmHWM");
    let reset = reset_peak();
    let baseline_rss = status_kib("VmRSS");
    let baseline_hwm = status_kib("VmHWM");

    // The measured transfer: 100 MiB up, then 100 MiB down.
    let started = Instant::now();
    upload(&url, &ca, MIB).await;
    let up = started.elapsed();
    let started = Instant::now();
    download(&url, &ca, MIB).await;
    let down = started.elapsed();
    let peak = status_kib("VmHWM");
    let rss_after = status_kib("VmRSS");
    let growth_kib = peak.saturating_sub(baseline_rss);

    println!(
        "warm-up {WARM_UP_MIB} MiB each way in {warm_up:?}; \
         {MIB} MiB up in {up:?}, {MIB} MiB down in {down:?}; \
         VmHWM {warm_up_hwm} KiB, reset: {reset}; baseline VmRSS {baseline_rss} KiB (VmHWM {baseline_hwm} KiB); \
         peak VmHWM {peak} KiB; VmRSS after {rss_after} KiB; \
         peak growth {growth_kib} KiB ({:.1} MiB, bound {BOUND_MIB} MiB)",
        growth_kib as f64 / 1024.0
    );
    assert!(
        growth_kib < BOUND_MIB * 1024,
        "peak resident memory grew by {growth_kib} KiB while streaming {MIB} MiB each way \
         (bound {BOUND_MIB} MiB): bodies are being buffered"
    );
    assert!(!server.is_finished(), "axum::serve ended early");

    // The meter itself must see a body-sized buffer: touch 100 MiB and check
    // the peak moves, so a broken measurement cannot pass the test above.
    reset_peak();
    let before = status_kib("VmRSS");
    let buffer = std::hint::black_box(vec![1u8; MIB << 20]);
    let after = status_kib("VmHWM");
    drop(buffer);
    println!("meter check: VmRSS {before} KiB -> VmHWM {after} KiB with a {MIB} MiB buffer");
    assert!(
        after >= before + (MIB as u64 * 1024) * 9 / 10,
        "VmHWM did not see a {MIB} MiB allocation ({before} -> {after} KiB)"
    );
}
