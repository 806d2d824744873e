//! The one capped, jittered exponential backoff, shared by the control
//! channel's reconnect ([`ReconnectPolicy`](crate::ReconnectPolicy)), the
//! resilient Engine API watch and the local engine's webhook retries.

use std::time::Duration;

/// How randomness is applied to each reconnect delay, so that many clients
/// losing the same engine do not all come back at the same instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly the capped exponential delay. Not recommended beyond tests.
    None,
    /// A uniformly random delay between zero and the capped exponential
    /// delay ("full jitter").
    Full,
    /// Half the capped exponential delay plus a uniformly random part of up
    /// to the other half ("equal jitter"): never less than half the delay.
    #[default]
    Equal,
}

/// The largest multiplier a [`Backoff`] keeps: beyond it every delay after
/// the first is the cap anyway.
const MAX_MULTIPLIER: f64 = 1_000.0;

/// Delays `min(max, initial × multiplier^(attempt − 1))` with jitter.
///
/// The arithmetic saturates: any durations, any attempt number (up to
/// `u32::MAX`) and any multiplier give a delay in `0 ..= max`, never a
/// panic or an overflow. Callers clamp `initial` and `max` to their own
/// documented ranges.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, without jitter.
    pub(crate) const fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            multiplier: 2.0,
            jitter: Jitter::None,
        }
    }

    /// The first delay.
    pub(crate) fn with_initial(self, initial: Duration) -> Self {
        Backoff { initial, ..self }
    }

    /// The cap on every delay.
    pub(crate) fn with_max(self, max: Duration) -> Self {
        Backoff { max, ..self }
    }

    /// The growth factor per attempt; below 1, and NaN, count as 1 (a
    /// constant delay), above 1,000 as 1,000.
    pub(crate) fn with_multiplier(self, factor: f64) -> Self {
        let multiplier = if factor.is_nan() {
            1.0
        } else {
            factor.clamp(1.0, MAX_MULTIPLIER)
        };
        Backoff { multiplier, ..self }
    }

    /// The jitter applied by [`delay`](Self::delay).
    pub(crate) const fn with_jitter(self, jitter: Jitter) -> Self {
        Backoff { jitter, ..self }
    }

    /// The capped exponential delay before attempt `attempt` (counting
    /// from 1), before jitter.
    pub(crate) fn bound(&self, attempt: u32) -> Duration {
        // `powi` of a factor in 1..=1000 with an exponent up to 1000 is
        // finite or +inf; either way `min` brings it back under the cap.
        let exponent = i32::try_from(attempt.saturating_sub(1))
            .unwrap_or(i32::MAX)
            .min(1_000);
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = secs.min(self.max.as_secs_f64());
        Duration::try_from_secs_f64(capped).unwrap_or(self.max)
    }

    /// The delay to wait before attempt `attempt`: the
    /// [bound](Self::bound) with the jitter applied.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let bound = self.bound(attempt);
        match self.jitter {
            Jitter::None => bound,
            Jitter::Full => bound.mul_f64(rand::random::<f64>()),
            Jitter::Equal => {
                let half = bound / 2;
                half + half.mul_f64(rand::random::<f64>())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap() {
        let b = Backoff::new(MS * 500, MS * 5_000);
        assert_eq!(b.bound(0), MS * 500);
        assert_eq!(b.bound(1), MS * 500);
        assert_eq!(b.bound(2), MS * 1_000);
        assert_eq!(b.bound(4), MS * 4_000);
        assert_eq!(b.bound(5), MS * 5_000);
        assert_eq!(b.delay(3), MS * 2_000, "no jitter by default");
    }

    #[test]
    fn saturates_instead_of_overflowing() {
        let huge = Backoff::new(Duration::MAX, Duration::MAX).with_multiplier(f64::INFINITY);
        for attempt in [1, 2, 64, 1_001, u32::MAX] {
            assert!(huge.bound(attempt) <= Duration::MAX);
            let _ = huge.with_jitter(Jitter::Equal).delay(attempt);
        }
        let b = Backoff::new(MS, Duration::from_secs(30)).with_multiplier(1_000.0);
        assert_eq!(b.bound(u32::MAX), Duration::from_secs(30));
        assert_eq!(b.with_multiplier(f64::NAN).bound(9), MS, "NaN: constant");
        assert_eq!(b.with_multiplier(0.5).bound(9), MS, "below 1: constant");
    }

    #[test]
    fn jitter_stays_in_its_range() {
        let b = Backoff::new(MS * 800, MS * 800);
        for _ in 0..200 {
            let equal = b.with_jitter(Jitter::Equal).delay(1);
            assert!(equal >= MS * 400 && equal <= MS * 800, "{equal:?}");
            assert!(b.with_jitter(Jitter::Full).delay(1) <= MS * 800);
        }
    }
}
