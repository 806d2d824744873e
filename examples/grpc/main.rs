//! gRPC through rstream: a tonic server on two tunnels at once (a public
//! h2c one and a private one), and a tonic client whose connections are
//! private dials.
//!
//! ```text
//! cargo run --example grpc --features tonic               # serve, call, exit
//! cargo run --example grpc --features tonic -- --self-test # same, for CI
//! cargo run --example grpc --features tonic -- --serve     # keep serving until Ctrl-C
//! ```
//!
//! With the `tonic` feature, `RstreamStream` implements tonic's `Connected`
//! and a `Tunnel` is a `Stream` of connections, so
//! `Server::builder()...serve_with_incoming(tunnel)` serves gRPC over HTTP/2
//! with no loopback socket. Requests carry the connection's `StreamInfo`
//! (source IP). On the client side, `client.connector()` turns a tonic
//! `Endpoint` for `http://<private tunnel name>` into a `Channel`.
//!
//! The service's glue (`echo.rs`) is written by hand instead of generated
//! by `tonic-build`, so the example needs no `protoc`.

mod echo;
#[path = "../support/mod.rs"]
mod support;

use std::error::Error;

use echo::{Echo, EchoClient, EchoReply, EchoRequest, EchoServer, ReplyStream};
use futures_util::StreamExt;
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, HttpVersion, StreamInfo, TlsOptions, TunnelOptions};
use tonic::transport::{Endpoint, Server};
use tonic::{Request, Response, Status, Streaming};

type BoxError = Box<dyn Error + Send + Sync>;

/// The service: Unary echoes (with the caller's IP), Chat upper-cases
/// every message as it arrives.
struct EchoService;

impl Echo for EchoService {
    async fn unary(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        // Set by `Connected for RstreamStream`.
        let source_ip = request
            .extensions()
            .get::<StreamInfo>()
            .and_then(StreamInfo::source_ip)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        let message = request.into_inner().message;
        // Logged inside the `grpc{path, stream_id, source_ip}` span (below).
        tracing::info!(%message, "Unary");
        Ok(Response::new(EchoReply { message, source_ip }))
    }

    async fn chat(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let replies = request.into_inner().map(|message| {
            message.map(|m| EchoReply {
                message: m.message.to_uppercase(),
                source_ip: String::new(),
            })
        });
        Ok(Response::new(Box::pin(replies)))
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();

    // The engine configured by the environment (RSTREAM_ENGINE,
    // RSTREAM_AUTHENTICATION_TOKEN, RSTREAM_CA_FILE, ~/.rstream/config.yaml),
    // or, when none is, a local engine in this process.
    let (client, _local_engine) = match Client::from_env() {
        Err(e) if e.code() == code::ENGINE_REQUIRED => {
            let engine = LocalEngine::builder().start().await?;
            let tls = TlsOptions::new().add_ca_pem(engine.ca_pem().as_bytes())?;
            let client = Client::builder()
                .engine(engine.engine_address())
                .tls(tls)
                .build()?;
            (client, Some(engine))
        }
        configured => (configured?, None),
    };

    let control = client.connect().await?;
    let public = control
        .create_tunnel(TunnelOptions::http().http_version(HttpVersion::H2c))
        .await?;
    let private = control
        .create_tunnel(TunnelOptions::new().name("grpc-echo"))
        .await?;
    let public_url = public.forwarding_address();
    println!("gRPC (h2 over TLS) at {public_url}");
    println!("and privately at {}", private.forwarding_address());

    // One server for both tunnels: their connections merged into one stream.
    // It returns once both tunnels are closed.
    let server = tokio::spawn(
        Server::builder()
            // Each call in a span naming its connection: tonic's server does
            // not enter the `rstream.stream` spans, but sees the StreamInfo.
            .trace_fn(|request| {
                let info = request.extensions().get::<StreamInfo>();
                tracing::info_span!(
                    "grpc",
                    path = request.uri().path(),
                    stream_id = info.and_then(StreamInfo::stream_id),
                    source_ip = info
                        .and_then(StreamInfo::source_ip)
                        .map(tracing::field::display),
                )
            })
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(futures_util::stream::select(public, private)),
    );

    // A client: every connection of the channel is a private dial.
    let channel = Endpoint::from_static("http://grpc-echo")
        .connect_with_connector(client.connector())
        .await?;
    let mut echo = EchoClient::new(channel);

    let reply = echo
        .unary(EchoRequest {
            message: "hello".into(),
        })
        .await?
        .into_inner();
    println!("Unary(hello) -> {reply:?}");
    check(reply.message == "hello", "Unary echoes")?;

    let words = ["bidirectional", "streaming", "through", "a", "tunnel"];
    let requests = futures_util::stream::iter(words).map(|w| EchoRequest { message: w.into() });
    let mut replies = echo.chat(requests).await?.into_inner();
    let mut got = Vec::new();
    while let Some(reply) = replies.next().await {
        got.push(reply?.message);
    }
    println!("Chat({words:?}) -> {got:?}");
    let expected: Vec<String> = words.iter().map(|w| w.to_uppercase()).collect();
    check(got == expected, "Chat upper-cases every message")?;

    // From outside, through the published address: TLS (ALPN h2) to the
    // engine, trusting what the rstream client trusts. tonic's own TLS
    // features (`tls-ring`, `ClientTlsConfig`) would do the same.
    let tls = client.options().tls().clone();
    let public_channel = Endpoint::from_shared(public_url)?
        .connect_with_connector(tower::service_fn(move |uri: http::Uri| {
            let tls = tls.clone();
            async move {
                let stream = support::tls_connect(&tls, &uri.to_string(), &[b"h2"]).await?;
                Ok::<_, BoxError>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?;
    let reply = EchoClient::new(public_channel)
        .unary(EchoRequest {
            message: "hello from outside".into(),
        })
        .await?
        .into_inner();
    println!("Unary over the published address -> {reply:?}");
    check(
        reply.message == "hello from outside" && !reply.source_ip.is_empty(),
        "Unary through the public h2c tunnel, with the caller's IP",
    )?;

    if std::env::args().any(|a| a == "--serve") {
        println!("serving; press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    // Closing the tunnels ends the server's stream of connections.
    control.close().await?;
    server.await??;
    println!("ok");
    Ok(())
}

fn check(ok: bool, what: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("self-test failed: {what}").into())
    }
}
