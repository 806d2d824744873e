//! Datagram tunnels, plane B (framed on streams), against the local engine:
//! private echo through `dial_datagram` ⇄ `DatagramTunnel::accept`,
//! several channels at once, the merged `DatagramSocket`, size limits,
//! hostile frame headers, close both ways, and the socket's bounded queue.

use std::sync::Arc;
use std::time::Duration;

use rstream::datagram::{DatagramSocket, MAX_DATAGRAM_SIZE, SOCKET_QUEUE};
use rstream::error::code;
use rstream::{DatagramTunnel, ErrorKind, TunnelOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{client_on, datagram_echo, engine, within};

/// A client on TLS: these tests are about plane B (ordered, reliable,
/// up to 65,535 bytes); under `Transport::Auto` with feature `quic` a
/// dial would ride plane A (datagram_quic.rs tests that one).
fn client(engine: &rstream::engine::LocalEngine) -> rstream::Client {
    client_on(engine, rstream::Transport::Tls)
}

async fn private(control: &rstream::ControlChannel, name: &str) -> DatagramTunnel {
    control
        .create_datagram_tunnel(TunnelOptions::datagram().name(name))
        .await
        .expect("datagram tunnel")
}

#[tokio::test]
async fn private_echo_whole_datagrams_in_order() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let tunnel = private(&control, "udp-echo").await;
    assert_eq!(tunnel.properties().r#type.as_deref(), Some("datagram"));
    assert_eq!(
        tunnel.forwarding_address(),
        "rstrm://udp-echo (unpublished)"
    );
    assert!(!tunnel.guaranteed_delivery());
    let _server = datagram_echo(tunnel);

    let channel = within("dial", client.dial_datagram("udp-echo"))
        .await
        .unwrap();
    assert!(!channel.peer().stream_id().is_empty());
    assert_eq!(channel.peer().source_ip(), None);
    let sizes = [0usize, 1, 5, 1400, 16 * 1024 + 3, MAX_DATAGRAM_SIZE];
    for (i, &n) in sizes.iter().enumerate() {
        let d: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
        channel.send(&d).await.unwrap();
    }
    for (i, &n) in sizes.iter().enumerate() {
        let back = within("echo", channel.recv()).await.unwrap();
        assert_eq!(back.len(), n, "datagram {i} whole");
        assert!(back.iter().enumerate().all(|(j, b)| *b == (i + j) as u8));
    }
    channel.close().await;
    assert!(channel.is_closed());
    let err = channel.send(b"late").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn several_channels_at_once_stay_apart() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let mut tunnel = private(&control, "multi").await;
    // The server answers each peer with its own tag, so mixed-up channels show.
    let server = tokio::spawn(async move {
        let mut peers = Vec::new();
        while let Ok(channel) = tunnel.accept().await {
            peers.push(channel.peer().clone());
            tokio::spawn(async move {
                let tag = channel.peer().stream_id().to_owned();
                while let Ok(d) = channel.recv().await {
                    let mut answer = tag.as_bytes().to_vec();
                    answer.push(b'|');
                    answer.extend_from_slice(&d);
                    if channel.send(&answer).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let mut dialers = Vec::new();
    for n in 0..8u32 {
        let client = client.clone();
        dialers.push(tokio::spawn(async move {
            let channel = client.dial_datagram("multi").await.unwrap();
            let tag = channel.peer().stream_id().to_owned();
            for i in 0..50u32 {
                let msg = format!("{n}:{i}");
                channel.send(msg.as_bytes()).await.unwrap();
                let back = within("echo", channel.recv()).await.unwrap();
                assert_eq!(back, format!("{tag}|{msg}").as_bytes());
            }
            tag
        }));
    }
    let mut tags = Vec::new();
    for d in dialers {
        tags.push(within("dialer", d).await.unwrap());
    }
    tags.sort();
    tags.dedup();
    assert_eq!(tags.len(), 8, "one stream id per channel");
    server.abort();
}

#[tokio::test]
async fn merged_socket_answers_each_peer() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let socket = Arc::new(private(&control, "merged").await.into_socket());
    assert!(socket.forwarding_address().contains("merged"));
    let echo = {
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
            loop {
                let (n, peer) = match socket.recv_from(&mut buf).await {
                    Ok(r) => r,
                    Err(_) => break,
                };
                let _ = socket.send_to(&buf[..n], &peer).await;
            }
        })
    };
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(client.dial_datagram("merged").await.unwrap());
    }
    for round in 0..20 {
        for (i, c) in channels.iter().enumerate() {
            c.send(format!("{i}/{round}").as_bytes()).await.unwrap();
        }
        for (i, c) in channels.iter().enumerate() {
            let back = within("socket echo", c.recv()).await.unwrap();
            assert_eq!(back, format!("{i}/{round}").as_bytes());
        }
    }
    assert_eq!(socket.peers().len(), 4);
    // A peer that closes leaves the socket.
    let gone = channels.pop().unwrap();
    gone.close().await;
    within("peer removed", async {
        while socket.peers().len() != 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let unknown = rstream::DatagramPeer::clone(gone.peer());
    let err = socket.send_to(b"x", &unknown).await.unwrap_err();
    assert_eq!(err.code(), code::DATAGRAM_CLOSED);
    assert_eq!(socket.dropped(), 0);
    socket.close().await.unwrap();
    within("echo loop ends", echo).await.unwrap();
}

#[tokio::test]
async fn merged_socket_queue_is_bounded_drops_are_counted() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let socket: DatagramSocket = private(&control, "flood").await.into_socket();
    let channel = client.dial_datagram("flood").await.unwrap();
    const SENT: u64 = 500;
    for i in 0..SENT {
        channel.send(&i.to_be_bytes()).await.unwrap();
    }
    // Nobody reads: SOCKET_QUEUE wait, the rest are dropped and counted.
    within("all datagrams accounted for", async {
        while socket.dropped() < SENT - SOCKET_QUEUE as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(socket.dropped(), SENT - SOCKET_QUEUE as u64);
    let mut buf = [0u8; 8];
    for i in 0..SOCKET_QUEUE as u64 {
        let (n, _) = within("queued", socket.recv_from(&mut buf)).await.unwrap();
        assert_eq!(
            (n, u64::from_be_bytes(buf)),
            (8, i),
            "the first ones, in order"
        );
    }
    let more = tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await;
    assert!(more.is_err(), "nothing beyond the queue");
    // A datagram larger than the caller's buffer: an error, not truncation.
    channel.send(&[1u8; 100]).await.unwrap();
    let err = within("small buffer", socket.recv_from(&mut buf))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::DATAGRAM_TOO_LARGE);
}

#[tokio::test]
async fn oversize_send_is_an_error_and_the_channel_goes_on() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let _server = datagram_echo(private(&control, "big").await);
    let channel = client.dial_datagram("big").await.unwrap();
    let err = channel
        .send(&vec![0u8; MAX_DATAGRAM_SIZE + 1])
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::DATAGRAM_TOO_LARGE);
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(!channel.is_closed());
    channel.send(b"after").await.unwrap();
    assert_eq!(&within("echo", channel.recv()).await.unwrap()[..], b"after");
}

#[tokio::test]
async fn hostile_frame_header_closes_the_channel_without_allocating() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let mut tunnel = private(&control, "hostile").await;
    // A peer speaking raw bytes: one good frame, then a header claiming 4 GiB.
    let mut raw = client.dial("hostile").await.unwrap();
    raw.write_all(&[0, 0, 0, 2, b'o', b'k', 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    let channel = within("accept", tunnel.accept()).await.unwrap();
    assert_eq!(
        &within("good frame", channel.recv()).await.unwrap()[..],
        b"ok"
    );
    // The error comes at once, from the header: no 4 GiB body is awaited.
    let err = within("hostile header", channel.recv()).await.unwrap_err();
    assert_eq!(err.code(), code::DATAGRAM_TOO_LARGE, "{err}");
    assert!(channel.is_closed());
    // The raw peer sees its stream end.
    let mut rest = Vec::new();
    let _ = within("raw peer closed", raw.read_to_end(&mut rest)).await;

    // The same from the other side: a dialer meets a hostile owner.
    let mut bytes = control
        .create_tunnel(TunnelOptions::new().name("hostile-owner"))
        .await
        .unwrap();
    let owner = tokio::spawn(async move {
        let mut s = bytes.accept().await.unwrap();
        s.write_all(&65_536u32.to_be_bytes()).await.unwrap();
        s.flush().await.unwrap();
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink).await;
    });
    let dialer = client.dial_datagram("hostile-owner").await.unwrap();
    let err = within("hostile owner", dialer.recv()).await.unwrap_err();
    assert_eq!(err.code(), code::DATAGRAM_TOO_LARGE, "{err}");
    within("owner sees the close", owner).await.unwrap();
}

#[tokio::test]
async fn close_propagates_both_ways() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let mut tunnel = private(&control, "closing").await;

    // The dialer closes: what it sent first still arrives, then Closed.
    let dialer = client.dial_datagram("closing").await.unwrap();
    dialer.send(b"last words").await.unwrap();
    dialer.close().await;
    let owner = within("accept", tunnel.accept()).await.unwrap();
    assert_eq!(
        &within("queued", owner.recv()).await.unwrap()[..],
        b"last words"
    );
    let err = within("closed", owner.recv()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    within("closed future", owner.closed()).await;

    // The owner closes: the dialer's recv ends the same way; dropping is a close too.
    let dialer = client.dial_datagram("closing").await.unwrap();
    dialer.send(b"hello").await.unwrap();
    let owner = within("accept", tunnel.accept()).await.unwrap();
    assert_eq!(&within("hello", owner.recv()).await.unwrap()[..], b"hello");
    owner.send(b"bye").await.unwrap();
    drop(owner);
    assert_eq!(&within("bye", dialer.recv()).await.unwrap()[..], b"bye");
    let err = within("closed", dialer.recv()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(dialer.send(b"x").await.is_err());
}

#[tokio::test]
async fn datagram_options_and_the_returned_type() {
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    // Datagram options go through create_datagram_tunnel only.
    let err = control
        .create_tunnel(TunnelOptions::datagram())
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::UNSUPPORTED_TUNNEL);
    // Guaranteed delivery is stored and returned.
    let tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().datagram_guaranteed_delivery(true))
        .await
        .unwrap();
    assert!(tunnel.guaranteed_delivery());
    assert_eq!(
        engine.tunnels()[0].properties.r#type.as_deref(),
        Some("datagram")
    );
    // create_datagram_tunnel makes any options a datagram tunnel.
    let other = control
        .create_datagram_tunnel(TunnelOptions::new().name("forced"))
        .await
        .unwrap();
    assert_eq!(other.properties().r#type.as_deref(), Some("datagram"));
    // DTLS/QUIC are later steps: refused before any I/O.
    let err = control
        .create_datagram_tunnel(TunnelOptions::datagram().protocol(rstream::Protocol::Quic))
        .await
        .unwrap_err();
    assert_eq!(err.code(), code::UNSUPPORTED_TUNNEL);
    assert!(!control.is_closed());
}

/// Against a scripted engine: `DatagramChannelClose{stream_id}` on the
/// control channel closes that accepted channel even while its stream is
/// still open; an unknown id is ignored; and a tunnel the engine returns
/// as `bytestream` is refused (and closed) by `create_datagram_tunnel`.
#[tokio::test]
async fn engine_datagram_channel_close_and_the_returned_type_decide() {
    use crate::support::scripted::{self, Scripted};
    use rstream::proto::{self, message::Payload};

    let engine = Scripted::start().await;
    let (control, mut peer) = scripted::channel(&engine).await;
    async fn open(
        control: &rstream::ControlChannel,
        peer: &mut scripted::Peer,
        id: &str,
    ) -> rstream::Result<DatagramTunnel> {
        let (tunnel, ()) = tokio::join!(
            control.create_datagram_tunnel(TunnelOptions::datagram().name(id)),
            async {
                let req = match within("OpenTunnelReq", peer.recv()).await {
                    Some(Payload::OpenTunnelReq(r)) => r,
                    other => panic!("expected OpenTunnelReq, got {:?}", other.map(|p| p.name())),
                };
                let mut props = req.tunnel_properties.unwrap();
                assert_eq!(props.r#type.as_deref(), Some("datagram"));
                props.id = Some(id.into());
                peer.send(Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
                    request_id: req.request_id,
                    payload: Some(proto::open_tunnel_rsp::Payload::TunnelProperties(props)),
                }))
                .await;
            }
        );
        tunnel
    }

    // The engine decides the type: a bytestream answer is closed again.
    let (refused, ()) = tokio::join!(
        control.create_datagram_tunnel(TunnelOptions::datagram().name("t0")),
        async {
            let req = match within("OpenTunnelReq", peer.recv()).await {
                Some(Payload::OpenTunnelReq(r)) => r,
                other => panic!("expected OpenTunnelReq, got {:?}", other.map(|p| p.name())),
            };
            let mut props = req.tunnel_properties.unwrap();
            props.id = Some("t0".into());
            props.r#type = Some("bytestream".into());
            peer.send(Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
                request_id: req.request_id,
                payload: Some(proto::open_tunnel_rsp::Payload::TunnelProperties(props)),
            }))
            .await;
            match within("CloseTunnelReq", peer.recv()).await {
                Some(Payload::CloseTunnelReq(req)) => assert_eq!(req.tunnel_id, "t0"),
                other => panic!("expected CloseTunnelReq, got {:?}", other.map(|p| p.name())),
            }
            peer.send(Payload::CloseTunnelRsp(proto::CloseTunnelRsp {
                tunnel_id: "t0".into(),
            }))
            .await;
        }
    );
    let err = refused.unwrap_err();
    assert_eq!(err.code(), code::UNSUPPORTED_TUNNEL, "{err}");

    let mut tunnel = open(&control, &mut peer, "t1").await.unwrap();
    let mut conn = scripted::proxy(&engine, &mut peer, "t1", "s1", None).await;
    let channel = within("accept", tunnel.accept()).await.unwrap();
    assert_eq!(channel.peer().stream_id(), "s1");
    conn.send_raw(b"\0\0\0\x02hi").await;
    assert_eq!(&within("framed", channel.recv()).await.unwrap()[..], b"hi");

    // Unknown ids change nothing.
    peer.send(Payload::DatagramChannelClose(proto::DatagramChannelClose {
        stream_id: "nope".into(),
        error: None,
    }))
    .await;
    // The real one closes the channel, though its stream is still open.
    peer.send(Payload::DatagramChannelClose(proto::DatagramChannelClose {
        stream_id: "s1".into(),
        error: None,
    }))
    .await;
    let err = within("closed by the engine", channel.recv())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(err.message().contains("engine"), "{err}");
    assert!(!control.is_closed());
}

/// Sends `msg` until it comes back (the engine may be restarting).
async fn udp_echo(udp: &tokio::net::UdpSocket, msg: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 64];
    for _ in 0..50 {
        udp.send(msg).await.unwrap();
        match tokio::time::timeout(Duration::from_millis(200), udp.recv(&mut buf)).await {
            Ok(Ok(n)) => return buf[..n].to_vec(),
            // Nothing listens yet (ICMP port unreachable): wait a little.
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => {}
        }
    }
    panic!("no echo for {msg:?}");
}

/// An engine restart: the control channel reconnects and re-creates the
/// published datagram tunnel at the same UDP address; the same
/// `DatagramTunnel` accepts the new channels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_datagram_tunnel_survives_an_engine_restart() {
    use rstream::engine::LocalEngine;
    use rstream::ReconnectPolicy;
    use tokio::net::UdpSocket;

    crate::support::init_tracing();
    let dir = std::env::temp_dir().join(format!("rstream-dgram-{}", std::process::id()));
    let start =
        |addr: std::net::SocketAddr| LocalEngine::builder().state_dir(&dir).listen(addr).start();
    let engine = start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = engine.local_addr();
    let client = crate::support::options(&engine).build().unwrap();
    let control = client
        .connect_with(
            ReconnectPolicy::new()
                .initial_delay(Duration::from_millis(50))
                .max_delay(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    let tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().name("udp-restart").publish())
        .await
        .unwrap();
    let address = tunnel.forwarding_address();
    let target = address.trim_end_matches(" (udp)").to_owned();
    let _echo = datagram_echo(tunnel);
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.connect(&target).await.unwrap();
    assert_eq!(udp_echo(&udp, b"before").await, b"before");

    engine.shutdown().await;
    let engine = start(addr).await.unwrap();
    // Same address, new engine, same DatagramTunnel.
    assert_eq!(
        within("echo after restart", udp_echo(&udp, b"after")).await,
        b"after"
    );
    let tunnels = engine.tunnels();
    assert_eq!(tunnels.len(), 1);
    assert_eq!(
        rstream::tunnel::forwarding_address(&tunnels[0].properties).unwrap(),
        address
    );
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
