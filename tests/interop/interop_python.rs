//! Runtime-protocol interop with the official Python SDK
//! (`rstreamlabs-rstream` 0.7, an independent implementation of the wire
//! protocol), through this crate's [`LocalEngine`].
//!
//! Each test starts a `LocalEngine` in-process and runs
//! `tests/interop/python_peer.py` with the interpreter named by
//! `RSTREAM_PYTHON` (one that can `import rstream`; `.ci/python-venv.sh`
//! makes one). Without it the tests fail, unless
//! `RSTREAM_SKIP_PYTHON_INTEROP=1` is set, in which case they say loudly
//! that they skipped. See `docs/INTEROP.md`.
//!
//! What crosses the SDK boundary:
//! - Python serves a private tunnel (banner + echo) and a published `http`
//!   tunnel (the SDK's ASGI helper); Rust dials the private one (by name and
//!   by id, zero-RTT on and off) and sends real HTTPS requests (hyper over
//!   tokio-rustls, trusting only the engine CA) to the published one. The
//!   Python client's own zero-RTT setting (its `ProxyReq`s) is run both ways.
//! - Rust serves a private tunnel (banner + echo); Python dials it (by name
//!   and by id, zero-RTT on, off and the client default), with the Rust
//!   client's zero-RTT setting (its `ProxyReq`s) run both ways.
//! - The engine as Python sees it: TLS 1.3, ALPN `rstrm/1`, a certificate
//!   chain that passes OpenSSL's strict X.509 checks, `UNAUTHORIZED` and
//!   `TUNNEL_NOT_FOUND` errors, clean tunnel and control-channel closes.
#![cfg(feature = "local-engine")]

use crate::support;
use crate::support::python::{self, Peer};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rstream::engine::LocalEngine;
use rstream::{Client, DialOptions, RstreamStream, TunnelOptions};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Bounds every single wait (a Python start, a dial, a request, an exit).
const LIMIT: Duration = Duration::from_secs(30);
/// The agent token the engine accepts and both SDKs present.
const TOKEN: &str = "interop-token";

// ---------------------------------------------------------------------------
// Python peer process

/// The interpreter, or `None` when the run explicitly opted out.
fn python() -> Option<PathBuf> {
    python::interpreter("Python runtime interop")
}

/// Runs `python_peer.py <command> --engine .. --ca .. --token .. <args>`.
fn spawn_peer(python: &Path, engine: &LocalEngine, command: &str, args: &[&str]) -> Peer {
    spawn_peer_with_token(python, engine, command, TOKEN, args)
}

fn spawn_peer_with_token(
    python: &Path,
    engine: &LocalEngine,
    command: &str,
    token: &str,
    args: &[&str],
) -> Peer {
    let engine_address = engine.engine_address();
    let ca = engine.ca_file().to_string_lossy().into_owned();
    let mut all = vec![
        command,
        "--engine",
        &engine_address,
        "--ca",
        &ca,
        "--token",
        token,
        "--deadline",
        "90",
    ];
    all.extend_from_slice(args);
    Peer::spawn(python, "python_peer.py", &all, LIMIT)
}

// ---------------------------------------------------------------------------
// Rust side helpers

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {LIMIT:?}: {what}"))
}

async fn start_engine() -> LocalEngine {
    LocalEngine::builder()
        .token(TOKEN)
        .start()
        .await
        .expect("the local engine starts")
}

/// A Rust client of `engine`, trusting the engine CA from its file.
fn rust_client(engine: &LocalEngine, zero_rtt: bool) -> Client {
    Client::builder()
        .engine(engine.engine_address())
        .token(TOKEN)
        .ca_file(engine.ca_file())
        .zero_rtt(zero_rtt)
        .build()
        .expect("client")
}

/// `n` deterministic bytes that do not repeat in short cycles.
fn pattern(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ (i as u8))
        .collect()
}

/// Talks to a banner + echo server on `stream`: reads the banner line while
/// writing `payload` (sent at once, so with zero-RTT it follows the
/// request frame), then reads the echo. Returns the banner (without `\n`).
async fn banner_echo(stream: RstreamStream, payload: &[u8]) -> String {
    let (rd, mut wr) = tokio::io::split(stream);
    let writer = async {
        wr.write_all(payload).await.expect("write");
        wr.flush().await.expect("flush");
        wr
    };
    let reader = async {
        let mut rd = BufReader::new(rd);
        let mut banner = String::new();
        rd.read_line(&mut banner).await.expect("banner");
        let mut back = vec![0u8; payload.len()];
        rd.read_exact(&mut back).await.expect("echo");
        (banner, back)
    };
    let (mut wr, (banner, back)) = tokio::join!(writer, reader);
    assert!(back == payload, "the echo differs from what was sent");
    let _ = wr.shutdown().await;
    banner.trim_end_matches('\n').to_owned()
}

/// One HTTPS request over a fresh connection to `authority` (`host:port`),
/// with hyper's HTTP/1.1 client over tokio-rustls, trusting only `ca_pem`
/// and offering ALPN `http/1.1`.
async fn https_request(
    authority: &str,
    ca_pem: &str,
    method: http::Method,
    path: &str,
    body: Bytes,
) -> http::Response<Bytes> {
    // Verified against the engine CA only.
    let tls = support::tls_connect(&format!("https://{authority}"), ca_pem, &[b"http/1.1"]).await;
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(&b"http/1.1"[..]),
        "the published endpoint must negotiate http/1.1"
    );
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    let conn = tokio::spawn(conn);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority)
        .body(Full::new(body))
        .expect("request");
    let response = sender.send_request(request).await.expect("HTTP response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("response body").to_bytes();
    drop(sender);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
    http::Response::from_parts(parts, body)
}

/// Polls `cond` (every 50 ms, up to `LIMIT`).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

// ---------------------------------------------------------------------------
// Python serves, Rust dials and fetches

async fn python_serves(proxy_zero_rtt: bool) {
    let Some(python) = python() else { return };
    let engine = start_engine().await;
    let z = if proxy_zero_rtt { "on" } else { "off" };
    let (private, published) = (format!("py-private-{z}"), format!("py-web-{z}"));
    let mut peer = spawn_peer(
        &python,
        &engine,
        "serve",
        &[
            "--zero-rtt",
            z,
            "--private",
            &private,
            "--published",
            &published,
        ],
    );

    // The tunnels as the Python SDK got them back from our engine.
    let priv_ev = peer.expect("tunnel").await;
    assert_eq!(priv_ev["kind"], "private");
    assert_eq!(priv_ev["name"], private.as_str());
    assert_eq!(
        priv_ev["forwarding_address"],
        format!("rstrm://{private} (unpublished)").as_str()
    );
    let private_id = priv_ev["id"].as_str().expect("tunnel id").to_owned();
    assert!(!private_id.is_empty());

    let pub_ev = peer.expect("tunnel").await;
    assert_eq!(pub_ev["kind"], "published");
    assert_eq!(pub_ev["name"], published.as_str());
    assert_eq!(pub_ev["protocol"], "http");
    assert_eq!(pub_ev["hostname"], "127.0.0.1");
    let port = pub_ev["port"].as_u64().expect("published port");
    let authority = format!("127.0.0.1:{port}");
    assert_eq!(
        pub_ev["forwarding_address"],
        format!("https://{authority}").as_str()
    );
    peer.expect("ready").await;

    // The engine's view of the Python client.
    let clients = engine.clients();
    assert_eq!(clients.len(), 1, "one control channel: {clients:?}");
    let details = &clients[0].details;
    assert_eq!(details.agent.as_deref(), Some("rstream-python-runtime"));
    assert_eq!(details.channel.as_deref(), Some("sdk"));
    assert_eq!(details.protocol_version.as_deref(), Some("1.4.5"));
    assert_eq!(details.token, None, "the engine must not keep the token");
    let liveness = clients[0]
        .liveness
        .as_ref()
        .expect("Python proposes liveness");
    assert_eq!(liveness.heartbeat_interval_ms, 1_000);
    assert!(liveness.heartbeat_timeout_ms >= 1_000);
    assert_eq!(engine.tunnels().len(), 2);

    // Rust dials the Python private tunnel: by name and by id, zero-RTT on
    // and off; bulk data far beyond one frame both ways.
    let client = rust_client(&engine, true);
    let expected_banner = format!("python {private}");
    for target in [private.as_str(), private_id.as_str()] {
        for dial_zero_rtt in [true, false] {
            let what = format!("Rust dial {target} (zero-RTT {dial_zero_rtt})");
            let stream = within(
                &what,
                client.dial_with(target, DialOptions::new().zero_rtt(dial_zero_rtt)),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut payload = format!("hello from rust via {target}\n").into_bytes();
            payload.extend(pattern(256 * 1024));
            let banner = within(&what, banner_echo(stream, &payload)).await;
            assert_eq!(banner, expected_banner, "{what}");
        }
    }

    // Real HTTPS requests from Rust to the Python-served published tunnel.
    let ca = engine.ca_pem().to_owned();
    let rsp = within(
        "HTTPS GET",
        https_request(
            &authority,
            &ca,
            http::Method::GET,
            "/hello?from=rust",
            Bytes::new(),
        ),
    )
    .await;
    assert_eq!(rsp.status(), http::StatusCode::OK);
    assert_eq!(rsp.headers()["x-served-by"], "rstream-python");
    let json: Value = serde_json::from_slice(rsp.body()).expect("JSON answer");
    assert_eq!(json["server"], "python");
    assert_eq!(json["tunnel"], published.as_str());
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/hello");
    assert_eq!(json["http_version"], "1.1");
    assert_eq!(json["body_len"], 0);

    let body = Bytes::from(pattern(100_000));
    let rsp = within(
        "HTTPS POST",
        https_request(&authority, &ca, http::Method::POST, "/upload", body.clone()),
    )
    .await;
    assert_eq!(rsp.status(), http::StatusCode::OK);
    let json: Value = serde_json::from_slice(rsp.body()).expect("JSON answer");
    assert_eq!(json["method"], "POST");
    assert_eq!(json["path"], "/upload");
    assert_eq!(json["body_len"], body.len());
    assert_eq!(json["body_sha256"], sha256_hex(&body).as_str());

    // Let a few more Python heartbeats (1 s interval) be acknowledged: an
    // out-of-rule ack would kill its control channel (`control_failed`).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        engine.clients().len(),
        1,
        "the Python client is still there"
    );

    // Python closes its tunnels and control channel; the engine answers both.
    let events = peer.finish_ok().await;
    let closed = events
        .iter()
        .find(|e| e["event"] == "closed")
        .unwrap_or_else(|| panic!("no closed event: {events:?}"));
    assert_eq!(closed["clean"], true, "{closed}");
    assert_eq!(closed["private_streams"], 4, "{closed}");
    assert_eq!(closed["http_requests"], 2, "{closed}");
    assert!(
        !events.iter().any(|e| e["event"] == "control_failed"),
        "{events:?}"
    );
    eventually("the engine forgets the Python tunnels and client", || {
        engine.tunnels().is_empty() && engine.clients().is_empty()
    })
    .await;
    engine.shutdown().await;
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_serves_with_zero_rtt_proxy_connections() {
    python_serves(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_serves_without_zero_rtt_proxy_connections() {
    python_serves(false).await;
}

// ---------------------------------------------------------------------------
// Rust serves, Python dials

async fn rust_serves(zero_rtt: bool) {
    let Some(python) = python() else { return };
    let engine = start_engine().await;
    let z = if zero_rtt { "on" } else { "off" };
    let name = format!("rs-private-{z}");

    // The Rust client's zero-RTT setting is what its ProxyReqs carry.
    let client = rust_client(&engine, zero_rtt);
    let control = within("Rust connect", client.connect())
        .await
        .expect("Rust control channel");
    let tunnel = within(
        "Rust create_tunnel",
        control.create_tunnel(TunnelOptions::new().name(name.clone())),
    )
    .await
    .expect("Rust private tunnel");
    assert_eq!(
        tunnel.forwarding_address(),
        format!("rstrm://{name} (unpublished)")
    );
    let id = tunnel.id().to_owned();
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = support::spawn_echo_with(tunnel, format!("rust {name}\n"), accepted.clone());

    // Python dials it: per-dial zero-RTT on, off, and the client-wide
    // default (set to the same value as the Rust side), by name and by id.
    let cases = [
        format!("{name}=on"),
        format!("{name}=off"),
        format!("{name}=default"),
        format!("{id}=on"),
        format!("{id}=off"),
    ];
    let mut args = vec![
        "--zero-rtt",
        z,
        "--bulk",
        "200000",
        "--send",
        "hello from python",
    ];
    for case in &cases {
        args.extend(["--case", case.as_str()]);
    }
    let mut peer = spawn_peer(&python, &engine, "dial", &args);
    for case in &cases {
        let (target, mode) = case.rsplit_once('=').unwrap();
        let ev = peer.expect("dialed").await;
        assert_eq!(ev["tunnel"], target, "{ev}");
        assert_eq!(ev["zero_rtt"], mode, "{ev}");
        assert_eq!(ev["banner"], format!("rust {name}").as_str(), "{ev}");
        assert_eq!(ev["echoed"], true, "{ev}");
        assert_eq!(ev["bytes"], 200_000 + "hello from python\n".len(), "{ev}");
    }
    peer.finish_ok().await;
    assert_eq!(accepted.load(Ordering::SeqCst), cases.len());

    within("Rust close", control.close())
        .await
        .expect("Rust control channel close");
    within("Rust echo server end", server)
        .await
        .expect("echo server task");
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_dials_rust_tunnel_with_zero_rtt() {
    rust_serves(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_dials_rust_tunnel_without_zero_rtt() {
    rust_serves(false).await;
}

// ---------------------------------------------------------------------------
// The engine as the Python SDK sees it: TLS, auth, errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sees_engine_tls_auth_and_errors() {
    let Some(python) = python() else { return };
    let engine = start_engine().await;

    // TLS as Python's ssl module does it (plus VERIFY_X509_STRICT, the
    // Python >= 3.13 default), then an SDK control channel open + close.
    let mut peer = spawn_peer(&python, &engine, "probe", &[]);
    let probe = peer.expect("probe").await;
    peer.finish_ok().await;
    assert_eq!(probe["alpn"], "rstrm/1", "{probe}");
    assert_eq!(probe["tls_version"], "TLSv1.3", "{probe}");
    assert_eq!(probe["strict_x509"], true, "{probe}");
    assert_eq!(probe["connect"]["ok"], true, "{probe}");
    assert!(probe["connect"]["server_details"].is_object(), "{probe}");

    // A wrong token: OpenControlChannelRsp.error UNAUTHORIZED (1000).
    let mut peer = spawn_peer_with_token(&python, &engine, "probe", "wrong-token", &[]);
    let probe = peer.expect("probe").await;
    peer.finish_ok().await;
    assert_eq!(probe["connect"]["ok"], false, "{probe}");
    assert_eq!(probe["connect"]["engine_code"], 1000, "{probe}");

    // Dialing a tunnel that does not exist: without zero-RTT the StreamRsp
    // carries TUNNEL_NOT_FOUND (3000); with zero-RTT the stream just ends.
    let mut peer = spawn_peer(
        &python,
        &engine,
        "dial",
        &[
            "--expect-failure",
            "--case",
            "no-such-tunnel=off",
            "--case",
            "no-such-tunnel=on",
        ],
    );
    let off = peer.expect("dial_failed").await;
    assert_eq!(off["engine_code"], 3000, "{off}");
    assert_eq!(off["code"], "ERR_RSTREAM_ENGINE", "{off}");
    let on = peer.expect("dial_failed").await;
    assert_eq!(on["zero_rtt"], "on", "{on}");
    assert_eq!(on["engine_code"], Value::Null, "{on}");
    peer.finish_ok().await;

    eventually("the engine forgets the Python clients", || {
        engine.clients().is_empty()
    })
    .await;
    engine.shutdown().await;
}
