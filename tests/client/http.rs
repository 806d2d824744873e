//! HTTP end to end: real clients reach published addresses of the local
//! engine, and the requests land in in-process axum / hyper services.

use crate::support;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::extract::ConnectInfo;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rstream::{ErrorKind, HttpVersion, TunnelAddr, TunnelOptions};
use support::{authority, client, engine, https_get, tls_connect, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message as TMessage;

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "root" }))
        .route(
            "/who",
            get(|ConnectInfo(addr): ConnectInfo<TunnelAddr>| async move {
                format!("{:?}", addr.source_ip())
            }),
        )
        .route(
            "/stream-info",
            get(|req: http::Request<axum::body::Body>| async move {
                let info = req.extensions().get::<rstream::StreamInfo>();
                format!("{:?}", info.and_then(|i| i.source_ip()))
            }),
        )
        .route("/forever", get(std::future::pending::<&'static str>))
        .route(
            "/endless",
            get(|| async {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                let chunks = futures_util::stream::repeat(Ok::<_, Infallible>(chunk));
                axum::body::Body::from_stream(chunks)
            }),
        )
        .route(
            "/sse",
            get(|| async {
                let events = futures_util::stream::iter(0..10).then(|i| async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok::<_, Infallible>(Bytes::from(format!("data: {i}\n\n")))
                });
                axum::body::Body::from_stream(events)
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                "slow done"
            }),
        )
        .route("/version", get(|req: http::Request<axum::body::Body>| async move {
            format!("{:?}", req.version())
        }))
        .route(
            "/upload",
            post(|body: axum::body::Body| async move {
                let mut stream = body.into_data_stream();
                let mut n = 0usize;
                while let Some(chunk) = stream.next().await {
                    n += chunk.unwrap().len();
                }
                n.to_string()
            }),
        )
        .route(
            "/download/{mib}",
            get(|axum::extract::Path(mib): axum::extract::Path<usize>| async move {
                let chunk = Bytes::from(vec![7u8; 1 << 20]);
                let stream = futures_util::stream::iter(
                    (0..mib).map(move |_| Ok::<_, Infallible>(chunk.clone())),
                );
                axum::body::Body::from_stream(stream)
            }),
        )
        .route(
            "/ws",
            get(|ws: WebSocketUpgrade| async move {
                ws.max_message_size(4 << 20).on_upgrade(|mut socket| async move {
                    while let Some(Ok(msg)) = socket.recv().await {
                        match msg {
                            WsMessage::Text(t) => {
                                let _ = socket.send(WsMessage::Text(format!("echo: {t}").into())).await;
                            }
                            WsMessage::Binary(b) => {
                                let _ = socket.send(WsMessage::Binary(b)).await;
                            }
                            WsMessage::Close(_) => break,
                            _ => {}
                        }
                    }
                })
            }),
        )
}

/// Publishes `app()` with `axum::serve(tunnel, ...)` and returns the URL.
async fn published(
    engine: &rstream::engine::LocalEngine,
    options: TunnelOptions,
) -> (
    String,
    rstream::ControlChannel,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let control = client(engine).connect().await.unwrap();
    let tunnel = control.create_tunnel(options).await.unwrap();
    let url = tunnel.forwarding_address().to_owned();
    let server = support::serve_axum(tunnel, app());
    (url, control, server)
}

#[tokio::test]
async fn axum_serve_keep_alive_hundred_requests_on_one_connection() {
    let engine = engine().await;
    let (url, _control, _server) = published(&engine, TunnelOptions::http()).await;
    let tls = tls_connect(&url, engine.ca_pem(), &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..100 {
        let req = http::Request::get(format!("/?n={i}"))
            .header("host", authority(&url))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let rsp = within("keep-alive request", send.send_request(req))
            .await
            .unwrap();
        assert_eq!(rsp.status(), 200);
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"root");
    }
}

#[tokio::test]
async fn fifty_concurrent_downstream_connections_and_connect_info() {
    let engine = engine().await;
    let (url, _control, _server) = published(&engine, TunnelOptions::http()).await;
    let ca = engine.ca_pem().to_owned();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (url, ca) = (url.clone(), ca.clone());
        tasks.spawn(async move { https_get(&url, &ca, "/who").await });
    }
    within("50 connections", async {
        while let Some(r) = tasks.join_next().await {
            let (status, body) = r.unwrap();
            assert_eq!(status, 200);
            assert_eq!(body, "Some(127.0.0.1)");
        }
    })
    .await;
}

#[tokio::test]
async fn h2c_tunnel_serves_http2_with_many_concurrent_streams() {
    let engine = engine().await;
    let (url, _control, _server) = published(
        &engine,
        TunnelOptions::http().http_version(HttpVersion::H2c),
    )
    .await;
    let tls = tls_connect(&url, engine.ca_pem(), &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let mut send = send.clone();
        let uri = format!("https://{}/version", authority(&url));
        tasks.spawn(async move {
            let req = http::Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
            let rsp = send.send_request(req).await.unwrap();
            assert_eq!(rsp.version(), http::Version::HTTP_2);
            let body = rsp.into_body().collect().await.unwrap().to_bytes();
            // The request arrived in the app as HTTP/2.
            assert_eq!(&body[..], b"HTTP/2.0");
        });
    }
    within("100 h2 streams", async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn websocket_round_trip_through_published_address() {
    let engine = engine().await;
    let (url, _control, _server) = published(&engine, TunnelOptions::http()).await;
    let tls = tls_connect(&url, engine.ca_pem(), &[b"http/1.1"]).await;
    let ws_url = format!("wss://{}/ws", authority(&url));
    let (mut ws, rsp) = within("ws handshake", tokio_tungstenite::client_async(ws_url, tls))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 101);
    ws.send(TMessage::Text("hi".into())).await.unwrap();
    let got = within("ws text", ws.next()).await.unwrap().unwrap();
    assert_eq!(got, TMessage::Text("echo: hi".into()));
    let big: Vec<u8> = (0..(1 << 20)).map(|i| (i % 251) as u8).collect();
    ws.send(TMessage::Binary(big.clone().into())).await.unwrap();
    let got = within("ws binary", ws.next()).await.unwrap().unwrap();
    assert_eq!(got.into_data().as_ref(), &big[..]);
    ws.close(None).await.unwrap();
    // The server answers the close; the stream then ends cleanly.
    while let Some(msg) = within("ws close", ws.next()).await {
        match msg {
            Ok(TMessage::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_request() {
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    let tunnel = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    let url = tunnel.forwarding_address().to_owned();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(tunnel, app())
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    let ca = engine.ca_pem().to_owned();
    let slow = tokio::spawn(async move { https_get(&url, &ca, "/slow").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(()).unwrap();
    let (status, body) = within("slow request", slow).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "slow done"));
    within("server exits", server).await.unwrap().unwrap();
}

#[tokio::test]
async fn closing_the_tunnel_ends_axum_serve_wired_to_closed() {
    let engine = engine().await;
    let (url, control, server) = published(&engine, TunnelOptions::http()).await;
    let (status, _) = https_get(&url, engine.ca_pem(), "/").await;
    assert_eq!(status, 200);
    control.close().await.unwrap();
    within("axum::serve returns", server)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn rstream_http_serve_returns_when_the_tunnel_closes() {
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    let tunnel = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    let url = tunnel.forwarding_address().to_owned();
    let svc = tower::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(format!(
            "{:?}",
            req.version()
        )))))
    });
    let server = tokio::spawn(rstream::http::serve(tunnel, svc).into_future());
    let (status, body) = https_get(&url, engine.ca_pem(), "/").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "HTTP/1.1"));
    control.close().await.unwrap();
    let err = within("serve returns", server).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

/// With `tunnel.closed()` as the graceful signal, the tunnel closing is the
/// shutdown asked for: `serve` returns `Ok`, every time (the failing accept
/// and the signal become ready together; the signal must win).
#[tokio::test]
async fn rstream_http_serve_wired_to_closed_returns_ok_when_the_tunnel_closes() {
    let engine = engine().await;
    let client = client(&engine);
    for round in 0..12 {
        let control = client.connect().await.unwrap();
        let tunnel = control.create_tunnel(TunnelOptions::http()).await.unwrap();
        let url = tunnel.forwarding_address().to_owned();
        let closed = tunnel.closed();
        let svc = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async move {
            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let server = tokio::spawn(
            rstream::http::serve(tunnel, svc)
                .with_graceful_shutdown(async move {
                    let _ = closed.await;
                })
                .into_future(),
        );
        let (status, _) = https_get(&url, engine.ca_pem(), "/").await;
        assert_eq!(status, 200);
        control.close().await.unwrap();
        let outcome = within("serve returns", server).await.unwrap();
        assert!(outcome.is_ok(), "round {round}: {outcome:?}");
    }
}

#[tokio::test]
async fn forward_to_relays_both_ways_and_survives_refused_connections() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    // A port with nothing listening: bind, read the port, drop.
    let dead: SocketAddr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    // A tunnel forwarding to a dead port: each dial is closed, the loop goes on.
    let dead_tunnel = control
        .create_tunnel(TunnelOptions::new().name("fwd-dead"))
        .await
        .unwrap();
    tokio::spawn(dead_tunnel.forward_to(dead.to_string()));
    let mut s = client.dial("fwd-dead").await.unwrap();
    let mut buf = Vec::new();
    let _ = within("refused closes the stream", s.read_to_end(&mut buf)).await;
    assert!(buf.is_empty());

    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("fwd"))
        .await
        .unwrap();
    let local = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let local_addr = local.local_addr().unwrap();
    tokio::spawn(tunnel.forward_to(local_addr.to_string()));
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = local.accept().await.unwrap();
            tokio::spawn(async move {
                let mut data = Vec::new();
                sock.read_to_end(&mut data).await.unwrap();
                data.reverse();
                sock.write_all(&data).await.unwrap();
                sock.shutdown().await.unwrap();
            });
        }
    });
    for _ in 0..3 {
        let mut s = client.dial("fwd").await.unwrap();
        s.write_all(b"abcdef").await.unwrap();
        s.shutdown().await.unwrap(); // half-close reaches the local service
        let mut back = Vec::new();
        within("relay", s.read_to_end(&mut back)).await.unwrap();
        assert_eq!(back, b"fedcba");
    }
    // The dead-target tunnel keeps relaying (and failing) without ending.
    let mut s = client.dial("fwd-dead").await.unwrap();
    let mut buf = Vec::new();
    let _ = within("still refusing", s.read_to_end(&mut buf)).await;
}

#[tokio::test]
async fn hyper_clients_over_dialed_streams() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("private-api"))
        .await
        .unwrap();
    let id = tunnel.id().to_owned();
    let _server = tokio::spawn(rstream::http::serve(tunnel, app()).into_future());

    // hyper http1 handshake on a dialed stream.
    let stream = client.dial("private-api").await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let rsp = send
        .send_request(
            http::Request::get("/")
                .header("host", "private-api")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        &rsp.into_body().collect().await.unwrap().to_bytes()[..],
        b"root"
    );

    // hyper http2 (prior knowledge) on a dialed stream.
    let stream = client.dial("private-api").await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let rsp = send
        .send_request(
            http::Request::get("http://private-api/version")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        &rsp.into_body().collect().await.unwrap().to_bytes()[..],
        b"HTTP/2.0"
    );

    // tokio-tungstenite over a dialed stream.
    let stream = client.dial("private-api").await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://private-api/ws", stream)
        .await
        .unwrap();
    ws.send(TMessage::Text("dialed".into())).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        TMessage::Text("echo: dialed".into())
    );

    // hyper_util's pooled client over the connector, by name and by id.
    let pooled = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(client.connector());
    for host in ["private-api", id.as_str()] {
        let rsp = within(
            "pooled",
            pooled.get(format!("http://{host}/").parse().unwrap()),
        )
        .await
        .unwrap();
        assert_eq!(rsp.status(), 200);
        let info = rsp.extensions().get::<rstream::StreamInfo>().cloned();
        assert_eq!(info.map(|i| i.tunnel().to_owned()).as_deref(), Some(host));
        assert_eq!(
            &rsp.into_body().collect().await.unwrap().to_bytes()[..],
            b"root"
        );
    }
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let mib: usize = std::env::var("RSTREAM_TEST_STREAM_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let engine = engine().await;
    let (url, _control, _server) = published(&engine, TunnelOptions::http()).await;
    let tls = tls_connect(&url, engine.ca_pem(), &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    // Upload, streamed from a generator (never all in memory).
    let chunk = Bytes::from(vec![1u8; 1 << 20]);
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(
        (0..mib).map(move |_| Ok::<_, Infallible>(hyper::body::Frame::data(chunk.clone()))),
    ));
    let req = http::Request::post("/upload")
        .header("host", authority(&url))
        .body(body)
        .unwrap();
    let rsp = tokio::time::timeout(Duration::from_secs(120), send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let text = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, (mib << 20).to_string());
    // Download, counted frame by frame.
    let tls = tls_connect(&url, engine.ca_pem(), &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get(format!("/download/{mib}"))
        .header("host", authority(&url))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let mut body = send.send_request(req).await.unwrap().into_body();
    let mut n = 0;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(60), body.frame())
        .await
        .unwrap()
    {
        if let Ok(data) = frame.unwrap().into_data() {
            n += data.len();
        }
    }
    assert_eq!(n, mib << 20);
}

// ---- `rstream::http::serve` bounds (issue 21) and request extensions.

/// Reads until EOF or an error; how long that took.
async fn until_closed(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> Duration {
    let started = std::time::Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    within("the connection is closed", async {
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    started.elapsed()
}

/// `app()` under `rstream::http::serve` with `configure` applied, on a
/// published http tunnel: the URL and the serve task.
async fn served(
    engine: &rstream::engine::LocalEngine,
    configure: impl FnOnce(rstream::http::Serve<Router>) -> rstream::http::Serve<Router>,
) -> (
    String,
    rstream::ControlChannel,
    tokio::task::JoinHandle<rstream::Result<()>>,
) {
    let control = client(engine).connect().await.unwrap();
    let tunnel = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    let url = tunnel.forwarding_address().to_owned();
    let serve = configure(rstream::http::serve(tunnel, app()));
    (url, control, tokio::spawn(serve.into_future()))
}

#[tokio::test]
async fn slowloris_on_http_serve_is_cut_off_while_other_requests_are_served() {
    let engine = engine().await;
    let head = Duration::from_millis(1500);
    let (url, _control, _server) = served(&engine, |s| s.header_read_timeout(head)).await;
    let ca = engine.ca_pem().to_owned();
    // Half a request head, then nothing; and connections that send nothing.
    let mut attackers = Vec::new();
    for i in 0..8 {
        let mut tls = tls_connect(&url, &ca, &[b"http/1.1"]).await;
        if i % 2 == 0 {
            tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
        }
        attackers.push(tokio::spawn(async move { until_closed(&mut tls).await }));
    }
    // Meanwhile, everyone else is served.
    let started = std::time::Instant::now();
    while started.elapsed() < head {
        let (status, body) = https_get(&url, &ca, "/").await;
        assert_eq!((status.as_u16(), body.as_str()), (200, "root"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for attacker in attackers {
        let took = within("attacker", attacker).await.unwrap();
        assert!(
            took >= head - Duration::from_millis(300) && took < head * 3,
            "a slow connection was held for {took:?}"
        );
    }
    let (status, _) = https_get(&url, &ca, "/").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn http_serve_bounds_the_next_request_head_on_a_keep_alive_connection() {
    let engine = engine().await;
    let head = Duration::from_millis(1000);
    let (url, _control, _server) = served(&engine, |s| s.header_read_timeout(head)).await;
    let ca = engine.ca_pem().to_owned();
    // One whole request, answered; then half of the next head, and nothing.
    let mut tls = tls_connect(&url, &ca, &[b"http/1.1"]).await;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within("response", tls.read(&mut buf)).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tls.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let took = until_closed(&mut tls).await;
    assert!(
        took >= head - Duration::from_millis(300) && took < head * 3,
        "a slow second request head was held for {took:?}"
    );
}

#[tokio::test]
async fn http_serve_closes_idle_keep_alive_connections_but_not_slow_or_streaming_ones() {
    let engine = engine().await;
    let idle = Duration::from_millis(500);
    let (url, _control, _server) = served(&engine, |s| s.idle_timeout(idle)).await;
    let ca = engine.ca_pem().to_owned();

    // A slow handler (800 ms > idle) and an SSE stream (2 s) on their own
    // connections are not cut.
    let (slow_url, slow_ca) = (url.clone(), ca.clone());
    let slow = tokio::spawn(async move { https_get(&slow_url, &slow_ca, "/slow").await });
    let mut sse = tls_connect(&url, &ca, &[b"http/1.1"]).await;
    sse.write_all(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();

    // An idle keep-alive connection is closed `idle` after its response.
    let mut keep = tls_connect(&url, &ca, &[b"http/1.1"]).await;
    keep.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within("response", keep.read(&mut buf)).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let took = until_closed(&mut keep).await;
    assert!(
        took >= idle - Duration::from_millis(200) && took < idle * 4,
        "idle connection closed after {took:?}"
    );

    let (status, body) = within("slow handler", slow).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "slow done"));
    let mut received = Vec::new();
    within("the whole SSE stream", async {
        loop {
            let n = sse.read(&mut buf).await.unwrap();
            assert!(n > 0, "the SSE connection was cut");
            received.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&received).contains("data: 9") {
                break;
            }
        }
    })
    .await;
}

#[tokio::test]
async fn after_the_drain_timeout_a_never_ending_request_is_closed_and_serve_returns() {
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    let tunnel = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    let url = tunnel.forwarding_address().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let drain = Duration::from_millis(500);
    let server = tokio::spawn(
        rstream::http::serve(tunnel, app())
            .drain_timeout(drain)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .into_future(),
    );
    let mut forever = tls_connect(&url, engine.ca_pem(), &[b"http/1.1"]).await;
    forever
        .write_all(b"GET /forever HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    stop.send(()).unwrap();
    within("serve returns after the drain", server)
        .await
        .unwrap()
        .expect("a graceful shutdown returns Ok");
    let returned = started.elapsed();
    assert!(
        returned >= drain - Duration::from_millis(100) && returned < drain * 4,
        "serve returned after {returned:?}"
    );
    let took = until_closed(&mut forever).await;
    assert!(
        took < Duration::from_secs(2),
        "the connection stayed {took:?}"
    );
}

#[tokio::test]
async fn http_serve_gives_handlers_connect_info_and_stream_info() {
    let engine = engine().await;
    let (url, _control, _server) = served(&engine, |s| s).await;
    let (status, body) = https_get(&url, engine.ca_pem(), "/who").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "Some(127.0.0.1)"));
    let (status, body) = https_get(&url, engine.ca_pem(), "/stream-info").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "Some(127.0.0.1)"));
}

#[tokio::test]
async fn http_serve_closes_a_connection_whose_client_stopped_reading() {
    let engine = engine().await;
    let write = Duration::from_millis(500);
    let (url, _control, _server) = served(&engine, |s| s.write_timeout(write)).await;
    // A client with a small receive buffer that asks for an endless body
    // and reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket
        .connect(authority(&url).parse().unwrap())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stalled =
        tokio_rustls::TlsConnector::from(support::tls_config(engine.ca_pem(), &[b"http/1.1"]))
            .connect(name, tcp)
            .await
            .unwrap();
    stalled
        .write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Buffers fill, the app's writes stall, and `write` later the app
    // closes the connection: reading now drains what was buffered, then EOF.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut buf = vec![0u8; 256 * 1024];
    let mut received = 0usize;
    within("the stalled connection was closed", async {
        while let Ok(n) = stalled.read(&mut buf).await {
            if n == 0 {
                break;
            }
            received += n;
        }
    })
    .await;
    eprintln!("stalled client: {received} bytes buffered before the cut");
    assert!(received > 0);
}

#[tokio::test]
async fn http_serve_takes_duration_max_for_every_timeout() {
    let engine = engine().await;
    let (url, _control, server) = served(&engine, |s| {
        s.header_read_timeout(Duration::MAX)
            .idle_timeout(Duration::MAX)
            .write_timeout(Duration::MAX)
            .drain_timeout(Duration::MAX)
    })
    .await;
    let (status, body) = https_get(&url, engine.ca_pem(), "/").await;
    assert_eq!((status.as_u16(), body.as_str()), (200, "root"));
    assert!(!server.is_finished());
}
