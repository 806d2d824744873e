//! Hostile input: the property-test versions of the fuzz targets in
//! `fuzz/` (frame decoder, message decoding, config parsing, webhook
//! signature headers), and misbehaving peers against both the local
//! engine and the client: random bytes after the TLS handshake, a 4 GiB
//! length prefix, truncated frames, unknown members, valid frames of the
//! wrong kind at each step, peers that stop reading, peers that never
//! answer. See docs/RELIABILITY.md.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use prost::Message as _;
use rstream::engine::LocalEngine;
use rstream::proto::{
    self, check_len, decode_body, encode_frame, message::Payload, read_frame, write_frame,
    ClientDetails, Message, OpenControlChannelReq, MAX_FRAME_LEN,
};
use rstream::transport::{Endpoint, EngineStream};
use rstream::{ErrorKind, ReconnectPolicy, TunnelOptions};
use support::raw::{self, send};
use support::scripted::Scripted;
use support::within;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---------------------------------------------------------------------------
// A counting allocator (per thread), to show what is *not* allocated.

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the bookkeeping touches only
// const-initialized thread locals (no allocation, `try_with` never panics).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let size = layout.size();
        let _ = LIVE.try_with(|l| l.set(l.get() + size as isize));
        let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
        let live = LIVE.try_with(Cell::get).unwrap_or(0);
        let _ = PEAK.try_with(|p| p.set(p.get().max(live)));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = LIVE.try_with(|l| l.set(l.get() - layout.size() as isize));
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f`, returning its output and the largest single allocation this
/// thread made meanwhile.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|m| m.set(0));
    let out = f();
    (out, LARGEST.with(Cell::get))
}

/// Runs `f`, returning its output and the peak of this thread's live
/// heap bytes meanwhile, above what was live when it started.
fn peak_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = live_bytes();
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, (PEAK.with(Cell::get) - base).max(0) as usize)
}

fn live_bytes() -> isize {
    LIVE.with(Cell::get)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

// ---------------------------------------------------------------------------
// Property tests: the CI versions of the fuzz targets.

/// Reads frames from `bytes` until the end or an error; never panics.
fn drain_frames(rt: &tokio::runtime::Runtime, bytes: &[u8]) -> Vec<Message> {
    let mut r = bytes;
    let mut out = Vec::new();
    rt.block_on(async {
        while let Ok(Some(m)) = read_frame(&mut r).await {
            out.push(m);
        }
    });
    out
}

fn arb_payload() -> impl Strategy<Value = Payload> {
    let s = || "[ -~]{0,40}";
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(sequence, acknowledgement)| {
            Payload::Heartbeat(proto::Heartbeat {
                sequence,
                acknowledgement,
            })
        }),
        (s(), s(), proptest::option::of(s())).prop_map(|(tunnel_id, stream_id, secret)| {
            Payload::ProxyConnReq(proto::ProxyConnReq {
                tunnel_id,
                stream_id,
                secret,
                source_ip: None,
                proxy_endpoint: None,
            })
        }),
        (
            s(),
            proptest::option::of(s()),
            proptest::option::of(any::<bool>()),
            proptest::collection::btree_map(s(), s(), 0..4)
        )
            .prop_map(|(request_id, name, publish, labels)| {
                Payload::OpenTunnelReq(proto::OpenTunnelReq {
                    request_id,
                    tunnel_properties: Some(proto::TunnelProperties {
                        name,
                        publish,
                        labels: labels.into_iter().collect(),
                        ..Default::default()
                    }),
                })
            }),
        s().prop_map(|message| Payload::ServerMessage(proto::ServerMessage { message })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// `fuzz/fuzz_targets/frame_decoder.rs`
    #[test]
    fn frame_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let rt = rt();
        for m in drain_frames(&rt, &bytes) {
            prop_assert!(m.encoded_len() <= MAX_FRAME_LEN);
        }
    }

    /// The length rule, checked on the prefix alone.
    #[test]
    fn length_prefix_rule(len in any::<u32>()) {
        let checked = check_len(len.to_be_bytes());
        prop_assert_eq!(checked.is_ok(), len as usize <= MAX_FRAME_LEN);
        if let Err(e) = checked {
            prop_assert_eq!(e.code(), "ERR_RSTREAM_FRAME_TOO_LARGE");
        }
    }

    /// `fuzz/fuzz_targets/message_decode.rs`: any body either fails cleanly
    /// or decodes to a message that re-encodes to an equal message.
    #[test]
    fn message_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(msg) = decode_body(&bytes) {
            let frame = encode_frame(&msg).expect("a decoded message fits a frame");
            prop_assert_eq!(decode_body(&frame[4..]).expect("re-decodes"), msg);
        }
    }

    #[test]
    fn messages_round_trip(payload in arb_payload()) {
        let msg = Message::new(payload);
        let frame = encode_frame(&msg).expect("small");
        let rt = rt();
        prop_assert_eq!(drain_frames(&rt, &frame), vec![msg]);
    }

    /// `fuzz/fuzz_targets/config_parse.rs` (first half): engine addresses.
    #[test]
    fn endpoint_parse_never_panics(s in "\\PC{0,64}", host in "[a-z0-9.-]{0,20}", port in any::<u32>()) {
        let _ = Endpoint::parse(&s);
        if let Ok(e) = Endpoint::parse(&format!("{host}:{port}")) {
            prop_assert!(e.port() >= 1);
        }
    }

    /// `fuzz/fuzz_targets/webhook_signature_header.rs`
    #[test]
    fn signature_header_never_panics(s in "\\PC{0,128}", t in any::<u64>(), sig in "[0-9a-f]{64}", junk in "[ -~]{0,20}") {
        let _ = rstream::webhook::SignatureHeader::parse(&s);
        let header = format!(" v0={junk} , t={t},v1={sig}");
        let parsed = rstream::webhook::SignatureHeader::parse(&header).expect("well-formed header");
        prop_assert_eq!(parsed.timestamp(), t);
        prop_assert_eq!(parsed.signatures(), &[sig]);
    }
}

fn yaml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,24}",
        Just("null".to_owned()),
        Just("~".to_owned()),
        Just("[]".to_owned()),
        Just("{a: b}".to_owned()),
        Just("&a [*a]".to_owned()),
        Just("\"127.0.0.1:0\"".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
    ]
}

fn yaml_doc() -> impl Strategy<Value = String> {
    let keys = prop_oneof![
        Just("engine"),
        Just("token"),
        Just("context"),
        Just("contexts"),
        Just("environments"),
        Just("api_url"),
        Just("auth"),
        Just("transport"),
        Just("ca_file"),
        Just("insecure"),
        "[a-z_]{1,12}".prop_map(|s| Box::leak(s.into_boxed_str()) as &str),
    ];
    proptest::collection::vec((keys, yaml_value(), 0usize..3), 0..8).prop_map(|entries| {
        entries
            .into_iter()
            .map(|(k, v, indent)| format!("{}{k}: {v}\n", "  ".repeat(indent)))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    /// `fuzz/fuzz_targets/config_parse.rs` (second half): the config file,
    /// through the public entry point (`ClientOptions::config_file` +
    /// `resolve`), with YAML-shaped and arbitrary text. Errors are fine;
    /// panics are not.
    #[test]
    fn config_file_never_panics(doc in yaml_doc(), raw in "\\PC{0,200}") {
        let dir = std::env::temp_dir().join(format!("rstream-cfg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        for text in [doc, raw] {
            let path = dir.join("config.yaml");
            std::fs::write(&path, text).unwrap();
            let _ = rstream::ClientOptions::from_env_with(|_| None).config_file(&path).resolve();
            let _ = serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&std::fs::read_to_string(&path).unwrap());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Resolves a config file holding `text` through `RSTREAM_CONFIG`, as
/// `Client::from_env` reads it: the result, the peak heap growth on this
/// thread, and the time taken.
fn resolve_config_text(text: &str) -> (rstream::Result<()>, usize, Duration) {
    let dir = std::env::temp_dir().join(format!("rstream-bomb-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    let env_path = path.to_string_lossy().into_owned();
    let started = Instant::now();
    let (res, peak) = peak_allocation(|| {
        rstream::ClientOptions::from_env_with(move |k| {
            (k == "RSTREAM_CONFIG").then(|| env_path.clone())
        })
        .resolve()
        .map(drop)
    });
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    (res, peak, elapsed)
}

/// The alias bomb from issue 21: ~140 KB of YAML whose aliases expand to
/// 400 M nodes (`b` repeats the 25,000-element `a` 16,000 times), and the
/// worst case the byte cap allows (256 KiB of aliases, the most YAML events
/// per byte). Through `RSTREAM_CONFIG`, as `Client::from_env` reads it,
/// both fail with their own code, fast, with a peak heap bounded by the
/// text (the first pass stops at 100,000 nodes; nothing is expanded).
/// Measured (debug build): 9.8 MB peak for the bomb.
#[test]
fn config_alias_bomb_fails_fast_with_low_peak_memory() {
    let mut bomb = String::from("a: &a [");
    bomb.push_str(&"0, ".repeat(25_000));
    bomb.push_str("0]\nb: [");
    bomb.push_str(&"*a, ".repeat(16_000));
    bomb.push_str("*a]\n");
    let mut widest = String::from("a: &a [0]\nb: [");
    widest.push_str(&"*a, ".repeat((256 * 1024 - 32) / 4));
    widest.push_str("*a]\n");
    assert!(widest.len() <= 256 * 1024);
    for (what, text) in [("issue 21 bomb", bomb), ("256 KiB of aliases", widest)] {
        let (res, peak, elapsed) = resolve_config_text(&text);
        let err = res.unwrap_err();
        assert_eq!(
            err.code(),
            "ERR_RSTREAM_CONFIG_TOO_MANY_NODES",
            "{what}: {err}"
        );
        assert_eq!(err.kind(), ErrorKind::Config);
        println!(
            "{what}: {} bytes of YAML, peak heap {peak} bytes, {elapsed:?}",
            text.len()
        );
        assert!(elapsed < Duration::from_secs(5), "{what}: took {elapsed:?}");
        assert!(peak < 32 << 20, "{what}: peak heap {peak} bytes");
    }
    // One byte over the cap is refused before parsing.
    let (res, _, _) = resolve_config_text(&format!("a: '{}'\n", "x".repeat(256 * 1024)));
    assert_eq!(res.unwrap_err().code(), "ERR_RSTREAM_INVALID_CONFIG");
}

// ---------------------------------------------------------------------------
// Without allocation

#[test]
fn a_4_gib_length_prefix_is_rejected_without_allocation() {
    let rt = rt();
    for prefix in [[0xff, 0xff, 0xff, 0xff], [0x00, 0x01, 0x00, 0x00]] {
        let (res, largest) = largest_allocation(|| {
            rt.block_on(async {
                let mut r: &[u8] = &prefix;
                read_frame(&mut r).await
            })
        });
        assert_eq!(res.unwrap_err().code(), "ERR_RSTREAM_FRAME_TOO_LARGE");
        assert!(
            largest < 4096,
            "allocated {largest} bytes for a rejected frame"
        );
    }
}

// ---------------------------------------------------------------------------
// The local engine against hostile clients

async fn raw(engine: &LocalEngine) -> EngineStream {
    raw::dial(engine, None).await
}

fn details() -> ClientDetails {
    raw::details("hostile-input-test", None)
}

/// The engine still works for a well-behaved client.
async fn engine_still_serves(engine: &LocalEngine) {
    let client = support::client(engine);
    let control = within("connect", client.connect()).await.unwrap();
    let tunnel = within("create", control.create_tunnel(TunnelOptions::new()))
        .await
        .unwrap();
    let _echo = support::spawn_echo(tunnel);
    control.close().await.unwrap();
}

/// `n` labels with the longest keys and values allowed (padding that the
/// engine accepts and echoes): about 320 bytes each.
fn padding_labels(n: usize, fill: char) -> std::collections::HashMap<String, String> {
    (0..n)
        .map(|i| {
            (
                format!("{i:0>width$}", width = rstream::tunnel::MAX_LABEL_KEY_BYTES),
                fill.to_string()
                    .repeat(rstream::tunnel::MAX_LABEL_VALUE_BYTES),
            )
        })
        .collect()
}

fn random_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

/// Garbage, oversized, truncated, unknown and wrong first frames: the
/// engine closes each connection and keeps serving. The 4 GiB prefix costs
/// it no allocation (current-thread runtime: the engine runs on this
/// thread, so the counter sees it).
#[tokio::test]
async fn engine_survives_garbage_first_frames() {
    let engine = support::engine().await;
    let unknown_member: &[u8] = &[0, 0, 0, 3, 0x98, 0x06, 0x01];
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random_bytes(4096)),
        ("4 GiB length", vec![0xff, 0xff, 0xff, 0xff]),
        ("65536 length", vec![0, 1, 0, 0, 1, 2, 3]),
        ("truncated frame", vec![0, 0, 0, 10, 0x82, 0x01]),
        ("truncated prefix", vec![0, 0]),
        ("unknown member", unknown_member.to_vec()),
        ("empty message", vec![0, 0, 0, 0]),
    ];
    for wrong in [
        Payload::Heartbeat(proto::Heartbeat {
            sequence: 1,
            acknowledgement: 0,
        }),
        Payload::OpenTunnelReq(proto::OpenTunnelReq::default()),
        Payload::ProxyConnRsp(proto::ProxyConnRsp::default()),
        Payload::OpenControlChannelRsp(proto::OpenControlChannelRsp::default()),
        Payload::CloseControlChannelReq(proto::CloseControlChannelReq {}),
        Payload::StreamRsp(proto::StreamRsp::default()),
        Payload::ProxyRsp(proto::ProxyRsp::default()),
    ] {
        let name = wrong.name();
        cases.push((name, encode_frame(&Message::new(wrong)).unwrap().to_vec()));
    }
    for (what, bytes) in cases {
        let mut io = raw(&engine).await;
        LARGEST.with(|m| m.set(0));
        io.write_all(&bytes).await.unwrap();
        io.flush().await.unwrap();
        // Half-close: a truncated frame then meets EOF at once.
        let _ = io.shutdown().await;
        raw::expect_closed_within(&mut io, Duration::from_secs(5)).await;
        let largest = LARGEST.with(Cell::get);
        assert!(
            largest < 1 << 20,
            "{what}: largest allocation {largest} bytes"
        );
    }
    assert!(engine.clients().is_empty());
    engine_still_serves(&engine).await;
}

/// On an open control channel, frames of every wrong kind are ignored;
/// then a 4 GiB prefix ends that channel only.
#[tokio::test]
async fn engine_ignores_wrong_frames_on_an_open_control_channel() {
    let engine = support::engine().await;
    let mut io = raw(&engine).await;
    send(
        &mut io,
        Payload::OpenControlChannelReq(OpenControlChannelReq {
            client_details: Some(details()),
            liveness: None,
        }),
    )
    .await;
    match within("open", read_frame(&mut io))
        .await
        .unwrap()
        .and_then(|m| m.payload)
    {
        Some(Payload::OpenControlChannelRsp(rsp)) => {
            assert!(matches!(
                rsp.payload,
                Some(proto::open_control_channel_rsp::Payload::Ok(_))
            ))
        }
        other => panic!("{:?}", other.map(|p| p.name())),
    }
    let wrong = [
        Payload::OpenControlChannelReq(OpenControlChannelReq::default()),
        Payload::OpenControlChannelRsp(proto::OpenControlChannelRsp::default()),
        Payload::StreamReq(proto::StreamReq::default()),
        Payload::StreamRsp(proto::StreamRsp::default()),
        Payload::ProxyReq(proto::ProxyReq::default()),
        Payload::ProxyRsp(proto::ProxyRsp::default()),
        Payload::ProxyConnReq(proto::ProxyConnReq::default()),
        Payload::ProxyConnRsp(proto::ProxyConnRsp {
            stream_id: "nope".into(),
            error: None,
        }),
        Payload::OpenTunnelRsp(proto::OpenTunnelRsp::default()),
        Payload::CloseControlChannelRsp(proto::CloseControlChannelRsp {}),
        Payload::DatagramChannelClose(proto::DatagramChannelClose::default()),
        Payload::ServerMessage(proto::ServerMessage {
            message: "hi".into(),
        }),
    ];
    for p in wrong {
        raw::send(&mut io, p).await;
    }
    io.write_all(&[0, 0, 0, 3, 0x98, 0x06, 0x01, 0, 0, 0, 0])
        .await
        .unwrap();
    send(
        &mut io,
        Payload::OpenTunnelReq(proto::OpenTunnelReq {
            request_id: "after-the-noise".into(),
            tunnel_properties: Some(proto::TunnelProperties::default()),
        }),
    )
    .await;
    match within("answer", read_frame(&mut io))
        .await
        .unwrap()
        .and_then(|m| m.payload)
    {
        Some(Payload::OpenTunnelRsp(rsp)) => {
            assert_eq!(rsp.request_id, "after-the-noise");
            assert!(matches!(
                rsp.payload,
                Some(proto::open_tunnel_rsp::Payload::TunnelProperties(_))
            ));
        }
        other => panic!("expected OpenTunnelRsp, got {:?}", other.map(|p| p.name())),
    }
    assert_eq!(engine.clients().len(), 1);
    io.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    io.flush().await.unwrap();
    raw::expect_closed_within(&mut io, Duration::from_secs(5)).await;
    within("client removed", async {
        while !engine.clients().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    engine_still_serves(&engine).await;
}

/// A client that floods requests and never reads the answers: the engine
/// stops reading too (backpressure) instead of buffering without bound.
#[tokio::test]
async fn engine_backpressure_on_a_client_that_stops_reading() {
    support::init_tracing();
    let engine = LocalEngine::builder()
        .max_tunnels_per_client(4096)
        .start()
        .await
        .unwrap();
    // Small socket buffers on our side, so the engine meets backpressure soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    socket.set_send_buffer_size(8 * 1024).unwrap();
    let tcp = socket.connect(engine.local_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut io =
        tokio_rustls::TlsConnector::from(support::tls_config(engine.ca_pem(), &[proto::ALPN]))
            .connect(name, tcp)
            .await
            .unwrap();
    write_frame(
        &mut io,
        &Message::new(Payload::OpenControlChannelReq(OpenControlChannelReq {
            client_details: Some(details()),
            liveness: None,
        })),
    )
    .await
    .unwrap();
    let _ = within("open", read_frame(&mut io)).await.unwrap();
    let before = live_bytes();
    let started = Instant::now();
    let mut peak = 0isize;
    let mut sent = 0u32;
    let mut stalled = false;
    // Each request makes the engine answer ~20 KiB (the properties echoed):
    // the most labels allowed, at their longest.
    let labels = padding_labels(rstream::tunnel::MAX_LABELS, 'z');
    while started.elapsed() < Duration::from_secs(10) {
        sent += 1;
        let req = Message::new(Payload::OpenTunnelReq(proto::OpenTunnelReq {
            request_id: sent.to_string(),
            tunnel_properties: Some(proto::TunnelProperties {
                labels: labels.clone(),
                ..Default::default()
            }),
        }));
        match tokio::time::timeout(Duration::from_millis(500), write_frame(&mut io, &req)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("write failed: {e}"),
            Err(_) => {
                stalled = true;
                break;
            }
        }
        peak = peak.max(live_bytes() - before);
    }
    assert!(
        stalled,
        "the engine answered {sent} requests nobody read without stalling"
    );
    assert!(
        peak < 96 << 20,
        "memory grew by {peak} bytes after {sent} requests"
    );
    eprintln!(
        "engine stalled after {sent} unread answers; peak growth {} KiB",
        peak / 1024
    );
    drop(io);
    engine_still_serves(&engine).await;
}

/// Peers that never answer: no TLS ClientHello, no first frame. The engine
/// times both out (10 s each) and frees the connections.
#[tokio::test]
async fn engine_times_out_silent_peers() {
    let engine = support::engine().await;
    let mut tcp = tokio::net::TcpStream::connect(engine.local_addr())
        .await
        .unwrap();
    let mut tls = raw(&engine).await;
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let (a, b) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(13), tcp.read(&mut buf)),
        async {
            let mut buf = [0u8; 16];
            tokio::time::timeout(Duration::from_secs(13), tls.read(&mut buf)).await
        }
    );
    assert!(
        matches!(a, Ok(Ok(0) | Err(_))),
        "silent TCP peer kept: {a:?}"
    );
    assert!(
        matches!(b, Ok(Ok(0) | Err(_))),
        "silent TLS peer kept: {b:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(9));
    engine_still_serves(&engine).await;
}

// ---------------------------------------------------------------------------
// The client against a hostile engine

async fn scripted_connect(
    engine: &Scripted,
    opts: rstream::ClientOptions,
    answer: Vec<u8>,
) -> rstream::Result<rstream::ControlChannel> {
    let client = opts.build().unwrap();
    let (res, _peer) = tokio::join!(client.connect_with(ReconnectPolicy::disabled()), async {
        let mut peer = engine.accept().await;
        let _ = peer.recv().await;
        peer.send_raw(&answer).await;
        let _ = peer.io.shutdown().await;
        peer
    });
    res
}

/// Garbage, oversized, truncated, unknown and wrong answers to
/// `OpenControlChannelReq`: `connect` fails with a clear error, nothing
/// panics, nothing huge is allocated.
#[tokio::test]
async fn client_survives_hostile_open_answers() {
    support::init_tracing();
    let wrong = |p: Payload| encode_frame(&Message::new(p)).unwrap().to_vec();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", random_bytes(4096)),
        ("4 GiB length", vec![0xff, 0xff, 0xff, 0xff]),
        ("truncated", vec![0, 0, 0, 10, 0x82]),
        ("unknown member", vec![0, 0, 0, 3, 0x98, 0x06, 0x01]),
        (
            "heartbeat",
            wrong(Payload::Heartbeat(proto::Heartbeat::default())),
        ),
        (
            "stream rsp",
            wrong(Payload::StreamRsp(proto::StreamRsp::default())),
        ),
        (
            "open tunnel rsp",
            wrong(Payload::OpenTunnelRsp(proto::OpenTunnelRsp::default())),
        ),
        (
            "neither ok nor error",
            wrong(Payload::OpenControlChannelRsp(
                proto::OpenControlChannelRsp::default(),
            )),
        ),
        ("nothing", Vec::new()),
    ];
    for (what, answer) in cases {
        let engine = Scripted::start().await;
        LARGEST.with(|m| m.set(0));
        let err = within(what, scripted_connect(&engine, engine.client(), answer))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err.kind(),
                ErrorKind::Protocol | ErrorKind::Io | ErrorKind::Tls
            ),
            "{what}: {err}"
        );
        let largest = LARGEST.with(Cell::get);
        assert!(largest < 1 << 20, "{what}: largest allocation {largest}");
    }
}

/// Valid frames of the wrong kind on an open channel are ignored; garbage
/// mid-session is a protocol error that ends the channel (no reconnect for
/// protocol errors), cleanly.
#[tokio::test]
async fn client_survives_wrong_frames_and_garbage_mid_session() {
    support::init_tracing();
    let engine = Scripted::start().await;
    let client = engine.client().disable_heartbeats().build().unwrap();
    let (control, mut peer) = tokio::join!(client.connect(), async {
        let mut peer = engine.accept().await;
        peer.open_ok(None).await;
        peer
    });
    let control = control.unwrap();
    for p in [
        Payload::OpenControlChannelReq(OpenControlChannelReq::default()),
        Payload::OpenControlChannelRsp(proto::OpenControlChannelRsp::default()),
        Payload::OpenTunnelReq(proto::OpenTunnelReq::default()),
        Payload::CloseTunnelReq(proto::CloseTunnelReq {
            tunnel_id: "x".into(),
        }),
        Payload::ProxyReq(proto::ProxyReq::default()),
        Payload::ProxyRsp(proto::ProxyRsp::default()),
        Payload::ProxyConnRsp(proto::ProxyConnRsp::default()),
        Payload::StreamReq(proto::StreamReq::default()),
        Payload::DatagramChannelClose(proto::DatagramChannelClose::default()),
    ] {
        peer.send(p).await;
    }
    let (tunnel, ()) = tokio::join!(
        control.create_tunnel(TunnelOptions::new().name("t")),
        async {
            let Some(Payload::OpenTunnelReq(r)) = peer.recv().await else {
                panic!("expected OpenTunnelReq")
            };
            let mut p = r.tunnel_properties.unwrap();
            p.id = Some("t-1".into());
            peer.send(Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
                request_id: r.request_id,
                payload: Some(proto::open_tunnel_rsp::Payload::TunnelProperties(p)),
            }))
            .await;
        }
    );
    let mut tunnel = tunnel.unwrap();
    assert!(control.status().borrow().is_connected());
    // 3 bytes of length then a body that is not protobuf.
    peer.send_raw(&[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).await;
    let err = within("closed", control.closed()).await;
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert_eq!(
        within("accept", tunnel.accept()).await.unwrap_err().kind(),
        ErrorKind::Protocol
    );
}

/// Peers that never answer: timeouts fire, and the channel stays usable
/// after an unanswered request.
#[tokio::test]
async fn client_timeouts_fire_on_silent_peers() {
    support::init_tracing();
    // TCP accepted, TLS never answered: the connect timeout.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let engine = Scripted::start().await;
    let client = engine
        .client()
        .engine(addr.to_string())
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let started = Instant::now();
    let err = within("connect timeout", client.connect())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_RSTREAM_CONNECT_TIMEOUT", "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let err = within("dial timeout", client.dial("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");

    // TLS done, OpenControlChannelReq never answered: the operation timeout.
    let client = engine
        .client()
        .operation_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let (res, _peer) = tokio::join!(client.connect(), async {
        let mut peer = engine.accept().await;
        let _ = peer.recv().await;
        peer
    });
    assert_eq!(res.unwrap_err().kind(), ErrorKind::Timeout);

    // An OpenTunnelReq never answered: that request times out, the channel stays.
    let client = engine
        .client()
        .disable_heartbeats()
        .operation_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let (control, mut peer) = tokio::join!(client.connect(), async {
        let mut peer = engine.accept().await;
        peer.open_ok(None).await;
        peer
    });
    let control = control.unwrap();
    let err = within(
        "create timeout",
        control.create_tunnel(TunnelOptions::new()),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(matches!(peer.recv().await, Some(Payload::OpenTunnelReq(_))));
    assert!(!control.is_closed());
}

/// An engine that stops reading: the client's outbox is bounded, requests
/// fail (busy or timed out) instead of queueing without bound, and memory
/// stays flat.
#[tokio::test]
async fn client_backpressure_on_an_engine_that_stops_reading() {
    support::init_tracing();
    let engine = Scripted::start().await;
    let client = engine
        .client()
        .disable_heartbeats()
        .operation_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let (control, _peer) = tokio::join!(client.connect(), async {
        let mut peer = engine.accept().await;
        peer.open_ok(None).await;
        peer // never read from again
    });
    let control = control.unwrap();
    let before = live_bytes();
    // ~8 KiB of labels per request, within the label bounds.
    let labels = padding_labels(26, 'y');
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..2_000 {
        let control = control.clone();
        let labels = labels.clone();
        calls.spawn(async move {
            control
                .create_tunnel(labels.into_iter().fold(
                    TunnelOptions::new().name(format!("flood-{i}")),
                    |o, (k, v)| o.label(k, v),
                ))
                .await
        });
    }
    let mut peak = 0isize;
    let mut busy = 0;
    let started = Instant::now();
    while let Some(res) = within("flood", calls.join_next()).await {
        peak = peak.max(live_bytes() - before);
        let err = res.unwrap().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        if err.message().contains("busy") {
            busy += 1;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(6));
    assert!(busy > 0, "the outbox never filled up");
    assert!(peak < 64 << 20, "memory grew by {peak} bytes");
    assert!(!control.is_closed());
}

/// Label flood: one `OpenTunnelReq` frame (under the 64 KiB frame limit)
/// carrying 10,000 labels is refused with `INVALID_REQUEST` naming
/// `MAX_LABELS`; nothing is stored and the channel stays usable.
#[tokio::test]
async fn engine_refuses_a_label_flood() {
    let engine = support::engine().await;
    let mut io = raw(&engine).await;
    send(
        &mut io,
        Payload::OpenControlChannelReq(OpenControlChannelReq {
            client_details: Some(details()),
            liveness: None,
        }),
    )
    .await;
    let opened = within("open", read_frame(&mut io)).await.unwrap();
    assert!(matches!(
        opened.and_then(|m| m.payload),
        Some(Payload::OpenControlChannelRsp(_))
    ));
    // 10,000 distinct short keys (1-3 printable ASCII bytes), empty values.
    let key = |i: usize| -> String {
        // Base 95 over printable ASCII, 1-3 digits by range: all distinct.
        let (digits, n) = match i {
            0..95 => (1, i),
            95..9120 => (2, i - 95),
            _ => (3, i - 9120),
        };
        (0..digits)
            .map(|d| char::from(b' ' + ((n / 95usize.pow(d)) % 95) as u8))
            .collect()
    };
    let labels: std::collections::HashMap<String, String> =
        (0..10_000).map(|i| (key(i), String::new())).collect();
    assert_eq!(labels.len(), 10_000);
    let flood = Message::new(Payload::OpenTunnelReq(proto::OpenTunnelReq {
        request_id: "flood".into(),
        tunnel_properties: Some(proto::TunnelProperties {
            labels,
            ..Default::default()
        }),
    }));
    let frame = encode_frame(&flood).unwrap();
    assert!(frame.len() - 4 <= MAX_FRAME_LEN, "{} bytes", frame.len());
    io.write_all(&frame).await.unwrap();
    io.flush().await.unwrap();
    match within("answer", read_frame(&mut io))
        .await
        .unwrap()
        .and_then(|m| m.payload)
    {
        Some(Payload::OpenTunnelRsp(rsp)) => {
            assert_eq!(rsp.request_id, "flood");
            match rsp.payload {
                Some(proto::open_tunnel_rsp::Payload::Error(e)) => {
                    assert_eq!(e.code, proto::ErrorCode::InvalidRequest as i32);
                    let message = e.message.unwrap_or_default();
                    assert!(message.contains("MAX_LABELS"), "{message}");
                    assert!(message.contains("64"), "{message}");
                }
                other => panic!("the flood was accepted: {other:?}"),
            }
        }
        other => panic!("expected OpenTunnelRsp, got {:?}", other.map(|p| p.name())),
    }
    assert!(engine.tunnels().is_empty());
    // One oversized key, and one oversized value: refused the same way.
    for (key, value, bound) in [
        ("k".repeat(64), String::new(), "MAX_LABEL_KEY_BYTES"),
        ("k".to_owned(), "v".repeat(256), "MAX_LABEL_VALUE_BYTES"),
    ] {
        send(
            &mut io,
            Payload::OpenTunnelReq(proto::OpenTunnelReq {
                request_id: bound.into(),
                tunnel_properties: Some(proto::TunnelProperties {
                    labels: [(key, value)].into_iter().collect(),
                    ..Default::default()
                }),
            }),
        )
        .await;
        match within("answer", read_frame(&mut io))
            .await
            .unwrap()
            .and_then(|m| m.payload)
        {
            Some(Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
                payload: Some(proto::open_tunnel_rsp::Payload::Error(e)),
                ..
            })) => {
                assert_eq!(e.code, proto::ErrorCode::InvalidRequest as i32);
                assert!(e.message.unwrap_or_default().contains(bound));
            }
            other => panic!("{bound}: {:?}", other.map(|p| p.name())),
        }
    }
    // At the bounds exactly: accepted.
    let labels = (0..rstream::tunnel::MAX_LABELS)
        .map(|i| {
            (
                format!("{i:0>63}"),
                "v".repeat(rstream::tunnel::MAX_LABEL_VALUE_BYTES),
            )
        })
        .collect();
    send(
        &mut io,
        Payload::OpenTunnelReq(proto::OpenTunnelReq {
            request_id: "at-the-bounds".into(),
            tunnel_properties: Some(proto::TunnelProperties {
                labels,
                ..Default::default()
            }),
        }),
    )
    .await;
    match within("answer", read_frame(&mut io))
        .await
        .unwrap()
        .and_then(|m| m.payload)
    {
        Some(Payload::OpenTunnelRsp(rsp)) => assert!(
            matches!(
                rsp.payload,
                Some(proto::open_tunnel_rsp::Payload::TunnelProperties(_))
            ),
            "{rsp:?}"
        ),
        other => panic!("{:?}", other.map(|p| p.name())),
    }
    assert_eq!(engine.tunnels().len(), 1);
}

/// `TunnelOptions` with 65 labels fails in the SDK, before anything is
/// sent: a config error (`ERR_RSTREAM_INVALID_TUNNEL`), not the engine's
/// `INVALID_REQUEST`; the channel stays usable.
#[tokio::test]
async fn tunnel_options_refuse_too_many_labels_before_sending() {
    let engine = support::engine().await;
    let control = within("connect", support::client(&engine).connect())
        .await
        .unwrap();
    let options = (0..=rstream::tunnel::MAX_LABELS)
        .fold(TunnelOptions::new(), |o, i| o.label(format!("k{i}"), "v"));
    let err = within("create", control.create_tunnel(options))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert_eq!(err.code(), "ERR_RSTREAM_INVALID_TUNNEL");
    assert_eq!(err.engine_code(), None);
    assert!(err.to_string().contains("MAX_LABELS"), "{err}");
    assert!(engine.tunnels().is_empty());
    // Dropped at once, as before `Tunnel` was `#[must_use]`.
    let _ = within(
        "create",
        control.create_tunnel(TunnelOptions::new().label("k", "v")),
    )
    .await
    .unwrap();
    assert_eq!(engine.tunnels().len(), 1);
    control.close().await.unwrap();
}
