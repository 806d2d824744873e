//! The local engine's datagram tunnels: published UDP endpoints (a real
//! `tokio::net::UdpSocket` downstream, one channel per source address,
//! idle expiry, bounded queues), `datagram_channel` refused over TLS so
//! clients fall back to framed dials, and the Engine API's `type`.

use std::net::SocketAddr;
use std::time::Duration;

use rstream::api::TunnelFilters;
use rstream::engine::LocalEngine;
use rstream::proto::{message::Payload, stream_rsp, StreamReq};
use rstream::{ErrorKind, TunnelOptions};
use tokio::net::UdpSocket;

use crate::support::raw::{details, dial, recv, send};
use crate::support::{client_on, datagram_echo, init_tracing, within};

/// A client on TLS: these tests are about plane B (published UDP ⇄
/// framed, datagrams up to 65,535 bytes); a QUIC owner would ride plane A
/// (tests/client/datagram_quic.rs tests that one).
fn client(engine: &LocalEngine) -> rstream::Client {
    client_on(engine, rstream::Transport::Tls)
}

async fn engine_with_idle(idle: Duration) -> LocalEngine {
    init_tracing();
    LocalEngine::builder()
        .datagram_idle_timeout(idle)
        .start()
        .await
        .expect("engine starts")
}

/// `127.0.0.1:PORT` from `127.0.0.1:PORT (udp)`.
fn udp_addr(forwarding: &str) -> SocketAddr {
    forwarding
        .strip_suffix(" (udp)")
        .unwrap_or_else(|| panic!("not a UDP address: {forwarding}"))
        .parse()
        .expect("socket address")
}

async fn udp_client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("udp bind")
}

async fn recv_udp(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65_536];
    let n = within("udp answer", socket.recv(&mut buf)).await.unwrap();
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn published_udp_echo_one_channel_per_source() {
    let engine = engine_with_idle(Duration::from_secs(60)).await;
    let control = client(&engine).connect().await.unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().name("udp").publish())
        .await
        .unwrap();
    let address = tunnel.forwarding_address();
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    let target = udp_addr(&address);

    let a = udp_client().await;
    let b = udp_client().await;
    a.send_to(b"from a", target).await.unwrap();
    let first = within("accept a", tunnel.accept()).await.unwrap();
    assert_eq!(first.peer().source_ip(), Some("127.0.0.1".parse().unwrap()));
    assert_eq!(
        &within("a's datagram", first.recv()).await.unwrap()[..],
        b"from a"
    );
    first.send(b"to a").await.unwrap();
    assert_eq!(recv_udp(&a).await, b"to a");

    b.send_to(b"from b", target).await.unwrap();
    let second = within("accept b", tunnel.accept()).await.unwrap();
    assert_ne!(
        first.peer(),
        second.peer(),
        "one channel per source address"
    );
    assert_eq!(
        &within("b's datagram", second.recv()).await.unwrap()[..],
        b"from b"
    );

    // The rest through an echo server: whole datagrams, in both directions.
    let _server = datagram_echo(tunnel);
    drop((first, second));
    let c = udp_client().await;
    for size in [1usize, 512, 1400, 8192, 60_000] {
        let d: Vec<u8> = (0..size).map(|i| i as u8).collect();
        c.send_to(&d, target).await.unwrap();
        assert_eq!(recv_udp(&c).await, d, "{size} bytes");
    }
    let (opened, dropped, refused) = engine.datagram_counters();
    assert!(opened >= 3, "{opened}");
    assert_eq!((dropped, refused), (0, 0));
}

#[tokio::test]
async fn idle_channels_expire_and_the_source_starts_a_new_one() {
    let engine = engine_with_idle(Duration::from_millis(300)).await;
    let control = client(&engine).connect().await.unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().publish())
        .await
        .unwrap();
    let target = udp_addr(&tunnel.forwarding_address());
    let udp = udp_client().await;
    udp.send_to(b"one", target).await.unwrap();
    let channel = within("accept", tunnel.accept()).await.unwrap();
    assert_eq!(&within("one", channel.recv()).await.unwrap()[..], b"one");
    // Nothing either way for 300 ms: the engine closes the channel.
    let err = within("idle expiry", channel.recv()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    // The same source address is a new channel now.
    udp.send_to(b"two", target).await.unwrap();
    let again = within("accept again", tunnel.accept()).await.unwrap();
    assert_ne!(again.peer(), channel.peer());
    assert_eq!(&within("two", again.recv()).await.unwrap()[..], b"two");

    // The owner closing a channel ends it on the engine too.
    again.close().await;
    udp.send_to(b"three", target).await.unwrap();
    let third = within("accept third", tunnel.accept()).await.unwrap();
    assert_eq!(&within("three", third.recv()).await.unwrap()[..], b"three");
    assert_eq!(engine.datagram_counters().0, 3);
}

#[tokio::test]
async fn a_burst_before_the_owner_answers_is_bounded_and_counted() {
    let engine = engine_with_idle(Duration::from_secs(60)).await;
    let control = client(&engine).connect().await.unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().publish())
        .await
        .unwrap();
    let target = udp_addr(&tunnel.forwarding_address());
    let udp = udp_client().await;
    // The first datagram asks the owner for a stream; meanwhile the rest
    // wait in the channel's queue of 64, and what does not fit is dropped.
    const SENT: usize = 2000;
    for i in 0..SENT as u32 {
        udp.send_to(&i.to_be_bytes(), target).await.unwrap();
    }
    let channel = within("accept", tunnel.accept()).await.unwrap();
    let mut received = 0usize;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(300), channel.recv()).await {
        received += 1;
    }
    let (_, dropped, _) = engine.datagram_counters();
    assert!(dropped > 0, "a burst of {SENT} overflows the queue");
    assert!(
        received + dropped as usize <= SENT,
        "received {received} + dropped {dropped} ≤ sent {SENT}"
    );
    assert!(received >= 1);
}

#[tokio::test]
async fn trusted_ips_apply_to_udp_sources() {
    let engine = engine_with_idle(Duration::from_secs(60)).await;
    let control = client(&engine).connect().await.unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().publish().trusted_ip("10.0.0.0/8"))
        .await
        .unwrap();
    let target = udp_addr(&tunnel.forwarding_address());
    let udp = udp_client().await;
    udp.send_to(b"not trusted", target).await.unwrap();
    let accepted = tokio::time::timeout(Duration::from_millis(300), tunnel.accept()).await;
    assert!(accepted.is_err(), "no channel for an untrusted source");
    assert_eq!(engine.datagram_counters().0, 0);
}

#[tokio::test]
async fn closing_the_tunnel_frees_the_udp_port() {
    let engine = engine_with_idle(Duration::from_secs(60)).await;
    let control = client(&engine).connect().await.unwrap();
    let tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().publish())
        .await
        .unwrap();
    let target = udp_addr(&tunnel.forwarding_address());
    tunnel.close().await.unwrap();
    within("port released", async {
        loop {
            if UdpSocket::bind(target).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn datagram_channel_dials_are_refused_so_clients_fall_back_to_framed() {
    let engine = engine_with_idle(Duration::from_secs(60)).await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let _server = datagram_echo(
        control
            .create_datagram_tunnel(TunnelOptions::datagram().name("fallback"))
            .await
            .unwrap(),
    );
    // Over TLS (plane A needs QUIC: tests/client/datagram_quic.rs).
    let mut conn = dial(&engine, None).await;
    let req = StreamReq {
        client_details: Some(details("go-like", None)),
        tunnel_id_name: "fallback".into(),
        zero_rtt: Some(false),
        datagram_channel: Some(true),
    };
    send(&mut conn, Payload::StreamReq(req)).await;
    match recv(&mut conn).await {
        Payload::StreamRsp(rsp) => match rsp.payload {
            Some(stream_rsp::Payload::Error(e)) => {
                assert_eq!(e.code, 5000, "FEATURE_NOT_AVAILABLE: {e:?}")
            }
            other => panic!("expected a StreamRsp error, got {other:?}"),
        },
        other => panic!("expected StreamRsp, got {}", other.name()),
    }
    // The fallback, an ordinary framed dial, works.
    let channel = client.dial_datagram("fallback").await.unwrap();
    channel.send(b"framed").await.unwrap();
    assert_eq!(
        &within("echo", channel.recv()).await.unwrap()[..],
        b"framed"
    );
}

#[tokio::test]
async fn engine_api_shows_datagram_tunnels() {
    let engine = engine_with_idle(Duration::from_secs(60)).await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let _private = control
        .create_datagram_tunnel(
            TunnelOptions::datagram()
                .name("api-dgram")
                .datagram_guaranteed_delivery(true),
        )
        .await
        .unwrap();
    let _published = control
        .create_datagram_tunnel(TunnelOptions::datagram().name("api-udp").publish())
        .await
        .unwrap();
    let page = within(
        "list",
        client
            .api()
            .list_tunnels(TunnelFilters::new().tunnel_type("datagram")),
    )
    .await
    .unwrap();
    let mut names: Vec<_> = page
        .iter()
        .map(|t| {
            assert_eq!(t.tunnel_type.as_deref(), Some("datagram"));
            t.name.clone().unwrap_or_default()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["api-dgram", "api-udp"]);
    let guaranteed = page
        .iter()
        .find(|t| t.name.as_deref() == Some("api-dgram"))
        .unwrap();
    assert_eq!(guaranteed.datagram_guaranteed_delivery, Some(true));
}

/// A raw owner (no SDK): an idle published channel ends with
/// `DatagramChannelClose{stream_id}` on the owner's control channel, then
/// its proxy connection closes; the datagrams on the way were framed.
#[tokio::test]
async fn idle_expiry_sends_datagram_channel_close_to_a_raw_owner() {
    use rstream::proto::{
        open_tunnel_rsp, OpenControlChannelReq, OpenTunnelReq, ProxyConnRsp, ProxyReq,
        TunnelProperties,
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let engine = engine_with_idle(Duration::from_millis(400)).await;
    let mut control = dial(&engine, None).await;
    send(
        &mut control,
        Payload::OpenControlChannelReq(OpenControlChannelReq {
            client_details: Some(details("raw-owner", None)),
            liveness: None,
        }),
    )
    .await;
    assert!(matches!(
        recv(&mut control).await,
        Payload::OpenControlChannelRsp(_)
    ));
    send(
        &mut control,
        Payload::OpenTunnelReq(OpenTunnelReq {
            request_id: "1".into(),
            tunnel_properties: Some(TunnelProperties {
                r#type: Some("datagram".into()),
                publish: Some(true),
                ..Default::default()
            }),
        }),
    )
    .await;
    let props = match recv(&mut control).await {
        Payload::OpenTunnelRsp(rsp) => match rsp.payload {
            Some(open_tunnel_rsp::Payload::TunnelProperties(p)) => p,
            other => panic!("tunnel refused: {other:?}"),
        },
        other => panic!("expected OpenTunnelRsp, got {}", other.name()),
    };
    assert_eq!(props.r#type.as_deref(), Some("datagram"));
    let target = SocketAddr::from(([127, 0, 0, 1], props.port.unwrap() as u16));

    let udp = udp_client().await;
    udp.send_to(b"ping", target).await.unwrap();
    let req = match recv(&mut control).await {
        Payload::ProxyConnReq(req) => req,
        other => panic!("expected ProxyConnReq, got {}", other.name()),
    };
    let mut proxy = dial(&engine, None).await;
    send(
        &mut proxy,
        Payload::ProxyReq(ProxyReq {
            client_details: Some(details("raw-owner", req.secret.as_deref())),
            stream_id: req.stream_id.clone(),
            zero_rtt: Some(false),
        }),
    )
    .await;
    assert!(matches!(recv(&mut proxy).await, Payload::ProxyRsp(_)));
    send(
        &mut control,
        Payload::ProxyConnRsp(ProxyConnRsp {
            stream_id: req.stream_id.clone(),
            error: None,
        }),
    )
    .await;
    // The downstream datagram arrives framed: 4-byte length, payload.
    let mut frame = [0u8; 8];
    within("framed datagram", proxy.read_exact(&mut frame))
        .await
        .unwrap();
    assert_eq!(&frame, b"\0\0\0\x04ping");
    // And a framed answer goes back out as one UDP datagram.
    proxy.write_all(b"\0\0\0\x04pong").await.unwrap();
    proxy.flush().await.unwrap();
    assert_eq!(recv_udp(&udp).await, b"pong");
    // Then silence: the engine expires the channel and says so.
    match recv(&mut control).await {
        Payload::DatagramChannelClose(close) => assert_eq!(close.stream_id, req.stream_id),
        other => panic!("expected DatagramChannelClose, got {}", other.name()),
    }
    crate::support::raw::expect_closed(&mut proxy).await;
}

/// A source the owner refuses (here: its accept backlog is full) costs one
/// `ProxyConnReq` per second, not one per datagram; its datagrams are
/// dropped and counted meanwhile.
#[tokio::test]
async fn a_refused_source_is_held_not_retried_per_datagram() {
    let engine = engine_with_idle(Duration::from_secs(60)).await;
    let owner = crate::support::options(&engine)
        .accept_backlog(1)
        .build()
        .unwrap();
    let control = owner.connect().await.unwrap();
    let tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().publish())
        .await
        .unwrap();
    let target = udp_addr(&tunnel.forwarding_address());
    // A fills the backlog of 1 (nobody accepts).
    let a = udp_client().await;
    a.send_to(b"a", target).await.unwrap();
    within("a queued", async {
        while tunnel.stats().accepted < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // B is refused, then keeps sending.
    let b = udp_client().await;
    b.send_to(b"b0", target).await.unwrap();
    within("b refused", async {
        while tunnel.stats().refused_backlog_full < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    for i in 1..=20u8 {
        b.send_to(&[b'b', i], target).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (opened, dropped, _) = engine.datagram_counters();
    assert_eq!(opened, 2, "one channel per source, none per datagram");
    assert_eq!(dropped, 21, "b0, never delivered, and the 20 after it");
    assert_eq!(tunnel.stats().refused_backlog_full, 1);
}
