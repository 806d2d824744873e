//! The `Echo` gRPC service's glue, written by hand: what `tonic-build`
//! (`tonic-prost-build`) generates from this `.proto`, reduced to what the
//! example uses, so that building needs no `protoc`:
//!
//! ```proto
//! syntax = "proto3";
//! package rstream.example;
//!
//! service Echo {
//!   rpc Unary(EchoRequest) returns (EchoReply);
//!   rpc Chat(stream EchoRequest) returns (stream EchoReply);
//! }
//! message EchoRequest { string message = 1; }
//! message EchoReply { string message = 1; string source_ip = 2; }
//! ```
//!
//! In a project with `protoc`, use `tonic_prost_build::compile_protos` in
//! `build.rs` and `tonic::include_proto!` instead.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::Stream;
use http::uri::PathAndQuery;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

const UNARY: &str = "/rstream.example.Echo/Unary";
const CHAT: &str = "/rstream.example.Echo/Chat";

/// `message EchoRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
}

/// `message EchoReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    /// The caller's IP address as the server saw it ("" when unknown).
    #[prost(string, tag = "2")]
    pub source_ip: String,
}

/// The stream of replies `Chat` returns.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

/// `service Echo`, server side: implement it, wrap it in [`EchoServer`].
pub trait Echo: Send + Sync + 'static {
    /// `rpc Unary`.
    fn unary(
        &self,
        request: Request<EchoRequest>,
    ) -> impl Future<Output = Result<Response<EchoReply>, Status>> + Send;

    /// `rpc Chat` (bidirectional streaming).
    fn chat(
        &self,
        request: Request<Streaming<EchoRequest>>,
    ) -> impl Future<Output = Result<Response<ReplyStream>, Status>> + Send;
}

/// An [`Echo`] as a tonic service, for `Server::builder().add_service(..)`
/// or `tonic::service::Routes`.
#[derive(Debug)]
pub struct EchoServer<T> {
    inner: Arc<T>,
}

impl<T> EchoServer<T> {
    pub fn new(inner: T) -> Self {
        EchoServer {
            inner: Arc::new(inner),
        }
    }
}

impl<T> Clone for EchoServer<T> {
    fn clone(&self) -> Self {
        EchoServer {
            inner: self.inner.clone(),
        }
    }
}

impl<T> NamedService for EchoServer<T> {
    const NAME: &'static str = "rstream.example.Echo";
}

impl<T, B> tower::Service<http::Request<B>> for EchoServer<T>
where
    T: Echo,
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        match request.uri().path() {
            UNARY => Box::pin(async move {
                let method = tower::service_fn(move |r| {
                    let inner = inner.clone();
                    async move { inner.unary(r).await }
                });
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                Ok(grpc.unary(method, request).await)
            }),
            CHAT => Box::pin(async move {
                let method = tower::service_fn(move |r| {
                    let inner = inner.clone();
                    async move { inner.chat(r).await }
                });
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                Ok(grpc.streaming(method, request).await)
            }),
            _ => Box::pin(async {
                let (parts, ()) = Status::unimplemented("no such method")
                    .into_http::<()>()
                    .into_parts();
                Ok(http::Response::from_parts(parts, Body::empty()))
            }),
        }
    }
}

/// `service Echo`, client side, over any tonic transport (a `Channel`).
#[derive(Clone, Debug)]
pub struct EchoClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> EchoClient<T>
where
    T: tonic::client::GrpcService<Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>> + Send,
{
    pub fn new(transport: T) -> Self {
        EchoClient {
            inner: tonic::client::Grpc::new(transport),
        }
    }

    /// `rpc Unary`.
    pub async fn unary(
        &mut self,
        request: impl tonic::IntoRequest<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        self.ready().await?;
        self.inner
            .unary(
                request.into_request(),
                PathAndQuery::from_static(UNARY),
                ProstCodec::default(),
            )
            .await
    }

    /// `rpc Chat`: the replies stream back while requests are still sent.
    pub async fn chat(
        &mut self,
        requests: impl tonic::IntoStreamingRequest<Message = EchoRequest>,
    ) -> Result<Response<Streaming<EchoReply>>, Status> {
        self.ready().await?;
        self.inner
            .streaming(
                requests.into_streaming_request(),
                PathAndQuery::from_static(CHAT),
                ProstCodec::default(),
            )
            .await
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("service not ready: {}", e.into())))
    }
}
