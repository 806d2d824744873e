//! The tower middleware: [`WebhookLayer`] and [`Webhook`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{header, Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::Collect;
use http_body_util::{BodyExt as _, Full, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::rejection::WebhookRejection;
use super::secret::WebhookSecret;
use super::signature::{self, VerifyOptions};
use crate::error::BoxError;

/// The default body size limit: 1 MiB.
pub const DEFAULT_MAX_BODY_SIZE: usize = 1024 * 1024;

/// Renders a [`WebhookRejection`] as a response; see
/// [`WebhookLayer::on_rejection`].
pub type RejectionHandler = fn(WebhookRejection) -> Response<Full<Bytes>>;

fn default_rejection(rejection: WebhookRejection) -> Response<Full<Bytes>> {
    rejection.to_response()
}

#[derive(Clone, Debug)]
struct Config {
    secrets: Vec<WebhookSecret>,
    options: VerifyOptions,
    max_body: usize,
    on_rejection: RejectionHandler,
}

impl Config {
    /// The checks that need no body byte: the signature header (presence,
    /// syntax, timestamp) and the declared size.
    fn precheck<B: Body>(&self, req: &Request<B>) -> Result<(), WebhookRejection> {
        let header = signature::signature_header(req.headers())?;
        signature::precheck(header, &self.options)?;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let limit = u64::try_from(self.max_body).unwrap_or(u64::MAX);
        if declared.is_some_and(|n| n > limit) || req.body().size_hint().lower() > limit {
            return Err(WebhookRejection::too_large());
        }
        Ok(())
    }

    fn reject(&self, rejection: WebhookRejection) -> Response<Full<Bytes>> {
        tracing::debug!(
            target: "rstream::webhook",
            status = rejection.status().as_u16(),
            code = rejection.code(),
            reason = rejection.body_text(),
            "webhook rejected"
        );
        (self.on_rejection)(rejection)
    }
}

/// Verifies rstream webhook deliveries before they reach the inner service.
///
/// See the [module docs](super) for an example and the status codes.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct WebhookLayer {
    cfg: Arc<Config>,
}

impl WebhookLayer {
    /// A layer accepting signatures made with `secret`, with a tolerance of
    /// 300 s and a body limit of 1 MiB.
    pub fn new(secret: WebhookSecret) -> Self {
        WebhookLayer {
            cfg: Arc::new(Config {
                secrets: vec![secret],
                options: VerifyOptions::new(),
                max_body: DEFAULT_MAX_BODY_SIZE,
                on_rejection: default_rejection,
            }),
        }
    }

    /// Also accepts signatures made with `secret` (rotation: keep the old
    /// secret until every sender uses the new one).
    pub fn add_secret(mut self, secret: WebhookSecret) -> Self {
        Arc::make_mut(&mut self.cfg).secrets.push(secret);
        self
    }

    /// How far the signed timestamp may be from now (default 300 s).
    pub fn tolerance(mut self, tolerance: Duration) -> Self {
        let cfg = Arc::make_mut(&mut self.cfg);
        cfg.options = cfg.options.tolerance(tolerance);
        self
    }

    /// The largest body accepted, in bytes (default 1 MiB). Larger ones get
    /// 413, without more than `bytes` bytes being buffered.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        Arc::make_mut(&mut self.cfg).max_body = bytes;
        self
    }

    /// Renders rejections with `handler` instead of the default
    /// `text/plain` response.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::Response;
    /// use http_body_util::Full;
    /// use rstream::webhook::{WebhookLayer, WebhookRejection, WebhookSecret};
    ///
    /// fn as_json(rejection: WebhookRejection) -> Response<Full<Bytes>> {
    ///     let body = serde_json::json!({ "error": rejection.code() }).to_string();
    ///     Response::builder()
    ///         .status(rejection.status())
    ///         .header("content-type", "application/json")
    ///         .body(Full::new(Bytes::from(body)))
    ///         .unwrap_or_else(|_| rejection.to_response())
    /// }
    ///
    /// let layer = WebhookLayer::new(WebhookSecret::generate()).on_rejection(as_json);
    /// # let _ = layer;
    /// ```
    pub fn on_rejection(mut self, handler: RejectionHandler) -> Self {
        Arc::make_mut(&mut self.cfg).on_rejection = handler;
        self
    }
}

impl<S> Layer<S> for WebhookLayer {
    type Service = Webhook<S>;

    fn layer(&self, inner: S) -> Webhook<S> {
        Webhook {
            inner,
            cfg: self.cfg.clone(),
        }
    }
}

/// The service made by [`WebhookLayer`].
///
/// Hands the inner service a `Request<Full<Bytes>>` holding the exact body
/// that was verified, with the [`WebhookEvent`](super::WebhookEvent) in its
/// extensions. See the [module docs](super).
#[derive(Clone, Debug)]
pub struct Webhook<S> {
    inner: S,
    cfg: Arc<Config>,
}

impl<S> Webhook<S> {
    /// Wraps `inner` with the defaults of [`WebhookLayer::new`].
    pub fn new(inner: S, secret: WebhookSecret) -> Self {
        WebhookLayer::new(secret).layer(inner)
    }

    /// A [`WebhookLayer`] accepting `secret`.
    pub fn layer(secret: WebhookSecret) -> WebhookLayer {
        WebhookLayer::new(secret)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, R> Service<Request<B>> for Webhook<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<R>> + Clone,
    B: Body,
    B::Error: Into<BoxError>,
{
    type Response = Response<WebhookBody<R>>;
    type Error = S::Error;
    type Future = ResponseFuture<B, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Err(rejection) = self.cfg.precheck(&req) {
            return ResponseFuture {
                state: State::Rejected {
                    response: Some(self.cfg.reject(rejection)),
                },
                cfg: self.cfg.clone(),
            };
        }
        // The readied service goes into the future; a fresh clone stays.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let (parts, body) = req.into_parts();
        ResponseFuture {
            state: State::Buffering {
                collect: Limited::new(body, self.cfg.max_body).collect(),
                parts: Some(parts),
                inner: Some(inner),
            },
            cfg: self.cfg.clone(),
        }
    }
}

pin_project! {
    /// The response future of [`Webhook`].
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<B, S>
    where
        B: Body,
        B::Error: Into<BoxError>,
        S: Service<Request<Full<Bytes>>>,
    {
        #[pin]
        state: State<B, S, S::Future>,
        cfg: Arc<Config>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<B, S, F>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        Rejected {
            response: Option<Response<Full<Bytes>>>,
        },
        Buffering {
            #[pin]
            collect: Collect<Limited<B>>,
            parts: Option<Parts>,
            inner: Option<S>,
        },
        Calling {
            #[pin]
            future: F,
        },
    }
}

impl<B, S, R> Future for ResponseFuture<B, S>
where
    B: Body,
    B::Error: Into<BoxError>,
    S: Service<Request<Full<Bytes>>, Response = Response<R>>,
{
    type Output = Result<Response<WebhookBody<R>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Rejected { response } => {
                    // invariant: `Rejected` is left only by returning Ready, and
                    // futures must not be polled after completion.
                    let response = response.take().expect("future polled after completion");
                    return Poll::Ready(Ok(response.map(WebhookBody::rejected)));
                }
                StateProj::Buffering {
                    collect,
                    parts,
                    inner,
                } => {
                    let collected = ready!(collect.poll(cx));
                    // invariant: both are `Some` until this branch runs, and it
                    // runs once: the state changes right below.
                    let (mut parts, mut inner) = (
                        parts.take().expect("future polled after completion"),
                        inner.take().expect("future polled after completion"),
                    );
                    let bytes = match collected {
                        Ok(collected) => collected.to_bytes(),
                        Err(err) => {
                            let rejection = if err.downcast_ref::<LengthLimitError>().is_some() {
                                WebhookRejection::too_large()
                            } else {
                                WebhookRejection::body_read()
                            };
                            let response = Some(this.cfg.reject(rejection));
                            this.state.set(State::Rejected { response });
                            continue;
                        }
                    };
                    match signature::verify_request(
                        &parts.headers,
                        &bytes,
                        &this.cfg.secrets,
                        &this.cfg.options,
                    ) {
                        Ok(event) => {
                            tracing::trace!(
                                target: "rstream::webhook",
                                event_id = event.id(),
                                event_type = event.event_type().as_str(),
                                "webhook verified"
                            );
                            parts.extensions.insert(event);
                            let future = inner.call(Request::from_parts(parts, Full::new(bytes)));
                            this.state.set(State::Calling { future });
                        }
                        Err(rejection) => {
                            let response = Some(this.cfg.reject(rejection));
                            this.state.set(State::Rejected { response });
                        }
                    }
                }
                StateProj::Calling { future } => {
                    return future
                        .poll(cx)
                        .map(|res| res.map(|r| r.map(WebhookBody::inner)));
                }
            }
        }
    }
}

impl<B, S> fmt::Debug for ResponseFuture<B, S>
where
    B: Body,
    B::Error: Into<BoxError>,
    S: Service<Request<Full<Bytes>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Rejected { .. } => "Rejected",
            State::Buffering { .. } => "Buffering",
            State::Calling { .. } => "Calling",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response body of [`Webhook`]: the inner service's body, or the
    /// rejection's.
    #[derive(Debug)]
    pub struct WebhookBody<B> {
        #[pin]
        inner: BodyInner<B>,
    }
}

pin_project! {
    #[project = BodyProj]
    #[derive(Debug)]
    enum BodyInner<B> {
        Rejected {
            #[pin]
            body: Full<Bytes>,
        },
        Inner {
            #[pin]
            body: B,
        },
    }
}

impl<B> WebhookBody<B> {
    fn rejected(body: Full<Bytes>) -> Self {
        WebhookBody {
            inner: BodyInner::Rejected { body },
        }
    }

    fn inner(body: B) -> Self {
        WebhookBody {
            inner: BodyInner::Inner { body },
        }
    }
}

impl<B> Body for WebhookBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().inner.project() {
            BodyProj::Rejected { body } => body.poll_frame(cx).map_err(|never| match never {}),
            BodyProj::Inner { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            BodyInner::Rejected { body } => body.is_end_stream(),
            BodyInner::Inner { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            BodyInner::Rejected { body } => body.size_hint(),
            BodyInner::Inner { body } => body.size_hint(),
        }
    }
}
