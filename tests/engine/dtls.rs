//! Published DTLS datagram tunnels (feature `dtls`): the engine terminates
//! DTLS on the tunnel's UDP address with its certificate and the app gets
//! plaintext datagrams through the ordinary `DatagramTunnel`. Real DTLS
//! peers (a dimpl client over a UDP socket, `openssl s_client -dtls1_2`)
//! trusting the engine CA reach an echo app whose owner is on TLS (plane
//! B) or QUIC (plane A); garbage, half handshakes and untrusting clients
//! reach nothing of the owner.

use std::net::SocketAddr;
use std::time::Duration;

use rstream::engine::LocalEngine;
use rstream::{ErrorKind, Protocol, TunnelOptions};
use tokio::net::UdpSocket;

use crate::support::dtls::{
    client_hello, half_handshake, DtlsClient, Event, OpensslClient, Version,
};
use crate::support::pki::Ca;
use crate::support::{client_on, datagram_echo, init_tracing, within};

async fn engine_with(handshake: Duration, idle: Duration, channels: usize) -> LocalEngine {
    init_tracing();
    LocalEngine::builder()
        .dtls_handshake_timeout(handshake)
        .datagram_idle_timeout(idle)
        .max_datagram_channels(channels)
        .start()
        .await
        .expect("engine starts")
}

async fn engine() -> LocalEngine {
    engine_with(Duration::from_secs(10), Duration::from_secs(60), 1024).await
}

/// `127.0.0.1:PORT` from `127.0.0.1:PORT (dtls)`.
fn udp_addr(forwarding: &str) -> SocketAddr {
    forwarding
        .strip_suffix(" (dtls)")
        .unwrap_or_else(|| panic!("not a DTLS address: {forwarding}"))
        .parse()
        .expect("socket address")
}

/// A published dtls tunnel of an owner on `transport`, its datagrams
/// echoed by the app; its UDP address.
async fn echo_tunnel(
    engine: &LocalEngine,
    transport: rstream::Transport,
) -> (rstream::ControlChannel, SocketAddr) {
    let control = client_on(engine, transport).connect().await.unwrap();
    let tunnel = control
        .create_datagram_tunnel(TunnelOptions::dtls().name("dtls-echo"))
        .await
        .expect("dtls tunnel");
    let p = tunnel.properties();
    assert_eq!(p.r#type.as_deref(), Some("datagram"));
    assert_eq!(p.protocol.as_deref(), Some("dtls"));
    let target = udp_addr(&tunnel.forwarding_address());
    // Detached: it lives as long as the tunnel.
    drop(datagram_echo(tunnel));
    (control, target)
}

/// Waits (20 s at most) until `done` holds: deadlines that fire on the
/// engine's timers, observed without betting on the machine's load.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    within(what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Round trips of `sizes` through `client`, each datagram whole.
async fn round_trips(client: &mut DtlsClient, sizes: &[usize]) {
    for (i, &n) in sizes.iter().enumerate() {
        let d: Vec<u8> = (0..n).map(|j| (i * 7 + j) as u8).collect();
        client.send(&d).await;
        assert_eq!(client.recv().await, d, "datagram {i} of {n} bytes");
    }
}

#[tokio::test]
async fn dtls_echo_owner_on_tls_for_dtls_1_2_and_1_3_clients() {
    let engine = engine().await;
    let (_control, target) = echo_tunnel(&engine, rstream::Transport::Tls).await;
    let ca = engine.ca_pem();
    let sizes = [1, 5, 100, 1200, 8000, 16 * 1024];
    let mut clients = Vec::new();
    for version in [Version::V12, Version::V13, Version::Auto] {
        let mut client = DtlsClient::connect(target, ca, version)
            .await
            .unwrap_or_else(|e| panic!("{version:?} handshake: {e}"));
        round_trips(&mut client, &sizes).await;
        clients.push(client);
    }
    // Each session its own channel, all still working side by side.
    for client in &mut clients {
        round_trips(client, &[3, 300]).await;
    }
    let (completed, failed, rejected) = engine.dtls_counters();
    assert_eq!((completed, failed, rejected), (3, 0, 0));
    let (opened, dropped, refused) = engine.datagram_counters();
    assert_eq!((opened, dropped, refused), (3, 0, 0));
}

#[cfg(feature = "quic")]
#[tokio::test]
async fn dtls_echo_owner_on_quic_plane_a() {
    let engine = engine().await;
    let (_control, target) = echo_tunnel(&engine, rstream::Transport::Quic).await;
    let streams = engine.quic_streams_accepted();
    let mut client = DtlsClient::connect(target, engine.ca_pem(), Version::Auto)
        .await
        .expect("handshake");
    // QUIC DATAGRAM frames carry up to ~1.1 KB here.
    round_trips(&mut client, &[1, 64, 900, 1000]).await;
    // Plane A: the channel opened no stream.
    assert_eq!(engine.quic_streams_accepted(), streams);
    assert_eq!(engine.datagram_counters().0, 1);
}

#[tokio::test]
async fn openssl_s_client_dtls12_echo() {
    let engine = engine().await;
    let (_control, target) = echo_tunnel(&engine, rstream::Transport::Tls).await;
    let mut openssl = OpensslClient::start(target, engine.ca_file());
    for i in 0..5 {
        let line = format!("hello over dtls {i}");
        openssl.send_line(&line).await;
        let back = within("openssl echo", openssl.next_line()).await;
        assert_eq!(back.as_deref(), Some(line.as_str()));
    }
    assert_eq!(engine.dtls_counters().0, 1);
}

#[tokio::test]
async fn untrusting_clients_fail_the_handshake_and_reach_no_owner() {
    let engine = engine_with(Duration::from_secs(1), Duration::from_secs(60), 1024).await;
    let control = client_on(&engine, rstream::Transport::Tls)
        .connect()
        .await
        .unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::dtls())
        .await
        .unwrap();
    let target = udp_addr(&tunnel.forwarding_address());

    // dimpl, trusting another CA: refuses the certificate and never sends
    // its last flight.
    let other = Ca::named("not the engine");
    let err = DtlsClient::connect(target, &other.pem(), Version::V12)
        .await
        .err()
        .expect("an untrusted certificate fails");
    assert!(err.contains("certificate"), "{err}");

    // openssl s_client with that CA: fails verification, exits non-zero.
    let dir = std::env::temp_dir().join(format!("rstream-dtls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrong_ca = dir.join("other-ca.pem");
    std::fs::write(&wrong_ca, other.pem()).unwrap();
    let openssl = OpensslClient::start(target, &wrong_ca);
    let status = within("openssl exits", openssl.wait()).await;
    assert!(!status.success(), "openssl trusted a foreign certificate");
    let _ = std::fs::remove_dir_all(&dir);

    // Both sessions end (openssl's alert at once, dimpl's silence at the
    // 1 s handshake deadline), and the owner never heard of either.
    eventually("both handshakes fail", || engine.dtls_counters().1 == 2).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(200), tunnel.accept())
            .await
            .is_err(),
        "a channel reached the owner"
    );
    assert_eq!(engine.datagram_counters().0, 0);
    let (completed, failed, _) = engine.dtls_counters();
    assert_eq!((completed, failed), (0, 2));
}

#[tokio::test]
async fn garbage_and_half_handshakes_hold_nothing_after_the_deadline() {
    // Two channel slots, a 1 s handshake deadline.
    let engine = engine_with(Duration::from_secs(1), Duration::from_secs(60), 2).await;
    let control = client_on(&engine, rstream::Transport::Tls)
        .connect()
        .await
        .unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::dtls().name("guarded"))
        .await
        .unwrap();
    let target = udp_addr(&tunnel.forwarding_address());

    // Garbage: not a ClientHello, dropped and counted, nothing opened.
    let noise = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let garbage: [&[u8]; 4] = [
        b"",
        b"GET / HTTP/1.1\r\n\r\n",
        &[0x17, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 0, 4, 1, 2, 3, 4],
        &[0x16; 64],
    ];
    for g in garbage {
        noise.send_to(g, target).await.unwrap();
    }
    // A ClientHello and then silence (the cookie request goes unanswered),
    // and a client that answers the cookie, gets the server's certificate
    // flight and goes silent: both take the two slots.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    silent.send_to(&client_hello(), target).await.unwrap();
    let mut buf = [0u8; 2048];
    let n = within("cookie request", silent.recv(&mut buf))
        .await
        .unwrap();
    assert!(n > 0);
    let _half = half_handshake(target).await;
    // A third source finds no slot: its hello is ignored and counted.
    let third = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    third.send_to(&client_hello(), target).await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), third.recv(&mut buf))
            .await
            .is_err(),
        "no answer without a slot"
    );
    let (_, _, rejected) = engine.dtls_counters();
    assert_eq!(rejected, 4, "the garbage datagrams");
    assert_eq!(engine.datagram_counters(), (0, 0, 1));

    // After the deadline the half handshakes hold nothing: a real client
    // gets a slot and a channel.
    eventually("both half handshakes expire", || {
        engine.dtls_counters().1 == 2
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), tunnel.accept())
            .await
            .is_err(),
        "no channel for an unfinished handshake"
    );
    let mut client = DtlsClient::connect(target, engine.ca_pem(), Version::V12)
        .await
        .expect("handshake once the slots are free");
    let channel = within("accept", tunnel.accept()).await.unwrap();
    assert_eq!(
        channel.peer().source_ip(),
        Some("127.0.0.1".parse().unwrap())
    );
    client.send(b"plaintext at the app").await;
    assert_eq!(
        &within("app receives", channel.recv()).await.unwrap()[..],
        b"plaintext at the app"
    );
    channel.send(b"and back").await.unwrap();
    assert_eq!(client.recv().await, b"and back");
    // A datagram from the app larger than a DTLS record (16 KiB) cannot
    // go back: dropped and counted; the session goes on.
    let dropped = engine.datagram_counters().1;
    channel.send(&vec![7u8; 16 * 1024 + 1]).await.unwrap();
    channel.send(b"after").await.unwrap();
    assert_eq!(client.recv().await, b"after");
    assert_eq!(engine.datagram_counters().1, dropped + 1);
}

#[tokio::test]
async fn close_notify_ends_the_channel_and_idle_channels_send_one() {
    let engine = engine_with(Duration::from_secs(10), Duration::from_secs(1), 1024).await;
    let control = client_on(&engine, rstream::Transport::Tls)
        .connect()
        .await
        .unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::dtls())
        .await
        .unwrap();
    let target = udp_addr(&tunnel.forwarding_address());

    // The source's close_notify closes the app's channel.
    let client = DtlsClient::connect(target, engine.ca_pem(), Version::V13)
        .await
        .expect("handshake");
    client.send(b"hi").await;
    let channel = within("accept", tunnel.accept()).await.unwrap();
    assert_eq!(&within("hi", channel.recv()).await.unwrap()[..], b"hi");
    client.close().await;
    let end = within("channel closes", channel.recv()).await;
    assert!(end.is_err(), "the channel ends with the DTLS session");

    // An idle channel (1 s) ends, and the source hears close_notify.
    let mut client = DtlsClient::connect(target, engine.ca_pem(), Version::V12)
        .await
        .expect("handshake");
    client.send(b"once").await;
    let channel = within("accept", tunnel.accept()).await.unwrap();
    assert_eq!(&within("once", channel.recv()).await.unwrap()[..], b"once");
    assert_eq!(
        client.next(Duration::from_secs(5)).await,
        Some(Event::CloseNotify)
    );
    let end = within("idle channel closes", channel.recv()).await;
    assert!(end.is_err());
}

#[tokio::test]
async fn quic_tunnels_are_refused_by_the_sdk() {
    let engine = engine().await;
    let control = client_on(&engine, rstream::Transport::Tls)
        .connect()
        .await
        .unwrap();
    let err = control
        .create_datagram_tunnel(TunnelOptions::datagram().protocol(Protocol::Quic).publish())
        .await
        .expect_err("quic refused");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("quic"), "{err}");
    let err = control
        .create_datagram_tunnel(TunnelOptions::dtls().upstream_tls(true))
        .await
        .expect_err("upstream_tls refused");
    assert_eq!(err.kind(), ErrorKind::Unsupported);
}

#[tokio::test]
async fn a_client_restarted_on_the_same_port_gets_a_new_session() {
    let engine = engine_with(Duration::from_secs(1), Duration::from_secs(60), 1024).await;
    let control = client_on(&engine, rstream::Transport::Tls)
        .connect()
        .await
        .unwrap();
    let mut tunnel = control
        .create_datagram_tunnel(TunnelOptions::dtls())
        .await
        .unwrap();
    let target = udp_addr(&tunnel.forwarding_address());
    let mut first = DtlsClient::connect(target, engine.ca_pem(), Version::V12)
        .await
        .expect("handshake");
    first.send(b"one").await;
    let old = within("accept", tunnel.accept()).await.unwrap();
    assert_eq!(&within("one", old.recv()).await.unwrap()[..], b"one");

    // A stray ClientHello from the session's address (a spoofer's, say)
    // starts a successor that never completes: the session goes on, and
    // the successor expires with the handshake deadline.
    first.send_raw(&client_hello()).await;
    first.send(b"still here").await;
    assert_eq!(&within("two", old.recv()).await.unwrap()[..], b"still here");
    eventually("the stray handshake expires", || {
        engine.dtls_counters().1 == 1
    })
    .await;
    old.send(b"back").await.unwrap();
    assert_eq!(first.recv().await, b"back");

    // The client restarts on the same port without a close_notify: its new
    // handshake replaces the session, the old channel ends, a new one opens.
    let local = first.local;
    drop(first);
    let mut second = DtlsClient::connect_from(local, target, engine.ca_pem(), Version::V13)
        .await
        .expect("a new handshake from the same address");
    assert!(within("old channel ends", old.recv()).await.is_err());
    second.send(b"again").await;
    let new = within("accept the new channel", tunnel.accept())
        .await
        .unwrap();
    assert_eq!(&within("again", new.recv()).await.unwrap()[..], b"again");
    new.send(b"hello, new session").await.unwrap();
    assert_eq!(second.recv().await, b"hello, new session");
    assert_eq!(engine.dtls_counters(), (2, 1, 0));
    assert_eq!(engine.datagram_counters().0, 2);
}

#[tokio::test]
async fn handshakes_in_progress_are_capped_engine_wide() {
    // 256 handshakes at once for the whole engine (each also takes one of
    // its tunnel's channel slots, 1,024 here); the default 10 s deadline
    // outlasts the test (garbage_and_half_handshakes_… shows expiry).
    const MAX_HANDSHAKES: usize = 256;
    let engine = engine().await;
    let (_control, target) = echo_tunnel(&engine, rstream::Transport::Tls).await;
    let hello = client_hello();
    let started = std::time::Instant::now();
    let mut sources = Vec::new();
    for _ in 0..MAX_HANDSHAKES + 1 {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(&hello, target).await.unwrap();
        sources.push(socket);
    }
    // Every hello within the cap gets its cookie request; one more does not.
    let mut buf = [0u8; 2048];
    let mut answered = 0;
    for socket in &sources {
        if tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf))
            .await
            .is_ok()
        {
            answered += 1;
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the first handshakes expired before the last hello: {:?}",
        started.elapsed()
    );
    assert_eq!(answered, MAX_HANDSHAKES);
    assert_eq!(
        engine.dtls_counters(),
        (0, 0, 1),
        "the hello beyond the cap"
    );
    assert_eq!(engine.datagram_counters().0, 0, "nothing reached the owner");
}
