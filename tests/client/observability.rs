//! Tracing spans and per-tunnel counters (docs/OBSERVABILITY.md): events
//! about a stream carry its `rstream.stream` and `rstream.tunnel` spans,
//! under `rstream.control` and the caller's own span; `Tunnel::stats`
//! counts accepted, refused and active streams.
//!
//! Each test captures with a thread-local default subscriber (tests run in
//! parallel), on a current-thread runtime so that the spawned control,
//! handshake and connection tasks run on the thread it covers.

use crate::support;

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rstream::api::WatchParams;
use rstream::{DialOptions, TunnelOptions};
use support::{options, within};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Instrument, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A span as captured: its name and the fields recorded so far.
#[derive(Clone, Debug)]
struct SpanRec {
    name: &'static str,
    fields: HashMap<String, String>,
}

/// An event as captured: its message and its span scope, root first.
#[derive(Clone, Debug)]
struct EventRec {
    message: String,
    scope: Vec<SpanRec>,
}

impl EventRec {
    fn span(&self, name: &str) -> Option<&SpanRec> {
        self.scope.iter().find(|s| s.name == name)
    }
}

#[derive(Default)]
struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// A new span and its parent's name.
type NewSpan = (SpanRec, Option<&'static str>);

/// Collects every event with its span scope, and every new span.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<EventRec>>>, Arc<Mutex<Vec<NewSpan>>>);

impl Capture {
    fn events(&self) -> Vec<EventRec> {
        self.0.lock().unwrap().clone()
    }

    fn spans(&self) -> Vec<NewSpan> {
        self.1.lock().unwrap().clone()
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            let rec = SpanRec {
                name: attrs.metadata().name(),
                fields: fields.0,
            };
            let parent = span.parent().map(|p| p.name());
            self.1.lock().unwrap().push((rec.clone(), parent));
            span.extensions_mut().insert(rec);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        if let Some(span) = ctx.span(id) {
            if let Some(rec) = span.extensions_mut().get_mut::<SpanRec>() {
                rec.fields.extend(fields.0);
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let scope = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .filter_map(|s| s.extensions().get::<SpanRec>().cloned())
                    .collect()
            })
            .unwrap_or_default();
        self.0.lock().unwrap().push(EventRec {
            message: fields.0.remove("message").unwrap_or_default(),
            scope,
        });
    }
}

/// Captures this thread's events until the guard drops.
fn capture() -> (Capture, tracing::subscriber::DefaultGuard) {
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let guard = tracing::subscriber::set_default(subscriber);
    (capture, guard)
}

/// An accepted stream's events carry its stream id and its tunnel's id and
/// name, under the control channel (with its client id) and the caller's
/// span; the counters count accepted, refused and active streams.
#[tokio::test]
async fn stream_events_carry_their_tunnel_and_counters_count() {
    let engine = support::engine().await;
    let (capture, _guard) = capture();
    let client = options(&engine).accept_backlog(1).build().unwrap();
    let control = client
        .connect()
        .instrument(tracing::info_span!("app"))
        .await
        .unwrap();
    let mut tunnel = control
        .create_tunnel(TunnelOptions::new().name("observed"))
        .await
        .unwrap();
    assert_eq!(tunnel.stats(), Default::default());
    let strict = DialOptions::new().zero_rtt(false);

    let _first = within("dial", client.dial_with("observed", strict.clone()))
        .await
        .unwrap();
    let accepted = within("accept", tunnel.accept()).await.unwrap();
    let stream_id = accepted.info().stream_id().unwrap().to_owned();
    let stats = tunnel.stats();
    assert_eq!((stats.accepted, stats.active), (1, 1), "{stats:?}");

    let events = capture.events();
    let queued = events
        .iter()
        .find(|e| {
            e.message == "downstream connection queued for the application"
                && e.span("rstream.stream")
                    .is_some_and(|s| s.fields.get("stream_id") == Some(&stream_id))
        })
        .unwrap_or_else(|| panic!("no event for stream {stream_id}: {events:#?}"));
    let names: Vec<&str> = queued.scope.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["app", "rstream.control", "rstream.tunnel", "rstream.stream"],
        "{queued:#?}"
    );
    let t = queued.span("rstream.tunnel").unwrap();
    assert_eq!(t.fields.get("tunnel.id"), Some(&tunnel.id()), "{t:?}");
    assert_eq!(t.fields.get("name").map(String::as_str), Some("observed"));
    let c = queued.span("rstream.control").unwrap();
    assert!(
        c.fields.get("client_id").is_some_and(|id| !id.is_empty()),
        "{c:?}"
    );
    assert_eq!(accepted.span().metadata().unwrap().name(), "rstream.stream");
    assert_eq!(tunnel.span().metadata().unwrap().name(), "rstream.tunnel");

    // Backlog of one: the next stream waits in it, the one after is refused.
    let _second = within("dial", client.dial_with("observed", strict.clone()))
        .await
        .unwrap();
    let refused = within("refused", client.dial_with("observed", strict.clone())).await;
    assert!(refused.is_err());
    let stats = tunnel.stats();
    assert_eq!(
        (stats.accepted, stats.refused_backlog_full, stats.active),
        (2, 1, 2),
        "{stats:?}"
    );

    // Dropping streams counts them out; a handle reads the same counters.
    let counters = tunnel.counters();
    drop(accepted);
    assert_eq!(counters.get().active, 1);
    assert_eq!(tunnel.stats().active, 1);
    drop(within("accept", tunnel.accept()).await.unwrap());
    let stats = tunnel.stats();
    assert_eq!(
        (stats.accepted, stats.refused_backlog_full, stats.active),
        (2, 1, 0),
        "{stats:?}"
    );
}

/// A handler's own events under `rstream::http::serve` run inside the
/// connection's `rstream.stream` span, so they name the tunnel.
#[tokio::test]
async fn http_serve_handlers_run_in_the_stream_span() {
    let engine = support::engine().await;
    let (capture, _guard) = capture();
    let client = options(&engine).build().unwrap();
    let control = client.connect().await.unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("observed-http"))
        .await
        .unwrap();
    let id = tunnel.id();
    let app = Router::new().route(
        "/",
        get(|| async {
            tracing::info!("handler ran");
            "ok"
        }),
    );
    let _server = tokio::spawn(rstream::http::serve(tunnel, app).into_future());

    let stream = within("dial", client.dial("observed-http")).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let rsp = within(
        "request",
        send.send_request(
            http::Request::get("/")
                .header("host", "observed-http")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(rsp.status(), http::StatusCode::OK);

    let events = capture.events();
    let handled = events
        .iter()
        .find(|e| e.message == "handler ran")
        .unwrap_or_else(|| panic!("no handler event: {events:#?}"));
    let t = handled
        .span("rstream.tunnel")
        .unwrap_or_else(|| panic!("no tunnel span: {handled:#?}"));
    assert_eq!(t.fields.get("tunnel.id"), Some(&id));
    assert!(handled.span("rstream.stream").is_some(), "{handled:#?}");
}

/// After a reconnect re-creates the tunnel under a new id, the tunnel's
/// span carries the new id (and the control span the new client id).
#[tokio::test]
async fn the_tunnel_span_records_the_id_after_re_creation() {
    let dir = std::env::temp_dir().join(format!("rstream-spans-{}", uuid::Uuid::new_v4().simple()));
    support::init_tracing();
    let start = |addr: std::net::SocketAddr| {
        rstream::engine::LocalEngine::builder()
            .state_dir(&dir)
            .listen(addr)
            .start()
    };
    let engine = start("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = engine.local_addr();
    let (capture, _guard) = capture();
    let client = options(&engine).build().unwrap();
    let policy = rstream::ReconnectPolicy::new()
        .initial_delay(std::time::Duration::from_millis(50))
        .max_delay(std::time::Duration::from_millis(500));
    let control = client.connect_with(policy).await.unwrap();
    let mut tunnel = control
        .create_tunnel(TunnelOptions::new().name("observed-again"))
        .await
        .unwrap();
    let first_id = tunnel.id();

    engine.shutdown().await;
    let engine = start(addr).await.unwrap();
    let mut status = control.status();
    within("reconnected", async {
        loop {
            if status.borrow_and_update().is_connected() && tunnel.id() != first_id {
                break;
            }
            status.changed().await.unwrap();
        }
    })
    .await;
    let new_id = tunnel.id();

    let strict = DialOptions::new().zero_rtt(false);
    let _dialed = within("dial", client.dial_with("observed-again", strict))
        .await
        .unwrap();
    let accepted = within("accept", tunnel.accept()).await.unwrap();
    let stream_id = accepted.info().stream_id().unwrap().to_owned();
    let events = capture.events();
    let queued = events
        .iter()
        .find(|e| {
            e.span("rstream.stream")
                .is_some_and(|s| s.fields.get("stream_id") == Some(&stream_id))
        })
        .unwrap_or_else(|| panic!("no event for stream {stream_id}: {events:#?}"));
    let t = queued.span("rstream.tunnel").unwrap();
    assert_eq!(t.fields.get("tunnel.id"), Some(&new_id), "{t:?}");
    assert_eq!(tunnel.stats().accepted, 1);
    engine.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `RUST_LOG`-style span directives select one tunnel's events: with
/// `[rstream.tunnel{name=...}]=debug` (docs/OBSERVABILITY.md), events of
/// streams on that tunnel pass and those of another tunnel do not.
#[tokio::test]
async fn env_filter_selects_one_tunnels_events_by_name() {
    use tracing_subscriber::EnvFilter;
    let engine = support::engine().await;
    let capture = Capture::default();
    let filter = EnvFilter::new("[rstream.tunnel{name=picked}]=debug");
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(capture.clone().with_filter(filter)),
    );
    let client = options(&engine).build().unwrap();
    let control = client.connect().await.unwrap();
    let mut picked = control
        .create_tunnel(TunnelOptions::new().name("picked"))
        .await
        .unwrap();
    let mut other = control
        .create_tunnel(TunnelOptions::new().name("other"))
        .await
        .unwrap();
    let strict = DialOptions::new().zero_rtt(false);
    for (name, tunnel) in [("picked", &mut picked), ("other", &mut other)] {
        let _dialed = within("dial", client.dial_with(name, strict.clone()))
            .await
            .unwrap();
        within("accept", tunnel.accept()).await.unwrap();
    }
    let events = capture.events();
    let names: Vec<Option<&str>> = events
        .iter()
        .filter(|e| e.message == "downstream connection queued for the application")
        .map(|e| {
            e.span("rstream.tunnel")
                .and_then(|t| t.fields.get("name"))
                .map(String::as_str)
        })
        .collect();
    assert_eq!(names, [Some("picked")], "{events:#?}");
}

/// An Engine API watch runs in `rstream.watch{transport}`, a child of the
/// span it was first polled in.
#[tokio::test]
async fn watches_run_in_their_span() {
    let engine = support::engine().await;
    let (capture, _guard) = capture();
    let api = options(&engine).build().unwrap().api();
    let mut sse = api.watch(WatchParams::new());
    let mut ws = api.watch(WatchParams::new()).websocket();
    for watch in [&mut sse, &mut ws] {
        within("first event", watch.next())
            .instrument(tracing::info_span!("app"))
            .await
            .expect("watch ended")
            .expect("watch event");
    }
    let watches: Vec<(String, Option<&str>)> = capture
        .spans()
        .into_iter()
        .filter(|(s, _)| s.name == "rstream.watch")
        .map(|(s, parent)| {
            (
                s.fields.get("transport").cloned().unwrap_or_default(),
                parent,
            )
        })
        .collect();
    assert_eq!(
        watches,
        [
            ("sse".to_owned(), Some("app")),
            ("websocket".to_owned(), Some("app"))
        ]
    );
}
