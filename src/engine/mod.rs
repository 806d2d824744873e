//! A real rstream engine for one machine (feature `local-engine`).
//!
//! [`LocalEngine`] speaks the rstream runtime protocol (PROTOCOL.md) as a
//! server, byte for byte, so any rstream SDK (this crate's client, the
//! official Python SDK, …) can connect to it: control channels with
//! heartbeat liveness, private and published tunnels, private dial
//! (with and without zero-RTT) and published endpoints on loopback.
//!
//! One TLS port carries everything, split by ALPN: `rstrm/1` (or no ALPN)
//! is the tunnel protocol, `h2` / `http/1.1` is the Engine HTTP API.
//! The engine creates its own certificate authority in its state directory
//! (`ca.pem`, `ca-key.pem`) and reuses it on restart; point clients at
//! [`LocalEngine::ca_file`] (or `RSTREAM_CA_FILE`) and
//! [`LocalEngine::engine_address`] (or `RSTREAM_ENGINE`).
//!
//! Datagram tunnels (`type = "datagram"`) carry framed datagrams (plane B,
//! `docs/DATAGRAMS.md`), or QUIC DATAGRAM frames for clients on QUIC
//! (plane A, translated when the two sides differ): framed dials are
//! spliced like any stream, and a published one gets a UDP socket on
//! `127.0.0.1` (`127.0.0.1:PORT (udp)`) where each downstream source
//! address is one channel to the owner. With feature `dtls`, a published
//! `protocol = dtls` one terminates DTLS there with the engine's
//! certificate and relays plaintext datagrams.
//!
//! Published tunnels listen on `127.0.0.1` with a port of their own and
//! come back with `hostname = "127.0.0.1"` and that `port`, so the
//! forwarding address is `https://127.0.0.1:PORT` for `http` tunnels
//! (TLS terminated by the engine with its own certificate) and
//! `127.0.0.1:PORT (tcp)` / `127.0.0.1:PORT (tls)` for raw ones.
//! Features a single machine cannot provide (GeoIP, edge auth, custom
//! hostnames, QUIC terminate-and-mirror, …) are refused with `FEATURE_NOT_AVAILABLE`,
//! never silently ignored. See `docs/LOCAL_ENGINE.md` for the full list.
//!
//! # Example
//!
//! ```
//! # async fn run() -> rstream::Result<()> {
//! use rstream::engine::LocalEngine;
//!
//! let engine = LocalEngine::builder().start().await?;
//! println!("RSTREAM_ENGINE={}", engine.engine_address());
//! println!("RSTREAM_CA_FILE={}", engine.ca_file().display());
//! engine.shutdown().await;
//! # Ok(())
//! # }
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(run()).unwrap();
//! ```
//!
//! The `rstream-local-engine` binary wraps the same engine for other tools
//! and languages: it prints one line,
//! `RSTREAM_ENGINE=<host:port> RSTREAM_CA_FILE=<path>`, once it listens.

mod access;
mod admission;
mod api;
mod auth;
mod builder;
mod certs;
#[doc(hidden)]
pub mod cli;
mod conn;
mod control;
mod datagram;
mod dates;
#[cfg(feature = "dtls")]
mod dtls;
mod edge;
mod events;
#[cfg(feature = "http3")]
mod h3_upstream;
mod limits;
mod listener;
#[cfg(feature = "quic")]
mod plane_a;
#[cfg(feature = "quic")]
mod quic;
mod state;
mod state_dir;
mod streams;
mod tasks;
mod tunnels;
mod upstream;
mod webhooks;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::error::Result;

pub use builder::LocalEngineBuilder;
pub use events::{ClientInfo, EngineEvent, TunnelInfo};
#[cfg(feature = "quic")]
pub use plane_a::QuicDatagramDrops;
pub use webhooks::WebhookDelivery;

/// Default liveness floor: the timeout answered is `max(3 × interval, 15 s)`.
const DEFAULT_LIVENESS_FLOOR: Duration = Duration::from_secs(15);
/// The protocol's ceiling for `heartbeat_timeout_ms` (PROTOCOL.md §5).
const MAX_LIVENESS_TIMEOUT: Duration = Duration::from_secs(900);
/// Engine settings shared by every task.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) tokens: Vec<String>,
    /// Registered applications whose app tokens are accepted.
    pub(crate) apps: auth::Apps,
    pub(crate) liveness_timeout: Option<Duration>,
    pub(crate) max_tunnels_per_client: usize,
    pub(crate) max_pending_streams: usize,
    /// Client certificates from a configured CA authenticate agents.
    pub(crate) client_ca: bool,
    /// Connections without a verified client certificate are refused.
    pub(crate) require_client_certificate: bool,
}

impl Config {
    /// Whether the engine port accepts client certificates (mTLS agents),
    /// e.g. for the `engine-api-mtls` capability of the discovery document.
    pub(crate) fn client_ca_enabled(&self) -> bool {
        self.client_ca
    }

    /// The timeout answered for a proposed heartbeat interval (PROTOCOL.md §5).
    pub(crate) fn liveness_timeout_for(&self, interval: Duration) -> Duration {
        let wanted = self
            .liveness_timeout
            .unwrap_or_else(|| (interval * 3).max(DEFAULT_LIVENESS_FLOOR));
        wanted.clamp(interval, MAX_LIVENESS_TIMEOUT.max(interval))
    }
}

/// What every engine task shares.
pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) tls: certs::ServerConfigs,
    state: Mutex<state::State>,
    pub(crate) tasks: tasks::Tasks,
    /// Connections held on the engine port, unauthenticated and established.
    pub(crate) admissions: Arc<admission::Admissions>,
    /// Downstream connections held by all published endpoints.
    pub(crate) published_connections: limits::ConnectionLimit,
    /// The Engine API's connection server and watch slots.
    pub(crate) api: api::ApiShared,
    /// Published datagram tunnels: idle timeout, channel cap, counters.
    pub(crate) datagram: datagram::Settings,
    /// Published dtls tunnels: the DTLS server and its counters.
    #[cfg(feature = "dtls")]
    pub(crate) dtls: dtls::Server,
    /// QUIC streams accepted on the UDP port since start.
    #[cfg(feature = "quic")]
    pub(crate) quic_streams: std::sync::atomic::AtomicU64,
    /// DATAGRAMs dropped on plane A, all QUIC connections together.
    #[cfg(feature = "quic")]
    pub(crate) plane_a_drops: Arc<crate::datagram::quic::Drops>,
    /// Engine API requests served over HTTP/3 since start.
    #[cfg(feature = "http3")]
    pub(crate) api_h3_requests: std::sync::atomic::AtomicU64,
}

impl Inner {
    /// Locks the engine state. Keep the guard for a few map operations only;
    /// never hold it across an `.await`.
    pub(crate) fn state(&self) -> MutexGuard<'_, state::State> {
        // A panic while holding the lock cannot leave the maps half-updated
        // in a way that matters more than stopping the engine would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running local engine. See the [module docs](self).
///
/// Dropping it stops the engine (every connection, tunnel and published
/// port is closed); [`shutdown`](LocalEngine::shutdown) does the same and
/// waits until the ports are released.
pub struct LocalEngine {
    inner: Arc<Inner>,
    accept_loop: Option<JoinHandle<()>>,
    /// The QUIC endpoint on the same port over UDP and its accept loop.
    #[cfg(feature = "quic")]
    quic: Option<(quinn::Endpoint, JoinHandle<()>)>,
    local_addr: SocketAddr,
    ca_pem: String,
    ca_file: PathBuf,
    state_dir: PathBuf,
    webhooks: webhooks::Webhooks,
}

impl std::fmt::Debug for LocalEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEngine")
            .field("local_addr", &self.local_addr)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl LocalEngine {
    /// A builder with the defaults (`127.0.0.1:0`, temp state dir, no tokens).
    pub fn builder() -> LocalEngineBuilder {
        LocalEngineBuilder::default()
    }

    /// The address the engine listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The engine address for clients (`RSTREAM_ENGINE`): `127.0.0.1:PORT`
    /// when listening on IPv4 loopback or any IPv4 address, `localhost:PORT`
    /// for IPv6 (the SDKs refuse IPv6 literals), else `IP:PORT`.
    pub fn engine_address(&self) -> String {
        let port = self.local_addr.port();
        match self.local_addr.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() || v4.is_loopback() => {
                format!("127.0.0.1:{port}")
            }
            std::net::IpAddr::V4(v4) => format!("{v4}:{port}"),
            std::net::IpAddr::V6(_) => format!("localhost:{port}"),
        }
    }

    /// The engine's CA certificate (PEM), the only trust anchor clients need.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate file (`RSTREAM_CA_FILE`), `<state dir>/ca.pem`.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The state directory (absolute).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Subscribes to engine events: clients and tunnels created and deleted,
    /// in the order they happen. The channel is bounded; a receiver that
    /// falls too far behind gets `RecvError::Lagged` and skips ahead.
    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.inner.state().subscribe()
    }

    /// Counters of the published datagram endpoints, all tunnels together:
    /// `(channels opened, datagrams dropped because a channel's queue of
    /// 64 was full, new sources ignored because a tunnel held its maximum
    /// of channels)`.
    pub fn datagram_counters(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.inner.datagram.stats;
        (
            s.opened_channels.load(Relaxed),
            s.dropped.load(Relaxed),
            s.refused_channels.load(Relaxed),
        )
    }

    /// QUIC DATAGRAM frames (plane A) the engine dropped since it started,
    /// by reason, all QUIC connections together (feature `quic`). The
    /// published endpoints' own counters are [`datagram_counters`](Self::datagram_counters).
    #[cfg(feature = "quic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "quic")))]
    pub fn quic_datagram_drops(&self) -> QuicDatagramDrops {
        QuicDatagramDrops::of(&self.inner.plane_a_drops)
    }

    /// Counters of the published `dtls` tunnels' DTLS sessions, all
    /// tunnels together: `(handshakes completed, handshakes failed or
    /// timed out, first datagrams of a source dropped because they were
    /// not a DTLS ClientHello or every handshake slot was taken)`. Only
    /// a completed handshake opens a channel to the owner (and counts in
    /// [`datagram_counters`](Self::datagram_counters)).
    #[cfg(feature = "dtls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dtls")))]
    pub fn dtls_counters(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.inner.dtls.stats;
        (
            s.completed.load(Relaxed),
            s.failed.load(Relaxed),
            s.rejected.load(Relaxed),
        )
    }

    /// QUIC streams accepted on the engine's UDP port since it started
    /// (control channels, dials and proxy connections of clients on the
    /// QUIC transport; feature `quic`).
    #[cfg(feature = "quic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "quic")))]
    pub fn quic_streams_accepted(&self) -> u64 {
        self.inner
            .quic_streams
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Engine API requests served over HTTP/3 (feature `http3`) since
    /// start (tests use it to prove the transport).
    #[cfg(feature = "http3")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http3")))]
    pub fn api_http3_requests(&self) -> u64 {
        self.inner
            .api_h3_requests
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The connected clients (control channels), in no particular order.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.inner.state().clients()
    }

    /// The open tunnels, in no particular order.
    pub fn tunnels(&self) -> Vec<TunnelInfo> {
        self.inner.state().tunnels()
    }

    /// Adds a webhook endpoint to the running engine (like
    /// [`LocalEngineBuilder::webhook`]) and returns its webhook id (`wh_…`,
    /// sent as `rstream-webhook-id`). It receives the events that happen
    /// from now on, not earlier ones. Useful when the target's address is
    /// only known once the engine runs, e.g. a receiver published through
    /// this engine's own tunnel.
    ///
    /// Fails (`ERR_RSTREAM_INVALID_CONFIG`) when `url` is not an absolute
    /// `http://` or `https://` URL without credentials.
    pub fn add_webhook(&self, url: &str, secret: crate::webhook::WebhookSecret) -> Result<String> {
        let target = webhooks::Target::new(url, secret)?;
        Ok(self
            .webhooks
            .start(target, self.inner.state().subscribe(), &self.inner.tasks))
    }

    /// The most recent webhook delivery attempts (up to 100, oldest first),
    /// one record per attempt, for tests and diagnostics.
    pub fn webhook_deliveries(&self) -> Vec<WebhookDelivery> {
        self.webhooks.deliveries()
    }

    // ---------------------------------------------------------------
    // `client_builder()` goes here (added by the lead once `Client`
    // exists): a client builder pre-set with `engine_address()` and
    // `ca_pem()` (and the first configured token, if any).
    // ---------------------------------------------------------------

    /// Stops the engine: closes the listening port, every connection, tunnel
    /// and published port, and waits until they are released.
    pub async fn shutdown(mut self) {
        let stopped = self.stop();
        if let Some(handle) = stopped.accept_loop {
            let _ = handle.await;
        }
        #[cfg(feature = "quic")]
        if let Some((endpoint, handle)) = stopped.quic {
            let _ = handle.await;
            // Lets closing connections tell their peers; bounded.
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
            // Connections still draining must not hold the port.
            quic::release_port(&endpoint);
        }
        if let Some(mut tasks) = stopped.tasks {
            while tasks.join_next().await.is_some() {}
        }
        for handle in stopped.endpoints {
            let _ = handle.await;
        }
    }

    /// Aborts everything (synchronously); returns what to wait for.
    fn stop(&mut self) -> Stopped {
        let accept_loop = self.accept_loop.take();
        if let Some(handle) = &accept_loop {
            handle.abort();
        }
        #[cfg(feature = "quic")]
        let quic = self.quic.take();
        #[cfg(feature = "quic")]
        if let Some((endpoint, handle)) = &quic {
            handle.abort();
            endpoint.close(0u32.into(), b"engine stopped");
        }
        Stopped {
            accept_loop,
            #[cfg(feature = "quic")]
            quic,
            tasks: self.inner.tasks.close(),
            endpoints: self.inner.state().drain(),
        }
    }
}

/// The aborted tasks of a stopping engine.
struct Stopped {
    accept_loop: Option<JoinHandle<()>>,
    #[cfg(feature = "quic")]
    quic: Option<(quinn::Endpoint, JoinHandle<()>)>,
    tasks: Option<tokio::task::JoinSet<()>>,
    endpoints: Vec<JoinHandle<()>>,
}

impl Drop for LocalEngine {
    fn drop(&mut self) {
        // Aborting is synchronous; the runtime drops the tasks (and with
        // them every socket) at its next turn.
        let _ = self.stop();
    }
}
