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
//! Tunnel object — the same typed record (`api::ClientRecord`,
//! `api::TunnelRecord`) built by the same code as `GET /api/clients` and
//! `/api/tunnels` — with `status` `online` in created events and `offline`
//! in deleted ones; unset fields (and empty lists and label maps) are
//! omitted, and a client has no `creation_date` (the API's Client has none).
//! Receivers are reached through the crate's one HTTPS client stack
//! (`transport::https`), clear-text `http://` included.
//!
//! The event id (`evt_…`) is derived from the event itself, so every
//! endpoint gets the same id for the same event. Each attempt is signed
//! afresh (`t` = the attempt's time) and carries the
//! endpoint's `rstream-webhook-id` (`wh_…`) and a fresh
//! `rstream-delivery-id` (`dl_…`); the `rstream-event-id` stays the same
//! across retries. An attempt times out after 10 s; at most 64 KiB of the
//! response body is read. Transport errors, timeouts, 5xx, 408 and 429 are
//! retried (3 attempts in all, backoff 0.5 s then 1 s, capped at 5 s); any
//! other status is final.
//!
//! The module is split by concern: [`delivery`] (the pump, the worker and
//! one signed attempt), [`queue`] (the drop-oldest queue between them) and
//! [`payload`] (event bodies, built from the Engine API's typed records).

mod delivery;
mod payload;
mod queue;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::broadcast;

use self::delivery::{pump, work, Endpoint, HttpClient, ATTEMPT_TIMEOUT};
use self::queue::Queue;
use super::events::EngineEvent;
use super::tasks::Tasks;
use crate::error::{code, Error, Result};
use crate::transport::https::{HttpsConnector, PlainHttp};
use crate::webhook::{WebhookEventType, WebhookSecret};

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

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
