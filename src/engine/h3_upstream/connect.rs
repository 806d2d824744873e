//! The engine's HTTP/3 connection to an application: one datagram channel
//! to the tunnel's owner (framed on its proxy connection, plane B, or QUIC
//! DATAGRAM frames, plane A), a quinn client endpoint on it
//! ([`TunnelUdpSocket::from_pump`]: one synthetic peer), the QUIC
//! handshake (ALPN `h3`, the application's certificate not verified, as
//! [`super::super::upstream`]) and an h3 client connection.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::super::streams::{self, Owner, ServerTls};
use super::super::upstream::{server_name, unverified_client};
use super::super::Inner;
use crate::datagram::frame::{self, FrameReader};
use crate::http3::{Delivery, TunnelUdpSocket};
use crate::transport::h3_client::{client_transport, start_h3};

/// Bound on the QUIC handshake with the application, and on HTTP/3's
/// start (its SETTINGS) after it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// `H3_NO_ERROR`: the code the connection is closed with.
const H3_NO_ERROR: u32 = 0x100;
/// Framed packets written to the owner in one go (plane B).
const WRITE_BATCH: usize = 64 * 1024;

/// How a published HTTP/3-upstream tunnel reaches its application: the
/// quinn client configuration and the name presented (SNI).
#[derive(Clone)]
pub(crate) struct H3Upstream {
    config: quinn::ClientConfig,
    server_name: String,
}

impl H3Upstream {
    /// The client of the tunnel named `tunnel_name` (its SNI when that is
    /// a DNS name, else `localhost`).
    pub(crate) fn new(tunnel_name: Option<&str>) -> Result<Self, String> {
        let tls = unverified_client(b"h3")?;
        let crypto =
            quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        // Keep-alive: the downstream connection may sit idle between
        // requests; the application's connection stays up as long (it
        // ends with it).
        config.transport_config(Arc::new(client_transport()));
        Ok(H3Upstream {
            config,
            server_name: server_name(tunnel_name).to_str().into_owned(),
        })
    }
}

/// One HTTP/3 connection to the application. Dropping it closes the
/// connection (`H3_NO_ERROR`), which ends its endpoint and its channel.
pub(crate) struct Conn {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    quic: quinn::Connection,
    /// Set when the h3 driver task ended.
    ended: Arc<AtomicBool>,
}

impl Conn {
    /// Whether new requests may go on it.
    pub(crate) fn usable(&self) -> bool {
        self.quic.close_reason().is_none() && !self.ended.load(Ordering::Acquire)
    }

    /// A request handle.
    pub(crate) fn sender(&self) -> h3::client::SendRequest<h3_quinn::OpenStreams, Bytes> {
        self.send.clone()
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.quic.close(H3_NO_ERROR.into(), b"");
    }
}

/// Reaches the owner of `tunnel_id` for a channel (on behalf of the
/// downstream at `ip`) and starts HTTP/3 on it. `Err` says why, for the
/// log (the downstream gets a 502).
pub(crate) async fn connect(
    inner: &Inner,
    tunnel_id: &str,
    ip: IpAddr,
    upstream: &H3Upstream,
) -> Result<Conn, String> {
    let (stream_id, owner) = streams::reach_owner_any(inner, tunnel_id, ip)
        .await
        .map_err(|e| format!("the owner did not give a channel: {:?}", e.message))?;
    let socket = TunnelUdpSocket::from_pump(None, move |outgoing, delivery| async move {
        let why = match owner {
            Owner::Framed(stream) => pump_framed(stream, outgoing, &delivery).await,
            Owner::Quic(side) => pump_quic(side, outgoing, &delivery).await,
        };
        tracing::debug!(stream_id, why, "HTTP/3 upstream channel closed");
        crate::datagram::closed(why)
    });
    let endpoint = socket.endpoint(None).map_err(|e| e.to_string())?;
    // A `from_pump` socket always has its one peer.
    let addr = socket
        .peer_addr()
        .ok_or_else(|| "a QUIC socket without its peer".to_owned())?;
    let start = async {
        let connecting = endpoint
            .connect_with(upstream.config.clone(), addr, &upstream.server_name)
            .map_err(|e| e.to_string())?;
        let quic = connecting
            .await
            .map_err(|e| format!("QUIC handshake: {e}"))?;
        let h3 = start_h3(&quic, "the application")
            .await
            .map_err(|e| format!("HTTP/3 start: {e}"))?;
        Ok::<_, String>((quic, h3))
    };
    let (quic, (send, ended)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, start)
        .await
        .map_err(|_| format!("no HTTP/3 handshake within {HANDSHAKE_TIMEOUT:?}"))??;
    {
        // The channel ended (the owner closed it, or its connection is
        // gone): no packet can reach the application any more, so the
        // connection ends now rather than at its idle timeout.
        let closed = socket.closed();
        let quic = quic.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = closed => quic.close(H3_NO_ERROR.into(), b"channel closed"),
                _ = quic.closed() => {}
            }
        });
    }
    Ok(Conn { send, quic, ended })
}

/// Plane B: QUIC packets as frames (4-byte length + payload) on the
/// owner's proxy connection, both ways, until either side ends.
async fn pump_framed(
    stream: ServerTls,
    mut outgoing: mpsc::Receiver<Bytes>,
    delivery: &Delivery,
) -> &'static str {
    let (rd, mut wr) = tokio::io::split(stream);
    let up = async {
        let mut out = BytesMut::new();
        while let Some(packet) = outgoing.recv().await {
            frame::encode(&packet, &mut out);
            while out.len() < WRITE_BATCH {
                match outgoing.try_recv() {
                    Ok(packet) => frame::encode(&packet, &mut out),
                    Err(_) => break,
                }
            }
            if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
                return "owner connection failed";
            }
            out.clear();
        }
        "socket closed"
    };
    let down = async {
        let mut reader = FrameReader::new(rd);
        loop {
            match reader.next().await {
                Ok(Some(packet)) => {
                    if !delivery.received(packet) {
                        return "socket closed";
                    }
                }
                Ok(None) => return "closed by the owner",
                Err(_) => return "owner connection failed",
            }
        }
    };
    tokio::select! {
        why = up => why,
        why = down => why,
    }
}

/// Plane A: QUIC packets as DATAGRAM frames on the owner's QUIC
/// connection. Dropping `side` at the end tells the owner.
async fn pump_quic(
    mut side: super::super::plane_a::QuicSide,
    mut outgoing: mpsc::Receiver<Bytes>,
    delivery: &Delivery,
) -> &'static str {
    loop {
        tokio::select! {
            packet = outgoing.recv() => match packet {
                Some(packet) => {
                    // Too large for a DATAGRAM frame (a path MTU probe), or
                    // the connection is gone (the other arm sees it).
                    if !side.send(&packet) {
                        delivery.lost();
                    }
                }
                None => return "socket closed",
            },
            packet = side.recv() => match packet {
                Some(packet) => {
                    if !delivery.received(packet) {
                        return "socket closed";
                    }
                }
                None => return "closed by the owner",
            },
        }
    }
}
