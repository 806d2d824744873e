//! HTTP streaming and lifecycle through published tunnels: server-sent events
//! keep flowing, a client that goes away cancels the handler's body,
//! `rstream::http::serve(..).with_graceful_shutdown(..)` lets in-flight requests finish, and a
//! closed tunnel never turns `Listener::accept` into a hot loop.

use crate::support;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::TokioIo;
use rstream::{ErrorKind, TunnelOptions};
use support::{authority, client, engine, https_get, tls_connect, within};
use tokio::sync::oneshot;

/// Sends on its channel when dropped: proves a response body was dropped.
struct DropSignal(Option<oneshot::Sender<()>>);

impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

/// An HTTP/1.1 connection to a published address.
async fn h1(
    url: &str,
    ca: &str,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let tls = tls_connect(url, ca, &[b"http/1.1"]).await;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, conn)
}

fn get_req(url: &str, path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::get(path)
        .header("host", authority(url))
        .body(Empty::new())
        .unwrap()
}

#[tokio::test]
async fn server_sent_events_keep_flowing() {
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    let tunnel = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    let url = tunnel.forwarding_address().to_owned();
    // An endless event stream, one event every 50 ms.
    let app = Router::new().route(
        "/events",
        get(|| async {
            let ticks = futures_util::stream::unfold(0u32, |n| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Some((
                    Ok::<_, Infallible>(Event::default().data(n.to_string())),
                    n + 1,
                ))
            });
            Sse::new(ticks).keep_alive(KeepAlive::default())
        }),
    );
    tokio::spawn(async move { axum::serve(tunnel, app).await });

    let (mut send, _conn) = h1(&url, engine.ca_pem()).await;
    let rsp = within(
        "sse response head",
        send.send_request(get_req(&url, "/events")),
    )
    .await
    .unwrap();
    assert_eq!(rsp.status(), 200);
    assert_eq!(rsp.headers()["content-type"], "text/event-stream");
    let mut body = rsp.into_body();
    let mut text = String::new();
    // The stream never ends: every event must arrive while it is open.
    while !text.contains("data: 9\n") {
        let frame = within("next sse frame", body.frame())
            .await
            .expect("the event stream ended")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    let seen: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(seen, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
}

#[tokio::test]
async fn client_disconnect_cancels_the_handlers_body() {
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    let tunnel = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    let url = tunnel.forwarding_address().to_owned();
    let (dropped_tx, dropped_rx) = oneshot::channel();
    let signal = Arc::new(Mutex::new(Some(DropSignal(Some(dropped_tx)))));
    // An endless body that owns the drop signal: it is dropped only when
    // hyper gives up on the response.
    let app = Router::new().route(
        "/forever",
        get(move || {
            let guard = signal.lock().unwrap().take();
            async move {
                let chunks = futures_util::stream::unfold(guard, |guard| async move {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Some((Ok::<_, Infallible>(Bytes::from_static(b"tick\n")), guard))
                });
                axum::body::Body::from_stream(chunks)
            }
        }),
    );
    tokio::spawn(async move { axum::serve(tunnel, app).await });

    let (mut send, conn) = h1(&url, engine.ca_pem()).await;
    let rsp = within(
        "response head",
        send.send_request(get_req(&url, "/forever")),
    )
    .await
    .unwrap();
    let mut body = rsp.into_body();
    let first = within("first chunk", body.frame()).await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "tick\n");
    // The client goes away: drop the body, the sender and the connection.
    drop(body);
    drop(send);
    conn.abort();
    within("handler body dropped after the disconnect", dropped_rx)
        .await
        .expect("the body was dropped without its signal");
}

#[tokio::test]
async fn http_serve_graceful_shutdown_finishes_in_flight_requests() {
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    let tunnel = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    let url = tunnel.forwarding_address().to_owned();
    let svc = tower::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
        if req.uri().path() == "/slow" {
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
            b"finished",
        ))))
    });
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(
        rstream::http::serve(tunnel, svc)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .into_future(),
    );
    let (status, _) = https_get(&url, engine.ca_pem(), "/").await;
    assert_eq!(status, 200);

    let ca = engine.ca_pem().to_owned();
    let slow_url = url.clone();
    let slow = tokio::spawn(async move { https_get(&slow_url, &ca, "/slow").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_tx.send(()).unwrap();
    let (status, body) = within("in-flight request", slow).await.unwrap();
    assert_eq!((status.as_u16(), body.as_str()), (200, "finished"));
    within("serve with_graceful_shutdown returns", server)
        .await
        .unwrap()
        .expect("a graceful shutdown returns Ok");
    // The shutdown closed the tunnel: the engine stops listening on its
    // published address.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(authority(&url))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused, "the published address still accepts connections");
}

#[tokio::test]
async fn a_closed_tunnel_never_makes_accept_spin() {
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    let mut tunnel = control.create_tunnel(TunnelOptions::http()).await.unwrap();
    tunnel.close().await.unwrap();
    // The inherent accept reports the closure, every time, at once.
    for _ in 0..3 {
        let err = within("accept on a closed tunnel", tunnel.accept())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
    }
    // `Listener::accept` cannot return an error: it must park (a pending
    // future) rather than return, which would make axum::serve loop.
    let started = Instant::now();
    let parked = tokio::time::timeout(
        Duration::from_millis(500),
        axum::serve::Listener::accept(&mut tunnel),
    )
    .await;
    assert!(
        parked.is_err(),
        "Listener::accept returned on a closed tunnel"
    );
    assert!(started.elapsed() >= Duration::from_millis(500));
    // And axum::serve on it returns through the closed() future.
    let closed = tunnel.closed();
    let app = Router::new().route("/", get(|| async { "unused" }));
    within(
        "axum::serve returns",
        axum::serve(tunnel, app)
            .with_graceful_shutdown(async move {
                let _ = closed.await;
            })
            .into_future(),
    )
    .await
    .unwrap();
}
