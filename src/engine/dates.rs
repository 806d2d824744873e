//! Calendar dates of the local engine: RFC 3339 timestamps for API objects
//! and webhook payloads, and certificate validity bounds, on the `time` crate.

use std::time::{SystemTime, UNIX_EPOCH};

use time::{Duration, OffsetDateTime, PrimitiveDateTime, Time};

/// `t` in UTC. Outside the `time` crate's range (years -9999..=9999), which
/// no clock reaches, it clamps to the nearest end rather than panic.
fn utc(t: SystemTime) -> OffsetDateTime {
    let (moved, limit) = match t.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            Duration::try_from(after)
                .ok()
                .and_then(|d| OffsetDateTime::UNIX_EPOCH.checked_add(d)),
            PrimitiveDateTime::MAX,
        ),
        Err(before) => (
            Duration::try_from(before.duration())
                .ok()
                .and_then(|d| OffsetDateTime::UNIX_EPOCH.checked_sub(d)),
            PrimitiveDateTime::MIN,
        ),
    };
    moved.unwrap_or_else(|| limit.assume_utc())
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T13:53:14.123Z`
/// (the Engine API's and the webhooks' `created_at` format).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let t = utc(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Midnight UTC `days` days after today's (negative: before), for
/// certificate `notBefore` / `notAfter`.
pub(crate) fn midnight_in_days(days: i64) -> OffsetDateTime {
    midnight_after(OffsetDateTime::now_utc(), days)
}

fn midnight_after(base: OffsetDateTime, days: i64) -> OffsetDateTime {
    base.replace_time(Time::MIDNIGHT)
        .saturating_add(Duration::days(days))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as StdDuration;
    use time::{Date, Month};

    fn at(y: i32, m: Month, d: u8, h: u8, min: u8) -> OffsetDateTime {
        let date = Date::from_calendar_date(y, m, d).unwrap();
        date.with_hms(h, min, 0).unwrap().assume_utc()
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + StdDuration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
        // Leap days, and 1900 / 2100 that are not leap years.
        let t = UNIX_EPOCH + StdDuration::from_millis(951_782_400_123);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.123Z");
        let t = UNIX_EPOCH + StdDuration::from_secs(1_709_164_800);
        assert_eq!(rfc3339(t), "2024-02-29T00:00:00.000Z");
        let t = UNIX_EPOCH + StdDuration::from_secs(4_107_542_400);
        assert_eq!(rfc3339(t), "2100-03-01T00:00:00.000Z");
        let t = UNIX_EPOCH - StdDuration::from_secs(2_203_891_200);
        assert_eq!(rfc3339(t), "1900-03-01T00:00:00.000Z");
        // Before 1970, sub-second parts included.
        let before = UNIX_EPOCH - StdDuration::from_millis(1);
        assert_eq!(rfc3339(before), "1969-12-31T23:59:59.999Z");
        let before = UNIX_EPOCH - StdDuration::from_secs(10);
        assert_eq!(rfc3339(before), "1969-12-31T23:59:50.000Z");
    }

    #[test]
    fn out_of_range_clamps_instead_of_panicking() {
        let far = UNIX_EPOCH + StdDuration::from_secs(u64::MAX / 4);
        assert!(rfc3339(far).starts_with("9999-12-31T23:59:59."));
    }

    #[test]
    fn certificate_midnights() {
        let base = at(2024, Month::February, 28, 15, 30);
        assert_eq!(midnight_after(base, 1), at(2024, Month::February, 29, 0, 0));
        assert_eq!(midnight_after(base, 2), at(2024, Month::March, 1, 0, 0));
        let epoch = at(1970, Month::January, 1, 0, 1);
        assert_eq!(
            midnight_after(epoch, -1),
            at(1969, Month::December, 31, 0, 0)
        );
        assert_eq!(
            midnight_after(base, 3650),
            at(2034, Month::February, 25, 0, 0)
        );
        assert_eq!(midnight_in_days(0).time(), Time::MIDNIGHT);
    }
}
