//! Datagram tunnels on plane A (QUIC DATAGRAM frames, feature `quic`)
//! against the local engine over loopback UDP: a published UDP endpoint
//! with a QUIC owner, private dials in every dialer/owner transport mix
//! (DATAGRAM ⇄ DATAGRAM, and translated to and from framed streams),
//! guaranteed delivery forcing plane B, `DatagramChannelClose` both ways,
//! the size limit and the bounded receive queue.

use std::time::Duration;

use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{DatagramChannel, ErrorKind, Transport, TunnelOptions};
use tokio::net::UdpSocket;

use crate::support::{engine, options, within};

fn quic_client(engine: &LocalEngine) -> rstream::Client {
    options(engine).transport(Transport::Quic).build().unwrap()
}

/// A UDP socket connected to a published tunnel's `HOST:PORT (udp)`.
async fn udp_to(address: &str) -> UdpSocket {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.connect(address.trim_end_matches(" (udp)"))
        .await
        .unwrap();
    udp
}

/// Sends `msg` on `channel` until one comes back on `udp` (plane A is
/// unreliable; on loopback the first one normally arrives).
async fn round_trip_udp(udp: &UdpSocket, msg: &[u8]) -> Vec<u8> {
    let mut buf = [0u8; 2048];
    for _ in 0..20 {
        udp.send(msg).await.unwrap();
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(250), udp.recv(&mut buf)).await
        {
            return buf[..n].to_vec();
        }
    }
    panic!("no echo for {msg:?}");
}

/// Echoes every datagram of `channel` back.
fn echo(channel: DatagramChannel) -> tokio::task::JoinHandle<DatagramChannel> {
    tokio::spawn(async move {
        while let Ok(d) = channel.recv().await {
            if channel.send_bytes(d).await.is_err() {
                break;
            }
        }
        channel
    })
}

#[tokio::test]
async fn published_udp_to_a_quic_owner_rides_quic_datagrams() {
    let engine = engine().await;
    let owner = quic_client(&engine);
    let control = within("connect", owner.connect()).await.unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().publish())
        .await
        .unwrap();
    let udp = udp_to(&tunnel.forwarding_address()).await;
    udp.send(b"first").await.unwrap();
    let channel = within("accept", tunnel.accept()).await.unwrap();
    assert!(channel.is_quic_datagram(), "a QUIC owner uses plane A");
    assert!(channel.peer().source_ip().is_some());
    let max = channel.max_datagram_size();
    assert!((1000..1500).contains(&max), "QUIC datagram limit {max}");
    assert_eq!(
        &within("first", channel.recv()).await.unwrap()[..],
        b"first"
    );
    let _echo = echo(channel);
    for i in 0..50 {
        let msg = format!("datagram {i}");
        assert_eq!(round_trip_udp(&udp, msg.as_bytes()).await, msg.as_bytes());
    }
    // The largest payload that fits goes through whole.
    let big: Vec<u8> = (0..max).map(|j| (j % 251) as u8).collect();
    assert_eq!(round_trip_udp(&udp, &big).await, big);
    // No proxy stream was opened for the channel: one QUIC stream only
    // (the control channel).
    assert_eq!(engine.quic_streams_accepted(), 1);
}

/// A private datagram tunnel owned over `owner`, one channel dialed over
/// `dialer`, accepted: (tunnel, dialed, accepted).
async fn dialed_pair(
    engine: &LocalEngine,
    owner: Transport,
    dialer: Transport,
    options: TunnelOptions,
    name: &str,
) -> (
    rstream::ControlChannel,
    rstream::DatagramTunnel,
    DatagramChannel,
    DatagramChannel,
) {
    let owner = options_for(engine, owner);
    let control = within("connect", owner.connect()).await.unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(options.name(name))
        .await
        .unwrap();
    let dialer = options_for(engine, dialer);
    let dialed = within("dial", dialer.dial_datagram(name)).await.unwrap();
    // Unreliable on plane A: repeat until the owner hears one.
    let accepted = within("accept", tunnel.accept()).await.unwrap();
    let first = loop {
        dialed.send(b"hello").await.unwrap();
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(250), accepted.recv()).await {
            break r.unwrap();
        }
    };
    assert_eq!(&first[..], b"hello");
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(50), accepted.recv()).await {}
    assert_eq!(accepted.peer().stream_id(), dialed.peer().stream_id());
    (control, tunnel, dialed, accepted)
}

fn options_for(engine: &LocalEngine, transport: Transport) -> rstream::Client {
    options(engine).transport(transport).build().unwrap()
}

/// Sends `msg` on `channel` until it comes back (plane A is unreliable).
async fn round_trip(channel: &DatagramChannel, msg: &[u8]) -> Vec<u8> {
    for _ in 0..20 {
        channel.send(msg).await.unwrap();
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(250), channel.recv()).await {
            return r.unwrap().to_vec();
        }
    }
    panic!("no echo for {msg:?}");
}

#[tokio::test]
async fn private_dials_in_every_transport_mix() {
    let engine = engine().await;
    for (owner, dialer) in [
        (Transport::Quic, Transport::Quic),
        (Transport::Quic, Transport::Tls),
        (Transport::Tls, Transport::Quic),
        (Transport::Tls, Transport::Tls),
    ] {
        let before = engine.quic_streams_accepted();
        let (control, _tunnel, dialed, accepted) =
            dialed_pair(&engine, owner, dialer, TunnelOptions::datagram(), "mix").await;
        let what = format!("{owner} owner, {dialer} dialer");
        assert_eq!(
            accepted.is_quic_datagram(),
            owner == Transport::Quic,
            "{what}"
        );
        assert_eq!(
            dialed.is_quic_datagram(),
            dialer == Transport::Quic,
            "{what}"
        );
        // QUIC streams: the owner's control channel, the dialer's request
        // stream; a proxy stream only for a framed owner.
        let expected = u64::from(owner == Transport::Quic) + u64::from(dialer == Transport::Quic);
        assert_eq!(engine.quic_streams_accepted() - before, expected, "{what}");
        let _echo = echo(accepted);
        for i in 0..30 {
            let msg = format!("{what}: datagram {i}");
            assert_eq!(round_trip(&dialed, msg.as_bytes()).await, msg.as_bytes());
        }
        dialed.close().await;
        let _ = control.close().await;
    }
}

#[tokio::test]
async fn quic_dialer_falls_back_to_framed_for_guaranteed_delivery() {
    let engine = engine().await;
    let options = TunnelOptions::datagram().datagram_guaranteed_delivery(true);
    let (_control, _tunnel, dialed, accepted) =
        dialed_pair(&engine, Transport::Quic, Transport::Quic, options, "gd").await;
    assert!(!dialed.is_quic_datagram());
    assert!(!accepted.is_quic_datagram());
    let big = vec![7u8; 9000];
    let _echo = echo(accepted);
    dialed.send(&big).await.unwrap();
    assert_eq!(&within("echo", dialed.recv()).await.unwrap()[..], &big[..]);
}

#[tokio::test]
async fn datagram_channel_close_both_ways() {
    let engine = engine().await;
    // The dialer closes: the owner's channel ends (the engine's
    // DatagramChannelClose on its control channel).
    let (_control, _tunnel, dialed, accepted) = dialed_pair(
        &engine,
        Transport::Quic,
        Transport::Quic,
        TunnelOptions::datagram(),
        "dialer-closes",
    )
    .await;
    dialed.close().await;
    let err = within("owner sees the close", accepted.closed()).await;
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(matches!(accepted.recv().await, Err(e) if e.kind() == ErrorKind::Closed));

    // The owner closes: the client's DatagramChannelClose, then the
    // engine's on the dialer's request stream.
    let (control, _tunnel, dialed, accepted) = dialed_pair(
        &engine,
        Transport::Quic,
        Transport::Quic,
        TunnelOptions::datagram(),
        "owner-closes",
    )
    .await;
    accepted.close().await;
    let err = within("dialer sees the close", dialed.closed()).await;
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(err.message().contains("engine"), "{err}");
    assert!(dialed.send(b"late").await.is_err());
    assert!(!control.is_closed());
}

#[tokio::test]
async fn guaranteed_delivery_forces_framed_streams_over_quic() {
    let engine = engine().await;
    let owner = quic_client(&engine);
    let control = within("connect", owner.connect()).await.unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(
            TunnelOptions::datagram()
                .publish()
                .datagram_guaranteed_delivery(true),
        )
        .await
        .unwrap();
    assert!(tunnel.guaranteed_delivery());
    let udp = udp_to(&tunnel.forwarding_address()).await;
    udp.send(b"first").await.unwrap();
    let channel = within("accept", tunnel.accept()).await.unwrap();
    assert!(
        !channel.is_quic_datagram(),
        "guaranteed delivery is plane B"
    );
    assert_eq!(
        channel.max_datagram_size(),
        rstream::datagram::MAX_DATAGRAM_SIZE
    );
    assert_eq!(
        &within("first", channel.recv()).await.unwrap()[..],
        b"first"
    );
    let _echo = echo(channel);
    assert_eq!(round_trip_udp(&udp, b"framed").await, b"framed");
    // Control channel + the channel's proxy stream.
    assert_eq!(engine.quic_streams_accepted(), 2);
}

#[tokio::test]
async fn oversize_is_an_error_and_the_receive_queue_drops_and_counts() {
    let engine = engine().await;
    let owner = quic_client(&engine);
    let control = within("connect", owner.connect()).await.unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().publish())
        .await
        .unwrap();
    let udp = udp_to(&tunnel.forwarding_address()).await;
    udp.send(b"first").await.unwrap();
    let channel = within("accept", tunnel.accept()).await.unwrap();
    assert!(channel.is_quic_datagram());
    let max = channel.max_datagram_size();
    let err = channel.send(&vec![0u8; max + 1]).await.unwrap_err();
    assert_eq!(err.code(), code::DATAGRAM_TOO_LARGE, "{err}");
    assert_eq!(err.kind(), ErrorKind::Protocol);
    assert!(!channel.is_closed(), "the channel goes on");
    channel.send(b"still open").await.unwrap();
    let mut buf = [0u8; 64];
    let n = within("after oversize", udp.recv(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"still open");

    // Nobody reads: 64 wait, the rest are dropped and counted.
    let before = channel.dropped();
    for i in 0..400u32 {
        udp.send(&i.to_be_bytes()).await.unwrap();
        if i % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let dropped = channel.dropped() - before;
    assert!(dropped > 0, "nothing dropped");
    let mut queued = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(100), channel.recv()).await {
        queued += 1;
    }
    assert!(queued <= 65, "{queued} queued"); // "first" was read already
    assert!(queued >= 1);
}

#[tokio::test]
async fn idle_published_quic_channel_expires_with_datagram_channel_close() {
    crate::support::init_tracing();
    let engine = LocalEngine::builder()
        .datagram_idle_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let owner = quic_client(&engine);
    let control = within("connect", owner.connect()).await.unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().publish())
        .await
        .unwrap();
    let udp = udp_to(&tunnel.forwarding_address()).await;
    udp.send(b"once").await.unwrap();
    let channel = within("accept", tunnel.accept()).await.unwrap();
    assert!(channel.is_quic_datagram());
    assert_eq!(&within("once", channel.recv()).await.unwrap()[..], b"once");
    // Nothing either way: the engine expires it and tells the owner.
    let err = within("expiry", channel.closed()).await;
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(err.message().contains("engine"), "{err}");
    // The same source starts a new channel.
    udp.send(b"again").await.unwrap();
    let again = within("accept again", tunnel.accept()).await.unwrap();
    assert_ne!(again.peer().stream_id(), channel.peer().stream_id());
    assert_eq!(&within("again", again.recv()).await.unwrap()[..], b"again");
}

#[tokio::test]
async fn accepted_quic_channels_end_with_their_engine() {
    let engine = engine().await;
    let owner = quic_client(&engine);
    let control = within("connect", owner.connect()).await.unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().publish())
        .await
        .unwrap();
    let udp = udp_to(&tunnel.forwarding_address()).await;
    udp.send(b"hi").await.unwrap();
    let channel = within("accept", tunnel.accept()).await.unwrap();
    assert!(channel.is_quic_datagram());
    engine.shutdown().await;
    let err = within("closed with the engine", channel.closed()).await;
    assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    assert!(channel.send(b"late").await.is_err());
}

/// The 12-byte plane-A channel id of a stream id (DATAGRAM_QUIC.md §2 A):
/// its first 24 hex digits, dashes dropped.
fn wire_channel_id(stream_id: &str) -> [u8; 12] {
    let hex: String = stream_id.chars().filter(|c| *c != '-').take(24).collect();
    let mut id = [0u8; 12];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex stream id");
    }
    id
}

/// A plane-A dial on a raw QUIC connection of its own (ALPN `rstrm/1`, as
/// a Go client would open it), so a test can send any DATAGRAM frame.
struct RawDial {
    conn: quinn::Connection,
    /// The request stream: the channel's lifeline.
    lifeline: (quinn::SendStream, quinn::RecvStream),
    stream_id: String,
    /// The channel id every frame starts with.
    id: [u8; 12],
    _endpoint: quinn::Endpoint,
}

impl RawDial {
    /// Dials `name` on plane A as agent `agent`.
    async fn open(engine: &LocalEngine, name: &str) -> RawDial {
        use rstream::proto::{message::Payload, stream_rsp, StreamReq};

        use crate::support::raw::{details, recv, send};

        let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let tls = crate::support::tls_config(engine.ca_pem(), &[b"rstrm/1"]);
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let config = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
        let conn = within(
            "handshake",
            endpoint
                .connect_with(config, engine.local_addr(), "localhost")
                .unwrap(),
        )
        .await
        .unwrap();
        let (mut tx, mut rx) = conn.open_bi().await.unwrap();
        let req = StreamReq {
            client_details: Some(details("raw", None)),
            tunnel_id_name: name.into(),
            zero_rtt: Some(false),
            datagram_channel: Some(true),
        };
        send(&mut tx, Payload::StreamReq(req)).await;
        let stream_id = match within("StreamRsp", recv(&mut rx)).await {
            Payload::StreamRsp(rsp) => match rsp.payload {
                Some(stream_rsp::Payload::StreamId(id)) => id,
                other => panic!("expected a stream id, got {other:?}"),
            },
            other => panic!("expected StreamRsp, got {}", other.name()),
        };
        RawDial {
            id: wire_channel_id(&stream_id),
            stream_id,
            conn,
            lifeline: (tx, rx),
            _endpoint: endpoint,
        }
    }

    /// A DATAGRAM frame of this channel.
    fn frame(&self, payload: &[u8]) -> bytes::Bytes {
        bytes::Bytes::from([&self.id[..], payload].concat())
    }

    /// Sends `payload` until a frame comes back (plane A is unreliable).
    async fn echo(&self, payload: &[u8]) -> bytes::Bytes {
        for _ in 0..20 {
            self.conn.send_datagram(self.frame(payload)).unwrap();
            if let Ok(Ok(back)) =
                tokio::time::timeout(Duration::from_millis(250), self.conn.read_datagram()).await
            {
                return back;
            }
        }
        panic!("no echo of {payload:?}");
    }
}

/// Waits (3 s at most) until `done` holds for the engine's plane-A drop
/// counters, and returns them.
async fn drops_when(
    engine: &LocalEngine,
    done: impl Fn(&rstream::engine::QuicDatagramDrops) -> bool,
) -> rstream::engine::QuicDatagramDrops {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let drops = engine.quic_datagram_drops();
        if done(&drops) || tokio::time::Instant::now() >= deadline {
            return drops;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A hostile dialer on its own raw QUIC connection sends DATAGRAM frames
/// the engine must drop: empty, shorter than a channel id, an id nobody
/// announced, the id of another connection's channel. Each is dropped
/// without an answer and counted by reason; the channel it did announce
/// keeps echoing, and the other client's channel sees none of it.
#[tokio::test]
async fn hostile_datagram_frames_are_dropped_and_channels_go_on() {
    let engine = engine().await;
    let owner = quic_client(&engine);
    let control = within("connect", owner.connect()).await.unwrap();
    let _server = crate::support::datagram_echo(
        control
            .create_datagram_tunnel(TunnelOptions::datagram().name("hostile"))
            .await
            .unwrap(),
    );
    // A well-behaved dialer on a QUIC connection of its own.
    let other = quic_client(&engine);
    let bystander = within("dial", other.dial_datagram("hostile"))
        .await
        .unwrap();
    assert!(bystander.is_quic_datagram());

    let raw = RawDial::open(&engine, "hostile").await;
    let conn = &raw.conn;
    assert_eq!(raw.echo(b"before").await, raw.frame(b"before"));
    let before = engine.quic_datagram_drops();
    assert_eq!(before.short + before.unknown_channel, 0, "{before:?}");

    let mut foreign = [0xffu8; 12];
    foreign[0] = !raw.id[0];
    // The bystander's own id, spoofed from another connection: the engine
    // routes by (connection, id), so it must go nowhere.
    let spoofed = wire_channel_id(bystander.peer().stream_id());
    assert_ne!(spoofed, raw.id);
    for hostile in [
        bytes::Bytes::new(),
        bytes::Bytes::from_static(b"short"),
        bytes::Bytes::from_static(&[0u8; 11]),
        bytes::Bytes::from([&foreign[..], b"nobody's"].concat()),
        bytes::Bytes::from([&spoofed[..], b"spoofed"].concat()),
    ] {
        for _ in 0..50 {
            conn.send_datagram(hostile.clone()).unwrap();
        }
    }
    // Nothing answers them, and the bystander's channel sees none of it.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), conn.read_datagram())
            .await
            .is_err(),
        "a dropped frame was answered"
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(100), bystander.recv())
            .await
            .is_err(),
        "a hostile frame reached another channel"
    );
    // Each drop is counted by its reason (loopback loses none of them).
    let drops = drops_when(&engine, |d| d.short >= 150 && d.unknown_channel >= 100).await;
    assert_eq!(
        (drops.short, drops.unknown_channel),
        (150, 100),
        "{drops:?}"
    );
    assert_eq!((drops.queue_full, drops.too_large), (0, 0), "{drops:?}");
    // The announced channel and the bystander's go on.
    assert_eq!(raw.echo(b"after").await, raw.frame(b"after"));
    let mut back = None;
    for _ in 0..20 {
        bystander.send(b"bystander").await.unwrap();
        if let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(250), bystander.recv()).await
        {
            back = Some(d);
            break;
        }
    }
    assert_eq!(back.as_deref(), Some(&b"bystander"[..]));
    conn.close(0u32.into(), b"");
}

/// A plane-A dialer floods a channel whose owner (on TLS: plane B, the
/// engine translates) never reads: the owner's stream pushes back, the
/// engine's queue for the channel (64 datagrams) fills, and the rest is
/// dropped and counted, never buffered: what the owner can still read
/// afterwards is what the stream buffers held, far less than was sent.
#[tokio::test]
async fn flooding_a_channel_whose_owner_does_not_read_is_dropped_and_counted() {
    const SENT: usize = 30_000;
    let engine = engine().await;
    let owner = options_for(&engine, Transport::Tls);
    let control = within("connect", owner.connect()).await.unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().name("flood"))
        .await
        .unwrap();
    let raw = RawDial::open(&engine, "flood").await;
    let accepted = within("accept", tunnel.accept()).await.unwrap();
    assert!(!accepted.is_quic_datagram(), "a TLS owner is on plane B");
    assert_eq!(accepted.peer().stream_id(), raw.stream_id);
    let payload = vec![0x5au8; 1000];
    for _ in 0..SENT {
        within("send", raw.conn.send_datagram_wait(raw.frame(&payload)))
            .await
            .unwrap();
    }
    // Stable once the engine has seen the last of them.
    let mut drops = engine.quic_datagram_drops();
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = engine.quic_datagram_drops();
        if now == drops {
            break;
        }
        drops = now;
    }
    assert!(drops.queue_full > 0, "{drops:?}");
    assert_eq!(drops.short + drops.unknown_channel + drops.too_large, 0);
    // The owner reads at last: what waited in the queue and the buffers.
    let mut read = 0u64;
    while let Ok(Ok(d)) = tokio::time::timeout(Duration::from_millis(500), accepted.recv()).await {
        assert_eq!(d.len(), payload.len());
        read += 1;
    }
    let sent = SENT as u64;
    assert!(read > 0);
    assert!(read + drops.queue_full <= sent, "{read} + {drops:?}");
    assert!(
        read < sent / 2,
        "{read} of {sent} held: drops must bound the buffers"
    );
    // The channel still works, both ways.
    accepted.send(b"back").await.unwrap();
    let back = within("back", raw.conn.read_datagram()).await.unwrap();
    assert_eq!(back, raw.frame(b"back"));
}

/// A framed dialer (TLS) sends a datagram larger than the plane-A owner's
/// QUIC connection carries: the engine drops it (never truncates) and
/// counts it; the next one gets through.
#[tokio::test]
async fn oversize_for_a_quic_owner_is_dropped_and_counted() {
    let engine = engine().await;
    let (_control, _tunnel, dialed, accepted) = dialed_pair(
        &engine,
        Transport::Quic,
        Transport::Tls,
        TunnelOptions::datagram(),
        "oversize",
    )
    .await;
    assert!(accepted.is_quic_datagram() && !dialed.is_quic_datagram());
    let big = vec![1u8; accepted.max_datagram_size() + 1];
    dialed.send(&big).await.unwrap();
    let drops = drops_when(&engine, |d| d.too_large > 0).await;
    assert_eq!(drops.too_large, 1, "{drops:?}");
    dialed.send(b"small").await.unwrap();
    assert_eq!(
        &within("small", accepted.recv()).await.unwrap()[..],
        b"small"
    );
}

/// A dialed channel with no datagram either way for the engine's datagram
/// idle timeout is closed, in each mix where the engine relays DATAGRAM
/// frames: plane A ⇄ plane A, a plane-A dialer to a framed owner, a
/// framed dialer to a plane-A owner. Both sides hear it (the dialer on its
/// lifeline or stream, the owner with `DatagramChannelClose`); a channel
/// in use meanwhile is not closed.
#[tokio::test]
async fn idle_dialed_channels_expire_on_both_sides() {
    const IDLE: Duration = Duration::from_millis(800);
    crate::support::init_tracing();
    let engine = LocalEngine::builder()
        .datagram_idle_timeout(IDLE)
        .start()
        .await
        .unwrap();
    for (i, (owner, dialer)) in [
        (Transport::Quic, Transport::Quic),
        (Transport::Tls, Transport::Quic),
        (Transport::Quic, Transport::Tls),
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("idle-{i}");
        let (_control, _tunnel, dialed, accepted) =
            dialed_pair(&engine, owner, dialer, TunnelOptions::datagram(), &name).await;
        let mix = format!("owner {owner:?}, dialer {dialer:?}");
        // In use for two idle timeouts: still open.
        for _ in 0..8 {
            dialed.send(b"busy").await.unwrap();
            tokio::time::sleep(IDLE / 4).await;
        }
        assert!(
            !dialed.is_closed() && !accepted.is_closed(),
            "{mix}: closed while in use"
        );
        let quiet = tokio::time::Instant::now();
        let err = within("dialer closed", dialed.closed()).await;
        assert_eq!(err.kind(), ErrorKind::Closed, "{mix}: {err}");
        let err = within("owner closed", accepted.closed()).await;
        assert_eq!(err.kind(), ErrorKind::Closed, "{mix}: {err}");
        let waited = quiet.elapsed();
        assert!(waited < IDLE * 4, "{mix}: closed after {waited:?}");
        assert!(dialed.send(b"late").await.is_err(), "{mix}");
    }
}

/// A client on QUIC dials its own datagram tunnel: the dial rides the
/// control channel's QUIC connection, where one channel id cannot name
/// both sides, so the engine refuses plane A before asking the owner; the
/// dial falls back to a framed stream quietly, translated to the owner's
/// plane A. The owner accepts exactly one channel, and it echoes.
#[tokio::test]
async fn self_dial_over_one_quic_connection_is_one_working_channel() {
    let engine = engine().await;
    let client = quic_client(&engine);
    let control = within("connect", client.connect()).await.unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().name("self"))
        .await
        .unwrap();
    let dialed = within("dial", client.dial_datagram("self")).await.unwrap();
    assert!(
        !dialed.is_quic_datagram(),
        "plane A is refused to a self-dial"
    );
    let accepted = within("accept", tunnel.accept()).await.unwrap();
    assert!(accepted.is_quic_datagram(), "the owner stays on plane A");
    assert_eq!(accepted.peer().stream_id(), dialed.peer().stream_id());
    let _echo = echo(accepted);
    for i in 0..20 {
        let msg = format!("self {i}");
        assert_eq!(round_trip(&dialed, msg.as_bytes()).await, msg.as_bytes());
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), tunnel.accept())
            .await
            .is_err(),
        "the owner saw a second channel"
    );
    assert!(!dialed.is_closed());
    assert_eq!(engine.quic_datagram_drops().unknown_channel, 0);
}

/// On the wire (DATAGRAM_QUIC.md §2 A, dial side): an idle plane-A dial's
/// lifeline carries `DatagramChannelClose{stream_id}`, then ends.
#[tokio::test]
async fn idle_raw_dial_gets_datagram_channel_close_on_its_lifeline() {
    use rstream::proto::message::Payload;

    crate::support::init_tracing();
    let engine = LocalEngine::builder()
        .datagram_idle_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let owner = quic_client(&engine);
    let control = within("connect", owner.connect()).await.unwrap();
    let _server = crate::support::datagram_echo(
        control
            .create_datagram_tunnel(TunnelOptions::datagram().name("idle-raw"))
            .await
            .unwrap(),
    );
    let mut raw = RawDial::open(&engine, "idle-raw").await;
    assert_eq!(raw.echo(b"once").await, raw.frame(b"once"));
    match within("close", crate::support::raw::recv(&mut raw.lifeline.1)).await {
        Payload::DatagramChannelClose(close) => assert_eq!(close.stream_id, raw.stream_id),
        other => panic!("expected DatagramChannelClose, got {}", other.name()),
    }
    let mut rest = Vec::new();
    let n = within(
        "end",
        tokio::io::AsyncReadExt::read_to_end(&mut raw.lifeline.1, &mut rest),
    )
    .await
    .unwrap();
    assert_eq!(n, 0, "nothing after the close");
}
