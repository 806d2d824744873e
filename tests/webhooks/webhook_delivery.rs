//! The local engine delivers signed webhooks (issue 5, part 5).

use crate::support;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use rstream::engine::{LocalEngine, WebhookDelivery};
use rstream::webhook::{
    generate_signing_secret, verify, VerifiedWebhook, VerifyOptions, WebhookEvent,
    WebhookEventType, WebhookLayer, WebhookSecret, DELIVERY_ID_HEADER, EVENT_ID_HEADER,
    EVENT_TYPE_HEADER, SIGNATURE_HEADER, WEBHOOK_ID_HEADER,
};
use rstream::TunnelOptions;
use support::{client, engine, init_tracing, within};
use tokio::sync::mpsc;

/// What a loopback receiver saw.
#[derive(Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Recorder {
    seen: mpsc::UnboundedSender<Received>,
    /// Statuses to answer, in order; 200 once empty.
    script: Arc<Mutex<VecDeque<u16>>>,
}

async fn record(
    State(r): State<Recorder>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let _ = r.seen.send(Received {
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let status = r.script.lock().unwrap().pop_front().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

/// A plain HTTP receiver on loopback: returns its base URL and what it saw.
async fn receiver(script: &[u16]) -> (String, mpsc::UnboundedReceiver<Received>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().fallback(record).with_state(Recorder {
        seen: tx,
        script: Arc::new(Mutex::new(script.iter().copied().collect())),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), rx)
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

/// Checks the five headers and the signature; returns the event.
fn check(r: &Received, secret: &WebhookSecret) -> WebhookEvent {
    let event = verify(
        &r.body,
        header(r, SIGNATURE_HEADER),
        secret,
        &VerifyOptions::new(),
    )
    .expect("signature verifies");
    assert_eq!(header(r, EVENT_ID_HEADER), event.id());
    assert_eq!(header(r, EVENT_TYPE_HEADER), event.event_type().as_str());
    assert!(header(r, WEBHOOK_ID_HEADER).starts_with("wh_"));
    assert!(header(r, DELIVERY_ID_HEADER).starts_with("dl_"));
    assert_eq!(header(r, "content-type"), "application/json");
    assert!(event.id().starts_with("evt_"));
    let created_at = event.created_at().expect("created_at");
    assert!(
        created_at.ends_with('Z') && created_at.contains('T'),
        "{created_at}"
    );
    for key in ["user_id", "workspace_id", "project_id", "cluster_id"] {
        assert!(event.raw()[key].is_null(), "{key}");
    }
    event
}

/// Polls the engine's delivery records until `pred` holds for them.
async fn deliveries_until(
    engine: &LocalEngine,
    what: &str,
    pred: impl Fn(&[WebhookDelivery]) -> bool,
) -> Vec<WebhookDelivery> {
    within(what, async {
        loop {
            let d = engine.webhook_deliveries();
            if pred(&d) {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn on_webhook(
    State(tx): State<mpsc::UnboundedSender<WebhookEvent>>,
    VerifiedWebhook(event): VerifiedWebhook,
) -> StatusCode {
    let _ = tx.send(event);
    StatusCode::NO_CONTENT
}

/// The test: an app publishes a router with `WebhookLayer` on
/// `/webhooks/rstream` through a tunnel; the engine delivers to that
/// published `https://127.0.0.1:PORT` address (verified with the engine's
/// own CA) and the app receives, verified by the layer, the engine's
/// `tunnel.created` event for its own tunnel.
///
/// The receiver's URL exists only once its tunnel does, so the endpoint is
/// added at runtime (`add_webhook`); the app's next tunnel is the one whose
/// event it receives (an endpoint gets the events after it is added).
#[tokio::test]
async fn app_behind_a_tunnel_receives_tunnel_created_for_its_own_tunnel() {
    let engine = engine().await;
    let secret = generate_signing_secret();
    let sdk = client(&engine);
    let control = sdk.connect().await.unwrap();

    let inbox = control
        .create_tunnel(TunnelOptions::http().name("webhook-inbox"))
        .await
        .unwrap();
    let url = format!("{}/webhooks/rstream", inbox.forwarding_address());
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (tx, mut events) = mpsc::unbounded_channel::<WebhookEvent>();
    let app = Router::new()
        .route("/webhooks/rstream", post(on_webhook))
        .route_layer(WebhookLayer::new(secret.clone()))
        .with_state(tx);
    tokio::spawn(async move {
        let _ = axum::serve(inbox, app).await;
    });
    let webhook_id = engine.add_webhook(&url, secret.clone()).unwrap();
    assert!(webhook_id.starts_with("wh_"));

    let api = control
        .create_tunnel(TunnelOptions::http().name("app-api").label("team", "web"))
        .await
        .unwrap();
    let api_id = api.id().to_owned();
    let created = within("tunnel.created for the app's tunnel", async {
        loop {
            let e = events.recv().await.unwrap();
            if e.event_type() == WebhookEventType::TunnelCreated && e.object()["id"] == api_id {
                return e;
            }
        }
    })
    .await;
    let o = created.object();
    assert_eq!(o["name"], "app-api");
    assert_eq!(o["client_id"], control.client_id());
    assert_eq!(o["status"], "online");
    assert_eq!(o["protocol"], "http");
    assert_eq!(o["publish"], true);
    assert_eq!(o["hostname"], "127.0.0.1");
    assert_eq!(o["labels"]["team"], "web");
    let port = o["port"].as_u64().unwrap();
    assert_eq!(
        api.forwarding_address(),
        format!("https://127.0.0.1:{port}")
    );
    // The webhook's object is the Engine API's Tunnel, field for field
    // (`creation_date` included), and the client's is the API's Client.
    let from_api = within("GET /api/tunnels/{id}", sdk.api().tunnel(&api_id))
        .await
        .unwrap();
    assert_eq!(
        serde_json::Value::Object(o.clone()),
        serde_json::to_value(&from_api).unwrap()
    );
    assert!(o["creation_date"].is_string(), "{o:?}");

    // The engine recorded the attempt: to the tunnel's address, answered 204.
    let event_id = created.id().to_owned();
    let d = deliveries_until(&engine, "the delivery record", |d| {
        d.iter().any(|d| d.event_id == event_id)
    })
    .await;
    let d = d.iter().find(|d| d.event_id == event_id).unwrap();
    assert_eq!(d.webhook_id, webhook_id);
    assert_eq!(d.url, url);
    assert_eq!(d.status, Some(204));
    assert_eq!(d.attempt, 1);
    assert!(d.is_success());

    // Its deletion arrives too.
    api.close().await.unwrap();
    let deleted = within("tunnel.deleted", async {
        loop {
            let e = events.recv().await.unwrap();
            if e.event_type() == WebhookEventType::TunnelDeleted && e.object()["id"] == api_id {
                return e;
            }
        }
    })
    .await;
    assert_eq!(deleted.object()["status"], "offline");
    assert!(deleted.id() != created.id());
    engine.shutdown().await;
}

/// All four event types reach a plain loopback receiver, in order, each
/// with the five headers and a valid signature; two endpoints (builder,
/// repeatable) each sign with their own secret.
#[tokio::test]
async fn all_four_events_arrive_signed_and_in_order() {
    init_tracing();
    let (base, mut seen) = receiver(&[]).await;
    let (secret_a, secret_b) = (generate_signing_secret(), generate_signing_secret());
    let engine = LocalEngine::builder()
        .webhook(format!("{base}/a"), secret_a.clone())
        .webhook(format!("{base}/b"), secret_b.clone())
        .start()
        .await
        .unwrap();

    let sdk = client(&engine);
    let control = sdk.connect().await.unwrap();
    let client_id = control.client_id().to_owned();
    let client_from_api = within("GET /api/clients/{id}", sdk.api().client(&client_id))
        .await
        .unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("private-one"))
        .await
        .unwrap();
    let tunnel_id = tunnel.id().to_owned();
    tunnel.close().await.unwrap();
    control.close().await.unwrap();

    let mut by_path: HashMap<String, Vec<Received>> = HashMap::new();
    within("8 deliveries", async {
        while by_path.values().map(Vec::len).sum::<usize>() < 8 {
            let r = seen.recv().await.unwrap();
            by_path.entry(r.path.clone()).or_default().push(r);
        }
    })
    .await;

    let mut webhook_ids = HashSet::new();
    let mut delivery_ids = HashSet::new();
    for (path, secret, other) in [("/a", &secret_a, &secret_b), ("/b", &secret_b, &secret_a)] {
        let received = &by_path[path];
        let events: Vec<WebhookEvent> = received.iter().map(|r| check(r, secret)).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type().as_str()).collect();
        assert_eq!(
            types,
            [
                "client.created",
                "tunnel.created",
                "tunnel.deleted",
                "client.deleted"
            ],
            "{path}"
        );
        // Signed with this endpoint's secret, not the other one's.
        let r = &received[0];
        assert!(verify(
            &r.body,
            header(r, SIGNATURE_HEADER),
            other,
            &VerifyOptions::new()
        )
        .is_err());

        assert_eq!(events[0].object()["id"], client_id.as_str());
        assert_eq!(events[0].object()["status"], "online");
        assert!(events[0].object()["agent"].is_string());
        assert!(events[0].object().get("token").is_none());
        // The Engine API's Client, field for field (no `creation_date`).
        assert_eq!(
            serde_json::Value::Object(events[0].object().clone()),
            serde_json::to_value(&client_from_api).unwrap()
        );
        assert_eq!(events[3].object()["id"], client_id.as_str());
        assert_eq!(events[3].object()["status"], "offline");
        for e in &events[1..3] {
            assert_eq!(e.object()["id"], tunnel_id.as_str());
            assert_eq!(e.object()["name"], "private-one");
            assert_eq!(e.object()["client_id"], client_id.as_str());
        }
        assert_eq!(events[1].object()["status"], "online");
        assert_eq!(events[2].object()["status"], "offline");

        let ids: HashSet<&str> = received
            .iter()
            .map(|r| header(r, WEBHOOK_ID_HEADER))
            .collect();
        assert_eq!(ids.len(), 1, "one webhook id per endpoint");
        webhook_ids.extend(ids.into_iter().map(str::to_owned));
        for r in received {
            assert!(delivery_ids.insert(header(r, DELIVERY_ID_HEADER).to_owned()));
        }
    }
    assert_eq!(webhook_ids.len(), 2, "each endpoint has its own webhook id");
    // The same event has the same id at both endpoints; four distinct events.
    let ids = |path: &str| -> Vec<String> {
        by_path[path]
            .iter()
            .map(|r| header(r, EVENT_ID_HEADER).to_owned())
            .collect()
    };
    assert_eq!(ids("/a"), ids("/b"));
    assert_eq!(ids("/a").into_iter().collect::<HashSet<_>>().len(), 4);

    // No duplicates trickle in.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(seen.try_recv().is_err());
    let records = deliveries_until(&engine, "8 records", |d| d.len() >= 8).await;
    assert_eq!(records.len(), 8);
    assert!(records.iter().all(|d| d.is_success() && d.attempt == 1));
    engine.shutdown().await;
}

/// A 500 is retried (same event id, new delivery id, freshly signed), and
/// the retry's 200 ends it.
#[tokio::test]
async fn a_500_is_retried_then_delivered() {
    init_tracing();
    let (base, mut seen) = receiver(&[500]).await;
    let secret = generate_signing_secret();
    let engine = LocalEngine::builder()
        .webhook(format!("{base}/hook"), secret.clone())
        .start()
        .await
        .unwrap();
    let _control = client(&engine).connect().await.unwrap();

    let first = within("first attempt", seen.recv()).await.unwrap();
    let second = within("retry", seen.recv()).await.unwrap();
    let (e1, e2) = (check(&first, &secret), check(&second, &secret));
    assert_eq!(e1.event_type(), WebhookEventType::ClientCreated);
    assert_eq!(e1.id(), e2.id());
    assert_eq!(first.body, second.body);
    assert_ne!(
        header(&first, DELIVERY_ID_HEADER),
        header(&second, DELIVERY_ID_HEADER)
    );
    assert_eq!(
        header(&first, WEBHOOK_ID_HEADER),
        header(&second, WEBHOOK_ID_HEADER)
    );

    let records = deliveries_until(&engine, "two records", |d| d.len() >= 2).await;
    let got: Vec<(u32, Option<u16>)> = records.iter().map(|d| (d.attempt, d.status)).collect();
    assert_eq!(got, [(1, Some(500)), (2, Some(200))]);
    assert_eq!(records[0].event_id, records[1].event_id);
    assert_eq!(records[0].delivery_id, header(&first, DELIVERY_ID_HEADER));
    assert_eq!(records[1].delivery_id, header(&second, DELIVERY_ID_HEADER));
    assert!(!records[0].is_success() && records[1].is_success());
    engine.shutdown().await;
}

/// A receiver that refuses the signature (401 from `WebhookLayer` with
/// another secret) is not retried: a 4xx is final.
#[tokio::test]
async fn a_rejection_is_not_retried() {
    init_tracing();
    let (tx, mut events) = mpsc::unbounded_channel::<WebhookEvent>();
    let app = Router::new()
        .route("/webhooks/rstream", post(on_webhook))
        .route_layer(WebhookLayer::new(generate_signing_secret()))
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/rstream", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let engine = LocalEngine::builder()
        .webhook(url, generate_signing_secret())
        .start()
        .await
        .unwrap();
    let _control = client(&engine).connect().await.unwrap();
    let records = deliveries_until(&engine, "the refused attempt", |d| !d.is_empty()).await;
    assert_eq!(records[0].status, Some(401));
    // Longer than the first backoff (0.5 s): still one attempt.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(engine.webhook_deliveries().len(), 1);
    assert!(events.try_recv().is_err());
    engine.shutdown().await;
}

/// A receiver that never answers (and one that is not there) does not slow
/// the engine down: tunnels are created at full speed, failures are
/// recorded and retried in the background, and shutdown is prompt.
#[tokio::test]
async fn a_dead_receiver_does_not_slow_the_engine() {
    init_tracing();
    // Accepts connections and never answers.
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = hang.accept().await {
            held.push(socket);
        }
    });
    // Nothing listens there.
    let refused = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let refused_url = format!("http://{refused}/hook");
    let engine = LocalEngine::builder()
        .webhook(
            format!("http://{hang_addr}/hook"),
            generate_signing_secret(),
        )
        .webhook(
            format!("https://{hang_addr}/hook"),
            generate_signing_secret(),
        )
        .webhook(refused_url.clone(), generate_signing_secret())
        .start()
        .await
        .unwrap();

    let control = client(&engine).connect().await.unwrap();
    let started = Instant::now();
    let mut tunnels = Vec::new();
    for i in 0..20 {
        let t = within(
            "create tunnel",
            control.create_tunnel(TunnelOptions::new().name(format!("t{i}"))),
        )
        .await
        .unwrap();
        tunnels.push(t);
    }
    let elapsed = started.elapsed();
    // A blocked engine would wait 10 s per event on the silent receiver.
    assert!(
        elapsed < Duration::from_secs(5),
        "20 tunnels took {elapsed:?}"
    );

    // The refused endpoint: transport errors, retried, then given up.
    let records = deliveries_until(&engine, "three failed attempts", |d| {
        d.iter()
            .filter(|d| d.url == refused_url && d.attempt == 3)
            .count()
            >= 1
    })
    .await;
    let first = records
        .iter()
        .find(|d| d.url == refused_url && d.attempt == 1)
        .unwrap();
    assert_eq!(first.status, None);
    assert!(
        first.error.as_deref().is_some_and(|e| !e.is_empty()),
        "{first:?}"
    );
    // The silent endpoints have nothing recorded yet (their attempt is in flight).
    assert!(records.iter().all(|d| d.url == refused_url), "{records:?}");

    within("shutdown with deliveries in flight", engine.shutdown()).await;
}

/// The binary's `--webhook-url` / `--webhook-secret` flags.
#[tokio::test]
async fn binary_webhook_flags() {
    use tokio::io::AsyncBufReadExt;
    use tokio::process::Command;
    init_tracing();
    let bin = env!("CARGO_BIN_EXE_rstream-local-engine");
    let help = Command::new(bin).arg("--help").output().await.unwrap();
    assert!(
        String::from_utf8_lossy(&help.stdout).contains("--webhook-url"),
        "{bin} has no --webhook-url: built from another tree sharing CARGO_TARGET_DIR?"
    );

    let bad = Command::new(bin)
        .args([
            "--webhook-url",
            "ftp://example.com/",
            "--webhook-secret",
            "whsec_x",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let unpaired = Command::new(bin)
        .args(["--webhook-url", "http://127.0.0.1:9/hook"])
        .env_remove("RSTREAM_WEBHOOK_SECRET")
        .output()
        .await
        .unwrap();
    assert_eq!(unpaired.status.code(), Some(2));
    assert!(!String::from_utf8_lossy(&unpaired.stderr).contains("whsec_"));

    let (base, mut seen) = receiver(&[]).await;
    let secret = generate_signing_secret();
    let mut child = Command::new(bin)
        .args([
            "--quiet",
            "--webhook-url",
            &format!("{base}/hook"),
            "--webhook-secret",
        ])
        .arg(secret.expose_secret())
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

    let client = rstream::Client::builder()
        .engine(vars["RSTREAM_ENGINE"])
        .tls(
            rstream::transport::TlsOptions::new()
                .add_ca_file(vars["RSTREAM_CA_FILE"])
                .unwrap(),
        )
        .build()
        .unwrap();
    let control = client.connect().await.unwrap();
    let r = within("client.created from the binary", seen.recv())
        .await
        .unwrap();
    let event = check(&r, &secret);
    assert_eq!(event.event_type(), WebhookEventType::ClientCreated);
    assert_eq!(event.object()["id"], control.client_id());
    child.kill().await.unwrap();
}
