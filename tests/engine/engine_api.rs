//! The Engine HTTP API end to end: this crate's client ([`rstream::api`])
//! against this crate's local engine (`src/engine/api`).
#![cfg(feature = "local-engine")]

use crate::support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rstream::api::{
    ApiError, ClientFilters, EngineApi, Event, EventType, HealthProbe, ListClientsParams,
    ListTunnelsParams, Status, TunnelFilters, Watch, WatchParams,
};
use rstream::engine::LocalEngine;
use rstream::{Client, ControlChannel, ErrorKind, HttpVersion, TunnelOptions};
use serde_json::Value;
use support::{raw_get, within, LIMIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "api-token";

async fn engine() -> LocalEngine {
    support::init_tracing();
    LocalEngine::builder()
        .token(TOKEN)
        .start()
        .await
        .expect("engine")
}

fn client(engine: &LocalEngine) -> Client {
    support::options(engine)
        .token(TOKEN)
        .build()
        .expect("client")
}

fn api(engine: &LocalEngine) -> EngineApi {
    client(engine).api()
}

async fn next(watch: &mut Watch) -> Event {
    within("next watch event", watch.next())
        .await
        .expect("watch ended")
        .expect("watch event")
}

/// Two clients and three tunnels with various properties.
struct Fixture {
    engine: LocalEngine,
    a: ControlChannel,
    b: ControlChannel,
    _tunnels: Vec<rstream::Tunnel>,
}

async fn fixture() -> Fixture {
    let engine = engine().await;
    let c = client(&engine);
    let a = c.connect().await.unwrap();
    let b = c.connect().await.unwrap();
    let alpha = a
        .create_tunnel(
            TunnelOptions::new()
                .name("alpha")
                .label("service", "ssh")
                .label("env", "prod"),
        )
        .await
        .unwrap();
    let beta = a
        .create_tunnel(
            TunnelOptions::http()
                .name("beta")
                .label("service", "web")
                .http_version(HttpVersion::H2c),
        )
        .await
        .unwrap();
    let gamma = b
        .create_tunnel(TunnelOptions::tcp().name("gamma"))
        .await
        .unwrap();
    Fixture {
        engine,
        a,
        b,
        _tunnels: vec![alpha, beta, gamma],
    }
}

fn names(tunnels: &[rstream::api::TunnelRecord]) -> BTreeSet<String> {
    tunnels.iter().filter_map(|t| t.name.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn inventory_routes_and_every_filter() {
    let f = fixture().await;
    let api = api(&f.engine);
    let all = api.list_tunnels(ListTunnelsParams::new()).await.unwrap();
    assert_eq!(names(&all), set(&["alpha", "beta", "gamma"]));
    let by_name = |n: &str| {
        all.iter()
            .find(|t| t.name.as_deref() == Some(n))
            .unwrap()
            .clone()
    };
    let (alpha, beta, gamma) = (by_name("alpha"), by_name("beta"), by_name("gamma"));
    assert_eq!(alpha.client_id, f.a.client_id());
    assert_eq!(gamma.client_id, f.b.client_id());
    assert_eq!(alpha.status, Status::Online);
    assert_eq!(alpha.tunnel_type.as_deref(), Some("bytestream"));
    assert_eq!(beta.protocol.as_deref(), Some("http"));
    assert_eq!(beta.publish, Some(true));
    assert!(beta.port.is_some() && beta.hostname.is_some());
    assert!(alpha
        .creation_date
        .as_deref()
        .is_some_and(|d| d.ends_with('Z')));

    let q = |f: TunnelFilters| {
        let api = api.clone();
        async move { names(&api.list_tunnels(f).await.unwrap()) }
    };
    // Every tunnel filter key.
    assert_eq!(
        q(TunnelFilters::new().id(alpha.id.clone())).await,
        set(&["alpha"])
    );
    assert_eq!(q(TunnelFilters::new().name("beta")).await, set(&["beta"]));
    assert_eq!(
        q(TunnelFilters::new().tunnel_type("bytestream")).await,
        set(&["alpha", "beta", "gamma"])
    );
    assert_eq!(
        q(TunnelFilters::new().tunnel_type("datagram")).await,
        set(&[])
    );
    assert_eq!(
        q(TunnelFilters::new().status("online")).await,
        set(&["alpha", "beta", "gamma"])
    );
    assert_eq!(q(TunnelFilters::new().status("offline")).await, set(&[]));
    assert_eq!(
        q(TunnelFilters::new().client_id(f.b.client_id())).await,
        set(&["gamma"])
    );
    assert_eq!(q(TunnelFilters::new().user_id("nobody")).await, set(&[]));
    assert_eq!(
        q(TunnelFilters::new().protocol("http")).await,
        set(&["beta"])
    );
    assert_eq!(
        q(TunnelFilters::new().protocol("tcp")).await,
        set(&["gamma"])
    );
    assert_eq!(
        q(TunnelFilters::new().hostname(beta.hostname.clone().unwrap())).await,
        set(&["beta", "gamma"])
    );
    assert_eq!(
        q(TunnelFilters::new().publish(true)).await,
        set(&["beta", "gamma"])
    );
    assert_eq!(
        q(TunnelFilters::new().publish(false)).await,
        set(&["alpha"])
    );
    assert_eq!(
        q(TunnelFilters::new().http_version("h2c")).await,
        set(&["beta"])
    );
    // Labels: exact, any value, missing, ANDed.
    assert_eq!(
        q(TunnelFilters::new().label("service", "ssh")).await,
        set(&["alpha"])
    );
    assert_eq!(
        q(TunnelFilters::new().label_any("service")).await,
        set(&["alpha", "beta"])
    );
    assert_eq!(q(TunnelFilters::new().label_any("team")).await, set(&[]));
    assert_eq!(
        q(TunnelFilters::new()
            .label_any("service")
            .label("env", "prod"))
        .await,
        set(&["alpha"])
    );
    assert_eq!(
        q(TunnelFilters::new().label("service", "web").publish(false)).await,
        set(&[])
    );
    // Limit.
    let one = api
        .list_tunnels(ListTunnelsParams::new().limit(1))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    let two = api
        .list_tunnels(
            ListTunnelsParams::new()
                .limit(2)
                .filters(TunnelFilters::new().label_any("service")),
        )
        .await
        .unwrap();
    assert_eq!(names(&two), set(&["alpha", "beta"]));

    // Clients: every filter key.
    let clients = api.list_clients(ListClientsParams::new()).await.unwrap();
    assert_eq!(clients.len(), 2);
    let me = clients
        .iter()
        .find(|c| c.id == f.a.client_id())
        .unwrap()
        .clone();
    assert_eq!(me.agent.as_deref(), Some(rstream::AGENT));
    let cq = |f: ClientFilters| {
        let api = api.clone();
        async move {
            api.list_clients(f)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect::<BTreeSet<_>>()
        }
    };
    let both: BTreeSet<String> = [f.a.client_id().to_owned(), f.b.client_id().to_owned()].into();
    let only_a: BTreeSet<String> = [f.a.client_id().to_owned()].into();
    let none = BTreeSet::new();
    assert_eq!(cq(ClientFilters::new().id(f.a.client_id())).await, only_a);
    assert_eq!(cq(ClientFilters::new().status("online")).await, both);
    assert_eq!(cq(ClientFilters::new().status("offline")).await, none);
    assert_eq!(cq(ClientFilters::new().user_id("nobody")).await, none);
    assert_eq!(cq(ClientFilters::new().agent(rstream::AGENT)).await, both);
    assert_eq!(cq(ClientFilters::new().agent("other")).await, none);
    assert_eq!(
        cq(ClientFilters::new().channel(me.channel.clone().unwrap())).await,
        both
    );
    assert_eq!(
        cq(ClientFilters::new().version(me.version.clone().unwrap())).await,
        both
    );
    assert_eq!(cq(ClientFilters::new().version("0.0.0-no")).await, none);
    assert_eq!(
        cq(ClientFilters::new().os(std::env::consts::OS)).await,
        both
    );
    assert_eq!(
        cq(ClientFilters::new().arch(std::env::consts::ARCH)).await,
        both
    );
    assert_eq!(
        cq(ClientFilters::new().protocol_version(me.protocol_version.clone().unwrap())).await,
        both
    );
    assert_eq!(cq(ClientFilters::new().label_any("team")).await, none);
    assert_eq!(cq(ClientFilters::new().label("team", "x")).await, none);
    assert_eq!(
        api.list_clients(ListClientsParams::new().limit(1))
            .await
            .unwrap()
            .len(),
        1
    );

    // By id; unknown ids are 404.
    assert_eq!(api.tunnel(&alpha.id).await.unwrap(), alpha);
    assert_eq!(api.client(&f.a.client_id()).await.unwrap(), me);
    for e in [
        api.tunnel("no-such-tunnel").await.unwrap_err(),
        api.client("no/such client").await.unwrap_err(),
    ] {
        assert_eq!(e.code(), "ERR_RSTREAM_ENGINE_API_NOT_FOUND", "{e}");
        let detail = ApiError::from_error(&e).expect("ApiError source");
        assert_eq!(detail.status(), 404);
        assert_eq!(detail.method(), http::Method::GET);
        assert!(detail.path().starts_with("/api/"), "{}", detail.path());
        assert!(detail.body().contains("not found"), "{}", detail.body());
    }

    // Auth, health, OpenAPI.
    api.check_auth().await.unwrap();
    assert_eq!(api.health(HealthProbe::Live).await.unwrap().status, "live");
    let ready = api.health(HealthProbe::Ready).await.unwrap();
    assert!(ready.is_ok() && ready.status == "ready");
    check_openapi(&api.openapi().await.unwrap());
    let (status, _) = raw_get(&f.engine, "/api/openapi.json", None).await;
    assert_eq!(status, 200);
}

/// A structurally valid OpenAPI 3.1 document that describes every route
/// and whose `$ref`s all resolve.
fn check_openapi(doc: &Value) {
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    for path in [
        "/api/clients",
        "/api/clients/{id}",
        "/api/tunnels",
        "/api/tunnels/{id}",
        "/api/sse",
        "/api/websocket",
        "/api/auth",
        "/api/health/live",
        "/api/health/ready",
        "/api/openapi.json",
    ] {
        let op = &doc["paths"][path]["get"];
        assert!(op["responses"].is_object(), "{path} has no GET responses");
        assert!(op["operationId"].is_string(), "{path}");
    }
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .expect("local schema ref");
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling {r}"
        );
    }
    for (name, _) in doc["paths"].as_object().unwrap() {
        assert!(
            name.starts_with("/api/") || name == "/.well-known/rstream/engine",
            "{name}"
        );
    }
}

#[tokio::test]
async fn auth_and_malformed_params() {
    let engine = engine().await;
    // No token: 401; a wrong one: 403.
    let anonymous = support::options(&engine).build().unwrap().api();
    let e = anonymous.check_auth().await.unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::Auth, "ERR_RSTREAM_ENGINE_API_UNAUTHENTICATED"),
        "{e}"
    );
    let e = anonymous
        .list_tunnels(ListTunnelsParams::new())
        .await
        .unwrap_err();
    assert_eq!(ApiError::from_error(&e).unwrap().status(), 401);
    let wrong = support::options(&engine)
        .token("wrong")
        .build()
        .unwrap()
        .api();
    let e = wrong
        .list_clients(ListClientsParams::new())
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.code()),
        (ErrorKind::Auth, "ERR_RSTREAM_ENGINE_API_FORBIDDEN"),
        "{e}"
    );
    let e = within("watch 401", anonymous.watch(WatchParams::new()).next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), "ERR_RSTREAM_ENGINE_API_UNAUTHENTICATED", "{e}");
    let e = within("ws 403", wrong.watch(WatchParams::new()).websocket().next())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(e.code(), "ERR_RSTREAM_ENGINE_API_FORBIDDEN", "{e}");
    // Probes and the OpenAPI document need no token.
    anonymous.health(HealthProbe::Live).await.unwrap();
    anonymous.openapi().await.unwrap();

    for (path, token, want) in [
        ("/api/tunnels", None, 401),
        ("/api/tunnels", Some("wrong"), 403),
        ("/api/auth", Some(TOKEN), 204),
        ("/api/sse?rstream.token=api-token", None, 200),
        ("/api/sse?rstream.token=nope", None, 403),
        ("/api/tunnels?rstream.token=api-token", None, 401),
        (
            "/api/tunnels?params=%7B%22limit%22%3A1%7D",
            Some(TOKEN),
            200,
        ),
        (
            "/api/tunnels?params=%7B%20%22limit%22%3A%201%7D",
            Some(TOKEN),
            200,
        ),
        ("/api/nope", Some(TOKEN), 404),
    ] {
        let (status, body) = raw_get(&engine, path, token).await;
        assert_eq!(status, want, "{path}: {body}");
    }
    for params in [
        "not-json",
        "%7B%22limit%22%3A0%7D",       // {"limit":0}
        "%7B%22limit%22%3A-1%7D",      // {"limit":-1}
        "%7B%22limit%22%3A%22x%22%7D", // {"limit":"x"}
        "%7B%22lmit%22%3A1%7D",        // unknown key
        "%7B%22filters%22%3A%7B%22publish%22%3A%22yes%22%7D%7D", // wrong type
        "%7B%22filters%22%3A%7B%22nme%22%3A%22x%22%7D%7D", // unknown filter
        "%7B%22filters%22%3A%7B%22labels%22%3A%7B%22a%22%3A1%7D%7D%7D", // label value 1
        "%5B%5D",                      // []
    ] {
        for route in ["/api/tunnels", "/api/clients", "/api/sse"] {
            let (status, body) =
                raw_get(&engine, &format!("{route}?params={params}"), Some(TOKEN)).await;
            assert_eq!(status, 400, "{route} {params}: {body}");
            assert!(body.contains("params"), "{route} {params}: {body}");
        }
    }
    let (status, body) = raw_get(&engine, "/api/tunnels?params=1&params=2", Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    // Through the typed client too.
    let e = api(&engine)
        .list_tunnels(ListTunnelsParams::new().limit(0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ERR_RSTREAM_ENGINE_API_BAD_REQUEST");
    assert!(ApiError::from_error(&e).unwrap().body().contains("limit"));
}

async fn lifecycle(websocket: bool) {
    let engine = engine().await;
    let api = api(&engine);
    let c = client(&engine);
    let existing_control = c.connect().await.unwrap();
    let _existing = existing_control
        .create_tunnel(TunnelOptions::new().name("existing"))
        .await
        .unwrap();
    let mut all = api.watch(WatchParams::new());
    let mut filtered =
        api.watch(WatchParams::new().tunnels(TunnelFilters::new().label_any("watched")));
    if websocket {
        all = all.websocket();
        filtered = filtered.websocket();
    }
    let initial = next(&mut all).await;
    assert_eq!(initial.event_type, EventType::StateInitial);
    let snapshot = initial.initial().unwrap();
    assert!(snapshot.snapshot_at.is_some());
    assert_eq!(snapshot.tunnels.len(), 1);
    assert_eq!(snapshot.tunnels[0].name.as_deref(), Some("existing"));
    assert_eq!(snapshot.clients.len(), 1);
    let first_filtered = next(&mut filtered).await;
    assert!(first_filtered.initial().unwrap().tunnels.is_empty());
    assert_eq!(first_filtered.initial().unwrap().clients.len(), 1);

    let control = c.connect().await.unwrap();
    let tunnel = control
        .create_tunnel(
            TunnelOptions::new()
                .name("watched-one")
                .label("watched", "yes"),
        )
        .await
        .unwrap();
    let tunnel_id = tunnel.id().to_owned();
    let e = next(&mut all).await;
    assert_eq!(e.event_type, EventType::ClientCreated);
    assert_eq!(e.client().unwrap().id, control.client_id());
    let e = next(&mut all).await;
    assert_eq!(e.event_type, EventType::TunnelCreated);
    assert_eq!(e.tunnel().unwrap().id, tunnel_id);
    assert_eq!(e.tunnel().unwrap().status, Status::Online);
    assert!(e.id.is_some() && e.created_at.is_some());
    tunnel.close().await.unwrap();
    let e = next(&mut all).await;
    assert_eq!(e.event_type, EventType::TunnelDeleted);
    assert_eq!(e.tunnel().unwrap().id, tunnel_id);
    assert_eq!(e.tunnel().unwrap().status, Status::Offline);
    control.close().await.unwrap();
    let e = next(&mut all).await;
    assert_eq!(e.event_type, EventType::ClientDeleted);
    assert_eq!(e.client().unwrap().id, control.client_id());
    assert_eq!(e.client().unwrap().status, Status::Offline);

    // The filtered watch saw the client events and only the matching tunnel.
    let types: Vec<EventType> = [
        next(&mut filtered).await,
        next(&mut filtered).await,
        next(&mut filtered).await,
        next(&mut filtered).await,
    ]
    .into_iter()
    .map(|e| e.event_type)
    .collect();
    assert_eq!(
        types,
        [
            EventType::ClientCreated,
            EventType::TunnelCreated,
            EventType::TunnelDeleted,
            EventType::ClientDeleted
        ]
    );
    let other = existing_control
        .create_tunnel(TunnelOptions::new().name("unwatched"))
        .await
        .unwrap();
    let e = next(&mut all).await;
    assert_eq!(e.tunnel().unwrap().name.as_deref(), Some("unwatched"));
    drop(other);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), filtered.next())
            .await
            .is_err(),
        "the filtered watch must not see an unlabelled tunnel"
    );
}

#[tokio::test]
async fn watch_over_sse_sees_initial_state_then_lifecycle() {
    lifecycle(false).await;
}

#[tokio::test]
async fn watch_over_websocket_sees_initial_state_then_lifecycle() {
    lifecycle(true).await;
}

#[tokio::test]
async fn a_thousand_events_arrive_in_order() {
    let engine = engine().await;
    let api = api(&engine);
    let mut sse = api.watch(WatchParams::new());
    let mut ws = api.watch(WatchParams::new()).websocket();
    assert_eq!(next(&mut sse).await.event_type, EventType::StateInitial);
    assert_eq!(next(&mut ws).await.event_type, EventType::StateInitial);
    let control = client(&engine).connect().await.unwrap();
    let started = Instant::now();
    let mut expected = Vec::new();
    for i in 0..500 {
        let t = control
            .create_tunnel(TunnelOptions::new().name(format!("t{i}")))
            .await
            .unwrap();
        expected.push(("tunnel.created", t.id().to_owned()));
        expected.push(("tunnel.deleted", t.id().to_owned()));
        t.close().await.unwrap();
    }
    eprintln!("1000 events generated in {:?}", started.elapsed());
    for watch in [&mut sse, &mut ws] {
        // The client.created of `control` comes first.
        assert_eq!(next(watch).await.event_type, EventType::ClientCreated);
        let mut last_id = None;
        for (i, (kind, id)) in expected.iter().enumerate() {
            let e = next(watch).await;
            assert_eq!(
                (e.event_type.as_str(), &e.tunnel().unwrap().id),
                (*kind, id),
                "event {i}"
            );
            let seq: u64 =
                e.id.as_deref()
                    .unwrap()
                    .rsplit('_')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
            assert!(last_id < Some(seq), "event ids increase");
            last_id = Some(seq);
        }
    }
    eprintln!(
        "1000 events checked on SSE and WebSocket in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_stalled_subscriber_is_cut_off() {
    // Generating the events below can take longer than the 30 s write
    // bound on a busy machine; this test is about the queue bound.
    let engine = bounded_engine(
        Duration::from_secs(10),
        Duration::from_secs(60),
        Duration::from_secs(600),
    )
    .await;
    // A raw SSE subscriber with a tiny receive buffer that reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(engine.local_addr()).await.unwrap();
    let tls = support::tls_config(engine.ca_pem(), &[b"http/1.1"]);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut stalled = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    stalled
        .write_all(
            format!(
                "GET /api/sse HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {TOKEN}\r\n\r\n",
                engine.engine_address()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // A healthy subscriber alongside must see everything.
    let api = api(&engine);
    let mut healthy = api.watch(WatchParams::new());
    assert_eq!(next(&mut healthy).await.event_type, EventType::StateInitial);
    let healthy = tokio::spawn(async move {
        let mut seen = 0usize;
        while let Some(e) = healthy.next().await {
            let e = e.expect("the healthy watch never fails");
            seen += 1;
            if e.tunnel()
                .is_some_and(|t| t.name.as_deref() == Some("after"))
            {
                return seen;
            }
        }
        panic!("the healthy watch ended");
    });

    // Fat events (40 labels, ~4.5 KB each) fill the socket buffers fast.
    let fat = (0..40).fold(TunnelOptions::new(), |o, i| {
        o.label(format!("label-{i:02}"), "x".repeat(100))
    });
    let control = client(&engine).connect().await.unwrap();
    let started = Instant::now();
    let cycles = 1600;
    for i in 0..cycles {
        let t = control
            .create_tunnel(fat.clone().name(format!("s{i}")))
            .await
            .unwrap();
        t.close().await.unwrap();
    }
    let generated = 1 + 2 * cycles; // client.created + the tunnels
    let generation = started.elapsed();
    // Now read what the engine buffered: a cut-off subscriber finds the
    // end of its response after it (a live one would wait forever).
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
            // The end of the chunked body.
            if received.ends_with(b"\r\n0\r\n\r\n") {
                return;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&received);
    let delivered = text.matches("data: ").count();
    eprintln!(
        "stalled subscriber: {generated} events generated in {generation:?}, {delivered} delivered ({} bytes)",
        received.len()
    );
    assert!(ended.is_ok(), "the stalled subscriber was never cut off");
    assert!(
        text.contains(": rstream: watch closed: this subscriber fell more than 1024 events behind"),
        "no reason given"
    );
    // Memory stayed bounded: it got a prefix (the 1024-event queue plus
    // socket and HTTP buffers), not everything.
    assert!(delivered < generated, "{delivered} of {generated}");
    // The healthy one saw everything, in time.
    let _after = control
        .create_tunnel(TunnelOptions::new().name("after"))
        .await
        .unwrap();
    let seen = within("healthy watch", healthy).await.unwrap();
    assert_eq!(seen, generated + 1);
}

#[tokio::test]
async fn resilient_watch_and_live_inventory_survive_an_engine_restart() {
    support::init_tracing();
    let dir = std::env::temp_dir().join(format!("rstream-api-restart-{}", std::process::id()));
    let engine = LocalEngine::builder()
        .token(TOKEN)
        .state_dir(&dir)
        .start()
        .await
        .unwrap();
    let addr = engine.local_addr();
    let c = client(&engine);
    let api = c.api();
    let mut watch = api
        .watch(WatchParams::new())
        .resilient()
        .backoff(Duration::from_millis(50), Duration::from_millis(400));
    let mut ws = api
        .watch(WatchParams::new())
        .websocket()
        .resilient()
        .backoff(Duration::from_millis(50), Duration::from_millis(400));
    let inventory = api.live_inventory(WatchParams::new());
    let control = c.connect().await.unwrap();
    let before = control
        .create_tunnel(TunnelOptions::new().name("before"))
        .await
        .unwrap();
    let before_id = before.id().to_owned();
    within(
        "inventory sees `before`",
        inventory.wait_for(|s| s.tunnels.contains_key(&before_id)),
    )
    .await
    .unwrap();
    for w in [&mut watch, &mut ws] {
        let initial = next(w).await;
        assert_eq!(initial.event_type, EventType::StateInitial);
    }

    // The old client goes away for good (no reconnect to the new engine).
    drop(before);
    drop(control);
    engine.shutdown().await;
    let restarted = LocalEngine::builder()
        .token(TOKEN)
        .listen(addr)
        .state_dir(&dir)
        .start()
        .await
        .expect("restart on the same address with the same CA");
    // The pooled connection to the old engine is dead: the call still works.
    api.check_auth()
        .await
        .expect("GET after a restart (dead pooled connection)");
    let control = c.connect().await.unwrap();
    let after = control
        .create_tunnel(TunnelOptions::new().name("after"))
        .await
        .unwrap();
    let after_id = after.id().to_owned();
    for w in [&mut watch, &mut ws] {
        // Whatever came before the drop, then a fresh state.initial from
        // the new engine, then (in it or after it) the new tunnel.
        let mut seen_fresh = false;
        loop {
            let e = within("resumed watch", w.next())
                .await
                .expect("still running")
                .expect("no error");
            if let Some(s) = e.initial() {
                seen_fresh = true;
                if s.tunnels.iter().any(|t| t.id == after_id) {
                    break;
                }
                assert!(s.tunnels.iter().all(|t| t.id != before_id));
            } else if seen_fresh && e.tunnel().is_some_and(|t| t.id == after_id) {
                break;
            }
        }
    }
    let s = within(
        "inventory after restart",
        inventory
            .wait_for(|s| s.tunnels.contains_key(&after_id) && !s.tunnels.contains_key(&before_id)),
    )
    .await
    .unwrap();
    assert!(
        s.clients.contains_key(&*control.client_id()),
        "{:?}",
        s.clients.keys()
    );
    assert_eq!(
        inventory.tunnel(&after_id).unwrap().name.as_deref(),
        Some("after")
    );
    drop(after);
    restarted.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn live_inventory_follows_tunnels_and_clients() {
    let engine = engine().await;
    let api = api(&engine);
    let inventory =
        api.live_inventory(WatchParams::new().tunnels(TunnelFilters::new().label("team", "blue")));
    let snapshot = within("synced", inventory.synced()).await.unwrap();
    assert!(snapshot.synced && snapshot.tunnels.is_empty());
    let mut changes = inventory.subscribe();
    let control = client(&engine).connect().await.unwrap();
    let blue = control
        .create_tunnel(TunnelOptions::new().name("blue").label("team", "blue"))
        .await
        .unwrap();
    let _red = control
        .create_tunnel(TunnelOptions::new().name("red").label("team", "red"))
        .await
        .unwrap();
    let blue_id = blue.id().to_owned();
    within(
        "blue appears",
        inventory.wait_for(|s| s.tunnels.contains_key(&blue_id)),
    )
    .await
    .unwrap();
    within("change notified", changes.changed()).await.unwrap();
    assert_eq!(inventory.tunnels().len(), 1);
    assert_eq!(inventory.clients().len(), 1);
    blue.close().await.unwrap();
    within("blue goes", inventory.wait_for(|s| s.tunnels.is_empty()))
        .await
        .unwrap();
    control.close().await.unwrap();
    within("client goes", inventory.wait_for(|s| s.clients.is_empty()))
        .await
        .unwrap();
    assert!(inventory.snapshot().version >= 4);
    let _ = LIMIT;
}

// ------------------------------------------------------------------
// mTLS discovery, against a small stand-in engine that requests (but
// does not require) client certificates.

mod mtls {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use rcgen::ExtendedKeyUsagePurpose;

    use crate::support::pki::{Ca, Leaf};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    pub struct Pki {
        pub ca_pem: String,
        pub server: Leaf,
        pub client: Leaf,
    }

    pub fn pki() -> Pki {
        let ca = Ca::new();
        Pki {
            ca_pem: ca.pem(),
            server: ca.leaf(&["localhost"], Some(ExtendedKeyUsagePurpose::ServerAuth)),
            client: ca.leaf(&["agent"], Some(ExtendedKeyUsagePurpose::ClientAuth)),
        }
    }

    /// Serves the discovery document (`doc`, `cache_control`) and an
    /// `/api/tunnels` that answers only to a client certificate and
    /// refuses any bearer token. Returns the port and the number of
    /// discovery requests seen.
    pub async fn serve(
        pki: &Pki,
        doc: fn(u16) -> String,
        cache_control: &'static str,
    ) -> (u16, Arc<AtomicUsize>) {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).unwrap())
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(pki.server.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let discoveries = Arc::new(AtomicUsize::new(0));
        let count = discoveries.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let has_cert = tls.get_ref().1.peer_certificates().is_some();
                let count = count.clone();
                let service = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| {
                        let count = count.clone();
                        async move {
                            let rsp = match req.uri().path() {
                            "/.well-known/rstream/engine" if !has_cert => {
                                count.fetch_add(1, Ordering::SeqCst);
                                http::Response::builder()
                                    .header("content-type", "application/json")
                                    .header("cache-control", cache_control)
                                    .body(Full::new(Bytes::from(doc(port))))
                            }
                            "/api/tunnels" if has_cert && req.headers().get("authorization").is_none() => {
                                http::Response::builder().body(Full::new(Bytes::from_static(
                                    br#"[{"id":"t1","client_id":"c1","status":"online","name":"via-mtls"}]"#,
                                )))
                            }
                            _ => http::Response::builder().status(401).body(Full::new(Bytes::from_static(b"no"))),
                        };
                            Ok::<_, Infallible>(rsp.unwrap())
                        }
                    },
                );
                tokio::spawn(async move {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (port, discoveries)
    }
}

fn mtls_client(pki: &mtls::Pki, port: u16) -> Client {
    let identity = rstream::transport::ClientIdentity::from_pem(
        pki.client.cert_pem.as_bytes(),
        pki.client.key_pem.as_bytes(),
    )
    .unwrap();
    Client::builder()
        .engine(format!("localhost:{port}"))
        .tls(
            rstream::transport::TlsOptions::new()
                .add_ca_pem(pki.ca_pem.as_bytes())
                .unwrap()
                .client_identity(identity),
        )
        .build()
        .unwrap()
}

#[tokio::test]
async fn mtls_clients_discover_the_api_url_and_cache_it() {
    support::init_tracing();
    let pki = mtls::pki();
    let good = |port: u16| {
        format!(
            r#"{{"version":1,"projectEndpoint":"localhost","capabilities":["engine-api-mtls"],"mtlsApiUrl":"https://localhost:{port}/api"}}"#
        )
    };
    let (port, discoveries) = mtls::serve(&pki, good, "max-age=60").await;
    let api = mtls_client(&pki, port).api();
    for _ in 0..3 {
        let tunnels = api.list_tunnels(ListTunnelsParams::new()).await.unwrap();
        assert_eq!(tunnels[0].name.as_deref(), Some("via-mtls"));
    }
    assert_eq!(
        discoveries.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "cached"
    );

    // no-store: discovered again on every call.
    let (port, discoveries) = mtls::serve(&pki, good, "no-store").await;
    let api = mtls_client(&pki, port).api();
    for _ in 0..2 {
        api.list_tunnels(ListTunnelsParams::new()).await.unwrap();
    }
    assert_eq!(
        discoveries.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "not cached"
    );

    // An answer that fails validation is refused.
    let bad = |port: u16| {
        format!(
            r#"{{"version":1,"projectEndpoint":"localhost","capabilities":["engine-api-mtls"],"mtlsApiUrl":"https://localhost:{port}/v2"}}"#
        )
    };
    let (port, _) = mtls::serve(&pki, bad, "max-age=60").await;
    let e = mtls_client(&pki, port)
        .api()
        .list_tunnels(ListTunnelsParams::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ERR_RSTREAM_ENGINE_DISCOVERY", "{e}");
}

#[tokio::test]
async fn mtls_local_engine_serves_discovery_and_accepts_certificates() {
    support::init_tracing();
    let pki = mtls::pki();
    let engine = LocalEngine::builder()
        .token(TOKEN)
        .client_ca_pem(pki.ca_pem.as_bytes())
        .start()
        .await
        .unwrap();
    let control = client(&engine).connect().await.unwrap();
    let _tunnel = control
        .create_tunnel(TunnelOptions::new().name("seen-over-mtls"))
        .await
        .unwrap();

    // The discovery document, anonymously.
    let (status, body) = raw_get(&engine, "/.well-known/rstream/engine", None).await;
    assert_eq!(status, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["projectEndpoint"], "127");
    assert_eq!(doc["capabilities"][0], "engine-api-mtls");
    assert_eq!(
        doc["mtlsApiUrl"],
        format!("https://{}/api", engine.engine_address())
    );

    // A certificate and no token: discovery, then the API with the certificate.
    let identity = rstream::transport::ClientIdentity::from_pem(
        pki.client.cert_pem.as_bytes(),
        pki.client.key_pem.as_bytes(),
    )
    .unwrap();
    let mtls = support::options(&engine)
        .client_identity(identity)
        .build()
        .unwrap()
        .api();
    mtls.check_auth().await.unwrap();
    let tunnels = mtls.list_tunnels(ListTunnelsParams::new()).await.unwrap();
    assert_eq!(names(&tunnels), set(&["seen-over-mtls"]));
    let mut watch = mtls.watch(WatchParams::new()).websocket();
    let initial = next(&mut watch).await;
    assert_eq!(initial.initial().unwrap().tunnels.len(), 1);
    let doc = mtls.openapi().await.unwrap();
    assert!(doc["paths"]["/.well-known/rstream/engine"]["get"].is_object());
    check_openapi(&doc);

    // Without client CAs there is nothing to discover.
    let plain = engine_without_ca().await;
    let (status, _) = raw_get(&plain, "/.well-known/rstream/engine", None).await;
    assert_eq!(status, 404);
}

async fn engine_without_ca() -> LocalEngine {
    engine().await
}

/// An idle SSE watch gets a `: keepalive` comment every 15 s (ENGINE_API.md),
/// so proxies and clients with read deadlines keep the stream open. Takes
/// ~15 s of wall time; it waits in parallel with the rest of this binary.
#[tokio::test]
async fn an_idle_sse_watch_gets_a_keepalive_comment_every_15_s() {
    let engine = engine().await;
    let url = format!("https://{}", engine.engine_address());
    let tls = support::tls_connect(&url, engine.ca_pem(), &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get("/api/sse")
        .header("host", engine.engine_address())
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let rsp = within("sse head", send.send_request(req)).await.unwrap();
    assert_eq!(rsp.status(), 200);
    let mut body = rsp.into_body();
    let opened = Instant::now();
    let mut text = String::new();
    // First the snapshot, then nothing happens on this engine but time.
    let keepalive_at = loop {
        let frame = tokio::time::timeout(Duration::from_secs(25), body.frame())
            .await
            .expect("no keepalive within 25 s")
            .expect("the SSE stream ended")
            .expect("SSE frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        if text.contains(": keepalive") {
            break opened.elapsed();
        }
    };
    assert!(text.contains("state.initial"), "{text}");
    assert!(
        keepalive_at >= Duration::from_secs(14) && keepalive_at < Duration::from_secs(20),
        "first keepalive after {keepalive_at:?}"
    );
}

// ---- Connection bounds (issue 21): no peer holds an API connection for free.

/// An engine with short Engine API bounds: `head` for a request head (and a
/// new connection's first), `idle` without a request, `write` for a stalled
/// write.
async fn bounded_engine(head: Duration, idle: Duration, write: Duration) -> LocalEngine {
    support::init_tracing();
    LocalEngine::builder()
        .token(TOKEN)
        .api_timeouts_for_tests(head, idle, write)
        .start()
        .await
        .expect("engine")
}

/// A TLS connection to the engine port with one ALPN.
async fn api_tls(
    engine: &LocalEngine,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let url = format!("https://{}", engine.engine_address());
    support::tls_connect(&url, engine.ca_pem(), &[alpn]).await
}

/// Reads until EOF or an error; how long that took.
async fn until_closed(io: &mut (impl tokio::io::AsyncRead + Unpin)) -> Duration {
    let started = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    within("the engine closes the connection", async {
        while let Ok(n) = io.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn idle_and_silent_api_connections_are_closed() {
    let head = Duration::from_millis(1500);
    let idle = Duration::from_millis(800);
    let engine = bounded_engine(head, idle, Duration::from_secs(30)).await;

    // TLS done, then nothing (on both API ALPNs): closed after `head`.
    for alpn in [&b"http/1.1"[..], b"h2"] {
        let mut silent = api_tls(&engine, alpn).await;
        let took = until_closed(&mut silent).await;
        assert!(
            took >= head - Duration::from_millis(200) && took < head * 3,
            "{}: silent connection closed after {took:?}",
            String::from_utf8_lossy(alpn)
        );
    }

    // Half a request head: closed after `head` too.
    let mut half = api_tls(&engine, b"http/1.1").await;
    half.write_all(b"GET /api/health/live HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let took = until_closed(&mut half).await;
    assert!(took < head * 3, "half a head held for {took:?}");

    // An idle HTTP/1.1 keep-alive connection: closed `idle` after its response.
    let mut h1 = api_tls(&engine, b"http/1.1").await;
    h1.write_all(b"GET /api/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = within("response", h1.read(&mut buf)).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let took = until_closed(&mut h1).await;
    assert!(
        took >= idle - Duration::from_millis(200) && took < idle * 4,
        "idle HTTP/1.1 connection closed after {took:?}"
    );

    // An idle h2 connection (it answers pings): GOAWAY and closed after `idle`.
    let tls = api_tls(&engine, b"h2").await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!(
        "https://{}/api/health/live",
        engine.engine_address()
    ))
    .body(Empty::<Bytes>::new())
    .unwrap();
    let rsp = within("h2 response", send.send_request(req)).await.unwrap();
    assert_eq!(rsp.status(), 200);
    rsp.into_body().collect().await.unwrap();
    let started = Instant::now();
    let _ = within("the engine closes the idle h2 connection", conn).await;
    let took = started.elapsed();
    assert!(
        took >= idle - Duration::from_millis(200) && took < idle * 4,
        "idle h2 connection closed after {took:?}"
    );

    // A watch is a request in flight, never idle: it outlives the bound.
    let mut watch = api(&engine).watch(WatchParams::new());
    assert_eq!(next(&mut watch).await.event_type, EventType::StateInitial);
    tokio::time::sleep(idle * 3).await;
    let _t = client(&engine)
        .connect()
        .await
        .unwrap()
        .create_tunnel(TunnelOptions::new().name("still-watched"))
        .await
        .unwrap();
    loop {
        let e = next(&mut watch).await;
        if e.tunnel()
            .is_some_and(|t| t.name.as_deref() == Some("still-watched"))
        {
            break;
        }
    }
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_cut_off_within_the_write_bound() {
    let write = Duration::from_millis(500);
    support::init_tracing();
    let engine = LocalEngine::builder()
        .token(TOKEN)
        .max_watches(1)
        .api_timeouts_for_tests(Duration::from_secs(10), Duration::from_secs(60), write)
        .start()
        .await
        .unwrap();
    // An h2 watcher that gives the stream 64 bytes of credit and never reads:
    // no WINDOW_UPDATE ever comes, while the TCP connection stays healthy
    // (it answers pings), so only the watch's write bound can end it.
    let tls = api_tls(&engine, b"h2").await;
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(64)
            .handshake(TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("https://{}/api/sse", engine.engine_address()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let stalled = within("watch", send.send_request(req)).await.unwrap();
    assert_eq!(stalled.status(), 200);
    // The only watch slot is taken: one more is refused.
    let (status, body) = raw_get(&engine, "/api/sse", Some(TOKEN)).await;
    assert_eq!(status, 429, "{body}");

    // A few events, more than the 64 bytes of credit.
    let started = Instant::now();
    let control = client(&engine).connect().await.unwrap();
    for i in 0..3 {
        let _t = control
            .create_tunnel(TunnelOptions::new().name(format!("s{i}")))
            .await
            .unwrap();
    }
    let _ = within("the stalled watcher's connection is closed", conn).await;
    let took = started.elapsed();
    assert!(
        took >= write - Duration::from_millis(100) && took < write * 6,
        "cut off after {took:?}"
    );
    drop(stalled);
    // Its slot was given back.
    let mut watch = api(&engine).watch(WatchParams::new());
    assert_eq!(next(&mut watch).await.event_type, EventType::StateInitial);
}

#[tokio::test]
async fn watches_are_capped_per_connection_and_per_engine() {
    support::init_tracing();
    let engine = LocalEngine::builder()
        .token(TOKEN)
        .max_watches(10)
        .start()
        .await
        .unwrap();
    let sse = || {
        http::Request::get(format!("https://{}/api/sse", engine.engine_address()))
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    // One h2 connection: 8 watches, the 9th is refused.
    let tls = api_tls(&engine, b"h2").await;
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut held = Vec::new();
    for _ in 0..8 {
        let rsp = within("watch", send.send_request(sse())).await.unwrap();
        assert_eq!(rsp.status(), 200);
        held.push(rsp);
    }
    let rsp = within("ninth watch", send.send_request(sse()))
        .await
        .unwrap();
    assert_eq!(rsp.status(), 429);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("too many watches on this connection"),
        "{body}"
    );

    // The engine: 10 in all, so two more on other connections, then 429.
    let mut others = Vec::new();
    for _ in 0..2 {
        let mut w = api(&engine).watch(WatchParams::new());
        assert_eq!(next(&mut w).await.event_type, EventType::StateInitial);
        others.push(w);
    }
    let (status, body) = raw_get(&engine, "/api/sse", Some(TOKEN)).await;
    assert_eq!(status, 429);
    assert!(body.contains("too many watches on the engine"), "{body}");
    let refused = api(&engine).watch(WatchParams::new()).next().await;
    assert!(refused.is_some_and(|r| r.is_err()));

    // Closing one watch gives its slot back.
    drop(held.pop());
    let mut again = None;
    for _ in 0..50 {
        let (status, _) = raw_get(&engine, "/api/sse", Some(TOKEN)).await;
        if status == 200 {
            again = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(again, Some(200));
}

/// A stand-in engine API over TLS on 127.0.0.1 whose `GET /api/sse` sends
/// the response head and one `state.initial`, then goes silent forever
/// without closing: a half-open connection as seen from the client.
/// Returns the port and the number of watch connections it saw.
async fn silent_sse_server(
    pki: &mtls::Pki,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use axum::response::IntoResponse;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(pki.server.cert_pem.as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(pki.server.key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let watches = Arc::new(AtomicUsize::new(0));
    let count = watches.clone();
    let app = axum::Router::new().route(
        "/api/sse",
        axum::routing::get(move || {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                let initial = Bytes::from_static(
                    b"data: {\"type\":\"state.initial\",\"object\":{\"clients\":[],\"tunnels\":[]}}\n\n",
                );
                let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(initial) })
                    .chain(futures_util::stream::pending());
                (
                    [("content-type", "text/event-stream")],
                    axum::body::Body::from_stream(body),
                )
                    .into_response()
            }
        }),
    );
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(TokioIo::new(tls), service)
                .await;
            });
        }
    });
    (port, watches)
}

/// A half-open SSE watch (head and one event, then silence, no RST) is
/// given up after the read deadline: a plain watch ends with
/// `ERR_RSTREAM_WATCH_TIMEOUT`, a resilient watch and a `LiveInventory`
/// reconnect and resync. The deadline is shortened to 400 ms here; the
/// default is `DEFAULT_READ_DEADLINE` (90 s).
#[tokio::test]
async fn a_silent_sse_watch_is_given_up_after_the_read_deadline() {
    use std::sync::atomic::Ordering;

    support::init_tracing();
    let deadline = Duration::from_millis(400);
    assert_eq!(rstream::api::DEFAULT_READ_DEADLINE, Duration::from_secs(90));
    let pki = mtls::pki();
    let (port, watches) = silent_sse_server(&pki).await;
    let client = Client::builder()
        .engine(format!("localhost:{port}"))
        .token("stand-in")
        .tls(
            rstream::transport::TlsOptions::new()
                .add_ca_pem(pki.ca_pem.as_bytes())
                .unwrap(),
        )
        .build()
        .unwrap();
    let api = client.api();

    // Plain: one snapshot, then the timeout error, then the end.
    let mut plain = api.watch(WatchParams::new()).read_deadline(deadline);
    assert_eq!(next(&mut plain).await.event_type, EventType::StateInitial);
    let started = Instant::now();
    let err = within("dead watch", plain.next())
        .await
        .unwrap()
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.code(), "ERR_RSTREAM_WATCH_TIMEOUT", "{err}");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(
        took >= deadline - Duration::from_millis(50) && took < deadline * 4,
        "{took:?}"
    );
    assert!(within("end", plain.next()).await.is_none());

    // Resilient: a fresh `state.initial` from a new connection.
    let before = watches.load(Ordering::SeqCst);
    let mut resilient = api
        .watch(WatchParams::new())
        .resilient()
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .read_deadline(deadline);
    assert_eq!(
        next(&mut resilient).await.event_type,
        EventType::StateInitial
    );
    let started = Instant::now();
    assert_eq!(
        next(&mut resilient).await.event_type,
        EventType::StateInitial
    );
    let took = started.elapsed();
    assert!(took < deadline * 4, "resynced after {took:?}");
    assert_eq!(watches.load(Ordering::SeqCst) - before, 2);
    drop(resilient);

    // LiveInventory over such a watch keeps reconnecting, resyncing each time.
    let before = watches.load(Ordering::SeqCst);
    let inventory = rstream::api::LiveInventory::new(
        api.watch(WatchParams::new())
            .resilient()
            .backoff(Duration::from_millis(10), Duration::from_millis(50))
            .read_deadline(deadline),
    );
    within("synced", inventory.synced()).await.unwrap();
    let mut changes = inventory.subscribe();
    let started = Instant::now();
    while changes.borrow_and_update().version < 3 {
        within("resync", changes.changed()).await.unwrap();
    }
    assert!(started.elapsed() < deadline * 6, "{:?}", started.elapsed());
    assert!(watches.load(Ordering::SeqCst) - before >= 3);
}
