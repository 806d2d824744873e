//! Answering `ProxyConnReq`: open a new TLS connection, `ProxyReq`, hand
//! the stream to its tunnel, then `ProxyConnRsp` (PROTOCOL.md §4).
//!
//! Bounded: at most N handshakes run at once (a semaphore, FIFO), the rest
//! wait in the control task's `JoinSet`, whose size is capped (one more
//! fails the connection with `ERR_RSTREAM_CONTROL_OVERLOAD`). A stream
//! meeting a full accept backlog is refused at once. Each handshake is
//! bounded by the connect and operation timeouts.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};

use tracing::Instrument;

use super::connection::Conn;
use super::task::Supervisor;
use crate::error::{code, Error, ErrorKind, Result};
use crate::link::EngineLink;
use crate::proto::{
    self, encode_frame, message::Payload, read_answer_within, write_frame, ErrorCode, Message,
    ProxyConnReq, ProxyConnRsp, ProxyReq, ProxyRsp,
};
use crate::stream::{RstreamStream, StreamInfo};
use crate::transport::Endpoint;
use crate::tunnel::TunnelShared;

pub(super) struct ProxyContext {
    pub(super) permits: Arc<Semaphore>,
    pub(super) link: Arc<EngineLink>,
    pub(super) out: mpsc::Sender<Bytes>,
    /// The DATAGRAM router of the connection's QUIC connection (plane A),
    /// `None` over TLS.
    #[cfg(feature = "quic")]
    pub(super) router: Option<Arc<crate::datagram::quic::Router>>,
}

/// Where a proxy connection goes, and the name its TLS must present.
pub(super) struct Target {
    endpoint: Endpoint,
    sni: String,
}

pub(super) struct Job {
    pub(super) req: ProxyConnReq,
    /// `req.source_ip`, parsed.
    pub(super) source_ip: Option<std::net::IpAddr>,
    pub(super) target: Target,
    pub(super) streams: mpsc::Sender<RstreamStream>,
    pub(super) tunnel: Arc<TunnelShared>,
    /// The stream's `rstream.stream` span, handed on to the stream.
    pub(super) span: tracing::Span,
}

/// Checks `proxy_endpoint`/`secret` and picks the target (before any dial).
pub(super) fn target(link: &EngineLink, req: &ProxyConnReq) -> Result<Target> {
    // Known: a control channel is only opened after the engine is.
    let engine = link
        .resolved_engine()
        .ok_or_else(|| Error::protocol("proxy connection before the engine was resolved"))?;
    let Some(endpoint) = req.proxy_endpoint.as_deref() else {
        return Ok(Target {
            endpoint: engine.endpoint.clone(),
            sni: engine.sni.clone(),
        });
    };
    if req.secret.as_deref().is_none_or(|s| s.trim().is_empty()) {
        return Err(Error::protocol("proxy_endpoint without a secret"));
    }
    let endpoint =
        Endpoint::parse(endpoint.trim()).map_err(|_| Error::protocol("invalid proxy_endpoint"))?;
    // The server-name override applies only to the engine itself.
    let sni = if endpoint == engine.endpoint {
        engine.sni.clone()
    } else {
        endpoint.host().to_owned()
    };
    Ok(Target { endpoint, sni })
}

pub(super) fn refusal(stream_id: String, why: &str) -> ProxyConnRsp {
    ProxyConnRsp {
        stream_id,
        error: Some(proto::Error::new(ErrorCode::InvalidStream, why)),
    }
}

pub(super) async fn run(ctx: Arc<ProxyContext>, job: Job) {
    // The semaphore is never closed; `Err` cannot happen, and would only
    // drop this job.
    let Ok(_permit) = ctx.permits.clone().acquire_owned().await else {
        return;
    };
    let stream_id = job.req.stream_id.clone();
    let rsp = match handshake(&ctx, job).await {
        Ok(()) => ProxyConnRsp {
            stream_id,
            error: None,
        },
        Err(e) => {
            tracing::debug!(%stream_id, code = e.code(), error = %e, "proxy connection failed");
            refusal(stream_id, e.message())
        }
    };
    match encode_frame(&Message::new(Payload::ProxyConnRsp(rsp))) {
        // If the control channel is gone, nothing is sent.
        Ok(frame) => {
            let _ = ctx.out.send(frame).await;
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode ProxyConnRsp"),
    }
}

async fn handshake(ctx: &ProxyContext, job: Job) -> Result<()> {
    let inner = &ctx.link;
    let op = inner.options.operation_timeout;
    let zero_rtt = inner.options.zero_rtt;
    let mut io = inner
        .dialer
        .connect(&job.target.endpoint, &job.target.sni)
        .await?;
    let request = ProxyReq {
        // The per-stream secret, never the agent's own token.
        client_details: Some(inner.details(job.req.secret.clone())),
        stream_id: job.req.stream_id.clone(),
        zero_rtt: Some(zero_rtt),
    };
    write_frame(&mut io, &Message::new(Payload::ProxyReq(request))).await?;
    if !zero_rtt {
        read_answer_within::<ProxyRsp, _>(&mut io, op, || {
            Error::protocol("engine closed the proxy connection")
        })
        .await?
        .into_result()?;
    }
    if job.tunnel.is_closed() {
        return Err(Error::tunnel_closed(
            "tunnel closed during the proxy handshake",
        ));
    }
    let info = StreamInfo::new(
        Arc::from(job.req.tunnel_id.as_str()),
        Some(Arc::from(job.req.stream_id.as_str())),
        job.source_ip,
    );
    let counters = job.tunnel.counters();
    let stream = RstreamStream::accepted(
        io,
        info,
        (job.tunnel.span().clone(), job.span),
        counters.activate(),
    );
    // Never wait for the application here: a full backlog is refused at
    // once, so one slow tunnel cannot hold handshake permits that the
    // channel's other tunnels need.
    match job.streams.try_send(stream) {
        Ok(()) => {
            counters.note_accepted();
            tracing::debug!("downstream connection queued for the application");
            Ok(())
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            counters.note_refused_backlog_full();
            let backlog = job.streams.max_capacity();
            if job.tunnel.note_backlog_full() {
                tracing::warn!(
                    tunnel = %job.tunnel.current().id,
                    backlog,
                    "tunnel accept backlog full: refusing new connections until the application accepts"
                );
            }
            Err(Error::new(
                ErrorKind::Timeout,
                code::ACCEPT_BACKLOG_FULL,
                format!(
                    "tunnel accept backlog full: {backlog} connections wait for the application"
                ),
            ))
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::tunnel_closed(
            "tunnel closed during the proxy handshake",
        )),
    }
}

impl Supervisor {
    pub(super) fn on_proxy_conn_req(&mut self, conn: &mut Conn, req: ProxyConnReq) -> Result<()> {
        let slot = conn
            .ids
            .get(req.tunnel_id.as_str())
            .and_then(|key| self.slots.get(key));
        let Some(slot) = slot else {
            return refuse(conn, req.stream_id, "unknown tunnel");
        };
        #[cfg(feature = "quic")]
        if let Some(router) = &conn.proxy.router {
            if super::plane_a::applies(&slot.shared, &req) {
                let rsp = super::plane_a::accept(
                    router.clone(),
                    req,
                    &slot.shared,
                    &self.datagrams,
                    conn.out.clone(),
                );
                return conn.send(Payload::ProxyConnRsp(rsp));
            }
        }
        let target = match target(&self.link, &req) {
            Ok(t) => t,
            Err(e) => return refuse(conn, req.stream_id, e.message()),
        };
        if conn.handshakes.len() >= self.max_inflight {
            return Err(Error::new(
                ErrorKind::Protocol,
                code::CONTROL_OVERLOAD,
                format!(
                    "more than {} proxy connections pending: control channel overloaded",
                    self.max_inflight
                ),
            ));
        }
        let source_ip = req.source_ip.as_ref().and_then(|ip| ip.to_ip());
        // One span per stream, not per request; cheap when disabled.
        let span = tracing::info_span!(
            parent: slot.shared.span(),
            "rstream.stream",
            stream_id = %req.stream_id,
            source_ip = tracing::field::Empty,
        );
        if let Some(ip) = source_ip {
            span.record("source_ip", tracing::field::display(ip));
        }
        let job = Job {
            req,
            source_ip,
            target,
            streams: slot.streams.clone(),
            tunnel: slot.shared.clone(),
            span: span.clone(),
        };
        // The tunnel's span is entered too: `EnvFilter` span directives
        // only see entered spans.
        let tunnel_span = slot.shared.span().clone();
        conn.handshakes.spawn(
            run(conn.proxy.clone(), job)
                .instrument(span)
                .instrument(tunnel_span),
        );
        Ok(())
    }
}

fn refuse(conn: &Conn, stream_id: String, why: &str) -> Result<()> {
    tracing::debug!(%stream_id, why, "refusing proxy connection");
    conn.send(Payload::ProxyConnRsp(refusal(stream_id, why)))
}
