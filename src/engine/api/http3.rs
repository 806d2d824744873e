//! The Engine API over HTTP/3 (feature `http3`): QUIC connections on the
//! engine's UDP port that negotiated ALPN `h3` are served the same
//! [`router`](super::router) as the TLS listener's `h2` / `http/1.1`
//! connections, through the crate's HTTP/3 adapter
//! ([`crate::http3::serve_connection_with`]).
//!
//! Same rules as over TLS: one [admission](crate::engine::admission) per
//! connection (its first authorized request establishes it under
//! `max_connections`; nothing proved within the admission deadline closes
//! it), the client certificate authenticates as on TLS, at most 8 watches
//! per connection and the engine-wide watch cap, request heads within the
//! head timeout, a stalled response write resets its request (a stalled
//! watch closes the connection), and a connection with no request in
//! flight for the idle timeout is closed. HTTP/3's own bound: at most
//! [`MAX_REQUESTS_PER_CONNECTION`] requests handled at once; further
//! request streams wait unread, within QUIC's stream and flow-control
//! limits (the engine endpoint's receive windows).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::Request;
use rustls::pki_types::CertificateDer;
use tower::ServiceExt;

use super::{router, watch, VerifiedCertificate, MAX_WATCHES_PER_CONNECTION};
use crate::engine::Inner;
use crate::http::conn::{Activity, ConnAbort, TrackedBody};
use crate::http3::{RequestBody, ServeOptions};

/// The ALPN of HTTP/3.
pub(crate) const ALPN: &[u8] = b"h3";
/// Requests one HTTP/3 connection has handled at once (the HTTP/3
/// adapter's default; hyper's h2 allows 200 per TLS connection), and the
/// request streams it may open once the first ones close. A watch holds
/// one for its lifetime.
pub(crate) const MAX_REQUESTS_PER_CONNECTION: u32 = 100;
/// Unidirectional streams the client may have open: HTTP/3's control
/// stream and two QPACK streams, plus room for grease streams.
pub(crate) const PEER_UNI_STREAMS: u32 = 8;
/// HTTP/3's `H3_NO_ERROR`, the code of a deliberate close.
const H3_NO_ERROR: u32 = 0x100;

/// Serves the Engine API on one QUIC connection that negotiated `h3`,
/// until it ends, its admission is lost, it idles out or a handler aborts
/// it.
pub(crate) async fn serve(inner: Arc<Inner>, conn: quinn::Connection, peer: SocketAddr) {
    // The endpoint's transport parameters are those of `rstrm/1` (no
    // unidirectional streams, 1,024 bidirectional ones): HTTP/3 needs the
    // first, and fewer of the second (QUIC cannot take back credit
    // already given, so this lowers it as streams close).
    conn.set_max_concurrent_uni_streams(PEER_UNI_STREAMS.into());
    conn.set_max_concurrent_bi_streams(MAX_REQUESTS_PER_CONNECTION.into());
    let admission = inner.admissions.enter(peer);
    let certificate = peer_certificate(&conn)
        .map(|leaf| VerifiedCertificate(crate::engine::certs::client_identity(&leaf).0));
    let connection_watches = watch::WatchSlots::new(
        MAX_WATCHES_PER_CONNECTION,
        "this connection",
        "8 per connection",
    );
    let abort = ConnAbort::new();
    let activity = Arc::new(Activity::new());
    let limits = inner.api.server.limits();
    let service = {
        let router = router(inner.clone());
        let abort = abort.clone();
        let admission = admission.clone();
        let activity = activity.clone();
        let inner = inner.clone();
        tower::service_fn(move |mut req: Request<RequestBody>| {
            let router = router.clone();
            let extensions = req.extensions_mut();
            if let Some(c) = &certificate {
                extensions.insert(c.clone());
            }
            extensions.insert(connection_watches.clone());
            extensions.insert(abort.clone());
            extensions.insert(admission.clone());
            inner.api_h3_requests.fetch_add(1, Ordering::Relaxed);
            let in_flight = activity.begin();
            async move {
                let response = router.oneshot(req).await.unwrap_or_else(|e| match e {});
                Ok::<_, Infallible>(response.map(|body| TrackedBody::new(body, in_flight)))
            }
        })
    };
    let options = ServeOptions::new()
        .max_concurrent_requests(MAX_REQUESTS_PER_CONNECTION as usize)
        .header_read_timeout(limits.header_read_timeout)
        .write_timeout(limits.write_timeout);
    tracing::trace!(%peer, "Engine API HTTP/3 connection");
    let why = tokio::select! {
        lost = admission.lost() => lost.as_str(),
        served = crate::http3::serve_connection_with(conn.clone(), service, options) => {
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "Engine API HTTP/3 connection failed");
            }
            return;
        }
        () = activity.idle_for(limits.idle_timeout) => "idle",
        () = abort.aborted() => "aborted by its handler",
    };
    tracing::debug!(%peer, reason = why, "Engine API HTTP/3 connection closed");
    conn.close(H3_NO_ERROR.into(), why.as_bytes());
}

/// The leaf of the client's verified certificate chain, if it sent one.
fn peer_certificate(conn: &quinn::Connection) -> Option<CertificateDer<'static>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?
        .into_iter()
        .next()
}
