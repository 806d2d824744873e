//! Delivery: the pump (event bus → queue, never waiting), the worker
//! (queue → receiver, in order) and one signed attempt with its retries.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use tokio::sync::broadcast;

use super::payload::Job;
use super::queue::Queue;
use super::{lock, new_id, WebhookDelivery, HISTORY_CAPACITY};
use crate::backoff::Backoff;
use crate::engine::events::EngineEvent;
use crate::transport::https::HttpsConnector;
use crate::webhook::{build_headers, WebhookSecret};

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
pub(super) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a response body is read (and discarded).
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// The HTTP client shared by every endpoint of an engine.
pub(super) type HttpClient = Client<HttpsConnector, Full<Bytes>>;

/// One endpoint's settings.
pub(super) struct Endpoint {
    pub(super) webhook_id: String,
    pub(super) url: Uri,
    pub(super) log_url: String,
    pub(super) secret: WebhookSecret,
    pub(super) client: HttpClient,
    pub(super) history: Arc<Mutex<VecDeque<WebhookDelivery>>>,
}

/// Moves events from the bus onto the queue, never waiting on the worker.
pub(super) async fn pump(
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
        let Some(job) = Job::for_event(&event) else {
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
pub(super) async fn work(queue: Arc<Queue<Job>>, endpoint: Arc<Endpoint>) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
