//! Signed webhook deliveries from the local engine.
//!
//! Each configured endpoint (a URL and a signing secret) gets two engine
//! tasks: a *pump* subscribed to the event bus, which turns every event into
//! a signed-ready JSON body and pushes it onto the endpoint's bounded queue
//! (never waiting: on overflow the oldest queued event is dropped with a
//! warning), and a *worker*, which POSTs the queued events one at a time, in
//! order, with retries. The engine itself never waits for a receiver.
//!
//! The body follows PROTOCOL.md §7 and ENGINE_API.md §5/§7:
//!
//! ```json
//! {"id":"evt_…","type":"tunnel.created","created_at":"2026-01-02T03:04:05.678Z",
//!  "user_id":null,"workspace_id":null,"project_id":null,"cluster_id":null,
//!  "object":{"id":"…","client_id":"…","status":"online","name":"web",…}}
//! ```
//!
//! `user_id`, `workspace_id`, `project_id` and `cluster_id` are always `null`
//! (a local engine has no account). `object` is the Engine API's Client or
//! Tunnel object, `status` `online` in created events and `offline` in
//! deleted ones; unset fields are omitted.
//!
//! The event id (`evt_…`) is derived from the event itself, so every
//! endpoint gets the same id for the same event. Each attempt is signed afresh (`t` = the attempt's time) and carries the
//! endpoint's `rstream-webhook-id` (`wh_…`) and a fresh
//! `rstream-delivery-id` (`dl_…`); the `rstream-event-id` stays the same
//! across retries. An attempt times out after 10 s; at most 64 KiB of the
//! response body is read. Transport errors, timeouts, 5xx, 408 and 429 are
//! retried (3 attempts in all, backoff 0.5 s then 1 s, capped at 5 s); any
//! other status is final.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{json, Map, Value};
use tokio::sync::{broadcast, Notify};

use super::dates::rfc3339;
use super::events::{ClientInfo, EngineEvent, TunnelInfo};
use super::tasks::Tasks;
use crate::backoff::Backoff;
use crate::error::{code, Error, Result};
use crate::transport::https::{HttpsConnector, PlainHttp};
use crate::webhook::{build_headers, WebhookEvent, WebhookEventType, WebhookSecret};

/// Attempts per event (the first one included).
const MAX_ATTEMPTS: u32 = 3;
/// Backoff before the second attempt; doubled each time, capped.
const BACKOFF_BASE: Duration = Duration::from_millis(500);
/// The backoff ceiling.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// The wait after failed attempt `n` (1-based): 0.5 s, 1 s, 2 s, … capped
/// at [`BACKOFF_CAP`], no jitter (one engine, few receivers).
const RETRY_BACKOFF: Backoff = Backoff::new(BACKOFF_BASE, BACKOFF_CAP);
/// One attempt (connect, TLS, request, response head and body).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a response body is read (and discarded).
const MAX_RESPONSE_BODY: usize = 64 * 1024;
/// Events waiting per endpoint; more drop the oldest.
const QUEUE_CAPACITY: usize = 256;
/// Delivery records kept for [`LocalEngine::webhook_deliveries`](super::LocalEngine::webhook_deliveries).
const HISTORY_CAPACITY: usize = 100;

/// One delivery attempt of the local engine's webhooks, as returned by
/// [`LocalEngine::webhook_deliveries`](super::LocalEngine::webhook_deliveries).
///
/// A retried event has one record per attempt: same `event_id`, a new
/// `delivery_id`, `attempt` counting from 1.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookDelivery {
    /// The endpoint's id (`wh_…`), sent as `rstream-webhook-id`.
    pub webhook_id: String,
    /// The endpoint's URL.
    pub url: String,
    /// The event's id (`evt_…`), sent as `rstream-event-id` and in the body.
    pub event_id: String,
    /// The event's type.
    pub event_type: WebhookEventType,
    /// This attempt's id (`dl_…`), sent as `rstream-delivery-id`.
    pub delivery_id: String,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: u32,
    /// The response status, if a response arrived.
    pub status: Option<u16>,
    /// What went wrong when no response arrived (connection refused, TLS
    /// failure, timeout, …).
    pub error: Option<String>,
    /// When the attempt started.
    pub at: SystemTime,
    /// How long it took.
    pub elapsed: Duration,
}

impl WebhookDelivery {
    /// Whether the receiver answered with a 2xx status.
    pub fn is_success(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// A validated endpoint: where to POST and how to sign.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    url: Uri,
    secret: WebhookSecret,
}

impl Target {
    /// Checks `url`: absolute `http://` or `https://` with a host, no
    /// credentials.
    pub(crate) fn new(url: &str, secret: WebhookSecret) -> Result<Self> {
        let invalid = |why: &str| {
            Error::config(
                code::INVALID_CONFIG,
                format!("local engine: webhook URL {}: {why}", redacted(url)),
            )
        };
        let uri: Uri = url.trim().parse().map_err(|_| invalid("not a valid URL"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(invalid("must start with http:// or https://")),
        }
        let Some(authority) = uri.authority() else {
            return Err(invalid("has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(invalid("must not contain credentials"));
        }
        if authority.host().is_empty() {
            return Err(invalid("has no host"));
        }
        Ok(Target { url: uri, secret })
    }
}

/// `url` without its query and anything that looks like credentials, for
/// messages and logs.
fn redacted(url: &str) -> String {
    let url = url.trim();
    let without_query = url.split(['?', '#']).next().unwrap_or_default();
    match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}{path}")
        }
        None => without_query.chars().take(64).collect(),
    }
}

type HttpClient = Client<HttpsConnector, Full<Bytes>>;

/// The delivery side of the engine: one HTTP client shared by every
/// endpoint, and the recent delivery records.
pub(crate) struct Webhooks {
    client: HttpClient,
    history: Arc<Mutex<VecDeque<WebhookDelivery>>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

impl Webhooks {
    /// A client trusting the webpki roots plus the engine's CA (`ca_pem`),
    /// so targets published through the engine itself verify.
    pub(crate) fn new(ca_pem: &str) -> Result<Self> {
        let tls = crate::transport::TlsOptions::new()
            .add_ca_pem(ca_pem.as_bytes())?
            .client_config(&[b"http/1.1"])?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(
                // Receivers are often local services: clear text is allowed
                // (the body is signed, and carries no secret). The attempt
                // timeout bounds the connect too.
                HttpsConnector::new(tls, ATTEMPT_TIMEOUT).plain_http(PlainHttp::Allowed),
            );
        Ok(Webhooks {
            client,
            history: Arc::new(Mutex::new(VecDeque::with_capacity(HISTORY_CAPACITY))),
        })
    }

    /// Starts delivering the events of `events` to `target` (as engine
    /// tasks, stopped with the engine). Returns the endpoint's webhook id.
    pub(crate) fn start(
        &self,
        target: Target,
        events: broadcast::Receiver<EngineEvent>,
        tasks: &Tasks,
    ) -> String {
        let webhook_id = new_id("wh_");
        let endpoint = Arc::new(Endpoint {
            webhook_id: webhook_id.clone(),
            log_url: redacted(&target.url.to_string()),
            url: target.url,
            secret: target.secret,
            client: self.client.clone(),
            history: self.history.clone(),
        });
        tracing::debug!(webhook_id, url = %endpoint.log_url, "webhook endpoint added");
        let queue = Arc::new(Queue::new(QUEUE_CAPACITY));
        tasks.spawn(pump(events, queue.clone(), endpoint.clone()));
        tasks.spawn(work(queue, endpoint));
        webhook_id
    }

    /// The recent delivery records, oldest first.
    pub(crate) fn deliveries(&self) -> Vec<WebhookDelivery> {
        lock(&self.history).iter().cloned().collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section leaves the data consistent; a panic in one
    // does not make it unusable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One endpoint's settings.
struct Endpoint {
    webhook_id: String,
    url: Uri,
    log_url: String,
    secret: WebhookSecret,
    client: HttpClient,
    history: Arc<Mutex<VecDeque<WebhookDelivery>>>,
}

/// An event ready to send.
struct Job {
    event: WebhookEvent,
    body: Bytes,
}

/// Moves events from the bus onto the queue, never waiting on the worker.
async fn pump(
    mut events: broadcast::Receiver<EngineEvent>,
    queue: Arc<Queue<Job>>,
    endpoint: Arc<Endpoint>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(webhook_id = %endpoint.webhook_id, missed = n, "webhook: events missed (the event bus overflowed)");
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        let Some(job) = job_for(&event) else {
            continue;
        };
        if let Some(dropped) = queue.push(job) {
            tracing::warn!(
                webhook_id = %endpoint.webhook_id,
                url = %endpoint.log_url,
                event_id = dropped.event.id(),
                event_type = %dropped.event.event_type(),
                "webhook: delivery queue full, dropping the oldest event"
            );
        }
    }
    queue.close();
}

/// Delivers queued events one at a time, in order.
async fn work(queue: Arc<Queue<Job>>, endpoint: Arc<Endpoint>) {
    while let Some(job) = queue.next().await {
        endpoint.deliver(&job).await;
    }
}

/// How an attempt ended.
enum Attempt {
    Response(StatusCode),
    Failed(String),
}

impl Endpoint {
    async fn deliver(&self, job: &Job) {
        let event_id = job.event.id();
        let event_type = job.event.event_type();
        for attempt in 1..=MAX_ATTEMPTS {
            let delivery_id = new_id("dl_");
            let at = SystemTime::now();
            let started = Instant::now();
            let outcome = self.attempt(job, &delivery_id).await;
            let (status, error) = match &outcome {
                Attempt::Response(s) => (Some(s.as_u16()), None),
                Attempt::Failed(e) => (None, Some(e.clone())),
            };
            self.record(WebhookDelivery {
                webhook_id: self.webhook_id.clone(),
                url: self.url.to_string(),
                event_id: event_id.to_owned(),
                event_type,
                delivery_id: delivery_id.clone(),
                attempt,
                status,
                error,
                at,
                elapsed: started.elapsed(),
            });
            let retry = match &outcome {
                Attempt::Response(s) if s.is_success() => {
                    tracing::debug!(webhook_id = %self.webhook_id, event_id, %event_type, delivery_id, attempt, status = s.as_u16(), "webhook delivered");
                    return;
                }
                Attempt::Response(s) if !retryable(*s) => {
                    tracing::warn!(webhook_id = %self.webhook_id, url = %self.log_url, event_id, %event_type, delivery_id, attempt, status = s.as_u16(), "webhook refused by the receiver; not retrying");
                    return;
                }
                Attempt::Response(s) => format!("status {}", s.as_u16()),
                Attempt::Failed(e) => e.clone(),
            };
            if attempt == MAX_ATTEMPTS {
                tracing::warn!(webhook_id = %self.webhook_id, url = %self.log_url, event_id, %event_type, attempts = attempt, last = %retry, "webhook delivery failed; giving up");
                return;
            }
            let wait = RETRY_BACKOFF.delay(attempt);
            tracing::debug!(webhook_id = %self.webhook_id, url = %self.log_url, event_id, attempt, error = %retry, ?wait, "webhook delivery failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, job: &Job, delivery_id: &str) -> Attempt {
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let headers = match build_headers(
            &job.body,
            &job.event,
            &self.secret,
            &self.webhook_id,
            delivery_id,
            timestamp,
        ) {
            Ok(h) => h,
            Err(e) => return Attempt::Failed(format!("signing: {e}")),
        };
        let mut request = Request::post(self.url.clone());
        if let Some(h) = request.headers_mut() {
            h.extend(headers);
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        }
        let request = match request.body(Full::new(job.body.clone())) {
            Ok(r) => r,
            Err(e) => return Attempt::Failed(format!("building the request: {e}")),
        };
        let send = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| crate::error::Chain(&e).to_string())?;
            let status = response.status();
            // Read (a bounded amount of) the body so the connection can be
            // reused; its content does not matter.
            let _ = Limited::new(response.into_body(), MAX_RESPONSE_BODY)
                .collect()
                .await;
            Ok::<_, String>(status)
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, send).await {
            Ok(Ok(status)) => Attempt::Response(status),
            Ok(Err(e)) => Attempt::Failed(e),
            Err(_) => Attempt::Failed(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())),
        }
    }

    fn record(&self, delivery: WebhookDelivery) {
        let mut history = lock(&self.history);
        while history.len() >= HISTORY_CAPACITY {
            history.pop_front();
        }
        history.push_back(delivery);
    }
}

const USER_AGENT_VALUE: &str = concat!("rstream-local-engine/", env!("CARGO_PKG_VERSION"));

/// Worth another attempt: 5xx, 408 (request timeout), 429 (too many requests).
fn retryable(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

// ----- bodies -----

/// The body (and parsed event) for `event`, or `None` for an event type
/// webhooks do not carry.
fn job_for(event: &EngineEvent) -> Option<Job> {
    let body = body_for(event)?;
    let bytes = match serde_json::to_vec(&body) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            tracing::warn!(error = %e, "webhook: cannot serialise an event");
            return None;
        }
    };
    match WebhookEvent::from_json(&bytes) {
        Ok(event) => Some(Job { event, body: bytes }),
        Err(e) => {
            tracing::warn!(error = %e, "webhook: built an invalid event body");
            None
        }
    }
}

/// The event id: `evt_` + 32 hex characters derived from the event (its
/// type, its object's id and its time), so every endpoint sees the same id
/// for the same event, and retries keep it.
fn event_id(event_type: WebhookEventType, object_id: &str, at: SystemTime) -> String {
    use sha2::{Digest as _, Sha256};
    let nanos = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mut h = Sha256::new();
    h.update(b"rstream-local-engine event\0");
    h.update(event_type.as_str().as_bytes());
    h.update(b"\0");
    h.update(object_id.as_bytes());
    h.update(b"\0");
    h.update(nanos.to_be_bytes());
    format!("evt_{}", hex::encode(&h.finalize()[..16]))
}

/// The JSON body for `event`.
fn body_for(event: &EngineEvent) -> Option<Value> {
    let object = match event {
        EngineEvent::ClientCreated { client } => client_object(client, true),
        EngineEvent::ClientDeleted { client, .. } => client_object(client, false),
        EngineEvent::TunnelCreated { tunnel } => tunnel_object(tunnel, true),
        EngineEvent::TunnelDeleted { tunnel, .. } => tunnel_object(tunnel, false),
        // Events webhooks do not carry (none yet).
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let event_type: WebhookEventType = event.event_type().parse().ok()?;
    let object_id = object.get("id").and_then(Value::as_str).unwrap_or_default();
    Some(json!({
        "id": event_id(event_type, object_id, event.at()),
        "type": event_type.as_str(),
        "created_at": rfc3339(event.at()),
        "user_id": null,
        "workspace_id": null,
        "project_id": null,
        "cluster_id": null,
        "object": Value::Object(object),
    }))
}

fn status(online: bool) -> Value {
    Value::from(if online { "online" } else { "offline" })
}

fn put_str(map: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), Value::from(v.as_str()));
    }
}

fn put_bool(map: &mut Map<String, Value>, key: &str, value: Option<bool>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), Value::from(v));
    }
}

fn put_list(map: &mut Map<String, Value>, key: &str, value: &[String]) {
    if !value.is_empty() {
        map.insert(key.to_owned(), Value::from(value.to_vec()));
    }
}

/// The Engine API Client object (ENGINE_API.md §5), plus `creation_date`.
pub(crate) fn client_object(client: &ClientInfo, online: bool) -> Map<String, Value> {
    let d = &client.details;
    let mut o = Map::new();
    o.insert("id".into(), Value::from(client.id.as_str()));
    o.insert("status".into(), status(online));
    put_str(&mut o, "agent", &d.agent);
    put_str(&mut o, "channel", &d.channel);
    put_str(&mut o, "version", &d.version);
    put_str(&mut o, "os", &d.os);
    put_str(&mut o, "arch", &d.arch);
    put_str(&mut o, "protocol_version", &d.protocol_version);
    o.insert("labels".into(), Value::Object(Map::new()));
    o.insert(
        "creation_date".into(),
        Value::from(rfc3339(client.created_at)),
    );
    o
}

/// The Engine API Tunnel object (ENGINE_API.md §5).
pub(crate) fn tunnel_object(tunnel: &TunnelInfo, online: bool) -> Map<String, Value> {
    let p = &tunnel.properties;
    let mut o = Map::new();
    o.insert("id".into(), Value::from(tunnel.id.as_str()));
    o.insert("client_id".into(), Value::from(tunnel.client_id.as_str()));
    o.insert("status".into(), status(online));
    o.insert(
        "creation_date".into(),
        Value::from(rfc3339(tunnel.created_at)),
    );
    put_str(&mut o, "name", &p.name);
    put_str(&mut o, "type", &p.r#type);
    put_bool(&mut o, "publish", p.publish);
    put_str(&mut o, "protocol", &p.protocol);
    let labels: Map<String, Value> = p
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    o.insert("labels".into(), Value::Object(labels));
    put_list(&mut o, "geo_ip", &p.geoip);
    put_list(&mut o, "trusted_ips", &p.trusted_ips);
    put_str(&mut o, "host", &p.host);
    put_str(&mut o, "hostname", &p.hostname);
    if let Some(port) = p.port {
        o.insert("port".into(), Value::from(port));
    }
    put_str(&mut o, "tls_mode", &p.tls_mode);
    put_list(&mut o, "tls_alpns", &p.tls_alpns);
    put_str(&mut o, "tls_min_version", &p.tls_min_version);
    put_list(&mut o, "tls_ciphers", &p.tls_ciphers);
    put_bool(&mut o, "mtls_auth", p.mtls_auth);
    put_str(&mut o, "http_version", &p.http_version);
    put_bool(&mut o, "http_use_tls", p.http_use_tls);
    put_bool(&mut o, "upstream_tls", p.upstream_tls);
    put_bool(&mut o, "token_auth", p.token_auth);
    put_bool(&mut o, "rstream_auth", p.rstream_auth);
    put_bool(&mut o, "challenge_mode", p.challenge_mode);
    put_bool(
        &mut o,
        "datagram_guaranteed_delivery",
        p.datagram_guaranteed_delivery,
    );
    put_bool(
        &mut o,
        "allow_cross_region_routing",
        p.allow_cross_region_routing,
    );
    o
}

// ----- the queue -----

/// A bounded FIFO that never blocks the producer: pushing onto a full
/// queue drops (and returns) the oldest item.
struct Queue<T> {
    items: Mutex<VecDeque<T>>,
    capacity: usize,
    notify: Notify,
    closed: AtomicBool,
}

impl<T> Queue<T> {
    fn new(capacity: usize) -> Self {
        Queue {
            items: Mutex::new(VecDeque::with_capacity(capacity.min(64))),
            capacity: capacity.max(1),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Appends `item`; returns the item dropped to make room, if any.
    fn push(&self, item: T) -> Option<T> {
        let dropped = {
            let mut items = lock(&self.items);
            let dropped = if items.len() >= self.capacity {
                items.pop_front()
            } else {
                None
            };
            items.push_back(item);
            dropped
        };
        self.notify.notify_one();
        dropped
    }

    /// No more pushes; [`next`](Self::next) drains what is left, then ends.
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// The next item, waiting for one; `None` once closed and empty.
    async fn next(&self) -> Option<T> {
        loop {
            if let Some(item) = lock(&self.items).pop_front() {
                return Some(item);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            // `notify_one` stores a permit when nobody waits, so a push
            // between the check above and this await is not lost.
            self.notify.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ClientDetails, TunnelProperties};

    #[test]
    fn urls_are_checked() {
        let s = WebhookSecret::generate();
        assert!(Target::new("http://127.0.0.1:8080/webhooks/rstream", s.clone()).is_ok());
        assert!(Target::new("https://example.com", s.clone()).is_ok());
        for bad in [
            "",
            "ftp://example.com/",
            "example.com/hook",
            "/hook",
            "https://user:pw@example.com/hook",
            "http:// bad",
        ] {
            let err = Target::new(bad, s.clone()).unwrap_err();
            assert_eq!(err.code(), code::INVALID_CONFIG, "{bad:?}");
            assert!(!err.to_string().contains("pw@"), "{err}");
        }
        assert_eq!(
            redacted("https://u:p@host:1/path?token=x"),
            "https://host:1/path"
        );
    }

    #[test]
    fn queue_drops_the_oldest_when_full() {
        let q = Queue::new(3);
        for i in 0..3 {
            assert_eq!(q.push(i), None);
        }
        assert_eq!(q.push(3), Some(0));
        assert_eq!(q.push(4), Some(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        q.close();
        let drained: Vec<i32> = rt.block_on(async {
            let mut v = Vec::new();
            while let Some(i) = q.next().await {
                v.push(i);
            }
            v
        });
        assert_eq!(drained, vec![2, 3, 4]);
    }

    #[test]
    fn backoff_is_capped() {
        let backoff = |attempt| RETRY_BACKOFF.delay(attempt);
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_secs(1));
        assert_eq!(backoff(10), BACKOFF_CAP);
        assert_eq!(backoff(u32::MAX), BACKOFF_CAP);
        assert!(retryable(StatusCode::BAD_GATEWAY));
        assert!(retryable(StatusCode::TOO_MANY_REQUESTS));
        assert!(!retryable(StatusCode::UNAUTHORIZED));
    }

    #[test]
    fn bodies_are_valid_events() {
        let client = ClientInfo {
            id: "c1".into(),
            details: ClientDetails {
                agent: Some("rstream-rust-runtime".into()),
                version: Some("0.1.0".into()),
                ..Default::default()
            }
            .into(),
            peer_addr: "127.0.0.1:5000".parse().unwrap(),
            liveness: None,
            created_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            identity: None,
            identity_name: None,
        };
        let created = EngineEvent::ClientCreated { client };
        let job = job_for(&created).unwrap();
        // The same event always gets the same id (for every endpoint).
        assert_eq!(job_for(&created).unwrap().event.id(), job.event.id());
        assert_eq!(job.event.id().len(), 4 + 32);
        assert_eq!(job.event.event_type(), WebhookEventType::ClientCreated);
        assert!(job.event.id().starts_with("evt_"));
        assert_eq!(job.event.created_at(), Some("2023-11-14T22:13:20.000Z"));
        assert_eq!(job.event.object()["id"], "c1");
        assert_eq!(job.event.object()["status"], "online");
        assert_eq!(job.event.object()["agent"], "rstream-rust-runtime");
        assert!(job.event.object().get("token").is_none());
        assert_eq!(job.event.raw()["cluster_id"], Value::Null);

        let mut properties = TunnelProperties {
            id: Some("t1".into()),
            name: Some("web".into()),
            publish: Some(true),
            protocol: Some("http".into()),
            hostname: Some("127.0.0.1".into()),
            port: Some(4443),
            ..Default::default()
        };
        properties.labels.insert("env".into(), "dev".into());
        let tunnel = TunnelInfo {
            id: "t1".into(),
            client_id: "c1".into(),
            properties: properties.into(),
            created_at: UNIX_EPOCH,
        };
        let job = job_for(&EngineEvent::TunnelDeleted {
            tunnel,
            at: UNIX_EPOCH + Duration::from_secs(60),
        })
        .unwrap();
        let o = job.event.object();
        assert_eq!(job.event.event_type(), WebhookEventType::TunnelDeleted);
        assert_eq!(job.event.created_at(), Some("1970-01-01T00:01:00.000Z"));
        assert_eq!(o["id"], "t1");
        assert_eq!(o["client_id"], "c1");
        assert_eq!(o["status"], "offline");
        assert_eq!(o["port"], 4443);
        assert_eq!(o["publish"], true);
        assert_eq!(o["labels"]["env"], "dev");
        assert!(o.get("trusted_ips").is_none());
    }
}
