//! The QUIC transport (feature `quic`) against the local engine over
//! loopback UDP: control channel and `axum::serve(tunnel, router)` reached
//! by a real HTTPS client, private dials in every owner/dialer transport
//! mix, a framed datagram tunnel, the engine's ALPN check, and a dead QUIC
//! connection replaced on reconnect.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rstream::engine::LocalEngine;
use rstream::{ConnectionStatus, ReconnectPolicy, Transport, TunnelOptions};

use crate::support::{
    self, datagram_echo, echo_round_trip, engine, https_get, options, spawn_echo, tls_config,
    within,
};

fn quic_client(engine: &LocalEngine) -> rstream::Client {
    options(engine).transport(Transport::Quic).build().unwrap()
}

fn tls_client(engine: &LocalEngine) -> rstream::Client {
    options(engine).transport(Transport::Tls).build().unwrap()
}

#[tokio::test]
async fn axum_serve_over_quic_reached_by_https() {
    let engine = engine().await;
    let client = quic_client(&engine);
    assert_eq!(client.options().transport(), Transport::Quic);
    let control = within("connect", client.connect()).await.unwrap();
    let before = engine.quic_streams_accepted();
    assert!(before >= 1, "the control channel is a QUIC stream");
    let tunnel = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    let url = tunnel.forwarding_address().to_owned();
    let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "over quic" }));
    let _server = support::serve_axum(tunnel, app);
    for _ in 0..3 {
        let (status, body) = within("GET", https_get(&url, engine.ca_pem(), "/hello")).await;
        assert_eq!(status, 200);
        assert_eq!(body, "over quic");
    }
    // Each downstream connection reached the owner as a QUIC proxy stream.
    assert!(
        engine.quic_streams_accepted() >= before + 3,
        "{} QUIC streams",
        engine.quic_streams_accepted()
    );
}

/// Private dials: owner and dialer on QUIC or TLS, every mix.
#[tokio::test]
async fn private_dial_in_every_transport_mix() {
    let engine = engine().await;
    let mixes = [
        (Transport::Quic, Transport::Tls),
        (Transport::Tls, Transport::Quic),
        (Transport::Quic, Transport::Quic),
    ];
    for (i, (owner, dialer)) in mixes.into_iter().enumerate() {
        let name = format!("mix-{i}");
        let owner_client = options(&engine).transport(owner).build().unwrap();
        let control = within("connect", owner_client.connect()).await.unwrap();
        let tunnel = control
            .create_tunnel(TunnelOptions::new().name(&name))
            .await
            .unwrap();
        let _echo = spawn_echo(tunnel);
        let dialer_client = options(&engine).transport(dialer).build().unwrap();
        let before = engine.quic_streams_accepted();
        // Large enough to need QUIC flow-control updates both ways.
        let msg: Vec<u8> = (0..3 * 1024 * 1024).map(|j| (j % 251) as u8).collect();
        for zero_rtt in [true, false] {
            let stream = within(
                "dial",
                dialer_client.dial_with(&name, rstream::DialOptions::new().zero_rtt(zero_rtt)),
            )
            .await
            .unwrap();
            let back = within("echo", echo_round_trip(stream, &msg)).await;
            assert!(
                back == msg,
                "{owner}/{dialer}: echo intact ({} bytes)",
                back.len()
            );
        }
        let after = engine.quic_streams_accepted();
        // Two dials: a QUIC dialer opens 2 streams, a QUIC owner 2 proxy streams.
        let expected =
            2 * u64::from(owner == Transport::Quic) + 2 * u64::from(dialer == Transport::Quic);
        assert_eq!(after - before, expected, "{owner}/{dialer}");
        let _ = control.close().await;
    }
}

#[tokio::test]
async fn framed_datagram_tunnel_over_quic() {
    let engine = engine().await;
    let client = quic_client(&engine);
    let control = within("connect", client.connect()).await.unwrap();
    // Guaranteed delivery keeps a QUIC owner on plane B (framed streams,
    // up to 65,535 bytes); without it, it uses QUIC DATAGRAMs (plane A,
    // tests/client/datagram_quic.rs).
    let tunnel = control
        .create_datagram_tunnel(
            TunnelOptions::datagram()
                .name("quic-udp")
                .datagram_guaranteed_delivery(true),
        )
        .await
        .unwrap();
    let _echo = datagram_echo(tunnel);
    for dialer in [quic_client(&engine), tls_client(&engine)] {
        let channel = within("dial", dialer.dial_datagram("quic-udp"))
            .await
            .unwrap();
        for n in [0usize, 1, 1200, 9000, 65_535] {
            let d: Vec<u8> = (0..n).map(|j| (j % 253) as u8).collect();
            channel.send(&d).await.unwrap();
            let back = within("echo", channel.recv()).await.unwrap();
            assert_eq!(&back[..], &d[..], "{n} bytes");
        }
        channel.close().await;
    }
}

/// The UDP port serves `rstrm/1` (and `h3` with feature `http3`): another
/// ALPN fails the handshake.
#[tokio::test]
async fn wrong_alpn_fails_the_quic_handshake() {
    let engine = engine().await;
    let addr = engine.local_addr();
    let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    for (alpn, ok) in [
        (&b"h3"[..], cfg!(feature = "http3")),
        (b"nope", false),
        (b"rstrm/1", true),
    ] {
        let tls = tls_config(engine.ca_pem(), &[alpn]);
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let config = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
        let connecting = endpoint.connect_with(config, addr, "localhost").unwrap();
        let result = within("handshake", connecting).await;
        assert_eq!(
            result.is_ok(),
            ok,
            "ALPN {:?}: {result:?}",
            String::from_utf8_lossy(alpn)
        );
        if let Ok(conn) = result {
            conn.close(0u32.into(), b"");
        }
    }
}

/// A dead QUIC connection fails the control channel; the reconnect builds
/// a new connection and the tunnel is served again.
#[tokio::test]
async fn engine_restart_replaces_the_quic_connection() {
    let dir = std::env::temp_dir().join(format!(
        "rstream-quic-restart-{}",
        uuid::Uuid::new_v4().simple()
    ));
    support::init_tracing();
    let engine = LocalEngine::builder()
        .state_dir(&dir)
        .start()
        .await
        .unwrap();
    let addr = engine.local_addr();
    let client = quic_client(&engine);
    let policy = ReconnectPolicy::new()
        .initial_delay(Duration::from_millis(50))
        .max_delay(Duration::from_millis(500));
    let control = within("connect", client.connect_with(policy))
        .await
        .unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("restart"))
        .await
        .unwrap();
    let _echo = spawn_echo(tunnel);
    let stream = within("dial", client.dial("restart")).await.unwrap();
    assert_eq!(
        within("echo", echo_round_trip(stream, b"one")).await,
        b"one"
    );

    let mut status = control.status();
    engine.shutdown().await;
    within(
        "reconnecting",
        status.wait_for(|s| matches!(s, ConnectionStatus::Reconnecting { .. })),
    )
    .await
    .unwrap();
    let engine = LocalEngine::builder()
        .state_dir(&dir)
        .listen(addr)
        .start()
        .await
        .unwrap();
    within(
        "connected again",
        status.wait_for(|s| matches!(s, ConnectionStatus::Connected)),
    )
    .await
    .unwrap();
    let stream = within("dial again", client.dial("restart")).await.unwrap();
    assert_eq!(
        within("echo", echo_round_trip(stream, b"two")).await,
        b"two"
    );
    assert!(engine.quic_streams_accepted() >= 3);
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A burst of 300 dials to one's own tunnel over one QUIC connection: the
/// dials and the proxy streams answering them (600 streams) fit under the
/// engine's per-connection stream cap, so none waits on another.
#[tokio::test]
async fn three_hundred_simultaneous_dials_over_one_quic_connection() {
    support::init_tracing();
    let engine = LocalEngine::builder()
        .max_pending_streams(1024)
        .start()
        .await
        .unwrap();
    let client = quic_client(&engine);
    let control = within("connect", client.connect()).await.unwrap();
    let _echo = spawn_echo(
        control
            .create_tunnel(TunnelOptions::new().name("burst"))
            .await
            .unwrap(),
    );
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(300));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let client = client.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let msg = format!("burst {i}");
            let stream = client.dial("burst").await.unwrap();
            assert_eq!(
                echo_round_trip(stream, msg.as_bytes()).await,
                msg.as_bytes()
            );
        });
    }
    within("300 dials", async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
    assert!(engine.quic_streams_accepted() >= 601);
}

// ---- The auto transport (the default): QUIC raced against TLS ----

/// A front for the engine on one port number P of 127.0.0.1: TCP on P is
/// relayed to the engine's TLS port, UDP on P is whatever the test binds
/// (a silent socket, a QUIC server with the wrong ALPN). Counts what
/// reaches each.
struct Front {
    port: u16,
    tcp_connections: Arc<AtomicUsize>,
    udp_seen: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Front {
    /// TCP relay on P + a UDP socket on P that drops (and counts) every
    /// datagram: QUIC never hears back.
    async fn silent_udp(engine: &LocalEngine) -> Front {
        let (listener, udp) = bind_pair().await;
        let mut front = Front::relay(engine, listener);
        let udp = tokio::net::UdpSocket::from_std(udp).unwrap();
        let seen = front.udp_seen.clone();
        front.tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            while udp.recv_from(&mut buf).await.is_ok() {
                seen.fetch_add(1, Ordering::SeqCst);
            }
        }));
        front
    }

    /// TCP relay on P + a QUIC server on UDP P offering ALPN `h3` only
    /// (its own self-signed certificate): every `rstrm/1` handshake fails.
    async fn wrong_alpn(engine: &LocalEngine) -> Front {
        let (listener, udp) = bind_pair().await;
        let mut front = Front::relay(engine, listener);
        let leaf = support::pki::Ca::new().leaf(&["127.0.0.1", "localhost"], None);
        let tls = leaf.server_config(&[b"h3"]);
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls)).unwrap();
        let server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server),
            udp,
            Arc::new(quinn::TokioRuntime),
        )
        .unwrap();
        let seen = front.udp_seen.clone();
        front.tasks.push(tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                // Fails: no ALPN in common.
                tokio::spawn(async move {
                    let _ = incoming.await;
                });
            }
        }));
        front
    }

    fn relay(engine: &LocalEngine, listener: tokio::net::TcpListener) -> Front {
        let port = listener.local_addr().unwrap().port();
        let target = engine.local_addr();
        let tcp_connections = Arc::new(AtomicUsize::new(0));
        let count = tcp_connections.clone();
        let relay = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Front {
            port,
            tcp_connections,
            udp_seen: Arc::new(AtomicUsize::new(0)),
            tasks: vec![relay],
        }
    }

    /// A client of the engine through this front, transport left to auto.
    fn client(&self, engine: &LocalEngine) -> rstream::Client {
        let client = options(engine)
            .engine(format!("127.0.0.1:{}", self.port))
            .build()
            .unwrap();
        assert_eq!(client.options().transport(), Transport::Auto);
        client
    }

    fn tcp_connections(&self) -> usize {
        self.tcp_connections.load(Ordering::SeqCst)
    }

    fn udp_seen(&self) -> usize {
        self.udp_seen.load(Ordering::SeqCst)
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A TCP listener and a UDP socket on the same port number of 127.0.0.1.
async fn bind_pair() -> (tokio::net::TcpListener, std::net::UdpSocket) {
    for _ in 0..20 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        if let Ok(udp) = std::net::UdpSocket::bind(("127.0.0.1", port)) {
            udp.set_nonblocking(true).unwrap();
            return (listener, udp);
        }
    }
    panic!("no port free on both TCP and UDP");
}

/// How long auto may take to fall back to TLS: QUIC's 300 ms head start,
/// a TLS handshake, and slack for a loaded CI machine; far below the
/// connect timeout a silent UDP port would otherwise cost.
const FALLBACK_BOUND: Duration = Duration::from_secs(3);

/// Pinned TLS: after the first connection, dials and proxy connections
/// send nothing over UDP and go through the TCP front.
async fn assert_pinned_to_tls(
    engine: &LocalEngine,
    front: &Front,
    client: &rstream::Client,
    name: &str,
) {
    // Let the abandoned QUIC attempt's last packet (its close) land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let udp_before = front.udp_seen();
    let tcp_before = front.tcp_connections();
    for i in 0..3 {
        let start = std::time::Instant::now();
        let stream = within("dial", client.dial(name)).await.unwrap();
        let msg = format!("pinned {i}");
        assert_eq!(
            within("echo", echo_round_trip(stream, msg.as_bytes())).await,
            msg.as_bytes()
        );
        tracing::debug!(elapsed = ?start.elapsed(), "pinned dial");
    }
    assert_eq!(
        front.udp_seen(),
        udp_before,
        "pinned to TLS: no new QUIC attempt"
    );
    // Each dial: the dialer's connection and the owner's proxy connection.
    assert!(
        front.tcp_connections() >= tcp_before + 6,
        "{} TCP connections",
        front.tcp_connections() - tcp_before
    );
    assert_eq!(engine.quic_streams_accepted(), 0);
}

/// Auto against the local engine: QUIC wins; the control channel, the
/// tunnel served by axum, and dials are all QUIC streams.
#[tokio::test]
async fn auto_uses_quic_against_the_local_engine() {
    let engine = engine().await;
    let client = support::client(&engine);
    assert_eq!(client.options().transport(), Transport::Auto);
    let control = within("connect", client.connect()).await.unwrap();
    assert_eq!(engine.quic_streams_accepted(), 1, "the control channel");

    let tunnel = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    let url = tunnel.forwarding_address().to_owned();
    let app = axum::Router::new().route("/auto", axum::routing::get(|| async { "auto" }));
    let _server = support::serve_axum(tunnel, app);
    let (status, body) = within("GET", https_get(&url, engine.ca_pem(), "/auto")).await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "auto"));
    assert_eq!(engine.quic_streams_accepted(), 2, "+ the proxy stream");

    let private = control
        .create_tunnel(TunnelOptions::new().name("auto-private"))
        .await
        .unwrap();
    let _echo = spawn_echo(private);
    let stream = within("dial", client.dial("auto-private")).await.unwrap();
    assert_eq!(within("echo", echo_round_trip(stream, b"hi")).await, b"hi");
    assert_eq!(
        engine.quic_streams_accepted(),
        4,
        "+ the dial and its proxy stream"
    );
}

/// Auto against a UDP port that swallows everything: TLS after the head
/// start, well within the bound, then pinned.
#[tokio::test]
async fn auto_falls_back_to_tls_past_a_silent_udp_port() {
    let engine = engine().await;
    let front = Front::silent_udp(&engine).await;
    let client = front.client(&engine);
    let start = std::time::Instant::now();
    let control = within("connect", client.connect()).await.unwrap();
    let elapsed = start.elapsed();
    assert!(elapsed < FALLBACK_BOUND, "fell back in {elapsed:?}");
    eprintln!("silent UDP port: connected over TLS in {elapsed:?}");
    assert!(front.udp_seen() >= 1, "QUIC was tried first");
    assert_eq!(front.tcp_connections(), 1, "the control channel is TLS");
    assert_eq!(engine.quic_streams_accepted(), 0);

    let _echo = spawn_echo(
        control
            .create_tunnel(TunnelOptions::new().name("silent"))
            .await
            .unwrap(),
    );
    assert_pinned_to_tls(&engine, &front, &client, "silent").await;
}

/// Auto against a QUIC server that offers only `h3`: the handshake fails,
/// TLS starts at once, and is pinned.
#[tokio::test]
async fn auto_falls_back_to_tls_past_a_wrong_alpn() {
    let engine = engine().await;
    let front = Front::wrong_alpn(&engine).await;
    let client = front.client(&engine);
    let start = std::time::Instant::now();
    let control = within("connect", client.connect()).await.unwrap();
    let elapsed = start.elapsed();
    assert!(elapsed < FALLBACK_BOUND, "fell back in {elapsed:?}");
    eprintln!("wrong ALPN: connected over TLS in {elapsed:?}");
    assert_eq!(front.udp_seen(), 1, "one QUIC handshake, refused");
    assert_eq!(front.tcp_connections(), 1, "the control channel is TLS");
    assert_eq!(engine.quic_streams_accepted(), 0);

    let _echo = spawn_echo(
        control
            .create_tunnel(TunnelOptions::new().name("wrong-alpn"))
            .await
            .unwrap(),
    );
    assert_pinned_to_tls(&engine, &front, &client, "wrong-alpn").await;
}

/// The engine down (TCP refused, UDP silent): auto fails fast with the
/// TLS side's error, not after the connect timeout, both for a client that
/// never connected (nothing pinned) and for one whose QUIC connection died
/// (pinned QUIC: a new QUIC connection is raced again). Once the engine is
/// back, both race again and QUIC wins.
#[tokio::test]
async fn auto_fails_fast_when_the_engine_is_down_and_races_again() {
    support::init_tracing();
    let dir = std::env::temp_dir().join(format!(
        "rstream-auto-race-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let engine = LocalEngine::builder()
        .state_dir(&dir)
        .start()
        .await
        .unwrap();
    let addr = engine.local_addr();
    let build = || {
        options(&engine)
            .connect_timeout(Duration::from_secs(15))
            .build()
            .unwrap()
    };
    let (fresh, was_quic) = (build(), build());
    let control = within("connect", was_quic.connect()).await.unwrap();
    assert_eq!(engine.quic_streams_accepted(), 1);
    let _ = control.close().await;
    engine.shutdown().await;

    for client in [&fresh, &was_quic] {
        let start = std::time::Instant::now();
        let err = within("connect", client.connect()).await.unwrap_err();
        let elapsed = start.elapsed();
        assert!(elapsed < FALLBACK_BOUND, "failed in {elapsed:?}: {err}");
        eprintln!("engine down: failed in {elapsed:?}");
        // TCP's "refused", not QUIC's timeout.
        assert_eq!(err.kind(), rstream::ErrorKind::Io, "{err}");
        assert!(err.to_string().contains("connecting to"), "{err}");
    }

    let engine = LocalEngine::builder()
        .state_dir(&dir)
        .listen(addr)
        .start()
        .await
        .unwrap();
    for (i, client) in [&fresh, &was_quic].into_iter().enumerate() {
        let control = within("connect", client.connect()).await.unwrap();
        assert_eq!(engine.quic_streams_accepted(), i as u64 + 1, "QUIC again");
        let _ = control.close().await;
    }
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// With a proxy configured, auto is TLS only (no QUIC through a proxy).
#[tokio::test]
async fn auto_behind_a_proxy_is_tls() {
    let engine = engine().await;
    let (proxy_addr, log) = support::connect_proxy::start(None, None).await;
    let proxy = rstream::transport::HttpProxy::parse(&format!("http://{proxy_addr}")).unwrap();
    let client = options(&engine).proxy(proxy).build().unwrap();
    assert_eq!(client.options().transport(), Transport::Auto);
    let control = within("connect", client.connect()).await.unwrap();
    let _echo = spawn_echo(
        control
            .create_tunnel(TunnelOptions::new().name("proxied"))
            .await
            .unwrap(),
    );
    let stream = within("dial", client.dial("proxied")).await.unwrap();
    assert_eq!(within("echo", echo_round_trip(stream, b"p")).await, b"p");
    assert_eq!(engine.quic_streams_accepted(), 0);
    assert!(log.targets.lock().unwrap().len() >= 3);
}

/// More streams open at once than the engine allows on one QUIC
/// connection (1,024): 1,100 dials held open, the owner on QUIC too. The
/// dials past the limit (and the owner's proxy streams past it) open
/// connections of their own instead of waiting for a stream to end, so
/// every dial succeeds at once and every one echoes.
#[tokio::test]
async fn more_dials_than_one_quic_connection_carries_open_more_connections() {
    const DIALS: usize = 1_100;
    support::init_tracing();
    let engine = LocalEngine::builder()
        .max_pending_streams(2048)
        .start()
        .await
        .unwrap();
    let owner = quic_client(&engine);
    let control = within("connect", owner.connect()).await.unwrap();
    let _echo = spawn_echo(
        control
            .create_tunnel(TunnelOptions::new().name("many"))
            .await
            .unwrap(),
    );
    // A connect timeout well under `within`'s: a dial waiting for a free
    // stream (the behaviour before) fails the test with its own error.
    let dialer = options(&engine)
        .transport(Transport::Quic)
        .connect_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut held = Vec::with_capacity(DIALS);
    // Longer than `within`: 1,100 dials and their proxy streams, on a
    // shared machine.
    let slow = Duration::from_secs(120);
    tokio::time::timeout(slow, async {
        for i in 0..DIALS {
            let stream = dialer
                .dial("many")
                .await
                .unwrap_or_else(|e| panic!("dial {i}: {e}"));
            held.push(stream);
        }
    })
    .await
    .expect("1,100 dials held open");
    tokio::time::timeout(slow, async {
        for (i, stream) in held.into_iter().enumerate().rev() {
            let msg = format!("dial {i}");
            assert_eq!(
                echo_round_trip(stream, msg.as_bytes()).await,
                msg.as_bytes()
            );
        }
    })
    .await
    .expect("every dial echoes");
    // Each dial and each of the owner's proxy streams was a QUIC stream.
    let streams = engine.quic_streams_accepted();
    assert!(streams > 2 * DIALS as u64, "{streams} QUIC streams");
}
