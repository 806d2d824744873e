//! One admission path for every connection on the engine port, whatever
//! its ALPN.
//!
//! A connection starts *unauthenticated*: it takes a place in a small
//! budget of its own (`max_unauthenticated_connections`) and must prove
//! something within one deadline counted from accept (`admission_timeout`:
//! TLS handshake, first frame or request head, and authentication
//! together). Proving something is one of:
//!
//! - a control channel or a private dial that authenticated (token or
//!   client certificate): it is *established* and takes a permit under
//!   `max_connections` for as long as its socket lives;
//! - an Engine API request that passed the `Authorized` extractor: same;
//! - a proxy connection that claimed a pending stream with its secret: it
//!   is *released*, and from then on rides on the permit of what it serves
//!   (the published downstream's under `max_published_connections`, or the
//!   dialer's under `max_connections`), so published downstreams never
//!   take slots from agents.
//!
//! A connection that has proved nothing when the deadline passes is
//! closed. When the unauthenticated budget is full, a new connection
//! evicts the oldest unauthenticated one: a flood of sockets that keep
//! reconnecting delays an agent's fresh connection by at most the time
//! the flood takes to open `max_unauthenticated_connections` more, and
//! can never hold a slot an authenticated connection needs.
//!
//! Released proxy connections are bounded too, without a budget of their
//! own: a claim needs a pending stream (at most `max_pending_streams` per
//! tunnel, each claimed once), and a claimed connection is released only
//! when handed to the downstream or dial that waits for it, each of which
//! holds its own permit, and lives only in that waiter's task (dropped
//! when the waiter is gone): at most `max_published_connections +
//! max_connections` at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::limits::{ConnectionLimit, Warned};

/// The admission state of the engine port, shared by every connection.
pub(crate) struct Admissions {
    /// Established connections (`max_connections`).
    established: ConnectionLimit,
    /// `max_unauthenticated_connections` (at least 1).
    max_unauthenticated: usize,
    /// `admission_timeout`.
    timeout: Duration,
    waiting: Mutex<Waiting>,
}

/// The unauthenticated connections, oldest first.
#[derive(Default)]
struct Waiting {
    next_id: u64,
    queue: BTreeMap<u64, Arc<watch::Sender<Phase>>>,
    evictions: Warned,
}

/// Where a connection stands.
#[derive(Debug)]
enum Phase {
    Unauthenticated,
    /// Holds its permit under `max_connections`.
    Established(#[allow(dead_code)] OwnedSemaphorePermit),
    /// A claimed proxy connection: counted by what it serves.
    Released,
    /// Pushed out of a full unauthenticated budget by a newer connection.
    Evicted,
    /// Proved nothing within the admission deadline.
    Expired,
}

/// Why an unauthenticated connection is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lost {
    Evicted,
    Expired,
}

impl Lost {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Lost::Evicted => "evicted by a newer unauthenticated connection",
            Lost::Expired => "nothing proved within the admission deadline",
        }
    }
}

/// An unauthenticated connection cannot be established: the engine holds
/// `max_connections` established connections already (or the connection
/// was just evicted or expired, and is being closed).
#[derive(Debug)]
pub(crate) struct Full;

impl Admissions {
    /// `max_unauthenticated` is clamped to at least 1.
    pub(crate) fn new(
        established: ConnectionLimit,
        max_unauthenticated: usize,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(Admissions {
            established,
            max_unauthenticated: max_unauthenticated.max(1),
            timeout,
            waiting: Mutex::new(Waiting::default()),
        })
    }

    /// `admission_timeout`.
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // A few map operations under the lock: nothing to leave half-done.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a freshly accepted connection as unauthenticated, evicting
    /// the oldest unauthenticated one when the budget is full.
    pub(crate) fn enter(self: &Arc<Self>, peer: SocketAddr) -> Admission {
        let now = Instant::now();
        // The builder bounds the timeout; far-future is the safe fallback.
        let deadline = now
            .checked_add(self.timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86_400));
        let phase = Arc::new(watch::Sender::new(Phase::Unauthenticated));
        let mut waiting = self.waiting();
        while waiting.queue.len() >= self.max_unauthenticated {
            let Some((_, oldest)) = waiting.queue.pop_first() else {
                break;
            };
            let evicted = oldest.send_if_modified(|p| match p {
                Phase::Unauthenticated => {
                    *p = Phase::Evicted;
                    true
                }
                _ => false,
            });
            if evicted {
                tracing::debug!(%peer, "unauthenticated connection evicted by a newer one");
                if let Some(evicted) = waiting.evictions.note() {
                    tracing::warn!(
                        limit = self.max_unauthenticated,
                        option = "max_unauthenticated_connections",
                        evicted,
                        %peer,
                        "unauthenticated connections on the engine port at their limit: the oldest are closed"
                    );
                }
            }
        }
        let id = waiting.next_id;
        waiting.next_id += 1;
        waiting.queue.insert(id, phase.clone());
        drop(waiting);
        Admission(Arc::new(Ticket {
            id,
            peer,
            deadline,
            phase,
            admissions: self.clone(),
        }))
    }

    /// How many connections are unauthenticated now.
    #[cfg(test)]
    fn unauthenticated(&self) -> usize {
        self.waiting().queue.len()
    }
}

/// One connection's place on the engine port; clones share it. The place
/// (and its permit) is given back when the last clone is dropped: the
/// connection's socket holds one ([`Admitted`]).
#[derive(Clone, Debug)]
pub(crate) struct Admission(Arc<Ticket>);

struct Ticket {
    id: u64,
    peer: SocketAddr,
    deadline: Instant,
    phase: Arc<watch::Sender<Phase>>,
    admissions: Arc<Admissions>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("peer", &self.peer)
            .field("phase", &*self.phase.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admissions.waiting().queue.remove(&self.id);
    }
}

/// A phase without its permit, to act on after the borrow ends.
#[derive(Clone, Copy)]
enum Seen {
    Waiting,
    Admitted,
    Lost(Lost),
}

impl Admission {
    /// Resolves when the connection, still unauthenticated, is evicted or
    /// its admission deadline passes; never once it is established or
    /// released. The connection's task races its work against this.
    pub(crate) async fn lost(&self) -> Lost {
        let mut changes = self.0.phase.subscribe();
        let deadline = tokio::time::sleep_until(self.0.deadline);
        tokio::pin!(deadline);
        loop {
            let seen = match &*changes.borrow_and_update() {
                Phase::Unauthenticated => Seen::Waiting,
                Phase::Established(_) | Phase::Released => Seen::Admitted,
                Phase::Evicted => Seen::Lost(Lost::Evicted),
                Phase::Expired => Seen::Lost(Lost::Expired),
            };
            match seen {
                Seen::Waiting => {}
                Seen::Admitted => return std::future::pending().await,
                Seen::Lost(why) => return why,
            }
            tokio::select! {
                () = &mut deadline => {
                    if self.leave(Phase::Expired) {
                        return Lost::Expired;
                    }
                }
                // The sender lives in the ticket, which `self` holds.
                _ = changes.changed() => {}
            }
        }
    }

    /// The connection authenticated: it takes a permit under
    /// `max_connections` (once; later calls succeed at once). `Err` when
    /// the engine holds `max_connections` already (logged, rate-limited),
    /// or when the connection was evicted or expired meanwhile.
    pub(crate) fn establish(&self) -> Result<(), Full> {
        match &*self.0.phase.borrow() {
            Phase::Established(_) => return Ok(()),
            Phase::Unauthenticated => {}
            Phase::Released | Phase::Evicted | Phase::Expired => return Err(Full),
        }
        let permit = self
            .0
            .admissions
            .established
            .admit(self.0.peer)
            .ok_or(Full)?;
        // When another call won the race, this permit is dropped unused.
        let moved = self.leave(Phase::Established(permit));
        if moved || matches!(&*self.0.phase.borrow(), Phase::Established(_)) {
            Ok(())
        } else {
            Err(Full)
        }
    }

    /// A proxy connection claimed its stream: from now on it is counted by
    /// what it serves, not on the engine port.
    pub(crate) fn release(&self) {
        self.leave(Phase::Released);
    }

    /// Moves an unauthenticated connection to `next` (out of the queue);
    /// `false` (and `next` dropped) when it is no longer unauthenticated.
    fn leave(&self, next: Phase) -> bool {
        let mut next = Some(next);
        let moved = self.0.phase.send_if_modified(|p| {
            if !matches!(p, Phase::Unauthenticated) {
                return false;
            }
            match next.take() {
                Some(next) => {
                    *p = next;
                    true
                }
                // Called once per send: `next` is still there.
                None => false,
            }
        });
        if moved {
            self.0.admissions.waiting().queue.remove(&self.0.id);
        }
        moved
    }
}

/// A connection that holds its place on the engine port until it is
/// dropped, wherever it is handed over to (a WebSocket upgrade, or the
/// task of the downstream a proxy connection serves).
#[derive(Debug)]
pub(crate) struct Admitted<T> {
    io: T,
    _admission: Admission,
}

impl<T> Admitted<T> {
    pub(crate) fn new(io: T, admission: Admission) -> Self {
        Admitted {
            io,
            _admission: admission,
        }
    }

    /// The connection inside.
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub(crate) fn get_ref(&self) -> &T {
        &self.io
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Admitted<T> {
    forward_async_read!(io);
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Admitted<T> {
    forward_async_write!(io);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admissions(
        established: usize,
        unauthenticated: usize,
        timeout: Duration,
    ) -> Arc<Admissions> {
        Admissions::new(
            ConnectionLimit::new(established, "test", "max_test"),
            unauthenticated,
            timeout,
        )
    }

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    #[tokio::test(start_paused = true)]
    async fn the_oldest_unauthenticated_connection_is_evicted() {
        let a = admissions(8, 2, Duration::from_secs(10));
        let first = a.enter(peer());
        let second = a.enter(peer());
        let third = a.enter(peer());
        assert_eq!(first.lost().await, Lost::Evicted);
        assert_eq!(a.unauthenticated(), 2);
        // Established ones leave the queue and are never evicted.
        second.establish().unwrap();
        assert_eq!(a.unauthenticated(), 1);
        let _fourth = a.enter(peer());
        let _fifth = a.enter(peer());
        assert_eq!(third.lost().await, Lost::Evicted);
        assert!(tokio::time::timeout(Duration::from_secs(60), second.lost())
            .await
            .is_err());
        // An evicted connection cannot establish any more.
        assert!(first.establish().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_closes_only_unauthenticated_connections() {
        let a = admissions(8, 8, Duration::from_secs(10));
        let idle = a.enter(peer());
        let proxy = a.enter(peer());
        let started = Instant::now();
        proxy.release();
        assert_eq!(idle.lost().await, Lost::Expired);
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        assert!(tokio::time::timeout(Duration::from_secs(60), proxy.lost())
            .await
            .is_err());
        assert!(idle.establish().is_err());
        drop(idle);
        assert_eq!(a.unauthenticated(), 0);
    }

    #[tokio::test]
    async fn established_permits_are_bounded_and_come_back() {
        let a = admissions(1, 8, Duration::from_secs(10));
        let one = a.enter(peer());
        let two = a.enter(peer());
        one.establish().unwrap();
        one.establish().unwrap();
        assert!(two.establish().is_err());
        drop(one);
        two.establish().unwrap();
        // Released connections take no permit.
        let proxy = a.enter(peer());
        proxy.release();
        assert!(proxy.establish().is_err());
        assert_eq!(a.unauthenticated(), 0);
    }
}
