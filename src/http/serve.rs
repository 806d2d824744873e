//! Serving a tower service on a tunnel with hyper-util's auto builder.

use std::future::Future;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

use crate::error::{BoxError, Result};
use crate::tunnel::Tunnel;

/// How long graceful shutdown waits for in-flight requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `service` on every connection of `tunnel` until the tunnel closes,
/// then returns the reason (`Err`), after in-flight requests finish.
///
/// HTTP/1.1 and HTTP/2 with prior knowledge (h2c) are detected per
/// connection; upgrades (WebSocket) work.
///
/// ```no_run
/// # async fn run(tunnel: rstream::Tunnel) {
/// use std::convert::Infallible;
/// use http_body_util::Full;
/// let svc = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
///     Ok::<_, Infallible>(http::Response::new(Full::new(bytes::Bytes::from("hi"))))
/// });
/// let reason = rstream::http::serve(tunnel, svc).await;
/// # }
/// ```
pub async fn serve<S, B>(tunnel: Tunnel, service: S) -> Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_with_shutdown(tunnel, service, std::future::pending()).await
}

/// Like [`serve`], but stops when `signal` completes: the tunnel is closed
/// (no new connections), in-flight requests finish (bounded by 30 s), and
/// `Ok(())` is returned.
pub async fn serve_with_shutdown<S, B, F>(mut tunnel: Tunnel, service: S, signal: F) -> Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send,
{
    let builder = Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut signal = std::pin::pin!(signal);
    let outcome: Result<()> = loop {
        tokio::select! {
            accepted = tunnel.accept() => match accepted {
                Ok(stream) => {
                    let svc = TowerToHyperService::new(service.clone());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    let conn = graceful.watch(conn.into_owned());
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => break Err(e),
            },
            () = &mut signal => {
                if let Err(e) = tunnel.close().await {
                    tracing::debug!(error = %e, "closing the tunnel on shutdown");
                }
                break Ok(());
            }
        }
    };
    drop(tunnel);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("graceful shutdown timed out with requests still in flight");
    }
    outcome
}
