//! Control channels: the handshake (token, protocol version, liveness), then
//! one loop per channel that is its single writer: answers requests and
//! heartbeats, relays `ProxyConnReq`s from stream waiters, and enforces the
//! liveness timeout. Losing the channel deletes the client's tunnels.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use subtle::ConstantTimeEq;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::admission::Admission;
use super::auth::Grant;
use super::events::ClientInfo;
use super::streams::ServerTls;
use super::tasks::AbortOnDrop;
use super::{certs, tunnels, Config, Inner};
use crate::proto::{
    self, message::Payload, open_control_channel_rsp, read_frame, write_frame,
    CloseControlChannelRsp, CloseTunnelRsp, ControlChannelLiveness, ErrorCode, Heartbeat, Message,
    OpenControlChannelReq, OpenControlChannelRsp, ServerDetails,
};

/// Frames queued for a control channel by other tasks (`ProxyConnReq`s).
const OUTBOX: usize = 256;
/// A control-channel write that takes longer than this drops the client.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Heartbeat intervals a client may propose (PROTOCOL.md §5).
const INTERVAL_MS: std::ops::RangeInclusive<u32> = 1_000..=300_000;

fn error(code: ErrorCode, message: impl Into<String>) -> proto::Error {
    proto::Error::new(code, message)
}

/// Checks an agent token against the configured static ones (constant
/// time), else as an app token of a registered application.
pub(crate) fn check_token(
    config: &Config,
    token: Option<&str>,
    action: super::auth::Action,
) -> Result<Option<Arc<Grant>>, proto::Error> {
    if config.tokens.is_empty() && config.apps.is_empty() {
        return Ok(None);
    }
    let Some(token) = token else {
        return Err(error(ErrorCode::Unauthorized, "an agent token is required"));
    };
    let mut ok = subtle::Choice::from(0);
    for t in &config.tokens {
        ok |= t.as_bytes().ct_eq(token.as_bytes());
    }
    if bool::from(ok) {
        return Ok(None);
    }
    if config.apps.is_empty() {
        return Err(error(ErrorCode::Unauthorized, "invalid agent token"));
    }
    let grant = config
        .apps
        .verify(token, crate::config::jwt::now())
        .map_err(|refusal| error(ErrorCode::Unauthorized, refusal.0))?;
    config
        .apps
        .check_agent(&grant, action)
        .map_err(|refusal| error(ErrorCode::Unauthorized, refusal.0))?;
    Ok(Some(grant))
}

/// Checks `client_details.protocol_version` (`x.y.z`, major 1).
fn check_protocol_version(version: Option<&str>) -> Result<(), proto::Error> {
    let Some(version) = version else {
        return Err(error(
            ErrorCode::ProtocolVersionMissing,
            "client_details.protocol_version is required",
        ));
    };
    let parts: Vec<&str> = version.trim().split('.').collect();
    let numeric = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()));
    if !numeric {
        return Err(error(
            ErrorCode::ProtocolVersionInvalid,
            format!("protocol_version {version:?} is not x.y.z"),
        ));
    }
    if parts[0].parse::<u32>() != Ok(1) {
        return Err(error(
            ErrorCode::ProtocolVersionIncompatible,
            format!(
                "protocol_version {version:?} is not compatible with {}",
                proto::PROTOCOL_VERSION
            ),
        ));
    }
    Ok(())
}

/// Authenticates an agent (`OpenControlChannelReq`, `StreamReq`): by its
/// client certificate when it presented one (`has_certificate`: verified
/// against the client CA during the handshake), else by its token.
///
/// A certificate and a token together are refused (`UNAUTHORIZED`), as
/// PROTOCOL.md §1 makes them mutually exclusive (and the SDKs refuse the
/// combination client-side). With `require_client_certificate`, no
/// certificate means `UNAUTHORIZED` (the handshake already refuses it).
pub(crate) fn authenticate(
    config: &Config,
    token: Option<&str>,
    has_certificate: bool,
    action: super::auth::Action,
) -> Result<Option<Arc<Grant>>, proto::Error> {
    if has_certificate {
        return match token {
            None => Ok(None),
            Some(_) => Err(error(
                ErrorCode::Unauthorized,
                "a client certificate and an agent token are mutually exclusive",
            )),
        };
    }
    if config.require_client_certificate {
        return Err(error(
            ErrorCode::Unauthorized,
            "a client certificate is required",
        ));
    }
    check_token(config, token, action)
}

/// The verified client certificate of an engine connection, if any.
pub(crate) fn peer_certificate(tls: &ServerTls) -> Option<&CertificateDer<'static>> {
    tls.peer_certificates()?.first()
}

/// What a control channel negotiated: the liveness to answer, and the
/// grant of its app token (if it used one).
type Negotiated = (Option<ControlChannelLiveness>, Option<Arc<Grant>>);

/// Validates an `OpenControlChannelReq`; returns the liveness to answer.
fn negotiate(
    config: &Config,
    req: &OpenControlChannelReq,
    has_certificate: bool,
) -> Result<Negotiated, proto::Error> {
    let details = req.client_details.as_ref();
    let grant = authenticate(
        config,
        details.and_then(|d| d.token.as_deref()),
        has_certificate,
        super::auth::Action::Create,
    )?;
    check_protocol_version(details.and_then(|d| d.protocol_version.as_deref()))?;
    let Some(proposed) = req.liveness else {
        return Ok((None, grant));
    };
    let interval = proposed.heartbeat_interval_ms;
    if !INTERVAL_MS.contains(&interval) {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!("heartbeat_interval_ms {interval} is outside 1000-300000"),
        ));
    }
    let timeout = config.liveness_timeout_for(Duration::from_millis(u64::from(interval)));
    let liveness = ControlChannelLiveness {
        heartbeat_interval_ms: interval,
        // At most 900 000 ms: fits.
        heartbeat_timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(900_000),
    };
    Ok((Some(liveness), grant))
}

/// Moves an authenticated connection under `max_connections`, or the
/// error to answer when the engine holds that many already.
pub(crate) fn establish(admission: &Admission) -> Result<(), proto::Error> {
    admission.establish().map_err(|_| {
        error(
            ErrorCode::CapacityExhausted,
            "the engine holds its maximum of established connections (max_connections)",
        )
    })
}

/// Serves one control channel until it closes. Once the request
/// authenticated, the connection is established (a permit under
/// `max_connections`); without one free, it is refused with
/// `CAPACITY_EXHAUSTED`.
pub(crate) async fn serve(
    inner: Arc<Inner>,
    mut tls: ServerTls,
    peer: SocketAddr,
    req: OpenControlChannelReq,
    admission: Admission,
) {
    let certificate = peer_certificate(&tls).map(certs::client_identity);
    let negotiated = negotiate(&inner.config, &req, certificate.is_some())
        .and_then(|liveness| establish(&admission).map(|()| liveness));
    let (liveness, grant) = match negotiated {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!(%peer, code = e.code, message = ?e.message, "control channel refused");
            let rsp = OpenControlChannelRsp {
                payload: Some(open_control_channel_rsp::Payload::Error(e)),
            };
            let msg = Message::new(Payload::OpenControlChannelRsp(rsp));
            if write(&mut tls, &msg).await.is_ok() {
                super::streams::close(tls).await;
            }
            return;
        }
    };
    let client_id = uuid::Uuid::new_v4().to_string();
    let rsp = OpenControlChannelRsp {
        payload: Some(open_control_channel_rsp::Payload::Ok(
            open_control_channel_rsp::Ok {
                client_id: client_id.clone(),
                server_details: Some(ServerDetails {
                    agent: Some("rstream-local-engine".into()),
                    channel: Some("local".into()),
                    version: Some(env!("CARGO_PKG_VERSION").into()),
                    ..Default::default()
                }),
                liveness,
            },
        )),
    };
    if write(&mut tls, &Message::new(Payload::OpenControlChannelRsp(rsp)))
        .await
        .is_err()
    {
        return;
    }

    let mut details = req.client_details.unwrap_or_default();
    details.token = None;
    let (outbox, outbox_rx) = mpsc::channel(OUTBOX);
    let (identity, identity_name) = certificate.unzip();
    inner.state().add_client(ClientInfo {
        id: client_id.clone(),
        details: details.into(),
        peer_addr: peer,
        liveness,
        created_at: SystemTime::now(),
        identity,
        identity_name: identity_name.flatten(),
    });
    #[cfg(feature = "quic")]
    let router = match &tls {
        ServerTls::Quic(q) => Some(q.get_ref().datagram_router()),
        ServerTls::Tls(_) => None,
    };
    #[cfg(feature = "quic")]
    if let Some(router) = &router {
        inner.state().set_client_router(&client_id, router.clone());
    }
    // Removes the client however this task ends (even if aborted).
    let mut registered = ClientGuard {
        inner: &inner,
        client_id: &client_id,
        armed: true,
    };
    tracing::debug!(%peer, client_id, ?liveness, "control channel open");

    let (reader, writer) = tokio::io::split(tls);
    let (frames_tx, frames) = mpsc::channel(16);
    let _reader = AbortOnDrop(tokio::spawn(read_loop(reader, frames_tx)));
    let mut channel = Channel {
        inner: &inner,
        client_id: &client_id,
        writer,
        outbox,
        liveness,
        last_ack: 0,
        grant,
        #[cfg(feature = "quic")]
        router,
    };
    let end = channel.run(frames, outbox_rx).await;
    tracing::debug!(client_id, reason = end, "control channel closed");
    // Tunnels first (ports freed) and then the connection.
    let endpoints = inner.state().remove_client(&client_id);
    registered.armed = false;
    for handle in endpoints {
        let _ = handle.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), channel.writer.shutdown()).await;
}

struct ClientGuard<'a> {
    inner: &'a Inner,
    client_id: &'a str,
    armed: bool,
}

impl Drop for ClientGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Aborted endpoint tasks release their ports at the runtime's next turn.
            let _ = self.inner.state().remove_client(self.client_id);
        }
    }
}

async fn read_loop(mut reader: ReadHalf<ServerTls>, frames: mpsc::Sender<crate::Result<Message>>) {
    loop {
        let next = match read_frame(&mut reader).await {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let failed = next.is_err();
        if frames.send(next).await.is_err() || failed {
            return;
        }
    }
}

async fn write(tls: &mut ServerTls, msg: &Message) -> crate::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, write_frame(tls, msg)).await {
        Ok(r) => r,
        Err(_) => Err(crate::Error::timeout("writing to a control channel")),
    }
}

/// One open control channel; `run` is its only writer.
struct Channel<'a> {
    inner: &'a Arc<Inner>,
    client_id: &'a str,
    writer: WriteHalf<ServerTls>,
    outbox: mpsc::Sender<Message>,
    liveness: Option<ControlChannelLiveness>,
    last_ack: u64,
    /// The app token's grant: its create scope applies to each tunnel.
    grant: Option<Arc<Grant>>,
    /// The DATAGRAM router of the channel's QUIC connection (plane A).
    #[cfg(feature = "quic")]
    router: Option<Arc<crate::datagram::quic::Router>>,
}

enum Next {
    Continue,
    Close,
}

impl Channel<'_> {
    /// Runs the channel; returns why it ended.
    async fn run(
        &mut self,
        mut frames: mpsc::Receiver<crate::Result<Message>>,
        mut outbox: mpsc::Receiver<Message>,
    ) -> &'static str {
        let timeout = self
            .liveness
            .map(|l| Duration::from_millis(u64::from(l.heartbeat_timeout_ms)));
        let mut deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let expiry = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = frames.recv() => match frame {
                    Some(Ok(msg)) => {
                        deadline = timeout.map(|t| Instant::now() + t);
                        match self.handle(msg).await {
                            Ok(Next::Continue) => {}
                            Ok(Next::Close) => return "closed by the client",
                            Err(_) => return "write failed",
                        }
                    }
                    Some(Err(e)) => {
                        tracing::debug!(client_id = self.client_id, error = %e, "control channel protocol error");
                        return "protocol error";
                    }
                    None => return "connection closed",
                },
                Some(msg) = outbox.recv() => {
                    if self.send(msg).await.is_err() {
                        return "write failed";
                    }
                }
                () = expiry => return "liveness timeout",
            }
        }
    }

    async fn send(&mut self, msg: Message) -> crate::Result<()> {
        match tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut self.writer, &msg)).await {
            Ok(r) => r,
            Err(_) => Err(crate::Error::timeout("writing to a control channel")),
        }
    }

    async fn handle(&mut self, msg: Message) -> crate::Result<Next> {
        let Some(payload) = msg.payload else {
            return Ok(Next::Continue);
        };
        match payload {
            Payload::Heartbeat(hb) => {
                // Legacy clients (no liveness) get nothing back, ever.
                if self.liveness.is_some() && hb.sequence > self.last_ack {
                    self.last_ack = hb.sequence;
                    let ack = Heartbeat {
                        sequence: 0,
                        acknowledgement: hb.sequence,
                    };
                    self.send(Message::new(Payload::Heartbeat(ack))).await?;
                }
            }
            Payload::OpenTunnelReq(req) => {
                let rsp = tunnels::open(
                    self.inner,
                    self.client_id,
                    &self.outbox,
                    req,
                    self.grant.as_deref(),
                )
                .await;
                self.send(Message::new(Payload::OpenTunnelRsp(rsp))).await?;
            }
            Payload::CloseTunnelReq(req) => {
                tunnels::close(self.inner, self.client_id, &req.tunnel_id).await;
                let rsp = CloseTunnelRsp {
                    tunnel_id: req.tunnel_id,
                };
                self.send(Message::new(Payload::CloseTunnelRsp(rsp)))
                    .await?;
            }
            Payload::CloseControlChannelReq(_) => {
                let rsp = Message::new(Payload::CloseControlChannelRsp(CloseControlChannelRsp {}));
                self.send(rsp).await?;
                return Ok(Next::Close);
            }
            // A plane-A channel the owner closed (DATAGRAM_QUIC.md §2 A).
            #[cfg(feature = "quic")]
            Payload::DatagramChannelClose(close) => {
                if let Some(router) = &self.router {
                    super::plane_a::closed_by_owner(router, &close.stream_id);
                }
            }
            Payload::ProxyConnRsp(rsp) => {
                let result = match rsp.error {
                    None => Ok(()),
                    Some(e) => Err(e),
                };
                self.inner
                    .state()
                    .answer_pending(self.client_id, &rsp.stream_id, result);
            }
            other => {
                tracing::debug!(
                    client_id = self.client_id,
                    frame = other.name(),
                    "ignored frame"
                );
            }
        }
        Ok(Next::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::auth::Action;

    #[test]
    fn protocol_versions() {
        assert!(check_protocol_version(Some("1.4.5")).is_ok());
        assert!(check_protocol_version(Some("1.0.0")).is_ok());
        let code = |v| check_protocol_version(v).unwrap_err().code;
        assert_eq!(code(None), ErrorCode::ProtocolVersionMissing as i32);
        assert_eq!(code(Some("1.4")), ErrorCode::ProtocolVersionInvalid as i32);
        assert_eq!(
            code(Some("x.y.z")),
            ErrorCode::ProtocolVersionInvalid as i32
        );
        assert_eq!(code(Some("")), ErrorCode::ProtocolVersionInvalid as i32);
        assert_eq!(
            code(Some("2.0.0")),
            ErrorCode::ProtocolVersionIncompatible as i32
        );
        assert_eq!(
            code(Some("0.9.1")),
            ErrorCode::ProtocolVersionIncompatible as i32
        );
    }

    #[test]
    fn certificates_or_tokens() {
        let config = |tokens: &[&str], required| Config {
            tokens: tokens.iter().map(|t| (*t).to_owned()).collect(),
            apps: Default::default(),
            liveness_timeout: None,
            max_tunnels_per_client: 1,
            max_pending_streams: 1,
            client_ca: true,
            require_client_certificate: required,
        };
        let unauthorized = ErrorCode::Unauthorized as i32;
        let with_tokens = config(&["t"], false);
        assert!(authenticate(&with_tokens, None, true, Action::Create).is_ok());
        assert!(authenticate(&with_tokens, Some("t"), false, Action::Create).is_ok());
        let code = |c: &Config, t, cert| authenticate(c, t, cert, Action::Create).unwrap_err().code;
        assert_eq!(code(&with_tokens, Some("t"), true), unauthorized);
        assert_eq!(code(&with_tokens, None, false), unauthorized);
        let required = config(&["t"], true);
        assert_eq!(code(&required, Some("t"), false), unauthorized);
        assert!(authenticate(&required, None, true, Action::Create).is_ok());
        // No tokens and not required: anonymous agents are admitted.
        assert!(authenticate(&config(&[], false), None, false, Action::Create).is_ok());
    }

    #[test]
    fn liveness_timeouts() {
        let config = |t| Config {
            tokens: Vec::new(),
            apps: Default::default(),
            liveness_timeout: t,
            max_tunnels_per_client: 1,
            max_pending_streams: 1,
            client_ca: false,
            require_client_certificate: false,
        };
        let s = Duration::from_secs;
        assert_eq!(config(None).liveness_timeout_for(s(5)), s(15));
        assert_eq!(config(None).liveness_timeout_for(s(10)), s(30));
        assert_eq!(config(None).liveness_timeout_for(s(300)), s(900));
        assert_eq!(config(Some(s(1))).liveness_timeout_for(s(5)), s(5));
        assert_eq!(config(Some(s(2000))).liveness_timeout_for(s(5)), s(900));
    }
}
