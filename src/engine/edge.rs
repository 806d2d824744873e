//! `token_auth` on published HTTP tunnels (TOKENS.md §5): the engine reads
//! each downstream request (HTTP/1.1 or h2, bounded head size and time),
//! admits it only with a token whose connect scope allows this tunnel and
//! path, and only then opens a stream to the owner and forwards it. A
//! refused request gets 401 (no token, unusable token) or 403 (not
//! allowed) from the engine; nothing reaches the app. An admitted HTTP/1.1
//! `Upgrade` request (WebSocket) is relayed to an HTTP/1.1 application and,
//! when it answers `101`, both upgraded connections are spliced.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use subtle::ConstantTimeEq;
use tokio::io::{AsyncRead, AsyncWrite};

use super::auth::Action;
use super::Inner;

/// Longest request head read before refusing: 64 KiB.
pub(crate) const MAX_HEAD: usize = 64 * 1024;
/// Time allowed for a request head.
pub(crate) const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A short plain-text answer from the engine itself.
pub(crate) fn plain(status: StatusCode, message: &'static str) -> Response<Body> {
    let mut rsp = Response::new(Body::from(message));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::UNAUTHORIZED {
        rsp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"rstream\""),
        );
    }
    rsp
}

/// The request's token: `Authorization: Bearer`, else `?rstream.token=`.
/// Returns it with the request cleaned of it (the app never sees it).
fn take_token<B>(req: &mut Request<B>) -> Option<String> {
    if let Some(value) = req.headers().get(header::AUTHORIZATION) {
        if let Some(token) = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, t)| scheme.eq_ignore_ascii_case("bearer") && !t.trim().is_empty())
            .map(|(_, t)| t.trim().to_owned())
        {
            req.headers_mut().remove(header::AUTHORIZATION);
            return Some(token);
        }
    }
    let query = req.uri().query()?;
    let mut token = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("rstream.token", v)) if token.is_none() => {
                token = Some(
                    percent_encoding::percent_decode_str(v)
                        .decode_utf8_lossy()
                        .into_owned(),
                )
            }
            _ => rest.push(pair),
        }
    }
    let token = token?;
    let path = req.uri().path();
    let pq = if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = pq.parse().ok();
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    Some(token)
}

/// A refusal: the status and the plain-text body.
type Refusal = (StatusCode, &'static str);

const NOT_ALLOWED: Refusal = (StatusCode::FORBIDDEN, "token not allowed for this tunnel\n");

/// Whether `token` may reach `tunnel_id` at `path`: `Err` is the answer.
fn admit(inner: &Inner, tunnel_id: &str, token: &str, path: &str) -> Result<(), Refusal> {
    let config = &inner.config;
    let mut ok = subtle::Choice::from(0);
    for t in &config.tokens {
        ok |= t.as_bytes().ct_eq(token.as_bytes());
    }
    if bool::from(ok) {
        return Ok(());
    }
    if config.apps.is_empty() {
        return Err(NOT_ALLOWED);
    }
    let grant = config
        .apps
        .verify(token, crate::config::jwt::now())
        .map_err(|_| (StatusCode::UNAUTHORIZED, "invalid or expired token\n"))?;
    config
        .apps
        .check_agent(&grant, Action::Connect)
        .map_err(|_| NOT_ALLOWED)?;
    let target = inner
        .state()
        .find_tunnel(tunnel_id)
        .ok_or((StatusCode::BAD_GATEWAY, "tunnel closed\n"))?;
    super::access::check_connect_path(&config.apps, &grant, &target.info, Some(path))
        .map_err(|_| NOT_ALLOWED)
}

/// One admitted request, forwarded on a fresh stream to the owner.
async fn forward(
    inner: &Inner,
    tunnel_id: &str,
    ip: IpAddr,
    h2c: bool,
    mut req: Request<Incoming>,
    upgrades: &Upgrades,
) -> Response<Body> {
    // An upgrade (WebSocket) needs HTTP/1.1 on both sides: h2 downstream
    // uses extended CONNECT, and an h2c application would need it too.
    let upgrade = req.headers().contains_key(header::UPGRADE);
    if upgrade && (h2c || req.version() != http::Version::HTTP_11) {
        return plain(
            StatusCode::NOT_IMPLEMENTED,
            "upgrades through token_auth need HTTP/1.1 downstream and an http/1.1 application\n",
        );
    }
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let Ok((_, upstream)) = super::streams::reach_owner(inner, tunnel_id, ip).await else {
        return plain(
            StatusCode::BAD_GATEWAY,
            "the tunnel's owner did not answer\n",
        );
    };
    let io = TokioIo::new(upstream);
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let result = if h2c {
        let Ok((mut sender, conn)) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await
        else {
            return plain(StatusCode::BAD_GATEWAY, "upstream h2c handshake failed\n");
        };
        tokio::spawn(conn);
        *req.version_mut() = http::Version::HTTP_2;
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        if let Ok(uri) = format!("http://{authority}{pq}").parse() {
            *req.uri_mut() = uri;
        }
        sender.send_request(req).await
    } else {
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(io).await else {
            return plain(StatusCode::BAD_GATEWAY, "upstream handshake failed\n");
        };
        tokio::spawn(conn.with_upgrades());
        *req.version_mut() = http::Version::HTTP_11;
        if !req.headers().contains_key(header::HOST) {
            if let Ok(host) = HeaderValue::from_str(&authority) {
                req.headers_mut().insert(header::HOST, host);
            }
        }
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into());
        if let Ok(uri) = pq.parse() {
            *req.uri_mut() = uri;
        }
        sender.send_request(req).await
    };
    match result {
        Ok(mut rsp) => {
            if let Some(downstream) = downstream_upgrade {
                if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    let upstream = hyper::upgrade::on(&mut rsp);
                    let tunnel_id = tunnel_id.to_owned();
                    // In the engine's task set (it ends with the engine or
                    // when either side closes); `done` tells the downstream
                    // task, which holds the connection permit, that it ended.
                    let (done, ended) = tokio::sync::oneshot::channel::<()>();
                    let _ = upgrades.send(ended);
                    inner.tasks.spawn(async move {
                        let _done = done;
                        match tokio::try_join!(downstream, upstream) {
                            Ok((down, up)) => {
                                super::streams::splice(TokioIo::new(down), TokioIo::new(up)).await
                            }
                            Err(e) => {
                                tracing::debug!(tunnel_id, error = %e, "token_auth upgrade failed")
                            }
                        }
                    });
                }
            }
            rsp.map(Body::new)
        }
        Err(e) => {
            tracing::debug!(tunnel_id, error = %e, "token_auth upstream request failed");
            plain(StatusCode::BAD_GATEWAY, "the upstream request failed\n")
        }
    }
}

/// The token check of a `token_auth` tunnel on one request: the token is
/// taken out of the request (the app never sees it); `Err` is the
/// engine's answer (401 or 403), and the request goes no further.
pub(crate) fn check_token<B>(
    inner: &Inner,
    tunnel_id: &str,
    req: &mut Request<B>,
) -> Result<(), Box<Response<Body>>> {
    let Some(token) = take_token(req) else {
        return Err(Box::new(plain(
            StatusCode::UNAUTHORIZED,
            "this tunnel requires a token: Authorization: Bearer, or ?rstream.token=\n",
        )));
    };
    let path = req.uri().path().to_owned();
    admit(inner, tunnel_id, &token, &path)
        .map_err(|(status, message)| Box::new(plain(status, message)))
}

/// The HTTP server the engine runs on a downstream connection it reads
/// request by request (HTTP/1.1 or h2, as the TLS ALPN says), with the
/// bounds on a request head: [`MAX_HEAD`] bytes, [`HEAD_TIMEOUT`].
pub(crate) fn server() -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEAD as u32);
    builder
}

/// Where `forward` reports a spliced upgrade: a receiver that completes
/// (with an error) when the splice ends.
type Upgrades = tokio::sync::mpsc::UnboundedSender<tokio::sync::oneshot::Receiver<()>>;

/// Serves one downstream connection of a `token_auth` tunnel (and, after
/// an upgrade, waits for the splice, so the connection stays counted).
pub(crate) async fn serve<IO>(inner: Arc<Inner>, tunnel_id: String, io: IO, ip: IpAddr, h2c: bool)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (upgrades, mut spliced) = tokio::sync::mpsc::unbounded_channel();
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let inner = inner.clone();
        let tunnel_id = tunnel_id.clone();
        let upgrades = upgrades.clone();
        async move {
            if let Err(refusal) = check_token(&inner, &tunnel_id, &mut req) {
                return Ok::<_, Infallible>(*refusal);
            }
            Ok(forward(&inner, &tunnel_id, ip, h2c, req, &upgrades).await)
        }
    });
    if let Err(e) = server()
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(error = %e, "token_auth downstream connection ended");
    }
    // The service (and its senders) is gone with the connection: at most
    // one upgrade per HTTP/1.1 connection is pending here.
    while let Some(ended) = spliced.recv().await {
        let _ = ended.await;
    }
}
