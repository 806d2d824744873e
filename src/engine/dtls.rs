//! Published DTLS datagram tunnels (`protocol = dtls`, feature `dtls`):
//! the engine terminates DTLS on the tunnel's UDP socket with its own
//! certificate (the one of published `http` endpoints, issued by the
//! engine CA) and relays the plaintext datagrams to the owner exactly as
//! a plain published datagram tunnel does ([`super::datagram`]): one
//! channel per source address, framed (plane B) or QUIC DATAGRAM (plane A).
//!
//! Each source gets a sans-IO DTLS 1.2/1.3 server session (dimpl, the
//! version chosen by the client's hello), driven by its UDP datagrams and
//! by tokio timers. Until the handshake completes the source reaches
//! nothing of the owner: its channel (and its `max_published_connections`
//! permit) is only opened afterwards, so the owner never hears of a
//! source that does not finish. While it lasts, a handshake holds a slot
//! among the tunnel's channels and one of [`MAX_HANDSHAKES`] for the whole
//! engine, for at most the handshake timeout (10 s by default); a source
//! that does not finish in time holds nothing after it. A first datagram
//! that is not a DTLS ClientHello opens nothing (dropped and counted), and
//! the server asks for a cookie (HelloVerifyRequest / HelloRetryRequest)
//! before doing any public-key work, so a spoofed source gets no further.
//!
//! After the handshake, application data records become the channel's
//! datagrams and the owner's datagrams become records (one record each;
//! larger than [`MAX_PLAINTEXT`] bytes cannot be a record and is dropped
//! and counted). A `close_notify` or any fatal DTLS error ends the channel;
//! a channel that ends on the engine's side (idle, owner closed) sends
//! `close_notify` to the source.
//!
//! A ClientHello on an established session (the source restarted on the
//! same port, or someone spoofs its address) starts one successor session
//! beside it, which replaces it (a new channel) only once its handshake
//! completes, within the same deadline (RFC 6347 §4.2.8).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dimpl::{Dtls, DtlsCertificate, Output};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::datagram::{self, Channel, Channels, Downstream, Endpoint, QueueRx, CHANNEL_QUEUE};
use crate::error::{code, Error, ErrorKind, Result};

/// Default bound on a DTLS handshake, from the first ClientHello.
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// DTLS handshakes in progress at once, all tunnels together (each also
/// holds one of its tunnel's channel slots).
pub(crate) const MAX_HANDSHAKES: usize = 256;
/// The largest plaintext a DTLS record carries (2^14 bytes, RFC 6347 §4.1).
pub(crate) const MAX_PLAINTEXT: usize = 16 * 1024;
/// Largest UDP datagram a session writes (a record of [`MAX_PLAINTEXT`]
/// plus its header and AEAD overhead fits with room to spare).
const MAX_OUTPUT: usize = 32 * 1024;
/// Largest handshake flight datagram (dimpl fragments handshake messages
/// to fit): safe on any path.
const MTU: usize = 1150;

/// The engine's DTLS server: configuration, certificate and counters.
pub(crate) struct Server {
    config: Arc<dimpl::Config>,
    certificate: DtlsCertificate,
    handshake_timeout: Duration,
    handshakes: Arc<Semaphore>,
    pub(crate) stats: Stats,
}

/// Counters of the DTLS endpoints, all tunnels together.
#[derive(Default)]
pub(crate) struct Stats {
    /// Handshakes completed (each then opens a channel to the owner).
    pub(crate) completed: AtomicU64,
    /// Handshakes that failed, timed out, or were closed before the end.
    pub(crate) failed: AtomicU64,
    /// First datagrams of a source that were not a ClientHello, or found
    /// every handshake slot taken: dropped, nothing opened.
    pub(crate) rejected: AtomicU64,
}

impl Server {
    /// A server presenting `certificate` (DER) with `private_key` (PKCS#8
    /// DER, ECDSA P-256 or P-384). Fails when dimpl cannot use the key, so
    /// that no session can meet an unusable one later.
    pub(crate) fn new(
        certificate: Vec<u8>,
        private_key: Vec<u8>,
        handshake_timeout: Duration,
    ) -> Result<Self> {
        let error = |what: &str, e: &dyn std::fmt::Display| {
            Error::new(
                ErrorKind::Tls,
                code::LOCAL_ENGINE_CA,
                format!("local engine DTLS {what}: {e}"),
            )
        };
        let config = dimpl::Config::builder()
            // Downstream clients are anonymous, as on published http
            // endpoints without mtls_auth.
            .require_client_certificate(false)
            .use_server_cookie(true)
            .mtu(MTU)
            // dimpl's own deadline backs up ours (which ends the session).
            .handshake_timeout(handshake_timeout)
            .with_crypto_provider(dimpl::crypto::rust_crypto::default_provider())
            .build()
            .map_err(|e| error("configuration", &e))?;
        config
            .crypto_provider()
            .key_provider
            .load_private_key(&private_key)
            .map_err(|e| error("private key", &e))?;
        Ok(Server {
            config: Arc::new(config),
            certificate: DtlsCertificate {
                certificate,
                private_key,
            },
            handshake_timeout,
            handshakes: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            stats: Stats::default(),
        })
    }

    fn reject(&self) {
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
    }
}

/// Starts a DTLS session for a new source whose first datagram is `first`
/// (unless refused: not a ClientHello, no channel slot, no handshake slot).
pub(super) fn open(
    endpoint: &Endpoint,
    peer: std::net::SocketAddr,
    first: Bytes,
    channels: &mut Channels,
) {
    let server = &endpoint.inner.dtls;
    if !is_client_hello(&first) {
        tracing::trace!(tunnel_id = endpoint.tunnel_id, %peer, "not a DTLS ClientHello, dropped");
        server.reject();
        return;
    }
    if !channels.has_room(endpoint, peer) {
        return;
    }
    let Ok(handshake) = server.handshakes.clone().try_acquire_owned() else {
        tracing::debug!(tunnel_id = endpoint.tunnel_id, %peer, "too many DTLS handshakes, ClientHello dropped");
        server.reject();
        return;
    };
    let (queue, rx) = datagram::queue();
    // Empty, and one datagram (≤ 65,536 bytes) is within both bounds.
    let _ = queue.push(first);
    channels.queues.insert(peer, queue);
    let session = Session {
        inner: endpoint.inner.clone(),
        tunnel_id: endpoint.tunnel_id.clone(),
        socket: endpoint.socket.clone(),
        peer,
    };
    channels.tasks.spawn(async move {
        session.run(rx, handshake).await;
        peer
    });
}

/// Whether `d` starts with a DTLS handshake record (epoch 0) carrying a
/// ClientHello: the only datagram that may start a session.
fn is_client_hello(d: &[u8]) -> bool {
    const HANDSHAKE: u8 = 22;
    const CLIENT_HELLO: u8 = 1;
    // content type, version (DTLS: 0xfe..), epoch 0, sequence, length,
    // then the handshake header's type.
    d.len() > 13 && d[0] == HANDSHAKE && d[1] == 0xfe && d[3..5] == [0, 0] && d[13] == CLIENT_HELLO
}

/// How an established session's relay ended.
enum Ended {
    /// For good (why).
    Closed(&'static str),
    /// A new session from the same source completed its handshake.
    Restarted(Box<Successor>),
}

/// A new session handshaking beside an established one from the same
/// source (see [`Session::pump`]).
struct Successor {
    dtls: Dtls,
    /// Its handshake deadline.
    deadline: Instant,
    /// dimpl's next timeout.
    timeout: Option<std::time::Instant>,
    /// Application data that came with the end of its handshake.
    early: Vec<Bytes>,
}

/// Where a successor's handshake stands.
enum Advance {
    Pending,
    Connected,
    Failed,
}

/// What one round of draining a session's output found.
#[derive(Default)]
struct Drained {
    /// When to call `handle_timeout` next.
    timeout: Option<std::time::Instant>,
    connected: bool,
    close_notify: bool,
}

/// One source's DTLS session.
struct Session {
    inner: Arc<super::Inner>,
    tunnel_id: String,
    socket: Arc<tokio::net::UdpSocket>,
    peer: std::net::SocketAddr,
}

impl Session {
    async fn run(self, mut raw: QueueRx, handshake: OwnedSemaphorePermit) {
        let server = &self.inner.dtls;
        let mut dtls = self.new_dtls();
        let mut out = vec![0u8; 2048];
        // Application data that came with the end of the handshake.
        let mut early = Vec::new();
        let connected = self
            .handshake(&mut dtls, &mut raw, &mut out, &mut early)
            .await;
        drop(handshake);
        let Some(mut timeout) = connected else {
            server.stats.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        loop {
            server.stats.completed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(tunnel_id = self.tunnel_id, peer = %self.peer, version = ?dtls.protocol_version(), "DTLS handshake completed");
            // The channel, and its published-connection permit, only now.
            let Some(permit) = self.inner.published_connections.admit(self.peer) else {
                self.close(&mut dtls, &mut out).await;
                return;
            };
            self.inner
                .datagram
                .stats
                .opened_channels
                .fetch_add(1, Ordering::Relaxed);
            let (plain, plain_rx) = datagram::queue();
            let (down, down_rx) = mpsc::channel(CHANNEL_QUEUE);
            for d in std::mem::take(&mut early) {
                self.deliver(&plain, d);
            }
            let channel = Channel {
                inner: self.inner.clone(),
                tunnel_id: self.tunnel_id.clone(),
                down: Downstream::Dtls(down),
                peer: self.peer,
                _permit: permit,
            };
            // Each side ends the other: the pump returning drops `plain`
            // (the channel's input), the channel ending drops `down`.
            let pump = self.pump(&mut dtls, &mut raw, &mut out, timeout, plain, down_rx);
            let ((), ended) = tokio::join!(channel.run(plain_rx), pump);
            match ended {
                Ended::Closed(why) => {
                    tracing::debug!(tunnel_id = self.tunnel_id, peer = %self.peer, why, "DTLS session ended");
                    return;
                }
                // The old channel ended with the old session; the new
                // session gets a channel of its own.
                Ended::Restarted(next) => {
                    tracing::debug!(tunnel_id = self.tunnel_id, peer = %self.peer, "the source started a new DTLS session");
                    dtls = next.dtls;
                    timeout = next.timeout.unwrap_or_else(std::time::Instant::now);
                    early = next.early;
                }
            }
        }
    }

    fn new_dtls(&self) -> Dtls {
        let server = &self.inner.dtls;
        Dtls::new_auto(
            server.config.clone(),
            server.certificate.clone(),
            std::time::Instant::now(),
        )
    }

    /// Runs the handshake: `Some(next timeout)` once connected, `None` when
    /// it failed, timed out or the endpoint closed.
    async fn handshake(
        &self,
        dtls: &mut Dtls,
        raw: &mut QueueRx,
        out: &mut Vec<u8>,
        early: &mut Vec<Bytes>,
    ) -> Option<std::time::Instant> {
        let deadline = Instant::now() + self.inner.dtls.handshake_timeout;
        let dropped = &self.inner.datagram.stats.dropped;
        let mut input = Some(raw.recv().await?);
        loop {
            // Time first (retransmissions, dimpl's own deadline), then
            // the datagram that arrived, if any.
            let step = dtls
                .handle_timeout(std::time::Instant::now())
                .and_then(|()| input.take().map_or(Ok(()), |p| dtls.handle_packet(&p)));
            if let Err(e) = step {
                tracing::debug!(tunnel_id = self.tunnel_id, peer = %self.peer, error = %e, "DTLS handshake failed");
                return None;
            }
            let drained = self
                .drain(dtls, out, |d| push_bounded(early, d, dropped))
                .await?;
            if drained.close_notify {
                return None;
            }
            if drained.connected {
                return drained.timeout.or(Some(std::time::Instant::now()));
            }
            tokio::select! {
                d = raw.recv() => input = Some(d?),
                () = tokio::time::sleep_until(wake_at(drained.timeout)) => {}
                () = tokio::time::sleep_until(deadline) => {
                    tracing::debug!(tunnel_id = self.tunnel_id, peer = %self.peer, "DTLS handshake timed out");
                    return None;
                }
            }
        }
    }

    /// Relays an established session until it or its channel ends (says
    /// why), or until a new session from the same source completes its
    /// handshake.
    ///
    /// A ClientHello on an established session means the source restarted
    /// (or someone spoofs its address): a successor session handshakes
    /// beside this one, fed the same datagrams (each ignores the other's
    /// records), and replaces it only once it completes (RFC 6347 §4.2.8),
    /// so a spoofed hello cannot end a session. One successor at a time,
    /// within the handshake timeout.
    async fn pump(
        &self,
        dtls: &mut Dtls,
        raw: &mut QueueRx,
        out: &mut Vec<u8>,
        timeout: std::time::Instant,
        plain: datagram::Queue,
        mut down: mpsc::Receiver<Bytes>,
    ) -> Ended {
        let mut timer = wake_at(Some(timeout));
        let mut successor: Option<Successor> = None;
        loop {
            let successor_timer = successor
                .as_ref()
                .map_or_else(|| wake_at(None), |s| wake_at(s.timeout).min(s.deadline));
            let step = tokio::select! {
                d = raw.recv() => match d {
                    Some(packet) => {
                        if successor.is_none() && is_client_hello(&packet) {
                            successor = Some(self.successor());
                        }
                        if let Some(next) = self.feed_successor(&mut successor, Some(&packet), out).await {
                            return Ended::Restarted(next);
                        }
                        dtls.handle_timeout(std::time::Instant::now())
                            .and_then(|()| dtls.handle_packet(&packet))
                    }
                    None => return Ended::Closed("endpoint closed"),
                },
                d = down.recv() => match d {
                    Some(d) if d.len() > MAX_PLAINTEXT => {
                        self.inner.datagram.stats.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    Some(d) => dtls.send_application_data(&d).map(|_| ()),
                    None => {
                        self.close(dtls, out).await;
                        return Ended::Closed("channel closed");
                    }
                },
                () = tokio::time::sleep_until(timer) => dtls.handle_timeout(std::time::Instant::now()),
                () = tokio::time::sleep_until(successor_timer), if successor.is_some() => {
                    if let Some(next) = self.feed_successor(&mut successor, None, out).await {
                        return Ended::Restarted(next);
                    }
                    Ok(())
                }
            };
            if let Err(e) = step {
                tracing::debug!(tunnel_id = self.tunnel_id, peer = %self.peer, error = %e, "DTLS session failed");
                return Ended::Closed("DTLS error");
            }
            let Some(drained) = self.drain(dtls, out, |d| self.deliver(&plain, d)).await else {
                return Ended::Closed("DTLS error");
            };
            if drained.close_notify {
                return Ended::Closed("close_notify from the source");
            }
            timer = wake_at(drained.timeout);
        }
    }

    /// A new session handshaking beside the established one.
    fn successor(&self) -> Successor {
        Successor {
            dtls: self.new_dtls(),
            deadline: Instant::now() + self.inner.dtls.handshake_timeout,
            timeout: None,
            early: Vec::new(),
        }
    }

    /// Moves the successor's handshake (if any) on; returns it once it
    /// completed, forgets it when it failed.
    async fn feed_successor(
        &self,
        successor: &mut Option<Successor>,
        packet: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Option<Box<Successor>> {
        let s = successor.as_mut()?;
        match self.advance(s, packet, out).await {
            Advance::Connected => successor.take().map(Box::new),
            Advance::Failed => {
                *successor = None;
                None
            }
            Advance::Pending => None,
        }
    }

    /// Moves a successor's handshake on (time, then `packet`); a failed or
    /// late one counts as a failed handshake.
    async fn advance(
        &self,
        s: &mut Successor,
        packet: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Advance {
        let advanced = self.advance_inner(s, packet, out).await;
        if matches!(advanced, Advance::Failed) {
            self.inner.dtls.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        advanced
    }

    async fn advance_inner(
        &self,
        s: &mut Successor,
        packet: Option<&[u8]>,
        out: &mut Vec<u8>,
    ) -> Advance {
        if Instant::now() >= s.deadline {
            return Advance::Failed;
        }
        let step = s
            .dtls
            .handle_timeout(std::time::Instant::now())
            .and_then(|()| packet.map_or(Ok(()), |p| s.dtls.handle_packet(p)));
        if step.is_err() {
            return Advance::Failed;
        }
        let dropped = &self.inner.datagram.stats.dropped;
        let early = &mut s.early;
        let Some(drained) = self
            .drain(&mut s.dtls, out, |d| push_bounded(early, d, dropped))
            .await
        else {
            return Advance::Failed;
        };
        s.timeout = drained.timeout;
        if drained.close_notify {
            Advance::Failed
        } else if drained.connected {
            Advance::Connected
        } else {
            Advance::Pending
        }
    }

    /// Sends `close_notify` (when established) and what is still queued.
    async fn close(&self, dtls: &mut Dtls, out: &mut Vec<u8>) {
        if dtls.close().is_ok() {
            let _ = self.drain(dtls, out, |_| {}).await;
        }
    }

    /// Hands a decrypted datagram to the channel (dropped and counted when
    /// its queue is full).
    fn deliver(&self, plain: &datagram::Queue, d: Bytes) {
        if plain.push(d).is_err() {
            let stats = &self.inner.datagram.stats;
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            stats.drop_one(
                &self.tunnel_id,
                self.peer,
                "channel queue full, datagram dropped",
            );
        }
    }

    /// Sends every pending record and passes application data to `data`,
    /// until dimpl asks for a timer. `None` on an unusable session (an
    /// output larger than [`MAX_OUTPUT`]).
    async fn drain(
        &self,
        dtls: &mut Dtls,
        out: &mut Vec<u8>,
        mut data: impl FnMut(Bytes),
    ) -> Option<Drained> {
        let mut drained = Drained::default();
        loop {
            match dtls.poll_output(out) {
                Output::Packet(p) => {
                    if let Err(e) = self.socket.send_to(p, self.peer).await {
                        tracing::trace!(peer = %self.peer, error = %e, "UDP send failed");
                    }
                }
                Output::BufferTooSmall { needed } if needed <= MAX_OUTPUT => {
                    out.resize(needed, 0);
                }
                Output::BufferTooSmall { needed } => {
                    tracing::debug!(peer = %self.peer, needed, "DTLS output too large");
                    return None;
                }
                Output::Timeout(t) => {
                    drained.timeout = Some(t);
                    return Some(drained);
                }
                Output::Connected => drained.connected = true,
                Output::ApplicationData(d) => data(Bytes::copy_from_slice(d)),
                Output::CloseNotify => drained.close_notify = true,
                // PeerCert, KeyingMaterial: no client certificate is
                // requested, no SRTP offered.
                _ => {}
            }
        }
    }
}

/// Keeps at most [`CHANNEL_QUEUE`] datagrams that arrive with the end of a
/// handshake (before the channel exists); more are dropped and counted.
fn push_bounded(early: &mut Vec<Bytes>, d: Bytes, dropped: &AtomicU64) {
    if early.len() < CHANNEL_QUEUE {
        early.push(d);
    } else {
        dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// A tokio deadline for dimpl's next timeout, at most an hour away (an
/// idle session's is years away: waking up early is harmless).
fn wake_at(timeout: Option<std::time::Instant>) -> Instant {
    let cap = Instant::now() + Duration::from_secs(3600);
    timeout.map_or(cap, |t| Instant::from_std(t).min(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_client_hello_starts_a_session() {
        let mut hello = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40, 1];
        hello.extend_from_slice(&[0; 40]);
        assert!(is_client_hello(&hello));
        for (i, bad) in [(0, 23), (1, 0x03), (4, 1), (13, 2)] {
            let mut d = hello.clone();
            d[i] = bad;
            assert!(!is_client_hello(&d), "byte {i} = {bad}");
        }
        for n in 0..14 {
            assert!(!is_client_hello(&hello[..n]));
        }
    }
}
