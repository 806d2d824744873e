//! [`Connector`]: `tower::Service<Uri>` for hyper-util's pooled client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;

use crate::client::{Client, DialOptions};
use crate::error::{code, Error, Result};
use crate::stream::RstreamStream;

/// Dials private tunnels for `hyper_util::client::legacy::Client`.
///
/// The request URI's host is the tunnel name or id
/// (`http://private-api/health`). Every new pooled connection is one
/// [`Client::dial`]; keep-alive reuses it. Each response carries the
/// connection's [`StreamInfo`](crate::StreamInfo) in its extensions.
///
/// ```no_run
/// # async fn run(client: rstream::Client) -> Result<(), Box<dyn std::error::Error>> {
/// use http_body_util::Empty;
/// use hyper_util::{client::legacy::Client, rt::TokioExecutor};
///
/// let http = Client::builder(TokioExecutor::new())
///     .build::<_, Empty<bytes::Bytes>>(client.connector());
/// let response = http.get("http://private-api/health".parse()?).await?;
/// println!("{}", response.status());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct Connector {
    client: Client,
    options: DialOptions,
}

impl Connector {
    /// A connector dialing with `client`'s defaults.
    pub fn new(client: Client) -> Self {
        Connector {
            client,
            options: DialOptions::default(),
        }
    }

    /// Uses these dial options for every connection.
    pub fn dial_options(mut self, options: DialOptions) -> Self {
        self.options = options;
        self
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<RstreamStream>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let client = self.client.clone();
        let options = self.options.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| {
                Error::config(
                    code::INVALID_TUNNEL,
                    format!("URI {uri} has no host (the tunnel name or id)"),
                )
            })?;
            let stream = client.dial_with(host, options).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

impl Connection for RstreamStream {
    fn connected(&self) -> Connected {
        Connected::new().extra(self.info().clone())
    }
}
