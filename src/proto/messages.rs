//! The wire schema, package `rstream.io_rstrm.protobuf`, protocol 1.4.5.
//!
//! Hand-written `prost` derive structs (no `protoc` at build time), field
//! for field as PROTOCOL.md §3 lists them. `google.protobuf` wrapper types
//! (`StringValue`, `BoolValue`, `UInt32Value`) map to `Option<String>`,
//! `Option<bool>` and `Option<u32>` with `message` encoding, which keeps
//! the difference between an absent wrapper and a present default value.
//!
//! One file of ~610 lines on purpose: it is the schema, read side by side
//! with PROTOCOL.md §3; split, it would no longer read like one.

use std::collections::HashMap;

/// One framed message: exactly one payload member, or none (a valid empty message).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Message {
    /// The payload member.
    #[prost(
        oneof = "message::Payload",
        tags = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17"
    )]
    pub payload: Option<message::Payload>,
}

/// Nested types of [`Message`].
pub mod message {
    use super::*;

    /// The `oneof payload` of [`Message`](super::Message).
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Payload {
        /// 1
        #[prost(message, tag = "1")]
        OpenControlChannelReq(OpenControlChannelReq),
        /// 2
        #[prost(message, tag = "2")]
        OpenControlChannelRsp(OpenControlChannelRsp),
        /// 3
        #[prost(message, tag = "3")]
        CloseControlChannelReq(CloseControlChannelReq),
        /// 4
        #[prost(message, tag = "4")]
        CloseControlChannelRsp(CloseControlChannelRsp),
        /// 5
        #[prost(message, tag = "5")]
        OpenTunnelReq(OpenTunnelReq),
        /// 6
        #[prost(message, tag = "6")]
        OpenTunnelRsp(OpenTunnelRsp),
        /// 7
        #[prost(message, tag = "7")]
        CloseTunnelReq(CloseTunnelReq),
        /// 8
        #[prost(message, tag = "8")]
        CloseTunnelRsp(CloseTunnelRsp),
        /// 9
        #[prost(message, tag = "9")]
        ProxyConnReq(ProxyConnReq),
        /// 10
        #[prost(message, tag = "10")]
        ProxyConnRsp(ProxyConnRsp),
        /// 11
        #[prost(message, tag = "11")]
        ProxyReq(ProxyReq),
        /// 12
        #[prost(message, tag = "12")]
        ProxyRsp(ProxyRsp),
        /// 13
        #[prost(message, tag = "13")]
        StreamReq(StreamReq),
        /// 14
        #[prost(message, tag = "14")]
        StreamRsp(StreamRsp),
        /// 15
        #[prost(message, tag = "15")]
        Heartbeat(Heartbeat),
        /// 16
        #[prost(message, tag = "16")]
        ServerMessage(ServerMessage),
        /// 17
        #[prost(message, tag = "17")]
        DatagramChannelClose(DatagramChannelClose),
    }

    impl Payload {
        /// The member's name, for logs and protocol errors.
        pub fn name(&self) -> &'static str {
            match self {
                Payload::OpenControlChannelReq(_) => "OpenControlChannelReq",
                Payload::OpenControlChannelRsp(_) => "OpenControlChannelRsp",
                Payload::CloseControlChannelReq(_) => "CloseControlChannelReq",
                Payload::CloseControlChannelRsp(_) => "CloseControlChannelRsp",
                Payload::OpenTunnelReq(_) => "OpenTunnelReq",
                Payload::OpenTunnelRsp(_) => "OpenTunnelRsp",
                Payload::CloseTunnelReq(_) => "CloseTunnelReq",
                Payload::CloseTunnelRsp(_) => "CloseTunnelRsp",
                Payload::ProxyConnReq(_) => "ProxyConnReq",
                Payload::ProxyConnRsp(_) => "ProxyConnRsp",
                Payload::ProxyReq(_) => "ProxyReq",
                Payload::ProxyRsp(_) => "ProxyRsp",
                Payload::StreamReq(_) => "StreamReq",
                Payload::StreamRsp(_) => "StreamRsp",
                Payload::Heartbeat(_) => "Heartbeat",
                Payload::ServerMessage(_) => "ServerMessage",
                Payload::DatagramChannelClose(_) => "DatagramChannelClose",
            }
        }
    }
}

impl Message {
    /// Wraps a payload member.
    pub fn new(payload: message::Payload) -> Self {
        Message {
            payload: Some(payload),
        }
    }

    /// The payload member's name, or `"empty"`.
    pub fn name(&self) -> &'static str {
        self.payload.as_ref().map_or("empty", |p| p.name())
    }
}

/// An IPv4 or IPv6 address.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct IpAddress {
    /// The address.
    #[prost(oneof = "ip_address::Addr", tags = "1, 2")]
    pub addr: Option<ip_address::Addr>,
}

/// Nested types of [`IpAddress`].
pub mod ip_address {
    /// The `oneof addr` of [`IpAddress`](super::IpAddress).
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Addr {
        /// `a.b.c.d` as `a<<24 | b<<16 | c<<8 | d`.
        #[prost(fixed32, tag = "1")]
        V4(u32),
        /// The 16 raw address bytes.
        #[prost(bytes, tag = "2")]
        V6(Vec<u8>),
    }
}

impl From<std::net::IpAddr> for IpAddress {
    fn from(ip: std::net::IpAddr) -> Self {
        let addr = match ip {
            std::net::IpAddr::V4(v4) => ip_address::Addr::V4(u32::from(v4)),
            std::net::IpAddr::V6(v6) => ip_address::Addr::V6(v6.octets().to_vec()),
        };
        IpAddress { addr: Some(addr) }
    }
}

impl IpAddress {
    /// The address, or `None` when absent or malformed (a `v6` that is not 16 bytes).
    pub fn to_ip(&self) -> Option<std::net::IpAddr> {
        match self.addr.as_ref()? {
            ip_address::Addr::V4(v) => Some(std::net::Ipv4Addr::from(*v).into()),
            ip_address::Addr::V6(b) => {
                let octets: [u8; 16] = b.as_slice().try_into().ok()?;
                Some(std::net::Ipv6Addr::from(octets).into())
            }
        }
    }
}

/// An engine error.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Error {
    /// The error code (open enum: unknown values are preserved).
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub code: i32,
    /// Optional description.
    #[prost(message, optional, tag = "2")]
    pub message: Option<String>,
}

impl Error {
    /// Builds an error with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Error {
            code: code as i32,
            message: Some(message.into()),
        }
    }
}

/// Engine error codes. The wire value is an open `i32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ::prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    /// 0
    Unspecified = 0,
    /// 1000: authentication / authorization.
    Unauthorized = 1000,
    /// 2000: request validation.
    InvalidRequest = 2000,
    /// 2010
    ProtocolVersionMissing = 2010,
    /// 2020
    ProtocolVersionInvalid = 2020,
    /// 2030
    ProtocolVersionIncompatible = 2030,
    /// 3000: not found.
    TunnelNotFound = 3000,
    /// 4000: invalid state / stream.
    InvalidStream = 4000,
    /// 5000: feature, plan or configuration not available.
    FeatureNotAvailable = 5000,
    /// 6000: a dependency is unavailable.
    ServiceUnavailable = 6000,
    /// 7000: runtime capacity exhausted.
    CapacityExhausted = 7000,
    /// 9000: internal.
    Internal = 9000,
}

impl ErrorCode {
    /// The proto name, e.g. `ERROR_CODE_INVALID_STREAM`.
    pub fn as_str_name(&self) -> &'static str {
        match self {
            ErrorCode::Unspecified => "ERROR_CODE_UNSPECIFIED",
            ErrorCode::Unauthorized => "ERROR_CODE_UNAUTHORIZED",
            ErrorCode::InvalidRequest => "ERROR_CODE_INVALID_REQUEST",
            ErrorCode::ProtocolVersionMissing => "ERROR_CODE_PROTOCOL_VERSION_MISSING",
            ErrorCode::ProtocolVersionInvalid => "ERROR_CODE_PROTOCOL_VERSION_INVALID",
            ErrorCode::ProtocolVersionIncompatible => "ERROR_CODE_PROTOCOL_VERSION_INCOMPATIBLE",
            ErrorCode::TunnelNotFound => "ERROR_CODE_TUNNEL_NOT_FOUND",
            ErrorCode::InvalidStream => "ERROR_CODE_INVALID_STREAM",
            ErrorCode::FeatureNotAvailable => "ERROR_CODE_FEATURE_NOT_AVAILABLE",
            ErrorCode::ServiceUnavailable => "ERROR_CODE_SERVICE_UNAVAILABLE",
            ErrorCode::CapacityExhausted => "ERROR_CODE_CAPACITY_EXHAUSTED",
            ErrorCode::Internal => "ERROR_CODE_INTERNAL",
        }
    }
}

/// Who the client is.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ClientDetails {
    /// e.g. `rstream-rust-runtime`.
    #[prost(message, optional, tag = "1")]
    pub agent: Option<String>,
    /// e.g. `sdk`.
    #[prost(message, optional, tag = "2")]
    pub channel: Option<String>,
    /// SDK version.
    #[prost(message, optional, tag = "3")]
    pub version: Option<String>,
    /// Operating system.
    #[prost(message, optional, tag = "4")]
    pub os: Option<String>,
    /// CPU architecture.
    #[prost(message, optional, tag = "5")]
    pub arch: Option<String>,
    /// Bearer token (agent token, dial token, or the per-stream secret).
    #[prost(message, optional, tag = "6")]
    pub token: Option<String>,
    /// `1.4.5`.
    #[prost(message, optional, tag = "7")]
    pub protocol_version: Option<String>,
}

/// Who the engine is.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ServerDetails {
    /// Agent.
    #[prost(message, optional, tag = "1")]
    pub agent: Option<String>,
    /// Channel.
    #[prost(message, optional, tag = "2")]
    pub channel: Option<String>,
    /// Version.
    #[prost(message, optional, tag = "3")]
    pub version: Option<String>,
    /// Plan.
    #[prost(message, optional, tag = "4")]
    pub plan: Option<String>,
    /// Provider.
    #[prost(message, optional, tag = "5")]
    pub provider: Option<String>,
    /// Region.
    #[prost(message, optional, tag = "6")]
    pub region: Option<String>,
    /// Update hint.
    #[prost(message, optional, tag = "7")]
    pub update: Option<String>,
}

/// Heartbeat negotiation (1.4.5).
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct ControlChannelLiveness {
    /// Proposed (client) or echoed (engine) heartbeat interval.
    #[prost(uint32, tag = "1")]
    pub heartbeat_interval_ms: u32,
    /// The engine's liveness timeout (0 from the client).
    #[prost(uint32, tag = "2")]
    pub heartbeat_timeout_ms: u32,
}

/// First frame of a control channel.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct OpenControlChannelReq {
    /// Client identity.
    #[prost(message, optional, tag = "1")]
    pub client_details: Option<ClientDetails>,
    /// Present when heartbeats are enabled.
    #[prost(message, optional, tag = "2")]
    pub liveness: Option<ControlChannelLiveness>,
}

/// The engine's answer to [`OpenControlChannelReq`].
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct OpenControlChannelRsp {
    /// `ok` or `error`.
    #[prost(oneof = "open_control_channel_rsp::Payload", tags = "1, 2")]
    pub payload: Option<open_control_channel_rsp::Payload>,
}

/// Nested types of [`OpenControlChannelRsp`].
pub mod open_control_channel_rsp {
    /// Success.
    #[derive(Clone, PartialEq, ::prost::Message)]
    pub struct Ok {
        /// Engine-assigned client id.
        #[prost(string, tag = "1")]
        pub client_id: String,
        /// Engine identity.
        #[prost(message, optional, tag = "2")]
        pub server_details: Option<super::ServerDetails>,
        /// Negotiated liveness.
        #[prost(message, optional, tag = "3")]
        pub liveness: Option<super::ControlChannelLiveness>,
    }

    /// The `oneof payload`.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Payload {
        /// Success.
        #[prost(message, tag = "1")]
        Ok(Ok),
        /// Failure.
        #[prost(message, tag = "2")]
        Error(super::Error),
    }
}

/// Empty.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct CloseControlChannelReq {}

/// Empty.
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct CloseControlChannelRsp {}

/// Create a tunnel.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct OpenTunnelReq {
    /// Fresh lowercase hyphenated UUID.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// Requested properties.
    #[prost(message, optional, tag = "2")]
    pub tunnel_properties: Option<TunnelProperties>,
}

/// Answer to [`OpenTunnelReq`].
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct OpenTunnelRsp {
    /// Echoed request id.
    #[prost(string, tag = "1")]
    pub request_id: String,
    /// Properties or error.
    #[prost(oneof = "open_tunnel_rsp::Payload", tags = "2, 3")]
    pub payload: Option<open_tunnel_rsp::Payload>,
}

/// Nested types of [`OpenTunnelRsp`].
pub mod open_tunnel_rsp {
    /// The `oneof payload`.
    #[allow(clippy::large_enum_variant)] // mirrors the wire schema
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Payload {
        /// Success: the tunnel as created.
        #[prost(message, tag = "2")]
        TunnelProperties(super::TunnelProperties),
        /// Failure.
        #[prost(message, tag = "3")]
        Error(super::Error),
    }
}

/// Close a tunnel.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CloseTunnelReq {
    /// Tunnel id.
    #[prost(string, tag = "1")]
    pub tunnel_id: String,
}

/// A tunnel was closed (solicited or not).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct CloseTunnelRsp {
    /// Tunnel id.
    #[prost(string, tag = "1")]
    pub tunnel_id: String,
}

/// Engine → client: a downstream connection is waiting.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ProxyConnReq {
    /// Target tunnel.
    #[prost(string, tag = "1")]
    pub tunnel_id: String,
    /// Stream id to echo.
    #[prost(string, tag = "2")]
    pub stream_id: String,
    /// Per-stream secret, sent back as the `ProxyReq` token.
    #[prost(message, optional, tag = "3")]
    pub secret: Option<String>,
    /// Downstream source address.
    #[prost(message, optional, tag = "4")]
    pub source_ip: Option<IpAddress>,
    /// Where to open the proxy connection (`host[:port]`), if not the engine.
    #[prost(message, optional, tag = "5")]
    pub proxy_endpoint: Option<String>,
}

/// Client → engine: outcome of a [`ProxyConnReq`].
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ProxyConnRsp {
    /// Echoed stream id.
    #[prost(string, tag = "1")]
    pub stream_id: String,
    /// Absent = success.
    #[prost(message, optional, tag = "2")]
    pub error: Option<Error>,
}

/// First frame of a proxy connection.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ProxyReq {
    /// Identity; `token` = the stream secret.
    #[prost(message, optional, tag = "1")]
    pub client_details: Option<ClientDetails>,
    /// The stream id from [`ProxyConnReq`].
    #[prost(string, tag = "2")]
    pub stream_id: String,
    /// Zero-RTT: no [`ProxyRsp`] will follow.
    #[prost(message, optional, tag = "3")]
    pub zero_rtt: Option<bool>,
}

/// Answer to [`ProxyReq`] (only without zero-RTT).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ProxyRsp {
    /// Absent = success.
    #[prost(message, optional, tag = "1")]
    pub error: Option<Error>,
}

/// First frame of a private dial.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct StreamReq {
    /// Identity and token.
    #[prost(message, optional, tag = "1")]
    pub client_details: Option<ClientDetails>,
    /// Tunnel id or name.
    #[prost(string, tag = "2")]
    pub tunnel_id_name: String,
    /// Zero-RTT: no [`StreamRsp`] will follow.
    #[prost(message, optional, tag = "3")]
    pub zero_rtt: Option<bool>,
    /// QUIC datagram channel (plane A; never sent by this SDK, whose
    /// datagram dials are framed streams).
    #[prost(message, optional, tag = "4")]
    pub datagram_channel: Option<bool>,
}

/// Answer to [`StreamReq`] (only without zero-RTT).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct StreamRsp {
    /// Stream id or error.
    #[prost(oneof = "stream_rsp::Payload", tags = "1, 2")]
    pub payload: Option<stream_rsp::Payload>,
}

/// Nested types of [`StreamRsp`].
pub mod stream_rsp {
    /// The `oneof payload`.
    #[derive(Clone, PartialEq, ::prost::Oneof)]
    pub enum Payload {
        /// Success.
        #[prost(string, tag = "1")]
        StreamId(String),
        /// Failure.
        #[prost(message, tag = "2")]
        Error(super::Error),
    }
}

/// A datagram channel closed (the SDK closes the accepted channel with this
/// stream id).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct DatagramChannelClose {
    /// Stream id.
    #[prost(string, tag = "1")]
    pub stream_id: String,
    /// Reason.
    #[prost(message, optional, tag = "2")]
    pub error: Option<Error>,
}

/// Heartbeat (client: `sequence`; engine: `acknowledgement`).
#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Heartbeat {
    /// Client sequence number (1, 2, 3…), 0 from the engine.
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
    /// Engine acknowledgement, 0 from the client.
    #[prost(uint64, tag = "2")]
    pub acknowledgement: u64,
}

/// Informational text from the engine.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct ServerMessage {
    /// The text.
    #[prost(string, tag = "1")]
    pub message: String,
}

/// Tunnel properties (requested in `OpenTunnelReq`, returned in `OpenTunnelRsp`).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct TunnelProperties {
    /// Engine-assigned id (read-only).
    #[prost(message, optional, tag = "1")]
    pub id: Option<String>,
    /// Creation date (read-only).
    #[prost(message, optional, tag = "2")]
    pub creation_date: Option<::prost_types::Timestamp>,
    /// Name (dial by name).
    #[prost(message, optional, tag = "3")]
    pub name: Option<String>,
    /// `bytestream` or `datagram`.
    #[prost(message, optional, tag = "4")]
    pub r#type: Option<String>,
    /// Published vs private.
    #[prost(message, optional, tag = "5")]
    pub publish: Option<bool>,
    /// `http`, `tls`, `tcp`, `dtls`, `quic`.
    #[prost(message, optional, tag = "6")]
    pub protocol: Option<String>,
    /// Labels.
    #[prost(map = "string, string", tag = "7")]
    pub labels: HashMap<String, String>,
    /// GeoIP allow-list.
    #[prost(string, repeated, tag = "8")]
    pub geoip: Vec<String>,
    /// CIDR allow-list.
    #[prost(string, repeated, tag = "9")]
    pub trusted_ips: Vec<String>,
    /// Deprecated published host (read-only).
    #[prost(message, optional, tag = "10")]
    pub host: Option<String>,
    /// `passthrough` or `terminated`.
    #[prost(message, optional, tag = "11")]
    pub tls_mode: Option<String>,
    /// TLS ALPNs.
    #[prost(string, repeated, tag = "12")]
    pub tls_alpns: Vec<String>,
    /// Minimum TLS version.
    #[prost(message, optional, tag = "13")]
    pub tls_min_version: Option<String>,
    /// TLS cipher suites.
    #[prost(string, repeated, tag = "14")]
    pub tls_ciphers: Vec<String>,
    /// Downstream mTLS.
    #[prost(message, optional, tag = "15")]
    pub mtls_auth: Option<bool>,
    /// Deprecated.
    #[prost(message, optional, tag = "16")]
    pub mtls_cacert_pem: Option<String>,
    /// Upstream HTTP version: `http/1.1`, `h2c`, `h2`, `h3`.
    #[prost(message, optional, tag = "17")]
    pub http_version: Option<String>,
    /// Deprecated.
    #[prost(message, optional, tag = "18")]
    pub http_use_tls: Option<bool>,
    /// Edge token auth.
    #[prost(message, optional, tag = "19")]
    pub token_auth: Option<bool>,
    /// Edge browser login.
    #[prost(message, optional, tag = "20")]
    pub rstream_auth: Option<bool>,
    /// Edge challenge page.
    #[prost(message, optional, tag = "21")]
    pub challenge_mode: Option<bool>,
    /// Requested / assigned public hostname.
    #[prost(message, optional, tag = "22")]
    pub hostname: Option<String>,
    /// Published port.
    #[prost(message, optional, tag = "23")]
    pub port: Option<u32>,
    /// Upstream TLS.
    #[prost(message, optional, tag = "24")]
    pub upstream_tls: Option<bool>,
    /// Datagram delivery guarantee.
    #[prost(message, optional, tag = "25")]
    pub datagram_guaranteed_delivery: Option<bool>,
    /// Cross-region routing.
    #[prost(message, optional, tag = "26")]
    pub allow_cross_region_routing: Option<bool>,
}
