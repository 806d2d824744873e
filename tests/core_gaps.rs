//! End-to-end coverage of core paths nothing else exercised: close on drop
//! of the last handle, an engine closing a live tunnel, an IPv6
//! `source_ip`, the insecure and server-name TLS options, and TLS session
//! resumption across proxy connections.
//!
//! Everything runs over real loopback TLS, against the local engine or
//! against the scripted engine (tests/support/scripted.rs).

mod support;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use rstream::engine::EngineEvent;
use rstream::proto::{self, message::Payload, open_tunnel_rsp, IpAddress};
use rstream::transport::TlsOptions;
use rstream::{
    Client, ConnectionStatus, ControlChannel, DialOptions, ErrorKind, RstreamStream, Tunnel,
    TunnelOptions,
};
use support::scripted::{Peer, Scripted};
use support::{echo_round_trip, spawn_echo, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ----- scripted-engine helpers ------------------------------------------

/// A control channel to a fresh scripted engine (no heartbeats, so every
/// frame the engine reads is one the test expects).
async fn scripted_channel(engine: &Scripted) -> (ControlChannel, Peer) {
    support::init_tracing();
    let client = engine.client().disable_heartbeats().build().unwrap();
    let (control, peer) = engine.open(client.connect(), None).await;
    (control.expect("connect"), peer)
}

/// Creates tunnel `name`, which the scripted engine answers with id `id`.
async fn scripted_tunnel(
    control: &ControlChannel,
    peer: &mut Peer,
    name: &str,
    id: &str,
) -> Tunnel {
    let (tunnel, ()) = tokio::join!(
        control.create_tunnel(TunnelOptions::new().name(name)),
        async {
            let req = match within("OpenTunnelReq", peer.recv()).await {
                Some(Payload::OpenTunnelReq(r)) => r,
                other => panic!("expected OpenTunnelReq, got {:?}", other.map(|p| p.name())),
            };
            let mut props = req.tunnel_properties.unwrap();
            props.id = Some(id.into());
            peer.send(Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
                request_id: req.request_id,
                payload: Some(open_tunnel_rsp::Payload::TunnelProperties(props)),
            }))
            .await;
        }
    );
    let tunnel = tunnel.expect("create_tunnel");
    assert_eq!(tunnel.id(), id);
    tunnel
}

/// Announces a downstream connection as the engine does (`ProxyConnReq`),
/// accepts the client's proxy connection, checks its `ProxyReq` (stream id,
/// the per-stream secret as token) and the positive `ProxyConnRsp` on the
/// control channel. Returns the engine's end of the proxy connection.
async fn scripted_proxy(
    engine: &Scripted,
    peer: &mut Peer,
    tunnel_id: &str,
    stream_id: &str,
    source_ip: Option<IpAddress>,
) -> Peer {
    let secret = format!("secret-{stream_id}");
    peer.send(Payload::ProxyConnReq(proto::ProxyConnReq {
        tunnel_id: tunnel_id.into(),
        stream_id: stream_id.into(),
        secret: Some(secret.clone()),
        source_ip,
        proxy_endpoint: None,
    }))
    .await;
    let mut conn = within("proxy connection", engine.accept()).await;
    match within("ProxyReq", conn.recv()).await {
        Some(Payload::ProxyReq(req)) => {
            assert_eq!(req.stream_id, stream_id);
            assert_eq!(req.client_details.and_then(|d| d.token), Some(secret));
        }
        other => panic!("expected ProxyReq, got {:?}", other.map(|p| p.name())),
    }
    match within("ProxyConnRsp", peer.recv()).await {
        Some(Payload::ProxyConnRsp(rsp)) => {
            assert_eq!(rsp.stream_id, stream_id);
            assert!(rsp.error.is_none(), "proxy connection refused: {rsp:?}");
        }
        other => panic!("expected ProxyConnRsp, got {:?}", other.map(|p| p.name())),
    }
    conn
}

/// Bytes flow both ways between an accepted stream and the engine's end.
async fn assert_flows(stream: &mut RstreamStream, conn: &mut Peer, tag: &str) {
    let up = format!("up-{tag}");
    stream.write_all(up.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut buf = vec![0u8; up.len()];
    within("engine reads", conn.io.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(buf, up.as_bytes());
    let down = format!("down-{tag}");
    conn.io.write_all(down.as_bytes()).await.unwrap();
    conn.io.flush().await.unwrap();
    let mut buf = vec![0u8; down.len()];
    within("app reads", stream.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(buf, down.as_bytes());
}

/// Asserts that the engine receives nothing for `quiet`.
async fn assert_silent(peer: &mut Peer, quiet: Duration, what: &str) {
    if let Ok(frame) = tokio::time::timeout(quiet, peer.recv()).await {
        panic!(
            "{what}: expected no frame, got {:?}",
            frame.map(|p| p.name())
        );
    }
}

fn rustls_error(err: &rstream::Error) -> rustls::Error {
    let source = std::error::Error::source(err).expect("TLS error has a source");
    let io = source
        .downcast_ref::<std::io::Error>()
        .unwrap_or_else(|| panic!("source is not an io::Error: {source:?}"));
    io.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .unwrap_or_else(|| panic!("io::Error does not wrap a rustls::Error: {io:?}"))
        .clone()
}

// ----- 1. close on drop of the last handle ------------------------------

/// The channel stays open while any handle or tunnel lives; dropping the
/// last of them closes the tunnel (`CloseTunnelReq`) and then the channel
/// gracefully (`CloseControlChannelReq`), ends with a clean status and a
/// TLS `close_notify`, and leaves accepted streams flowing.
#[tokio::test]
async fn dropping_the_last_handle_and_tunnel_closes_gracefully() {
    let engine = Scripted::start().await;
    let (control, mut peer) = scripted_channel(&engine).await;
    let tunnel = scripted_tunnel(&control, &mut peer, "dropped", "dropped-1").await;
    let mut status = control.status();
    let clone = control.clone();

    // One handle of two: nothing happens.
    drop(control);
    assert_silent(&mut peer, Duration::from_millis(300), "one clone dropped").await;
    // No handle left, but a tunnel: the channel still serves it.
    drop(clone);
    assert_silent(
        &mut peer,
        Duration::from_millis(300),
        "every handle dropped",
    )
    .await;
    assert!(status.borrow().is_connected());
    let mut tunnel = tunnel;
    let mut conn = scripted_proxy(&engine, &mut peer, "dropped-1", "s-1", None).await;
    let mut stream = within("accept", tunnel.accept()).await.unwrap();
    assert_flows(&mut stream, &mut conn, "before").await;

    // The last tunnel goes: tunnel close, then the graceful channel close.
    let started = Instant::now();
    drop(tunnel);
    match within("CloseTunnelReq", peer.recv()).await {
        Some(Payload::CloseTunnelReq(req)) => assert_eq!(req.tunnel_id, "dropped-1"),
        other => panic!("expected CloseTunnelReq, got {:?}", other.map(|p| p.name())),
    }
    peer.send(Payload::CloseTunnelRsp(proto::CloseTunnelRsp {
        tunnel_id: "dropped-1".into(),
    }))
    .await;
    match within("CloseControlChannelReq", peer.recv()).await {
        Some(Payload::CloseControlChannelReq(_)) => {}
        other => panic!(
            "expected CloseControlChannelReq, got {:?}",
            other.map(|p| p.name())
        ),
    }
    let closing = started.elapsed();
    assert!(closing < Duration::from_secs(2), "close took {closing:?}");
    peer.send(Payload::CloseControlChannelRsp(
        proto::CloseControlChannelRsp {},
    ))
    .await;
    // The client then ends the connection cleanly (close_notify: EOF, not
    // a truncation error) ...
    let end = within("connection end", proto::read_frame(&mut peer.io)).await;
    assert!(matches!(end, Ok(None)), "expected a clean EOF, got {end:?}");
    // ... and its status says it closed without error.
    let last = within(
        "Closed status",
        status.wait_for(ConnectionStatus::is_closed),
    )
    .await
    .expect("status sender alive until Closed")
    .clone();
    assert!(
        matches!(last, ConnectionStatus::Closed { error: None }),
        "{last:?}"
    );
    // Streams already accepted keep flowing.
    assert_flows(&mut stream, &mut conn, "after").await;
}

/// The same against the local engine: once the last handle and tunnel are
/// dropped, the engine deletes the tunnel and then the client (events, in
/// that order, within 2 s), and neither its inventory nor the Engine
/// API lists them any more.
#[tokio::test]
async fn local_engine_forgets_a_client_whose_handles_are_all_dropped() {
    let engine = support::engine().await;
    let observer = support::client(&engine);
    let api = observer.api();
    let owner = support::client(&engine);
    let control = within("connect", owner.connect()).await.unwrap();
    let tunnel = within(
        "create",
        control.create_tunnel(TunnelOptions::new().name("drop-me")),
    )
    .await
    .unwrap();
    let client_id = control.client_id();
    let tunnel_id = tunnel.id();
    assert!(engine.clients().iter().any(|c| c.id == client_id));
    let listed = within(
        "list",
        api.list_clients(rstream::api::ListClientsParams::new()),
    )
    .await
    .unwrap();
    assert!(listed.iter().any(|c| c.id == client_id), "{listed:?}");

    let mut events = engine.subscribe();
    let started = Instant::now();
    drop(tunnel);
    drop(control);
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match events.recv().await.expect("event") {
                EngineEvent::TunnelDeleted { tunnel, .. } if tunnel.id == tunnel_id => {
                    seen.push("tunnel.deleted");
                }
                EngineEvent::ClientDeleted { client, .. } if client.id == client_id => {
                    seen.push("client.deleted");
                    break;
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the engine still holds the client (events so far: {seen:?})"));
    assert_eq!(seen, ["tunnel.deleted", "client.deleted"]);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(2), "close took {took:?}");
    assert!(engine.clients().is_empty(), "{:?}", engine.clients());
    assert!(engine.tunnels().is_empty(), "{:?}", engine.tunnels());
    let listed = within(
        "list",
        api.list_clients(rstream::api::ListClientsParams::new()),
    )
    .await
    .unwrap();
    assert!(listed.iter().all(|c| c.id != client_id), "{listed:?}");
    let tunnels = within(
        "list",
        api.list_tunnels(rstream::api::ListTunnelsParams::new()),
    )
    .await
    .unwrap();
    assert!(tunnels.is_empty(), "{tunnels:?}");
}

// ----- 2. the engine closes a live tunnel -------------------------------

/// An unsolicited `CloseTunnelRsp` for a live tunnel closes that tunnel
/// only: `accept()` and `closed()` report it, later connections for it are
/// refused, an accepted stream keeps flowing, and the channel and its other
/// tunnel go on working. Dropping the closed tunnel sends nothing.
#[tokio::test]
async fn engine_closing_a_live_tunnel_leaves_the_channel_open() {
    let engine = Scripted::start().await;
    let (control, mut peer) = scripted_channel(&engine).await;
    let mut doomed = scripted_tunnel(&control, &mut peer, "doomed", "doomed-1").await;
    let mut other = scripted_tunnel(&control, &mut peer, "other", "other-1").await;
    let mut conn = scripted_proxy(&engine, &mut peer, "doomed-1", "d-1", None).await;
    let mut accepted = within("accept", doomed.accept()).await.unwrap();
    let closed = doomed.closed();

    peer.send(Payload::CloseTunnelRsp(proto::CloseTunnelRsp {
        tunnel_id: "doomed-1".into(),
    }))
    .await;
    let reason = within("tunnel closed()", closed).await;
    assert_eq!(reason.kind(), ErrorKind::Closed, "{reason}");
    assert_eq!(reason.code(), "ERR_RSTREAM_TUNNEL_CLOSED");
    assert!(reason.message().contains("engine"), "{reason}");
    let err = within("accept after close", doomed.accept())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_RSTREAM_TUNNEL_CLOSED", "{err}");
    assert!(doomed.is_closed());

    // A connection for the closed tunnel is refused; the channel stays up.
    peer.send(Payload::ProxyConnReq(proto::ProxyConnReq {
        tunnel_id: "doomed-1".into(),
        stream_id: "d-2".into(),
        secret: Some("secret-d-2".into()),
        ..Default::default()
    }))
    .await;
    match within("refusal", peer.recv()).await {
        Some(Payload::ProxyConnRsp(rsp)) => {
            assert_eq!(rsp.stream_id, "d-2");
            assert_eq!(
                rsp.error.expect("refused").code,
                proto::ErrorCode::InvalidStream as i32
            );
        }
        other => panic!("expected ProxyConnRsp, got {:?}", other.map(|p| p.name())),
    }
    assert!(!control.is_closed());
    assert!(control.status().borrow().is_connected());
    assert!(!other.is_closed());

    // The stream accepted before the close still flows.
    assert_flows(&mut accepted, &mut conn, "accepted").await;
    // The other tunnel still gets connections.
    let mut conn2 = scripted_proxy(&engine, &mut peer, "other-1", "o-1", None).await;
    let mut stream = within("accept other", other.accept()).await.unwrap();
    assert_eq!(stream.info().tunnel(), "other-1");
    assert_flows(&mut stream, &mut conn2, "other").await;
    // And new tunnels can still be created.
    let third = scripted_tunnel(&control, &mut peer, "third", "third-1").await;
    assert!(!third.is_closed());

    // Dropping the closed tunnel sends no CloseTunnelReq: the next frame
    // is the channel's own close.
    drop(doomed);
    let (res, ()) = tokio::join!(control.close(), async {
        match within("CloseControlChannelReq", peer.recv()).await {
            Some(Payload::CloseControlChannelReq(_)) => {}
            other => panic!(
                "expected CloseControlChannelReq, got {:?}",
                other.map(|p| p.name())
            ),
        }
        peer.send(Payload::CloseControlChannelRsp(
            proto::CloseControlChannelRsp {},
        ))
        .await;
    });
    res.unwrap();
}

// ----- 3. source_ip, v6 and v4 ------------------------------------------

/// `ProxyConnReq.source_ip` reaches the application exactly, IPv6 (16 raw
/// bytes) and IPv4 alike; a malformed one (not 16 bytes) is dropped
/// without refusing the connection.
#[tokio::test]
async fn source_ip_v6_and_v4_reach_the_app() {
    let engine = Scripted::start().await;
    let (control, mut peer) = scripted_channel(&engine).await;
    let mut tunnel = scripted_tunnel(&control, &mut peer, "ips", "ips-1").await;

    let v6: IpAddr = "2001:db8:85a3::8a2e:370:7334".parse().unwrap();
    let mut conn = scripted_proxy(&engine, &mut peer, "ips-1", "v6", Some(v6.into())).await;
    let mut stream = within("accept v6", tunnel.accept()).await.unwrap();
    assert_eq!(stream.source_ip(), Some(v6));
    assert_eq!(stream.info().source_ip(), Some(v6));
    assert_eq!(stream.info().tunnel(), "ips-1");
    assert_eq!(stream.info().stream_id(), Some("v6"));
    assert_flows(&mut stream, &mut conn, "v6").await;

    let v4: IpAddr = "203.0.113.7".parse().unwrap();
    let _conn = scripted_proxy(&engine, &mut peer, "ips-1", "v4", Some(v4.into())).await;
    let stream = within("accept v4", tunnel.accept()).await.unwrap();
    assert_eq!(stream.source_ip(), Some(v4));

    let malformed = IpAddress {
        addr: Some(proto::ip_address::Addr::V6(vec![0x20, 0x01, 0x0d, 0xb8])),
    };
    let _conn = scripted_proxy(&engine, &mut peer, "ips-1", "bad", Some(malformed)).await;
    let stream = within("accept malformed", tunnel.accept()).await.unwrap();
    assert_eq!(stream.info().stream_id(), Some("bad"));
    assert_eq!(stream.source_ip(), None);
}

/// Through `axum::serve`, `ConnectInfo<TunnelAddr>` carries the same IPv6
/// source address, tunnel id and stream id.
#[cfg(feature = "axum")]
#[tokio::test]
async fn source_ip_v6_reaches_axum_connect_info() {
    use axum::extract::ConnectInfo;
    use http_body_util::{BodyExt, Empty};
    use rstream::TunnelAddr;

    let engine = Scripted::start().await;
    let (control, mut peer) = scripted_channel(&engine).await;
    let tunnel = scripted_tunnel(&control, &mut peer, "web", "web-1").await;
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(|ConnectInfo(addr): ConnectInfo<TunnelAddr>| async move {
            format!(
                "{}|{}|{}",
                addr.source_ip().map_or("none".into(), |ip| ip.to_string()),
                addr.tunnel_id(),
                addr.stream_id().unwrap_or("none"),
            )
        }),
    );
    let server = tokio::spawn(async move {
        axum::serve(
            tunnel,
            app.into_make_service_with_connect_info::<TunnelAddr>(),
        )
        .await
    });

    let v6: IpAddr = "fd00:1234:5678::42".parse().unwrap();
    let conn = scripted_proxy(&engine, &mut peer, "web-1", "w-1", Some(v6.into())).await;
    let io = hyper_util::rt::TokioIo::new(conn.io);
    let (mut send, http) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(http);
    let req = http::Request::get("/")
        .header("host", "web")
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let rsp = within("response", send.send_request(req)).await.unwrap();
    assert_eq!(rsp.status(), http::StatusCode::OK);
    let body = within("body", rsp.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&body[..], b"fd00:1234:5678::42|web-1|w-1");
    server.abort();
}

// ----- 4. TLS trust options ---------------------------------------------

/// A client that does not trust the engine's CA, or that overrides the
/// server name with one the certificate does not cover, fails with a TLS
/// error (kind `Tls`, code `ERR_RSTREAM_TLS`, not transient) carrying
/// rustls's verdict; the engine never admits it. The right override works.
#[tokio::test]
async fn untrusted_engine_and_wrong_server_name_fail_verification() {
    let engine = support::engine().await;

    let no_ca = Client::builder()
        .engine(engine.engine_address())
        .build()
        .unwrap();
    let err = within("connect without CA", no_ca.connect())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert_eq!(err.code(), "ERR_RSTREAM_TLS");
    assert!(!err.is_transient());
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)
        ),
        "{err:?}"
    );
    // Private dials go through the same verification.
    let err = within("dial without CA", no_ca.dial("anything"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert_eq!(err.code(), "ERR_RSTREAM_TLS");

    let wrong_name = Client::builder()
        .engine(engine.engine_address())
        .tls(
            TlsOptions::new()
                .add_ca_pem(engine.ca_pem().as_bytes())
                .unwrap()
                .server_name("wrong.example"),
        )
        .build()
        .unwrap();
    let err = within("connect with a wrong server name", wrong_name.connect())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err:?}");
    assert_eq!(err.code(), "ERR_RSTREAM_TLS");
    assert!(
        matches!(
            rustls_error(&err),
            rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                    | rustls::CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{err:?}"
    );
    assert!(engine.clients().is_empty(), "{:?}", engine.clients());

    // A name the certificate covers is fine.
    let right_name = Client::builder()
        .engine(engine.engine_address())
        .tls(
            TlsOptions::new()
                .add_ca_pem(engine.ca_pem().as_bytes())
                .unwrap()
                .server_name("localhost"),
        )
        .build()
        .unwrap();
    let control = within("connect as localhost", right_name.connect())
        .await
        .unwrap();
    assert_eq!(engine.clients().len(), 1);
    control.close().await.unwrap();
}

/// `danger_accept_invalid_certs` connects without the engine's CA (and
/// even with a wrong server name), and applies to every connection: the
/// control channel, proxy connections and private dials.
#[tokio::test]
async fn insecure_option_connects_without_the_ca() {
    let engine = support::engine().await;
    let insecure = Client::builder()
        .engine(engine.engine_address())
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let control = within("insecure connect", insecure.connect())
        .await
        .unwrap();
    let tunnel = within(
        "create",
        control.create_tunnel(TunnelOptions::new().name("insecure")),
    )
    .await
    .unwrap();
    let _echo = spawn_echo(tunnel);
    for zero_rtt in [true, false] {
        let stream = within(
            "insecure dial",
            insecure.dial_with("insecure", DialOptions::new().zero_rtt(zero_rtt)),
        )
        .await
        .unwrap();
        let back = within("echo", echo_round_trip(stream, b"no CA needed")).await;
        assert_eq!(back, b"no CA needed", "zero_rtt={zero_rtt}");
    }

    let insecure_wrong_name = Client::builder()
        .engine(engine.engine_address())
        .tls(
            TlsOptions::new()
                .server_name("wrong.example")
                .danger_accept_invalid_certs(true),
        )
        .build()
        .unwrap();
    let other = within(
        "insecure connect, wrong name",
        insecure_wrong_name.connect(),
    )
    .await
    .unwrap();
    assert_eq!(engine.clients().len(), 2);
    other.close().await.unwrap();
    control.close().await.unwrap();
}

// ----- 5. TLS session resumption ----------------------------------------

/// One dial and the owner's side of it, echoing `msg`; returns whether the
/// dialed and the accepted TLS connections resumed a session.
async fn resumed_round_trip(dialer: &Client, tunnel: &mut Tunnel, msg: &[u8]) -> (bool, bool) {
    let (dialed, accepted) = tokio::join!(dialer.dial("resume"), tunnel.accept());
    let (mut dialed, mut accepted) = (dialed.unwrap(), accepted.unwrap());
    let resumed = (dialed.tls_resumed(), accepted.tls_resumed());
    // Reading on both sides also takes in the fresh session tickets the
    // engine sends after each handshake.
    dialed.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    accepted.read_exact(&mut buf).await.unwrap();
    accepted.write_all(&buf).await.unwrap();
    dialed.read_exact(&mut buf).await.unwrap();
    assert_eq!(buf, msg);
    resumed
}

/// With the client's shared TLS configuration, proxy connections resume
/// the TLS session: every stream the owner accepts is resumed (the control
/// channel's handshake already brought tickets), a fresh dialer's first
/// dial is a full handshake and its later ones resume. After a warm-up,
/// a burst of 10 concurrent connections — more than rustls's default store
/// keeps per server (8) — resumes in full on both sides.
#[tokio::test]
async fn proxy_connections_and_dials_resume_tls_sessions() {
    let engine = support::engine().await;
    let owner = support::client(&engine);
    let control = within("connect", owner.connect()).await.unwrap();
    let mut tunnel = within(
        "create",
        control.create_tunnel(TunnelOptions::new().name("resume")),
    )
    .await
    .unwrap();
    let dialer = support::client(&engine);

    const WARM_UP: usize = 10;
    let mut owner_side = Vec::new();
    let mut dialer_side = Vec::new();
    for i in 0..WARM_UP {
        let (dialed, accepted) = within(
            "round trip",
            resumed_round_trip(&dialer, &mut tunnel, format!("ping {i}").as_bytes()),
        )
        .await;
        dialer_side.push(dialed);
        owner_side.push(accepted);
    }
    assert_eq!(owner_side, [true; WARM_UP], "owner's proxy connections");
    assert!(!dialer_side[0], "a fresh client's first dial cannot resume");
    assert_eq!(
        dialer_side[1..],
        [true; WARM_UP - 1],
        "dialer's later connections"
    );

    // A burst of concurrent connections.
    const BURST: usize = 10;
    let owner_task = tokio::spawn(async move {
        let mut resumed = Vec::new();
        for _ in 0..BURST {
            let stream = tunnel.accept().await.unwrap();
            resumed.push(stream.tls_resumed());
            tokio::spawn(async move {
                let mut stream = stream;
                let mut buf = [0u8; 5];
                if stream.read_exact(&mut buf).await.is_ok() {
                    let _ = stream.write_all(&buf).await;
                }
            });
        }
        (resumed, tunnel)
    });
    let mut dials = tokio::task::JoinSet::new();
    for _ in 0..BURST {
        let dialer = dialer.clone();
        dials.spawn(async move {
            let mut stream = dialer.dial("resume").await.unwrap();
            let resumed = stream.tls_resumed();
            stream.write_all(b"burst").await.unwrap();
            let mut buf = [0u8; 5];
            stream.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"burst");
            resumed
        });
    }
    let dialed: Vec<bool> = within("burst", dials.join_all()).await;
    let (accepted, _tunnel) = within("owner", owner_task).await.unwrap();
    assert_eq!(accepted, [true; BURST], "owner's burst");
    assert_eq!(dialed, [true; BURST], "dialer's burst");
}
