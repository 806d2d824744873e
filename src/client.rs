//! [`Client`]: the entry point. Opens control channels and dials private tunnels.

use std::sync::Arc;

use crate::api::{ApiOptions, EngineApi};
use crate::config::{ClientOptions, ResolvedOptions, Secret};
use crate::control::{ConnectOptions, ControlChannel};
use crate::datagram::{DatagramChannel, DatagramPeer};
use crate::error::{code, Error, Result};
use crate::http::Connector;
use crate::link::EngineLink;
pub use crate::link::AGENT;
use crate::proto::{
    message::Payload, read_answer_within, write_frame, Message, StreamReq, StreamRsp,
};
use crate::stream::{RstreamStream, StreamInfo};
use crate::transport::Endpoint;

/// An rstream client: where the engine is, how to authenticate, and one
/// shared TLS configuration (so sessions resume across connections).
///
/// Cheap to clone. Creating it does no I/O; [`connect`](Client::connect)
/// opens a control channel and [`dial`](Client::dial) a private stream.
#[derive(Clone)]
pub struct Client {
    link: Arc<EngineLink>,
    /// The Engine API connection pool [`Client::api`] handles share, built
    /// on first use.
    api: Arc<std::sync::OnceLock<Arc<crate::api::ApiTransport>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("engine", &self.link.options.engine)
            .field(
                "resolved_engine",
                &self.link.resolved_engine().map(|e| e.endpoint.to_string()),
            )
            .field("token", &self.link.options.token)
            .field("proxy", &self.link.options.proxy)
            .finish()
    }
}

/// Per-dial settings for [`Client::dial_with`].
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct DialOptions {
    zero_rtt: Option<bool>,
    token: Option<Secret>,
}

impl DialOptions {
    /// Defaults: the client's zero-RTT setting and token.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overrides zero-RTT for this dial.
    pub fn zero_rtt(mut self, enabled: bool) -> Self {
        self.zero_rtt = Some(enabled);
        self
    }

    /// Uses this token instead of the client's for this dial.
    pub fn token(mut self, token: impl Into<Secret>) -> Self {
        self.token = Some(token.into());
        self
    }
}

impl Client {
    /// A client from explicit options (the environment is read only if the
    /// options came from [`ClientOptions::from_env`]).
    pub fn new(options: ClientOptions) -> Result<Client> {
        Client::from_resolved(options.resolve()?)
    }

    /// A client from already [resolved](ClientOptions::resolve) options
    /// (e.g. after printing them for `--debug`).
    ///
    /// Fails with `ERR_RSTREAM_ENGINE_REQUIRED` when neither an engine nor a
    /// project endpoint is configured.
    pub fn from_resolved(options: ResolvedOptions) -> Result<Client> {
        Ok(Client {
            link: Arc::new(EngineLink::new(options)?),
            api: Arc::default(),
        })
    }

    /// Options to configure, then [`ClientOptions::build`].
    pub fn builder() -> ClientOptions {
        ClientOptions::new()
    }

    /// A client configured from the environment and the CLI's config file
    /// (see [`config`](crate::config)): `RSTREAM_ENGINE` (or legacy
    /// `RSTREAM_ENGINE_ADDRESS`), `RSTREAM_AUTHENTICATION_TOKEN`,
    /// `RSTREAM_CA_FILE` (extra trust anchors, as printed by the local
    /// engine), `RSTREAM_CONTEXT`, `~/.rstream/config.yaml`, …
    pub fn from_env() -> Result<Client> {
        ClientOptions::from_env().build()
    }

    /// The engine address, once known: always for a configured engine, after
    /// the first [`connect`](Client::connect) or [`dial`](Client::dial) (or
    /// [`resolve_engine`](Client::resolve_engine)) for a managed project.
    pub fn engine(&self) -> Option<&Endpoint> {
        self.link.resolved_engine().map(|e| &e.endpoint)
    }

    /// The engine address, resolving a managed project endpoint through the
    /// control-plane API if that has not happened yet (once per client; a
    /// failure is not cached).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a cancelled resolution is simply started again by the
    /// next call.
    pub async fn resolve_engine(&self) -> Result<Endpoint> {
        Ok(self.link.engine().await?.endpoint.clone())
    }

    /// The resolved options this client uses (printable; secrets redacted).
    pub fn options(&self) -> &ResolvedOptions {
        &self.link.options
    }

    /// What control channels dial with (they hold a clone, not the
    /// `Client`).
    pub(crate) fn link(&self) -> &Arc<EngineLink> {
        &self.link
    }

    /// The Engine API connection pool, built on first use.
    pub(crate) fn api_pool(&self) -> &std::sync::OnceLock<Arc<crate::api::ApiTransport>> {
        &self.api
    }

    /// Opens a control channel, on which tunnels are created.
    ///
    /// The channel reconnects by itself (and re-creates its tunnels) when
    /// the connection is lost, with the default
    /// [`ReconnectPolicy`](crate::ReconnectPolicy); see
    /// [`connect_with`](Client::connect_with) to change or disable that.
    /// A failure of this first connection is returned, not retried.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the half-open connection.
    pub async fn connect(&self) -> Result<ControlChannel> {
        ControlChannel::open(self.link.clone()).await
    }

    /// Opens a control channel with explicit options, e.g. a custom
    /// [`ReconnectPolicy`](crate::ReconnectPolicy) or none at all:
    ///
    /// ```no_run
    /// # async fn run(client: rstream::Client) -> rstream::Result<()> {
    /// use std::time::Duration;
    /// use rstream::control::ReconnectPolicy;
    ///
    /// let control = client
    ///     .connect_with(ReconnectPolicy::new().max_delay(Duration::from_secs(5)))
    ///     .await?;
    /// let no_reconnect = client.connect_with(ReconnectPolicy::disabled()).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// The first connection is made here and its failure is returned as is;
    /// the policy governs only reconnects after a successful open.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future drops the half-open connection.
    pub async fn connect_with(&self, options: impl Into<ConnectOptions>) -> Result<ControlChannel> {
        ControlChannel::open_with(self.link.clone(), options.into()).await
    }

    /// The Engine HTTP API of this client's engine, with the default
    /// [`ApiOptions`]. Does no I/O.
    ///
    /// All the handles this returns for one client (and for its clones)
    /// share one connection pool and one mTLS discovery cache, built on
    /// the first call: calling `client.api()` per request reuses the
    /// pooled connections.
    pub fn api(&self) -> EngineApi {
        EngineApi::shared(self)
    }

    /// [`api`](Self::api) with explicit options. The handle gets a
    /// connection pool of its own (shared by its clones only): keep it
    /// rather than calling this per request.
    pub fn api_with(&self, options: ApiOptions) -> EngineApi {
        EngineApi::with_options(self, options)
    }

    /// A [`Connector`] for `hyper_util::client::legacy::Client`.
    pub fn connector(&self) -> Connector {
        Connector::new(self.clone())
    }

    /// Dials a private tunnel by name or id, with the client's defaults.
    ///
    /// ```no_run
    /// # async fn run(client: rstream::Client) -> rstream::Result<()> {
    /// use tokio::io::AsyncWriteExt;
    /// let mut stream = client.dial("private-api").await?;
    /// stream.write_all(b"ping").await?;
    /// # Ok(()) }
    /// ```
    pub async fn dial(&self, tunnel: &str) -> Result<RstreamStream> {
        self.dial_with(tunnel, DialOptions::default()).await
    }

    /// Dials a private datagram tunnel by name or id: one
    /// [`DatagramChannel`] (whole datagrams, framed on the stream: plane B,
    /// see [`datagram`](crate::datagram)).
    ///
    /// ```no_run
    /// # async fn run(client: rstream::Client) -> rstream::Result<()> {
    /// let channel = client.dial_datagram("udp-echo").await?;
    /// channel.send(b"ping").await?;
    /// let answer = channel.recv().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Over the TLS transport it is an ordinary dial (`StreamReq` without
    /// `datagram_channel`), framed (plane B). Over QUIC it asks for a QUIC
    /// datagram channel (plane A, `datagram_channel = true`) and falls back
    /// quietly to the framed dial when the engine refuses. Never zero-RTT:
    /// the stream id names the channel's [`peer`](DatagramChannel::peer).
    pub async fn dial_datagram(&self, tunnel: &str) -> Result<DatagramChannel> {
        self.dial_datagram_with(tunnel, DialOptions::default())
            .await
    }

    /// [`dial_datagram`](Self::dial_datagram) with per-dial options (its
    /// zero-RTT setting is ignored: a datagram dial waits for the stream id).
    pub async fn dial_datagram_with(
        &self,
        tunnel: &str,
        options: DialOptions,
    ) -> Result<DatagramChannel> {
        #[cfg(feature = "quic")]
        {
            let target = tunnel.trim();
            if !target.is_empty() {
                let token = options.token.clone();
                if let Some(c) = crate::datagram::dial::dial(&self.link, target, token).await? {
                    return Ok(c);
                }
            }
        }
        let stream = self.dial_with(tunnel, options.zero_rtt(false)).await?;
        let stream_id = stream
            .info()
            .stream_id()
            .map(Arc::from)
            .ok_or_else(|| Error::protocol("the engine answered a dial without a stream id"))?;
        // The dial's own stream is its lifeline: no control channel involved.
        Ok(DatagramChannel::new(
            stream,
            DatagramPeer::new(stream_id, None),
            None,
        ))
    }

    /// Dials a private tunnel with per-dial options.
    pub async fn dial_with(&self, tunnel: &str, options: DialOptions) -> Result<RstreamStream> {
        let target = tunnel.trim();
        if target.is_empty() {
            return Err(Error::config(
                code::INVALID_TUNNEL,
                "tunnel id or name must not be empty",
            ));
        }
        let inner = &self.link;
        let zero_rtt = options.zero_rtt.unwrap_or(inner.options.zero_rtt);
        let engine = inner.engine().await?;
        let token = match options.token {
            Some(t) => Some(t),
            None => inner.options.bearer(&engine.endpoint.to_string())?,
        };
        let mut io = inner.dialer.connect(&engine.endpoint, &engine.sni).await?;
        let request = StreamReq {
            client_details: Some(inner.details(token.map(|t| t.expose().to_owned()))),
            tunnel_id_name: target.to_owned(),
            zero_rtt: Some(zero_rtt),
            datagram_channel: None,
        };
        write_frame(&mut io, &Message::new(Payload::StreamReq(request))).await?;
        let mut stream_id = None;
        if !zero_rtt {
            let op = inner.options.operation_timeout;
            let id = read_answer_within::<StreamRsp, _>(&mut io, op, || {
                Error::protocol("engine closed the dial before answering")
            })
            .await?
            .into_result()?;
            stream_id = Some(Arc::from(id));
        }
        Ok(RstreamStream::new(
            io,
            StreamInfo::new(Arc::from(target), stream_id, None),
        ))
    }
}
