//! Tunnel creation (validation of the requested properties), closing, and
//! the published endpoints on `127.0.0.1`.
//!
//! Honoured: `name`, `type` (`bytestream`; `datagram`, with
//! `datagram_guaranteed_delivery` stored and returned, published on UDP:
//! see [`super::datagram`]), `publish`, `protocol` (`http`,
//! `tls`, `tcp`; `dtls` on published datagram tunnels with feature `dtls`,
//! where the engine terminates DTLS with its certificate and relays the
//! plaintext datagrams, `type` defaulting to `datagram`: see
//! `super::dtls`), `labels`, `trusted_ips`, `tls_mode = passthrough`,
//! `tls_min_version` (`1.2`/`1.3`, published `http` tunnels),
//! `http_version` (`http/1.1`, `h2c`; `h2` with `upstream_tls`; `h3` on
//! a published `datagram` tunnel with `protocol = http`, feature `http3`:
//! an HTTPS endpoint, and HTTP/3 on the same port over UDP, forwarding
//! each request over HTTP/3 to the app, see
//! [`super::h3_upstream`]; its edge options are those of `http` tunnels,
//! `upstream_tls` and `tls_mode` are refused with it),
//! `upstream_tls` (published `http` tunnels: see [`super::upstream`]),
//! `token_auth` and `mtls_auth` (published `http` tunnels; `mtls_auth`
//! needs an edge client CA), `hostname` (`localhost` /
//! `127.0.0.1` only), `port` (`tcp` tunnels, and any published tunnel that
//! also asks for `hostname = 127.0.0.1` or `localhost`: how a reconnecting
//! client gets its previous address back), `allow_cross_region_routing`
//! (echoed; there is one region). Everything else that asks for behaviour
//! is refused with `FEATURE_NOT_AVAILABLE`, naming the property: among
//! them `protocol = quic`, private `dtls` tunnels and `upstream_tls` on
//! `dtls` ones (re-originating DTLS to the application).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::events::TunnelInfo;
use super::state::{allowed, TrustedIps};
use super::upstream::UpstreamTls;
use super::{streams, Inner};
use crate::proto::TunnelProperties;
use crate::proto::{self, open_tunnel_rsp, ErrorCode, Message, OpenTunnelReq, OpenTunnelRsp};

/// How long a published `http` endpoint waits for a downstream TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a published endpoint does with a downstream connection.
#[derive(Clone)]
pub(crate) enum EndpointKind {
    /// `tcp`, `tls` (passthrough) or no protocol: splice raw bytes.
    Raw,
    /// `http`: terminate TLS with the engine's certificate, splice plaintext
    /// (or, with `upstream_tls`, TLS again to the application).
    Https(Arc<rustls::ServerConfig>, Option<UpstreamTls>),
    /// `http` with `http_version = "h3"` on a datagram tunnel: terminate
    /// TLS, forward each request over HTTP/3 (see [`super::h3_upstream`]);
    /// the flag is `token_auth`.
    #[cfg(feature = "http3")]
    H3(
        Arc<rustls::ServerConfig>,
        super::h3_upstream::H3Upstream,
        bool,
    ),
}

/// A validated tunnel request.
pub(crate) struct Plan {
    /// The properties to return (id, date, hostname and port still to fill).
    props: TunnelProperties,
    /// `Some` for published tunnels: the kind and the requested port.
    endpoint: Option<(EndpointKind, Option<u16>)>,
    /// `type = "datagram"`: a published one listens on UDP.
    datagram: bool,
    /// `protocol = "dtls"`: the published UDP endpoint terminates DTLS.
    dtls: bool,
    trusted: TrustedIps,
}

fn unavailable(what: impl std::fmt::Display) -> proto::Error {
    proto::Error::new(
        ErrorCode::FeatureNotAvailable,
        format!("the local engine does not support {what}"),
    )
}

fn invalid(message: impl Into<String>) -> proto::Error {
    proto::Error::new(ErrorCode::InvalidRequest, message)
}

fn non_blank(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Validates requested properties against what this engine can do.
pub(crate) fn validate(
    requested: Option<TunnelProperties>,
    tls: &super::certs::ServerConfigs,
) -> Result<Plan, proto::Error> {
    let mut p = requested.unwrap_or_default();
    // Labels are kept for the tunnel's life and shared with events,
    // listings and watch snapshots: the same bounds as `TunnelOptions`
    // (`crate::tunnel::MAX_LABELS`, …), checked first.
    crate::tunnel::check_labels(&p.labels).map_err(invalid)?;

    let protocol = non_blank(&p.protocol).map(str::to_owned);
    let dtls = protocol.as_deref() == Some("dtls");
    let datagram = match non_blank(&p.r#type) {
        // A dtls tunnel without a type is a datagram one (DATAGRAM_QUIC.md §2).
        None => dtls,
        Some("bytestream") => false,
        Some("datagram") => true,
        Some(other) => return Err(invalid(format!("unknown tunnel type {other:?}"))),
    };
    // An HTTP/3 upstream: the application serves HTTP/3 on a datagram
    // tunnel, the engine publishes it as an ordinary HTTPS address.
    let h3 =
        datagram && protocol.as_deref() == Some("http") && non_blank(&p.http_version) == Some("h3");
    match protocol.as_deref() {
        None => {}
        Some("http") if h3 => {}
        Some(other @ ("http" | "tls" | "tcp")) if datagram => {
            return Err(invalid(format!(
                "protocol = {other:?} is not a datagram protocol (datagram tunnels: none, \"dtls\", or \"http\" with http_version = \"h3\")"
            )))
        }
        Some("http" | "tls" | "tcp") => {}
        Some("dtls") if !datagram => {
            return Err(invalid(
                "protocol = \"dtls\" is a datagram protocol (type = \"datagram\")",
            ))
        }
        Some("dtls") if !cfg!(feature = "dtls") => {
            return Err(unavailable(
                "protocol = \"dtls\" in an engine built without feature `dtls`",
            ))
        }
        Some("dtls") => {}
        Some("quic") => {
            return Err(unavailable(
                "protocol = \"quic\" (terminating QUIC and mirroring it to the application); published dtls and plain datagram tunnels are supported",
            ))
        }
        Some(other) => return Err(invalid(format!("unknown protocol {other:?}"))),
    }
    let tcp = protocol.as_deref() == Some("tcp");
    let http = protocol.as_deref() == Some("http");
    if tcp && p.publish == Some(false) {
        return Err(invalid(
            "tcp tunnels are always published (publish = false)",
        ));
    }
    let published = p.publish.unwrap_or(false) || tcp;
    if h3 && !published {
        return Err(invalid(
            "http_version = \"h3\" tunnels are published (publish = true); a private datagram tunnel carries HTTP/3 as it is",
        ));
    }
    if h3 && p.upstream_tls.is_some() {
        return Err(invalid(
            "upstream_tls does not apply to http_version = \"h3\": HTTP/3 to the application is always TLS",
        ));
    }
    // Re-originating TLS needs the engine's HTTP endpoint in the path:
    // published `http` tunnels only.
    let upstream_tls = p.upstream_tls == Some(true);
    if dtls && !published {
        return Err(unavailable(
            "private dtls tunnels (the engine terminates DTLS on published ones; a private datagram tunnel carries DTLS end to end as it is)",
        ));
    }
    if upstream_tls && dtls {
        return Err(unavailable(
            "upstream_tls = true on dtls tunnels (re-originating DTLS to the application); without it the engine terminates DTLS and relays plaintext datagrams",
        ));
    }
    if upstream_tls && !(http && published) {
        return Err(unavailable(
            "upstream_tls = true outside published http tunnels",
        ));
    }

    let http_version = non_blank(&p.http_version).map(str::to_owned);
    match http_version.as_deref() {
        None | Some("http/1.1" | "h2c") => {}
        // h2 is TLS to the application: only with upstream_tls.
        Some("h2") if upstream_tls => {}
        #[cfg(feature = "http3")]
        Some("h3") if h3 => {}
        Some("h3") if h3 => {
            return Err(unavailable(
                "http_version = \"h3\" (an engine built without the http3 feature)",
            ))
        }
        Some("h3") => {
            return Err(invalid(
                "http_version = \"h3\" needs type = \"datagram\" and protocol = \"http\" (ControlChannel::create_datagram_tunnel)",
            ))
        }
        Some(v @ "h2") => {
            return Err(unavailable(format!(
                "upstream http_version = {v:?} (use \"http/1.1\" or \"h2c\", or \"h2\" with upstream_tls)"
            )))
        }
        Some(v) => return Err(invalid(format!("unknown http_version {v:?}"))),
    }
    match non_blank(&p.tls_mode) {
        None => {}
        Some("passthrough") if !http => {}
        Some("passthrough") => {
            return Err(unavailable("tls_mode = \"passthrough\" on http tunnels"))
        }
        Some("terminated") => return Err(unavailable("tls_mode = \"terminated\"")),
        Some(m) => return Err(invalid(format!("unknown tls_mode {m:?}"))),
    }
    if tcp && (p.tls_mode.is_some() || p.http_version.is_some()) {
        return Err(invalid(
            "tcp tunnels take neither tls_mode nor http_version",
        ));
    }
    if p.token_auth == Some(true) && !(http && published) {
        return Err(unavailable(
            "token_auth = true except on published http tunnels (protocol = \"http\", publish = true)",
        ));
    }
    if p.token_auth == Some(true) && p.upstream_tls == Some(true) {
        // The engine reads each request to check its token; it does not
        // re-originate TLS after that (docs/ACCESS_CONTROL.md).
        return Err(unavailable("token_auth together with upstream_tls"));
    }
    let mtls = p.mtls_auth == Some(true);
    if mtls && !(http && published) {
        // Only published http endpoints are TLS the engine terminates
        // (tls tunnels are passthrough, tcp is raw).
        return Err(unavailable(
            "mtls_auth = true except on published http tunnels (protocol = \"http\", publish = true): the engine terminates TLS only there",
        ));
    }
    if mtls && p.token_auth == Some(true) {
        // Hosted engines admit either proof; the local engine keeps one.
        return Err(unavailable(
            "mtls_auth together with token_auth (choose one)",
        ));
    }
    if mtls && tls.mtls_https(false, false).is_none() {
        return Err(unavailable(
            "mtls_auth = true without an edge client CA: start the engine with --edge-client-ca FILE (LocalEngineBuilder::edge_client_ca)",
        ));
    }
    let flags = [
        ("rstream_auth", p.rstream_auth),
        ("challenge_mode", p.challenge_mode),
        ("http_use_tls", p.http_use_tls),
        // Honoured (stored and returned) on datagram tunnels: over TLS
        // every channel is framed, reliable and ordered anyway.
        (
            "datagram_guaranteed_delivery",
            p.datagram_guaranteed_delivery.filter(|_| !datagram),
        ),
    ];
    if let Some((name, _)) = flags.iter().find(|(_, v)| *v == Some(true)) {
        // Edge authentication needs the hosted edge (login, challenge and
        // credential services); say so instead of a bare "unsupported".
        let why = match *name {
            "rstream_auth" => {
                ": the rstream login needs the hosted rstream service (docs/ACCESS_CONTROL.md)"
            }
            "challenge_mode" => {
                ": the challenge page needs the hosted rstream service (docs/ACCESS_CONTROL.md)"
            }
            _ => "",
        };
        return Err(unavailable(format!("{name} = true{why}")));
    }
    if !p.geoip.is_empty() {
        return Err(unavailable(
            "geoip filtering: there is no GeoIP database on a local engine (docs/ACCESS_CONTROL.md)",
        ));
    }
    if non_blank(&p.mtls_cacert_pem).is_some() {
        return Err(unavailable("mtls_cacert_pem"));
    }
    if !p.tls_alpns.is_empty() {
        return Err(unavailable("tls_alpns"));
    }
    if !p.tls_ciphers.is_empty() {
        return Err(unavailable("tls_ciphers"));
    }
    let tls13_only = match non_blank(&p.tls_min_version) {
        None => false,
        Some(v) if !(http && published) => {
            return Err(unavailable(format!(
                "tls_min_version = {v:?} outside published http tunnels"
            )))
        }
        Some(v) => parse_tls_version(v).ok_or_else(|| {
            invalid(format!(
                "unknown tls_min_version {v:?} (use \"1.2\" or \"1.3\")"
            ))
        })?,
    };
    match non_blank(&p.hostname) {
        None | Some("localhost" | "127.0.0.1") => {}
        Some(h) => {
            return Err(unavailable(format!(
                "custom hostnames (hostname = {h:?}); published tunnels get 127.0.0.1"
            )))
        }
    }
    // A published tunnel that asks back the loopback hostname this engine
    // assigns may ask for its port too, whatever its protocol: that is how
    // a client re-creating its tunnels after a reconnect (or an engine
    // restart) keeps their addresses.
    let loopback_host = matches!(non_blank(&p.hostname), Some("localhost" | "127.0.0.1"));
    let port = match p.port {
        None => None,
        Some(_) if !(tcp || (published && loopback_host)) => {
            return Err(invalid("port is only allowed on tcp tunnels"))
        }
        Some(n) => Some(
            u16::try_from(n)
                .ok()
                .filter(|n| *n != 0)
                .ok_or_else(|| invalid(format!("port {n} is outside 1-65535")))?,
        ),
    };
    let mut trusted = Vec::with_capacity(p.trusted_ips.len());
    for entry in &p.trusted_ips {
        trusted.push(parse_trusted(entry).ok_or_else(|| {
            invalid(format!(
                "trusted_ips: {entry:?} is not an IP address or CIDR block"
            ))
        })?);
    }
    if let Some(name) = &p.name {
        if name.trim().is_empty() {
            p.name = None;
        } else if name.len() > 255 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(format!(
                "invalid tunnel name {name:?} (at most 255 characters, no spaces or control characters)"
            )));
        }
    }

    // ALPN h2 downstream when the application speaks HTTP/2.
    let h2 = matches!(http_version.as_deref(), Some("h2c" | "h2"));
    let upstream = if upstream_tls {
        let upstream = UpstreamTls::new(h2, p.name.as_deref())
            .map_err(|e| proto::Error::new(ErrorCode::Internal, format!("upstream TLS: {e}")))?;
        Some(upstream)
    } else {
        None
    };
    #[cfg(feature = "http3")]
    let h3_upstream = if h3 {
        let client = super::h3_upstream::H3Upstream::new(p.name.as_deref())
            .map_err(|e| proto::Error::new(ErrorCode::Internal, format!("HTTP/3 upstream: {e}")))?;
        Some(client)
    } else {
        None
    };
    let endpoint = published.then(|| {
        // Downstream clients of an HTTP/3 upstream speak h2 or HTTP/1.1
        // on TCP (h3 on UDP: `h3_downstream`, same certificate).
        let h2 = h2 || h3;
        let config = match tls.mtls_https(h2, tls13_only) {
            Some(config) if mtls => config,
            _ => tls.https(h2, tls13_only),
        };
        #[cfg(feature = "http3")]
        if let Some(client) = h3_upstream {
            let token_auth = p.token_auth == Some(true);
            return (EndpointKind::H3(config, client, token_auth), port);
        }
        let kind = if http {
            EndpointKind::Https(config, upstream)
        } else {
            EndpointKind::Raw
        };
        (kind, port)
    });
    p.id = None;
    p.creation_date = None;
    p.host = None;
    p.r#type = Some(if datagram { "datagram" } else { "bytestream" }.into());
    p.publish = Some(published);
    p.hostname = None;
    p.port = None;
    Ok(Plan {
        props: p,
        endpoint,
        datagram,
        dtls,
        trusted: trusted.into(),
    })
}

fn parse_tls_version(v: &str) -> Option<bool> {
    let v = v.to_ascii_lowercase();
    let v = v.trim_start_matches("tls").trim_start_matches('v');
    let v = v.trim_start_matches(['_', ' ']);
    match v {
        "1.2" | "1_2" | "12" => Some(false),
        "1.3" | "1_3" | "13" => Some(true),
        _ => None,
    }
}

fn parse_trusted(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Handles an `OpenTunnelReq` from `client_id`.
pub(crate) async fn open(
    inner: &Arc<Inner>,
    client_id: &str,
    owner: &mpsc::Sender<Message>,
    req: OpenTunnelReq,
    grant: Option<&super::auth::Grant>,
) -> OpenTunnelRsp {
    let mut requested = req.tunnel_properties;
    let checked = match grant {
        // The token's create scope, before anything else: it may also
        // force omitted properties (TOKENS.md §4.3).
        Some(grant) => super::access::check_create(&inner.config.apps, grant, &mut requested),
        None => Ok(()),
    };
    let created = match checked {
        Ok(()) => create(inner, client_id, owner, requested).await,
        Err(e) => Err(e),
    };
    let payload = match created {
        Ok(props) => open_tunnel_rsp::Payload::TunnelProperties(props),
        Err(e) => {
            tracing::debug!(client_id, code = e.code, message = ?e.message, "tunnel refused");
            open_tunnel_rsp::Payload::Error(e)
        }
    };
    OpenTunnelRsp {
        request_id: req.request_id,
        payload: Some(payload),
    }
}

async fn create(
    inner: &Arc<Inner>,
    client_id: &str,
    owner: &mpsc::Sender<Message>,
    requested: Option<TunnelProperties>,
) -> Result<TunnelProperties, proto::Error> {
    let plan = validate(requested, &inner.tls)?;
    let max = inner.config.max_tunnels_per_client;
    inner
        .state()
        .check_new_tunnel(client_id, plan.props.name.as_deref(), max)?;

    let id = hex::encode(rand::random::<[u8; 8]>());
    let mut props = plan.props;
    props.id = Some(id.clone());
    let created_at = SystemTime::now();
    props.creation_date = Some(created_at.into());
    let endpoint = match plan.endpoint {
        // Published on UDP (an HTTP/3 upstream is published on TCP).
        Some((EndpointKind::Raw, port)) if plan.datagram => {
            let socket = super::datagram::bind(port).await?;
            let port = socket
                .local_addr()
                .map_err(|e| proto::Error::new(ErrorCode::Internal, e.to_string()))?
                .port();
            props.hostname = Some("127.0.0.1".into());
            props.port = Some(u32::from(port));
            Some(super::datagram::spawn_endpoint(
                inner.clone(),
                id.clone(),
                socket,
                plan.trusted.clone(),
                plan.dtls,
            ))
        }
        Some((kind, port)) => {
            let listener = bind(port).await?;
            let port = listener
                .local_addr()
                .map_err(|e| proto::Error::new(ErrorCode::Internal, e.to_string()))?
                .port();
            props.hostname = Some("127.0.0.1".into());
            props.port = Some(u32::from(port));
            #[cfg(feature = "http3")]
            let also = h3_downstream(inner, &id, &kind, port, &plan.trusted)?;
            #[cfg(not(feature = "http3"))]
            let also = None;
            Some(spawn_endpoint(
                inner.clone(),
                id.clone(),
                listener,
                kind,
                plan.trusted.clone(),
                also,
            ))
        }
        None => None,
    };
    let info = TunnelInfo {
        id,
        client_id: client_id.to_owned(),
        properties: Arc::new(props.clone()),
        created_at,
    };
    inner
        .state()
        .insert_tunnel(info, owner.clone(), plan.trusted, endpoint, max)?;
    tracing::debug!(client_id, tunnel = ?props.id, port = ?props.port, "tunnel created");
    Ok(props)
}

/// Binds a published endpoint on 127.0.0.1 (a requested port or any).
/// A port in use is `CAPACITY_EXHAUSTED` (retryable once it is released).
async fn bind(port: Option<u16>) -> Result<TcpListener, proto::Error> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0)));
    TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(addr, e))
}

/// The answer to a failed bind of a published endpoint on `addr`.
fn bind_error(addr: SocketAddr, e: std::io::Error) -> proto::Error {
    match e.kind() {
        std::io::ErrorKind::AddrInUse => proto::Error::new(
            ErrorCode::CapacityExhausted,
            format!("port {} is already in use", addr.port()),
        ),
        std::io::ErrorKind::PermissionDenied => invalid(format!(
            "port {} cannot be bound by the engine",
            addr.port()
        )),
        _ => proto::Error::new(
            ErrorCode::CapacityExhausted,
            format!("cannot listen on {addr}: {e}"),
        ),
    }
}

/// The HTTP/3 downstream of an `h3` tunnel's endpoint on TCP `port`
/// (see [`super::h3_upstream::downstream`]): bound on UDP `port` now, so
/// that a port taken on UDP fails the creation as one taken on TCP does;
/// `None` for other kinds.
#[cfg(feature = "http3")]
fn h3_downstream(
    inner: &Arc<Inner>,
    tunnel_id: &str,
    kind: &EndpointKind,
    port: u16,
    trusted: &TrustedIps,
) -> Result<Option<Also>, proto::Error> {
    use super::h3_upstream::downstream;
    let EndpointKind::H3(config, upstream, token_auth) = kind else {
        return Ok(None);
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let socket = std::net::UdpSocket::bind(addr).map_err(|e| bind_error(addr, e))?;
    let endpoint = downstream::endpoint(config, socket)
        .map_err(|e| proto::Error::new(ErrorCode::Internal, e.to_string()))?;
    let shared = downstream::Downstream {
        inner: inner.clone(),
        tunnel_id: tunnel_id.to_owned(),
        upstream: upstream.clone(),
        token_auth: *token_auth,
        trusted: trusted.clone(),
    };
    Ok(Some(Box::pin(downstream::run(shared, endpoint))))
}

/// What a published endpoint's task runs beside its TCP accept loop (the
/// HTTP/3 downstream of an `h3` tunnel), ending with it.
type Also = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Closes `tunnel_id` if `client_id` owns it, and waits until its port is free.
pub(crate) async fn close(inner: &Inner, client_id: &str, tunnel_id: &str) {
    let endpoint = inner.state().remove_tunnel(client_id, tunnel_id);
    if let Some(Some(handle)) = endpoint {
        let _ = handle.await;
    }
}

/// The task of a published TCP endpoint: its accept loop, and `also`
/// beside it. Aborting it closes both.
fn spawn_endpoint(
    inner: Arc<Inner>,
    tunnel_id: String,
    listener: TcpListener,
    kind: EndpointKind,
    trusted: TrustedIps,
    also: Option<Also>,
) -> JoinHandle<()> {
    let accept = accept_loop(inner, tunnel_id, listener, kind, trusted);
    tokio::spawn(async move {
        match also {
            Some(also) => {
                tokio::join!(accept, also);
            }
            None => accept.await,
        }
    })
}

/// Accepts downstream TCP connections, each in a task of its own.
async fn accept_loop(
    inner: Arc<Inner>,
    tunnel_id: String,
    listener: TcpListener,
    kind: EndpointKind,
    trusted: TrustedIps,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(tunnel_id, error = %e, "published endpoint accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ip = peer.ip().to_canonical();
        if !allowed(&trusted, ip) {
            tracing::debug!(tunnel_id, %peer, "downstream refused by trusted_ips");
            continue;
        }
        // Beyond `max_published_connections` (all endpoints together):
        // closed at once, the owner never hears of it.
        let Some(permit) = inner.published_connections.admit(peer) else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // A downstream that vanished without a FIN or RST is found
        // and its permit given back.
        let _ = super::listener::set_keepalive(&tcp);
        let task = downstream(inner.clone(), tunnel_id.clone(), tcp, ip, kind.clone());
        inner.tasks.spawn(async move {
            task.await;
            drop(permit);
        });
    }
}

async fn downstream(
    inner: Arc<Inner>,
    tunnel_id: String,
    tcp: TcpStream,
    ip: IpAddr,
    kind: EndpointKind,
) {
    match kind {
        #[cfg(feature = "http3")]
        EndpointKind::H3(config, client, token_auth) => {
            let port = tcp.local_addr().ok().map(|a| a.port());
            if let Some(tls) = accept_tls(&tunnel_id, config, tcp).await {
                super::h3_upstream::serve(inner, tunnel_id, tls, ip, port, client, token_auth)
                    .await;
            }
        }
        EndpointKind::Raw => {
            if let Ok((_, upstream)) = reach(&inner, &tunnel_id, ip).await {
                streams::splice(tcp, upstream).await;
            }
        }
        EndpointKind::Https(config, upstream_tls) => {
            let Some(tls) = accept_tls(&tunnel_id, config, tcp).await else {
                return;
            };
            // token_auth: every request is checked by the engine first
            // (creation refuses token_auth together with upstream_tls).
            let token_auth = inner.state().find_tunnel(&tunnel_id).map(|t| {
                let p = &t.info.properties;
                (
                    p.token_auth == Some(true),
                    p.http_version.as_deref() == Some("h2c"),
                )
            });
            if let Some((true, h2c)) = token_auth {
                super::edge::serve(inner, tunnel_id, tls, ip, h2c).await;
                return;
            }
            let Ok((_, upstream)) = reach(&inner, &tunnel_id, ip).await else {
                return;
            };
            match upstream_tls {
                None => streams::splice(tls, upstream).await,
                Some(upstream_tls) => {
                    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                    match upstream_tls.connect(upstream, alpn.as_deref()).await {
                        Ok(upstream) => streams::splice(tls, upstream).await,
                        Err(e) => {
                            tracing::debug!(tunnel_id, error = %e, "upstream TLS handshake failed");
                        }
                    }
                }
            }
        }
    }
}

/// The downstream TLS handshake of a published `http` endpoint, bounded
/// by [`HANDSHAKE_TIMEOUT`]; `None` when it failed (logged).
async fn accept_tls(
    tunnel_id: &str,
    config: Arc<rustls::ServerConfig>,
    tcp: TcpStream,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    let accept = TlsAcceptor::from(config).accept(tcp);
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(tunnel_id, error = %e, "downstream TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(tunnel_id, "downstream TLS handshake timed out");
            None
        }
    }
}

async fn reach(
    inner: &Inner,
    tunnel_id: &str,
    ip: IpAddr,
) -> Result<(String, streams::ServerTls), proto::Error> {
    streams::reach_owner(inner, tunnel_id, ip)
        .await
        .inspect_err(|e| {
            tracing::debug!(tunnel_id, code = e.code, message = ?e.message, "downstream abandoned");
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_versions_and_cidrs() {
        assert_eq!(parse_tls_version("1.2"), Some(false));
        assert_eq!(parse_tls_version("TLSv1.3"), Some(true));
        assert_eq!(parse_tls_version("tls1_3"), Some(true));
        assert_eq!(parse_tls_version("1.1"), None);
        assert!(parse_trusted("10.0.0.0/8").is_some());
        assert!(parse_trusted(" 127.0.0.1 ").is_some());
        assert!(parse_trusted("::1").is_some());
        assert!(parse_trusted("nope").is_none());
        assert!(parse_trusted("10.0.0.0/33").is_none());
    }

    /// `type = datagram, protocol = http, http_version = h3`: accepted
    /// (published on TCP) with feature `http3`, `FEATURE_NOT_AVAILABLE`
    /// without; and the combinations that make no sense are refused.
    #[test]
    fn h3_upstream_is_validated() {
        let dir = std::env::temp_dir().join(format!(
            "rstream-engine-h3-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let tls = super::super::certs::EngineTls::load_or_create(&dir)
            .unwrap()
            .server_configs(None, None)
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let h3 = || TunnelProperties {
            r#type: Some("datagram".into()),
            protocol: Some("http".into()),
            http_version: Some("h3".into()),
            publish: Some(true),
            ..Default::default()
        };
        let plan = validate(Some(h3()), &tls);
        #[cfg(feature = "http3")]
        {
            let plan = plan.unwrap_or_else(|e| panic!("{:?}", e.message));
            assert!(matches!(plan.endpoint, Some((EndpointKind::H3(..), None))));
            assert_eq!(plan.props.r#type.as_deref(), Some("datagram"));
        }
        #[cfg(not(feature = "http3"))]
        assert_eq!(
            plan.err().map(|e| e.code),
            Some(ErrorCode::FeatureNotAvailable as i32)
        );
        let refused = [
            TunnelProperties {
                publish: Some(false),
                ..h3()
            },
            TunnelProperties {
                upstream_tls: Some(true),
                ..h3()
            },
            TunnelProperties {
                r#type: Some("bytestream".into()),
                ..h3()
            },
            TunnelProperties {
                http_version: Some("h2c".into()),
                ..h3()
            },
        ];
        for props in refused {
            let e = validate(Some(props), &tls).err().expect("refused");
            assert_eq!(e.code, ErrorCode::InvalidRequest as i32, "{:?}", e.message);
        }
    }
}
