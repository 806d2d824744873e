//! A scripted engine: a TLS server whose every frame the test writes by
//! hand, to drive the client into the protocol's edge and error cases.

use std::sync::Arc;

use rstream::proto::{self, message::Payload, Message};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::within;

pub struct Scripted {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    pub ca_pem: String,
}

pub struct Peer {
    pub io: TlsStream<TcpStream>,
}

impl Scripted {
    pub async fn start() -> Scripted {
        let ca = super::pki::Ca::new();
        let config = ca
            .leaf(&["localhost", "127.0.0.1"], None)
            .server_config(&[proto::ALPN]);
        Scripted {
            listener: TcpListener::bind("127.0.0.1:0").await.expect("bind"),
            acceptor: TlsAcceptor::from(Arc::new(config)),
            ca_pem: ca.pem(),
        }
    }

    pub fn address(&self) -> String {
        self.listener.local_addr().expect("addr").to_string()
    }

    pub fn client(&self) -> rstream::ClientOptions {
        rstream::Client::builder()
            .engine(self.address())
            .tls(
                rstream::transport::TlsOptions::new()
                    .add_ca_pem(self.ca_pem.as_bytes())
                    .expect("ca"),
            )
            // The script speaks TLS over TCP only (no UDP port): the auto
            // race would just add a silent QUIC attempt, and its UDP
            // endpoint's receive buffers (about 3 MB) would blur the
            // allocation bounds the hostile-input tests assert.
            .transport(rstream::Transport::Tls)
    }

    pub async fn accept(&self) -> Peer {
        let (tcp, _) = self.listener.accept().await.expect("accept");
        Peer {
            io: self.acceptor.accept(tcp).await.expect("tls accept"),
        }
    }

    /// The usual opening of a scripted test: runs `connect` (a
    /// `Client::connect*` future) against this engine while accepting it and
    /// answering [`Peer::open_ok`] with `timeout_ms`.
    pub async fn open(
        &self,
        connect: impl std::future::Future<Output = rstream::Result<rstream::ControlChannel>>,
        timeout_ms: Option<u32>,
    ) -> (rstream::Result<rstream::ControlChannel>, Peer) {
        tokio::join!(connect, async {
            let mut peer = self.accept().await;
            peer.open_ok(timeout_ms).await;
            peer
        })
    }
}

impl Peer {
    pub async fn recv(&mut self) -> Option<Payload> {
        proto::read_frame(&mut self.io)
            .await
            .expect("frame from client")
            .and_then(|m| m.payload)
    }

    /// Receives frames until `pick` returns something, skipping heartbeats.
    pub async fn recv_skip_heartbeats(&mut self) -> Option<Payload> {
        loop {
            match self.recv().await {
                Some(Payload::Heartbeat(_)) => continue,
                other => return other,
            }
        }
    }

    pub async fn send(&mut self, payload: Payload) {
        proto::write_frame(&mut self.io, &Message::new(payload))
            .await
            .expect("write frame");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("write raw");
        self.io.flush().await.expect("flush");
    }

    /// Reads the client's `OpenControlChannelReq` and answers `ok`, echoing
    /// its proposed interval with `timeout_ms` (or no liveness when `None`).
    pub async fn open_ok(&mut self, timeout_ms: Option<u32>) -> proto::OpenControlChannelReq {
        let Some(Payload::OpenControlChannelReq(req)) = self.recv().await else {
            panic!("expected OpenControlChannelReq");
        };
        let liveness = match (timeout_ms, req.liveness) {
            (Some(t), Some(l)) => Some(proto::ControlChannelLiveness {
                heartbeat_interval_ms: l.heartbeat_interval_ms,
                heartbeat_timeout_ms: t,
            }),
            _ => None,
        };
        self.send(Payload::OpenControlChannelRsp(
            proto::OpenControlChannelRsp {
                payload: Some(proto::open_control_channel_rsp::Payload::Ok(
                    proto::open_control_channel_rsp::Ok {
                        client_id: "scripted-client".into(),
                        server_details: None,
                        liveness,
                    },
                )),
            },
        ))
        .await;
        req
    }
}

/// A control channel to a fresh scripted engine (no heartbeats, so every
/// frame the engine reads is one the test expects).
pub async fn channel(engine: &Scripted) -> (rstream::ControlChannel, Peer) {
    super::init_tracing();
    let client = engine.client().disable_heartbeats().build().unwrap();
    let (control, peer) = engine.open(client.connect(), None).await;
    (control.expect("connect"), peer)
}

/// Creates tunnel `name`, which the scripted engine answers with id `id`.
pub async fn tunnel(
    control: &rstream::ControlChannel,
    peer: &mut Peer,
    name: &str,
    id: &str,
) -> rstream::Tunnel {
    let (tunnel, ()) = tokio::join!(
        control.create_tunnel(rstream::TunnelOptions::new().name(name)),
        async {
            let req = match within("OpenTunnelReq", peer.recv()).await {
                Some(Payload::OpenTunnelReq(r)) => r,
                other => panic!("expected OpenTunnelReq, got {:?}", other.map(|p| p.name())),
            };
            let mut props = req.tunnel_properties.unwrap();
            props.id = Some(id.into());
            peer.send(Payload::OpenTunnelRsp(proto::OpenTunnelRsp {
                request_id: req.request_id,
                payload: Some(proto::open_tunnel_rsp::Payload::TunnelProperties(props)),
            }))
            .await;
        }
    );
    let tunnel = tunnel.expect("create_tunnel");
    assert_eq!(tunnel.id(), id);
    tunnel
}

/// Announces a downstream connection as the engine does (`ProxyConnReq`),
/// accepts the client's proxy connection, checks its `ProxyReq` (stream id,
/// the per-stream secret as token) and the positive `ProxyConnRsp` on the
/// control channel. Returns the engine's end of the proxy connection.
pub async fn proxy(
    engine: &Scripted,
    peer: &mut Peer,
    tunnel_id: &str,
    stream_id: &str,
    source_ip: Option<proto::IpAddress>,
) -> Peer {
    let secret = format!("secret-{stream_id}");
    peer.send(Payload::ProxyConnReq(proto::ProxyConnReq {
        tunnel_id: tunnel_id.into(),
        stream_id: stream_id.into(),
        secret: Some(secret.clone()),
        source_ip,
        proxy_endpoint: None,
    }))
    .await;
    let mut conn = within("proxy connection", engine.accept()).await;
    match within("ProxyReq", conn.recv()).await {
        Some(Payload::ProxyReq(req)) => {
            assert_eq!(req.stream_id, stream_id);
            assert_eq!(req.client_details.and_then(|d| d.token), Some(secret));
        }
        other => panic!("expected ProxyReq, got {:?}", other.map(|p| p.name())),
    }
    match within("ProxyConnRsp", peer.recv()).await {
        Some(Payload::ProxyConnRsp(rsp)) => {
            assert_eq!(rsp.stream_id, stream_id);
            assert!(rsp.error.is_none(), "proxy connection refused: {rsp:?}");
        }
        other => panic!("expected ProxyConnRsp, got {:?}", other.map(|p| p.name())),
    }
    conn
}

/// Bytes flow both ways between an accepted stream and the engine's end.
pub async fn assert_flows(stream: &mut rstream::RstreamStream, conn: &mut Peer, tag: &str) {
    use tokio::io::AsyncReadExt;
    let up = format!("up-{tag}");
    stream.write_all(up.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut buf = vec![0u8; up.len()];
    within("engine reads", conn.io.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(buf, up.as_bytes());
    let down = format!("down-{tag}");
    conn.io.write_all(down.as_bytes()).await.unwrap();
    conn.io.flush().await.unwrap();
    let mut buf = vec![0u8; down.len()];
    within("app reads", stream.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(buf, down.as_bytes());
}

/// Asserts that the engine receives nothing for `quiet`.
pub async fn assert_silent(peer: &mut Peer, quiet: std::time::Duration, what: &str) {
    if let Ok(frame) = tokio::time::timeout(quiet, peer.recv()).await {
        panic!(
            "{what}: expected no frame, got {:?}",
            frame.map(|p| p.name())
        );
    }
}

/// Closes `control` gracefully while the engine expects its
/// `CloseControlChannelReq` and answers it.
pub async fn close_gracefully(control: &rstream::ControlChannel, peer: &mut Peer) {
    let (res, ()) = tokio::join!(control.close(), async {
        match within("CloseControlChannelReq", peer.recv()).await {
            Some(Payload::CloseControlChannelReq(_)) => {}
            other => panic!(
                "expected CloseControlChannelReq, got {:?}",
                other.map(|p| p.name())
            ),
        }
        peer.send(Payload::CloseControlChannelRsp(
            proto::CloseControlChannelRsp {},
        ))
        .await;
    });
    res.unwrap();
}
