//! Every stable error code the crate returns, one constant each.
//!
//! [`Error::code`](crate::Error::code) is always one of these; match on them
//! rather than on string literals. The values are the `ERR_RSTREAM_*` codes the
//! other rstream SDKs use, and they do not change between releases (new ones
//! may be added).
//!
//! ```
//! use rstream::error::code;
//!
//! let e = rstream::Error::timeout("waiting for the engine");
//! assert_eq!(e.code(), code::OPERATION_TIMEOUT);
//! ```

// ----- generic -----

/// An operation did not finish within its deadline.
pub const OPERATION_TIMEOUT: &str = "ERR_RSTREAM_OPERATION_TIMEOUT";
/// A transport read, write or connect failed; the cause is the error's `source()`.
pub const IO: &str = "ERR_RSTREAM_IO";
/// A TLS setup or handshake failed; the cause is the error's `source()`.
pub const TLS: &str = "ERR_RSTREAM_TLS";
/// The engine answered with an error; see [`Error::engine_code`](crate::Error::engine_code).
pub const ENGINE: &str = "ERR_RSTREAM_ENGINE";
/// The engine sent a malformed or unexpected frame.
pub const PROTOCOL: &str = "ERR_RSTREAM_PROTOCOL";
/// A frame announced a length above the 65,535-byte cap.
pub const FRAME_TOO_LARGE: &str = "ERR_RSTREAM_FRAME_TOO_LARGE";

// ----- configuration -----

/// A configuration value (option, environment variable, file key) is invalid.
pub const INVALID_CONFIG: &str = "ERR_RSTREAM_INVALID_CONFIG";
/// The configuration file has more YAML nodes than the parser accepts.
pub const CONFIG_TOO_MANY_NODES: &str = "ERR_RSTREAM_CONFIG_TOO_MANY_NODES";
/// The engine address is malformed (no host, bad port, bad scheme).
pub const INVALID_ENGINE: &str = "ERR_RSTREAM_INVALID_ENGINE";
/// Neither an engine nor a managed project/region was configured.
pub const ENGINE_REQUIRED: &str = "ERR_RSTREAM_ENGINE_REQUIRED";
/// A timeout option is zero or above the accepted maximum.
pub const INVALID_TIMEOUT: &str = "ERR_RSTREAM_INVALID_TIMEOUT";
/// The named configuration context does not exist.
pub const CONTEXT_NOT_FOUND: &str = "ERR_RSTREAM_CONTEXT_NOT_FOUND";
/// The named configuration context matches several contexts.
pub const CONTEXT_AMBIGUOUS: &str = "ERR_RSTREAM_CONTEXT_AMBIGUOUS";
/// A token and a client certificate were both configured.
pub const AUTH_CONFLICT: &str = "ERR_RSTREAM_AUTH_CONFLICT";
/// Only one of the client certificate and its key was configured.
pub const MTLS_INCOMPLETE: &str = "ERR_RSTREAM_MTLS_INCOMPLETE";
/// The stored token would be sent to an engine other than its context's.
pub const STORED_TOKEN_ENGINE_OVERRIDE: &str = "ERR_RSTREAM_STORED_TOKEN_ENGINE_OVERRIDE";
/// The stored client certificate would be shown to an engine other than its context's.
pub const STORED_MTLS_ENGINE_OVERRIDE: &str = "ERR_RSTREAM_STORED_MTLS_ENGINE_OVERRIDE";
/// The context stores its token in a way this SDK cannot read.
pub const UNSUPPORTED_TOKEN_STORAGE: &str = "ERR_RSTREAM_UNSUPPORTED_TOKEN_STORAGE";
/// The context stores its client certificate in a way this SDK cannot read.
pub const UNSUPPORTED_MTLS_STORAGE: &str = "ERR_RSTREAM_UNSUPPORTED_MTLS_STORAGE";
/// A transport option (or proxy scheme) this SDK does not support was configured.
pub const UNSUPPORTED_TRANSPORT: &str = "ERR_RSTREAM_UNSUPPORTED_TRANSPORT";
/// The proxy URL is malformed.
pub const INVALID_PROXY: &str = "ERR_RSTREAM_INVALID_PROXY";
/// `transport.proxy` sets both `http` and `socks5`.
pub const PROXY_CONFLICT: &str = "ERR_RSTREAM_PROXY_CONFLICT";
/// `transport.proxy.http` holds a `socks5://` URL, or `socks5` an `http(s)://` one.
pub const PROXY_SCHEME_MISMATCH: &str = "ERR_RSTREAM_PROXY_SCHEME_MISMATCH";
/// `transport.proxy.tls` is set but the proxy is not an `https://` proxy.
pub const PROXY_TLS_WITHOUT_HTTPS: &str = "ERR_RSTREAM_PROXY_TLS_WITHOUT_HTTPS";
/// `transport.proxy.tls` sets both `caFile` and `insecureSkipVerify: true`.
pub const PROXY_TLS_CONFLICT: &str = "ERR_RSTREAM_PROXY_TLS_CONFLICT";
/// The region name is malformed.
pub const INVALID_REGION: &str = "ERR_RSTREAM_INVALID_REGION";
/// A region was combined with an explicit engine.
pub const REGION_ENGINE_CONFLICT: &str = "ERR_RSTREAM_REGION_ENGINE_CONFLICT";
/// A region was selected without a managed project endpoint.
pub const PROJECT_ENDPOINT_REQUIRED: &str = "ERR_RSTREAM_PROJECT_ENDPOINT_REQUIRED";
/// The control-plane API URL is malformed.
pub const INVALID_API_URL: &str = "ERR_RSTREAM_INVALID_API_URL";
/// The token's `exp` claim is in the past.
pub const TOKEN_EXPIRED: &str = "ERR_RSTREAM_TOKEN_EXPIRED";

// ----- app credentials and tokens (rstream::auth) -----

/// The application credentials are malformed (client id, or a client secret that is not hex PKCS#8 P-521).
pub const INVALID_CREDENTIALS: &str = "ERR_RSTREAM_INVALID_CREDENTIALS";
/// A token request is out of range (`expires_in`, `issued_at`, `permissions`).
pub const INVALID_TOKEN_REQUEST: &str = "ERR_RSTREAM_INVALID_TOKEN_REQUEST";
/// A `resources` document breaks the grammar (TOKENS.md §3), or is too large or too deep.
pub const INVALID_RESOURCES: &str = "ERR_RSTREAM_INVALID_RESOURCES";
/// A token is not a well-formed JWT (three base64url parts, JSON header and claims).
pub const TOKEN_MALFORMED: &str = "ERR_RSTREAM_TOKEN_MALFORMED";

// ----- managed project resolution (control-plane API) -----

/// The control-plane API answered with a non-success HTTP status or failed at the HTTP level.
pub const API_HTTP: &str = "ERR_RSTREAM_API_HTTP";
/// The control-plane API answer is not the expected JSON.
pub const API_INVALID_RESPONSE: &str = "ERR_RSTREAM_API_INVALID_RESPONSE";
/// The control-plane API did not answer in time.
pub const API_TIMEOUT: &str = "ERR_RSTREAM_API_TIMEOUT";
/// The control-plane API answered 401: the token or app credentials are not accepted.
pub const API_UNAUTHENTICATED: &str = "ERR_RSTREAM_API_UNAUTHENTICATED";
/// The control-plane API answered 403: the credentials may not do this.
pub const API_FORBIDDEN: &str = "ERR_RSTREAM_API_FORBIDDEN";
/// The control-plane API answered 404 (no such project).
pub const API_NOT_FOUND: &str = "ERR_RSTREAM_API_NOT_FOUND";
/// The control-plane API answered with a redirect, which is never followed.
pub const API_REDIRECT: &str = "ERR_RSTREAM_API_REDIRECT";
/// A control-plane API answer body exceeded its size cap.
pub const API_BODY_TOO_LARGE: &str = "ERR_RSTREAM_API_BODY_TOO_LARGE";
/// A TURN credentials ttl is not whole seconds from 1 to 3600.
pub const INVALID_TURN_TTL: &str = "ERR_RSTREAM_INVALID_TURN_TTL";
/// The project has several engines and no region was selected.
pub const REGION_AMBIGUOUS: &str = "ERR_RSTREAM_REGION_AMBIGUOUS";
/// The project has no engine in the selected region.
pub const REGION_UNAVAILABLE: &str = "ERR_RSTREAM_REGION_UNAVAILABLE";

// ----- transport -----

/// The TCP connect (or the proxy's) did not finish within the connect timeout.
pub const CONNECT_TIMEOUT: &str = "ERR_RSTREAM_CONNECT_TIMEOUT";
/// The proxy refused the tunnel or answered malformed.
pub const PROXY: &str = "ERR_RSTREAM_PROXY";
/// The proxy refused the credentials (HTTP 407).
pub const PROXY_AUTH: &str = "ERR_RSTREAM_PROXY_AUTH";

// ----- control channel and tunnels -----

/// The control channel is closed (the client was closed or the connection ended).
pub const CONTROL_CLOSED: &str = "ERR_RSTREAM_CONTROL_CLOSED";
/// The control connection was lost (EOF or I/O error); a reconnect may follow.
pub const CONTROL_LOST: &str = "ERR_RSTREAM_CONTROL_LOST";
/// No frame from the engine within the liveness timeout.
pub const CONTROL_LIVENESS: &str = "ERR_RSTREAM_CONTROL_LIVENESS";
/// The engine stopped reading: the control channel's outbox is full.
pub const CONTROL_STALLED: &str = "ERR_RSTREAM_CONTROL_STALLED";
/// The engine sent more than the control channel accepts (too many streams or pending requests).
pub const CONTROL_OVERLOAD: &str = "ERR_RSTREAM_CONTROL_OVERLOAD";
/// Reconnection stopped: attempts or the time budget ran out, or the error is permanent.
pub const RECONNECT_GAVE_UP: &str = "ERR_RSTREAM_RECONNECT_GAVE_UP";
/// The tunnel is closed.
pub const TUNNEL_CLOSED: &str = "ERR_RSTREAM_TUNNEL_CLOSED";
/// A tunnel's accept backlog is full: the application does not accept its connections.
pub const ACCEPT_BACKLOG_FULL: &str = "ERR_RSTREAM_ACCEPT_BACKLOG_FULL";
/// Tunnel options are invalid (refused before anything is sent).
pub const INVALID_TUNNEL: &str = "ERR_RSTREAM_INVALID_TUNNEL";
/// Tunnel options ask for a feature this SDK does not support.
pub const UNSUPPORTED_TUNNEL: &str = "ERR_RSTREAM_UNSUPPORTED_TUNNEL";
/// A datagram over 65,535 bytes: refused when sent (nothing is sent, never
/// truncated), or announced by a peer (its channel is closed).
pub const DATAGRAM_TOO_LARGE: &str = "ERR_RSTREAM_DATAGRAM_TOO_LARGE";
/// The datagram channel (or socket) is closed.
pub const DATAGRAM_CLOSED: &str = "ERR_RSTREAM_DATAGRAM_CLOSED";

// ----- Engine API -----

/// The Engine API answered 400.
pub const ENGINE_API_BAD_REQUEST: &str = "ERR_RSTREAM_ENGINE_API_BAD_REQUEST";
/// The Engine API answered 401.
pub const ENGINE_API_UNAUTHENTICATED: &str = "ERR_RSTREAM_ENGINE_API_UNAUTHENTICATED";
/// The Engine API answered 403.
pub const ENGINE_API_FORBIDDEN: &str = "ERR_RSTREAM_ENGINE_API_FORBIDDEN";
/// The Engine API answered 404 (no such client or tunnel).
pub const ENGINE_API_NOT_FOUND: &str = "ERR_RSTREAM_ENGINE_API_NOT_FOUND";
/// The Engine API answered another non-success status or failed at the HTTP level.
pub const ENGINE_API_HTTP: &str = "ERR_RSTREAM_ENGINE_API_HTTP";
/// An Engine API response body exceeded its size cap.
pub const ENGINE_API_BODY_TOO_LARGE: &str = "ERR_RSTREAM_ENGINE_API_BODY_TOO_LARGE";
/// An Engine API response is not the expected JSON.
pub const ENGINE_API_PAYLOAD: &str = "ERR_RSTREAM_ENGINE_API_PAYLOAD";
/// An Engine API request did not finish in time.
pub const ENGINE_API_TIMEOUT: &str = "ERR_RSTREAM_ENGINE_API_TIMEOUT";
/// The Engine API connection failed (connect, TLS, I/O).
pub const ENGINE_API_TRANSPORT: &str = "ERR_RSTREAM_ENGINE_API_TRANSPORT";
/// The engine's discovery answer is malformed or incomplete.
pub const ENGINE_DISCOVERY: &str = "ERR_RSTREAM_ENGINE_DISCOVERY";
/// An id passed to the Engine API is empty.
pub const INVALID_ID: &str = "ERR_RSTREAM_INVALID_ID";
/// A watch event is not the expected JSON.
pub const EVENT_JSON: &str = "ERR_RSTREAM_EVENT_JSON";
/// A watch event exceeded its size cap.
pub const EVENT_TOO_LARGE: &str = "ERR_RSTREAM_EVENT_TOO_LARGE";
/// The watch stream ended.
pub const WATCH_CLOSED: &str = "ERR_RSTREAM_WATCH_CLOSED";
/// The watch received nothing (not even a heartbeat) within its idle deadline.
pub const WATCH_TIMEOUT: &str = "ERR_RSTREAM_WATCH_TIMEOUT";

// ----- webhooks -----

/// A webhook signature header is missing or malformed, or no signature matches.
pub const WEBHOOK_SIGNATURE: &str = "ERR_RSTREAM_WEBHOOK_SIGNATURE";
/// A webhook body is too large or not the expected JSON.
pub const WEBHOOK_PAYLOAD: &str = "ERR_RSTREAM_WEBHOOK_PAYLOAD";
/// A webhook secret is empty (or no secret was given).
pub const WEBHOOK_SECRET_REQUIRED: &str = "ERR_RSTREAM_WEBHOOK_SECRET_REQUIRED";

// ----- local engine -----

/// The local engine's certificate authority could not be created or loaded.
pub const LOCAL_ENGINE_CA: &str = "ERR_RSTREAM_LOCAL_ENGINE_CA";
/// The local engine's state directory is unusable.
pub const LOCAL_ENGINE_STATE_DIR: &str = "ERR_RSTREAM_LOCAL_ENGINE_STATE_DIR";
