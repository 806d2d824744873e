//! Published tunnels with an HTTP/3 upstream (`type = "datagram"`,
//! `protocol = "http"`, `http_version = "h3"`; DATAGRAM_QUIC.md §3): the
//! engine terminates the downstream TLS (its certificate, ALPN `h2` and
//! `http/1.1`), reads each request with hyper, and forwards it over
//! HTTP/3 to the application, which serves HTTP/3 on its datagram tunnel
//! (`rstream::http3::serve`). Downstream clients may also speak HTTP/3,
//! on the same port over UDP ([`downstream`]); their requests go through
//! the same forwarding ([`Link::answer`]). HTTP/1.1 and h2 responses
//! advertise it with `alt-svc` (unless the application set its own).
//!
//! One downstream connection has at most one HTTP/3 connection to the
//! application ([`connect`]), made at its first request and shared by
//! the next ones (h2 downstream requests run on it concurrently); it ends
//! with the downstream connection, whose published-connection permit it
//! rides on. (Sharing one connection per tunnel would save a handshake
//! per downstream connection: a possible later optimisation.)
//!
//! Request and response bodies stream both ways (QUIC flow control pushes
//! back); heads are bounded (64 KiB each way, a downstream head within
//! 10 s); the QUIC handshake within 10 s; the response head within
//! [`RESPONSE_HEAD_TIMEOUT`] (else `504`). An application that cannot be
//! reached, or fails the handshake, is a `502` with a short plain-text
//! body. Hop-by-hop headers are dropped; the downstream `Host` (or h2
//! `:authority`) becomes the HTTP/3 `:authority`. Upgrades (WebSocket)
//! and `CONNECT` are answered `501`: relaying them would need extended
//! CONNECT on the HTTP/3 side. `token_auth` is checked per request as on
//! other published `http` tunnels ([`super::edge::check_token`]).

mod body;
mod connect;
pub(crate) mod downstream;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::edge::{check_token, plain, server};
use super::Inner;
pub(crate) use connect::H3Upstream;

/// How long the application may take to answer a request's head (after
/// its head was sent); a `504` then.
pub(crate) const RESPONSE_HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// What one downstream connection shares between its requests.
struct Link {
    inner: Arc<Inner>,
    tunnel_id: String,
    ip: IpAddr,
    upstream: H3Upstream,
    /// The HTTP/3 connection, made on first use. Held across a handshake
    /// so that concurrent first requests share one connection.
    conn: tokio::sync::Mutex<Option<connect::Conn>>,
}

impl Link {
    /// The link of a new downstream connection from `ip`: no HTTP/3
    /// connection to the application yet.
    fn new(inner: Arc<Inner>, tunnel_id: String, ip: IpAddr, upstream: H3Upstream) -> Link {
        Link {
            inner,
            tunnel_id,
            ip,
            upstream,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// One downstream request: `token_auth`'s check (the engine answers
    /// a refusal), then [`forward`](Self::forward).
    async fn answer<B>(&self, mut req: Request<B>, token_auth: bool) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    {
        if token_auth {
            if let Err(refusal) = check_token(&self.inner, &self.tunnel_id, &mut req) {
                return *refusal;
            }
        }
        self.forward(req).await
    }

    /// A request handle on the live connection, or on a new one.
    async fn sender(&self) -> Option<h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>> {
        let mut conn = self.conn.lock().await;
        if let Some(live) = conn.as_ref().filter(|c| c.usable()) {
            return Some(live.sender());
        }
        *conn = None;
        match connect::connect(&self.inner, &self.tunnel_id, self.ip, &self.upstream).await {
            Ok(new) => {
                let send = new.sender();
                *conn = Some(new);
                Some(send)
            }
            Err(why) => {
                tracing::debug!(
                    tunnel_id = self.tunnel_id,
                    why,
                    "HTTP/3 upstream unreachable"
                );
                None
            }
        }
    }

    /// Forwards one request and returns the application's answer (or the
    /// engine's, when it cannot).
    /// The request body is hyper's (HTTP/1.1, h2 downstreams) or the
    /// HTTP/3 adapter's ([`downstream`]): the same forwarding for all.
    async fn forward<B>(&self, req: Request<B>) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    {
        if req.method() == Method::CONNECT || req.headers().contains_key(header::UPGRADE) {
            return plain(
                StatusCode::NOT_IMPLEMENTED,
                "upgrades (WebSocket) and CONNECT are not relayed to an HTTP/3 application\n",
            );
        }
        let (parts, body) = req.into_parts();
        let version = parts.version;
        let Some(head) = upstream_head(&parts) else {
            return plain(StatusCode::BAD_REQUEST, "a request without a usable host\n");
        };
        let Some(mut send) = self.sender().await else {
            return plain(
                StatusCode::BAD_GATEWAY,
                "the application's HTTP/3 server could not be reached\n",
            );
        };
        let exchange = async {
            let stream = send.send_request(head).await?;
            let (tx, mut rx) = stream.split();
            let upload = body::upload(body, tx);
            let response = rx.recv_response().await?;
            Ok::<_, h3::error::StreamError>((response, rx, upload))
        };
        match tokio::time::timeout(RESPONSE_HEAD_TIMEOUT, exchange).await {
            Ok(Ok((response, rx, upload))) => {
                let (mut parts, ()) = response.into_parts();
                // hyper's HTTP/1.1 server writes only 1.x (and takes 2);
                // the downstream request's version is the one to answer in.
                parts.version = version;
                drop_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Body::new(body::response_body(rx, upload)))
            }
            Ok(Err(e)) => {
                tracing::debug!(tunnel_id = self.tunnel_id, error = %e, "HTTP/3 upstream request failed");
                plain(
                    StatusCode::BAD_GATEWAY,
                    "the request to the application's HTTP/3 server failed\n",
                )
            }
            Err(_) => plain(
                StatusCode::GATEWAY_TIMEOUT,
                "the application's HTTP/3 server did not answer in time\n",
            ),
        }
    }
}

/// The HTTP/3 request head for a downstream request: `https`, the
/// downstream `Host` (HTTP/1.1) or `:authority` (h2) as `:authority`, the
/// path and query, and the end-to-end headers. `None` without an
/// authority that makes a URI.
fn upstream_head(parts: &http::request::Parts) -> Option<Request<()>> {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: http::Uri = format!("https://{authority}{pq}").parse().ok()?;
    let mut head = Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .version(http::Version::HTTP_3)
        .body(())
        .ok()?;
    let mut headers = parts.headers.clone();
    // `:authority` carries it (RFC 9114 §4.3.1).
    headers.remove(header::HOST);
    drop_hop_by_hop(&mut headers);
    *head.headers_mut() = headers;
    Some(head)
}

/// Removes the connection-specific headers, which HTTP/3 forbids (RFC
/// 9114 §4.2) and which describe one hop only: those `Connection` names,
/// and the standard ones (`TE` is kept when it is just `trailers`).
fn drop_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::TRAILER,
    ] {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_trailers {
        headers.remove(header::TE);
    }
}

/// The `alt-svc` value that advertises the tunnel's HTTP/3 endpoint
/// ([`downstream`], UDP on the same port as the TCP one) to its HTTP/1.1
/// and h2 clients; one minute, as the endpoint lives with the tunnel.
fn alt_svc(port: Option<u16>) -> Option<HeaderValue> {
    let port = port?;
    HeaderValue::from_str(&format!("h3=\":{port}\"; ma=60")).ok()
}

/// Serves one downstream connection of an HTTP/3-upstream tunnel (its
/// TLS already terminated, on TCP port `port`, `None` if unknown: no
/// `alt-svc` then) until it ends.
pub(crate) async fn serve<IO>(
    inner: Arc<Inner>,
    tunnel_id: String,
    io: IO,
    ip: IpAddr,
    port: Option<u16>,
    upstream: H3Upstream,
    token_auth: bool,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let link = Arc::new(Link::new(inner, tunnel_id, ip, upstream));
    let alt_svc = alt_svc(port);
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let link = link.clone();
        let alt_svc = alt_svc.clone();
        async move {
            let mut rsp = link.answer(req, token_auth).await;
            // The application's own alt-svc, if any, stands.
            if let Some(alt_svc) = alt_svc {
                rsp.headers_mut().entry(header::ALT_SVC).or_insert(alt_svc);
            }
            Ok::<_, Infallible>(rsp)
        }
    });
    if let Err(e) = server().serve_connection(TokioIo::new(io), service).await {
        tracing::debug!(error = %e, "HTTP/3-upstream downstream connection ended");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_keep_end_to_end_headers_only() {
        let req = Request::get("/a/b?c=d")
            .header(header::HOST, "127.0.0.1:4433")
            .header(header::CONNECTION, "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("keep-alive", "timeout=5")
            .header(header::TE, "gzip")
            .header("x-end", "2")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let head = upstream_head(&parts).unwrap();
        assert_eq!(head.uri(), "https://127.0.0.1:4433/a/b?c=d");
        let h = head.headers();
        assert_eq!(h.get("x-end").unwrap(), "2");
        for gone in ["host", "connection", "x-hop", "keep-alive", "te"] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        // h2 downstream: the URI carries the authority.
        let req = Request::post("https://localhost:9/x")
            .header(header::TE, "trailers")
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let head = upstream_head(&parts).unwrap();
        assert_eq!(head.uri(), "https://localhost:9/x");
        assert_eq!(head.method(), Method::POST);
        assert_eq!(head.headers().get(header::TE).unwrap(), "trailers");
    }
}
