//! The QUIC transport (feature `quic`) against the local engine over
//! loopback UDP: control channel and `axum::serve(tunnel, router)` reached
//! by a real HTTPS client, private dials in every owner/dialer transport
//! mix, a framed datagram tunnel, the engine's ALPN check, and a dead QUIC
//! connection replaced on reconnect.

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

/// The UDP port serves `rstrm/1` only: another ALPN fails the handshake.
#[tokio::test]
async fn wrong_alpn_fails_the_quic_handshake() {
    let engine = engine().await;
    let addr = engine.local_addr();
    let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    for (alpn, ok) in [(&b"h3"[..], false), (b"nope", false), (b"rstrm/1", true)] {
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
