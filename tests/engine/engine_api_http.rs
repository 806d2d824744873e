//! The Engine API client's HTTP contract (issue 9, "HTTP done with the
//! crates we already have"), proven against real servers: a small hyper
//! server over TLS on 127.0.0.1 that plays a misbehaving Engine API, and
//! the local engine behind a counting TCP relay.
//!
//! - one pooled connection per `Client` (`client.api()` handles share it);
//! - the per-call timeout (connect to end of body);
//! - bounded response bodies and watch events (an endless body is cut off);
//! - an HTTP status is never retried, a transport error is retried once;
//! - redirects are not followed;
//! - our client and the local engine speak h2 (ALPN).
#![cfg(feature = "local-engine")]

use crate::support::{self, pki::Ca};

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Response, Version};
use http_body::Frame;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rstream::api::{ApiError, ApiOptions, HealthProbe, ListTunnelsParams, WatchParams};
use rstream::transport::TlsOptions;
use rstream::{Client, ErrorKind, TunnelOptions};
use support::within;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "http-contract-token";

type Body = BoxBody<Bytes, std::io::Error>;
type Reply = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    version: Version,
    authorization: Option<String>,
}

/// A TLS (ALPN `h2`, `http/1.1`) hyper server on 127.0.0.1 whose answers
/// `handler` picks by path. It records every request and counts TCP
/// connections; the first `drop_first` connections are closed right after
/// the client's first bytes arrive (a transport error before any answer).
struct Misbehaving {
    port: u16,
    ca_pem: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
}

impl Misbehaving {
    async fn start(
        drop_first: usize,
        handler: impl Fn(&str) -> Reply + Send + Sync + 'static,
    ) -> Self {
        support::init_tracing();
        let handler: Handler = Arc::new(handler);
        let (ca_pem, acceptor) = tls_acceptor();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (log, count) = (seen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst);
                let (acceptor, handler, log) = (acceptor.clone(), handler.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if n < drop_first {
                        let mut first = [0u8; 64];
                        let _ = tls.read(&mut first).await;
                        return; // dropped: reset under the client's request
                    }
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            log.lock().unwrap().push(Seen {
                                path: req.uri().path().to_owned(),
                                version: req.version(),
                                authorization: req
                                    .headers()
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_owned),
                            });
                            let reply = handler(req.uri().path());
                            async move { Ok::<_, std::convert::Infallible>(reply.await) }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Misbehaving {
            port,
            ca_pem,
            seen,
            connections,
        }
    }

    /// A client of this server, trusting its CA, with a bearer token.
    /// TLS transport: this contract is HTTP over TCP (in auto mode the
    /// HTTP/3 attempt of feature `http3` would spend part of each budget).
    fn client(&self) -> Client {
        Client::builder()
            .engine(format!("localhost:{}", self.port))
            .token(TOKEN)
            .transport(rstream::Transport::Tls)
            .tls(
                TlsOptions::new()
                    .add_ca_pem(self.ca_pem.as_bytes())
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests reached `path`.
    fn hits(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// A throwaway CA and a `localhost` certificate it signed.
fn tls_acceptor() -> (String, tokio_rustls::TlsAcceptor) {
    let ca = Ca::new();
    let config = ca
        .leaf(&["localhost"], None)
        .server_config(&[b"h2", b"http/1.1"]);
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn reply(response: Response<Body>) -> Reply {
    Box::pin(async move { response })
}

fn full(status: u16, body: &'static str) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(
            Full::new(Bytes::from_static(body.as_bytes()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .unwrap()
}

fn redirect(status: u16, location: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("location", location)
        .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
        .unwrap()
}

/// A body that never ends: `prefix`, then 16 KiB chunks of spaces for as
/// long as it is polled. Counts what it produced and notes its drop.
struct Endless {
    prefix: Option<Bytes>,
    produced: Arc<AtomicUsize>,
    dropped: Arc<AtomicBool>,
}

static SPACES: [u8; 16 * 1024] = [b' '; 16 * 1024];

impl http_body::Body for Endless {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let chunk = self
            .prefix
            .take()
            .unwrap_or_else(|| Bytes::from_static(&SPACES));
        self.produced.fetch_add(chunk.len(), Ordering::SeqCst);
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }
}

impl Drop for Endless {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// A body that sends `[` and then nothing, forever.
struct Stalled(bool);

impl http_body::Body for Stalled {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Pending
        } else {
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"[")))))
        }
    }
}

#[tokio::test]
async fn api_handles_of_one_client_share_one_pooled_connection() {
    let server = Misbehaving::start(0, |_| reply(full(200, r#"{"status":"live"}"#))).await;
    let client = server.client();

    // Three separate `api()` handles (one from a clone of the client), each
    // dropped after its call: one TLS connection carries all three.
    let twin = client.clone();
    for c in [&client, &client, &twin] {
        let health = within("health", c.api().health(HealthProbe::Live))
            .await
            .unwrap();
        assert!(health.is_ok());
    }
    assert_eq!(server.hits("/api/health/live"), 3);
    assert_eq!(
        server.connections(),
        1,
        "client.api() handles share one pool"
    );
    for seen in server.seen() {
        assert_eq!(seen.version, Version::HTTP_2, "ALPN h2 was negotiated");
        assert_eq!(
            seen.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }

    // `api_with` builds a pool of its own: a second connection (which
    // shows the counter above would have seen a per-call pool).
    let own = client.api_with(ApiOptions::new());
    within("health", own.health(HealthProbe::Live))
        .await
        .unwrap();
    within("health", own.clone().health(HealthProbe::Live))
        .await
        .unwrap();
    assert_eq!(server.connections(), 2, "api_with has its own pool");
    // ... and the shared pool is still there for `api()`.
    within("health", client.api().health(HealthProbe::Live))
        .await
        .unwrap();
    assert_eq!(server.connections(), 2);
    assert_eq!(server.hits("/api/health/live"), 6);
}

#[tokio::test]
async fn the_per_call_timeout_fires_on_a_silent_head_and_on_a_stalled_body() {
    assert_eq!(rstream::api::DEFAULT_TIMEOUT, Duration::from_secs(5));
    let server = Misbehaving::start(0, |path| match path {
        // Never answers at all.
        "/api/tunnels" => Box::pin(std::future::pending::<Response<Body>>()),
        // Answers 200 with a body that stops after one byte.
        _ => reply(
            Response::builder()
                .header("content-type", "application/json")
                .body(Stalled(false).boxed())
                .unwrap(),
        ),
    })
    .await;
    let api = server
        .client()
        .api_with(ApiOptions::new().timeout(Duration::from_millis(300)));

    for (what, path) in [
        ("silent head", "/api/tunnels"),
        ("stalled body", "/api/clients"),
    ] {
        let started = Instant::now();
        let e = within(what, async {
            if path == "/api/tunnels" {
                api.list_tunnels(ListTunnelsParams::new()).await.map(drop)
            } else {
                api.list_clients(rstream::api::ListClientsParams::new())
                    .await
                    .map(drop)
            }
        })
        .await
        .unwrap_err();
        let elapsed = started.elapsed();
        assert_eq!(e.code(), "ERR_RSTREAM_ENGINE_API_TIMEOUT", "{what}: {e}");
        assert_eq!(e.kind(), ErrorKind::Timeout, "{what}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("GET {path}")) && text.contains("300ms"),
            "{what}: {text}"
        );
        assert!(elapsed >= Duration::from_millis(300), "{what}: {elapsed:?}");
        assert!(
            elapsed < Duration::from_secs(3),
            "{what}: the 300 ms budget, not the 5 s default: {elapsed:?}"
        );
        assert_eq!(server.hits(path), 1, "{what}: a timeout is not retried");
    }
}

#[tokio::test]
async fn an_endless_body_is_cut_off_at_the_size_limit() {
    let produced = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let sse_dropped = Arc::new(AtomicBool::new(false));
    let (p, d, sd) = (produced.clone(), dropped.clone(), sse_dropped.clone());
    let server = Misbehaving::start(0, move |path| {
        let (body, content_type) = if path == "/api/sse" {
            let body = Endless {
                prefix: Some(Bytes::from_static(b"data: ")),
                produced: Arc::default(),
                dropped: sd.clone(),
            };
            (body, "text/event-stream")
        } else {
            let body = Endless {
                prefix: Some(Bytes::from_static(b"[")),
                produced: p.clone(),
                dropped: d.clone(),
            };
            (body, "application/json")
        };
        reply(
            Response::builder()
                .header("content-type", content_type)
                .body(body.boxed())
                .unwrap(),
        )
    })
    .await;
    // A generous budget: what ends the call must be the size limit.
    let api = server.client().api_with(
        ApiOptions::new()
            .max_body_size(4096)
            .timeout(Duration::from_secs(15)),
    );

    let started = Instant::now();
    let e = within("list", api.list_tunnels(ListTunnelsParams::new()))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ERR_RSTREAM_ENGINE_API_BODY_TOO_LARGE", "{e}");
    assert_eq!(e.kind(), ErrorKind::Protocol);
    assert!(
        e.to_string().contains("GET /api/tunnels") && e.to_string().contains("4096"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The body never ends, so a client that buffered it all would never
    // have returned; the client also let go of the stream (the server's
    // body was dropped), and the server produced a bounded amount.
    within("server body dropped", async {
        while !dropped.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let sent = produced.load(Ordering::SeqCst);
    assert!(sent > 4096, "{sent}");
    assert!(sent < 32 * 1024 * 1024, "{sent} bytes produced");
    assert_eq!(server.hits("/api/tunnels"), 1);

    // A watch event is bounded the same way.
    let mut watch = api.watch(WatchParams::new());
    let e = within("watch", watch.next())
        .await
        .expect("an item")
        .unwrap_err();
    assert_eq!(e.code(), "ERR_RSTREAM_EVENT_TOO_LARGE", "{e}");
    assert!(within("watch ends", watch.next()).await.is_none());
    drop(watch);
    within("sse body dropped", async {
        while !sse_dropped.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_http_status_is_never_retried_and_is_reported_in_full() {
    let server = Misbehaving::start(0, |path| match path {
        "/api/tunnels" => reply(full(503, "engine overloaded: try later\n")),
        "/api/clients" => reply(full(429, "slow down")),
        "/api/health/ready" => reply(full(500, "internal: bus closed")),
        "/api/tunnels/t1" => reply(full(404, r#"{"error":"tunnel not found"}"#)),
        _ => reply(full(418, "unexpected")),
    })
    .await;
    let api = server.client().api();

    let cases: [(&str, u16, &str, &str); 4] = [
        (
            "/api/tunnels",
            503,
            "engine overloaded: try later",
            "ERR_RSTREAM_ENGINE_API_HTTP",
        ),
        (
            "/api/clients",
            429,
            "slow down",
            "ERR_RSTREAM_ENGINE_API_HTTP",
        ),
        (
            "/api/health/ready",
            500,
            "internal: bus closed",
            "ERR_RSTREAM_ENGINE_API_HTTP",
        ),
        (
            "/api/tunnels/t1",
            404,
            r#"{"error":"tunnel not found"}"#,
            "ERR_RSTREAM_ENGINE_API_NOT_FOUND",
        ),
    ];
    for (path, status, body, code) in cases {
        let result = within(path, async {
            match path {
                "/api/tunnels" => api.list_tunnels(ListTunnelsParams::new()).await.map(drop),
                "/api/clients" => api
                    .list_clients(rstream::api::ListClientsParams::new())
                    .await
                    .map(drop),
                "/api/health/ready" => api.health(HealthProbe::Ready).await.map(drop),
                _ => api.tunnel("t1").await.map(drop),
            }
        })
        .await;
        let e = result.unwrap_err();
        assert_eq!(e.code(), code, "{path}: {e}");
        assert_eq!(e.kind(), ErrorKind::Http, "{path}");
        let api_error = ApiError::from_error(&e).expect("an ApiError source");
        assert_eq!(api_error.method(), http::Method::GET);
        assert_eq!(api_error.path(), path);
        assert_eq!(api_error.status().as_u16(), status);
        assert_eq!(api_error.body(), body);
        let text = format!("engine API GET {path}: {body} ({status})");
        assert_eq!(api_error.to_string(), text);
        assert_eq!(e.to_string(), format!("{code}: {text}"));
        assert_eq!(
            server.hits(path),
            1,
            "{path}: an HTTP status is not retried"
        );
    }
    assert_eq!(server.seen().len(), 4);
}

#[tokio::test]
async fn a_transport_error_is_retried_once_and_only_once() {
    // The first connection breaks under the request; the retry succeeds.
    let server = Misbehaving::start(1, |_| reply(full(200, r#"{"status":"live"}"#))).await;
    let health = within("health", server.client().api().health(HealthProbe::Live))
        .await
        .unwrap();
    assert!(health.is_ok());
    assert_eq!(server.connections(), 2, "one retry on a new connection");
    assert_eq!(server.hits("/api/health/live"), 1);

    // Every connection breaks: two attempts, then the transport error.
    let server = Misbehaving::start(usize::MAX, |_| reply(full(200, "{}"))).await;
    let e = within("health", server.client().api().health(HealthProbe::Live))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(e.is_transient(), "{e}");
    assert!(e.to_string().contains("/api/health/live"), "{e}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.connections(), 2, "exactly one retry");
    assert!(server.seen().is_empty());
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let port = Arc::new(AtomicUsize::new(0));
    let p = port.clone();
    let server = Misbehaving::start(0, move |path| {
        let port = p.load(Ordering::SeqCst);
        match path {
            "/api/tunnels" => reply(redirect(302, "/api/moved".to_owned())),
            "/api/tunnels/t1" => {
                reply(redirect(307, format!("https://localhost:{port}/api/moved")))
            }
            "/api/sse" => reply(redirect(308, "/api/moved".to_owned())),
            "/api/moved" => reply(full(200, "[]")),
            _ => reply(full(404, "")),
        }
    })
    .await;
    port.store(usize::from(server.port), Ordering::SeqCst);
    let api = server.client().api();

    let e = within("list", api.list_tunnels(ListTunnelsParams::new()))
        .await
        .unwrap_err();
    let status = |e: &rstream::Error| ApiError::from_error(e).map(|a| a.status().as_u16());
    assert_eq!(status(&e), Some(302), "{e}");
    assert_eq!(e.code(), "ERR_RSTREAM_ENGINE_API_HTTP");
    assert!(e.to_string().contains("GET /api/tunnels"), "{e}");

    let e = within("tunnel", api.tunnel("t1")).await.unwrap_err();
    assert_eq!(status(&e), Some(307), "{e}");

    let mut watch = api.watch(WatchParams::new());
    let e = within("watch", watch.next())
        .await
        .expect("an item")
        .unwrap_err();
    assert_eq!(status(&e), Some(308), "{e}");

    assert_eq!(server.hits("/api/tunnels"), 1);
    assert_eq!(server.hits("/api/tunnels/t1"), 1);
    assert_eq!(server.hits("/api/sse"), 1);
    assert_eq!(server.hits("/api/moved"), 0, "no redirect was followed");
}

/// Forwards TCP connections to `upstream`, counting them.
async fn counting_relay(upstream: String) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        while let Ok((mut down, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut up) = TcpStream::connect(&upstream).await {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
        }
    });
    (port, count)
}

#[tokio::test]
async fn our_client_and_the_local_engine_multiplex_over_h2() {
    support::init_tracing();
    let engine = rstream::engine::LocalEngine::builder()
        .token(TOKEN)
        .start()
        .await
        .unwrap();
    let direct = support::options(&engine).token(TOKEN).build().unwrap();
    let control = direct.connect().await.unwrap();
    let _first = control
        .create_tunnel(TunnelOptions::new().name("first"))
        .await
        .unwrap();

    let (relay, connections) = counting_relay(engine.engine_address()).await;
    // TLS transport: the relay is TCP (no HTTP/3 attempt).
    let client = Client::builder()
        .engine(format!("127.0.0.1:{relay}"))
        .token(TOKEN)
        .transport(rstream::Transport::Tls)
        .tls(
            TlsOptions::new()
                .add_ca_pem(engine.ca_pem().as_bytes())
                .unwrap(),
        )
        .build()
        .unwrap();

    // An SSE watch holds its response open for as long as it runs...
    let mut watch = client.api().watch(WatchParams::new());
    let initial = within("state.initial", watch.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(initial.initial().unwrap().tunnels.len(), 1);
    // ... and the calls made meanwhile ride the same TCP connection, which
    // HTTP/1.1 cannot do (no multiplexing): h2 was negotiated by ALPN.
    let api = client.api();
    let tunnels = within("list", api.list_tunnels(ListTunnelsParams::new()))
        .await
        .unwrap();
    assert_eq!(tunnels.len(), 1);
    within(
        "clients",
        api.list_clients(rstream::api::ListClientsParams::new()),
    )
    .await
    .unwrap();
    assert!(within("ready", api.health(HealthProbe::Ready))
        .await
        .unwrap()
        .is_ok());
    // The watch was live all along: it sees the next tunnel.
    let _second = control
        .create_tunnel(TunnelOptions::new().name("second"))
        .await
        .unwrap();
    within("tunnel.created", async {
        loop {
            let event = watch.next().await.expect("watch ended").expect("event");
            if event.event_type == rstream::api::EventType::TunnelCreated {
                break;
            }
        }
    })
    .await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "a watch and three calls on one connection: h2"
    );
}
