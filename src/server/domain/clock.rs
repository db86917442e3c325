//! What "today" and "the current interval" are: the calendar day in the configured zone and
//! Genesys's half hours. Pure, shared by the status reads and the Genesys Cloud connector.

/// Start and end (epoch ms) of the day containing `now` in `tz`: what "today" means for the
/// answered and abandoned counts. Days are not always 24 h long (DST), hence the calendar.
pub fn day_bounds(now: jiff::Timestamp, tz: &jiff::tz::TimeZone) -> anyhow::Result<(i64, i64)> {
    let today = now.to_zoned(tz.clone()).start_of_day()?;
    let tomorrow = today.tomorrow()?.start_of_day()?;
    Ok((
        today.timestamp().as_millisecond(),
        tomorrow.timestamp().as_millisecond(),
    ))
}

/// Genesys's 30-minute intervals: the one containing `now` (epoch ms), as `[start, end)`.
pub fn interval_bounds(now: i64) -> (i64, i64) {
    const HALF_HOUR: i64 = 30 * 60 * 1000;
    let start = now - now.rem_euclid(HALF_HOUR);
    (start, start + HALF_HOUR)
}

/// Epoch ms as RFC 3339 in `tz`, to the second, with the zone's offset
/// (`2026-12-01T00:00:00+01:00`): how figures and Genesys's queries name local times.
pub fn local_time(ms: i64, tz: &jiff::tz::TimeZone) -> Option<String> {
    let zoned = jiff::Timestamp::from_millisecond(ms)
        .ok()?
        .to_zoned(tz.clone());
    Some(zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn today_follows_the_configured_time_zone() {
        let now = ts("2026-11-29T23:30:00Z");
        let (utc_start, utc_end) = day_bounds(now, &jiff::tz::TimeZone::UTC).expect("bounds");
        assert_eq!(utc_start, ts("2026-11-29T00:00:00Z").as_millisecond());
        assert_eq!(utc_end, ts("2026-11-30T00:00:00Z").as_millisecond());
        // 23:30 UTC is already the next day in Berlin (UTC+1 in winter).
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").expect("tzdata");
        let (start, end) = day_bounds(now, &berlin).expect("bounds");
        assert_eq!(start, ts("2026-11-29T23:00:00Z").as_millisecond());
        assert_eq!(end, ts("2026-11-30T23:00:00Z").as_millisecond());
    }

    #[test]
    fn a_daylight_saving_day_is_23_hours_long() {
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").expect("tzdata");
        let (start, end) = day_bounds(ts("2026-03-29T12:00:00Z"), &berlin).expect("bounds");
        assert_eq!(end - start, 23 * 3600 * 1000);
    }

    #[test]
    fn intervals_are_genesys_half_hours() {
        let (start, end) = interval_bounds(ts("2026-12-01T10:29:59.999Z").as_millisecond());
        assert_eq!(start, ts("2026-12-01T10:00:00Z").as_millisecond());
        assert_eq!(end, ts("2026-12-01T10:30:00Z").as_millisecond());
        let (start, _) = interval_bounds(ts("2026-12-01T10:30:00Z").as_millisecond());
        assert_eq!(start, ts("2026-12-01T10:30:00Z").as_millisecond());
    }
}
