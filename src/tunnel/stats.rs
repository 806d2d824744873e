//! Per-tunnel counters: [`TunnelStats`], read with [`Tunnel::stats`](super::Tunnel::stats).
//!
//! Plain relaxed atomics shared by the control task (which delivers and
//! refuses streams) and the streams themselves (which count down when
//! dropped): no lock, no allocation per stream.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A snapshot of a tunnel's counters, from [`Tunnel::stats`](super::Tunnel::stats).
///
/// The counters live as long as the [`Tunnel`](super::Tunnel) value and
/// survive reconnects (a re-created tunnel keeps counting). Each field is
/// read separately (relaxed atomics), so a snapshot taken while streams
/// arrive may be off by the streams in flight.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TunnelStats {
    /// Downstream connections the tunnel received: proxy handshakes that
    /// completed and were queued for the application (counted when queued,
    /// whether or not the application has called `accept` yet).
    pub accepted: u64,
    /// Downstream connections refused at once because the accept backlog
    /// ([`ClientOptions::accept_backlog`](crate::ClientOptions::accept_backlog))
    /// was full.
    pub refused_backlog_full: u64,
    /// Accepted connections whose [`RstreamStream`](crate::RstreamStream)
    /// has not been dropped yet (queued or in use).
    pub active: u64,
}

/// A handle on a tunnel's live counters that outlives moving the
/// [`Tunnel`](super::Tunnel) into a server (`http::serve`, `axum::serve`),
/// from [`Tunnel::counters`](super::Tunnel::counters). Cheap to clone.
#[derive(Clone, Debug)]
pub struct TunnelCounters(Arc<Counters>);

impl TunnelCounters {
    /// The counters now (see [`TunnelStats`]).
    pub fn get(&self) -> TunnelStats {
        self.0.snapshot()
    }
}

/// The live counters behind [`TunnelStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    accepted: AtomicU64,
    refused_backlog_full: AtomicU64,
    active: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> TunnelStats {
        TunnelStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused_backlog_full: self.refused_backlog_full.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn note_refused_backlog_full(&self) {
        self.refused_backlog_full.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn note_accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn handle(self: &Arc<Self>) -> TunnelCounters {
        TunnelCounters(self.clone())
    }

    /// Counts a stream as active until the returned guard is dropped.
    pub(crate) fn activate(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(self.clone())
    }
}

/// Held by an accepted stream: counts it in `active` until dropped.
#[derive(Debug)]
pub(crate) struct ActiveGuard(Arc<Counters>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}
