//! A scripted engine: a TLS server whose every frame the test writes by
//! hand, to drive the client into the protocol's edge and error cases.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rstream::proto::{self, message::Payload, Message};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

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
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
        let leaf_key = KeyPair::generate().expect("key");
        let leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
            .expect("params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key der");
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("server config");
        config.alpn_protocols = vec![proto::ALPN.to_vec()];
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
        rstream::Client::builder().engine(self.address()).tls(
            rstream::transport::TlsOptions::new()
                .add_ca_pem(self.ca_pem.as_bytes())
                .expect("ca"),
        )
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
