//! The auto transport (feature `quic`): QUIC raced against TLS, the winner
//! pinned, as the Go SDK's `AutoTransport` does (docs/spec/DATAGRAM_QUIC.md
//! §1, docs/QUIC.md "Choosing the transport").
//!
//! A dial starts QUIC; TLS starts [`FALLBACK_DELAY`] later, or at once when
//! QUIC fails. The first connection established wins and its transport is
//! pinned for the later connections of the client (see [`AutoRace`] for
//! when pinned QUIC is raced again). Nothing is pinned while nothing has
//! succeeded, so the next dial races again.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use super::dialer::{EngineStream, TlsDialer};
use super::quic::QuicDialer;
use super::Endpoint;
use crate::error::Result;

/// QUIC's head start (the Go SDK's `FallbackDelay`): on a network where UDP
/// works, the QUIC handshake (one round trip) is done well before TLS would
/// start, so no TCP connection is wasted.
pub(crate) const FALLBACK_DELAY: Duration = Duration::from_millis(300);

/// How long a dial still waits for QUIC once TLS has failed. TLS has then
/// failed definitively (refused, certificate, handshake, timeout) and QUIC,
/// which started at least [`FALLBACK_DELAY`] earlier, has neither succeeded
/// nor failed: it is most likely a silent UDP port. Waiting the whole
/// connect timeout for it would turn every fast failure (engine down, wrong
/// CA) into a slow one; half a second more still lets a QUIC handshake on a
/// link with up to ~800 ms round trip finish.
pub(crate) const TLS_FAILED_GRACE: Duration = Duration::from_millis(500);

/// The transport a race picked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Winner {
    /// TLS over TCP connected first.
    Tls,
    /// The QUIC handshake (and the stream's opening) finished first.
    Quic,
}

impl Winner {
    fn as_str(self) -> &'static str {
        match self {
            Winner::Tls => "tls",
            Winner::Quic => "quic",
        }
    }
}

// The values of `AutoRace::pinned`.
const NONE: u8 = 0;
const TLS: u8 = 1;
const QUIC: u8 = 2;

/// The race's memory: the pinned transport, once a connection succeeded.
///
/// TLS, once pinned, is final. Pinned QUIC holds for as long as the QUIC
/// connection it won lives: every rstream connection is a stream on it. A
/// new QUIC connection (the engine restarted, the connection died) is a new
/// establishment, so it is raced again, and TLS may win it. Without that, a
/// client whose engine went down would wait the whole connect timeout on
/// each reconnect attempt (a closed UDP port is silent) where TLS says
/// "refused" at once.
#[derive(Debug)]
pub(crate) struct AutoRace {
    pinned: AtomicU8,
}

impl AutoRace {
    /// A race with nothing pinned.
    pub(crate) fn new() -> Self {
        AutoRace {
            pinned: AtomicU8::new(NONE),
        }
    }

    /// The pinned transport, if a connection has succeeded.
    pub(crate) fn pinned(&self) -> Option<Winner> {
        match self.pinned.load(Ordering::Acquire) {
            TLS => Some(Winner::Tls),
            QUIC => Some(Winner::Quic),
            _ => None,
        }
    }

    /// A new rstream connection: over the pinned transport, or the race.
    pub(crate) async fn connect(
        &self,
        tls: &TlsDialer,
        quic: &QuicDialer,
        endpoint: &Endpoint,
        sni: &str,
    ) -> Result<EngineStream> {
        let before = self.pinned();
        match before {
            Some(Winner::Tls) => return tls.connect(endpoint, sni).await,
            Some(Winner::Quic) => {
                if let Some(stream) = quic
                    .connect_cached(endpoint.host(), endpoint.port(), sni)
                    .await?
                {
                    return Ok(EngineStream::Quic(stream));
                }
            }
            None => {}
        }
        let stream = race(tls, quic, endpoint, sni).await?;
        let won = if stream.is_quic() {
            Winner::Quic
        } else {
            Winner::Tls
        };
        // The pin moves from what this race started with: the first of
        // concurrent first races pins (a later one, slowed down by the
        // others, cannot overturn it), and a race for a new QUIC connection
        // may move QUIC to TLS.
        let (from, to) = match (before, won) {
            (None, Winner::Quic) => (NONE, QUIC),
            (None, Winner::Tls) => (NONE, TLS),
            (Some(Winner::Quic), Winner::Tls) => (QUIC, TLS),
            _ => return Ok(stream),
        };
        if self
            .pinned
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::debug!(
                transport = won.as_str(),
                engine = %endpoint,
                "auto transport: pinned"
            );
        }
        Ok(stream)
    }
}

/// QUIC now, TLS after [`FALLBACK_DELAY`] or as soon as QUIC fails; the
/// first success. When both fail, the TLS error (it says more than a QUIC
/// timeout: refused, certificate, handshake).
async fn race(
    tls: &TlsDialer,
    quic: &QuicDialer,
    endpoint: &Endpoint,
    sni: &str,
) -> Result<EngineStream> {
    let quic_attempt = quic.connect(endpoint.host(), endpoint.port(), sni);
    tokio::pin!(quic_attempt);
    let head_start = tokio::time::sleep(FALLBACK_DELAY);
    tokio::pin!(head_start);
    let tls_attempt = futures_util::future::OptionFuture::from(None);
    tokio::pin!(tls_attempt);
    // Armed when TLS fails while QUIC is still pending.
    let grace = futures_util::future::OptionFuture::from(None);
    tokio::pin!(grace);

    let mut quic_error = None;
    let mut tls_error = None;
    let mut tls_started = false;
    loop {
        tokio::select! {
            r = &mut quic_attempt, if quic_error.is_none() => match r {
                Ok(stream) => {
                    tracing::debug!(engine = %endpoint, "auto transport: QUIC won");
                    return Ok(EngineStream::Quic(stream));
                }
                Err(e) => {
                    tracing::debug!(engine = %endpoint, error = %e, "auto transport: QUIC failed");
                    if let Some(tls_error) = tls_error {
                        return Err(tls_error);
                    }
                    quic_error = Some(e);
                    if !tls_started {
                        tls_started = true;
                        tls_attempt.set(Some(tls.connect(endpoint, sni)).into());
                    }
                }
            },
            () = &mut head_start, if !tls_started => {
                tls_started = true;
                tls_attempt.set(Some(tls.connect(endpoint, sni)).into());
            },
            Some(r) = &mut tls_attempt, if tls_started && tls_error.is_none() => match r {
                Ok(stream) => {
                    tracing::debug!(engine = %endpoint, "auto transport: TLS won");
                    return Ok(stream);
                }
                Err(e) => {
                    tracing::debug!(engine = %endpoint, error = %e, "auto transport: TLS failed");
                    if quic_error.is_some() {
                        return Err(e);
                    }
                    tls_error = Some(e);
                    grace.set(Some(tokio::time::sleep(TLS_FAILED_GRACE)).into());
                }
            },
            Some(()) = &mut grace, if tls_error.is_some() => {
                tracing::debug!(engine = %endpoint, "auto transport: QUIC silent; giving up");
                if let Some(e) = tls_error.take() {
                    return Err(e);
                }
            },
        }
    }
}
