//! Plane A (DATAGRAM_QUIC.md §2 A): datagram channels as QUIC DATAGRAM
//! frames, each `channel_id (12 bytes) ‖ payload`, one application datagram
//! per frame, on one QUIC connection.
//!
//! [`Router`] owns the DATAGRAM side of one QUIC connection: it reads the
//! frames and hands each payload to the queue of its channel id (at most
//! [`CHANNEL_QUEUE`](super::CHANNEL_QUEUE) waiting; more are dropped and
//! counted, as plane A is unreliable), and sends frames for a channel. The
//! client (its control channel's and its dials' connections) and the local
//! engine (each accepted connection) both use it. Short frames and unknown
//! ids are dropped. Every drop is counted by reason in a [`Drops`] (the
//! engine shares one among all its connections).
//!
//! The reader task runs only while at least one channel is registered, so
//! an idle connection is not kept alive by it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::{mpsc, Notify};

use super::CHANNEL_QUEUE;
use crate::error::{code, Error, ErrorKind, Result};

/// Bytes of the channel id at the start of each DATAGRAM frame.
pub(crate) const CHANNEL_ID_LEN: usize = 12;

/// A plane-A channel id: the first 24 hex digits of the stream id.
pub(crate) type ChannelId = [u8; CHANNEL_ID_LEN];

/// The channel id of `stream_id`: trimmed, `-` dropped, at least 24 hex
/// digits, the first 24 decoded (engine ids are 24 lowercase hex digits;
/// UUIDs work too). `None` when it has fewer or they are not hex.
pub(crate) fn channel_id(stream_id: &str) -> Option<ChannelId> {
    let digits: Vec<u8> = stream_id
        .trim()
        .bytes()
        .filter(|b| *b != b'-')
        .take(2 * CHANNEL_ID_LEN)
        .collect();
    let mut id = [0u8; CHANNEL_ID_LEN];
    hex::decode_to_slice(&digits, &mut id).ok()?;
    Some(id)
}

/// DATAGRAMs a [`Router`] dropped, by reason (one per client connection;
/// the engine shares one among all its connections).
#[derive(Debug, Default)]
pub(crate) struct Drops {
    /// Received frames shorter than a channel id.
    pub(crate) short: AtomicU64,
    /// Received frames for a channel id not registered on the connection.
    pub(crate) unknown_channel: AtomicU64,
    /// Received frames whose channel's queue was full (its reader is slow).
    pub(crate) queue_full: AtomicU64,
    /// Datagrams not sent: larger than a DATAGRAM frame can carry now.
    pub(crate) too_large: AtomicU64,
}

/// The DATAGRAM side of one QUIC connection (see the module docs).
#[derive(Debug)]
pub(crate) struct Router {
    conn: quinn::Connection,
    routes: Mutex<Routes>,
    /// Wakes the reader when the last channel went away.
    emptied: Notify,
    max_channels: usize,
    drops: Arc<Drops>,
}

#[derive(Debug, Default)]
struct Routes {
    /// Each channel's queue and its count of datagrams dropped (full).
    channels: HashMap<ChannelId, (mpsc::Sender<Bytes>, Arc<AtomicU64>)>,
    /// A reader task runs.
    reading: bool,
}

impl Router {
    /// A router for `conn` holding at most `max_channels` channels,
    /// counting what it drops in `drops`.
    pub(crate) fn new(
        conn: quinn::Connection,
        max_channels: usize,
        drops: Arc<Drops>,
    ) -> Arc<Self> {
        Arc::new(Router {
            conn,
            routes: Mutex::default(),
            emptied: Notify::new(),
            max_channels,
            drops,
        })
    }

    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        // Map operations only under the lock: nothing is left half-done.
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The QUIC connection.
    pub(crate) fn conn(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Registers channel `id`; its datagrams arrive on the receiver, which
    /// ends when the channel is unregistered or the connection is lost;
    /// the counter counts those dropped because the queue was full.
    /// `None` when `id` is taken, the router is full, or the peer does
    /// not accept DATAGRAM frames.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: ChannelId,
    ) -> Option<(mpsc::Receiver<Bytes>, Arc<AtomicU64>)> {
        if self.conn.max_datagram_size().is_none() || self.conn.close_reason().is_some() {
            return None;
        }
        let mut routes = self.routes();
        if routes.channels.len() >= self.max_channels || routes.channels.contains_key(&id) {
            return None;
        }
        let (tx, rx) = mpsc::channel(CHANNEL_QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        routes.channels.insert(id, (tx, dropped.clone()));
        if !routes.reading {
            routes.reading = true;
            tokio::spawn(read_loop(self.clone()));
        }
        Some((rx, dropped))
    }

    /// Unregisters `id` (its receiver ends once drained). Whether it was
    /// registered.
    pub(crate) fn unregister(&self, id: &ChannelId) -> bool {
        let mut routes = self.routes();
        let found = routes.channels.remove(id).is_some();
        if routes.channels.is_empty() {
            self.emptied.notify_one();
        }
        found
    }

    /// The largest payload one frame carries now: the connection's
    /// largest DATAGRAM less the channel id (`None`: DATAGRAMs off).
    pub(crate) fn max_payload(&self) -> Option<usize> {
        self.conn
            .max_datagram_size()
            .map(|m| m.saturating_sub(CHANNEL_ID_LEN))
    }

    /// Sends one datagram on channel `id`, never truncated. Unreliable: the
    /// QUIC send buffer drops its oldest frame when full.
    ///
    /// Errors: `ERR_RSTREAM_DATAGRAM_TOO_LARGE` over [`max_payload`](Self::max_payload)
    /// (nothing sent), kind `Closed` once the connection is gone.
    pub(crate) fn send(&self, id: &ChannelId, payload: &[u8]) -> Result<()> {
        let Some(max) = self.max_payload() else {
            return Err(super::closed(
                "the QUIC connection does not carry datagrams",
            ));
        };
        if payload.len() > max {
            self.drops.too_large.fetch_add(1, Ordering::Relaxed);
            return Err(too_large(payload.len(), max));
        }
        let mut frame = BytesMut::with_capacity(CHANNEL_ID_LEN + payload.len());
        frame.put_slice(id);
        frame.put_slice(payload);
        match self.conn.send_datagram(frame.freeze()) {
            Ok(()) => Ok(()),
            // The path's limit shrank between the check and the send.
            Err(quinn::SendDatagramError::TooLarge) => {
                self.drops.too_large.fetch_add(1, Ordering::Relaxed);
                Err(too_large(payload.len(), max))
            }
            Err(_) => Err(super::closed("the QUIC connection was lost")),
        }
    }

    /// Hands a received frame to its channel.
    fn route(&self, mut frame: Bytes) {
        if frame.len() < CHANNEL_ID_LEN {
            tracing::trace!(len = frame.len(), "short QUIC datagram dropped");
            self.drops.short.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let payload = frame.split_off(CHANNEL_ID_LEN);
        // Exactly CHANNEL_ID_LEN bytes: the conversion cannot fail.
        let Ok(id) = ChannelId::try_from(&frame[..]) else {
            return;
        };
        let routes = self.routes();
        let Some((tx, dropped)) = routes.channels.get(&id) else {
            tracing::trace!("QUIC datagram for an unknown channel dropped");
            self.drops.unknown_channel.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if tx.try_send(payload).is_err() {
            // Full (or being unregistered): dropped, as UDP would.
            dropped.fetch_add(1, Ordering::Relaxed);
            self.drops.queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads the connection's DATAGRAMs while a channel is registered; on the
/// connection's loss, ends every channel's receiver.
async fn read_loop(router: Arc<Router>) {
    loop {
        let received = tokio::select! {
            r = router.conn.read_datagram() => r,
            () = router.emptied.notified() => {
                let mut routes = router.routes();
                if routes.channels.is_empty() {
                    routes.reading = false;
                    return;
                }
                continue;
            }
        };
        match received {
            Ok(frame) => router.route(frame),
            Err(e) => {
                tracing::debug!(error = %e, "QUIC connection lost: its datagram channels end");
                let mut routes = router.routes();
                routes.channels.clear();
                routes.reading = false;
                return;
            }
        }
    }
}

/// `ERR_RSTREAM_DATAGRAM_TOO_LARGE` for plane A.
fn too_large(len: usize, max: usize) -> Error {
    Error::new(
        ErrorKind::Protocol,
        code::DATAGRAM_TOO_LARGE,
        format!("datagram of {len} bytes exceeds the QUIC datagram limit of {max} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_come_from_stream_ids() {
        let id = channel_id("0123456789abcdef01234567ffff").unwrap();
        assert_eq!(hex::encode(id), "0123456789abcdef01234567");
        let uuid = channel_id(" 6f1c2b3a-4d5e-4f60-8a9b-0c1d2e3f4a5b ").unwrap();
        assert_eq!(hex::encode(uuid), "6f1c2b3a4d5e4f608a9b0c1d");
        assert!(channel_id("0123456789abcdef0123456").is_none());
        assert!(channel_id("0123456789abcdef0123456z").is_none());
        assert!(channel_id("").is_none());
    }
}
