//! gRPC (feature `tonic`) end to end through the local engine: a tonic
//! service behind an h2c tunnel, served with `serve_with_incoming(tunnel)`,
//! inside an axum router under `http::serve` and `axum::serve`, and a tonic
//! `Channel` over `client.connector()` to a private tunnel. Unary and
//! bidirectional streaming calls, with real HTTP/2 over TLS to the
//! published address.

use crate::support;

use std::future::IntoFuture;

use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use rstream::{HttpVersion, StreamInfo, TunnelOptions};
use support::{client, engine, tls_connect, within};
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

#[path = "../../examples/grpc/echo.rs"]
mod echo;

use echo::{Echo, EchoClient, EchoReply, EchoRequest, EchoServer, ReplyStream};

/// Unary echoes the message and the caller's IP as the server saw it;
/// Chat answers every message upper-cased, as it arrives.
struct Svc;

impl Echo for Svc {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let source_ip = request
            .extensions()
            .get::<StreamInfo>()
            .and_then(StreamInfo::source_ip)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        Ok(Response::new(EchoReply {
            message: request.into_inner().message,
            source_ip,
        }))
    }

    async fn chat(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let replies = request.into_inner().map(|m| {
            m.map(|m| EchoReply {
                message: m.message.to_uppercase(),
                source_ip: String::new(),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

/// A channel to the published `https://` address: TLS with ALPN h2,
/// trusting the engine's CA, then HTTP/2 (tonic adds no TLS of its own:
/// the connector returns the TLS stream).
async fn public_channel(url: &str, ca_pem: &str) -> Channel {
    let ca = ca_pem.to_owned();
    let connector = tower::service_fn(move |uri: http::Uri| {
        let ca = ca.clone();
        async move {
            let url = format!("https://{}", uri.authority().expect("authority"));
            let tls = tls_connect(&url, &ca, &[b"h2"]).await;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    within(
        "channel connects",
        Endpoint::from_shared(url.to_owned())
            .expect("endpoint")
            .connect_with_connector(connector),
    )
    .await
    .expect("channel")
}

/// One unary call; returns the source IP the server reported.
async fn unary_round_trip(client: &mut EchoClient<Channel>) -> String {
    let reply = within(
        "unary",
        client.unary(EchoRequest {
            message: "hello gRPC".into(),
        }),
    )
    .await
    .expect("unary")
    .into_inner();
    assert_eq!(reply.message, "hello gRPC");
    reply.source_ip
}

/// A bidirectional call that is really interleaved: each request is sent
/// only after the previous reply arrived, so neither side can buffer the
/// whole exchange.
async fn chat_round_trip(client: &mut EchoClient<Channel>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(1);
    let requests =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut replies = within("chat starts", client.chat(requests))
        .await
        .expect("chat")
        .into_inner();
    for i in 0..20 {
        tx.send(EchoRequest {
            message: format!("message {i}"),
        })
        .await
        .expect("send");
        let reply = within("chat reply", replies.next())
            .await
            .expect("a reply")
            .expect("reply ok");
        assert_eq!(reply.message, format!("MESSAGE {i}"));
    }
    drop(tx);
    // Ending the requests ends the replies (the server's stream ends).
    assert!(within("chat ends", replies.next()).await.is_none());
}

#[tokio::test]
async fn grpc_serve_with_incoming_through_h2c_tunnel() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::http().http_version(HttpVersion::H2c))
        .await
        .unwrap();
    let url = tunnel.forwarding_address();
    // A `Tunnel` is the `Stream` of connections tonic takes.
    let server = tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(Svc))
            .serve_with_incoming(tunnel),
    );

    let mut echo = EchoClient::new(public_channel(&url, engine.ca_pem()).await);
    // `Connected for RstreamStream` put the stream's StreamInfo into the
    // request: the downstream client's (loopback) address.
    assert_eq!(unary_round_trip(&mut echo).await, "127.0.0.1");
    chat_round_trip(&mut echo).await;

    // When the tunnel closes for good, its stream of connections ends and
    // `serve_with_incoming` returns.
    control.close().await.unwrap();
    within("server returns", server)
        .await
        .unwrap()
        .expect("serve_with_incoming ends cleanly");
}

#[tokio::test]
async fn grpc_routes_in_an_axum_router_through_h2c_tunnel() {
    let engine = engine().await;
    let client = client(&engine);
    let control = client.connect().await.unwrap();
    // tonic's routes next to plain HTTP routes in one axum router.
    let router = tonic::service::Routes::new(EchoServer::new(Svc))
        .into_axum_router()
        .route("/health", axum::routing::get(|| async { "ok" }));

    // Under `rstream::http::serve`, every request carries its StreamInfo.
    let tunnel = control
        .create_tunnel(TunnelOptions::http().http_version(HttpVersion::H2c))
        .await
        .unwrap();
    let url = tunnel.forwarding_address();
    let served = tokio::spawn(rstream::http::serve(tunnel, router.clone()).into_future());
    let mut echo = EchoClient::new(public_channel(&url, engine.ca_pem()).await);
    assert_eq!(unary_round_trip(&mut echo).await, "127.0.0.1");
    chat_round_trip(&mut echo).await;

    // Under `axum::serve` too (no StreamInfo there without connect info).
    let tunnel = control
        .create_tunnel(TunnelOptions::http().http_version(HttpVersion::H2c))
        .await
        .unwrap();
    let url = tunnel.forwarding_address();
    tokio::spawn(axum::serve(tunnel, router).into_future());
    let mut echo = EchoClient::new(public_channel(&url, engine.ca_pem()).await);
    assert_eq!(unary_round_trip(&mut echo).await, "");
    chat_round_trip(&mut echo).await;

    // `http::serve` returns the reason once the tunnel is closed for good.
    control.close().await.unwrap();
    let reason = within("http::serve returns", served)
        .await
        .unwrap()
        .expect_err("the tunnel closed");
    assert_eq!(reason.kind(), rstream::ErrorKind::Closed);
}

#[tokio::test]
async fn grpc_channel_over_connector_to_private_tunnel() {
    let engine = engine().await;
    let owner = client(&engine);
    let control = owner.connect().await.unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("grpc-private"))
        .await
        .unwrap();
    tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(Svc))
            .serve_with_incoming(tunnel),
    );

    // Another client of the same engine: a tonic Channel whose connections
    // are private dials (`http://<tunnel name>`), h2 over each.
    let dialer = client(&engine);
    let channel = within(
        "channel connects",
        Endpoint::from_static("http://grpc-private").connect_with_connector(dialer.connector()),
    )
    .await
    .expect("channel");
    let mut echo = EchoClient::new(channel);
    unary_round_trip(&mut echo).await;
    chat_round_trip(&mut echo).await;

    // Concurrent calls multiplex over the channel.
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let mut echo = echo.clone();
        calls.spawn(async move { unary_round_trip(&mut echo).await });
    }
    within("16 concurrent calls", async {
        while let Some(r) = calls.join_next().await {
            r.unwrap();
        }
    })
    .await;
    control.close().await.unwrap();
}
