//! Automatic reconnect: the [`ReconnectPolicy`], the [`ConnectOptions`]
//! that carry it, and the [`ConnectionStatus`] a control channel publishes.
//!
//! See `docs/RELIABILITY.md` for what survives which fault.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use tokio::sync::oneshot;

use super::requests::QueuedOpen;
use super::task::Supervisor;
use super::{handshake, Command, Session};
use crate::backoff::Backoff;
pub use crate::backoff::Jitter;
use crate::error::{code, Chain, Error, ErrorKind, Result};

/// The largest reconnect delay and [`stable_after`](ReconnectPolicy::stable_after)
/// a [`ReconnectPolicy`] keeps: 1 hour. Larger values are clamped to it.
pub const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(3600);

/// How long a connection must stay up before the reconnect backoff resets,
/// by default: 10 s (see [`ReconnectPolicy::stable_after`]).
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(10);

/// When and how often a [`ControlChannel`](crate::ControlChannel) that lost
/// its connection reconnects and re-creates its tunnels.
///
/// The default (used by [`Client::connect`](crate::Client::connect)) is
/// enabled: delays start at 200 ms, double on every failed attempt, are capped
/// at 30 s, get [equal jitter](Jitter::Equal), and attempts are unlimited.
/// Only the first connection is made by `connect`; its failure is returned
/// as is, never retried.
///
/// **When the backoff resets.** The attempt counter (and with it the delay)
/// goes back to the start only after a connection was restored *and stayed
/// up* for [`stable_after`](Self::stable_after) (default 10 s). A connection
/// that is accepted and then dropped sooner counts as one more failed
/// attempt: against an engine or load balancer that accepts and then drops
/// at once, delays keep growing to the cap instead of retrying every
/// 100–200 ms, and such attempts count towards
/// [`max_attempts`](Self::max_attempts).
///
/// Every delay is clamped to [`MAX_RECONNECT_DELAY`] (1 hour), so any
/// `Duration`, `Duration::MAX` included, is accepted and none overflows.
///
/// ```
/// use std::time::Duration;
/// use rstream::control::{Jitter, ReconnectPolicy};
///
/// let policy = ReconnectPolicy::new()
///     .initial_delay(Duration::from_millis(100))
///     .max_delay(Duration::from_secs(10))
///     .jitter(Jitter::Full)
///     .max_attempts(20);
/// assert!(policy.is_enabled());
/// assert_eq!(policy.delay_bound(1), Duration::from_millis(100));
/// assert_eq!(policy.delay_bound(4), Duration::from_millis(800));
/// assert_eq!(policy.delay_bound(30), Duration::from_secs(10));
/// assert!(!ReconnectPolicy::disabled().is_enabled());
/// ```
#[derive(Clone, Debug, PartialEq)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct ReconnectPolicy {
    enabled: bool,
    backoff: Backoff,
    stable_after: Duration,
    max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            enabled: true,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(30))
                .with_multiplier(2.0)
                .with_jitter(Jitter::Equal),
            stable_after: DEFAULT_STABLE_AFTER,
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// The default policy (enabled; see the type docs).
    pub fn new() -> Self {
        ReconnectPolicy::default()
    }

    /// No reconnect: losing the connection closes the channel and every
    /// tunnel on it with the reason (the behaviour of the other SDKs).
    pub fn disabled() -> Self {
        ReconnectPolicy {
            enabled: false,
            ..ReconnectPolicy::default()
        }
    }

    /// The delay before the first attempt (default 200 ms; clamped to
    /// 1 ms ..= [`MAX_RECONNECT_DELAY`]).
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        let delay = delay.clamp(Duration::from_millis(1), MAX_RECONNECT_DELAY);
        self.backoff = self.backoff.with_initial(delay);
        self
    }

    /// The cap on every delay (default 30 s; clamped to
    /// 1 ms ..= [`MAX_RECONNECT_DELAY`]).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        let delay = delay.clamp(Duration::from_millis(1), MAX_RECONNECT_DELAY);
        self.backoff = self.backoff.with_max(delay);
        self
    }

    /// How long a restored connection must stay up before the attempt
    /// counter, and with it the backoff, resets (default
    /// [`DEFAULT_STABLE_AFTER`], 10 s; clamped to at most
    /// [`MAX_RECONNECT_DELAY`]). See the type docs.
    pub fn stable_after(mut self, uptime: Duration) -> Self {
        self.stable_after = uptime.min(MAX_RECONNECT_DELAY);
        self
    }

    /// The uptime after which the backoff resets.
    pub fn stable_uptime(&self) -> Duration {
        self.stable_after
    }

    /// How much each failed attempt multiplies the delay (default 2; values
    /// below 1, and NaN, count as 1: a constant delay).
    pub fn multiplier(mut self, factor: f64) -> Self {
        self.backoff = self.backoff.with_multiplier(factor);
        self
    }

    /// The jitter applied to each delay (default [`Jitter::Equal`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.backoff = self.backoff.with_jitter(jitter);
        self
    }

    /// Gives up after `attempts` failed attempts in a row (the channel then
    /// closes with the last error). `0` gives up at once, like
    /// [`disabled`](Self::disabled). Default: unlimited.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Never gives up (the default).
    pub fn unlimited_attempts(mut self) -> Self {
        self.max_attempts = None;
        self
    }

    /// Whether the channel reconnects at all.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The attempt limit, `None` when unlimited.
    pub fn attempt_limit(&self) -> Option<u32> {
        self.max_attempts
    }

    /// Whether attempt number `attempt` (counting from 1) may be made.
    pub(crate) fn allows(&self, attempt: u32) -> bool {
        self.enabled && self.max_attempts.is_none_or(|max| attempt <= max)
    }

    /// The capped exponential delay before attempt `attempt` (counting from
    /// 1), before jitter: `min(max, initial × multiplier^(attempt − 1))`.
    pub fn delay_bound(&self, attempt: u32) -> Duration {
        self.backoff.bound(attempt)
    }

    /// The delay to wait before attempt `attempt`: the
    /// [bound](Self::delay_bound) with this policy's jitter applied.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff.delay(attempt)
    }
}

/// Options for [`Client::connect_with`](crate::Client::connect_with).
///
/// A [`ReconnectPolicy`] converts into it, so
/// `client.connect_with(ReconnectPolicy::disabled())` works.
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct ConnectOptions {
    pub(crate) reconnect: ReconnectPolicy,
}

impl ConnectOptions {
    /// The defaults: reconnect enabled with [`ReconnectPolicy::default`].
    pub fn new() -> Self {
        ConnectOptions::default()
    }

    /// The reconnect policy.
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }
}

impl From<ReconnectPolicy> for ConnectOptions {
    fn from(policy: ReconnectPolicy) -> Self {
        ConnectOptions::new().reconnect(policy)
    }
}

/// Where a control channel stands, as published by
/// [`ControlChannel::status`](crate::ControlChannel::status).
///
/// ```text
///  Connected ──loss──▶ Reconnecting{1} ──fail──▶ Reconnecting{2} … ─┐
///      ▲                     │ reopened, tunnels re-created         │
///      └─────────────────────┘                                      │
///  close(), last handle dropped, permanent error, attempts used up ──▶ Closed
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum ConnectionStatus {
    /// The connection is up and every tunnel is (re-)created.
    Connected,
    /// The connection was lost; the channel is waiting, reconnecting, or
    /// re-creating its tunnels. Tunnels wait quietly meanwhile.
    Reconnecting {
        /// The attempt under way, counting from 1 since the last healthy
        /// connection.
        attempt: u32,
        /// Why the connection was lost, or why the last attempt failed.
        last_error: Error,
    },
    /// The channel has ended for good; every tunnel on it is closed.
    Closed {
        /// `None` after a clean close ([`close`](crate::ControlChannel::close),
        /// every handle dropped, or the engine closing the channel);
        /// otherwise the error that ended it.
        error: Option<Error>,
    },
}

impl ConnectionStatus {
    /// Whether the connection is up.
    pub fn is_connected(&self) -> bool {
        matches!(self, ConnectionStatus::Connected)
    }

    /// Whether the channel has ended for good.
    pub fn is_closed(&self) -> bool {
        matches!(self, ConnectionStatus::Closed { .. })
    }

    /// The error attached to this status, if any.
    pub fn error(&self) -> Option<&Error> {
        match self {
            ConnectionStatus::Connected => None,
            ConnectionStatus::Reconnecting { last_error, .. } => Some(last_error),
            ConnectionStatus::Closed { error } => error.as_ref(),
        }
    }
}

/// Whether a connection lost to `e` is worth reconnecting: transport
/// losses (EOF, I/O, TLS), timeouts (liveness expiry, a stalled writer), a
/// proxy-connection overload, and the engine's transient classes. Protocol
/// violations, authentication and validation errors are permanent.
pub(crate) fn loss_is_transient(e: &Error) -> bool {
    match e.kind() {
        ErrorKind::Io | ErrorKind::Timeout | ErrorKind::Tls => true,
        ErrorKind::Protocol => e.code() == code::CONTROL_OVERLOAD,
        _ => e.is_transient(),
    }
}

/// Whether a failed reopen is worth another attempt. The same as
/// [`loss_is_transient`] minus overloads (a reopen cannot overload).
pub(crate) fn reopen_is_transient(e: &Error) -> bool {
    match e.kind() {
        ErrorKind::Io | ErrorKind::Timeout | ErrorKind::Tls => true,
        ErrorKind::Protocol | ErrorKind::Auth | ErrorKind::Config | ErrorKind::Unsupported => false,
        _ => e.is_transient(),
    }
}

/// The supervisor's side of reconnecting: waiting out the backoff and
/// reopening while it still serves commands.
impl Supervisor {
    /// Reconnects with backoff, serving commands meanwhile. `None` when the
    /// channel ended instead (status already `Closed`).
    pub(super) async fn reconnect(&mut self, mut last: Error) -> Option<Session> {
        loop {
            self.attempt = self.attempt.saturating_add(1);
            if !self.policy.allows(self.attempt) {
                let tried = self.attempt - 1;
                let err = Error::new(
                    last.kind(),
                    code::RECONNECT_GAVE_UP,
                    format!("gave up reconnecting after {tried} attempts"),
                )
                .with_source(last);
                tracing::error!(attempts = tried, error = %Chain(&err), "control channel closed: reconnecting gave up");
                self.finish(Some(err), std::iter::empty());
                return None;
            }
            let delay = self.policy.backoff(self.attempt);
            self.status.send_replace(ConnectionStatus::Reconnecting {
                attempt: self.attempt,
                last_error: last.clone(),
            });
            tracing::warn!(
                attempt = self.attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                code = last.code(),
                error = %Chain(&last),
                "control channel lost; reconnecting"
            );
            if let Err(stop) = self.serve_while(tokio::time::sleep(delay)).await {
                self.stop(stop);
                return None;
            }
            let link = self.link.clone();
            match self
                .serve_while(async move { handshake(&link).await })
                .await
            {
                Err(stop) => {
                    self.stop(stop);
                    return None;
                }
                Ok(Ok(session)) => {
                    tracing::info!(
                        attempt = self.attempt,
                        tunnels = self.slots.len(),
                        "control channel reopened; re-creating tunnels"
                    );
                    return Some(session);
                }
                Ok(Err(e)) if reopen_is_transient(&e) => {
                    tracing::debug!(attempt = self.attempt, code = e.code(), error = %Chain(&e), "reconnect attempt failed");
                    last = e;
                }
                Ok(Err(e)) => {
                    tracing::error!(
                        attempt = self.attempt,
                        code = e.code(),
                        error = %Chain(&e),
                        "control channel closed: reconnecting failed permanently"
                    );
                    self.finish(Some(e), std::iter::empty());
                    return None;
                }
            }
        }
    }

    /// Runs `fut` while answering commands as a disconnected channel does.
    /// `Err` when the channel must end instead (explicit close, or every
    /// handle dropped), carrying the close's reply if any.
    pub(super) async fn serve_while<T>(
        &mut self,
        fut: impl Future<Output = T>,
    ) -> std::result::Result<T, Option<oneshot::Sender<Result<()>>>> {
        let mut fut = pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                cmd = self.commands.recv(), if self.commands_open => match cmd {
                    None => {
                        self.commands_open = false;
                        return Err(None);
                    }
                    Some(Command::Close { reply }) => return Err(Some(reply)),
                    Some(Command::OpenTunnel { properties, reply }) => {
                        self.queued.push(QueuedOpen { properties, reply });
                    }
                    Some(Command::CloseTunnel { key, reply }) => {
                        self.close_slot(key, Error::tunnel_closed("tunnel closed"));
                        if let Some(r) = reply {
                            let _ = r.send(Ok(()));
                        }
                    }
                },
            }
        }
    }

    /// Ends the channel cleanly while disconnected.
    pub(super) fn stop(&mut self, reply: Option<oneshot::Sender<Result<()>>>) {
        self.finish(None, std::iter::empty());
        if let Some(r) = reply {
            let _ = r.send(Ok(()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_grow_and_cap() {
        let p = ReconnectPolicy::new();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(p.delay_bound(0), ms(200));
        assert_eq!(p.delay_bound(1), ms(200));
        assert_eq!(p.delay_bound(2), ms(400));
        assert_eq!(p.delay_bound(8), ms(25_600));
        assert_eq!(p.delay_bound(9), ms(30_000));
        assert_eq!(p.delay_bound(u32::MAX), ms(30_000));
        let constant = ReconnectPolicy::new().multiplier(f64::NAN);
        assert_eq!(constant.delay_bound(50), ms(200));
        let inverted = ReconnectPolicy::new()
            .initial_delay(Duration::from_secs(60))
            .max_delay(Duration::from_secs(1));
        assert_eq!(inverted.delay_bound(1), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        for jitter in [Jitter::None, Jitter::Full, Jitter::Equal] {
            let p = ReconnectPolicy::new().jitter(jitter);
            for attempt in 1..20 {
                let bound = p.delay_bound(attempt);
                for _ in 0..50 {
                    let d = p.backoff(attempt);
                    assert!(d <= bound, "{jitter:?} {attempt}: {d:?} > {bound:?}");
                    if jitter != Jitter::Full {
                        assert!(d >= bound / 2, "{jitter:?} {attempt}: {d:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn attempts() {
        let p = ReconnectPolicy::new().max_attempts(3);
        assert!(p.allows(1) && p.allows(3) && !p.allows(4));
        assert!(!ReconnectPolicy::new().max_attempts(0).allows(1));
        assert!(ReconnectPolicy::new().allows(u32::MAX));
        assert!(!ReconnectPolicy::disabled().allows(1));
    }

    #[test]
    fn classification() {
        let lost = Error::new(ErrorKind::Io, code::CONTROL_LOST, "eof");
        assert!(loss_is_transient(&lost));
        assert!(loss_is_transient(&Error::timeout("liveness")));
        assert!(!loss_is_transient(&Error::protocol("bad ack")));
        assert!(loss_is_transient(&Error::new(
            ErrorKind::Protocol,
            code::CONTROL_OVERLOAD,
            "flood"
        )));
        assert!(!reopen_is_transient(&Error::engine(1000, None)));
        assert!(!reopen_is_transient(&Error::engine(2000, None)));
        assert!(reopen_is_transient(&Error::engine(6000, None)));
        assert!(reopen_is_transient(&Error::engine(7000, None)));
        assert!(!reopen_is_transient(&Error::protocol("garbage")));
    }
}
