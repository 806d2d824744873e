//! Receive rstream webhooks with axum.
//!
//! ```text
//! RSTREAM_WEBHOOK_SECRET=whsec_... PORT=8080 cargo run --example webhook_receiver
//! cargo run --example webhook_receiver -- --self-test   # sends itself deliveries, then exits
//! ```
//!
//! Without `RSTREAM_WEBHOOK_SECRET` a fresh secret is generated and printed.
//! Events are printed as they arrive. `--self-test` signs a sample event,
//! POSTs it (and two bad deliveries) to the server with a small hyper
//! client, prints the answers and exits non-zero if any was unexpected.

use std::error::Error;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use rstream::webhook::{
    build_headers, sign, VerifiedWebhook, WebhookEvent, WebhookLayer, WebhookSecret,
    SIGNATURE_HEADER,
};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn Error + Send + Sync>;

const PATH: &str = "/webhooks/rstream";
const SAMPLE: &str = r#"{"id":"evt_example","type":"tunnel.created","created_at":"2026-01-01T00:00:00Z","object":{"id":"tun_example","name":"demo"}}"#;

async fn receive(VerifiedWebhook(event): VerifiedWebhook, headers: HeaderMap) -> StatusCode {
    let delivery = headers
        .get("rstream-delivery-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    println!(
        "event {} {} (delivery {delivery}) object={}",
        event.event_type(),
        event.id(),
        serde_json::Value::Object(event.object().clone()),
    );
    StatusCode::NO_CONTENT
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let self_test = std::env::args().skip(1).any(|a| a == "--self-test");

    let secret = match std::env::var("RSTREAM_WEBHOOK_SECRET") {
        Ok(s) => WebhookSecret::new(s)?,
        Err(_) => {
            let s = WebhookSecret::generate();
            println!("RSTREAM_WEBHOOK_SECRET not set; generated one for this run:");
            println!("  export RSTREAM_WEBHOOK_SECRET={}", s.expose_secret());
            s
        }
    };

    let app = Router::new()
        .route(PATH, post(receive))
        .route_layer(WebhookLayer::new(secret.clone()));

    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 0,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr}{PATH}");

    if self_test {
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let outcome = self_test_run(addr, &secret).await;
        server.abort();
        return outcome;
    }

    // A ready-made signed delivery, valid for the next 300 seconds.
    println!("try (valid for 5 minutes):");
    println!(
        "  curl -i -H '{SIGNATURE_HEADER}: {}' -H 'content-type: application/json' \\\n       --data '{SAMPLE}' http://{addr}{PATH}",
        sign(SAMPLE, &secret, unix_now()),
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// POSTs a valid, a tampered and an unsigned delivery; checks the statuses.
async fn self_test_run(addr: SocketAddr, secret: &WebhookSecret) -> Result<(), BoxError> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
    tokio::spawn(conn);

    let event = WebhookEvent::from_json(SAMPLE)?;
    let signed = build_headers(SAMPLE, &event, secret, "wh_selftest", "dl_1", unix_now())?;
    let tampered = SAMPLE.replace("demo", "evil");

    let cases = [
        (
            "signed",
            signed.clone(),
            SAMPLE.to_owned(),
            StatusCode::NO_CONTENT,
        ),
        ("tampered", signed, tampered, StatusCode::UNAUTHORIZED),
        (
            "unsigned",
            HeaderMap::new(),
            SAMPLE.to_owned(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    let mut failures = 0;
    for (name, headers, body, expected) in cases {
        let mut req = Request::post(PATH)
            .header(http::header::HOST, addr.to_string())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        req.headers_mut().extend(headers);
        sender.ready().await?;
        let res = sender.send_request(req).await?;
        let status = res.status();
        let text = res.into_body().collect().await?.to_bytes();
        let verdict = if status == expected {
            "ok"
        } else {
            "UNEXPECTED"
        };
        println!(
            "self-test {name}: {status} {:?} (expected {expected}) {verdict}",
            String::from_utf8_lossy(&text)
        );
        if status != expected {
            failures += 1;
        }
    }
    if failures > 0 {
        return Err(format!("self-test: {failures} unexpected answer(s)").into());
    }
    println!("self-test passed");
    Ok(())
}
