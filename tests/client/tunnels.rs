//! End to end over loopback TLS: our client against the local engine.

use crate::support;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use rstream::engine::LocalEngine;
use rstream::proto::{self, IpAddress};
use rstream::{DialOptions, ErrorKind, TunnelOptions};
use support::scripted::{self, Scripted};
use support::{client, echo_round_trip, engine, https_get, options, spawn_echo, within};

#[tokio::test]
async fn connect_create_close() {
    let engine = engine().await;
    let client = client(&engine);
    let control = within("connect", client.connect()).await.unwrap();
    assert!(!control.client_id().is_empty());

    let private = control
        .create_tunnel(TunnelOptions::new().name("private-api"))
        .await
        .unwrap();
    assert!(!private.id().is_empty());
    assert_eq!(private.name(), Some("private-api"));
    assert_eq!(
        private.forwarding_address(),
        "rstrm://private-api (unpublished)"
    );

    let web = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    assert!(
        web.forwarding_address().starts_with("https://127.0.0.1:"),
        "{}",
        web.forwarding_address()
    );

    // Names are unique on the engine.
    let dup = control
        .create_tunnel(TunnelOptions::new().name("private-api"))
        .await
        .unwrap_err();
    assert_eq!(dup.kind(), ErrorKind::Engine, "{dup}");

    let mut private = private;
    private.close().await.unwrap();
    private.close().await.unwrap(); // idempotent
    let err = private.accept().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    // The name is free again (the tunnel is dropped at once).
    let _ = control
        .create_tunnel(TunnelOptions::new().name("private-api"))
        .await
        .unwrap();

    control.close().await.unwrap();
    assert!(control.is_closed());
    let mut web = web;
    assert_eq!(
        within("accept after close", web.accept())
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Closed
    );
}

#[tokio::test]
async fn wrong_token_is_unauthorized_and_unknown_tunnel_not_found() {
    init();
    let engine = LocalEngine::builder()
        .token("good-token")
        .start()
        .await
        .unwrap();
    let bad = options(&engine).token("bad-token").build().unwrap();
    let err = bad.connect().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert_eq!(err.engine_code(), Some(1000));
    assert!(!format!("{err} {err:?}").contains("bad-token"));
    let none = options(&engine).build().unwrap();
    assert_eq!(none.connect().await.unwrap_err().engine_code(), Some(1000));

    let good = options(&engine).token("good-token").build().unwrap();
    good.connect().await.unwrap();
    let err = good
        .dial_with("no-such-tunnel", DialOptions::new().zero_rtt(false))
        .await
        .unwrap_err();
    assert_eq!(err.engine_code(), Some(3000), "{err}");
    let err = bad
        .dial_with("no-such-tunnel", DialOptions::new().zero_rtt(false))
        .await
        .unwrap_err();
    assert_eq!(err.engine_code(), Some(1000), "{err}");
}

fn init() {
    support::init_tracing();
}

#[tokio::test]
async fn published_https_request_reaches_the_app_with_source_ip() {
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::http().name("web"))
        .await
        .unwrap();
    let url = tunnel.forwarding_address().to_owned();
    let mut tunnel = tunnel;
    let app = tokio::spawn(async move {
        let stream = tunnel.accept().await.unwrap();
        let ip = stream.source_ip();
        let svc = hyper::service::service_fn(
            move |req: http::Request<hyper::body::Incoming>| async move {
                let body = format!("{} {} from {:?}", req.method(), req.uri().path(), ip);
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(body))))
            },
        );
        hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
            .await
            .unwrap();
    });
    let (status, body) = within("https get", https_get(&url, engine.ca_pem(), "/hello")).await;
    assert_eq!(status, 200);
    assert_eq!(body, "GET /hello from Some(127.0.0.1)");
    within("app", app).await.unwrap();
}

#[tokio::test]
async fn dial_by_name_and_id_with_zero_rtt_on_and_off() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("echo"))
        .await
        .unwrap();
    let id = tunnel.id().to_owned();
    let _echo = spawn_echo(tunnel);
    for target in ["echo", id.as_str()] {
        for zero_rtt in [true, false] {
            let stream = within(
                "dial",
                client.dial_with(target, DialOptions::new().zero_rtt(zero_rtt)),
            )
            .await
            .unwrap();
            assert_eq!(stream.info().tunnel(), target);
            assert_eq!(stream.info().stream_id().is_some(), !zero_rtt);
            let msg = format!("hello {target} zero_rtt={zero_rtt}");
            let back = within("echo", echo_round_trip(stream, msg.as_bytes())).await;
            assert_eq!(back, msg.as_bytes());
        }
    }
    // A client-wide zero_rtt=false default also works.
    let slow = options(&engine).zero_rtt(false).build().unwrap();
    let back = echo_round_trip(slow.dial("echo").await.unwrap(), b"x").await;
    assert_eq!(back, b"x");
}

#[tokio::test]
async fn hundred_concurrent_dials() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let _echo = spawn_echo(
        control
            .create_tunnel(TunnelOptions::new().name("many"))
            .await
            .unwrap(),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let client = client.clone();
        tasks.spawn(async move {
            let msg = format!("dial number {i}");
            let back = echo_round_trip(client.dial("many").await.unwrap(), msg.as_bytes()).await;
            assert_eq!(back, msg.as_bytes());
        });
    }
    within("100 dials", async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn three_hundred_simultaneous_proxy_requests_queue_instead_of_failing() {
    init();
    let engine = LocalEngine::builder()
        .max_pending_streams(1024)
        .start()
        .await
        .unwrap();
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let _echo = spawn_echo(
        control
            .create_tunnel(TunnelOptions::new().name("burst"))
            .await
            .unwrap(),
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(300));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300 {
        let client = client.clone();
        let barrier = barrier.clone();
        tasks.spawn(async move {
            barrier.wait().await;
            let msg = format!("burst {i}");
            let back = echo_round_trip(client.dial("burst").await.unwrap(), msg.as_bytes()).await;
            assert_eq!(back, msg.as_bytes());
        });
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("300 proxied streams within 60 s");
    assert!(!control.is_closed());
}

#[tokio::test]
async fn tunnel_is_a_stream_and_closes_with_its_channel() {
    use futures_util::StreamExt;
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let mut tunnel = control
        .create_tunnel(TunnelOptions::new().name("s"))
        .await
        .unwrap();
    let closed = tunnel.closed();
    let dialer = client.clone();
    let dial =
        tokio::spawn(async move { echo_round_trip(dialer.dial("s").await.unwrap(), b"").await });
    let first = within("stream next", tunnel.next()).await.unwrap().unwrap();
    drop(first);
    let _ = within("dial", dial).await;
    control.close().await.unwrap();
    let reason = within("closed", closed).await;
    assert_eq!(reason.kind(), ErrorKind::Closed);
    assert!(within("next err", tunnel.next()).await.unwrap().is_err());
    assert!(tunnel.next().await.is_none());
}

#[tokio::test]
async fn dropping_a_tunnel_closes_it_on_the_engine() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("dropme"))
        .await
        .unwrap();
    drop(tunnel);
    // The name becomes available again once the engine processed the close.
    within("name freed", async {
        loop {
            if control
                .create_tunnel(TunnelOptions::new().name("dropme"))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn unsupported_properties_are_refused_by_engine_and_client() {
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    let err = control
        .create_tunnel(TunnelOptions::http().geoip("FR"))
        .await
        .unwrap_err();
    assert_eq!(err.engine_code(), Some(5000), "{err}");
    let err = control
        .create_tunnel(TunnelOptions::datagram())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "ERR_RSTREAM_UNSUPPORTED_TUNNEL");
    assert!(!control.is_closed());
}

#[tokio::test]
async fn tcp_tunnel_splices_raw_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    let tunnel = control.create_tunnel(TunnelOptions::tcp()).await.unwrap();
    let addr = tunnel
        .forwarding_address()
        .trim_end_matches(" (tcp)")
        .to_owned();
    let _echo = spawn_echo(tunnel);
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(b"raw tcp bytes").await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("tcp echo", tcp.read_to_end(&mut back))
        .await
        .unwrap();
    assert_eq!(back, b"raw tcp bytes");
}

// ----- 3. source_ip, v6 and v4 ------------------------------------------

/// `ProxyConnReq.source_ip` reaches the application exactly, IPv6 (16 raw
/// bytes) and IPv4 alike; a malformed one (not 16 bytes) is dropped
/// without refusing the connection.
#[tokio::test]
async fn source_ip_v6_and_v4_reach_the_app() {
    let engine = Scripted::start().await;
    let (control, mut peer) = scripted::channel(&engine).await;
    let mut tunnel = scripted::tunnel(&control, &mut peer, "ips", "ips-1").await;

    let v6: IpAddr = "2001:db8:85a3::8a2e:370:7334".parse().unwrap();
    let mut conn = scripted::proxy(&engine, &mut peer, "ips-1", "v6", Some(v6.into())).await;
    let mut stream = within("accept v6", tunnel.accept()).await.unwrap();
    assert_eq!(stream.source_ip(), Some(v6));
    assert_eq!(stream.info().source_ip(), Some(v6));
    assert_eq!(stream.info().tunnel(), "ips-1");
    assert_eq!(stream.info().stream_id(), Some("v6"));
    scripted::assert_flows(&mut stream, &mut conn, "v6").await;

    let v4: IpAddr = "203.0.113.7".parse().unwrap();
    let _conn = scripted::proxy(&engine, &mut peer, "ips-1", "v4", Some(v4.into())).await;
    let stream = within("accept v4", tunnel.accept()).await.unwrap();
    assert_eq!(stream.source_ip(), Some(v4));

    let malformed = IpAddress {
        addr: Some(proto::ip_address::Addr::V6(vec![0x20, 0x01, 0x0d, 0xb8])),
    };
    let _conn = scripted::proxy(&engine, &mut peer, "ips-1", "bad", Some(malformed)).await;
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
    let (control, mut peer) = scripted::channel(&engine).await;
    let tunnel = scripted::tunnel(&control, &mut peer, "web", "web-1").await;
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
    let conn = scripted::proxy(&engine, &mut peer, "web-1", "w-1", Some(v6.into())).await;
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
