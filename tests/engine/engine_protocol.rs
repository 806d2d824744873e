//! The local engine, spoken to in raw frames over TLS: control channels
//! (liveness, auth, versions), tunnels, published endpoints, private dials,
//! proxy connections, robustness against garbage, and the binary contract.

#![cfg(feature = "local-engine")]

use crate::support::raw::{self, expect_closed, recv, send};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rstream::engine::{EngineEvent, LocalEngine};
use rstream::proto::{
    self, ip_address, message::Payload, open_control_channel_rsp, open_tunnel_rsp, read_frame,
    stream_rsp, ClientDetails, CloseControlChannelReq, CloseTunnelReq, ControlChannelLiveness,
    ErrorCode, Heartbeat, OpenControlChannelReq, OpenTunnelReq, ProxyConnReq, ProxyConnRsp,
    ProxyReq, StreamReq, TunnelProperties,
};
use rstream::transport::{Endpoint, EngineStream, TlsDialer, TlsOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Conn = EngineStream;

const STEP: Duration = Duration::from_secs(5);

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A TLS connection to `addr` (`127.0.0.1:PORT`) trusting the engine's CA.
async fn tls_to(engine: &LocalEngine, addr: &str, alpn: &[&[u8]]) -> Conn {
    raw::dial_addr(engine, addr, alpn, None).await
}

async fn connect(engine: &LocalEngine) -> Conn {
    tls_to(engine, &engine.engine_address(), &[proto::ALPN]).await
}

fn details(token: Option<&str>) -> ClientDetails {
    raw::details("engine-protocol-test", token)
}

/// Asserts nothing arrives for a short while.
async fn expect_silence(conn: &mut Conn) {
    let got = tokio::time::timeout(Duration::from_millis(300), read_frame(conn)).await;
    assert!(
        got.is_err(),
        "unexpected frame: {:?}",
        got.map(|r| r.map(|m| m.map(|m| m.name())))
    );
}

async fn open_raw(
    engine: &LocalEngine,
    details: Option<ClientDetails>,
    liveness_ms: Option<u32>,
) -> (Conn, proto::OpenControlChannelRsp) {
    let mut conn = connect(engine).await;
    let req = OpenControlChannelReq {
        client_details: details,
        liveness: liveness_ms.map(|ms| ControlChannelLiveness {
            heartbeat_interval_ms: ms,
            heartbeat_timeout_ms: 0,
        }),
    };
    send(&mut conn, Payload::OpenControlChannelReq(req)).await;
    match recv(&mut conn).await {
        Payload::OpenControlChannelRsp(rsp) => (conn, rsp),
        other => panic!("expected OpenControlChannelRsp, got {}", other.name()),
    }
}

async fn open(engine: &LocalEngine) -> Conn {
    let (conn, rsp) = open_raw(engine, Some(details(None)), None).await;
    match rsp.payload {
        Some(open_control_channel_rsp::Payload::Ok(_)) => conn,
        other => panic!("control channel refused: {other:?}"),
    }
}

fn open_error(rsp: proto::OpenControlChannelRsp) -> proto::Error {
    match rsp.payload {
        Some(open_control_channel_rsp::Payload::Error(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

async fn create(
    control: &mut Conn,
    props: TunnelProperties,
) -> Result<TunnelProperties, proto::Error> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let req = OpenTunnelReq {
        request_id: request_id.clone(),
        tunnel_properties: Some(props),
    };
    send(control, Payload::OpenTunnelReq(req)).await;
    match recv(control).await {
        Payload::OpenTunnelRsp(rsp) => {
            assert_eq!(rsp.request_id, request_id);
            match rsp.payload {
                Some(open_tunnel_rsp::Payload::TunnelProperties(p)) => {
                    assert!(p.id.is_some(), "tunnel without id");
                    Ok(p)
                }
                Some(open_tunnel_rsp::Payload::Error(e)) => Err(e),
                None => panic!("empty OpenTunnelRsp"),
            }
        }
        other => panic!("expected OpenTunnelRsp, got {}", other.name()),
    }
}

fn bytestream(name: Option<&str>) -> TunnelProperties {
    TunnelProperties {
        r#type: Some("bytestream".into()),
        name: name.map(str::to_owned),
        ..Default::default()
    }
}

fn code(e: &proto::Error) -> ErrorCode {
    ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified)
}

async fn expect_proxy_conn_req(control: &mut Conn) -> ProxyConnReq {
    match recv(control).await {
        Payload::ProxyConnReq(req) => req,
        other => panic!("expected ProxyConnReq, got {}", other.name()),
    }
}

/// Opens the owner's proxy connection for `req` with `token`.
async fn proxy_connection(
    engine: &LocalEngine,
    req: &ProxyConnReq,
    token: Option<&str>,
    zero_rtt: bool,
) -> (Conn, Option<proto::ProxyRsp>) {
    let mut conn = connect(engine).await;
    let mut d = details(None);
    d.token = token.map(str::to_owned);
    let proxy = ProxyReq {
        client_details: Some(d),
        stream_id: req.stream_id.clone(),
        zero_rtt: Some(zero_rtt),
    };
    send(&mut conn, Payload::ProxyReq(proxy)).await;
    if zero_rtt {
        return (conn, None);
    }
    match recv(&mut conn).await {
        Payload::ProxyRsp(rsp) => (conn, Some(rsp)),
        other => panic!("expected ProxyRsp, got {}", other.name()),
    }
}

/// Answers a ProxyConnReq the way an SDK does; returns the owner's stream.
async fn answer(engine: &LocalEngine, control: &mut Conn, zero_rtt: bool) -> (Conn, ProxyConnReq) {
    let req = expect_proxy_conn_req(control).await;
    let (conn, rsp) = proxy_connection(engine, &req, req.secret.as_deref(), zero_rtt).await;
    if let Some(rsp) = rsp {
        assert!(rsp.error.is_none(), "ProxyRsp error: {:?}", rsp.error);
    }
    let ok = ProxyConnRsp {
        stream_id: req.stream_id.clone(),
        error: None,
    };
    send(control, Payload::ProxyConnRsp(ok)).await;
    (conn, req)
}

async fn dial(engine: &LocalEngine, target: &str, zero_rtt: bool, token: Option<&str>) -> Conn {
    let mut conn = connect(engine).await;
    let req = StreamReq {
        client_details: Some(details(token)),
        tunnel_id_name: target.into(),
        zero_rtt: Some(zero_rtt),
        datagram_channel: None,
    };
    send(&mut conn, Payload::StreamReq(req)).await;
    conn
}

async fn stream_rsp(conn: &mut Conn) -> stream_rsp::Payload {
    match recv(conn).await {
        Payload::StreamRsp(rsp) => rsp.payload.expect("empty StreamRsp"),
        other => panic!("expected StreamRsp, got {}", other.name()),
    }
}

async fn read_exact_n<S: AsyncRead + Unpin>(conn: &mut S, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    within("stream bytes", conn.read_exact(&mut buf))
        .await
        .unwrap();
    buf
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("rstream-{tag}-{}", uuid::Uuid::new_v4().simple()))
}

// ---------------------------------------------------------------------------

#[tokio::test]
async fn control_channel_with_liveness_acks_heartbeats() {
    let engine = LocalEngine::builder().start().await.unwrap();
    let (mut conn, rsp) = open_raw(&engine, Some(details(None)), Some(2_000)).await;
    let ok = match rsp.payload {
        Some(open_control_channel_rsp::Payload::Ok(ok)) => ok,
        other => panic!("refused: {other:?}"),
    };
    assert!(uuid::Uuid::parse_str(&ok.client_id).is_ok());
    let server = ok.server_details.unwrap();
    assert_eq!(server.agent.as_deref(), Some("rstream-local-engine"));
    assert_eq!(server.version.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    let liveness = ok.liveness.unwrap();
    assert_eq!(liveness.heartbeat_interval_ms, 2_000);
    assert_eq!(liveness.heartbeat_timeout_ms, 15_000);

    for seq in 1..=3 {
        send(
            &mut conn,
            Payload::Heartbeat(Heartbeat {
                sequence: seq,
                acknowledgement: 0,
            }),
        )
        .await;
        match recv(&mut conn).await {
            Payload::Heartbeat(hb) => {
                assert_eq!(
                    hb,
                    Heartbeat {
                        sequence: 0,
                        acknowledgement: seq
                    }
                );
            }
            other => panic!("expected an ack, got {}", other.name()),
        }
    }
    // A repeated or empty heartbeat is not acknowledged again.
    send(
        &mut conn,
        Payload::Heartbeat(Heartbeat {
            sequence: 3,
            acknowledgement: 0,
        }),
    )
    .await;
    send(&mut conn, Payload::Heartbeat(Heartbeat::default())).await;
    expect_silence(&mut conn).await;
    assert_eq!(engine.clients().len(), 1);
    assert_eq!(engine.clients()[0].liveness, Some(liveness));
}

#[tokio::test]
async fn control_channel_without_liveness_gets_no_heartbeats() {
    let engine = LocalEngine::builder().start().await.unwrap();
    let (mut conn, rsp) = open_raw(&engine, Some(details(None)), None).await;
    match rsp.payload {
        Some(open_control_channel_rsp::Payload::Ok(ok)) => assert!(ok.liveness.is_none()),
        other => panic!("refused: {other:?}"),
    }
    send(&mut conn, Payload::Heartbeat(Heartbeat::default())).await;
    send(
        &mut conn,
        Payload::Heartbeat(Heartbeat {
            sequence: 1,
            acknowledgement: 0,
        }),
    )
    .await;
    expect_silence(&mut conn).await;
    send(
        &mut conn,
        Payload::CloseControlChannelReq(CloseControlChannelReq {}),
    )
    .await;
    assert!(matches!(
        recv(&mut conn).await,
        Payload::CloseControlChannelRsp(_)
    ));
    let end = within("EOF", read_frame(&mut conn)).await;
    assert!(matches!(end, Ok(None) | Err(_)));
}

#[tokio::test]
async fn liveness_is_enforced_and_configurable() {
    let engine = LocalEngine::builder()
        .liveness_timeout(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    let mut events = engine.subscribe();
    let (mut conn, rsp) = open_raw(&engine, Some(details(None)), Some(1_000)).await;
    match rsp.payload {
        // Clamped up to the interval.
        Some(open_control_channel_rsp::Payload::Ok(ok)) => {
            assert_eq!(ok.liveness.unwrap().heartbeat_timeout_ms, 1_000)
        }
        other => panic!("refused: {other:?}"),
    }
    create(&mut conn, bytestream(Some("doomed"))).await.unwrap();
    // Silence for longer than the timeout: the engine drops the client.
    let started = std::time::Instant::now();
    expect_closed(&mut conn).await;
    assert!(started.elapsed() >= Duration::from_millis(800));
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        kinds.push(within("event", events.recv()).await.unwrap().event_type());
    }
    assert_eq!(
        kinds,
        [
            "client.created",
            "tunnel.created",
            "tunnel.deleted",
            "client.deleted"
        ]
    );

    let (_, rsp) = open_raw(&engine, Some(details(None)), Some(999)).await;
    assert_eq!(code(&open_error(rsp)), ErrorCode::InvalidRequest);
    let (_, rsp) = open_raw(&engine, Some(details(None)), Some(300_001)).await;
    assert_eq!(code(&open_error(rsp)), ErrorCode::InvalidRequest);
}

#[tokio::test]
async fn tokens_are_checked() {
    let engine = LocalEngine::builder()
        .token("alpha")
        .token("beta")
        .start()
        .await
        .unwrap();
    for bad in [None, Some("gamma"), Some("")] {
        let (mut conn, rsp) = open_raw(&engine, Some(details(bad)), None).await;
        assert_eq!(code(&open_error(rsp)), ErrorCode::Unauthorized);
        expect_closed(&mut conn).await;
    }
    for good in ["alpha", "beta"] {
        let (_, rsp) = open_raw(&engine, Some(details(Some(good))), None).await;
        assert!(matches!(
            rsp.payload,
            Some(open_control_channel_rsp::Payload::Ok(_))
        ));
    }
    // Dials too.
    let mut conn = dial(&engine, "anything", false, None).await;
    match stream_rsp(&mut conn).await {
        stream_rsp::Payload::Error(e) => assert_eq!(code(&e), ErrorCode::Unauthorized),
        other => panic!("{other:?}"),
    }
    let mut conn = dial(&engine, "anything", false, Some("beta")).await;
    match stream_rsp(&mut conn).await {
        stream_rsp::Payload::Error(e) => assert_eq!(code(&e), ErrorCode::TunnelNotFound),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn protocol_versions_are_checked() {
    let engine = LocalEngine::builder().start().await.unwrap();
    let cases = [
        (None, ErrorCode::ProtocolVersionMissing),
        (Some("1.4"), ErrorCode::ProtocolVersionInvalid),
        (Some("one.two.three"), ErrorCode::ProtocolVersionInvalid),
        (Some("2.0.0"), ErrorCode::ProtocolVersionIncompatible),
    ];
    for (version, expected) in cases {
        let mut d = details(None);
        d.protocol_version = version.map(str::to_owned);
        let (_, rsp) = open_raw(&engine, Some(d), None).await;
        assert_eq!(code(&open_error(rsp)), expected, "{version:?}");
    }
    let (_, rsp) = open_raw(&engine, None, None).await;
    assert_eq!(code(&open_error(rsp)), ErrorCode::ProtocolVersionMissing);
    let mut d = details(None);
    d.protocol_version = Some("1.9.0".into());
    let (_, rsp) = open_raw(&engine, Some(d), None).await;
    assert!(matches!(
        rsp.payload,
        Some(open_control_channel_rsp::Payload::Ok(_))
    ));
}

#[tokio::test]
async fn tunnels_are_created_validated_and_closed() {
    let engine = LocalEngine::builder()
        .max_tunnels_per_client(3)
        .start()
        .await
        .unwrap();
    let mut control = open(&engine).await;
    let mut props = bytestream(Some("api"));
    props.labels = HashMap::from([("env".into(), "test".into())]);
    props.protocol = Some("http".into());
    props.trusted_ips = vec!["127.0.0.0/8".into(), "::1".into()];
    let created = create(&mut control, props).await.unwrap();
    let id = created.id.clone().unwrap();
    assert_eq!(created.name.as_deref(), Some("api"));
    assert_eq!(created.r#type.as_deref(), Some("bytestream"));
    assert_eq!(created.publish, Some(false));
    assert_eq!(created.labels.get("env").map(String::as_str), Some("test"));
    assert!(created.creation_date.is_some());
    assert!(created.hostname.is_none() && created.port.is_none());

    // Names are unique engine-wide.
    let mut other = open(&engine).await;
    let dup = create(&mut other, bytestream(Some("api")))
        .await
        .unwrap_err();
    assert_eq!(code(&dup), ErrorCode::InvalidRequest);
    assert!(dup.message.unwrap().contains("api"));

    // Refused features name the property.
    let refusals: Vec<(&str, TunnelProperties)> = vec![
        (
            "geoip",
            TunnelProperties {
                geoip: vec!["FR".into()],
                ..bytestream(None)
            },
        ),
        (
            "quic",
            TunnelProperties {
                protocol: Some("quic".into()),
                ..bytestream(None)
            },
        ),
        (
            // Datagram tunnels are supported (tests/engine/datagram.rs),
            // published DTLS ones too (tests/engine/dtls.rs, feature
            // `dtls`); private DTLS ones are not.
            "dtls",
            TunnelProperties {
                r#type: Some("datagram".into()),
                protocol: Some("dtls".into()),
                ..Default::default()
            },
        ),
        (
            // Re-originating DTLS to the application (without feature
            // `dtls`, DTLS itself is what is missing).
            if cfg!(feature = "dtls") {
                "upstream_tls"
            } else {
                "dtls"
            },
            TunnelProperties {
                r#type: Some("datagram".into()),
                protocol: Some("dtls".into()),
                publish: Some(true),
                upstream_tls: Some(true),
                ..Default::default()
            },
        ),
        (
            "token_auth",
            TunnelProperties {
                token_auth: Some(true),
                ..bytestream(None)
            },
        ),
        (
            "mtls_auth",
            TunnelProperties {
                mtls_auth: Some(true),
                ..bytestream(None)
            },
        ),
        (
            "upstream_tls",
            TunnelProperties {
                upstream_tls: Some(true),
                ..bytestream(None)
            },
        ),
        (
            "terminated",
            TunnelProperties {
                protocol: Some("tls".into()),
                tls_mode: Some("terminated".into()),
                ..bytestream(None)
            },
        ),
        (
            "hostname",
            TunnelProperties {
                hostname: Some("api.example.com".into()),
                ..bytestream(None)
            },
        ),
    ];
    for (what, props) in refusals {
        let e = create(&mut control, props).await.unwrap_err();
        assert_eq!(code(&e), ErrorCode::FeatureNotAvailable, "{what}");
        assert!(e.message.unwrap().contains(what), "{what}");
    }
    let invalid = vec![
        TunnelProperties {
            trusted_ips: vec!["not-an-ip".into()],
            ..bytestream(None)
        },
        TunnelProperties {
            protocol: Some("http".into()),
            port: Some(8080),
            ..bytestream(None)
        },
        TunnelProperties {
            protocol: Some("tcp".into()),
            publish: Some(false),
            ..bytestream(None)
        },
        TunnelProperties {
            protocol: Some("gopher".into()),
            ..bytestream(None)
        },
        // DTLS is a datagram protocol.
        TunnelProperties {
            protocol: Some("dtls".into()),
            publish: Some(true),
            ..bytestream(None)
        },
        TunnelProperties {
            name: Some("has space".into()),
            ..bytestream(None)
        },
        // HTTP/3 to the app runs on a datagram tunnel (DATAGRAM_QUIC.md
        // §3): h3 on a bytestream tunnel makes no sense.
        TunnelProperties {
            protocol: Some("http".into()),
            http_version: Some("h3".into()),
            ..bytestream(None)
        },
    ];
    for props in invalid {
        let e = create(&mut control, props.clone()).await.unwrap_err();
        assert_eq!(code(&e), ErrorCode::InvalidRequest, "{props:?}");
    }

    // Close echoes the id (also for unknown ids) and frees the name.
    send(
        &mut control,
        Payload::CloseTunnelReq(CloseTunnelReq {
            tunnel_id: id.clone(),
        }),
    )
    .await;
    match recv(&mut control).await {
        Payload::CloseTunnelRsp(rsp) => assert_eq!(rsp.tunnel_id, id),
        other => panic!("{}", other.name()),
    }
    send(
        &mut control,
        Payload::CloseTunnelReq(CloseTunnelReq {
            tunnel_id: "nope".into(),
        }),
    )
    .await;
    match recv(&mut control).await {
        Payload::CloseTunnelRsp(rsp) => assert_eq!(rsp.tunnel_id, "nope"),
        other => panic!("{}", other.name()),
    }
    create(&mut other, bytestream(Some("api"))).await.unwrap();

    // Per-client limit.
    for _ in 0..3 {
        create(&mut control, bytestream(None)).await.unwrap();
    }
    let e = create(&mut control, bytestream(None)).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::CapacityExhausted);
}

#[tokio::test]
async fn losing_the_control_channel_frees_names_and_ports() {
    let engine = LocalEngine::builder().start().await.unwrap();
    let mut events = engine.subscribe();
    let mut control = open(&engine).await;
    let tcp = TunnelProperties {
        protocol: Some("tcp".into()),
        ..bytestream(Some("db"))
    };
    let created = create(&mut control, tcp).await.unwrap();
    assert_eq!(created.publish, Some(true));
    assert_eq!(created.hostname.as_deref(), Some("127.0.0.1"));
    let port = created.port.unwrap();
    drop(control);
    loop {
        if let EngineEvent::ClientDeleted { .. } = within("event", events.recv()).await.unwrap() {
            break;
        }
    }
    assert!(engine.tunnels().is_empty());
    let mut control = open(&engine).await;
    let again = TunnelProperties {
        protocol: Some("tcp".into()),
        port: Some(port),
        ..bytestream(Some("db"))
    };
    let created = create(&mut control, again.clone()).await.unwrap();
    assert_eq!(created.port, Some(port));
    // The same port twice: refused as capacity (retryable).
    let mut taken = again;
    taken.name = None;
    let e = create(&mut control, taken).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::CapacityExhausted);
}

#[tokio::test]
async fn published_http_tunnel_serves_https() {
    let engine = LocalEngine::builder().start().await.unwrap();
    let mut control = open(&engine).await;
    let props = TunnelProperties {
        protocol: Some("http".into()),
        publish: Some(true),
        ..bytestream(Some("web"))
    };
    let created = create(&mut control, props).await.unwrap();
    assert_eq!(created.hostname.as_deref(), Some("127.0.0.1"));
    let addr = format!("127.0.0.1:{}", created.port.unwrap());

    // Only http/1.1 is offered for an http/1.1 upstream.
    let probe = tls_to(&engine, &addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(probe.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(probe);
    // The probe reached the owner after its handshake: answer and drop it.
    let (stream, req) = answer(&engine, &mut control, true).await;
    assert_eq!(req.tunnel_id, created.id.clone().unwrap());
    drop(stream);

    let downstream = tls_to(&engine, &addr, &[b"http/1.1"]).await;
    let client = tokio::spawn(async move {
        use http_body_util::{BodyExt, Empty};
        let io = hyper_util::rt::TokioIo::new(downstream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/hello")
            .header("host", "127.0.0.1")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let rsp = sender.send_request(req).await.unwrap();
        let status = rsp.status();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    let (mut upstream, req) = answer(&engine, &mut control, false).await;
    assert!(req.secret.as_deref().is_some_and(|s| s.len() == 64));
    assert_eq!(
        req.source_ip.and_then(|ip| ip.addr),
        Some(ip_address::Addr::V4(u32::from(
            std::net::Ipv4Addr::LOCALHOST
        )))
    );
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0u8; 1024];
        let n = within("request bytes", upstream.read(&mut buf))
            .await
            .unwrap();
        assert!(n > 0, "upstream closed early");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(head.starts_with(b"GET /hello HTTP/1.1\r\n"));
    upstream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello")
        .await
        .unwrap();
    upstream.flush().await.unwrap();
    let (status, body) = within("response", client).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(&body[..], b"hello");

    // h2c upstreams get h2 offered downstream.
    let props = TunnelProperties {
        protocol: Some("http".into()),
        publish: Some(true),
        http_version: Some("h2c".into()),
        ..bytestream(None)
    };
    let created = create(&mut control, props).await.unwrap();
    let addr = format!("127.0.0.1:{}", created.port.unwrap());
    let probe = tls_to(&engine, &addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(probe.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn published_tcp_tunnel_splices_and_honours_trusted_ips() {
    let engine = LocalEngine::builder().start().await.unwrap();
    let mut control = open(&engine).await;
    let props = TunnelProperties {
        protocol: Some("tcp".into()),
        ..bytestream(None)
    };
    let created = create(&mut control, props).await.unwrap();
    let port = u16::try_from(created.port.unwrap()).unwrap();

    let mut down = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    down.write_all(b"early bytes").await.unwrap();
    let (mut up, _) = answer(&engine, &mut control, true).await;
    assert_eq!(read_exact_n(&mut up, 11).await, b"early bytes");
    up.write_all(b"pong").await.unwrap();
    up.flush().await.unwrap();
    assert_eq!(read_exact_n(&mut down, 4).await, b"pong");
    // Half-close: the downstream's EOF reaches the owner, who can still answer.
    down.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within("EOF upstream", up.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
    up.write_all(b"bye").await.unwrap();
    up.shutdown().await.unwrap();
    let mut tail = Vec::new();
    within("EOF downstream", down.read_to_end(&mut tail))
        .await
        .unwrap();
    assert_eq!(tail, b"bye");

    // A tunnel trusting only 10.0.0.0/8 refuses loopback at once.
    let props = TunnelProperties {
        protocol: Some("tcp".into()),
        trusted_ips: vec!["10.0.0.0/8".into()],
        ..bytestream(None)
    };
    let created = create(&mut control, props).await.unwrap();
    let port = u16::try_from(created.port.unwrap()).unwrap();
    let mut down = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    expect_closed(&mut down).await;
    expect_silence(&mut control).await;
}

#[tokio::test]
async fn private_dial_by_name_and_id() {
    let engine = LocalEngine::builder().start().await.unwrap();
    let mut control = open(&engine).await;
    let created = create(&mut control, bytestream(Some("echo")))
        .await
        .unwrap();
    let id = created.id.unwrap();

    for (target, zero_rtt, owner_zero_rtt) in [
        ("echo", false, false),
        (id.as_str(), true, true),
        ("echo", true, false),
    ] {
        let mut dialer = dial(&engine, target, zero_rtt, None).await;
        if zero_rtt {
            // Early bytes must not be lost.
            dialer.write_all(b"early").await.unwrap();
            dialer.flush().await.unwrap();
        }
        let (mut owner, req) = answer(&engine, &mut control, owner_zero_rtt).await;
        assert_eq!(req.tunnel_id, id);
        assert_eq!(
            req.source_ip.and_then(|ip| ip.to_ip()),
            Some(std::net::Ipv4Addr::LOCALHOST.into())
        );
        if zero_rtt {
            assert_eq!(read_exact_n(&mut owner, 5).await, b"early");
        } else {
            match stream_rsp(&mut dialer).await {
                stream_rsp::Payload::StreamId(sid) => assert_eq!(sid, req.stream_id),
                other => panic!("{other:?}"),
            }
        }
        dialer.write_all(b"ping").await.unwrap();
        dialer.flush().await.unwrap();
        assert_eq!(read_exact_n(&mut owner, 4).await, b"ping");
        owner.write_all(b"pong").await.unwrap();
        owner.flush().await.unwrap();
        assert_eq!(read_exact_n(&mut dialer, 4).await, b"pong");
        drop(dialer);
        expect_closed(&mut owner).await;
    }
}

#[tokio::test]
async fn dial_of_unknown_tunnel() {
    let engine = LocalEngine::builder().start().await.unwrap();
    let mut conn = dial(&engine, "missing", false, None).await;
    match stream_rsp(&mut conn).await {
        stream_rsp::Payload::Error(e) => assert_eq!(code(&e), ErrorCode::TunnelNotFound),
        other => panic!("{other:?}"),
    }
    // Zero-RTT: no response frame, just a close.
    let mut conn = dial(&engine, "missing", true, None).await;
    expect_closed(&mut conn).await;
}

#[tokio::test]
async fn proxy_connections_need_the_secret() {
    let engine = LocalEngine::builder().start().await.unwrap();
    let mut control = open(&engine).await;
    create(&mut control, bytestream(Some("guarded")))
        .await
        .unwrap();
    let mut dialer = dial(&engine, "guarded", false, None).await;
    let req = expect_proxy_conn_req(&mut control).await;

    for token in [None, Some("wrong")] {
        let (mut conn, rsp) = proxy_connection(&engine, &req, token, false).await;
        let err = rsp.unwrap().error.expect("an error");
        assert_eq!(code(&err), ErrorCode::InvalidStream);
        expect_closed(&mut conn).await;
    }
    let secret = req.secret.clone().unwrap();
    let (mut owner, rsp) = proxy_connection(&engine, &req, Some(&secret), false).await;
    assert!(rsp.unwrap().error.is_none());
    // A second connection for the same stream is refused.
    let (_, rsp) = proxy_connection(&engine, &req, Some(&secret), false).await;
    assert_eq!(code(&rsp.unwrap().error.unwrap()), ErrorCode::InvalidStream);

    let ok = ProxyConnRsp {
        stream_id: req.stream_id.clone(),
        error: None,
    };
    send(&mut control, Payload::ProxyConnRsp(ok)).await;
    assert!(matches!(
        stream_rsp(&mut dialer).await,
        stream_rsp::Payload::StreamId(_)
    ));
    owner.write_all(b"ok").await.unwrap();
    owner.flush().await.unwrap();
    assert_eq!(read_exact_n(&mut dialer, 2).await, b"ok");

    // The owner refusing a stream fails the dial.
    let mut dialer = dial(&engine, "guarded", false, None).await;
    let req = expect_proxy_conn_req(&mut control).await;
    let refuse = ProxyConnRsp {
        stream_id: req.stream_id,
        error: Some(proto::Error::new(ErrorCode::InvalidStream, "busy")),
    };
    send(&mut control, Payload::ProxyConnRsp(refuse)).await;
    match stream_rsp(&mut dialer).await {
        stream_rsp::Payload::Error(e) => {
            assert_eq!(code(&e), ErrorCode::InvalidStream);
            assert!(e.message.unwrap().contains("busy"));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn pending_streams_are_bounded() {
    let engine = LocalEngine::builder()
        .max_pending_streams(1)
        .start()
        .await
        .unwrap();
    let mut control = open(&engine).await;
    create(&mut control, bytestream(Some("slow")))
        .await
        .unwrap();
    let _first = dial(&engine, "slow", false, None).await;
    let _req = expect_proxy_conn_req(&mut control).await;
    let mut second = dial(&engine, "slow", false, None).await;
    match stream_rsp(&mut second).await {
        stream_rsp::Payload::Error(e) => assert_eq!(code(&e), ErrorCode::CapacityExhausted),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn garbage_does_not_hurt_the_engine() {
    let engine = LocalEngine::builder().start().await.unwrap();
    // Not even TLS.
    let mut raw = TcpStream::connect(engine.local_addr()).await.unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut alert = Vec::new();
    let _ = within("a TLS alert, then EOF", raw.read_to_end(&mut alert)).await;
    assert!(
        alert.len() < 64,
        "unexpected answer to plaintext: {alert:?}"
    );

    let bad_starts: [&[u8]; 5] = [
        &[0xff, 0xff, 0xff, 0xff],                   // 4 GiB length
        &[0x00, 0x01, 0x11, 0x70],                   // 70 000 bytes
        &[0x00, 0x00, 0x00, 0x03, 0xff, 0xff, 0xff], // not protobuf
        &[0x00, 0x00, 0x00, 0x00],                   // empty message
        &[0x00, 0x00, 0x01, 0x00, 0x01],             // truncated, then EOF
    ];
    for bytes in bad_starts {
        let mut conn = connect(&engine).await;
        conn.write_all(bytes).await.unwrap();
        conn.flush().await.unwrap();
        if bytes.len() == 5 {
            conn.shutdown().await.unwrap();
        }
        expect_closed(&mut conn).await;
    }
    // A valid frame of the wrong kind.
    let mut conn = connect(&engine).await;
    send(
        &mut conn,
        Payload::Heartbeat(Heartbeat {
            sequence: 1,
            acknowledgement: 0,
        }),
    )
    .await;
    expect_closed(&mut conn).await;
    // Control channel garbage after the handshake kills only that channel.
    let mut control = open(&engine).await;
    control.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
    control.flush().await.unwrap();
    expect_closed(&mut control).await;

    let mut control = open(&engine).await;
    create(&mut control, bytestream(Some("still-alive")))
        .await
        .unwrap();
}

#[tokio::test]
async fn engine_api_is_served_on_the_same_port() {
    use http_body_util::{BodyExt, Empty};
    let engine = LocalEngine::builder().start().await.unwrap();
    for alpn in [&b"h2"[..], &b"http/1.1"[..]] {
        let conn = tls_to(&engine, &engine.engine_address(), &[alpn]).await;
        assert_eq!(conn.get_ref().1.alpn_protocol(), Some(alpn));
        let io = hyper_util::rt::TokioIo::new(conn);
        let get = |path: &str| {
            http::Request::get(format!("https://{}{path}", engine.engine_address()))
                .body(Empty::<bytes::Bytes>::new())
                .unwrap()
        };
        let responses = if alpn == b"h2" {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let a = sender.send_request(get("/api/health/live")).await.unwrap();
            let b = sender.send_request(get("/api/nope")).await.unwrap();
            [a, b]
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            let a = sender.send_request(get("/api/health/live")).await.unwrap();
            let a_status = a.status();
            let a_body = a.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(a_status, 200);
            assert_eq!(&a_body[..], br#"{"status":"live"}"#);
            let b = sender.send_request(get("/api/nope")).await.unwrap();
            assert_eq!(b.status(), 404);
            continue;
        };
        let [a, b] = responses;
        assert_eq!(a.status(), 200);
        let body = a.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], br#"{"status":"live"}"#);
        assert_eq!(b.status(), 404);
    }
}

#[tokio::test]
async fn restart_reuses_the_ca_and_port() {
    let dir = temp_dir("engine-restart");
    let engine = LocalEngine::builder()
        .state_dir(&dir)
        .start()
        .await
        .unwrap();
    let ca = engine.ca_pem().to_owned();
    let addr = engine.local_addr();
    assert_eq!(engine.ca_file(), dir.join("ca.pem"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    engine.shutdown().await;
    let engine = LocalEngine::builder()
        .state_dir(&dir)
        .listen(addr)
        .start()
        .await
        .unwrap();
    assert_eq!(engine.ca_pem(), ca);
    assert_eq!(engine.local_addr(), addr);
    open(&engine).await;
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn binary_contract() {
    use tokio::io::AsyncBufReadExt;
    use tokio::process::Command;
    let bin = env!("CARGO_BIN_EXE_rstream-local-engine");

    let help = Command::new(bin).arg("--help").output().await.unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--state-dir"));
    let bad = Command::new(bin).arg("--bogus").output().await.unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(!bad.stderr.is_empty());
    let bad = Command::new(bin)
        .args(["--listen", "nowhere"])
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));

    let dir = temp_dir("engine-bin");
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(&dir)
        .args(["--token", "t0k", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = within("the address line", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    let vars: HashMap<&str, &str> = line
        .split(' ')
        .map(|kv| kv.split_once('=').unwrap())
        .collect();
    assert_eq!(vars.len(), 2, "{line}");
    let engine_addr = vars["RSTREAM_ENGINE"];
    assert!(engine_addr.starts_with("127.0.0.1:"));
    assert_eq!(
        std::path::Path::new(vars["RSTREAM_CA_FILE"]),
        dir.join("ca.pem")
    );

    let config = TlsOptions::new()
        .add_ca_file(vars["RSTREAM_CA_FILE"])
        .unwrap()
        .client_config(&[proto::ALPN])
        .unwrap();
    let mut conn = TlsDialer::new(config, STEP)
        .connect(&Endpoint::parse(engine_addr).unwrap(), "127.0.0.1")
        .await
        .unwrap();
    let req = OpenControlChannelReq {
        client_details: Some(details(Some("t0k"))),
        liveness: None,
    };
    send(&mut conn, Payload::OpenControlChannelReq(req)).await;
    match recv(&mut conn).await {
        Payload::OpenControlChannelRsp(rsp) => {
            assert!(matches!(
                rsp.payload,
                Some(open_control_channel_rsp::Payload::Ok(_))
            ))
        }
        other => panic!("{}", other.name()),
    }
    drop(conn);
    // SIGTERM stops it cleanly; stdout held exactly one line.
    #[cfg(unix)]
    {
        let pid = child.id().unwrap().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().await;
        assert!(killed.unwrap().success());
        let status = within("exit on SIGTERM", child.wait()).await.unwrap();
        assert!(status.success(), "{status:?}");
        assert_eq!(within("stdout EOF", lines.next_line()).await.unwrap(), None);
    }
    #[cfg(not(unix))]
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn no_alpn_is_the_tunnel_protocol() {
    let engine = LocalEngine::builder().start().await.unwrap();
    let mut conn = tls_to(&engine, &engine.engine_address(), &[]).await;
    assert_eq!(conn.get_ref().1.alpn_protocol(), None);
    let req = OpenControlChannelReq {
        client_details: Some(details(None)),
        liveness: None,
    };
    send(&mut conn, Payload::OpenControlChannelReq(req)).await;
    match recv(&mut conn).await {
        Payload::OpenControlChannelRsp(rsp) => {
            assert!(matches!(
                rsp.payload,
                Some(open_control_channel_rsp::Payload::Ok(_))
            ))
        }
        other => panic!("{}", other.name()),
    }
}

/// Events, listings and the state share one copy of what a client sent
/// (its details, a tunnel's properties and labels): no per-reader copy.
#[tokio::test]
async fn events_share_tunnel_data() {
    let engine = LocalEngine::builder().start().await.unwrap();
    let mut events = engine.subscribe();
    let mut other = engine.subscribe();
    let mut control = open(&engine).await;
    let mut props = bytestream(Some("shared"));
    props.labels.insert("env".into(), "dev".into());
    create(&mut control, props).await.unwrap();
    let client = match within("event", events.recv()).await.unwrap() {
        EngineEvent::ClientCreated { client } => client,
        other => panic!("{other:?}"),
    };
    let tunnel = match within("event", events.recv()).await.unwrap() {
        EngineEvent::TunnelCreated { tunnel } => tunnel,
        other => panic!("{other:?}"),
    };
    let _ = within("event", other.recv()).await.unwrap();
    let tunnel_again = match within("event", other.recv()).await.unwrap() {
        EngineEvent::TunnelCreated { tunnel } => tunnel,
        other => panic!("{other:?}"),
    };
    assert_eq!(tunnel.properties.labels["env"], "dev");
    let listed = engine.tunnels();
    assert!(Arc::ptr_eq(&tunnel.properties, &listed[0].properties));
    assert!(Arc::ptr_eq(&tunnel.properties, &tunnel_again.properties));
    assert!(Arc::ptr_eq(&client.details, &engine.clients()[0].details));
    drop(control);
    match within("event", events.recv()).await.unwrap() {
        EngineEvent::TunnelDeleted {
            tunnel: deleted, ..
        } => {
            assert!(Arc::ptr_eq(&tunnel.properties, &deleted.properties))
        }
        other => panic!("{other:?}"),
    }
    engine.shutdown().await;
}

/// `Debug` of the builder never prints agent tokens or webhook secrets.
#[test]
fn builder_debug_redacts_secrets() {
    let builder = LocalEngine::builder()
        .token("agent-token-s3cret")
        .token("second-token-s3cret")
        .webhook(
            "http://127.0.0.1:9/hook",
            rstream::webhook::WebhookSecret::new("whsec_webhook-s3cret").unwrap(),
        );
    let printed = format!("{builder:?} {builder:#?}");
    assert!(!printed.contains("s3cret"), "{printed}");
    assert!(printed.contains("<redacted>"), "{printed}");
    assert!(printed.contains("http://127.0.0.1:9/hook"), "{printed}");
}

/// The state directory attack: another local user creates the directory
/// (or the key) first. Refused with `ERR_RSTREAM_LOCAL_ENGINE_STATE_DIR`
/// naming the path; the engine's own directories are 0700, keys 0600.
#[cfg(unix)]
#[tokio::test]
async fn hostile_state_directories_are_refused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const CODE: &str = "ERR_RSTREAM_LOCAL_ENGINE_STATE_DIR";
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let chmod = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
    };
    let refused = |err: rstream::Error, path: &std::path::Path| {
        assert_eq!(err.code(), CODE, "{err}");
        assert_eq!(err.kind(), rstream::ErrorKind::Config);
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    };

    // The default: a fresh directory, 0700, key 0600.
    let engine = LocalEngine::builder().start().await.unwrap();
    assert_eq!(mode(engine.state_dir()), 0o700);
    assert_eq!(mode(&engine.state_dir().join("ca-key.pem")), 0o600);
    let _ = std::fs::remove_dir_all(engine.state_dir());
    engine.shutdown().await;

    // A pre-created world-writable directory.
    let dir = temp_dir("state-0777");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    let err = LocalEngine::builder()
        .state_dir(&dir)
        .start()
        .await
        .unwrap_err();
    refused(err, &dir);
    assert!(!dir.join("ca-key.pem").exists(), "nothing written");
    chmod(&dir, 0o700);
    let engine = LocalEngine::builder()
        .state_dir(&dir)
        .start()
        .await
        .unwrap();
    engine.shutdown().await;

    // A CA key readable by others (planted, or left so by a copy).
    let key = dir.join("ca-key.pem");
    chmod(&key, 0o644);
    let err = LocalEngine::builder()
        .state_dir(&dir)
        .start()
        .await
        .unwrap_err();
    refused(err, &key);
    chmod(&key, 0o600);
    let engine = LocalEngine::builder()
        .state_dir(&dir)
        .start()
        .await
        .unwrap();
    engine.shutdown().await;

    // Owned by another user (only root can set that up).
    if std::fs::metadata(&dir).unwrap().uid() == 0 {
        std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
        let err = LocalEngine::builder()
            .state_dir(&dir)
            .start()
            .await
            .unwrap_err();
        refused(err, &key);
        std::os::unix::fs::chown(&key, Some(0), None).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let err = LocalEngine::builder()
            .state_dir(&dir)
            .start()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("uid 65534"), "{err}");
        refused(err, &dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// docs/LOCAL_ENGINE.md names every flag and environment variable of the
/// binary's command definition (the `clap` one the binary parses with).
#[test]
fn docs_list_every_binary_flag() {
    let docs =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/LOCAL_ENGINE.md"))
            .unwrap();
    let flags = rstream::engine::cli::flags();
    assert!(flags.len() >= 30, "{flags:?}");
    let missing: Vec<&String> = flags
        .iter()
        .filter(|f| !docs.contains(&format!("`{f}`")) && !docs.contains(&format!("`{f} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/LOCAL_ENGINE.md does not list {missing:?}"
    );
}

/// Spawns the binary with `args` and `env`; returns it and its address line.
async fn spawn_engine_bin(
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
    stderr: std::process::Stdio,
) -> (tokio::process::Child, HashMap<String, String>) {
    use tokio::io::AsyncBufReadExt;
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_rstream-local-engine"));
    command
        .args(args)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .kill_on_drop(true);
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = within("the address line", lines.next_line())
        .await
        .unwrap()
        .expect("the engine exited before listening");
    let vars = line
        .split(' ')
        .map(|kv| kv.split_once('=').unwrap())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (child, vars)
}

/// Opens a control channel on the binary at `vars`; the engine's answer.
async fn open_on_bin(
    vars: &HashMap<String, String>,
    details: ClientDetails,
) -> proto::OpenControlChannelRsp {
    let config = TlsOptions::new()
        .add_ca_file(&vars["RSTREAM_CA_FILE"])
        .unwrap()
        .client_config(&[proto::ALPN])
        .unwrap();
    let mut conn = TlsDialer::new(config, STEP)
        .connect(
            &Endpoint::parse(&vars["RSTREAM_ENGINE"]).unwrap(),
            "127.0.0.1",
        )
        .await
        .unwrap();
    let req = OpenControlChannelReq {
        client_details: Some(details),
        liveness: None,
    };
    send(&mut conn, Payload::OpenControlChannelReq(req)).await;
    match recv(&mut conn).await {
        Payload::OpenControlChannelRsp(rsp) => rsp,
        other => panic!("{}", other.name()),
    }
}

fn accepted(rsp: &proto::OpenControlChannelRsp) -> bool {
    matches!(rsp.payload, Some(open_control_channel_rsp::Payload::Ok(_)))
}

/// Tokens without argv: from `--token-file` (one per line) and from
/// `RSTREAM_LOCAL_ENGINE_TOKEN`; `--version` works.
#[tokio::test]
async fn binary_takes_secrets_from_files_and_env() {
    let bin = env!("CARGO_BIN_EXE_rstream-local-engine");
    let version = tokio::process::Command::new(bin)
        .arg("--version")
        .output()
        .await
        .unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("rstream-local-engine {}", env!("CARGO_PKG_VERSION"))
    );

    let dir = temp_dir("engine-bin-secrets");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tokens");
    std::fs::write(&file, "# agents\nfile-token-1\n\nfile-token-2\r\n").unwrap();
    let (_child, vars) = spawn_engine_bin(
        &[
            "--quiet".as_ref(),
            "--token-file".as_ref(),
            file.as_os_str(),
        ],
        &[],
        std::process::Stdio::null(),
    )
    .await;
    for (token, ok) in [
        ("file-token-1", true),
        ("file-token-2", true),
        ("# agents", false),
        ("nope", false),
    ] {
        let rsp = open_on_bin(&vars, details(Some(token))).await;
        assert_eq!(accepted(&rsp), ok, "{token}");
    }

    let (_child, vars) = spawn_engine_bin(
        &[],
        &[
            ("RSTREAM_LOCAL_ENGINE_TOKEN", "env-token"),
            ("RSTREAM_LOCAL_ENGINE_QUIET", "true"),
        ],
        std::process::Stdio::null(),
    )
    .await;
    assert!(accepted(
        &open_on_bin(&vars, details(Some("env-token"))).await
    ));
    assert!(!accepted(&open_on_bin(&vars, details(Some("other"))).await));

    // A token file without tokens would admit everyone: refused (exit 2).
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n# none\n").unwrap();
    let out = tokio::process::Command::new(bin)
        .arg("--token-file")
        .arg(&empty)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// A parent that never reads the binary's stderr: with a verbose log, one
/// runtime worker (TOKIO_WORKER_THREADS=1) and an agent name of 4 KiB in
/// every event line, far more than a pipe's 64 KiB is logged; every
/// control channel is still answered within 5 s (log lines are dropped
/// instead). The agent name is logged escaped and cut.
#[tokio::test]
async fn binary_never_blocks_on_stderr() {
    use tokio::io::AsyncReadExt;
    let dir = temp_dir("engine-bin-stderr");
    let (mut child, vars) = spawn_engine_bin(
        &["--state-dir".as_ref(), dir.as_os_str()],
        &[("RUST_LOG", "trace"), ("TOKIO_WORKER_THREADS", "1")],
        std::process::Stdio::piped(),
    )
    .await;
    let mut agent = "\u{1b}[31mhostile\nagent ".to_owned();
    agent.push_str(&"x".repeat(4096));
    let started = std::time::Instant::now();
    for _ in 0..150 {
        let mut d = details(None);
        d.agent = Some(agent.clone());
        assert!(accepted(&open_on_bin(&vars, d).await));
    }
    let elapsed = started.elapsed();
    // The pipe is full (what we now read was written while nobody read),
    // and the engine went on meanwhile.
    let mut stderr = child.stderr.take().unwrap();
    let mut log = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while log.len() < 64 * 1024 {
        match tokio::time::timeout(Duration::from_secs(2), stderr.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => log.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    assert!(log.len() >= 64 * 1024, "only {} bytes logged", log.len());
    let text = String::from_utf8_lossy(&log);
    assert!(!text.contains('\u{1b}'), "raw escape sequence logged");
    assert!(!text.contains("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
    println!("150 control channels with stderr unread: {elapsed:?}");
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An HTTP/3-upstream tunnel also listens on UDP, on its TCP port (its
/// HTTP/3 downstream): a requested port taken on UDP fails the creation
/// as one taken on TCP does (`CAPACITY_EXHAUSTED`, naming the port), and
/// succeeds once it is free.
#[cfg(feature = "http3")]
#[tokio::test]
async fn an_h3_tunnel_needs_its_port_free_on_udp_too() {
    let engine = LocalEngine::builder().start().await.unwrap();
    let mut control = open(&engine).await;
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = udp.local_addr().unwrap().port();
    let h3 = TunnelProperties {
        r#type: Some("datagram".into()),
        protocol: Some("http".into()),
        http_version: Some("h3".into()),
        publish: Some(true),
        hostname: Some("127.0.0.1".into()),
        port: Some(u32::from(port)),
        ..Default::default()
    };
    let e = create(&mut control, h3.clone()).await.unwrap_err();
    assert_eq!(code(&e), ErrorCode::CapacityExhausted, "{e:?}");
    assert!(
        e.message
            .as_deref()
            .unwrap_or("")
            .contains(&port.to_string()),
        "{e:?}"
    );
    drop(udp);
    let created = create(&mut control, h3).await.unwrap();
    assert_eq!(created.port, Some(u32::from(port)));
}
