//! [`Client`]: the entry point. Opens control channels and dials private tunnels.

use std::sync::Arc;

use crate::config::{ClientOptions, Resolved, Secret};
use crate::control::ControlChannel;
use crate::error::{Error, Result};
use crate::proto::{
    message::Payload, read_frame, stream_rsp, write_frame, ClientDetails, Message, StreamReq,
    ALPN, PROTOCOL_VERSION,
};
use crate::stream::{RstreamStream, StreamInfo};
use crate::transport::{Endpoint, TlsDialer};

/// The agent name this SDK identifies as.
pub const AGENT: &str = "rstream-rust-runtime";

/// An rstream client: where the engine is, how to authenticate, and one
/// shared TLS configuration (so sessions resume across connections).
///
/// Cheap to clone. Creating it does no I/O; [`connect`](Client::connect)
/// opens a control channel and [`dial`](Client::dial) a private stream.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

pub(crate) struct ClientInner {
    pub(crate) engine: Endpoint,
    pub(crate) sni: String,
    pub(crate) dialer: TlsDialer,
    pub(crate) options: Resolved,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("engine", &self.inner.engine.to_string())
            .field("token", &self.inner.options.token)
            .finish()
    }
}

/// Per-dial settings for [`Client::dial_with`].
#[derive(Clone, Debug, Default)]
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
        let options = options.resolve()?;
        let config = options.tls.client_config(&[ALPN])?;
        let sni = options
            .tls
            .server_name
            .clone()
            .unwrap_or_else(|| options.engine.host().to_owned());
        Ok(Client {
            inner: Arc::new(ClientInner {
                engine: options.engine.clone(),
                sni,
                dialer: TlsDialer::new(config, options.connect_timeout),
                options,
            }),
        })
    }

    /// Options to configure, then [`ClientOptions::build`].
    pub fn builder() -> ClientOptions {
        ClientOptions::new()
    }

    /// A client configured from the environment: `RSTREAM_ENGINE` (or
    /// legacy `RSTREAM_ENGINE_ADDRESS`), `RSTREAM_AUTHENTICATION_TOKEN`,
    /// `RSTREAM_CA_FILE` (extra trust anchors, as printed by the local engine).
    pub fn from_env() -> Result<Client> {
        ClientOptions::from_env().build()
    }

    /// The engine address.
    pub fn engine(&self) -> &Endpoint {
        &self.inner.engine
    }

    pub(crate) fn inner(&self) -> &ClientInner {
        &self.inner
    }

    /// Opens a control channel, on which tunnels are created.
    pub async fn connect(&self) -> Result<ControlChannel> {
        ControlChannel::open(self.clone()).await
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

    /// Dials a private tunnel with per-dial options.
    pub async fn dial_with(&self, tunnel: &str, options: DialOptions) -> Result<RstreamStream> {
        let target = tunnel.trim();
        if target.is_empty() {
            return Err(Error::config(
                "ERR_RSTREAM_INVALID_TUNNEL",
                "tunnel id or name must not be empty",
            ));
        }
        let inner = &self.inner;
        let zero_rtt = options.zero_rtt.unwrap_or(inner.options.zero_rtt);
        let token = options.token.or_else(|| inner.options.token.clone());
        let mut io = inner.dialer.connect(&inner.engine, &inner.sni).await?;
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
            let first = tokio::time::timeout(op, read_frame(&mut io))
                .await
                .map_err(|_| Error::timeout(format!("no StreamRsp within {op:?}")))??;
            match first.and_then(|m| m.payload) {
                Some(Payload::StreamRsp(rsp)) => match rsp.payload {
                    Some(stream_rsp::Payload::StreamId(id)) => stream_id = Some(Arc::from(id)),
                    Some(stream_rsp::Payload::Error(e)) => {
                        return Err(Error::engine(e.code, e.message.as_deref()))
                    }
                    None => return Err(Error::protocol("StreamRsp with neither stream id nor error")),
                },
                Some(other) => {
                    return Err(Error::protocol(format!("expected StreamRsp, got {}", other.name())))
                }
                None => return Err(Error::protocol("engine closed the dial before answering")),
            }
        }
        Ok(RstreamStream::new(
            io,
            StreamInfo::new(Arc::from(target), stream_id, None),
        ))
    }
}

impl ClientInner {
    /// `ClientDetails`, identical on every connection but for the token.
    pub(crate) fn details(&self, token: Option<String>) -> ClientDetails {
        ClientDetails {
            agent: Some(AGENT.to_owned()),
            channel: Some("sdk".to_owned()),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            os: Some(std::env::consts::OS.to_owned()),
            arch: Some(std::env::consts::ARCH.to_owned()),
            token,
            protocol_version: Some(PROTOCOL_VERSION.to_owned()),
        }
    }
}
